/*
 * test_relight.c - the relight op: its C reference against known values, and
 * its OpenCL path against the C reference on the real device.
 *
 * The op file is included rather than linked so that the colour-science
 * helpers, which are static, can be checked against published numbers
 * (Planckian locus chromaticities, the sRGB matrix, Lindbloom's Bradford
 * D65->D50 matrix); everything else goes through the descriptor exactly as
 * the engine calls it. The library copy of relight.o is then not pulled in,
 * since this file defines pfs_op_relight itself.
 */
#include "engine/ops/relight.c"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/unit/check.h"
#include "tests/unit/optest.h"
#include "tests/unit/testutil.h"

static const struct pfs_op_desc *op = &pfs_op_relight;

static void defaults(pfs_pvec *vals)
{
    for (int i = 0; i < op->nparams; i++)
        memcpy(vals[i], op->params[i].def, sizeof(pfs_pvec));
}

static void set3(pfs_pvec v, double a, double b, double c)
{
    v[0] = a;
    v[1] = b;
    v[2] = c;
}

static struct pfs_image make_image(int w, int h, int ox, int oy)
{
    struct pfs_image img = {0};
    REQUIRE(pfs_image_alloc(&img, w, h) == 0);
    img.origin_x = ox;
    img.origin_y = oy;
    img.display = (struct pfs_rect){0, 0, 1919, 1079};
    return img;
}

/* prepare + run_cpu, as the engine does; returns run_cpu's result. */
static int run_cpu(const pfs_pvec *vals, const struct pfs_image *src, struct pfs_image *dst)
{
    unsigned char u[1024];
    REQUIRE(op->uniforms_size <= sizeof u);
    pfs_error err;
    pfs_error_clear(&err);
    int rc = op->prepare(vals, &(struct pfs_op_frame){.frame = src}, u, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc)
        return rc;
    const struct pfs_image *srcs[1] = {src};
    struct pfs_op_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = dst};
    rc = op->run_cpu(u, &io, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return rc;
}

/* One pixel through the op. */
static void run_pixel(const pfs_pvec *vals, const float in[4], float out[4])
{
    struct pfs_image s = make_image(1, 1, 0, 0), d = make_image(1, 1, 0, 0);
    memcpy(s.px, in, 4 * sizeof(float));
    run_cpu(vals, &s, &d);
    memcpy(out, d.px, 4 * sizeof(float));
    pfs_image_free(&s);
    pfs_image_free(&d);
}

static bool near(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(1.0, fabs(b));
}

/* Linear Rec.709 RGB (Y = 1) of the white (kelvin, tint). */
static void white_rgb_tint(double kelvin, double tint, double rgb[3])
{
    double x, y, xyz[3];
    mat3 to_xyz, from_xyz;
    white_xy(kelvin, tint, &x, &y);
    xy_to_xyz(x, y, xyz);
    rgb_to_xyz(to_xyz);
    mat3_inv(to_xyz, from_xyz);
    mat3_vec(from_xyz, xyz, rgb);
}

/* ...of a Planckian white. */
static void white_rgb(double kelvin, double rgb[3])
{
    white_rgb_tint(kelvin, 0, rgb);
}

/* ---- C reference --------------------------------------------------------- */

static struct pfs_image special_image(void)
{
    struct pfs_image img = make_image(16, 9, -3, 2);
    size_t n = pfs_image_floats(&img);
    for (size_t i = 0; i < n; i++) {
        if (i % 3 == 0)
            img.px[i] = float_of(special_bits[(i / 3) % 7]);
        else
            img.px[i] = (float)((double)i * 0.37 - 20.0); /* negatives and > 1 */
    }
    return img;
}

static void test_identity_exact(void)
{
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = special_image();
    struct pfs_image dst = make_image(src.width, src.height, src.origin_x, src.origin_y);
    size_t bytes = pfs_image_floats(&src) * sizeof(float);

    defaults(vals);
    run_cpu(vals, &src, &dst);
    CHECK(memcmp(src.px, dst.px, bytes) == 0);

    /* Equal temperatures other than the default, and a window around an
     * identity correction: still a copy. */
    vals[P_TEMP_FROM][0] = vals[P_TEMP_TO][0] = 4300;
    vals[P_SHAPE][0] = SHAPE_ELLIPSE;
    vals[P_CENTER][0] = 5;
    vals[P_CENTER][1] = 5;
    vals[P_SIZE][0] = vals[P_SIZE][1] = 6;
    vals[P_FEATHER][0] = 3;
    memset(dst.px, 0, bytes);
    run_cpu(vals, &src, &dst);
    CHECK(memcmp(src.px, dst.px, bytes) == 0);

    /* 6500 -> 6500: the matrix would be identity, and is not applied. */
    defaults(vals);
    vals[P_TEMP_FROM][0] = vals[P_TEMP_TO][0] = 6500;
    memset(dst.px, 0, bytes);
    run_cpu(vals, &src, &dst);
    CHECK(memcmp(src.px, dst.px, bytes) == 0);
    mat3 m;
    white_balance_matrix(6500, 0, 6500, 0, m);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            CHECK(fabs(m[i][j] - (i == j)) < 1e-12);

    pfs_image_free(&src);
    pfs_image_free(&dst);
}

static void test_exposure(void)
{
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = special_image();
    struct pfs_image dst = make_image(src.width, src.height, src.origin_x, src.origin_y);
    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    run_cpu(vals, &src, &dst);
    for (size_t i = 0; i < pfs_image_floats(&src); i++) {
        float in = src.px[i], out = dst.px[i];
        if (i % 4 == 3)
            CHECK(bits_of(in) == bits_of(out)); /* alpha untouched */
        else if (isnan(in))
            CHECK(isnan(out));
        else if (bits_of(in) == 0x7f7fffffu)
            CHECK(isinf(out) && out > 0); /* FLT_MAX doubles to +Inf */
        else
            CHECKF(out == 2.0f * in, "%zu: %g -> %g", i, in, out);
    }
    vals[P_EXPOSURE][0] = -2;
    float in[4] = {8, -4, 0.5f, 0.25f}, out[4];
    run_pixel(vals, in, out);
    CHECK(out[0] == 2 && out[1] == -1 && out[2] == 0.125f && out[3] == 0.25f);
    vals[P_EXPOSURE][0] = 1.0 / 3.0;
    float one[4] = {1, 1, 1, 1};
    run_pixel(vals, one, out);
    CHECK(near(out[0], cbrt(2.0), 1e-7));
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

static void test_colour_science(void)
{
    /* Planckian locus, CIE 1931 2 degrees (Wyszecki & Stiles); the Kim
     * spline is good to a few 1e-4 over its range. */
    static const double locus[][3] = {
        {2856, 0.44757, 0.40745}, /* illuminant A */
        {3000, 0.43695, 0.40410},
        {5000, 0.34510, 0.35162},
        {6500, 0.31352, 0.32363},
    };
    for (size_t i = 0; i < sizeof locus / sizeof locus[0]; i++) {
        double x, y;
        planck_xy(locus[i][0], &x, &y);
        CHECKF(fabs(x - locus[i][1]) < 5e-4 && fabs(y - locus[i][2]) < 5e-4,
               "%g K: %.5f %.5f", locus[i][0], x, y);
    }

    /* sRGB / Rec.709 XYZ<-RGB as Lindbloom lists it; his D65 is
     * (0.31271, 0.32902) where BT.709's is (0.3127, 0.3290), which moves
     * the blue-to-Z entry by 2.3e-4. */
    static const mat3 srgb = {{0.4124564, 0.3575761, 0.1804375},
                              {0.2126729, 0.7151522, 0.0721750},
                              {0.0193339, 0.1191920, 0.9503041}};
    mat3 m;
    rgb_to_xyz(m);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            CHECKF(fabs(m[i][j] - srgb[i][j]) < 3e-4, "[%d][%d] %.7f", i, j, m[i][j]);
    CHECK(fabs(m[1][0] + m[1][1] + m[1][2] - 1) < 1e-12); /* white has Y = 1 */
    for (int j = 0; j < 3; j++)
        CHECK(fabs(m[1][j] - luma_w[j]) < 1e-4); /* the CDL's luma weights */

    /* Bradford D65 -> D50 (Lindbloom, 7 decimals). */
    static const double d65[3] = {0.95047, 1.0, 1.08883}, d50[3] = {0.96422, 1.0, 0.82521};
    static const mat3 d65_d50 = {{1.0478112, 0.0228866, -0.0501270},
                                 {0.0295424, 0.9904844, -0.0170491},
                                 {-0.0092345, 0.0150436, 0.7521316}};
    bradford(d65, d50, m);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            CHECKF(fabs(m[i][j] - d65_d50[i][j]) < 2e-7, "[%d][%d] %.7f", i, j, m[i][j]);
    double w[3];
    mat3_vec(m, d65, w);
    for (int i = 0; i < 3; i++)
        CHECK(fabs(w[i] - d50[i]) < 1e-12);
    bradford(d65, d65, m);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            CHECK(fabs(m[i][j] - (i == j)) < 1e-12);
}

static void test_white_balance(void)
{
    pfs_pvec vals[P_COUNT];
    static const double pairs[][2] = {{4300, 5600}, {6500, 3200}, {2000, 12000},
                                      {6504, 6500}, {1667, 25000}, {5600, 4300}};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        defaults(vals);
        vals[P_TEMP_FROM][0] = pairs[p][0];
        vals[P_TEMP_TO][0] = pairs[p][1];
        /* A neutral surface lit by `from` becomes the neutral of `to`; the
         * white's luminance (Y = 1) is kept, so the match is exact. */
        double wf[3], wt[3];
        white_rgb(pairs[p][0], wf);
        white_rgb(pairs[p][1], wt);
        float in[4] = {(float)wf[0], (float)wf[1], (float)wf[2], 0.5f}, out[4];
        run_pixel(vals, in, out);
        for (int c = 0; c < 3; c++)
            CHECKF(near(out[c], wt[c], 2e-6), "%g->%g K c%d: %.7f vs %.7f", pairs[p][0],
                   pairs[p][1], c, out[c], wt[c]);
        CHECK(out[3] == 0.5f);
    }

    /* 4300 -> 5600 makes a grey plate cooler: more blue, less red. */
    defaults(vals);
    vals[P_TEMP_FROM][0] = 4300;
    vals[P_TEMP_TO][0] = 5600;
    float grey[4] = {0.18f, 0.18f, 0.18f, 1}, out[4];
    run_pixel(vals, grey, out);
    CHECK(out[2] > out[0]);
    CHECK(out[0] < 0.18f && out[2] > 0.18f);
    /* ...and the way back undoes it. */
    float back[4];
    vals[P_TEMP_FROM][0] = 5600;
    vals[P_TEMP_TO][0] = 4300;
    run_pixel(vals, out, back);
    for (int c = 0; c < 3; c++)
        CHECK(near(back[c], 0.18, 1e-6));
}

static void test_cdl(void)
{
    pfs_pvec vals[P_COUNT];
    defaults(vals);
    set3(vals[P_SLOPE], 2, 1, 0.5);
    set3(vals[P_OFFSET], 0.1, -0.2, 0);
    set3(vals[P_POWER], 2, 1, 0.5);
    float in[4] = {0.5f, 0.1f, 4.0f, 0.75f}, out[4];
    run_pixel(vals, in, out);
    /* r: 0.5*2+0.1 = 1.1, squared (no clamp above 1); g: 0.1-0.2 < 0 passes
     * the power through; b: 4*0.5 = 2, square root. */
    CHECKF(near(out[0], 1.21, 1e-7), "%.8f", out[0]);
    CHECKF(near(out[1], -0.1, 1e-7), "%.8f", out[1]);
    CHECKF(near(out[2], sqrt(2.0), 1e-7), "%.8f", out[2]);
    CHECK(out[3] == 0.75f);

    /* Negative values are untouched by the power, NaN stays NaN. */
    defaults(vals);
    set3(vals[P_POWER], 2.2, 2.2, 2.2);
    float neg[4] = {-0.5f, 0.0f, NAN, 1}, o2[4];
    run_pixel(vals, neg, o2);
    CHECK(o2[0] == -0.5f && o2[1] == 0.0f && isnan(o2[2]));

    /* Saturation 0 gives Rec.709 luma on every channel. */
    defaults(vals);
    vals[P_SAT][0] = 0;
    float c[4] = {0.8f, 0.3f, 2.5f, 1};
    run_pixel(vals, c, out);
    double luma = 0.2126 * 0.8f + 0.7152 * 0.3f + 0.0722 * 2.5f;
    for (int k = 0; k < 3; k++)
        CHECKF(near(out[k], luma, 1e-7), "%d: %.8f vs %.8f", k, out[k], luma);
    /* ...and any saturation leaves a grey grey. */
    vals[P_SAT][0] = 3;
    float g[4] = {0.4f, 0.4f, 0.4f, 1};
    run_pixel(vals, g, out);
    for (int k = 0; k < 3; k++)
        CHECK(near(out[k], 0.4, 1e-7));
    /* Saturation 2 doubles each channel's distance from luma. */
    vals[P_SAT][0] = 2;
    run_pixel(vals, c, out);
    for (int k = 0; k < 3; k++)
        CHECK(near(out[k], luma + 2 * (c[k] - luma), 1e-6));
}

/* Window tests: exposure +1 on a flat 1.0 image, so out = 1 + mask. */
static double mask_at(const pfs_pvec *vals, struct pfs_image *src, struct pfs_image *dst,
                      double dispx, double dispy)
{
    int x = (int)(dispx - 0.5) - src->origin_x, y = (int)(dispy - 0.5) - src->origin_y;
    REQUIRE(x >= 0 && x < src->width && y >= 0 && y < src->height);
    REQUIRE(src->origin_x + x + 0.5 == dispx && src->origin_y + y + 0.5 == dispy);
    run_cpu(vals, src, dst);
    return px(dst, x, y)[0] - 1.0;
}

static void test_window(void)
{
    pfs_pvec vals[P_COUNT];
    /* Data window offset from the display window, to test coordinates. */
    struct pfs_image src = make_image(120, 90, -10, 5);
    struct pfs_image dst = make_image(120, 90, -10, 5);
    fill(&src, 1, 1, 1, 0.25f);

    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    vals[P_SHAPE][0] = SHAPE_ELLIPSE;
    vals[P_CENTER][0] = 50.5;
    vals[P_CENTER][1] = 50.5;
    vals[P_SIZE][0] = 40; /* a = 20 */
    vals[P_SIZE][1] = 20; /* b = 10 */
    vals[P_FEATHER][0] = 0;
    CHECK(mask_at(vals, &src, &dst, 50.5, 50.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 70.5, 50.5) == 1); /* on the outline: inside */
    CHECK(mask_at(vals, &src, &dst, 71.5, 50.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 50.5, 61.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 1.5, 6.5) == 0);
    CHECK(px(&dst, 0, 0)[3] == 0.25f);
    CHECK(bits_of(px(&dst, 0, 0)[0]) == bits_of(1.0f)); /* outside: the source, exactly */

    vals[P_FEATHER][0] = 8;
    CHECK(fabs(mask_at(vals, &src, &dst, 70.5, 50.5) - 0.5) < 1e-6); /* on the outline */
    CHECK(fabs(mask_at(vals, &src, &dst, 50.5, 60.5) - 0.5) < 1e-6);
    CHECK(fabs(mask_at(vals, &src, &dst, 30.5, 50.5) - 0.5) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 66.5, 50.5) == 1); /* feather/2 inside */
    CHECK(mask_at(vals, &src, &dst, 74.5, 50.5) == 0); /* feather/2 outside */
    /* d = -2: t = 0.25, smoothstep 0.15625. */
    CHECK(fabs(mask_at(vals, &src, &dst, 68.5, 50.5) - 0.84375) < 1e-6);
    /* Along the minor axis the ramp is as wide in pixels: d = +2 at y = 62.5. */
    CHECK(fabs(mask_at(vals, &src, &dst, 50.5, 62.5) - 0.15625) < 1e-6);

    vals[P_INVERT][0] = 1;
    CHECK(mask_at(vals, &src, &dst, 50.5, 50.5) == 0);
    CHECK(fabs(mask_at(vals, &src, &dst, 70.5, 50.5) - 0.5) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 1.5, 6.5) == 1);
    CHECK(fabs(mask_at(vals, &src, &dst, 68.5, 50.5) - 0.15625) < 1e-6);

    /* Rectangle, hard edge then soft. */
    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    vals[P_SHAPE][0] = SHAPE_RECT;
    vals[P_CENTER][0] = 50.5;
    vals[P_CENTER][1] = 50.5;
    vals[P_SIZE][0] = 40;
    vals[P_SIZE][1] = 20;
    CHECK(mask_at(vals, &src, &dst, 70.5, 60.5) == 1); /* the corner */
    CHECK(mask_at(vals, &src, &dst, 71.5, 50.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 50.5, 61.5) == 0);
    vals[P_FEATHER][0] = 4;
    CHECK(fabs(mask_at(vals, &src, &dst, 70.5, 50.5) - 0.5) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 72.5, 50.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 68.5, 50.5) == 1);
    /* Beyond a corner the distance is Euclidean: sqrt(2) at (71.5, 61.5). */
    double t = (sqrt(2.0) + 2) / 4;
    CHECK(fabs(mask_at(vals, &src, &dst, 71.5, 61.5) - (1 - t * t * (3 - 2 * t))) < 1e-6);
    vals[P_INVERT][0] = 1;
    CHECK(fabs(mask_at(vals, &src, &dst, 70.5, 50.5) - 0.5) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 50.5, 50.5) == 0);

    pfs_image_free(&src);
    pfs_image_free(&dst);
}

static void test_validate(void)
{
    pfs_pvec vals[P_COUNT];
    pfs_error err;
    unsigned char u[1024];
    struct pfs_image img = make_image(4, 4, 0, 0);
    defaults(vals);
    CHECK(op->validate(vals, &err) == 0);
    vals[P_SHAPE][0] = SHAPE_ELLIPSE;
    vals[P_SIZE][0] = 100;
    pfs_error_clear(&err);
    CHECK(op->validate(vals, &err) == EINVAL);
    CHECK(strstr(err.msg, "window.size") != NULL && strstr(err.msg, "ellipse") != NULL);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(op->prepare(vals, &(struct pfs_op_frame){.frame = &img}, u, NULL) == EINVAL);
    vals[P_SIZE][1] = 50;
    CHECK(op->validate(vals, NULL) == 0);
    vals[P_SHAPE][0] = SHAPE_RECT;
    vals[P_SIZE][0] = 0;
    CHECK(op->validate(vals, NULL) == EINVAL);
    vals[P_SHAPE][0] = SHAPE_NONE;
    CHECK(op->validate(vals, NULL) == 0);
    vals[P_TEMP_FROM][0] = 1000;
    CHECK(op->prepare(vals, &(struct pfs_op_frame){.frame = &img}, u, NULL) == EINVAL);
    pfs_image_free(&img);
}

static void test_nan_isolation(void)
{
    pfs_pvec vals[P_COUNT];
    defaults(vals);
    vals[P_EXPOSURE][0] = 0.5;
    vals[P_TEMP_FROM][0] = 3200;
    vals[P_TEMP_TO][0] = 6500;
    vals[P_SAT][0] = 0.7;
    struct pfs_image src = make_image(3, 1, 0, 0), dst = make_image(3, 1, 0, 0);
    fill(&src, 0.3f, 0.5f, 0.7f, 1);
    px(&src, 1, 0)[1] = NAN;
    px(&src, 1, 0)[3] = 0.5f;
    run_cpu(vals, &src, &dst);
    for (int c = 0; c < 3; c++) {
        CHECK(isnan(px(&dst, 1, 0)[c])); /* luma spreads it within the pixel */
        CHECK(isfinite(px(&dst, 0, 0)[c]) && px(&dst, 0, 0)[c] == px(&dst, 2, 0)[c]);
    }
    CHECK(px(&dst, 1, 0)[3] == 0.5f);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* ---- tint ---------------------------------------------------------------- */

/* The white-balance matrix as it was before tint, operation for operation:
 * tint 0 must reproduce it bit for bit. */
static void wb_matrix_before_tint(double from, double to, mat3 out)
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

static void planck_uv(double kelvin, double *u, double *v)
{
    double x, y;
    planck_xy(kelvin, &x, &y);
    xy_to_uv(x, y, u, v);
}

/* Duv of a chromaticity, measured independently of white_xy: the distance
 * in uv to the nearest point of the locus (a scan in mireds, then golden
 * section), positive on the +v side. */
static double measure_duv(double u, double v, double *at_kelvin)
{
    double best_m = 0, best_d = INFINITY;
    for (double mired = 40; mired <= 600; mired += 0.25) {
        double lu, lv;
        planck_uv(1e6 / mired, &lu, &lv);
        double d = hypot(u - lu, v - lv);
        if (d < best_d) {
            best_d = d;
            best_m = mired;
        }
    }
    double lo = best_m - 0.25, hi = best_m + 0.25, g = (sqrt(5.0) - 1) / 2;
    for (int i = 0; i < 80; i++) {
        double a = hi - g * (hi - lo), b = lo + g * (hi - lo), ua, va, ub, vb;
        planck_uv(1e6 / a, &ua, &va);
        planck_uv(1e6 / b, &ub, &vb);
        if (hypot(u - ua, v - va) < hypot(u - ub, v - vb))
            hi = b;
        else
            lo = a;
    }
    double lu, lv, m = 0.5 * (lo + hi);
    planck_uv(1e6 / m, &lu, &lv);
    *at_kelvin = 1e6 / m;
    return (v >= lv ? 1 : -1) * hypot(u - lu, v - lv);
}

static void test_tint(void)
{
    /* Tint 0 is the temperature-only white balance, bit for bit. */
    static const double temps[] = {1667, 2000, 2222, 2856, 3200, 4000, 4300,
                                   5600, 6500, 6504, 10000, 25000};
    int nt = (int)(sizeof temps / sizeof temps[0]);
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < nt; j++) {
            mat3 a, b;
            wb_matrix_before_tint(temps[i], temps[j], a);
            white_balance_matrix(temps[i], 0, temps[j], 0, b);
            CHECKF(memcmp(a, b, sizeof a) == 0, "%g -> %g K", temps[i], temps[j]);
        }

    /* The analytic normal against a central difference of uv(T) (+-1 K),
     * away from the spline's joins at 2222 and 4000 K. */
    static const double nt_k[] = {1800, 2600, 3200, 5000, 6500, 9000, 15000, 24000};
    for (size_t i = 0; i < sizeof nt_k / sizeof nt_k[0]; i++) {
        double n[2], u0, v0, u1, v1;
        planck_normal_uv(nt_k[i], n);
        planck_uv(nt_k[i] - 1, &u0, &v0);
        planck_uv(nt_k[i] + 1, &u1, &v1);
        double tl = hypot(u1 - u0, v1 - v0), tu = (u1 - u0) / tl, tv = (v1 - v0) / tl;
        CHECKF(fabs(n[0] * tu + n[1] * tv) < 1e-6 && n[1] > 0 &&
                   fabs(hypot(n[0], n[1]) - 1) < 1e-12,
               "%g K: n (%g, %g), tangent (%g, %g)", nt_k[i], n[0], n[1], tu, tv);
    }

    /* The shifted white is at the requested Duv (= -tint / 1000) from the
     * locus, measured as the signed distance to the nearest locus point. */
    static const double tk[] = {2000, 2856, 3200, 4500, 5600, 6500, 10000, 20000};
    static const double tints[] = {-50, -20, -5, 5, 20, 50};
    double worst = 0;
    for (size_t i = 0; i < sizeof tk / sizeof tk[0]; i++)
        for (size_t j = 0; j < sizeof tints / sizeof tints[0]; j++) {
            double x, y, u, v, at;
            white_xy(tk[i], tints[j], &x, &y);
            xy_to_uv(x, y, &u, &v);
            double duv = measure_duv(u, v, &at);
            double e = fabs(duv - (-tints[j] / 1000));
            worst = fmax(worst, e);
            CHECKF(e < 1e-4, "%g K tint %g: Duv %.6f (nearest locus point %.0f K)", tk[i],
                   tints[j], duv, at);
        }
    fprintf(stderr, "  Duv of tinted whites: worst error %.2g\n", worst);
    /* uv -> xy is the inverse of xy -> uv. */
    double x0 = 0.3127, y0 = 0.329, uu, vv, x1, y1;
    xy_to_uv(x0, y0, &uu, &vv);
    uv_to_xy(uu, vv, &x1, &y1);
    CHECK(fabs(x1 - x0) < 1e-15 && fabs(y1 - y0) < 1e-15);

    /* A neutral lit by (T, tint.from) becomes the neutral of (T, tint.to). */
    static const double cases[][4] = {{5600, 0, 5600, 30},  {5600, 30, 5600, 0},
                                      {3200, -20, 3200, 15}, {4300, 10, 6500, -10},
                                      {6500, 0, 6500, -40},  {2800, 25, 9000, 25}};
    pfs_pvec vals[P_COUNT];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        defaults(vals);
        vals[P_TEMP_FROM][0] = cases[c][0];
        vals[P_TINT_FROM][0] = cases[c][1];
        vals[P_TEMP_TO][0] = cases[c][2];
        vals[P_TINT_TO][0] = cases[c][3];
        double wf[3], wt[3];
        white_rgb_tint(cases[c][0], cases[c][1], wf);
        white_rgb_tint(cases[c][2], cases[c][3], wt);
        float in[4] = {(float)wf[0], (float)wf[1], (float)wf[2], 0.5f}, out[4];
        run_pixel(vals, in, out);
        for (int k = 0; k < 3; k++)
            CHECKF(near(out[k], wt[k], 2e-6), "case %zu c%d: %.7f vs %.7f", c, k, out[k], wt[k]);
    }

    /* Positive tint.to: the plate looks lit by a magenta light, green drops
     * against red and blue; negative: green rises. */
    defaults(vals);
    vals[P_TEMP_FROM][0] = vals[P_TEMP_TO][0] = 5600;
    vals[P_TINT_TO][0] = 30;
    float grey[4] = {0.18f, 0.18f, 0.18f, 1}, out[4];
    run_pixel(vals, grey, out);
    fprintf(stderr, "  5600 K tint 0 -> +30: grey 0.18 -> (%.4f, %.4f, %.4f)\n", out[0], out[1],
            out[2]);
    CHECK(out[1] < out[0] && out[1] < out[2] && out[1] < 0.18f);
    vals[P_TINT_TO][0] = -30;
    run_pixel(vals, grey, out);
    CHECK(out[1] > out[0] && out[1] > out[2]);

    /* The matrix stage runs when only the tints differ, and is skipped (a
     * bit-exact copy) when temperature and tint are both equal. */
    struct pfs_image src = special_image();
    struct pfs_image dst = make_image(src.width, src.height, src.origin_x, src.origin_y);
    size_t bytes = pfs_image_floats(&src) * sizeof(float);
    defaults(vals);
    vals[P_TINT_FROM][0] = vals[P_TINT_TO][0] = 25;
    vals[P_TEMP_FROM][0] = vals[P_TEMP_TO][0] = 3200;
    run_cpu(vals, &src, &dst);
    CHECK(memcmp(src.px, dst.px, bytes) == 0);
    struct relight_uniforms u;
    vals[P_TINT_TO][0] = 24;
    REQUIRE(op->prepare(vals, &(struct pfs_op_frame){.frame = &src}, &u, NULL) == 0);
    CHECK(u.stages == RELIGHT_MATRIX);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* ---- window angle and gradient --------------------------------------------- */

static void test_angle_gradient(void)
{
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(120, 90, -10, 5);
    struct pfs_image dst = make_image(120, 90, -10, 5);
    struct pfs_image d2 = make_image(120, 90, -10, 5);
    size_t bytes = pfs_image_floats(&src) * sizeof(float);
    fill(&src, 1, 1, 1, 0.25f);

    /* A rectangle turned 90 degrees is the rectangle with width and height
     * swapped, bit for bit (cos and sin are exact there); 360 is 0, -90 is
     * 270. */
    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    vals[P_SHAPE][0] = SHAPE_RECT;
    vals[P_CENTER][0] = 50.3;
    vals[P_CENTER][1] = 40.8;
    vals[P_SIZE][0] = 40;
    vals[P_SIZE][1] = 20;
    vals[P_FEATHER][0] = 6;
    vals[P_ANGLE][0] = 90;
    run_cpu(vals, &src, &dst);
    vals[P_ANGLE][0] = 0;
    vals[P_SIZE][0] = 20;
    vals[P_SIZE][1] = 40;
    run_cpu(vals, &src, &d2);
    CHECK(memcmp(dst.px, d2.px, bytes) == 0);
    vals[P_ANGLE][0] = 360;
    run_cpu(vals, &src, &dst);
    CHECK(memcmp(dst.px, d2.px, bytes) == 0);
    vals[P_ANGLE][0] = -90;
    run_cpu(vals, &src, &dst);
    vals[P_ANGLE][0] = 270;
    run_cpu(vals, &src, &d2);
    CHECK(memcmp(dst.px, d2.px, bytes) == 0);

    /* An ellipse turned 30 degrees counter-clockwise: its major axis points
     * up-right on screen. With a hard edge, every pixel is inside exactly
     * when the rotated implicit equation says so (pixels within 0.01 of
     * the outline excepted). */
    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    vals[P_SHAPE][0] = SHAPE_ELLIPSE;
    vals[P_CENTER][0] = 50.5;
    vals[P_CENTER][1] = 50.5;
    vals[P_SIZE][0] = 60; /* a = 30 */
    vals[P_SIZE][1] = 20; /* b = 10 */
    vals[P_ANGLE][0] = 30;
    run_cpu(vals, &src, &dst);
    double ca = cos(30 * M_PI / 180), sa = sin(30 * M_PI / 180);
    int mismatches = 0, inside = 0;
    for (int y = 0; y < src.height; y++)
        for (int x = 0; x < src.width; x++) {
            double dx = src.origin_x + x + 0.5 - 50.5, dy = src.origin_y + y + 0.5 - 50.5;
            double lx = dx * ca - dy * sa, ly = dx * sa + dy * ca;
            double r = hypot(lx / 30, ly / 10);
            if (fabs(r - 1) < 0.01)
                continue;
            bool want = r < 1, got = px(&dst, x, y)[0] == 2.0f;
            mismatches += want != got;
            inside += got;
        }
    CHECK(mismatches == 0 && inside > 500);
    /* Along the turned major axis, up and to the right: the outline is 30 px
     * out; with feather 8 the mask is 0.5 there. Pixel centres on that line
     * do not exist, so test the perpendicular: 90 degrees puts the major axis
     * straight up. */
    vals[P_ANGLE][0] = 90;
    vals[P_FEATHER][0] = 8;
    CHECK(fabs(mask_at(vals, &src, &dst, 50.5, 20.5) - 0.5) < 1e-6); /* 30 px up */
    CHECK(fabs(mask_at(vals, &src, &dst, 60.5, 50.5) - 0.5) < 1e-6); /* 10 px right */
    CHECK(mask_at(vals, &src, &dst, 50.5, 16.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 75.5, 50.5) == 0); /* inside when unturned */
    CHECK(mask_at(vals, &src, &dst, 50.5, 24.5) == 1);

    /* Gradient: full on the side the angle points to; feather is the ramp. */
    defaults(vals);
    vals[P_EXPOSURE][0] = 1;
    vals[P_SHAPE][0] = SHAPE_GRADIENT;
    vals[P_CENTER][0] = 50;
    vals[P_CENTER][1] = 40;
    CHECK(op->validate(vals, NULL) == 0); /* no size needed */
    CHECK(mask_at(vals, &src, &dst, 50.5, 40.5) == 1); /* angle 0: right */
    CHECK(mask_at(vals, &src, &dst, 49.5, 40.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 100.5, 6.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 1.5, 90.5) == 0);
    vals[P_FEATHER][0] = 8;
    /* d = -0.5 at x = 50.5: s = 0.5625. */
    CHECK(fabs(mask_at(vals, &src, &dst, 50.5, 40.5) - 0.5625 * 0.5625 * (3 - 2 * 0.5625)) <
          1e-6);
    /* With the edge on a pixel centre: d = -2 two pixels right, smoothstep
     * 0.84375; d = +2: 0.15625. */
    vals[P_CENTER][0] = 50.5;
    CHECK(fabs(mask_at(vals, &src, &dst, 50.5, 40.5) - 0.5) < 1e-6);
    CHECK(fabs(mask_at(vals, &src, &dst, 52.5, 70.5) - 0.84375) < 1e-6);
    CHECK(fabs(mask_at(vals, &src, &dst, 48.5, 10.5) - 0.15625) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 54.5, 40.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 46.5, 40.5) == 0);
    /* 90: full upward on screen (smaller y). */
    vals[P_ANGLE][0] = 90;
    vals[P_CENTER][1] = 40.5;
    CHECK(fabs(mask_at(vals, &src, &dst, 10.5, 38.5) - 0.84375) < 1e-6);
    CHECK(fabs(mask_at(vals, &src, &dst, 90.5, 42.5) - 0.15625) < 1e-6);
    CHECK(mask_at(vals, &src, &dst, 30.5, 30.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 30.5, 50.5) == 0);
    /* 180: full to the left; invert swaps the sides. */
    vals[P_ANGLE][0] = 180;
    CHECK(mask_at(vals, &src, &dst, 30.5, 40.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 70.5, 40.5) == 0);
    vals[P_INVERT][0] = 1;
    CHECK(mask_at(vals, &src, &dst, 30.5, 40.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 70.5, 40.5) == 1);
    CHECK(fabs(mask_at(vals, &src, &dst, 52.5, 40.5) - 0.84375) < 1e-6);
    /* 45: the edge is the diagonal through the centre; up-right is full. */
    vals[P_INVERT][0] = 0;
    vals[P_ANGLE][0] = 45;
    vals[P_FEATHER][0] = 0;
    CHECK(mask_at(vals, &src, &dst, 60.5, 40.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 50.5, 30.5) == 1);
    CHECK(mask_at(vals, &src, &dst, 40.5, 40.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 50.5, 50.5) == 0);
    CHECK(mask_at(vals, &src, &dst, 60.5, 49.5) == 1);  /* below-right, nearer right */
    CHECK(mask_at(vals, &src, &dst, 60.5, 51.5) == 0);  /* past the diagonal */

    /* Advice for settings that do nothing. */
    char msg[256];
    defaults(vals);
    vals[P_SHAPE][0] = SHAPE_GRADIENT;
    vals[P_SIZE][0] = 100;
    op->advise(vals, msg, sizeof msg);
    CHECK(strstr(msg, "window.size") != NULL);
    defaults(vals);
    op->advise(vals, msg, sizeof msg);
    CHECK(msg[0] == '\0');
    vals[P_ANGLE][0] = 10;
    op->advise(vals, msg, sizeof msg);
    CHECK(strstr(msg, "window.angle") != NULL);

    pfs_image_free(&src);
    pfs_image_free(&dst);
    pfs_image_free(&d2);
}

/* ---- match ------------------------------------------------------------------ */

static uint32_t hash3(int32_t x, int32_t y, uint32_t seed)
{
    uint32_t h = (uint32_t)x * 0x8da6b343u ^ (uint32_t)y * 0xd8163841u ^ seed * 0xcb1ab31fu;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

/* Smooth value noise in [0, 1): a hashed lattice of the given pitch in
 * pixels, interpolated with smoothstep. Defined at every real (x, y), so a
 * shifted copy of a scene is the same function at shifted coordinates. */
static double vnoise(double x, double y, double pitch, uint32_t seed)
{
    x /= pitch;
    y /= pitch;
    double fx = floor(x), fy = floor(y), tx = x - fx, ty = y - fy;
    int32_t ix = (int32_t)fx, iy = (int32_t)fy;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    double v00 = hash3(ix, iy, seed) / 4294967296.0, v10 = hash3(ix + 1, iy, seed) / 4294967296.0;
    double v01 = hash3(ix, iy + 1, seed) / 4294967296.0,
           v11 = hash3(ix + 1, iy + 1, seed) / 4294967296.0;
    return (v00 * (1 - tx) + v10 * tx) * (1 - ty) + (v01 * (1 - tx) + v11 * tx) * ty;
}

/* A scene (scene-linear RGB, not clipped) at display point (x, y): a
 * log-normal textured luminance at several scales, slow colour variation,
 * a flat wall and a bright window that clips. */
static void scene(double x, double y, double w, double h, double rgb[3])
{
    double l = 0.18 * exp(1.6 * (vnoise(x, y, 0.2 * w, 1) - 0.5) +
                          0.9 * (vnoise(x, y, 0.05 * w, 2) - 0.5) +
                          0.6 * (vnoise(x, y, 0.012 * w, 3) - 0.5) +
                          0.3 * (vnoise(x, y, 0.004 * w, 4) - 0.5));
    for (int c = 0; c < 3; c++)
        rgb[c] = l * exp(0.8 * (vnoise(x, y, 0.3 * w, 10 + (uint32_t)c) - 0.5));
    if (x > 0.06 * w && x < 0.3 * w && y > 0.6 * h && y < 0.95 * h) { /* a wall */
        rgb[0] = 0.30;
        rgb[1] = 0.24;
        rgb[2] = 0.17;
    }
    if (x > 0.7 * w && x < 0.9 * w && y > 0.1 * h && y < 0.3 * h) /* a window */
        for (int c = 0; c < 3; c++)
            rgb[c] = 3 * rgb[c] + 0.8;
}

struct plate_look {
    double gain[3], offset[3]; /* pixel = scene * gain + offset, then clipped */
    double shift_x, shift_y;   /* pixel (x, y) shows the scene at (x + sx, y + sy) */
    uint32_t grain_seed;       /* 0.4 % grain; 0: none */
    int object;                /* paste a foreign rectangle (a moving object) */
};

static void make_plate(struct pfs_image *img, const struct plate_look *k)
{
    double w = img->width, h = img->height;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            double rgb[3];
            scene(x + 0.5 + k->shift_x, y + 0.5 + k->shift_y, w, h, rgb);
            if (k->object && x > 0.45 * w && x < 0.62 * w && y > 0.3 * h && y < 0.55 * h) {
                double t = 0.5 + vnoise(x, y, 0.01 * w, 99);
                rgb[0] = 0.5 * t;
                rgb[1] = 0.12 * t;
                rgb[2] = 0.08 * t;
            }
            float *p = px(img, x, y);
            for (int c = 0; c < 3; c++) {
                double v = rgb[c] * k->gain[c] + k->offset[c];
                if (k->grain_seed)
                    v *= 1 + 0.008 * (hash3(x, y * 3 + c, k->grain_seed) / 4294967296.0 - 0.5);
                p[c] = (float)fmin(v, 1.0); /* the sensor clips at 1 */
            }
            p[3] = 1;
        }
}

/* Fits frame to reference through prepare, as the engine calls it. */
static int fit(const struct pfs_image *frame, const struct pfs_image *ref, int model,
               struct relight_uniforms *u, char note[RELIGHT_NOTE_WIDTH + 1], pfs_error *err)
{
    pfs_pvec vals[P_COUNT];
    defaults(vals);
    vals[P_MATCH_FRAME][0] = 1012;
    vals[P_MATCH_MODEL][0] = model;
    memset(note, 'x', RELIGHT_NOTE_WIDTH + 1);
    struct pfs_op_frame in = {.frame = frame, .reference = ref, .reference_frame = 1012,
                              .note = note};
    pfs_error_clear(err);
    return op->prepare(vals, &in, u, err);
}

/* The miss the tests apply, and the correction that undoes it. */
static const double miss_gain[3] = {1.12 * 0.70710678118654752, 1.0 * 0.70710678118654752,
                                    0.85 * 0.70710678118654752};

static double worst_gain_error(const struct relight_uniforms *u)
{
    double e = 0;
    for (int c = 0; c < 3; c++)
        e = fmax(e, fabs(u->fit_gain[c] * miss_gain[c] - 1));
    return e;
}

static void test_match(void)
{
    const int w = 640, h = 360;
    struct pfs_image ref = make_image(w, h, 0, 0), frame = make_image(w, h, 0, 0);
    struct pfs_image out = make_image(w, h, 0, 0);
    struct relight_uniforms u;
    char note[RELIGHT_NOTE_WIDTH + 1];
    pfs_error err;

    /* The reference as shot; the frame half a stop under and warmer (R x1.12,
     * B x0.85), with its own grain; both clip at 1 (the bright window). */
    make_plate(&ref, &(struct plate_look){{1, 1, 1}, {0, 0, 0}, 0, 0, 7, 0});
    make_plate(&frame, &(struct plate_look){{miss_gain[0], miss_gain[1], miss_gain[2]},
                                            {0, 0, 0}, 0, 0, 8, 0});
    CHECKF(fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err) == 0, "%s", err.msg);
    fprintf(stderr, "  plain miss:  %s\n", note);
    CHECK(u.stages == RELIGHT_FIT);
    CHECKF(worst_gain_error(&u) < 0.005, "%g", worst_gain_error(&u));
    CHECK(strlen(note) == RELIGHT_NOTE_WIDTH && op->note_width == RELIGHT_NOTE_WIDTH);
    CHECK(strncmp(note, "match frame=1012 model=gain gain=[", 34) == 0);
    double resid = -1;
    const char *rs = strstr(note, "residual=");
    REQUIRE(rs);
    resid = strtod(rs + 9, NULL);
    CHECK(resid >= 0 && resid < 0.02);
    const char *ex = strstr(note, "exposure=");
    REQUIRE(ex);
    double want_ex = -log2(luma_w[0] * miss_gain[0] + luma_w[1] * miss_gain[1] +
                           luma_w[2] * miss_gain[2]);
    CHECKF(fabs(strtod(ex + 9, NULL) - want_ex) < 0.01, "%.4f vs %.4f", strtod(ex + 9, NULL),
           want_ex);
    /* The corrected frame is the reference, up to grain. */
    const struct pfs_image *srcs[1] = {&frame};
    struct pfs_op_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = &out};
    REQUIRE(op->run_cpu(&u, &io, &err) == 0);
    double sum_err = 0;
    int n = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                if (px(&ref, x, y)[c] < 0.9f) {
                    sum_err += fabs(log2(px(&out, x, y)[c] / px(&ref, x, y)[c]));
                    n++;
                }
    fprintf(stderr, "  corrected vs reference: mean |log2 ratio| %.4f\n", sum_err / n);
    CHECK(sum_err / n < 0.01);

    /* Deterministic: the same inputs give the same bytes. */
    struct relight_uniforms u2;
    char note2[RELIGHT_NOTE_WIDTH + 1];
    REQUIRE(fit(&frame, &ref, PFS_MATCH_GAIN, &u2, note2, &err) == 0);
    CHECK(memcmp(&u, &u2, sizeof u) == 0 && strcmp(note, note2) == 0);

    /* Camera motion (the reference 3 px right and 2 px down of the frame)
     * and a moving object pasted into the frame, plus NaN and Inf. */
    make_plate(&ref, &(struct plate_look){{1, 1, 1}, {0, 0, 0}, 3, 2, 7, 0});
    make_plate(&frame, &(struct plate_look){{miss_gain[0], miss_gain[1], miss_gain[2]},
                                            {0, 0, 0}, 0, 0, 8, 1});
    for (int i = 0; i < 300; i++) {
        px(&frame, (i * 37) % w, (i * 101) % h)[i % 3] = i % 2 ? NAN : INFINITY;
        px(&ref, (i * 53) % w, (i * 29) % h)[i % 3] = i % 2 ? -INFINITY : NAN;
    }
    CHECKF(fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err) == 0, "%s", err.msg);
    fprintf(stderr, "  motion+object: %s\n", note);
    CHECKF(worst_gain_error(&u) < 0.01, "%g", worst_gain_error(&u));
    int shx = 0, shy = 0;
    const char *sh = strstr(note, "shift=[");
    CHECK(sh && sscanf(sh, "shift=[%d %d]", &shx, &shy) == 2 && abs(shx + 3) <= 1 &&
          abs(shy + 2) <= 1);

    /* gain_offset recovers an offset: ref = g * frame + o. */
    const double g_true[3] = {1.10, 0.95, 1.20}, o_true[3] = {0.010, -0.004, 0.020};
    make_plate(&ref, &(struct plate_look){{1, 1, 1}, {0, 0, 0}, 0, 0, 7, 0});
    struct plate_look fl = {{0}, {0}, 0, 0, 8, 0};
    for (int c = 0; c < 3; c++) {
        fl.gain[c] = 1 / g_true[c];
        fl.offset[c] = -o_true[c] / g_true[c];
    }
    make_plate(&frame, &fl);
    CHECKF(fit(&frame, &ref, PFS_MATCH_GAIN_OFFSET, &u, note, &err) == 0, "%s", err.msg);
    fprintf(stderr, "  gain_offset: %s\n", note);
    for (int c = 0; c < 3; c++) {
        CHECKF(fabs(u.fit_gain[c] / g_true[c] - 1) < 0.01, "c%d gain %.5f", c, u.fit_gain[c]);
        CHECKF(fabs(u.fit_offset[c] - o_true[c]) < 0.002, "c%d offset %.5f", c, u.fit_offset[c]);
    }
    CHECK(strncmp(note, "match frame=1012 model=gain_offset ", 35) == 0);

    /* Identical frames: exactly gain 1, offset 0, the stage skipped, the
     * output bit-exact. */
    for (int model = 0; model < 2; model++) {
        CHECKF(fit(&ref, &ref, model, &u, note, &err) == 0, "%s", err.msg);
        CHECK(u.stages == 0);
        for (int c = 0; c < 3; c++)
            CHECK(u.fit_gain[c] == 1 && u.fit_offset[c] == 0);
        CHECK(strstr(note, "gain=[1.0000 1.0000 1.0000]") != NULL);
        CHECK(strstr(note, "residual=0.0000") != NULL);
        srcs[0] = &ref;
        REQUIRE(op->run_cpu(&u, &io, &err) == 0);
        CHECK(memcmp(out.px, ref.px, pfs_image_floats(&ref) * sizeof(float)) == 0);
    }
    srcs[0] = &frame;

    /* Absurd corrections keep the note's width. */
    make_plate(&frame, &(struct plate_look){{1e-5, 1e-5, 1e-5}, {0, 0, 0}, 0, 0, 8, 0});
    CHECKF(fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err) == 0, "%s", err.msg);
    fprintf(stderr, "  1e5 gain:    %s\n", note);
    CHECK(strlen(note) == RELIGHT_NOTE_WIDTH && strstr(note, "gain=[999.9999 ") != NULL);

    /* Too few samples: the reference black, or NaN everywhere: EIO. */
    fill(&ref, 0, 0, 0, 1);
    make_plate(&frame, &(struct plate_look){{1, 1, 1}, {0, 0, 0}, 0, 0, 8, 0});
    CHECK(fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err) == EIO);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(strstr(err.msg, "reference frame 1012 share only 0 well-exposed, motion-consistent "
                          "samples (need 64); pick a reference closer in time") != NULL);
    fill(&ref, NAN, NAN, NAN, 1);
    CHECK(fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err) == EIO);

    /* No reference with match on: EINVAL; differing sizes: EINVAL. */
    pfs_pvec vals[P_COUNT];
    defaults(vals);
    vals[P_MATCH_FRAME][0] = 1012;
    pfs_error_clear(&err);
    CHECK(op->prepare(vals, &(struct pfs_op_frame){.frame = &frame}, &u, &err) == EINVAL);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(strstr(err.msg, "match.frame") != NULL);
    struct pfs_image small = make_image(320, 180, 0, 0);
    fill(&small, 0.2f, 0.2f, 0.2f, 1);
    CHECK(fit(&frame, &small, PFS_MATCH_GAIN, &u, note, &err) == EINVAL);
    fprintf(stderr, "  %s\n", err.msg);
    pfs_image_free(&small);

    /* validate: whole frame numbers only; the reference hook. */
    CHECK(op->validate(vals, NULL) == 0);
    CHECK(op->reference(vals) == 1012);
    vals[P_MATCH_FRAME][0] = 1012.5;
    pfs_error_clear(&err);
    CHECK(op->validate(vals, &err) == EINVAL && strstr(err.msg, "match.frame") != NULL);
    fprintf(stderr, "  %s\n", err.msg);
    vals[P_MATCH_FRAME][0] = 0;
    CHECK(op->validate(vals, NULL) == 0 && op->reference(vals) == 0);
    defaults(vals);
    CHECK(op->reference(vals) == -1 && op->validate(vals, NULL) == 0);
    CHECK(!relight_params[P_MATCH_FRAME].keyframable && !relight_params[P_MATCH_MODEL].keyframable);
    /* Match off: the reference, if any, is ignored. */
    CHECK(op->prepare(vals, &(struct pfs_op_frame){.frame = &frame, .reference = &ref}, &u,
                      NULL) == 0 &&
          u.stages == 0);

    pfs_image_free(&ref);
    pfs_image_free(&frame);
    pfs_image_free(&out);
}

/* The fit's cost on a 1920x1080 frame (printed; the build type decides). */
static void test_match_1080p(void)
{
    const int w = 1920, h = 1080;
    struct pfs_image ref = make_image(w, h, 0, 0), frame = make_image(w, h, 0, 0);
    make_plate(&ref, &(struct plate_look){{1, 1, 1}, {0, 0, 0}, 5, -4, 7, 0});
    make_plate(&frame, &(struct plate_look){{miss_gain[0], miss_gain[1], miss_gain[2]},
                                            {0, 0, 0}, 0, 0, 8, 1});
    struct relight_uniforms u;
    char note[RELIGHT_NOTE_WIDTH + 1];
    pfs_error err;
    double best = INFINITY;
    for (int i = 0; i < 3; i++) {
        double t0 = now_ms();
        int rc = fit(&frame, &ref, PFS_MATCH_GAIN, &u, note, &err);
        best = fmin(best, now_ms() - t0);
        CHECKF(rc == 0, "%s", err.msg);
    }
    fprintf(stderr, "  1080p: %s\n  1080p fit: %.1f ms, worst gain error %.4f\n", note, best,
            worst_gain_error(&u));
    CHECK(worst_gain_error(&u) < 0.01);
    pfs_image_free(&ref);
    pfs_image_free(&frame);
}

/* ---- OpenCL against C ---------------------------------------------------- */

struct cl_case {
    const char *name;
    double exposure, from, to, slope[3], offset[3], power[3], sat;
    int shape;
    double cx, cy, w, h, feather;
    int invert;
    int origin_x, origin_y;
    double tint_from, tint_to, angle;
    double match[3]; /* match on: the reference is the plate times these gains */
};

static const struct cl_case cl_cases[] = {
    {"identity", 0, 6500, 6500, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1, SHAPE_NONE, 0, 0, 0, 0, 0, 0,
     0, 0, .angle = 0},
    {"exposure+wb", 0.35, 4300, 5600, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1, SHAPE_NONE, 0, 0, 0, 0,
     0, 0, 0, 0, .angle = 0},
    {"full grade", -1.2, 5600, 3200, {1.1, 0.9, 1.05}, {0.01, -0.02, 0.03}, {1.2, 0.9, 1.1}, 1.3,
     SHAPE_NONE, 0, 0, 0, 0, 0, 0, 0, 0, .angle = 0},
    {"ellipse soft", 0.7, 6500, 4000, {1.1, 0.9, 1.05}, {0.01, -0.02, 0.03}, {1.2, 0.9, 1.1},
     1.3, SHAPE_ELLIPSE, 320.3, 180.7, 400, 250, 40, 0, 0, 0, .angle = 0},
    {"rect hard inverted", 2, 6500, 6500, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 0, SHAPE_RECT, 200.5,
     100.5, 100, 60, 0, 1, 0, 0, .angle = 0},
    {"ellipse narrow feather, offset window", -0.5, 2000, 10000, {1, 1, 1}, {0, 0, 0},
     {2.2, 2.2, 2.2}, 0.8, SHAPE_ELLIPSE, 100, 300, 150, 90, 3, 0, -20, 13, .angle = 0},
    {"rect soft, strong power", 5, 25000, 1667, {0.5, 2, 1}, {-0.1, 0, 0.2}, {0.4, 3, 1}, 0.2,
     SHAPE_RECT, 500.25, 50.75, 260.5, 180, 25, 1, 7, -3, .angle = 0},
    {"tint, rotated soft ellipse", 0.3, 5600, 3200, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1.1,
     SHAPE_ELLIPSE, 300.5, 170.25, 420, 160, 30, 0, 0, 0, .tint_from = 20, .tint_to = -35,
     .angle = 33.5},
    {"rotated hard rect, offset window", -0.7, 6500, 6500, {1.1, 1, 0.9}, {0, 0.01, 0},
     {1, 1, 1}, 1, SHAPE_RECT, 250.75, 190.5, 200, 90, 0, 1, -20, 13, .tint_to = 60,
     .angle = -118},
    {"gradient soft, extreme tint", 1.5, 2500, 12000, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1,
     SHAPE_GRADIENT, 320.3, 180.6, 0, 0, 150, 0, 7, -3, .tint_from = -100, .tint_to = 100,
     .angle = 57},
    {"match, then a grade", 0.2, 4300, 5600, {1, 1, 1}, {0, 0, 0}, {1.1, 1, 1}, 1, SHAPE_NONE, 0,
     0, 0, 0, 0, 0, 0, 0, .match = {1.31, 0.92, 0.77}},
};

static void cl_vals(const struct cl_case *k, pfs_pvec *vals)
{
    defaults(vals);
    vals[P_EXPOSURE][0] = k->exposure;
    vals[P_TEMP_FROM][0] = k->from;
    vals[P_TEMP_TO][0] = k->to;
    set3(vals[P_SLOPE], k->slope[0], k->slope[1], k->slope[2]);
    set3(vals[P_OFFSET], k->offset[0], k->offset[1], k->offset[2]);
    set3(vals[P_POWER], k->power[0], k->power[1], k->power[2]);
    vals[P_SAT][0] = k->sat;
    vals[P_SHAPE][0] = k->shape;
    vals[P_CENTER][0] = k->cx;
    vals[P_CENTER][1] = k->cy;
    vals[P_SIZE][0] = k->w;
    vals[P_SIZE][1] = k->h;
    vals[P_FEATHER][0] = k->feather;
    vals[P_INVERT][0] = k->invert;
    vals[P_TINT_FROM][0] = k->tint_from;
    vals[P_TINT_TO][0] = k->tint_to;
    vals[P_ANGLE][0] = k->angle;
    if (k->match[0] > 0)
        vals[P_MATCH_FRAME][0] = 1012;
}

/* prepare for a CL case: with match on, the reference is the plate with
 * the case's gains, so the fit recovers them. */
static void cl_prepare(const struct cl_case *k, const pfs_pvec *vals, const struct pfs_image *src,
                       void *u)
{
    pfs_error err;
    pfs_error_clear(&err);
    char note[RELIGHT_NOTE_WIDTH + 1];
    struct pfs_image r = {0};
    struct pfs_op_frame in = {.frame = src};
    if (k->match[0] > 0) {
        r = make_image(src->width, src->height, src->origin_x, src->origin_y);
        for (size_t i = 0; i < pfs_image_floats(src); i++)
            r.px[i] = i % 4 == 3 ? src->px[i] : (float)(src->px[i] * k->match[i % 4]);
        in.reference = &r;
        in.reference_frame = 1012;
        in.note = note;
    }
    int rc = op->prepare(vals, &in, u, &err);
    CHECKF(rc == 0, "%s: %s", k->name, err.msg);
    REQUIRE(rc == 0);
    if (k->match[0] > 0) {
        const struct relight_uniforms *ru = u;
        CHECK(ru->stages & RELIGHT_FIT);
        for (int c = 0; c < 3; c++)
            CHECKF(fabs(ru->fit_gain[c] / k->match[c] - 1) < 1e-3, "%s c%d %.6f", k->name, c,
                   ru->fit_gain[c]);
        fprintf(stderr, "  %s\n", note);
        pfs_image_free(&r);
    }
}

static void test_cl_matches_c(void)
{
    struct pfs_cl *cl = open_test_device(op->cl_tolerance);
    if (!cl)
        return;
    pfs_error err;
    pfs_error_clear(&err);

    const int w = 640, h = 360;
    struct pfs_image src = make_image(w, h, 0, 0);
    struct pfs_image ref = make_image(w, h, 0, 0);
    struct pfs_image got = make_image(w, h, 0, 0);
    srand(1042);
    random_plate(&src);
    size_t n = pfs_image_floats(&src);
    double worst = 0;

    for (size_t c = 0; c < sizeof cl_cases / sizeof cl_cases[0]; c++) {
        const struct cl_case *k = &cl_cases[c];
        pfs_pvec vals[P_COUNT];
        cl_vals(k, vals);
        src.origin_x = ref.origin_x = got.origin_x = k->origin_x;
        src.origin_y = ref.origin_y = got.origin_y = k->origin_y;
        unsigned char u[1024];
        cl_prepare(k, vals, &src, u);
        /* The C reference, with the same uniforms. */
        const struct pfs_image *csrcs[1] = {&src};
        struct pfs_op_io cio = {.frame = 1001, .src = csrcs, .nsrc = 1, .dst = &ref};
        REQUIRE(op->run_cpu(u, &cio, &err) == 0);

        struct pfs_cl_image dsrc, ddst;
        REQUIRE(pfs_cl_image_create(cl, &src, &dsrc, &err) == 0);
        REQUIRE(pfs_cl_image_create(cl, &src, &ddst, &err) == 0);
        const struct pfs_cl_image *srcs[1] = {&dsrc};
        struct pfs_op_cl_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = &ddst};
        memset(got.px, 0, n * sizeof(float));
        /* As the engine does: the lock around upload, ops, download. */
        pfs_cl_lock(cl);
        CHECK(pfs_cl_upload(cl, &src, &dsrc, &err) == 0);
        int rc = op->run_cl(cl, u, &io, &err);
        CHECKF(rc == 0, "%s", err.msg);
        CHECK(pfs_cl_download(cl, &ddst, &got, &err) == 0);
        pfs_cl_unlock(cl);
        pfs_cl_image_release(&dsrc);
        pfs_cl_image_release(&ddst);

        /* Alpha is never touched: compared bit for bit with the source. */
        size_t alpha_changed = 0;
        for (size_t i = 3; i < n; i += 4)
            alpha_changed += bits_of(got.px[i]) != bits_of(src.px[i]);
        struct cl_diff diff = compare_to_reference(&ref, &got, true, k->name);
        double max_err = diff.max_err;
        size_t bad_special = diff.bad_special;
        CHECKF(max_err <= op->cl_tolerance, "%s: %g", k->name, max_err);
        CHECKF(bad_special == 0, "%s: %zu NaN/Inf mismatches", k->name, bad_special);
        CHECK(alpha_changed == 0);
        if (c == 0)
            CHECK(memcmp(got.px, src.px, n * sizeof(float)) == 0); /* bit-exact copy */
        if (max_err > worst)
            worst = max_err;
    }
    fprintf(stderr, "  OpenCL vs C: worst max relative error %.3g (tolerance %g)\n", worst,
            op->cl_tolerance);
    pfs_image_free(&src);
    pfs_image_free(&ref);
    pfs_image_free(&got);
    pfs_cl_close(cl);
}

/*
 * The window mask of both paths, exactly: on a black plate, a correction of
 * CDL offset 1 gives corrected = 1, so the blend src + m * (corrected - src)
 * is m itself, with no rounding, in both paths. The masks must be the same
 * bits, for every shape, rotated or not.
 */
static void test_cl_masks_exact(void)
{
    struct pfs_cl *cl = open_test_device(op->cl_tolerance);
    if (!cl)
        return;
    pfs_error err;
    pfs_error_clear(&err);
    static const struct {
        const char *name;
        int shape;
        double cx, cy, w, h, feather, angle;
        int invert, ox, oy;
    } cases[] = {
        {"ellipse", SHAPE_ELLIPSE, 320.3, 180.7, 400, 250, 40, 0, 0, 0, 0},
        {"rotated ellipse", SHAPE_ELLIPSE, 300.5, 170.25, 420, 160, 30, 33.5, 0, 0, 0},
        {"rotated ellipse, hard, offset window", SHAPE_ELLIPSE, 100, 300, 150, 90, 0, -71, 1, -20,
         13},
        {"rotated rect", SHAPE_RECT, 250.75, 190.5, 200, 90, 12.5, -118, 0, 0, 0},
        {"rotated rect, hard", SHAPE_RECT, 500.25, 50.75, 260.5, 180, 0, 200, 1, 7, -3},
        {"gradient", SHAPE_GRADIENT, 320.3, 180.6, 0, 0, 150, 57, 0, 7, -3},
        {"gradient, hard, inverted", SHAPE_GRADIENT, 100.5, 100, 0, 0, 0, 135, 1, 0, 0},
        {"gradient, far centre", SHAPE_GRADIENT, 1e5 + 0.37, 350.2, 0, 0, 2.5, 89.9, 0, 0, 0},
    };
    const int w = 640, h = 360;
    struct pfs_image src = make_image(w, h, 0, 0);
    struct pfs_image ref = make_image(w, h, 0, 0);
    struct pfs_image got = make_image(w, h, 0, 0);
    fill(&src, 0, 0, 0, 1);
    size_t n = pfs_image_floats(&src);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pfs_pvec vals[P_COUNT];
        defaults(vals);
        set3(vals[P_OFFSET], 1, 1, 1);
        vals[P_SHAPE][0] = cases[c].shape;
        vals[P_CENTER][0] = cases[c].cx;
        vals[P_CENTER][1] = cases[c].cy;
        vals[P_SIZE][0] = cases[c].w;
        vals[P_SIZE][1] = cases[c].h;
        vals[P_FEATHER][0] = cases[c].feather;
        vals[P_ANGLE][0] = cases[c].angle;
        vals[P_INVERT][0] = cases[c].invert;
        src.origin_x = ref.origin_x = got.origin_x = cases[c].ox;
        src.origin_y = ref.origin_y = got.origin_y = cases[c].oy;
        unsigned char u[1024];
        REQUIRE(op->prepare(vals, &(struct pfs_op_frame){.frame = &src}, u, &err) == 0);
        REQUIRE(run_cpu(vals, &src, &ref) == 0);
        struct pfs_cl_image dsrc, ddst;
        REQUIRE(pfs_cl_image_create(cl, &src, &dsrc, &err) == 0);
        REQUIRE(pfs_cl_image_create(cl, &src, &ddst, &err) == 0);
        const struct pfs_cl_image *srcs[1] = {&dsrc};
        struct pfs_op_cl_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = &ddst};
        pfs_cl_lock(cl);
        CHECK(pfs_cl_upload(cl, &src, &dsrc, &err) == 0);
        int rc = op->run_cl(cl, u, &io, &err);
        CHECKF(rc == 0, "%s", err.msg);
        CHECK(pfs_cl_download(cl, &ddst, &got, &err) == 0);
        pfs_cl_unlock(cl);
        pfs_cl_image_release(&dsrc);
        pfs_cl_image_release(&ddst);
        size_t differ = 0, soft = 0, full = 0;
        for (size_t i = 0; i < n; i += 4) {
            differ += bits_of(ref.px[i]) != bits_of(got.px[i]);
            soft += ref.px[i] > 0 && ref.px[i] < 1;
            full += ref.px[i] == 1;
        }
        fprintf(stderr, "  %-38s %zu soft, %zu full pixels; %zu masks differ\n", cases[c].name,
                soft, full, differ);
        CHECK(differ == 0);
        CHECK(memcmp(ref.px, got.px, n * sizeof(float)) == 0);
        CHECK(full > 0 && (cases[c].feather == 0 || soft > 0));
    }
    pfs_image_free(&src);
    pfs_image_free(&ref);
    pfs_image_free(&got);
    pfs_cl_close(cl);
}

int main(void)
{
    REQUIRE(op->prepare && op->run_cpu && op->run_cl && op->validate && op->advise &&
            op->reference);
    REQUIRE(op->uniforms_size == sizeof(struct relight_uniforms));
    RUN(test_identity_exact);
    RUN(test_exposure);
    RUN(test_colour_science);
    RUN(test_white_balance);
    RUN(test_cdl);
    RUN(test_window);
    RUN(test_validate);
    RUN(test_nan_isolation);
    RUN(test_tint);
    RUN(test_angle_gradient);
    RUN(test_match);
    RUN(test_match_1080p);
    RUN(test_cl_matches_c);
    RUN(test_cl_masks_exact);
    return CHECK_DONE();
}
