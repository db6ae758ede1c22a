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
 * window blend. The match fit (engine/ops/match.c) reads the frame and its reference
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
#include "engine/ops/match.h"

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


static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The note: one line, exactly RELIGHT_NOTE_WIDTH characters. Every number
 * is clamped so that the line can never outgrow the width. */
static void match_note(char *note, int ref_no, int model, const struct pfs_match_result *m)
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
    if (model < PFS_MATCH_GAIN || model > PFS_MATCH_GAIN_OFFSET)
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
        struct pfs_match_result m;
        rc = pfs_match_fit(in->frame, in->reference, in->reference_frame, model, &m, err);
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

    const struct pfs_cl_arg args[] = {
        PFS_CL_ARG(src->buf), PFS_CL_ARG(dst->buf), PFS_CL_ARG(width),  PFS_CL_ARG(height),
        PFS_CL_ARG(stages),   PFS_CL_ARG(gain),     PFS_CL_ARG(mat),    PFS_CL_ARG(slope),
        PFS_CL_ARG(offset),   PFS_CL_ARG(power),    PFS_CL_ARG(sat),    PFS_CL_ARG(shape),
        PFS_CL_ARG(invert),   PFS_CL_ARG(base),     PFS_CL_ARG(frac),   PFS_CL_ARG(win),
        PFS_CL_ARG(inv_feather), PFS_CL_ARG(rot),   PFS_CL_ARG(fitg),   PFS_CL_ARG(fito),
    };
    return pfs_cl_run_2d(cl, "relight", args, (int)(sizeof args / sizeof args[0]), width, height,
                         err);
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
