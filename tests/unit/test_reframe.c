/*
 * test_reframe.c - the reframe op: its C reference against geometry and
 * signal facts that hold whatever the implementation (exact copies and
 * shifts, flat fields, ramps and sinusoids sampled where the geometry says,
 * centroids, the rotation's sign, border rules, NaN isolation), anti-ringing
 * (no halo below the local minimum around a hot highlight, smooth signals
 * untouched), and its OpenCL path against the C reference on the real
 * device.
 *
 * The op file is included rather than linked so that its static helpers and
 * uniforms are visible; everything else goes through the descriptor exactly
 * as the engine calls it. The library copy of reframe.o is then not pulled
 * in, since this file defines pfs_op_reframe itself.
 */
#include "engine/ops/reframe.c"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"
#include "tests/unit/optest.h"
#include "tests/unit/testutil.h"

static const struct pfs_op_desc *op = &pfs_op_reframe;

static void defaults(pfs_pvec *vals)
{
    for (int i = 0; i < op->nparams; i++)
        memcpy(vals[i], op->params[i].def, sizeof(pfs_pvec));
}

static void set_geometry(pfs_pvec *vals, double scale, double dx, double dy, double rotate)
{
    defaults(vals);
    vals[P_SCALE][0] = scale;
    vals[P_OFFSET][0] = dx;
    vals[P_OFFSET][1] = dy;
    vals[P_ROTATE][0] = rotate;
}

/* An image whose display window is [0, dw) x [0, dh). */
static struct pfs_image make_image(int w, int h, int ox, int oy, int dw, int dh)
{
    struct pfs_image img = {0};
    REQUIRE(pfs_image_alloc(&img, w, h) == 0);
    img.origin_x = ox;
    img.origin_y = oy;
    img.display = (struct pfs_rect){0, 0, dw - 1, dh - 1};
    return img;
}

/* prepare + run_cpu, as the engine does. dst gets src's geometry. */
static void run_cpu(const pfs_pvec *vals, const struct pfs_image *src, struct pfs_image *dst)
{
    unsigned char u[1024];
    REQUIRE(op->uniforms_size <= sizeof u);
    pfs_error err;
    pfs_error_clear(&err);
    int rc = op->prepare(vals, &(struct pfs_op_frame){.frame = src}, u, &err);
    REQUIRE(rc == 0);
    dst->origin_x = src->origin_x;
    dst->origin_y = src->origin_y;
    dst->display = src->display;
    const struct pfs_image *srcs[1] = {src};
    struct pfs_op_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = dst};
    rc = op->run_cpu(u, &io, &err);
    CHECKF(rc == 0, "%s", err.msg);
}

/* Where output pixel (x, y) samples the source, in display coordinates. */
static void source_at(const pfs_pvec *vals, const struct pfs_image *img, int x, int y,
                      double *qx, double *qy)
{
    double s = vals[P_SCALE][0], th = vals[P_ROTATE][0] * M_PI / 180;
    double cx = (img->display.x0 + img->display.x1 + 1) / 2.0;
    double cy = (img->display.y0 + img->display.y1 + 1) / 2.0;
    double u = img->origin_x + x + 0.5 - cx, v = img->origin_y + y + 0.5 - cy;
    *qx = cx + vals[P_OFFSET][0] + (cos(th) * u - sin(th) * v) / s;
    *qy = cy + vals[P_OFFSET][1] + (sin(th) * u + cos(th) * v) / s;
}

/* Signed-weight centroid of channel 0, in display coordinates. */
static void centroid(const struct pfs_image *img, double *cx, double *cy)
{
    double sw = 0, sx = 0, sy = 0;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            double v = px(img, x, y)[0];
            sw += v;
            sx += v * (img->origin_x + x + 0.5);
            sy += v * (img->origin_y + y + 0.5);
        }
    *cx = sx / sw;
    *cy = sy / sw;
}

/* ---- C reference --------------------------------------------------------- */

static void test_identity_exact(void)
{
    pfs_pvec vals[P_COUNT];
    defaults(vals);
    struct pfs_image src = make_image(16, 9, -3, 2, 12, 12), dst = make_image(16, 9, 0, 0, 1, 1);
    size_t n = pfs_image_floats(&src);
    for (size_t i = 0; i < n; i++)
        src.px[i] = i % 3 == 0 ? float_of(special_bits[(i / 3) % 7])
                               : (float)(i % 2 ? 37.5 * frand() : -frand());
    for (int a = 0; a <= 1; a++) /* with and without anti-ringing */
        for (int b = BORDER_BLACK; b <= BORDER_MIRROR; b++) {
            vals[P_ANTIRING][0] = a;
            vals[P_BORDER][0] = b;
            memset(dst.px, 0xab, n * sizeof(float));
            run_cpu(vals, &src, &dst);
            CHECK(memcmp(src.px, dst.px, n * sizeof(float)) == 0);
        }
    CHECK(dst.origin_x == -3 && dst.origin_y == 2 && dst.display.x1 == 11);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* Scale 1, no rotation, an integer offset: every weight is exactly 1 or 0,
 * so the output is the source shifted, value for value; taps from beyond
 * the edge follow the border rule, and a NaN next door does not leak in
 * through its zero weight. */
static void test_integer_shift(void)
{
    pfs_pvec vals[P_COUNT];
    const int w = 40, h = 30, dx = 3, dy = -2;
    struct pfs_image src = make_image(w, h, 5, -4, 50, 25), dst = make_image(w, h, 0, 0, 1, 1);
    srand(7);
    for (size_t i = 0; i < pfs_image_floats(&src); i++)
        src.px[i] = (float)(frand() * 20 - 2);
    px(&src, 10, 10)[1] = NAN;
    px(&src, 12, 10)[2] = INFINITY;

    /* Every border, with and without anti-ringing: each output value is its
     * lobe's only pixel, so the clamp never moves it. */
    static const double strengths[] = {0, 0.5, 1};
    for (int k = 0; k < 3 * 3; k++) {
        int b = k % 3;
        set_geometry(vals, 1, dx, dy, 0);
        vals[P_BORDER][0] = b;
        vals[P_ANTIRING][0] = strengths[k / 3];
        run_cpu(vals, &src, &dst);
        size_t wrong = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 4; c++) {
                    int sx = border_index(x + dx, w, b), sy = border_index(y + dy, h, b);
                    float want = sx < 0 || sy < 0 ? 0.0f : px(&src, sx, sy)[c];
                    if (!isfinite(want))
                        want = 0; /* non-finite reads as 0 */
                    wrong += px(&dst, x, y)[c] != want;
                }
        CHECKF(wrong == 0, "border %s antiring %g: %zu values differ from the exact shift",
               border_names[b], strengths[k / 3], wrong);
    }
    /* The pixels beside the NaN's and the Inf's positions are exact. */
    CHECK(px(&dst, 10 - dx, 10 - dy)[1] == 0.0f);
    CHECK(px(&dst, 11 - dx, 10 - dy)[1] == px(&src, 11, 10)[1]);
    CHECK(px(&dst, 9 - dx, 10 - dy)[1] == px(&src, 9, 10)[1]);
    CHECK(px(&dst, 11 - dx, 10 - dy)[2] == px(&src, 11, 10)[2]);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* A flat field stays flat: each axis's weights sum to 1. */
static void test_flat_field(void)
{
    static const double cases[][4] = {
        {1.08, 0, 0, 0}, {1.08, 0.3, -0.7, 3}, {0.6, 2.5, 1, 0}, {0.27, 0, 0, -20}, {3.3, 1, 1, 45},
    };
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(64, 48, 0, 0, 64, 48), dst = make_image(64, 48, 0, 0, 1, 1);
    fill(&src, 0.37f, 5.0f, -0.25f, 1.0f);
    double worst = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int f = 0; f < FILTER_COUNT; f++) {
            set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
            vals[P_BORDER][0] = BORDER_CLAMP; /* the field continues beyond the edge */
            vals[P_FILTER][0] = f;
            run_cpu(vals, &src, &dst);
            for (size_t i = 0; i < pfs_image_floats(&dst); i++) {
                double e = fabs(dst.px[i] - src.px[i]) / fabs(src.px[i]);
                worst = e > worst ? e : worst;
            }
        }
    }
    fprintf(stderr, "  flat field: max relative deviation %.3g\n", worst);
    CHECK(worst <= 2e-7); /* the final rounding to float, and a little */
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/*
 * Ramps: the output at p must be the source's ramp at q(p). A normalised
 * Lanczos-3 reproduces a ramp to within its first moment, at most 0.020 of
 * a pixel (0.015 for Lanczos-4) depending on the phase, and zero on average:
 * a half-pixel shift would be an error of 0.5 px, everywhere, one-signed.
 * The data window is offset from the display window to test coordinates.
 */
static void test_ramp(void)
{
    static const double cases[][4] = {
        {1.08, 0, 0, 0}, {1.08, 0.3, -0.7, 0}, {1.25, -11.5, 4.25, 0},
        {2, 0, 0, 0},    {0.8, 1, 2, 0},       {1.08, 0.3, -0.7, 3},
        {1.5, 0, 0, -7}, {0.5, 0, 0, 0},
    };
    const double gx = 0.125, gy = -0.0625; /* per display pixel */
    const int w = 180, h = 100;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, -13, 7, 160, 120), dst = make_image(w, h, 0, 0, 1, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = px(&src, x, y);
            double X = src.origin_x + x + 0.5, Y = src.origin_y + y + 0.5;
            p[0] = (float)(1 + gx * X + gy * Y);
            p[1] = (float)(0.5 * X);
            p[2] = (float)(0.5 * Y);
            p[3] = 1;
        }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int f = 0; f < FILTER_COUNT; f++) {
            set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
            vals[P_FILTER][0] = f;
            run_cpu(vals, &src, &dst);
            /* Only pixels whose whole footprint lies inside the data window. */
            double margin = 1 + filter_radius[f] / fmin(cases[k][0], 1);
            double max_ex = 0, max_ey = 0, sum_ex = 0, sum_ey = 0;
            int n = 0;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double qx, qy;
                    source_at(vals, &dst, x, y, &qx, &qy);
                    if (qx - src.origin_x < margin || qx - src.origin_x > w - margin ||
                        qy - src.origin_y < margin || qy - src.origin_y > h - margin)
                        continue;
                    /* Errors in source pixels. */
                    double ex = px(&dst, x, y)[1] / 0.5 - qx, ey = px(&dst, x, y)[2] / 0.5 - qy;
                    double e0 = px(&dst, x, y)[0] - (1 + gx * qx + gy * qy);
                    max_ex = fmax(max_ex, fabs(ex));
                    max_ey = fmax(max_ey, fabs(ey));
                    sum_ex += ex;
                    sum_ey += ey;
                    CHECKF(fabs(e0) <= 0.021 * (fabs(gx) + fabs(gy)), "ramp %zu: %g", k, e0);
                    n++;
                }
            double bound = f == FILTER_LANCZOS3 ? 0.0201 : 0.0147;
            CHECKF(n > 100, "case %zu: only %d pixels inside", k, n);
            CHECKF(max_ex <= bound && max_ey <= bound, "case %zu %s: max %.4g %.4g px", k,
                   filter_names[f], max_ex, max_ey);
            CHECKF(fabs(sum_ex / n) < 2e-3 && fabs(sum_ey / n) < 2e-3,
                   "case %zu %s: mean %.4g %.4g px", k, filter_names[f], sum_ex / n,
                   sum_ey / n);
            if (k == 0 && f == 0)
                fprintf(stderr, "  ramp at scale 1.08: max position error %.4g px, mean %.2g\n",
                        fmax(max_ex, max_ey), sum_ex / n);
        }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* A low-frequency sinusoid (period 24 px) pushed in by 1.25 about an
 * off-centre point: the output is the analytic sinusoid at q(p). */
static void test_sinusoid(void)
{
    const int w = 200, h = 120;
    const double period = 24, k = 2 * M_PI / period;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, 0, 0, w, h), dst = make_image(w, h, 0, 0, 1, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = px(&src, x, y);
            double X = x + 0.5, Y = y + 0.5;
            p[0] = (float)sin(k * X);
            p[1] = (float)cos(k * Y + 0.3);
            p[2] = (float)(sin(k * X) * cos(0.5 * k * Y));
            p[3] = 1;
        }
    static const double cases[][4] = {{1.25, 3.3, -1.7, 0}, {1.08, 0, 0, 0}, {1.25, 0, 0, 2}};
    for (size_t n = 0; n < 2 * sizeof cases / sizeof cases[0]; n++) {
        size_t c = n % (sizeof cases / sizeof cases[0]);
        int ar = n >= sizeof cases / sizeof cases[0]; /* the second round: antiring 1 */
        set_geometry(vals, cases[c][0], cases[c][1], cases[c][2], cases[c][3]);
        vals[P_ANTIRING][0] = ar;
        run_cpu(vals, &src, &dst);
        double worst = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double qx, qy;
                source_at(vals, &dst, x, y, &qx, &qy);
                if (qx < 4 || qx > w - 4 || qy < 4 || qy > h - 4)
                    continue;
                double want[3] = {sin(k * qx), cos(k * qy + 0.3), sin(k * qx) * cos(0.5 * k * qy)};
                for (int ch = 0; ch < 3; ch++)
                    worst = fmax(worst, fabs(px(&dst, x, y)[ch] - want[ch]));
            }
        fprintf(stderr,
                "  sinusoid (period %g px), scale %g rotate %g antiring %d: max error %.3g\n",
                period, cases[c][0], cases[c][3], ar, worst);
        /* Lanczos-3's gain at 1/24 cycle per pixel is within 1e-4 of 1;
         * its phase ripple, 0.02 px * 2 pi / 24, gives up to ~5e-3. A
         * half-pixel shift would be 0.13. Anti-ringing also flattens a
         * crest that falls between two samples to the larger of them: up to
         * 1 - cos(pi / 24) = 8.6e-3 of the amplitude, where the ripple is
         * small. */
        CHECKF(worst < (ar ? 0.011 : 6e-3), "case %zu antiring %d: %g", c, ar, worst);
    }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* No half-pixel shift: a centred impulse pushed in by 2 stays centred, with
 * and without anti-ringing (which is symmetric too). */
static void test_centroid(void)
{
    pfs_pvec vals[P_COUNT];
    /* Odd display window: its centre (50.5, 50.5) is pixel (50, 50)'s centre. */
    struct pfs_image src = make_image(101, 101, 0, 0, 101, 101);
    struct pfs_image dst = make_image(101, 101, 0, 0, 1, 1);
    fill(&src, 0, 0, 0, 1);
    px(&src, 50, 50)[0] = 1;
    for (int n = 0; n < 2 * FILTER_COUNT; n++) {
        int f = n % FILTER_COUNT;
        set_geometry(vals, 2, 0, 0, 0);
        vals[P_FILTER][0] = f;
        vals[P_ANTIRING][0] = n / FILTER_COUNT;
        run_cpu(vals, &src, &dst);
        double cx, cy;
        centroid(&dst, &cx, &cy);
        CHECKF(fabs(cx - 50.5) < 1e-6 && fabs(cy - 50.5) < 1e-6, "%s: %.9f %.9f",
               filter_names[f], cx, cy);
        /* Symmetric about the centre pixel, as a centred impulse must be. */
        CHECK(px(&dst, 49, 50)[0] == px(&dst, 51, 50)[0]);
        CHECK(px(&dst, 50, 47)[0] == px(&dst, 50, 53)[0]);
        CHECK(px(&dst, 50, 50)[0] > 0.99f);
    }
    pfs_image_free(&src);
    pfs_image_free(&dst);

    /* Even display window: the centre (50, 40) is a pixel corner; a 2x2
     * block around it stays around it, at 1.08 and at 2. */
    src = make_image(100, 80, 0, 0, 100, 80);
    dst = make_image(100, 80, 0, 0, 1, 1);
    fill(&src, 0, 0, 0, 1);
    for (int y = 39; y <= 40; y++)
        for (int x = 49; x <= 50; x++)
            px(&src, x, y)[0] = 1;
    static const double scales[] = {1.08, 2, 0.7};
    for (size_t n = 0; n < 6; n++) {
        size_t i = n % 3;
        set_geometry(vals, scales[i], 0, 0, 0);
        vals[P_ANTIRING][0] = (double)(n / 3);
        run_cpu(vals, &src, &dst);
        double cx, cy;
        centroid(&dst, &cx, &cy);
        CHECKF(fabs(cx - 50) < 1e-6 && fabs(cy - 40) < 1e-6, "scale %g: %.9f %.9f", scales[i],
               cx, cy);
    }
    /* A pan moves it by -offset: the offset is the source point at the
     * centre. Anti-ringing is not linear: at a quarter-pixel phase it clips
     * the negative lobes on either side of the block unequally, which moves
     * the signed centroid by a few hundredths of a pixel (0.038 here). */
    for (int a = 0; a <= 1; a++) {
        set_geometry(vals, 1, 10.25, -4.5, 0);
        vals[P_ANTIRING][0] = a;
        run_cpu(vals, &src, &dst);
        double cx, cy;
        centroid(&dst, &cx, &cy);
        double tol = a ? 0.05 : 0.03;
        CHECKF(fabs(cx - 39.75) < tol && fabs(cy - 44.5) < tol, "pan, antiring %d: %.4f %.4f", a,
               cx, cy);
    }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* Push-in and rotation about the centre move a dot where the documented
 * conventions say: positive rotate turns the picture counter-clockwise on
 * screen, so a dot right of the centre moves up (y down). */
static void test_rotation_sign(void)
{
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(101, 101, 0, 0, 101, 101);
    struct pfs_image dst = make_image(101, 101, 0, 0, 1, 1);
    fill(&src, 0, 0, 0, 1);
    px(&src, 70, 50)[0] = 1; /* 20 px right of the centre (50.5, 50.5) */
    static const struct {
        double scale, rotate, want_x, want_y;
    } cases[] = {
        {1.5, 0, 50.5 + 30, 50.5},
        {1, 30, 50.5 + 17.320508, 50.5 - 10},
        {1, -30, 50.5 + 17.320508, 50.5 + 10},
        {1.2, 10, 50.5 + 24 * 0.98480775, 50.5 - 24 * 0.17364818},
    };
    const size_t ncases = sizeof cases / sizeof cases[0];
    for (size_t n = 0; n < 2 * ncases; n++) {
        size_t i = n % ncases;
        int a = n >= ncases;
        set_geometry(vals, cases[i].scale, 0, 0, cases[i].rotate);
        vals[P_ANTIRING][0] = a;
        run_cpu(vals, &src, &dst);
        double cx, cy;
        centroid(&dst, &cx, &cy);
        fprintf(stderr,
                "  dot (+20, 0) at scale %g rotate %+g antiring %d: centroid (%+.3f, %+.3f)\n",
                cases[i].scale, cases[i].rotate, a, cx - 50.5, cy - 50.5);
        /* Anti-ringing clips a lone dot's negative lobes, unequally at a
         * fractional phase: its signed centroid moves by up to ~0.06 px. */
        double tol = a ? 0.1 : 0.05;
        CHECKF(fabs(cx - cases[i].want_x) < tol && fabs(cy - cases[i].want_y) < tol,
               "case %zu antiring %d: %.4f %.4f, want %.4f %.4f", i, a, cx, cy, cases[i].want_x,
               cases[i].want_y);
    }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* A pull-out shows what lies beyond the edge: black (RGBA 0), the edge
 * pixels stretched, or the picture mirrored about its edge. Channel 0 is
 * the column number + 1, channel 1 the row number + 1. */
static void test_borders(void)
{
    const int w = 100, h = 60;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, 0, 0, w, h), dst = make_image(w, h, 0, 0, 1, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = px(&src, x, y);
            p[0] = (float)(x + 1);
            p[1] = (float)(y + 1);
            p[2] = 0.5f;
            p[3] = 1;
        }
    set_geometry(vals, 0.8, 0, 0, 0);
    double qx0, qy0, qx1, qy1;
    source_at(vals, &src, 0, 0, &qx0, &qy0);
    source_at(vals, &src, w - 1, h - 1, &qx1, &qy1);
    /* In source pixel coordinates the outermost output pixels sample about
     * 12 px beyond the edge, farther than the footprint (3 / 0.8 px). */
    double s0 = qx0 - 0.5, s1 = qx1 - 0.5, t0 = qy0 - 0.5;
    REQUIRE(s0 < -3.75 - 1 && s1 > w - 1 + 3.75 + 1 && t0 < -3.75 - 1); /* footprint outside */

    vals[P_BORDER][0] = BORDER_BLACK;
    run_cpu(vals, &src, &dst);
    for (int c = 0; c < 4; c++) {
        CHECK(px(&dst, 0, 0)[c] == 0.0f);
        CHECK(px(&dst, 0, h / 2)[c] == 0.0f);
        CHECK(px(&dst, w - 1, h - 1)[c] == 0.0f);
    }
    CHECK(fabs(px(&dst, w / 2, h / 2)[2] - 0.5) < 1e-6); /* the picture is still there */

    vals[P_BORDER][0] = BORDER_CLAMP;
    run_cpu(vals, &src, &dst);
    CHECKF(fabs(px(&dst, 0, h / 2)[0] - 1) < 1e-6, "%.7f", px(&dst, 0, h / 2)[0]);
    CHECK(fabs(px(&dst, w - 1, h / 2)[0] - w) < 1e-5);
    CHECK(fabs(px(&dst, w / 2, 0)[1] - 1) < 1e-6);
    CHECK(fabs(px(&dst, 0, 0)[3] - 1) < 1e-6 && fabs(px(&dst, 0, 0)[2] - 0.5) < 1e-6);

    /* Mirror about the edge (... 1 0 | 0 1 ...): position s < -0.5 shows
     * what lies at -1 - s; beyond the right edge, 2w - 1 - s. Values are
     * column + 1, reproduced to within Lanczos's 0.02 px. */
    vals[P_BORDER][0] = BORDER_MIRROR;
    run_cpu(vals, &src, &dst);
    CHECKF(fabs(px(&dst, 0, h / 2)[0] - (-1 - s0 + 1)) < 0.021, "%.4f vs %.4f",
           px(&dst, 0, h / 2)[0], -s0);
    CHECKF(fabs(px(&dst, w - 1, h / 2)[0] - (2 * w - 1 - s1 + 1)) < 0.021, "%.4f vs %.4f",
           px(&dst, w - 1, h / 2)[0], 2 * w - s1);
    CHECKF(fabs(px(&dst, w / 2, 0)[1] - (-1 - t0 + 1)) < 0.021, "%.4f vs %.4f",
           px(&dst, w / 2, 0)[1], -t0);
    CHECK(fabs(px(&dst, 0, 0)[3] - 1) < 1e-6);
    fprintf(stderr, "  pull-out 0.8, left edge: black 0, clamp 1, mirror %.3f (source %.3f)\n",
            px(&dst, 0, h / 2)[0], s0);

    /* Mirroring is periodic: far beyond the edge it still reads the picture. */
    CHECK(border_index(-1, 5, BORDER_MIRROR) == 0 && border_index(-5, 5, BORDER_MIRROR) == 4);
    CHECK(border_index(-6, 5, BORDER_MIRROR) == 4 && border_index(5, 5, BORDER_MIRROR) == 4);
    CHECK(border_index(10, 5, BORDER_MIRROR) == 0 && border_index(-11, 5, BORDER_MIRROR) == 0);
    CHECK(border_index(-7, 5, BORDER_CLAMP) == 0 && border_index(9, 5, BORDER_CLAMP) == 4);
    CHECK(border_index(-1, 5, BORDER_BLACK) == -1 && border_index(5, 5, BORDER_BLACK) == -1);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* A pull-out widens the kernel, so detail finer than the output can hold
 * averages out instead of aliasing: columns alternating 0, 1 at scale 0.5
 * come out flat 0.5 (point sampling would give 0 or 1). */
static void test_pull_out_antialias(void)
{
    const int w = 120, h = 40;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, 0, 0, w, h), dst = make_image(w, h, 0, 0, 1, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = px(&src, x, y);
            p[0] = p[1] = p[2] = (float)(x & 1);
            p[3] = 1;
        }
    set_geometry(vals, 0.5, 0.3, 0, 0); /* phase 0.8 rather than a symmetric 0.5 */
    vals[P_BORDER][0] = BORDER_MIRROR;
    run_cpu(vals, &src, &dst);
    double worst = 0;
    int n = 0;
    for (int x = 0; x < w; x++) {
        double qx, qy;
        source_at(vals, &dst, x, h / 2, &qx, &qy);
        if (qx < 7 || qx > w - 7) /* the mirror breaks the alternation at the edge */
            continue;
        worst = fmax(worst, fabs(px(&dst, x, h / 2)[0] - 0.5));
        n++;
    }
    CHECK(n > 50);
    fprintf(stderr, "  Nyquist stripes at scale 0.5: max deviation from 0.5: %.3g\n", worst);
    /* The stretched Lanczos-3 passes at most 0.3 % of the source's Nyquist
     * (amplitude 0.5 here); a kernel left at source size would pass 0.5. */
    CHECK(worst < 2e-3);
    set_geometry(vals, 1 / 0.55, 0, 0, 0); /* no stretch when pushing in: detail stays */
    run_cpu(vals, &src, &dst);
    double swing = 0;
    for (int x = w / 2 - 5; x < w / 2 + 5; x++)
        swing = fmax(swing, fabs(px(&dst, x, h / 2)[0] - 0.5));
    CHECK(swing > 0.3);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* NaN and Inf read as 0: they never spread, whatever the geometry. */
static void test_nan_isolation(void)
{
    const int w = 80, h = 60;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, 0, 0, w, h), dst = make_image(w, h, 0, 0, 1, 1);
    fill(&src, 0.5f, 2.0f, 0.25f, 1.0f);
    px(&src, 20, 20)[0] = NAN;
    px(&src, 40, 20)[1] = INFINITY;
    px(&src, 60, 30)[2] = -INFINITY;
    px(&src, 30, 40)[3] = NAN;
    static const double cases[][4] = {
        {1.08, 0, 0, 0}, {1, 0.5, 0, 0}, {1, 2, 1, 0}, {0.5, 0, 0, 0}, {1.3, 0.2, 0, 7},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
        vals[P_BORDER][0] = BORDER_CLAMP;
        run_cpu(vals, &src, &dst);
        size_t bad = 0, moved = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double qx, qy;
                source_at(vals, &dst, x, y, &qx, &qy);
                /* Farther than the footprint from every special pixel: the
                 * flat field, untouched. */
                double reach = 4 / fmin(cases[k][0], 1) + 1;
                bool far = true;
                static const int at[4][2] = {{20, 20}, {40, 20}, {60, 30}, {30, 40}};
                for (int s = 0; s < 4; s++)
                    if (fabs(qx - (at[s][0] + 0.5)) < reach && fabs(qy - (at[s][1] + 0.5)) < reach)
                        far = false;
                for (int c = 0; c < 4; c++) {
                    bad += !isfinite(px(&dst, x, y)[c]);
                    if (far)
                        moved += fabs(px(&dst, x, y)[c] - src.px[c]) > 1e-6 * fabs(src.px[c]);
                }
            }
        CHECKF(bad == 0, "case %zu: %zu non-finite values", k, bad);
        CHECKF(moved == 0, "case %zu: %zu values away from the specials changed", k, moved);
    }
    /* At a half-pixel pan the NaN's neighbours see a hole (it reads as 0),
     * not a NaN. */
    set_geometry(vals, 1, 0.5, 0, 0);
    run_cpu(vals, &src, &dst);
    CHECK(isfinite(px(&dst, 19, 20)[0]) && px(&dst, 19, 20)[0] < 0.4f);
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* Alpha goes through the same weights as colour. */
static void test_alpha(void)
{
    const int w = 64, h = 40;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, 3, -2, w, h), dst = make_image(w, h, 0, 0, 1, 1);
    srand(3);
    for (size_t i = 0; i < pfs_image_floats(&src); i += 4) {
        src.px[i] = src.px[i + 3] = (float)frand();
        src.px[i + 1] = src.px[i + 2] = (float)(4 * frand());
    }
    static const double cases[][4] = {{1.08, 0.3, 0, 0}, {0.7, 0, -1.5, 4}};
    for (size_t k = 0; k < 2; k++)
        for (int b = BORDER_BLACK; b <= BORDER_MIRROR; b++) {
            set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
            vals[P_BORDER][0] = b;
            run_cpu(vals, &src, &dst);
            size_t differ = 0;
            for (size_t i = 0; i < pfs_image_floats(&dst); i += 4)
                differ += bits_of(dst.px[i]) != bits_of(dst.px[i + 3]);
            CHECKF(differ == 0, "case %zu border %d: %zu", k, b, differ);
        }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* The same picture under two data windows gives the same output where
 * both cover the footprint: geometry follows display coordinates. */
static void test_data_window(void)
{
    const int w = 120, h = 80, cx0 = 20, cy0 = 10, cw = 70, ch = 50;
    pfs_pvec vals[P_COUNT];
    struct pfs_image big = make_image(w, h, 0, 0, w, h), crop = make_image(cw, ch, cx0, cy0, w, h);
    struct pfs_image obig = make_image(w, h, 0, 0, 1, 1), ocrop = make_image(cw, ch, 0, 0, 1, 1);
    srand(11);
    for (size_t i = 0; i < pfs_image_floats(&big); i++)
        big.px[i] = (float)(8 * frand() - 1);
    for (int y = 0; y < ch; y++)
        memcpy(px(&crop, 0, y), px(&big, cx0, cy0 + y), (size_t)cw * 4 * sizeof(float));
    static const double cases[][4] = {{1.08, 0, 0, 0}, {1.25, 3.5, -2.25, 0}, {1.1, 0, 0, 3}};
    for (size_t k = 0; k < 3; k++) {
        set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
        run_cpu(vals, &big, &obig);
        run_cpu(vals, &crop, &ocrop);
        size_t n = 0, differ = 0;
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++) {
                double qx, qy;
                source_at(vals, &ocrop, x, y, &qx, &qy);
                if (qx < cx0 + 5 || qx > cx0 + cw - 5 || qy < cy0 + 5 || qy > cy0 + ch - 5)
                    continue;
                n++;
                for (int c = 0; c < 4; c++)
                    differ += fabs(px(&ocrop, x, y)[c] - px(&obig, x + cx0, y + cy0)[c]) > 1e-6;
            }
        CHECKF(n > 500 && differ == 0, "case %zu: %zu of %zu pixels differ", k, differ, n);
    }
    pfs_image_free(&big);
    pfs_image_free(&crop);
    pfs_image_free(&obig);
    pfs_image_free(&ocrop);
}

/* A hot highlight: one pixel at 1000 on a 0.1 background, as a practical
 * light or a glint is in a scene-linear plate. */
static struct pfs_image highlight_plate(int w, int h)
{
    struct pfs_image img = make_image(w, h, 0, 0, w, h);
    fill(&img, 0.1f, 0.1f, 0.1f, 1.0f);
    float *p = px(&img, w / 2 - 1, h / 2 - 1);
    p[0] = p[1] = p[2] = 1000;
    return img;
}

/*
 * Lanczos's negative lobes next to the highlight undershoot by about a
 * tenth of it, far below black: a dark halo. With antiring 1 no value goes
 * below the local minimum (the background) or above the highlight, and
 * the highlight stays far above 1: the clamp is to the neighbourhood, not
 * to 0..1. Pushing in, rotated, and pulling out (where the lobe, and so
 * the neighbourhood, is wider).
 */
static void test_antiring_highlight(void)
{
    const int w = 64, h = 48;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = highlight_plate(w, h), dst = make_image(w, h, 0, 0, 1, 1);
    static const double cases[][4] = {
        {1.08, 0, 0, 0}, {1.08, 0.3, -0.2, 3}, {1.25, 0.4, 0.1, 0},
        {2, 0.25, 0.5, 0}, {0.5, 0, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int a = 0; a <= 1; a++) {
            set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
            vals[P_ANTIRING][0] = a;
            vals[P_BORDER][0] = BORDER_CLAMP; /* the background continues beyond the edge */
            run_cpu(vals, &src, &dst);
            float lo = INFINITY, hi = -INFINITY;
            size_t alpha = 0;
            for (size_t i = 0; i < pfs_image_floats(&dst); i++) {
                if (i % 4 == 3) {
                    alpha += dst.px[i] != 1.0f;
                    continue;
                }
                lo = fminf(lo, dst.px[i]);
                hi = fmaxf(hi, dst.px[i]);
            }
            if (k == 0 || k == 4)
                fprintf(stderr,
                        "  highlight 1000 on 0.1, scale %g antiring %d: min %.4g max %.4g\n",
                        cases[k][0], a, lo, hi);
            if (a) {
                CHECKF(lo >= 0.1f, "case %zu: undershoot to %.9g", k, lo);
                CHECKF(hi <= 1000.0f, "case %zu: overshoot to %.9g", k, hi);
                CHECKF(hi > 100.0f, "case %zu: the highlight lost: %g", k, hi);
                CHECKF(alpha == 0, "case %zu: %zu alpha values off 1", k, alpha);
            } else {
                /* Plain Lanczos rings below black by a good part of 100. */
                CHECKF(lo < -10.0f, "case %zu: no undershoot (min %g)", k, lo);
            }
        }
    pfs_image_free(&src);
    pfs_image_free(&dst);
}

/* Where the signal is smooth the filter does not ring, the output stays
 * inside its neighbourhood's range, and anti-ringing changes nothing: a
 * ramp comes out the same with antiring 0 and 1 (to within float), pushing
 * in, panned, rotated and pulling out, with both filters. */
static void test_antiring_smooth(void)
{
    static const double cases[][4] = {
        {1.08, 0, 0, 0}, {1.25, -11.5, 4.25, 0}, {2, 0.3, 0.7, 0},
        {0.5, 0, 0, 0},  {1.08, 0.3, -0.7, 3},   {0.7, 2, -1, -20},
    };
    const int w = 160, h = 100;
    pfs_pvec vals[P_COUNT];
    struct pfs_image src = make_image(w, h, -13, 7, 140, 120);
    struct pfs_image d0 = make_image(w, h, 0, 0, 1, 1), d1 = make_image(w, h, 0, 0, 1, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = px(&src, x, y);
            double X = src.origin_x + x + 0.5, Y = src.origin_y + y + 0.5;
            p[0] = (float)(1 + 0.125 * X - 0.0625 * Y);
            p[1] = (float)(0.5 * X);
            p[2] = (float)(-0.25 * Y);
            p[3] = 1;
        }
    double worst = 0;
    size_t changed = 0, n = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int f = 0; f < FILTER_COUNT; f++) {
            set_geometry(vals, cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
            vals[P_FILTER][0] = f;
            vals[P_ANTIRING][0] = 0;
            run_cpu(vals, &src, &d0);
            vals[P_ANTIRING][0] = 1;
            run_cpu(vals, &src, &d1);
            /* Pixels whose whole footprint lies inside the data window. */
            double margin = 1 + filter_radius[f] / fmin(cases[k][0], 1);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double qx, qy;
                    source_at(vals, &d0, x, y, &qx, &qy);
                    if (qx - src.origin_x < margin || qx - src.origin_x > w - margin ||
                        qy - src.origin_y < margin || qy - src.origin_y > h - margin)
                        continue;
                    n++;
                    for (int c = 0; c < 4; c++) {
                        double a = px(&d0, x, y)[c], b = px(&d1, x, y)[c];
                        worst = fmax(worst, fabs(a - b) / fmax(1, fabs(a)));
                        changed += a != b;
                    }
                }
        }
    fprintf(stderr, "  ramps: antiring 1 against 0: %zu of %zu values differ, by at most %.3g\n",
            changed, 4 * n, worst);
    CHECK(n > 10000);
    CHECKF(worst <= 1e-6, "%g", worst);
    pfs_image_free(&src);
    pfs_image_free(&d0);
    pfs_image_free(&d1);
}

/* The main lobe's taps: the two pixels either side of the sample when
 * pushing in (one when the sample is on a pixel), wider when pulling out. */
static void test_lobe_taps(void)
{
    pfs_pvec vals[P_COUNT];
    unsigned char ub[1024];
    struct reframe_uniforms *u = (struct reframe_uniforms *)ub;
    struct pfs_image img = make_image(4, 4, 0, 0, 4, 4);
    struct pfs_op_frame in = {.frame = &img};
    int lobe[2];
    set_geometry(vals, 1.08, 0, 0, 0);
    REQUIRE(op->prepare(vals, &in, u, NULL) == 0);
    CHECK(u->lobe == 1 && u->half == 3);
    lobe_taps(u, 0.3, lobe);
    CHECK(lobe[0] == u->half - 1 && lobe[1] == u->half); /* pixels i and i + 1 */
    lobe_taps(u, 0, lobe);
    CHECK(lobe[0] == u->half - 1 && lobe[1] == u->half - 1); /* on pixel i: i alone */
    lobe_taps(u, 0.999, lobe);
    CHECK(lobe[0] == u->half - 1 && lobe[1] == u->half);
    set_geometry(vals, 0.5, 0, 0, 0); /* lobe 2 px: 4 taps, 3 on a pixel */
    REQUIRE(op->prepare(vals, &in, u, NULL) == 0);
    CHECK(u->lobe == 2 && u->half == 6);
    lobe_taps(u, 0.3, lobe);
    CHECK(lobe[0] == u->half - 2 && lobe[1] == u->half + 1);
    lobe_taps(u, 0, lobe);
    CHECK(lobe[0] == u->half - 2 && lobe[1] == u->half);
    set_geometry(vals, 0.25, 0, 0, 0); /* the widest: 8 of lanczos4's 32 */
    vals[P_FILTER][0] = FILTER_LANCZOS4;
    REQUIRE(op->prepare(vals, &in, u, NULL) == 0);
    lobe_taps(u, 0.5, lobe);
    CHECK(lobe[0] == u->half - 4 && lobe[1] == u->half + 3 && lobe[1] < u->ntaps);
    pfs_image_free(&img);
}

static void test_advise_and_prepare(void)
{
    pfs_pvec vals[P_COUNT];
    char msg[512];
    defaults(vals);
    static const double quiet[] = {1, 1.08, 1.2, 0.5, 0.25};
    for (size_t i = 0; i < sizeof quiet / sizeof quiet[0]; i++) {
        vals[P_SCALE][0] = quiet[i];
        strcpy(msg, "stale");
        op->advise(vals, msg, sizeof msg);
        CHECKF(msg[0] == '\0', "scale %g: %s", quiet[i], msg);
    }
    vals[P_SCALE][0] = 1.35;
    op->advise(vals, msg, sizeof msg);
    fprintf(stderr, "  %s\n", msg);
    CHECK(strstr(msg, "reframe: a push-in of 1.35 (35 %)") == msg);
    CHECK(strstr(msg, "~20 %") != NULL && strstr(msg, "learned upscale") != NULL);
    vals[P_SCALE][0] = 1.21;
    op->advise(vals, msg, sizeof msg);
    CHECK(strstr(msg, "1.21 (21 %)") != NULL);

    unsigned char u[1024];
    struct pfs_image img = make_image(4, 4, 0, 0, 4, 4);
    struct pfs_op_frame in = {.frame = &img};
    defaults(vals);
    CHECK(op->prepare(vals, &in, u, NULL) == 0);
    CHECK(((struct reframe_uniforms *)u)->identity == 1);
    vals[P_SCALE][0] = 9;
    CHECK(op->prepare(vals, &in, u, NULL) == EINVAL);
    defaults(vals);
    vals[P_ROTATE][0] = 50;
    CHECK(op->prepare(vals, &in, u, NULL) == EINVAL);
    defaults(vals);
    vals[P_BORDER][0] = 3;
    CHECK(op->prepare(vals, &in, u, NULL) == EINVAL);
    defaults(vals);
    vals[P_ANTIRING][0] = 1.5;
    CHECK(op->prepare(vals, &in, u, NULL) == EINVAL);
    vals[P_ANTIRING][0] = -0.1;
    CHECK(op->prepare(vals, &in, u, NULL) == EINVAL);
    /* The default strength, and antiring is a setting of the shot like
     * the filter, not keyframed. */
    defaults(vals);
    CHECK(op->prepare(vals, &in, u, NULL) == 0 &&
          ((struct reframe_uniforms *)u)->antiring == REFRAME_ANTIRING_DEFAULT);
    CHECK(!op->params[P_ANTIRING].keyframable && op->params[P_ANTIRING].min == 0 &&
          op->params[P_ANTIRING].max == 1);
    defaults(vals);
    CHECK(op->prepare(vals, &(struct pfs_op_frame){0}, u, NULL) == EINVAL);
    /* Taps per axis: 6 and 8 at scale >= 1; the widest pull-out fits. */
    vals[P_SCALE][0] = 1.5;
    CHECK(op->prepare(vals, &in, u, NULL) == 0 && ((struct reframe_uniforms *)u)->ntaps == 6);
    vals[P_FILTER][0] = FILTER_LANCZOS4;
    CHECK(op->prepare(vals, &in, u, NULL) == 0 && ((struct reframe_uniforms *)u)->ntaps == 8);
    vals[P_SCALE][0] = 0.25;
    CHECK(op->prepare(vals, &in, u, NULL) == 0 &&
          ((struct reframe_uniforms *)u)->ntaps == REFRAME_MAX_TAPS);
    /* Integer positions weigh exactly 1 and 0. */
    CHECK(lanczos(0, 3) == 1 && lanczos(1, 3) == 0 && lanczos(-2, 3) == 0 && lanczos(3, 3) == 0);
    CHECK(fabs(lanczos(0.5, 3) - 0.6079271) < 1e-7);
    pfs_image_free(&img);
}

/* ---- OpenCL against C ---------------------------------------------------- */

struct cl_case {
    const char *name;
    double scale, dx, dy, rotate;
    int border, filter;
    int origin_x, origin_y;
};

static const struct cl_case cl_cases[] = {
    {"identity", 1, 0, 0, 0, BORDER_BLACK, FILTER_LANCZOS3, 0, 0},
    {"integer pan (5, -3)", 1, 5, -3, 0, BORDER_CLAMP, FILTER_LANCZOS3, -20, 13},
    {"scale 1.08", 1.08, 0, 0, 0, BORDER_BLACK, FILTER_LANCZOS3, 0, 0},
    {"scale 1.25, pan, clamp", 1.25, 12.3, -7.6, 0, BORDER_CLAMP, FILTER_LANCZOS3, 0, 0},
    {"scale 2, mirror, offset window", 2, -40.5, 20.25, 0, BORDER_MIRROR, FILTER_LANCZOS3, -20,
     13},
    {"scale 0.5, black", 0.5, 0, 0, 0, BORDER_BLACK, FILTER_LANCZOS3, 7, -3},
    {"scale 0.8, mirror, pan", 0.8, 100.7, -33.1, 0, BORDER_MIRROR, FILTER_LANCZOS3, 0, 0},
    {"scale 1.5, lanczos4", 1.5, 0.4, 0.6, 0, BORDER_BLACK, FILTER_LANCZOS4, 0, 0},
    {"scale 0.25, lanczos4, clamp", 0.25, 0, 0, 0, BORDER_CLAMP, FILTER_LANCZOS4, 0, 0},
    {"rotate 3, scale 1.08", 1.08, 0, 0, 3, BORDER_BLACK, FILTER_LANCZOS3, 0, 0},
    {"rotate -2.5, scale 0.8, mirror, pan", 0.8, -15.25, 9.5, -2.5, BORDER_MIRROR,
     FILTER_LANCZOS3, -20, 13},
    {"rotate 1, scale 1.25, clamp", 1.25, 3, 4, 1, BORDER_CLAMP, FILTER_LANCZOS3, 7, -3},
    {"rotate 45, scale 0.25, lanczos4", 0.25, 0, 0, 45, BORDER_CLAMP, FILTER_LANCZOS4, 0, 0},
    {"rotate -12, scale 3, lanczos4, mirror", 3, 20, -10, -12, BORDER_MIRROR, FILTER_LANCZOS4,
     0, 0},
};

/* Runs the op on the device: upload, run_cl, download, as the engine does. */
static int run_device(struct pfs_cl *cl, const void *u, const struct pfs_image *src,
                      struct pfs_image *got, double *ms)
{
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_cl_image dsrc, ddst;
    REQUIRE(pfs_cl_image_create(cl, src, &dsrc, &err) == 0);
    REQUIRE(pfs_cl_image_create(cl, src, &ddst, &err) == 0);
    const struct pfs_cl_image *srcs[1] = {&dsrc};
    struct pfs_op_cl_io io = {.frame = 1001, .src = srcs, .nsrc = 1, .dst = &ddst};
    pfs_cl_lock(cl);
    CHECK(pfs_cl_upload(cl, src, &dsrc, &err) == 0);
    double t0 = now_ms();
    int rc = op->run_cl(cl, u, &io, &err);
    CHECKF(rc == 0, "%s", err.msg);
    clFinish(pfs_cl_queue(cl));
    if (ms)
        *ms = now_ms() - t0;
    CHECK(pfs_cl_download(cl, &ddst, got, &err) == 0);
    pfs_cl_unlock(cl);
    pfs_cl_image_release(&dsrc);
    pfs_cl_image_release(&ddst);
    return rc;
}

static void cl_vals(const struct cl_case *k, double antiring, pfs_pvec *vals)
{
    set_geometry(vals, k->scale, k->dx, k->dy, k->rotate);
    vals[P_BORDER][0] = k->border;
    vals[P_FILTER][0] = k->filter;
    vals[P_ANTIRING][0] = antiring;
}

/* The highlight of test_antiring_highlight through the device, separable
 * and rotated, pushing in and pulling out: with antiring 1 it keeps the
 * same bounds as the reference, and matches it. */
static double cl_highlight(struct pfs_cl *cl)
{
    const int w = 96, h = 64;
    struct pfs_image src = highlight_plate(w, h), ref = make_image(w, h, 0, 0, w, h);
    struct pfs_image got = make_image(w, h, 0, 0, w, h);
    static const struct cl_case cases[] = {
        {"highlight, scale 1.08", 1.08, 0, 0, 0, BORDER_CLAMP, FILTER_LANCZOS3, 0, 0},
        {"highlight, scale 1.08, rotate 3", 1.08, 0.3, -0.2, 3, BORDER_CLAMP, FILTER_LANCZOS3, 0,
         0},
        {"highlight, scale 0.5", 0.5, 0.25, 0, 0, BORDER_CLAMP, FILTER_LANCZOS3, 0, 0},
        {"highlight, scale 0.7, rotate -5", 0.7, 0, 0.4, -5, BORDER_BLACK, FILTER_LANCZOS4, 0, 0},
    };
    double worst = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pfs_pvec vals[P_COUNT];
        cl_vals(&cases[c], 1, vals);
        unsigned char u[1024];
        REQUIRE(op->prepare(vals, &(struct pfs_op_frame){.frame = &src}, u, NULL) == 0);
        run_cpu(vals, &src, &ref);
        run_device(cl, u, &src, &got, NULL);
        struct cl_diff d = compare_to_reference(&ref, &got, false, cases[c].name);
        CHECKF(d.max_err <= op->cl_tolerance && d.bad_special == 0, "%s: %g", cases[c].name,
               d.max_err);
        worst = fmax(worst, d.max_err);
        float lo = INFINITY, hi = -INFINITY;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < 3; ch++) {
                    /* black beyond the edge: the background meets 0 there */
                    double qx, qy;
                    source_at(vals, &got, x, y, &qx, &qy);
                    if (cases[c].border == BORDER_BLACK &&
                        (qx < 8 || qx > w - 8 || qy < 8 || qy > h - 8))
                        continue;
                    lo = fminf(lo, px(&got, x, y)[ch]);
                    hi = fmaxf(hi, px(&got, x, y)[ch]);
                }
        CHECKF(lo >= 0.1f && hi <= 1000.0f && hi > 100.0f, "%s: device output %.9g .. %.9g",
               cases[c].name, lo, hi);
    }
    pfs_image_free(&src);
    pfs_image_free(&ref);
    pfs_image_free(&got);
    return worst;
}

static void test_cl_matches_c(void)
{
    struct pfs_cl *cl = open_test_device(op->cl_tolerance);
    if (!cl)
        return;
    pfs_error err;
    pfs_error_clear(&err);

    const int w = 640, h = 360;
    struct pfs_image src = make_image(w, h, 0, 0, w, h);
    struct pfs_image ref = make_image(w, h, 0, 0, w, h);
    struct pfs_image got = make_image(w, h, 0, 0, w, h);
    srand(1042);
    random_plate(&src);
    size_t n = pfs_image_floats(&src);
    double worst = 0;

    /* Every case with plain Lanczos, full anti-ringing and half of it. */
    static const double strengths[] = {0, 1, 0.5};
    const size_t ncases = sizeof cl_cases / sizeof cl_cases[0];
    for (size_t r = 0; r < 3 * ncases; r++) {
        size_t c = r % ncases;
        const struct cl_case *k = &cl_cases[c];
        double antiring = strengths[r / ncases];
        char name[96];
        snprintf(name, sizeof name, "%s, antiring %g", k->name, antiring);
        pfs_pvec vals[P_COUNT];
        cl_vals(k, antiring, vals);
        src.origin_x = k->origin_x;
        src.origin_y = k->origin_y;
        unsigned char u[1024];
        REQUIRE(op->prepare(vals, &(struct pfs_op_frame){.frame = &src}, u, &err) == 0);
        run_cpu(vals, &src, &ref);
        memset(got.px, 0, n * sizeof(float));
        run_device(cl, u, &src, &got, NULL);

        struct cl_diff diff = compare_to_reference(&ref, &got, false, name);
        double max_err = diff.max_err;
        size_t bad_special = diff.bad_special;
        CHECKF(max_err <= op->cl_tolerance, "%s: %g", name, max_err);
        CHECKF(bad_special == 0, "%s: %zu NaN/Inf mismatches", name, bad_special);
        if (c == 0)
            CHECK(memcmp(got.px, src.px, n * sizeof(float)) == 0); /* bit-exact copy */
        else if (k->scale == 1 && k->rotate == 0)
            CHECK(max_err == 0); /* an integer pan is exact on both paths */
        if (max_err > worst)
            worst = max_err;
    }
    worst = fmax(worst, cl_highlight(cl));
    fprintf(stderr, "  OpenCL vs C: worst max relative error %.3g (tolerance %g)\n", worst,
            op->cl_tolerance);
    pfs_image_free(&src);
    pfs_image_free(&ref);
    pfs_image_free(&got);

    /* Timings of a 1920x1080 frame (information, not a test). */
    struct pfs_image hd = make_image(1920, 1080, 0, 0, 1920, 1080);
    struct pfs_image hdo = make_image(1920, 1080, 0, 0, 1920, 1080);
    random_plate(&hd);
    static const double timed[][2] = {{1.08, 0}, {0.5, 0}, {1.08, 3}};
    for (size_t r = 0; r < 6; r++) {
        size_t i = r % 3;
        int antiring = r >= 3;
        pfs_pvec vals[P_COUNT];
        set_geometry(vals, timed[i][0], 0, 0, timed[i][1]);
        vals[P_ANTIRING][0] = antiring;
        unsigned char u[1024];
        REQUIRE(op->prepare(vals, &(struct pfs_op_frame){.frame = &hd}, u, &err) == 0);
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double ms;
            run_device(cl, u, &hd, &hdo, &ms);
            best = fmin(best, ms);
        }
        fprintf(stderr, "  1920x1080 scale %g rotate %g antiring %d: run_cl %.1f ms\n",
                timed[i][0], timed[i][1], antiring, best);
    }
    pfs_image_free(&hd);
    pfs_image_free(&hdo);
    pfs_cl_close(cl);
}

int main(void)
{
    REQUIRE(op->prepare && op->run_cpu && op->run_cl && op->advise);
    REQUIRE(op->uniforms_size == sizeof(struct reframe_uniforms));
    REQUIRE(op->kind == PFS_OP_GEOMETRY);
    RUN(test_identity_exact);
    RUN(test_integer_shift);
    RUN(test_flat_field);
    RUN(test_ramp);
    RUN(test_sinusoid);
    RUN(test_centroid);
    RUN(test_rotation_sign);
    RUN(test_borders);
    RUN(test_pull_out_antialias);
    RUN(test_nan_isolation);
    RUN(test_alpha);
    RUN(test_data_window);
    RUN(test_antiring_highlight);
    RUN(test_antiring_smooth);
    RUN(test_lobe_taps);
    RUN(test_advise_and_prepare);
    RUN(test_cl_matches_c);
    return CHECK_DONE();
}
