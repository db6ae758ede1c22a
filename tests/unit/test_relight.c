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

#include "tests/unit/check.h"

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

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
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

static void fill(struct pfs_image *img, float r, float g, float b, float a)
{
    for (size_t i = 0; i < pfs_image_floats(img); i += 4) {
        img->px[i] = r;
        img->px[i + 1] = g;
        img->px[i + 2] = b;
        img->px[i + 3] = a;
    }
}

static float *px(struct pfs_image *img, int x, int y)
{
    return img->px + ((size_t)y * (size_t)img->width + (size_t)x) * 4;
}

/* prepare + run_cpu, as the engine does; returns run_cpu's result. */
static int run_cpu(const pfs_pvec *vals, const struct pfs_image *src, struct pfs_image *dst)
{
    unsigned char u[1024];
    REQUIRE(op->uniforms_size <= sizeof u);
    pfs_error err;
    pfs_error_clear(&err);
    int rc = op->prepare(vals, src, u, &err);
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

/* Linear Rec.709 RGB (Y = 1) of a Planckian white. */
static void white_rgb(double kelvin, double rgb[3])
{
    double x, y, xyz[3];
    mat3 to_xyz, from_xyz;
    planck_xy(kelvin, &x, &y);
    xy_to_xyz(x, y, xyz);
    rgb_to_xyz(to_xyz);
    mat3_inv(to_xyz, from_xyz);
    mat3_vec(from_xyz, xyz, rgb);
}

/* ---- C reference --------------------------------------------------------- */

static const uint32_t special_bits[] = {
    0x7fc12345u, /* quiet NaN with a payload */
    0xffc00001u, /* negative NaN */
    0x7f800000u, /* +Inf */
    0xff800000u, /* -Inf */
    0x80000000u, /* -0 */
    0x00000001u, /* smallest subnormal */
    0x7f7fffffu, /* FLT_MAX */
};

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
    white_balance_matrix(6500, 6500, m);
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
    CHECK(op->prepare(vals, &img, u, NULL) == EINVAL);
    vals[P_SIZE][1] = 50;
    CHECK(op->validate(vals, NULL) == 0);
    vals[P_SHAPE][0] = SHAPE_RECT;
    vals[P_SIZE][0] = 0;
    CHECK(op->validate(vals, NULL) == EINVAL);
    vals[P_SHAPE][0] = SHAPE_NONE;
    CHECK(op->validate(vals, NULL) == 0);
    vals[P_TEMP_FROM][0] = 1000;
    CHECK(op->prepare(vals, &img, u, NULL) == EINVAL);
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

/* ---- OpenCL against C ---------------------------------------------------- */

static double frand(void)
{
    return (double)rand() / ((double)RAND_MAX + 1.0);
}

/* HDR plate: zeros, negatives (noise below black), mid-tones, and highlights
 * up to 64, plus a sprinkling of NaN and Inf. */
static void random_plate(struct pfs_image *img)
{
    for (size_t i = 0; i < pfs_image_floats(img); i++) {
        double u = frand(), v;
        if (i % 4 == 3)
            v = frand();
        else if (u < 0.1)
            v = 0;
        else if (u < 0.2)
            v = -frand();
        else if (u < 0.75)
            v = frand();
        else
            v = exp2(6 * frand());
        img->px[i] = (float)v;
    }
    img->px[4 * 1000 + 1] = NAN;
    img->px[4 * 2000 + 0] = INFINITY;
    img->px[4 * 3000 + 2] = -INFINITY;
}

struct cl_case {
    const char *name;
    double exposure, from, to, slope[3], offset[3], power[3], sat;
    int shape;
    double cx, cy, w, h, feather;
    int invert;
    int origin_x, origin_y;
};

static const struct cl_case cl_cases[] = {
    {"identity", 0, 6500, 6500, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1, SHAPE_NONE, 0, 0, 0, 0, 0, 0,
     0, 0},
    {"exposure+wb", 0.35, 4300, 5600, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1, SHAPE_NONE, 0, 0, 0, 0,
     0, 0, 0, 0},
    {"full grade", -1.2, 5600, 3200, {1.1, 0.9, 1.05}, {0.01, -0.02, 0.03}, {1.2, 0.9, 1.1}, 1.3,
     SHAPE_NONE, 0, 0, 0, 0, 0, 0, 0, 0},
    {"ellipse soft", 0.7, 6500, 4000, {1.1, 0.9, 1.05}, {0.01, -0.02, 0.03}, {1.2, 0.9, 1.1},
     1.3, SHAPE_ELLIPSE, 320.3, 180.7, 400, 250, 40, 0, 0, 0},
    {"rect hard inverted", 2, 6500, 6500, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 0, SHAPE_RECT, 200.5,
     100.5, 100, 60, 0, 1, 0, 0},
    {"ellipse narrow feather, offset window", -0.5, 2000, 10000, {1, 1, 1}, {0, 0, 0},
     {2.2, 2.2, 2.2}, 0.8, SHAPE_ELLIPSE, 100, 300, 150, 90, 3, 0, -20, 13},
    {"rect soft, strong power", 5, 25000, 1667, {0.5, 2, 1}, {-0.1, 0, 0.2}, {0.4, 3, 1}, 0.2,
     SHAPE_RECT, 500.25, 50.75, 260.5, 180, 25, 1, 7, -3},
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
}

static void test_cl_matches_c(void)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_cl_open(NULL, &cl, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc)
        return;
    fprintf(stderr, "  OpenCL device: %s; tolerance %g relative to max(1, |ref|)\n",
            pfs_cl_device_name(cl), op->cl_tolerance);

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
        REQUIRE(op->prepare(vals, &src, u, &err) == 0);
        REQUIRE(run_cpu(vals, &src, &ref) == 0);

        struct pfs_cl_image dsrc, ddst;
        REQUIRE(pfs_cl_image_create(cl, &src, &dsrc, &err) == 0);
        REQUIRE(pfs_cl_image_create(cl, &src, &ddst, &err) == 0);
        const struct pfs_cl_image *srcs[1] = {&dsrc};
        struct pfs_op_cl_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = &ddst};
        memset(got.px, 0, n * sizeof(float));
        /* As the engine does: the lock around upload, ops, download. */
        pfs_cl_lock(cl);
        CHECK(pfs_cl_upload(cl, &src, &dsrc, &err) == 0);
        rc = op->run_cl(cl, u, &io, &err);
        CHECKF(rc == 0, "%s", err.msg);
        CHECK(pfs_cl_download(cl, &ddst, &got, &err) == 0);
        pfs_cl_unlock(cl);
        pfs_cl_image_release(&dsrc);
        pfs_cl_image_release(&ddst);

        double max_err = 0;
        size_t at = 0, bad_special = 0, alpha_changed = 0;
        for (size_t i = 0; i < n; i++) {
            float r = ref.px[i], g = got.px[i];
            if (i % 4 == 3) {
                alpha_changed += bits_of(g) != bits_of(src.px[i]);
                continue;
            }
            if (isnan(r) || isinf(r)) {
                bad_special += !(isnan(r) ? isnan(g) : g == r);
                continue;
            }
            double e = fabs((double)g - (double)r) / fmax(1.0, fabs((double)r));
            if (!(e <= max_err)) {
                max_err = e;
                at = i;
            }
        }
        fprintf(stderr, "  %-40s max rel error %.3g (pixel %zu,%zu ch %zu: ref %.9g cl %.9g)\n",
                k->name, max_err, at / 4 % (size_t)w, at / 4 / (size_t)w, at % 4, ref.px[at],
                got.px[at]);
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

int main(void)
{
    REQUIRE(op->prepare && op->run_cpu && op->run_cl && op->validate);
    REQUIRE(op->uniforms_size == sizeof(struct relight_uniforms));
    RUN(test_identity_exact);
    RUN(test_exposure);
    RUN(test_colour_science);
    RUN(test_white_balance);
    RUN(test_cdl);
    RUN(test_window);
    RUN(test_validate);
    RUN(test_nan_isolation);
    RUN(test_cl_matches_c);
    return CHECK_DONE();
}
