/*
 * relight.c - exposure, white balance (temperature and tint) and ASC CDL in
 * scene-linear light, optionally inside a soft-edged, rotatable window, and
 * optionally matched to a reference frame of the shot.
 *
 * The colour science lives here and runs once per frame: prepare() turns the
 * parameter values into uniforms (a per-channel gain and offset fitted to a
 * reference frame, a gain, a 3x3 RGB white-balance matrix from the Planckian
 * locus, tint and a Bradford adaptation, the CDL numbers, the window
 * geometry) and a set of stage flags. Per pixel, run_cpu (the C reference:
 * colour in double, the window mask in float, see window_mask) and
 * cl/relight.cl (float) then apply the same stages in the same order: match
 * fit, exposure, white balance, CDL slope/offset, CDL power, saturation,
 * window blend. The match fit (match_fit) reads the frame and its reference
 * frame as decoded, once per frame, on the CPU. A stage whose parameters are
 * identity is skipped rather than computed, so an identity op copies pixels
 * bit for bit, NaN and -0 included.
 * docs/relight.md states the math and its conventions for colour scientists.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/op.h"

static const char *const window_shapes[] = {"none", "ellipse", "rect", "gradient", NULL};
static const char *const match_models[] = {"gain", "gain_offset", NULL};

static const struct pfs_param_desc relight_params[] = {
    {.name = "exposure", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -16, .max = 16,
     .def = {0}, .keyframable = true, .unit = "stops",
     .help = "exposure change in stops (+1 doubles the light)"},
    {.name = "temperature.from", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1667,
     .max = 25000, .def = {6500}, .keyframable = true, .unit = "K",
     .help = "colour temperature of the light the plate was shot under"},
    {.name = "temperature.to", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1667,
     .max = 25000, .def = {6500}, .keyframable = true, .unit = "K",
     .help = "colour temperature the plate should look lit by"},
    {.name = "cdl.slope", .type = PFS_PARAM_VEC, .ncomp = 3, .min = 0, .max = 100,
     .def = {1, 1, 1}, .keyframable = true, .help = "ASC CDL slope per channel (R, G, B)"},
    {.name = "cdl.offset", .type = PFS_PARAM_VEC, .ncomp = 3, .min = -10, .max = 10,
     .def = {0, 0, 0}, .keyframable = true, .help = "ASC CDL offset per channel (R, G, B)"},
    {.name = "cdl.power", .type = PFS_PARAM_VEC, .ncomp = 3, .min = 0.01, .max = 100,
     .def = {1, 1, 1}, .keyframable = true, .help = "ASC CDL power per channel (R, G, B)"},
    {.name = "cdl.saturation", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 100,
     .def = {1}, .keyframable = true,
     .help = "ASC CDL saturation around Rec.709 luma (0 gives grey, 1 leaves colour as is)"},
    {.name = "window.shape", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = window_shapes,
     .def = {0},
     .help = "limit the correction to an ellipse, a rectangle or one side of a gradient"},
    {.name = "window.center", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1e6, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window centre [x, y] in display-window pixels"},
    {.name = "window.size", .type = PFS_PARAM_VEC, .ncomp = 2, .min = 0, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window full width and height [w, h] in pixels; both > 0 for an ellipse or a "
             "rectangle, unused by a gradient"},
    {.name = "window.feather", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 1e5,
     .def = {0}, .keyframable = true, .unit = "px",
     .help = "width of the soft edge, centred on the window's outline"},
    {.name = "window.invert", .type = PFS_PARAM_BOOL, .ncomp = 1, .def = {0},
     .help = "correct outside the window instead of inside"},
    /* Appended after the original parameters so that their indices, and the
     * canonical text of existing rule files up to here, stay as they were. */
    {.name = "tint.from", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -100, .max = 100,
     .def = {0}, .keyframable = true, .unit = "Duv x 1000",
     .help = "green-magenta offset of the plate's light from the Planckian locus "
             "(+ magenta, - green, as Lightroom and Resolve tint)"},
    {.name = "tint.to", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -100, .max = 100,
     .def = {0}, .keyframable = true, .unit = "Duv x 1000",
     .help = "green-magenta offset of the light the plate should look lit by"},
    {.name = "window.angle", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -360, .max = 360,
     .def = {0}, .keyframable = true, .unit = "degrees",
     .help = "counter-clockwise rotation of the ellipse or rectangle about its centre; for a "
             "gradient, the direction the correction grows toward (0 right, 90 up)"},
    {.name = "match.frame", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -1, .max = 1e9,
     .def = {-1},
     .help = "frame of the same shot to match: a per-channel correction fitted to bring this "
             "frame to that one is applied first (-1: off)"},
    {.name = "match.model", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = match_models,
     .def = {0},
     .help = "what match fits: a gain per channel, or a gain and an offset per channel"},
};

/* Indices into the value array, in table order. */
enum {
    P_EXPOSURE,
    P_TEMP_FROM,
    P_TEMP_TO,
    P_SLOPE,
    P_OFFSET,
    P_POWER,
    P_SAT,
    P_SHAPE,
    P_CENTER,
    P_SIZE,
    P_FEATHER,
    P_INVERT,
    P_TINT_FROM,
    P_TINT_TO,
    P_ANGLE,
    P_MATCH_FRAME,
    P_MATCH_MODEL,
    P_COUNT
};
_Static_assert(sizeof relight_params / sizeof relight_params[0] == P_COUNT,
               "relight: parameter enum out of step with the table");

/* Stage flags and shapes: keep in step with cl/relight.cl. */
enum {
    RELIGHT_GAIN = 1,
    RELIGHT_MATRIX = 2,
    RELIGHT_SLOPE_OFFSET = 4,
    RELIGHT_POWER = 8,
    RELIGHT_SAT = 16,
    RELIGHT_FIT = 32,
};
enum { SHAPE_NONE, SHAPE_ELLIPSE, SHAPE_RECT, SHAPE_GRADIENT };
enum { MODEL_GAIN, MODEL_GAIN_OFFSET };

/* The width of the note match writes (platefs/fitted). */
#define RELIGHT_NOTE_WIDTH 200

/* Rec.709 luma weights, as the ASC CDL v1.2 saturation specifies. */
static const double luma_w[3] = {0.2126, 0.7152, 0.0722};

/*
 * The window is held as the float numbers both paths compute the mask from,
 * so that the CPU and OpenCL masks are the same bits (see window_mask).
 */
struct relight_uniforms {
    unsigned stages;
    double fit_gain[3], fit_offset[3]; /* match: rgb = rgb * fit_gain + fit_offset */
    double gain;    /* 2^exposure */
    double m[3][3]; /* white balance, RGB -> RGB */
    double slope[3], offset[3], power[3], sat;
    int shape, invert;
    int icx, icy;          /* window centre, integer part (display pixels) */
    float fx, fy;          /* 0.5 - the centre's fractional part */
    float half_w, half_h;  /* half sizes */
    float inv_a, inv_b;    /* 1 / half sizes */
    float inv_feather;     /* 1 / feather, 0 for a hard edge */
    float cos_a, sin_a;    /* window.angle */
};

/* ---- colour science (double, once per frame) ---------------------------- */

typedef double mat3[3][3];

static void mat3_mul(const mat3 a, const mat3 b, mat3 out)
{
    mat3 t;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            t[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
    memcpy(out, t, sizeof t);
}

static void mat3_vec(const mat3 a, const double v[3], double out[3])
{
    double t[3];
    for (int i = 0; i < 3; i++)
        t[i] = a[i][0] * v[0] + a[i][1] * v[1] + a[i][2] * v[2];
    memcpy(out, t, sizeof t);
}

static void mat3_inv(const mat3 a, mat3 out)
{
    double c00 = a[1][1] * a[2][2] - a[1][2] * a[2][1];
    double c01 = a[1][2] * a[2][0] - a[1][0] * a[2][2];
    double c02 = a[1][0] * a[2][1] - a[1][1] * a[2][0];
    double det = a[0][0] * c00 + a[0][1] * c01 + a[0][2] * c02;
    mat3 t = {
        {c00 / det, (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / det,
         (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / det},
        {c01 / det, (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / det,
         (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / det},
        {c02 / det, (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / det,
         (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / det},
    };
    memcpy(out, t, sizeof t);
}

/* CIE 1931 xy of a Planckian radiator, Kim et al. 2002 cubic spline
 * (US patent 7024034), valid 1667..25000 K. */
static void planck_xy(double kelvin, double *x, double *y)
{
    double t = kelvin, t2 = t * t, t3 = t2 * t;
    double xc = t <= 4000 ? -0.2661239e9 / t3 - 0.2343589e6 / t2 + 0.8776956e3 / t + 0.179910
                          : -3.0258469e9 / t3 + 2.1070379e6 / t2 + 0.2226347e3 / t + 0.240390;
    double x2 = xc * xc, x3 = x2 * xc, yc;
    if (t <= 2222)
        yc = -1.1063814 * x3 - 1.34811020 * x2 + 2.18555832 * xc - 0.20219683;
    else if (t <= 4000)
        yc = -0.9549476 * x3 - 1.37418593 * x2 + 2.09137015 * xc - 0.16748867;
    else
        yc = 3.0817580 * x3 - 5.87338670 * x2 + 3.75112997 * xc - 0.37001483;
    *x = xc;
    *y = yc;
}

/* XYZ with Y = 1 of a chromaticity. */
static void xy_to_xyz(double x, double y, double out[3])
{
    out[0] = x / y;
    out[1] = 1.0;
    out[2] = (1.0 - x - y) / y;
}

/* XYZ <- linear RGB for Rec.709/sRGB primaries and the D65 white point
 * (ITU-R BT.709: R 0.64,0.33  G 0.30,0.60  B 0.15,0.06  W 0.3127,0.3290),
 * derived rather than typed in so the white maps to Y = 1 exactly. */
static void rgb_to_xyz(mat3 out)
{
    static const double prim[3][2] = {{0.64, 0.33}, {0.30, 0.60}, {0.15, 0.06}};
    mat3 p;
    for (int c = 0; c < 3; c++) {
        double v[3];
        xy_to_xyz(prim[c][0], prim[c][1], v);
        for (int i = 0; i < 3; i++)
            p[i][c] = v[i];
    }
    double w[3], s[3];
    mat3 pinv;
    xy_to_xyz(0.3127, 0.3290, w);
    mat3_inv(p, pinv);
    mat3_vec(pinv, w, s);
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 3; c++)
            out[i][c] = p[i][c] * s[c];
}

/* Bradford chromatic adaptation in XYZ: von Kries scaling of the Bradford
 * cone responses so that white src maps to white dst. */
static void bradford(const double src[3], const double dst[3], mat3 out)
{
    static const mat3 mb = {
        {0.8951, 0.2664, -0.1614},
        {-0.7502, 1.7135, 0.0367},
        {0.0389, -0.0685, 1.0296},
    };
    double cs[3], cd[3];
    mat3_vec(mb, src, cs);
    mat3_vec(mb, dst, cd);
    mat3 scale = {{cd[0] / cs[0], 0, 0}, {0, cd[1] / cs[1], 0}, {0, 0, cd[2] / cs[2]}};
    mat3 mbinv;
    mat3_inv(mb, mbinv);
    mat3_mul(scale, mb, out);
    mat3_mul(mbinv, out, out);
}

/* d(x, y)/dT of planck_xy, from the derivative of the same spline segments
 * that planck_xy evaluates at kelvin. */
static void planck_dxy(double kelvin, double *dx, double *dy)
{
    double t = kelvin, t2 = t * t, t3 = t2 * t, t4 = t3 * t;
    double x, y, dxdt, dydx;
    planck_xy(kelvin, &x, &y);
    dxdt = t <= 4000 ? 3 * 0.2661239e9 / t4 + 2 * 0.2343589e6 / t3 - 0.8776956e3 / t2
                     : 3 * 3.0258469e9 / t4 - 2 * 2.1070379e6 / t3 - 0.2226347e3 / t2;
    double x2 = x * x;
    if (t <= 2222)
        dydx = -3 * 1.1063814 * x2 - 2 * 1.34811020 * x + 2.18555832;
    else if (t <= 4000)
        dydx = -3 * 0.9549476 * x2 - 2 * 1.37418593 * x + 2.09137015;
    else
        dydx = 3 * 3.0817580 * x2 - 2 * 5.87338670 * x + 3.75112997;
    *dx = dxdt;
    *dy = dydx * dxdt;
}

/* CIE 1960 UCS uv of a CIE 1931 chromaticity, and back. */
static void xy_to_uv(double x, double y, double *u, double *v)
{
    double d = -2 * x + 12 * y + 3;
    *u = 4 * x / d;
    *v = 6 * y / d;
}

static void uv_to_xy(double u, double v, double *x, double *y)
{
    double d = 2 * u - 8 * v + 4;
    *x = 3 * u / d;
    *y = 2 * v / d;
}

/* Unit normal to the Planckian locus in CIE 1960 uv at kelvin, pointing to
 * the +v side of the locus (above it: greenish, Duv > 0). */
static void planck_normal_uv(double kelvin, double n[2])
{
    double x, y, dx, dy;
    planck_xy(kelvin, &x, &y);
    planck_dxy(kelvin, &dx, &dy);
    double d = -2 * x + 12 * y + 3, dd = -2 * dx + 12 * dy;
    double du = 4 * (dx * d - x * dd) / (d * d);
    double dv = 6 * (dy * d - y * dd) / (d * d);
    double len = hypot(du, dv);
    /* The tangent (du, dv) turned a quarter; of the two normals, the one
     * with a positive v component. */
    n[0] = -dv / len;
    n[1] = du / len;
    if (n[1] < 0) {
        n[0] = -n[0];
        n[1] = -n[1];
    }
}

/* CIE xy of the white (kelvin, tint): the locus point moved along the
 * locus's normal in uv by Duv = -tint / 1000 (tint > 0 is magenta, below
 * the locus). Tint 0 is the locus point itself, exactly as planck_xy gives
 * it, so a tint of 0 reproduces the temperature-only whites bit for bit. */
static void white_xy(double kelvin, double tint, double *x, double *y)
{
    planck_xy(kelvin, x, y);
    if (tint == 0)
        return;
    double u, v, n[2], duv = -tint / 1000.0;
    xy_to_uv(*x, *y, &u, &v);
    planck_normal_uv(kelvin, n);
    uv_to_xy(u + duv * n[0], v + duv * n[1], x, y);
}

/* RGB -> RGB matrix that makes a plate lit by white (from, tint_from) look
 * lit by white (to, tint_to):
 * RGB<-XYZ * Bradford(white(from) -> white(to)) * XYZ<-RGB. */
static void white_balance_matrix(double from, double tint_from, double to, double tint_to,
                                 mat3 out)
{
    double x, y, ws[3], wd[3];
    white_xy(from, tint_from, &x, &y);
    xy_to_xyz(x, y, ws);
    white_xy(to, tint_to, &x, &y);
    xy_to_xyz(x, y, wd);
    mat3 to_xyz, from_xyz, adapt;
    rgb_to_xyz(to_xyz);
    mat3_inv(to_xyz, from_xyz);
    bradford(ws, wd, adapt);
    mat3_mul(adapt, to_xyz, out);
    mat3_mul(from_xyz, out, out);
}

/* ---- window -------------------------------------------------------------- */

/*
 * The mask is computed in float, by the same operations in the same order as
 * cl/relight.cl (whose build options make division and sqrt correctly
 * rounded), so both paths get identical masks. Float geometry is accurate to
 * about 1e-7 of the window's size, far below a pixel; computing it in double
 * here would instead make the two paths disagree on soft-edge pixels by
 * ~R * 1e-7 / feather, which a CL-vs-C tolerance could not bound.
 *
 * dx, dy: offset of the pixel centre from the window centre, in pixels (y
 * down), formed as integer + fraction so no large coordinates are
 * subtracted. They are turned into the window's own axes by window.angle
 * (counter-clockwise on screen): lx along (cos a, -sin a), ly along
 * (sin a, cos a); at angle 0 (cos 1, sin 0) lx and ly are dx and dy exactly.
 * Signed distance in pixels from the outline, negative inside. The ellipse
 * uses the normalised radius r = |(lx/a, ly/b)| scaled by the ellipse's
 * radius through the pixel (len / r): exact for circles and along the axes.
 * The rectangle's is the exact Euclidean distance (rounded outside corners).
 * The gradient's edge is the line through the centre across the angle's
 * direction; the correction side, toward the direction, is inside: d = -lx.
 */
static float window_distance(const struct relight_uniforms *u, float dx, float dy)
{
    float hw = u->half_w, hh = u->half_h;
    float lx = dx * u->cos_a - dy * u->sin_a;
    float ly = dx * u->sin_a + dy * u->cos_a;
    if (u->shape == SHAPE_GRADIENT)
        return -lx;
    if (u->shape == SHAPE_RECT) {
        float qx = fabsf(lx) - hw, qy = fabsf(ly) - hh;
        float ox = fmaxf(qx, 0.0f), oy = fmaxf(qy, 0.0f);
        return sqrtf(ox * ox + oy * oy) + fminf(fmaxf(qx, qy), 0.0f);
    }
    float a = lx * u->inv_a, b = ly * u->inv_b;
    float r = sqrtf(a * a + b * b);
    if (r == 0.0f)
        return -fminf(hw, hh);
    float len = sqrtf(lx * lx + ly * ly);
    return (r - 1.0f) * (len / r);
}

/* cos and sin of an angle in degrees, as float; exact at multiples of 90
 * degrees, where cos(M_PI / 2) would otherwise leave 6e-17 instead of 0. */
static void angle_cos_sin(double degrees, float *c, float *s)
{
    double r = fmod(degrees, 360.0);
    if (r < 0)
        r += 360.0;
    if (r == 0 || r == 90 || r == 180 || r == 270) {
        int q = (int)(r / 90);
        static const float cq[4] = {1, 0, -1, 0}, sq[4] = {0, 1, 0, -1};
        *c = cq[q];
        *s = sq[q];
        return;
    }
    double rad = r * (3.14159265358979323846 / 180.0);
    *c = (float)cos(rad);
    *s = (float)sin(rad);
}

/* 1 inside, 0 outside, smoothstep across `feather` pixels centred on the
 * outline (0.5 on it); a zero feather is a hard edge that counts the outline
 * as inside. The smoothstep is written in s = 1 - t, s*s*(3 - 2s), so the
 * thin tail near 0 is not the difference of two numbers close to 1. */
static float window_mask(const struct relight_uniforms *u, int x, int y, int origin_x,
                         int origin_y)
{
    float dx = (float)(origin_x - u->icx + x) + u->fx;
    float dy = (float)(origin_y - u->icy + y) + u->fy;
    float d = window_distance(u, dx, dy);
    float m;
    if (u->inv_feather > 0.0f) {
        float s = 0.5f - d * u->inv_feather;
        s = s < 0.0f ? 0.0f : s > 1.0f ? 1.0f : s;
        m = s * s * (3.0f - 2.0f * s);
    } else {
        m = d <= 0.0f ? 1.0f : 0.0f;
    }
    return u->invert ? 1.0f - m : m;
}

/* ---- match: fitting the plate to a reference frame (CPU, once per frame) -- */

/*
 * docs/relight.md explains the method. In short: both frames become images
 * of block means (about 160 blocks across); blocks that are finite, above a
 * noise floor and clear of clipping in both frames are candidates; one
 * global translation (camera motion), found by normalised cross-correlation
 * of log luma over blocks and then refined to the pixel, pairs the frame's
 * blocks with the reference's; a pair is kept when its 3x3 neighbourhood of
 * log luma agrees in shape (textured) or both are flat with the colour ratio
 * the rest of the frame has (so moving objects drop out); then a robust fit
 * per channel over the kept pairs, the pairs it cannot explain dropped, and
 * the fit again. Everything is deterministic: no sampling, no threads,
 * selections with a fixed pivot rule, ties broken toward less motion.
 */
#define MATCH_BLOCKS_ACROSS 160 /* block grid: about this many blocks across */
#define MATCH_SEARCH 8          /* camera motion searched, blocks each way */
#define MATCH_MIN_SAMPLES 64    /* fewer kept pairs than this (and than 1 %)... */
#define MATCH_MIN_FRACTION 0.01 /* ...of the blocks: the fit is not trusted */
#define MATCH_NOISE_FLOOR 0.005 /* of the 99th-percentile block luma */
#define MATCH_CLIP 0.98         /* of the frame's largest value per channel */
#define MATCH_TEXTURE 0.02      /* std of ln luma over 3x3 blocks: textured above */
#define MATCH_NCC 0.9           /* textured neighbourhoods must correlate this well */
#define MATCH_FLAT_CHROMA 0.05  /* flat pairs: ln chroma ratio off the median by at most */
#define MATCH_FLAT_LUMA 0.15    /* flat pairs: ln luma ratio off the median by at most */

/* One image as block means. Block (i, j) covers pixels
 * [ox + i * bs, ox + (i + 1) * bs) x [oy + j * bs, oy + (j + 1) * bs). */
struct match_grid {
    int nbx, nby, bs, ox, oy;
    double *rgb;       /* nbx * nby * 3 means */
    double *lnl;       /* ln luma, NAN where the block is not usable for it */
    unsigned char *ok; /* well exposed: finite, above the noise floor, unclipped */
};

static void grid_free(struct match_grid *g)
{
    free(g->rgb);
    free(g->lnl);
    free(g->ok);
    memset(g, 0, sizeof *g);
}

/* The k-th smallest of x[0..n) (0 <= k < n); reorders x. Quickselect with
 * a median-of-three pivot: deterministic, linear on average. x holds no
 * NaN. */
static double kth_of(double *x, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (hi > lo) {
        int mid = lo + (hi - lo) / 2;
        double a = x[lo], b = x[mid], c = x[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot)
                i++;
            while (x[j] > pivot)
                j--;
            if (i <= j) {
                double t = x[i];
                x[i] = x[j];
                x[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return x[k];
}

/* Median of x[0..n) (n > 0); reorders x. */
static double median_of(double *x, int n)
{
    double hi = kth_of(x, n, n / 2);
    if (n % 2)
        return hi;
    /* The lower middle is the largest of the part below n / 2. */
    double lo = x[0];
    for (int i = 1; i < n / 2; i++)
        lo = x[i] > lo ? x[i] : lo;
    return 0.5 * (lo + hi);
}

/* The block means of img, in one pass over its pixels, and which blocks are
 * usable: ENOMEM or 0. */
static int grid_build(const struct pfs_image *img, int bs, int ox, int oy, struct match_grid *g)
{
    memset(g, 0, sizeof *g);
    g->bs = bs;
    g->ox = ox;
    g->oy = oy;
    g->nbx = (img->width - ox) / bs;
    g->nby = (img->height - oy) / bs;
    if (g->nbx < 1 || g->nby < 1) {
        g->nbx = g->nby = 0;
        return 0;
    }
    size_t nb = (size_t)g->nbx * (size_t)g->nby;
    g->rgb = calloc(nb * 3, sizeof *g->rgb);
    g->lnl = malloc(nb * sizeof *g->lnl);
    g->ok = calloc(nb, 1);
    float *bmax = malloc(nb * 3 * sizeof *bmax);
    unsigned char *bad = calloc(nb, 1);
    double *work = malloc(nb * sizeof *work);
    if (!g->rgb || !g->lnl || !g->ok || !bmax || !bad || !work) {
        free(bmax);
        free(bad);
        free(work);
        grid_free(g);
        return ENOMEM;
    }
    for (size_t b = 0; b < nb * 3; b++)
        bmax[b] = -INFINITY;

    /* The pass: sums and per-channel maxima per block, a row of a block at
     * a time in float (bs values), added into double. A block with any
     * non-finite R, G or B is bad: x - x is 0 for every finite x and NaN
     * for Inf and NaN, so the block's sum of those is 0 exactly when all
     * are finite. (Sums and maxima of a bad block are never used.) */
    float imax[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int by = 0; by < g->nby; by++) {
        double *sum = g->rgb + (size_t)by * (size_t)g->nbx * 3;
        float *mx = bmax + (size_t)by * (size_t)g->nbx * 3;
        unsigned char *bd = bad + (size_t)by * (size_t)g->nbx;
        for (int y = oy + by * bs; y < oy + (by + 1) * bs; y++) {
            const float *p = img->px + ((size_t)y * (size_t)img->width + (size_t)ox) * 4;
            for (int bx = 0; bx < g->nbx; bx++) {
                float s0 = 0, s1 = 0, s2 = 0, z = 0;
                float m0 = mx[bx * 3], m1 = mx[bx * 3 + 1], m2 = mx[bx * 3 + 2];
                for (int k = 0; k < bs; k++, p += 4) {
                    float r = p[0], gr = p[1], b = p[2];
                    s0 += r;
                    s1 += gr;
                    s2 += b;
                    z += (r - r) + (gr - gr) + (b - b);
                    m0 = r > m0 ? r : m0;
                    m1 = gr > m1 ? gr : m1;
                    m2 = b > m2 ? b : m2;
                }
                sum[bx * 3] += s0;
                sum[bx * 3 + 1] += s1;
                sum[bx * 3 + 2] += s2;
                mx[bx * 3] = m0;
                mx[bx * 3 + 1] = m1;
                mx[bx * 3 + 2] = m2;
                bd[bx] |= z != 0;
            }
        }
    }

    /* Means, ln luma, the frame's largest values and the noise floor. */
    double inv_n = 1.0 / ((double)bs * (double)bs);
    int nl = 0;
    for (size_t b = 0; b < nb; b++) {
        double *c = g->rgb + b * 3;
        g->lnl[b] = NAN;
        if (bad[b])
            continue;
        for (int k = 0; k < 3; k++) {
            c[k] *= inv_n;
            imax[k] = fmaxf(imax[k], bmax[b * 3 + k]);
        }
        double l = luma_w[0] * c[0] + luma_w[1] * c[1] + luma_w[2] * c[2];
        if (l > 0) {
            g->lnl[b] = log(l);
            work[nl++] = l;
        }
    }
    double floor_l = 0;
    if (nl > 0)
        floor_l = MATCH_NOISE_FLOOR * kth_of(work, nl, (int)((nl - 1) * 0.99));
    for (size_t b = 0; b < nb; b++) {
        const double *c = g->rgb + b * 3;
        if (bad[b] || !(floor_l > 0))
            continue;
        double l = luma_w[0] * c[0] + luma_w[1] * c[1] + luma_w[2] * c[2];
        bool ok = l >= floor_l;
        for (int k = 0; k < 3 && ok; k++)
            ok = c[k] >= 0.1 * floor_l && !(bmax[b * 3 + k] >= MATCH_CLIP * imax[k]);
        g->ok[b] = ok;
    }
    free(bmax);
    free(bad);
    free(work);
    return 0;
}

/* Normalised cross-correlation of ln luma between frame block (i, j) and
 * reference block (i + sx, j + sy), over the frame blocks on a grid of the
 * given step where both are usable. -2 when fewer than min_n pairs. */
static double grid_ncc(const struct match_grid *f, const struct match_grid *r, int sx, int sy,
                       int step, int min_n)
{
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    int n = 0;
    int j0 = sy < 0 ? -sy : 0, j1 = r->nby - sy < f->nby ? r->nby - sy : f->nby;
    int i0 = sx < 0 ? -sx : 0, i1 = r->nbx - sx < f->nbx ? r->nbx - sx : f->nbx;
    for (int j = j0; j < j1; j += step) {
        const double *fa = f->lnl + (size_t)j * (size_t)f->nbx;
        const double *rb = r->lnl + (size_t)(j + sy) * (size_t)r->nbx + sx;
        for (int i = i0; i < i1; i += step) {
            double a = fa[i], b = rb[i];
            if (isnan(a) || isnan(b))
                continue;
            sa += a;
            sb += b;
            saa += a * a;
            sbb += b * b;
            sab += a * b;
            n++;
        }
    }
    if (n < min_n || n < 2)
        return -2;
    double va = saa - sa * sa / n, vb = sbb - sb * sb / n, cab = sab - sa * sb / n;
    if (!(va > 0 && vb > 0))
        return -2;
    double ncc = cab / sqrt(va * vb);
    return ncc > 1 ? 1 : ncc; /* rounding may not beat a perfect match */
}

/* Zero-mean NCC and the standard deviations of the 3x3 neighbourhoods of
 * ln luma around frame block (i, j) and reference block (ri, rj). false when
 * a neighbour is missing or unusable. */
static bool neighbourhood(const struct match_grid *f, int i, int j, const struct match_grid *r,
                          int ri, int rj, double *ncc, double *std_f, double *std_r)
{
    if (i < 1 || j < 1 || i + 1 >= f->nbx || j + 1 >= f->nby || ri < 1 || rj < 1 ||
        ri + 1 >= r->nbx || rj + 1 >= r->nby)
        return false;
    double a[9], b[9], ma = 0, mb = 0;
    for (int k = 0; k < 9; k++) {
        a[k] = f->lnl[(size_t)(j + k / 3 - 1) * (size_t)f->nbx + (size_t)(i + k % 3 - 1)];
        b[k] = r->lnl[(size_t)(rj + k / 3 - 1) * (size_t)r->nbx + (size_t)(ri + k % 3 - 1)];
        if (isnan(a[k]) || isnan(b[k]))
            return false;
        ma += a[k];
        mb += b[k];
    }
    ma /= 9;
    mb /= 9;
    double saa = 0, sbb = 0, sab = 0;
    for (int k = 0; k < 9; k++) {
        double da = a[k] - ma, db = b[k] - mb;
        saa += da * da;
        sbb += db * db;
        sab += da * db;
    }
    *std_f = sqrt(saa / 9);
    *std_r = sqrt(sbb / 9);
    *ncc = saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
    return true;
}

/* Tukey biweight location of x[0..n) (ln ratios): starts at the median,
 * scale 1.4826 MAD (at least 1e-4), three reweighted means. work: n doubles. */
static double robust_mean(const double *x, int n, double *work)
{
    memcpy(work, x, (size_t)n * sizeof *work);
    double m = median_of(work, n);
    for (int i = 0; i < n; i++)
        work[i] = fabs(x[i] - m);
    double s = 1.4826 * median_of(work, n);
    double c = 4.685 * (s > 1e-4 ? s : 1e-4);
    for (int it = 0; it < 3; it++) {
        double sw = 0, swx = 0;
        for (int i = 0; i < n; i++) {
            double t = (x[i] - m) / c;
            if (fabs(t) >= 1)
                continue;
            double w = (1 - t * t) * (1 - t * t);
            sw += w;
            swx += w * x[i];
        }
        if (!(sw > 0))
            break;
        m = swx / sw;
    }
    return m;
}

/* ref ~ g * frm + o by iteratively reweighted least squares: errors
 * relative to the reference value (so a bright block weighs what a dark one
 * does, as in the log-domain gain fit), Huber weights (k = 1.345) on the
 * relative residual with scale 1.4826 MAD, 10 iterations from g, o = 0. */
static void robust_line(const double *frm, const double *ref, int n, double *g, double *o,
                        double *work)
{
    double gg = *g, oo = 0;
    for (int it = 0; it < 10; it++) {
        for (int i = 0; i < n; i++)
            work[i] = fabs((ref[i] - gg * frm[i] - oo) / ref[i]);
        double s = 1.4826 * median_of(work, n);
        double ks = 1.345 * (s > 1e-9 ? s : 1e-9);
        double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int i = 0; i < n; i++) {
            double e = fabs((ref[i] - gg * frm[i] - oo) / ref[i]);
            double w = (e <= ks ? 1.0 : ks / e) / (ref[i] * ref[i]);
            sw += w;
            sx += w * frm[i];
            sy += w * ref[i];
            sxx += w * frm[i] * frm[i];
            sxy += w * frm[i] * ref[i];
        }
        double den = sw * sxx - sx * sx;
        if (!(den > 1e-12 * sw * sxx))
            break; /* no spread in the frame's values: keep the gain */
        gg = (sw * sxy - sx * sy) / den;
        oo = (sy - gg * sx) / sw;
    }
    *g = gg;
    *o = oo;
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A monotonic, continuous approximation of log2 for x > 0 (Mitchell's: the
 * float's bits read as fixed point), within 0.09 of it: enough to compare
 * the shapes of two images, at a fraction of log2's cost. */
static float approx_log2(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (float)b * (1.0f / 8388608.0f) - 127.0f;
}

/* Approximate log2 luma of one pixel, NAN where luma is not a positive
 * finite number. */
static float pixel_lnl(const float *p)
{
    float l = 0.2126f * p[0] + 0.7152f * p[1] + 0.0722f * p[2];
    return l > 0 && l <= FLT_MAX ? approx_log2(l) : NAN;
}

/*
 * The pixel shift within radius of (cx, cy) whose NCC of approximate log
 * luma is best, over a lattice of about 16000 frame pixels (the same pixels
 * for every shift): reference pixel (x + qx, y + qy) shows what frame pixel
 * (x, y) does. *found is false when the frames are too small for the shifts
 * or too few pixels are usable. ENOMEM or 0.
 */
static int pixel_shift(const struct pfs_image *f, const struct pfs_image *r, int cx, int cy,
                       int radius, int *qx, int *qy, bool *found)
{
    *found = false;
    int w = f->width, h = f->height;
    int m = (abs(cx) > abs(cy) ? abs(cx) : abs(cy)) + radius;
    if (2 * m + 16 > w || 2 * m + 16 > h)
        return 0;
    int step = (int)sqrt((double)(w - 2 * m) * (double)(h - 2 * m) / 8000.0);
    if (step < 1)
        step = 1;
    int nx = (w - 2 * m + step - 1) / step, ny = (h - 2 * m + step - 1) / step;
    float *a = malloc((size_t)nx * (size_t)ny * sizeof *a);
    float *lr = malloc((size_t)w * (size_t)h * sizeof *lr);
    if (!a || !lr) {
        free(a);
        free(lr);
        return ENOMEM;
    }
    for (int j = 0; j < ny; j++)
        for (int i = 0; i < nx; i++)
            a[(size_t)j * (size_t)nx + (size_t)i] = pixel_lnl(
                f->px + ((size_t)(m + j * step) * (size_t)w + (size_t)(m + i * step)) * 4);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        lr[i] = pixel_lnl(r->px + i * 4);

    double best = -2;
    for (int ring = 0; ring <= radius; ring++)
        for (int dy = -ring; dy <= ring; dy++)
            for (int dx = -ring; dx <= ring; dx++) {
                if (abs(dx) != ring && abs(dy) != ring)
                    continue;
                int ox = cx + dx, oy = cy + dy;
                double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
                int n = 0;
                for (int j = 0; j < ny; j++) {
                    const float *fa = a + (size_t)j * (size_t)nx;
                    const float *rb = lr + (size_t)(m + j * step + oy) * (size_t)w + m + ox;
                    for (int i = 0; i < nx; i++) {
                        float u = fa[i], v = rb[(size_t)i * (size_t)step];
                        if (isnan(u) || isnan(v))
                            continue;
                        sa += u;
                        sb += v;
                        saa += (double)u * u;
                        sbb += (double)v * v;
                        sab += (double)u * v;
                        n++;
                    }
                }
                if (n < 64)
                    continue;
                double va = saa - sa * sa / n, vb = sbb - sb * sb / n;
                if (!(va > 0 && vb > 0))
                    continue;
                double c = (sab - sa * sb / n) / sqrt(va * vb);
                c = c > 1 ? 1 : c;
                if (c > best + 1e-9) {
                    best = c;
                    *qx = ox;
                    *qy = oy;
                    *found = true;
                }
            }
    free(a);
    free(lr);
    return 0;
}

struct match_result {
    double gain[3], offset[3];
    double residual; /* RMS log2 ratio left over, stops */
    int kept, blocks, shift_x, shift_y;
};

/* Fits the model per channel to the kept pairs: frame means cf and
 * reference means cr, channel k at [k * stride + sample]. Identical pairs
 * give exactly gain 1 and offset 0. lr, work: n doubles each. */
static void fit_samples(const double *cf, const double *cr, int stride, int n, int model,
                        struct match_result *res, double *lr, double *work)
{
    for (int k = 0; k < 3; k++) {
        const double *a = cf + (size_t)k * (size_t)stride, *b = cr + (size_t)k * (size_t)stride;
        bool same = true;
        for (int sm = 0; sm < n; sm++) {
            lr[sm] = log(b[sm] / a[sm]);
            same = same && a[sm] == b[sm];
        }
        res->gain[k] = 1;
        res->offset[k] = 0;
        if (same)
            continue;
        res->gain[k] = exp(robust_mean(lr, n, work));
        if (model == MODEL_GAIN_OFFSET)
            robust_line(a, b, n, &res->gain[k], &res->offset[k], work);
    }
}

/* Median over the pairs of the largest |ln(ref / fit)| of their channels;
 * infinite for a pair whose fit is not positive. work: n doubles. */
static double sample_error_median(const double *cf, const double *cr, int stride, int n,
                                  const struct match_result *res, double *work)
{
    for (int sm = 0; sm < n; sm++) {
        double e = 0;
        for (int k = 0; k < 3; k++) {
            size_t i = (size_t)k * (size_t)stride + (size_t)sm;
            double fit = res->gain[k] * cf[i] + res->offset[k];
            double ek = fit > 0 ? fabs(log(cr[i] / fit)) : INFINITY;
            e = ek > e ? ek : e;
        }
        work[sm] = e;
    }
    return median_of(work, n);
}

/* Fits the model that brings frame to reference. EINVAL for unusable
 * inputs, EIO when the fit cannot be trusted, ENOMEM. */
static int match_fit(const struct pfs_image *frame, const struct pfs_image *ref, int ref_no,
                     int model, struct match_result *res, pfs_error *err)
{
    memset(res, 0, sizeof *res);
    if (frame->width != ref->width || frame->height != ref->height)
        return pfs_error_set(err, EINVAL,
                             "relight match: reference frame %d is %dx%d but the frame is "
                             "%dx%d; match needs frames of the same size",
                             ref_no, ref->width, ref->height, frame->width, frame->height);
    int longest = frame->width > frame->height ? frame->width : frame->height;
    int bs = (longest + MATCH_BLOCKS_ACROSS - 1) / MATCH_BLOCKS_ACROSS;
    if (bs < 1)
        bs = 1;

    struct match_grid f, r, r2 = {0};
    double *buf = NULL;
    int *cand = NULL; /* candidate blocks, (i, j) pairs */
    int rc = grid_build(frame, bs, 0, 0, &f);
    if (rc == 0)
        rc = grid_build(ref, bs, 0, 0, &r);
    else
        memset(&r, 0, sizeof r);
    if (rc)
        goto oom;
    res->blocks = f.nbx * f.nby;

    /* Camera motion: the block shift with the best NCC of ln luma, searched
     * on every other block in each direction, then the 3x3 shifts around
     * the best on every block. Shifts are visited nearest first and a later
     * one must beat the best by 1e-9, so ties go to the smaller motion (and
     * identical frames to no motion: their NCC at 0 is exactly 1). */
    int sx = 0, sy = 0, cx, cy;
    double best = -3;
    int min_n = res->blocks / 16 > 8 ? res->blocks / 16 : 8;
    for (int pass = 0; pass < 2; pass++) {
        int range = pass ? 1 : MATCH_SEARCH, step = pass ? 1 : 2;
        cx = sx;
        cy = sy;
        best = -3;
        for (int ring = 0; ring <= range; ring++)
            for (int dy = -ring; dy <= ring; dy++)
                for (int dx = -ring; dx <= ring; dx++) {
                    if (abs(dx) != ring && abs(dy) != ring)
                        continue;
                    double c = grid_ncc(&f, &r, cx + dx, cy + dy, step, min_n / step / step);
                    if (c > best + 1e-9) {
                        best = c;
                        sx = cx + dx;
                        sy = cy + dy;
                    }
                }
    }
    /* Below a block: a parabola through the NCC at the best shift and its
     * four neighbours centres a search of pixel shifts, half a block and a
     * pixel each way; the reference is re-binned at the best of them and
     * used only if the blocks' NCC improves (so identical frames, whose NCC
     * at no shift is exactly 1, stay unshifted). */
    const struct match_grid *rg = &r;
    int px = sx * bs, py = sy * bs;
    if (best > -2 && bs > 1) {
        double frac[2] = {0, 0};
        for (int axis = 0; axis < 2; axis++) {
            double lo = grid_ncc(&f, &r, sx - !axis, sy - axis, 1, min_n);
            double hi = grid_ncc(&f, &r, sx + !axis, sy + axis, 1, min_n);
            double curv = lo - 2 * best + hi;
            if (lo > -2 && hi > -2 && curv < 0)
                frac[axis] = clampd(0.5 * (lo - hi) / curv, -0.5, 0.5);
        }
        int qx = (int)lround((sx + frac[0]) * bs), qy = (int)lround((sy + frac[1]) * bs);
        bool found;
        rc = pixel_shift(frame, ref, qx, qy, bs / 2 + 1, &qx, &qy, &found);
        if (rc)
            goto oom;
        if (found && (qx != px || qy != py)) {
            /* floor division: block shift and the offset within a block */
            int bx = qx >= 0 ? qx / bs : -((-qx + bs - 1) / bs);
            int by = qy >= 0 ? qy / bs : -((-qy + bs - 1) / bs);
            rc = grid_build(ref, bs, qx - bx * bs, qy - by * bs, &r2);
            if (rc)
                goto oom;
            if (grid_ncc(&f, &r2, bx, by, 1, min_n) > best + 1e-9) {
                rg = &r2;
                sx = bx;
                sy = by;
                px = qx;
                py = qy;
            }
        }
    }
    res->shift_x = px;
    res->shift_y = py;

    /* Candidates: well exposed in both. */
    int nf = f.nbx * f.nby;
    buf = malloc((size_t)nf * 10 * sizeof *buf);
    cand = malloc((size_t)nf * 2 * sizeof *cand);
    if (!buf || !cand)
        goto oom;
    double *cf = buf, *cr = buf + (size_t)nf * 3; /* candidate means, frame and ref */
    double *k1 = buf + (size_t)nf * 6, *k2 = buf + (size_t)nf * 7, *kl = buf + (size_t)nf * 8;
    double *work = buf + (size_t)nf * 9;
    int nc = 0;
    for (int j = 0; j < f.nby; j++)
        for (int i = 0; i < f.nbx; i++) {
            int ri = i + sx, rj = j + sy;
            if (ri < 0 || rj < 0 || ri >= rg->nbx || rj >= rg->nby)
                continue;
            size_t fb = (size_t)j * (size_t)f.nbx + (size_t)i;
            size_t rb = (size_t)rj * (size_t)rg->nbx + (size_t)ri;
            if (!f.ok[fb] || !rg->ok[rb])
                continue;
            const double *a = f.rgb + fb * 3, *b = rg->rgb + rb * 3;
            double rho[3];
            for (int k = 0; k < 3; k++)
                rho[k] = log(b[k] / a[k]);
            k1[nc] = rho[0] - rho[1];
            k2[nc] = rho[2] - rho[1];
            kl[nc] = rg->lnl[rb] - f.lnl[fb];
            cand[nc * 2] = i;
            cand[nc * 2 + 1] = j;
            nc++;
        }
    double med1 = 0, med2 = 0, medl = 0;
    if (nc > 0) {
        memcpy(work, k1, (size_t)nc * sizeof *work);
        med1 = median_of(work, nc);
        memcpy(work, k2, (size_t)nc * sizeof *work);
        med2 = median_of(work, nc);
        memcpy(work, kl, (size_t)nc * sizeof *work);
        medl = median_of(work, nc);
    }

    /* Motion consistency. */
    int kept = 0;
    for (int c = 0; c < nc; c++) {
        int i = cand[c * 2], j = cand[c * 2 + 1];
        double ncc, sdf, sdr;
        if (!neighbourhood(&f, i, j, rg, i + sx, j + sy, &ncc, &sdf, &sdr))
            continue;
        bool keep;
        if (sdf > MATCH_TEXTURE && sdr > MATCH_TEXTURE)
            keep = ncc >= MATCH_NCC;
        else if (sdf <= MATCH_TEXTURE && sdr <= MATCH_TEXTURE)
            keep = fabs(k1[c] - med1) <= MATCH_FLAT_CHROMA &&
                   fabs(k2[c] - med2) <= MATCH_FLAT_CHROMA && fabs(kl[c] - medl) <= MATCH_FLAT_LUMA;
        else
            keep = false;
        if (!keep)
            continue;
        size_t fb = (size_t)j * (size_t)f.nbx + (size_t)i;
        size_t rb = (size_t)(j + sy) * (size_t)rg->nbx + (size_t)(i + sx);
        for (int k = 0; k < 3; k++) {
            cf[(size_t)k * (size_t)nf + (size_t)kept] = f.rgb[fb * 3 + (size_t)k];
            cr[(size_t)k * (size_t)nf + (size_t)kept] = rg->rgb[rb * 3 + (size_t)k];
        }
        kept++;
    }
    res->kept = kept;
    int need = (int)ceil(MATCH_MIN_FRACTION * res->blocks);
    if (need > MATCH_MIN_SAMPLES)
        need = MATCH_MIN_SAMPLES;
    if (need < 1)
        need = 1;
    if (kept < need)
        goto too_few;

    /* The fit; then the pairs the fit cannot explain (a channel off by more
     * than 0.2 in ln, 0.29 stop, or 4.685 robust sigmas if that is more:
     * what the structure checks let through of moving objects, speculars,
     * changed lights) are dropped and the model fitted again on the rest. */
    fit_samples(cf, cr, nf, kept, model, res, k1, work);
    double cut = 1.4826 * 4.685 * sample_error_median(cf, cr, nf, kept, res, work);
    cut = cut > 0.2 ? cut : 0.2;
    int inl = 0;
    for (int sm = 0; sm < kept; sm++) {
        bool in = true;
        for (int k = 0; k < 3 && in; k++) {
            double fit = res->gain[k] * cf[(size_t)k * (size_t)nf + (size_t)sm] + res->offset[k];
            double e = log(cr[(size_t)k * (size_t)nf + (size_t)sm] / fit);
            in = fit > 0 && fabs(e) <= cut;
        }
        if (!in)
            continue;
        for (int k = 0; k < 3; k++) {
            cf[(size_t)k * (size_t)nf + (size_t)inl] = cf[(size_t)k * (size_t)nf + (size_t)sm];
            cr[(size_t)k * (size_t)nf + (size_t)inl] = cr[(size_t)k * (size_t)nf + (size_t)sm];
        }
        inl++;
    }
    if (inl < kept) {
        kept = res->kept = inl;
        if (kept < need)
            goto too_few;
        fit_samples(cf, cr, nf, kept, model, res, k1, work);
    }

    /* What is left over: RMS of the log2 ratios, all channels. */
    double ss = 0;
    int ns = 0;
    for (int k = 0; k < 3; k++) {
        const double *fa = cf + (size_t)k * (size_t)nf, *rb = cr + (size_t)k * (size_t)nf;
        for (int sm = 0; sm < kept; sm++) {
            double fit = res->gain[k] * fa[sm] + res->offset[k];
            if (fit > 0) {
                double e = log2(rb[sm] / fit);
                ss += e * e;
                ns++;
            }
        }
    }
    res->residual = ns ? sqrt(ss / ns) : 0;
    bool finite = isfinite(res->residual);
    for (int k = 0; k < 3; k++)
        finite = finite && isfinite(res->gain[k]) && res->gain[k] > 0 && isfinite(res->offset[k]);
    if (!finite)
        rc = pfs_error_set(err, EIO,
                           "relight match: the fit of this frame to reference frame %d is not "
                           "usable (gain [%g %g %g], offset [%g %g %g]); pick another reference "
                           "frame or match.model: gain",
                           ref_no, res->gain[0], res->gain[1], res->gain[2], res->offset[0],
                           res->offset[1], res->offset[2]);
    goto done;

too_few:
    rc = pfs_error_set(err, EIO,
                       "relight match: this frame and reference frame %d share only %d "
                       "well-exposed, motion-consistent samples (need %d); pick a reference "
                       "closer in time or with more of the same surfaces in view",
                       ref_no, kept, need);
    goto done;
oom:
    rc = pfs_error_set(err, ENOMEM, "relight match: out of memory");
done:
    free(buf);
    free(cand);
    grid_free(&f);
    grid_free(&r);
    grid_free(&r2);
    return rc;
}

/* The note: one line, exactly RELIGHT_NOTE_WIDTH characters. Every number
 * is clamped so that the line can never outgrow the width. */
static void match_note(char *note, int ref_no, int model, const struct match_result *m)
{
    double ge = luma_w[0] * m->gain[0] + luma_w[1] * m->gain[1] + luma_w[2] * m->gain[2];
    int n = snprintf(note, RELIGHT_NOTE_WIDTH + 1,
                     "match frame=%d model=%s gain=[%.4f %.4f %.4f] offset=[%+.5f %+.5f %+.5f] "
                     "exposure=%+.4f residual=%.4f samples=%d/%d shift=[%+d %+d]",
                     ref_no, match_models[model], clampd(m->gain[0], 0, 999.9999),
                     clampd(m->gain[1], 0, 999.9999), clampd(m->gain[2], 0, 999.9999),
                     clampd(m->offset[0], -99.99999, 99.99999),
                     clampd(m->offset[1], -99.99999, 99.99999),
                     clampd(m->offset[2], -99.99999, 99.99999),
                     clampd(log2(ge), -99.9999, 99.9999), clampd(m->residual, 0, 99.9999),
                     m->kept, m->blocks, (int)clampd(m->shift_x, -99999, 99999),
                     (int)clampd(m->shift_y, -99999, 99999));
    if (n < 0)
        n = 0;
    if (n > RELIGHT_NOTE_WIDTH)
        n = RELIGHT_NOTE_WIDTH;
    memset(note + n, ' ', (size_t)(RELIGHT_NOTE_WIDTH - n));
    note[RELIGHT_NOTE_WIDTH] = '\0';
}

/* ---- descriptor callbacks ------------------------------------------------ */

static int relight_validate(const pfs_pvec *vals, pfs_error *err)
{
    int shape = (int)vals[P_SHAPE][0];
    if ((shape == SHAPE_ELLIPSE || shape == SHAPE_RECT) &&
        !(vals[P_SIZE][0] > 0 && vals[P_SIZE][1] > 0))
        return pfs_error_set(err, EINVAL,
                             "relight: window.size must be greater than 0 in both width and "
                             "height when window.shape is %s (got [%g, %g])",
                             window_shapes[shape], vals[P_SIZE][0], vals[P_SIZE][1]);
    double mf = vals[P_MATCH_FRAME][0];
    if (mf != floor(mf) || mf < -1)
        return pfs_error_set(err, EINVAL,
                             "relight: match.frame must be a whole frame number, or -1 for no "
                             "match (got %g)",
                             mf);
    return 0;
}

static void relight_advise(const pfs_pvec *vals, char *msg, size_t size)
{
    int shape = (int)vals[P_SHAPE][0];
    if (size)
        msg[0] = '\0';
    if (shape == SHAPE_GRADIENT && (vals[P_SIZE][0] != 0 || vals[P_SIZE][1] != 0))
        snprintf(msg, size,
                 "relight: window.size is not used by a gradient (its ramp is window.feather "
                 "wide)");
    else if (shape == SHAPE_NONE && vals[P_ANGLE][0] != 0)
        snprintf(msg, size, "relight: window.angle has no effect without a window.shape");
    else if (shape != SHAPE_NONE && vals[P_MATCH_FRAME][0] >= 0)
        snprintf(msg, size,
                 "relight: match fits over the whole frame, but with a window its "
                 "correction applies only inside the window");
}

static int relight_reference(const pfs_pvec *vals)
{
    double mf = vals[P_MATCH_FRAME][0];
    return mf >= 0 && mf <= 1e9 && mf == floor(mf) ? (int)mf : -1;
}

static int relight_prepare(const pfs_pvec *vals, const struct pfs_op_frame *in,
                           void *uniforms, pfs_error *err)
{
    struct relight_uniforms *u = uniforms;
    memset(u, 0, sizeof *u);
    int shape = (int)vals[P_SHAPE][0];
    if (shape < SHAPE_NONE || shape > SHAPE_GRADIENT)
        return pfs_error_set(err, EINVAL, "relight: window.shape index %d out of range", shape);
    int model = (int)vals[P_MATCH_MODEL][0];
    if (model < MODEL_GAIN || model > MODEL_GAIN_OFFSET)
        return pfs_error_set(err, EINVAL, "relight: match.model index %d out of range", model);
    for (int p = P_TEMP_FROM; p <= P_TEMP_TO; p++)
        if (!(vals[p][0] >= 1667 && vals[p][0] <= 25000))
            return pfs_error_set(err, EINVAL, "relight: %s %g K outside 1667..25000 K",
                                 relight_params[p].name, vals[p][0]);
    for (int p = P_TINT_FROM; p <= P_TINT_TO; p++)
        if (!(vals[p][0] >= -100 && vals[p][0] <= 100))
            return pfs_error_set(err, EINVAL, "relight: %s %g outside -100..100",
                                 relight_params[p].name, vals[p][0]);
    if (!(fabs(vals[P_ANGLE][0]) <= 360))
        return pfs_error_set(err, EINVAL, "relight: window.angle %g outside -360..360 degrees",
                             vals[P_ANGLE][0]);
    int rc = relight_validate(vals, err);
    if (rc)
        return rc;

    /* match: the fitted correction comes first, so the explicit parameters
     * below grade the matched plate. A fit that is exactly identity
     * (identical frames) is skipped like any identity stage. */
    int ref_no = relight_reference(vals);
    if (ref_no >= 0) {
        if (!in || !in->frame || !in->reference)
            return pfs_error_set(err, EINVAL,
                                 "relight: match.frame is %d but prepare was given no %s; the "
                                 "engine decodes the reference frame and passes it with the frame",
                                 ref_no, in && in->frame ? "reference frame" : "frame");
        /* Messages and the note name the frame the engine decoded. */
        struct match_result m;
        rc = match_fit(in->frame, in->reference, in->reference_frame, model, &m, err);
        if (rc)
            return rc;
        if (in->note)
            match_note(in->note, in->reference_frame, model, &m);
        for (int c = 0; c < 3; c++) {
            u->fit_gain[c] = m.gain[c];
            u->fit_offset[c] = m.offset[c];
            if (m.gain[c] != 1 || m.offset[c] != 0)
                u->stages |= RELIGHT_FIT;
        }
    }

    if (vals[P_EXPOSURE][0] != 0) {
        u->stages |= RELIGHT_GAIN;
        u->gain = exp2(vals[P_EXPOSURE][0]);
    }
    /* Equal whites (temperature and tint) skip the matrix, which would be
     * identity only to within rounding. */
    if (vals[P_TEMP_FROM][0] != vals[P_TEMP_TO][0] || vals[P_TINT_FROM][0] != vals[P_TINT_TO][0]) {
        u->stages |= RELIGHT_MATRIX;
        white_balance_matrix(vals[P_TEMP_FROM][0], vals[P_TINT_FROM][0], vals[P_TEMP_TO][0],
                             vals[P_TINT_TO][0], u->m);
    }
    for (int c = 0; c < 3; c++) {
        u->slope[c] = vals[P_SLOPE][c];
        u->offset[c] = vals[P_OFFSET][c];
        u->power[c] = vals[P_POWER][c];
        if (u->slope[c] != 1 || u->offset[c] != 0)
            u->stages |= RELIGHT_SLOPE_OFFSET;
        if (u->power[c] != 1)
            u->stages |= RELIGHT_POWER;
    }
    u->sat = vals[P_SAT][0];
    if (u->sat != 1)
        u->stages |= RELIGHT_SAT;

    u->shape = shape;
    u->invert = vals[P_INVERT][0] != 0;
    if (shape != SHAPE_NONE) {
        double cx = vals[P_CENTER][0], cy = vals[P_CENTER][1];
        u->icx = (int)floor(cx);
        u->icy = (int)floor(cy);
        u->fx = (float)(0.5 - (cx - u->icx));
        u->fy = (float)(0.5 - (cy - u->icy));
        /* A gradient has no size: its half sizes and their reciprocals
         * stay 0, unused. */
        if (shape != SHAPE_GRADIENT) {
            u->half_w = (float)(0.5 * vals[P_SIZE][0]);
            u->half_h = (float)(0.5 * vals[P_SIZE][1]);
            u->inv_a = (float)(2.0 / vals[P_SIZE][0]);
            u->inv_b = (float)(2.0 / vals[P_SIZE][1]);
        }
        angle_cos_sin(vals[P_ANGLE][0], &u->cos_a, &u->sin_a);
        /* Below a thousandth of a pixel a soft edge is a hard one (and 1/f
         * would overflow a float). */
        u->inv_feather = vals[P_FEATHER][0] >= 1e-3 ? (float)(1.0 / vals[P_FEATHER][0]) : 0.0f;
    }
    return 0;
}

static double cdl_power(double x, double p)
{
    return (x > 0 && p != 1) ? pow(x, p) : x;
}

static int relight_run_cpu(const void *uniforms, const struct pfs_op_io *io, pfs_error *err)
{
    const struct relight_uniforms *u = uniforms;
    if (io->nsrc < 1)
        return pfs_error_set(err, EINVAL, "relight: no source frame");
    const struct pfs_image *src = io->src[0];
    struct pfs_image *dst = io->dst;
    if (src->width != dst->width || src->height != dst->height)
        return pfs_error_set(err, EINVAL, "relight: source %dx%d, destination %dx%d",
                             src->width, src->height, dst->width, dst->height);

    for (int y = 0; y < src->height; y++) {
        for (int x = 0; x < src->width; x++) {
            size_t i = ((size_t)y * (size_t)src->width + (size_t)x) * 4u;
            const float *in = src->px + i;
            float *out = dst->px + i;
            memcpy(out, in, 4 * sizeof(float));
            double m = 1.0;
            if (u->shape != SHAPE_NONE)
                m = window_mask(u, x, y, src->origin_x, src->origin_y);
            if (u->stages == 0 || m <= 0)
                continue;

            double c[3] = {in[0], in[1], in[2]};
            if (u->stages & RELIGHT_FIT)
                for (int k = 0; k < 3; k++)
                    c[k] = c[k] * u->fit_gain[k] + u->fit_offset[k];
            if (u->stages & RELIGHT_GAIN)
                for (int k = 0; k < 3; k++)
                    c[k] *= u->gain;
            if (u->stages & RELIGHT_MATRIX)
                mat3_vec(u->m, c, c);
            if (u->stages & RELIGHT_SLOPE_OFFSET)
                for (int k = 0; k < 3; k++)
                    c[k] = c[k] * u->slope[k] + u->offset[k];
            if (u->stages & RELIGHT_POWER)
                for (int k = 0; k < 3; k++)
                    c[k] = cdl_power(c[k], u->power[k]);
            if (u->stages & RELIGHT_SAT) {
                double luma = luma_w[0] * c[0] + luma_w[1] * c[1] + luma_w[2] * c[2];
                for (int k = 0; k < 3; k++)
                    c[k] = luma + u->sat * (c[k] - luma);
            }
            for (int k = 0; k < 3; k++)
                out[k] = (float)(m < 1 ? in[k] + m * (c[k] - in[k]) : c[k]);
        }
    }
    return 0;
}

static int cl_status(pfs_error *err, cl_int st, const char *what)
{
    return pfs_error_set(err, EIO, "relight: %s: %s", what, pfs_cl_status_name(st));
}

static int relight_run_cl(struct pfs_cl *cl, const void *uniforms,
                          const struct pfs_op_cl_io *io, pfs_error *err)
{
    const struct relight_uniforms *u = uniforms;
    if (io->nsrc < 1)
        return pfs_error_set(err, EINVAL, "relight: no source frame");
    const struct pfs_cl_image *src = io->src[0];
    struct pfs_cl_image *dst = io->dst;
    if (src->width != dst->width || src->height != dst->height)
        return pfs_error_set(err, EINVAL, "relight: source %dx%d, destination %dx%d",
                             src->width, src->height, dst->width, dst->height);

    pfs_error kerr;
    pfs_error_clear(&kerr);
    cl_kernel k = pfs_cl_kernel(cl, "relight", &kerr);
    if (!k)
        return pfs_error_set(err, kerr.code ? kerr.code : EIO, "relight: %s", kerr.msg);

    cl_int width = src->width, height = src->height;
    cl_int stages = (cl_int)u->stages, shape = u->shape, invert = u->invert;
    cl_float gain = (cl_float)u->gain, sat = (cl_float)u->sat;
    cl_float16 mat = {{0}};
    cl_float4 slope = {{0}}, offset = {{0}}, power = {{0}}, fitg = {{0}}, fito = {{0}};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            mat.s[r * 3 + c] = (cl_float)u->m[r][c];
    for (int c = 0; c < 3; c++) {
        slope.s[c] = (cl_float)u->slope[c];
        offset.s[c] = (cl_float)u->offset[c];
        power.s[c] = (cl_float)u->power[c];
        fitg.s[c] = (cl_float)u->fit_gain[c];
        fito.s[c] = (cl_float)u->fit_offset[c];
    }
    cl_int2 base = {{src->origin_x - u->icx, src->origin_y - u->icy}};
    cl_float2 frac = {{u->fx, u->fy}};
    cl_float4 win = {{u->half_w, u->half_h, u->inv_a, u->inv_b}};
    cl_float inv_feather = u->inv_feather;
    cl_float2 rot = {{u->cos_a, u->sin_a}};

    const struct {
        size_t size;
        const void *value;
    } args[] = {
        {sizeof(cl_mem), &src->buf}, {sizeof(cl_mem), &dst->buf}, {sizeof width, &width},
        {sizeof height, &height},    {sizeof stages, &stages},    {sizeof gain, &gain},
        {sizeof mat, &mat},          {sizeof slope, &slope},      {sizeof offset, &offset},
        {sizeof power, &power},      {sizeof sat, &sat},          {sizeof shape, &shape},
        {sizeof invert, &invert},    {sizeof base, &base},        {sizeof frac, &frac},
        {sizeof win, &win},          {sizeof inv_feather, &inv_feather},
        {sizeof rot, &rot},          {sizeof fitg, &fitg},        {sizeof fito, &fito},
    };
    for (cl_uint a = 0; a < sizeof args / sizeof args[0]; a++) {
        cl_int st = clSetKernelArg(k, a, args[a].size, args[a].value);
        if (st != CL_SUCCESS)
            return cl_status(err, st, "clSetKernelArg");
    }
    size_t global[2] = {(size_t)width, (size_t)height};
    cl_int st = clEnqueueNDRangeKernel(pfs_cl_queue(cl), k, 2, NULL, global, NULL, 0, NULL,
                                       NULL);
    if (st != CL_SUCCESS)
        return cl_status(err, st, "clEnqueueNDRangeKernel");
    return 0;
}

const struct pfs_op_desc pfs_op_relight = {
    .name = "relight",
    .summary = "exposure, white balance and ASC CDL in scene-linear light, "
               "optionally inside a soft window or matched to a reference frame",
    .params = relight_params,
    .nparams = sizeof relight_params / sizeof relight_params[0],
    .kind = PFS_OP_COLOUR,
    .uniforms_size = sizeof(struct relight_uniforms),
    .validate = relight_validate,
    .advise = relight_advise,
    .reference = relight_reference,
    .note_width = RELIGHT_NOTE_WIDTH,
    .prepare = relight_prepare,
    .run_cpu = relight_run_cpu,
    .run_cl = relight_run_cl,
    /* The kernel is float, the reference double. Dot products (the
     * white-balance matrix, luma) round relative to the magnitudes that go
     * in, not to the result, so saturated HDR values under extreme settings
     * reach ~5e-5; ordinary grades stay below 1e-5. 1e-4 is a fifth of a
     * half-float ulp. docs/relight.md has the measurements. */
    .cl_tolerance = 1e-4,
};
