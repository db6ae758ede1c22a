/*
 * relight.c - exposure, white balance and ASC CDL in scene-linear light,
 * optionally inside a soft-edged window.
 *
 * The colour science lives here and runs once per frame: prepare() turns the
 * parameter values into uniforms (a gain, a 3x3 RGB white-balance matrix from
 * the Planckian locus and a Bradford adaptation, the CDL numbers, the window
 * geometry) and a set of stage flags. Per pixel, run_cpu (the C reference:
 * colour in double, the window mask in float, see window_mask) and
 * cl/relight.cl (float) then apply the same stages in the same order:
 * exposure, white balance, CDL slope/offset, CDL power, saturation, window
 * blend. A stage whose parameters are identity is skipped rather than
 * computed, so an identity op copies pixels bit for bit, NaN and -0 included.
 * docs/relight.md states the math and its conventions for colour scientists.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/op.h"

static const char *const window_shapes[] = {"none", "ellipse", "rect", NULL};

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
     .def = {0}, .help = "limit the correction to an ellipse or a rectangle"},
    {.name = "window.center", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1e6, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window centre [x, y] in display-window pixels"},
    {.name = "window.size", .type = PFS_PARAM_VEC, .ncomp = 2, .min = 0, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window full width and height [w, h] in pixels; both > 0 when a shape is set"},
    {.name = "window.feather", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 1e5,
     .def = {0}, .keyframable = true, .unit = "px",
     .help = "width of the soft edge, centred on the window's outline"},
    {.name = "window.invert", .type = PFS_PARAM_BOOL, .ncomp = 1, .def = {0},
     .help = "correct outside the window instead of inside"},
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
};
enum { SHAPE_NONE, SHAPE_ELLIPSE, SHAPE_RECT };

/* Rec.709 luma weights, as the ASC CDL v1.2 saturation specifies. */
static const double luma_w[3] = {0.2126, 0.7152, 0.0722};

/*
 * The window is held as the float numbers both paths compute the mask from,
 * so that the CPU and OpenCL masks are the same bits (see window_mask).
 */
struct relight_uniforms {
    unsigned stages;
    double gain;    /* 2^exposure */
    double m[3][3]; /* white balance, RGB -> RGB */
    double slope[3], offset[3], power[3], sat;
    int shape, invert;
    int icx, icy;          /* window centre, integer part (display pixels) */
    float fx, fy;          /* 0.5 - the centre's fractional part */
    float half_w, half_h;  /* half sizes */
    float inv_a, inv_b;    /* 1 / half sizes */
    float inv_feather;     /* 1 / feather, 0 for a hard edge */
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

/* RGB -> RGB matrix that makes a plate lit by `from` look lit by `to`:
 * RGB<-XYZ * Bradford(white(from) -> white(to)) * XYZ<-RGB. */
static void white_balance_matrix(double from, double to, mat3 out)
{
    double x, y, ws[3], wd[3];
    planck_xy(from, &x, &y);
    xy_to_xyz(x, y, ws);
    planck_xy(to, &x, &y);
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
 * dx, dy: offset of the pixel centre from the window centre, in pixels,
 * formed as integer + fraction so no large coordinates are subtracted.
 * Signed distance in pixels from the outline, negative inside. The ellipse
 * uses the normalised radius r = |(dx/a, dy/b)| scaled by the ellipse's
 * radius through the pixel (len / r): exact for circles and along the axes.
 * The rectangle's is the exact Euclidean distance (rounded outside corners).
 */
static float window_distance(const struct relight_uniforms *u, float dx, float dy)
{
    float hw = u->half_w, hh = u->half_h;
    if (u->shape == SHAPE_RECT) {
        float qx = fabsf(dx) - hw, qy = fabsf(dy) - hh;
        float ox = fmaxf(qx, 0.0f), oy = fmaxf(qy, 0.0f);
        return sqrtf(ox * ox + oy * oy) + fminf(fmaxf(qx, qy), 0.0f);
    }
    float a = dx * u->inv_a, b = dy * u->inv_b;
    float r = sqrtf(a * a + b * b);
    if (r == 0.0f)
        return -fminf(hw, hh);
    float len = sqrtf(dx * dx + dy * dy);
    return (r - 1.0f) * (len / r);
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

/* ---- descriptor callbacks ------------------------------------------------ */

static int relight_validate(const pfs_pvec *vals, pfs_error *err)
{
    int shape = (int)vals[P_SHAPE][0];
    if (shape != SHAPE_NONE && !(vals[P_SIZE][0] > 0 && vals[P_SIZE][1] > 0))
        return pfs_error_set(err, EINVAL,
                             "relight: window.size must be greater than 0 in both width and "
                             "height when window.shape is %s (got [%g, %g])",
                             window_shapes[shape], vals[P_SIZE][0], vals[P_SIZE][1]);
    return 0;
}

static int relight_prepare(const pfs_pvec *vals, const struct pfs_image *frame,
                           void *uniforms, pfs_error *err)
{
    struct relight_uniforms *u = uniforms;
    memset(u, 0, sizeof *u);
    int shape = (int)vals[P_SHAPE][0];
    if (shape < SHAPE_NONE || shape > SHAPE_RECT)
        return pfs_error_set(err, EINVAL, "relight: window.shape index %d out of range", shape);
    for (int p = P_TEMP_FROM; p <= P_TEMP_TO; p++)
        if (!(vals[p][0] >= 1667 && vals[p][0] <= 25000))
            return pfs_error_set(err, EINVAL, "relight: %s %g K outside 1667..25000 K",
                                 relight_params[p].name, vals[p][0]);
    int rc = relight_validate(vals, err);
    if (rc)
        return rc;

    if (vals[P_EXPOSURE][0] != 0) {
        u->stages |= RELIGHT_GAIN;
        u->gain = exp2(vals[P_EXPOSURE][0]);
    }
    /* Equal temperatures skip the matrix, which would be identity only to
     * within rounding. */
    if (vals[P_TEMP_FROM][0] != vals[P_TEMP_TO][0]) {
        u->stages |= RELIGHT_MATRIX;
        white_balance_matrix(vals[P_TEMP_FROM][0], vals[P_TEMP_TO][0], u->m);
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
        u->half_w = (float)(0.5 * vals[P_SIZE][0]);
        u->half_h = (float)(0.5 * vals[P_SIZE][1]);
        u->inv_a = (float)(2.0 / vals[P_SIZE][0]);
        u->inv_b = (float)(2.0 / vals[P_SIZE][1]);
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
    cl_float4 slope = {{0}}, offset = {{0}}, power = {{0}};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            mat.s[r * 3 + c] = (cl_float)u->m[r][c];
    for (int c = 0; c < 3; c++) {
        slope.s[c] = (cl_float)u->slope[c];
        offset.s[c] = (cl_float)u->offset[c];
        power.s[c] = (cl_float)u->power[c];
    }
    cl_int2 base = {{src->origin_x - u->icx, src->origin_y - u->icy}};
    cl_float2 frac = {{u->fx, u->fy}};
    cl_float4 win = {{u->half_w, u->half_h, u->inv_a, u->inv_b}};
    cl_float inv_feather = u->inv_feather;

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
               "optionally inside a soft window",
    .params = relight_params,
    .nparams = sizeof relight_params / sizeof relight_params[0],
    .kind = PFS_OP_COLOUR,
    .uniforms_size = sizeof(struct relight_uniforms),
    .validate = relight_validate,
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
