/*
 * test_fill.c - engine/fill: the membrane against the harmonic facts it must
 * honour (ramps reproduced, known pixels untouched), the spatial fill of
 * thin masks on the real sample frames against OpenCV's Telea inpainting,
 * an edge carried sharply across a wire, the blend's seam removal, and
 * grain: strength, correlation and channel correlation recovered from
 * synthetic grain of known statistics over real texture, exclusion, and
 * synthesis that depends only on (seed, absolute position).
 *
 * Telea runs in /usr/bin/python3 with python3-opencv (a declared test
 * dependency): its inpainting takes 8-bit images here, so both fills are
 * scored on the same footing: the sRGB encoding of the result, clipped to
 * 0..1 and quantised to 8 bits, against the unquantised sRGB of the
 * original, over the masked pixels only. Timings are printed, never
 * asserted.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/exr.h"
#include "engine/fill.h"
#include "tests/unit/check.h"
#include "tests/unit/testutil.h"

#define NFRAMES 8

static struct pfs_image frames[NFRAMES]; /* A001C003.1001 .. 1008, 640x360 */
static char tmpdir[256];

static void load_frames(void)
{
    const char *root = getenv("PFS_SOURCE_DIR");
    for (int i = 0; i < NFRAMES; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/samples/dailies/A001/A001C003.%d.exr", root ? root : ".",
                 1001 + i);
        struct pfs_exr_source *src = NULL;
        pfs_error err;
        pfs_error_clear(&err);
        int rc = pfs_exr_probe(path, &src, &err);
        if (!rc)
            rc = pfs_exr_decode(src, &frames[i], &err);
        if (rc)
            fprintf(stderr, "%s\n", err.msg);
        REQUIRE(rc == 0);
        pfs_exr_source_free(src);
    }
}

static float *dup_floats(const float *src, size_t n)
{
    float *p = malloc(n * sizeof *p);
    REQUIRE(p);
    memcpy(p, src, n * sizeof *p);
    return p;
}

static float *copy_px(const struct pfs_image *img)
{
    return dup_floats(img->px, pfs_image_floats(img));
}

/* Standard normal from rand(): Box-Muller, independent of fill.c's own. */
static double gauss(void)
{
    double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = rand() / (RAND_MAX + 1.0);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static double srgb(double v)
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return v <= 0.0031308 ? 12.92 * v : 1.055 * pow(v, 1 / 2.4) - 0.055;
}

static uint8_t srgb8(double v)
{
    return (uint8_t)lrint(srgb(v) * 255);
}

/* ---- masks ------------------------------------------------------------------- */

/* Pixels within half a width of the segment (ax, ay) - (bx, by). */
static void draw_line(uint8_t *m, int w, int h, double ax, double ay, double bx, double by,
                      double width)
{
    double dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double t = ((x - ax) * dx + (y - ay) * dy) / l2;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = ax + t * dx - x, ey = ay + t * dy - y;
            if (ex * ex + ey * ey <= width * width / 4)
                m[y * w + x] = 1;
        }
}

static void draw_curve(uint8_t *m, int w, int h, double cy, double width)
{
    /* y = cy + 60 sin(2 pi x / 320), as a chain of short segments. */
    double px = -10, py = cy + 60 * sin(2 * M_PI * -10 / 320.0);
    for (int s = 1; s <= (w + 20) / 10; s++) {
        double x = -10 + s * 10, y = cy + 60 * sin(2 * M_PI * x / 320);
        draw_line(m, w, h, px, py, x, y, width);
        px = x;
        py = y;
    }
}

static void draw_blobs(uint8_t *m, int w, int h)
{
    /* Small irregular objects: a disk with a bump, over grass, trunk, wall. */
    static const int at[][3] = {{90, 300, 9}, {200, 230, 7}, {140, 110, 8},
                                {470, 250, 10}, {560, 90, 7}, {380, 330, 8}};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double dx = x - at[i][0], dy = y - at[i][1], r = at[i][2];
                double bx = dx - 0.8 * r, by = dy + 0.3 * r;
                if (dx * dx + dy * dy <= r * r || bx * bx + by * by <= r * r / 4)
                    m[y * w + x] = 1;
            }
}

/* The Telea comparison's cases. Each puts several copies of its mask at
 * evenly spaced places, fixed in advance, so that a case's score is not
 * that of whatever one spot happens to lie under it. */
enum { NCASES = 7 };
static const char *const case_names[NCASES] = {
    "horizontal wires 4 px", "slanted wires 6 px (20 deg)", "steep wires 8 px (70 deg)",
    "diagonal wires 3 px",   "vertical wires 5 px",         "curved wires 5 px",
    "small blobs"};

static void draw_case(int k, uint8_t *m, int w, int h)
{
    double t20 = tan(20 * M_PI / 180), c70 = 1 / tan(70 * M_PI / 180);
    for (int i = 1; i <= 5; i += 2) { /* at 1/6, 3/6 and 5/6 of the frame */
        double fx = w * i / 6.0, fy = h * i / 6.0;
        switch (k) {
        case 0:
            draw_line(m, w, h, -5, fy + 0.3, w + 5, fy + 0.3, 4);
            break;
        case 1:
            draw_line(m, w, h, -5, fy - w / 2 * t20, w + 5, fy + w / 2 * t20, 6);
            break;
        case 2:
            draw_line(m, w, h, fx - h / 2 * c70, -5, fx + h / 2 * c70, h + 5, 8);
            break;
        case 3:
            draw_line(m, w, h, fx - h / 2, -5, fx + h / 2, h + 5, 3);
            break;
        case 4:
            draw_line(m, w, h, fx + 0.5, -5, fx + 0.5, h + 5, 5);
            break;
        case 5:
            if (i < 5)
                draw_curve(m, w, h, i == 1 ? 100 : 260, 5);
            break;
        default:
            draw_blobs(m, w, h);
            return;
        }
    }
}

/* ---- membrane ---------------------------------------------------------------- */

static void ramp(float *d, int nch, int w, int h, int stride)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < nch; c++)
                d[(size_t)y * stride + (size_t)x * nch + c] =
                    (float)(0.1 * (c + 1) + 0.013 * x * (c % 2 ? -1 : 1) + 0.007 * y * (c + 1));
}

static double ramp_error(int nch, int w, int h, const uint8_t *known, double *ms)
{
    int stride = w * nch + 3; /* padded rows */
    float *d = malloc((size_t)stride * h * sizeof *d);
    float *ref = malloc((size_t)stride * h * sizeof *ref);
    REQUIRE(d && ref);
    ramp(ref, nch, w, h, stride);
    for (size_t i = 0; i < (size_t)stride * h; i++)
        d[i] = ref[i];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (!known[y * w + x])
                for (int c = 0; c < nch; c++)
                    d[(size_t)y * stride + (size_t)x * nch + c] = 1e3f; /* garbage to overwrite */
    double t0 = now_ms();
    CHECK(pfs_fill_membrane(d, nch, w, h, stride, known) == 0);
    *ms = now_ms() - t0;
    double err = 0;
    size_t changed_known = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < nch; c++) {
                size_t i = (size_t)y * stride + (size_t)x * nch + c;
                if (known[y * w + x])
                    changed_known += memcmp(&d[i], &ref[i], sizeof(float)) != 0;
                else
                    err = fmax(err, fabs(d[i] - ref[i]));
            }
    CHECK(changed_known == 0);
    free(d);
    free(ref);
    return err;
}

static void test_membrane_ramp(void)
{
    /* A rectangle and a disk touching it, in 1 to 4 channels. */
    const int w = 96, h = 72;
    uint8_t *known = malloc(w * h);
    REQUIRE(known);
    memset(known, 1, w * h);
    for (int y = 20; y < 40; y++)
        for (int x = 15; x < 45; x++)
            known[y * w + x] = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if ((x - 60) * (x - 60) + (y - 45) * (y - 45) < 15 * 15)
                known[y * w + x] = 0;
    double ms;
    for (int nch = 1; nch <= 4; nch++) {
        double e = ramp_error(nch, w, h, known, &ms);
        fprintf(stderr, "  membrane ramp, %d channel(s), %dx%d holes: max error %.2g\n", nch, w,
                h, e);
        CHECKF(e < 1e-3, "nch %d: %g", nch, e);
    }

    /* 200x200: the slowest case the push-pull has to help. */
    const int W = 400, H = 360;
    uint8_t *k2 = malloc(W * H);
    REQUIRE(k2);
    memset(k2, 1, W * H);
    for (int y = 80; y < 280; y++)
        for (int x = 100; x < 300; x++)
            k2[y * W + x] = 0;
    double e = ramp_error(3, W, H, k2, &ms);
    fprintf(stderr, "  membrane ramp, 200x200 hole: max error %.2g, %.1f ms\n", e, ms);
    CHECK(e < 1e-3);

    /* Nothing known: EINVAL; nothing unknown: nothing to do. */
    float d[12] = {0};
    uint8_t none[4] = {0}, all[4] = {1, 1, 1, 1};
    CHECK(pfs_fill_membrane(d, 3, 2, 2, 6, none) == EINVAL);
    CHECK(pfs_fill_membrane(d, 3, 2, 2, 6, all) == 0);
    /* A NaN among the known values next to a hole is neither spread nor
     * changed. */
    {
        const int nw = 12, nh = 10;
        float nan_img[12 * 10];
        uint8_t nk[12 * 10];
        for (int i = 0; i < nw * nh; i++) {
            nan_img[i] = (float)(i % nw) * 0.1f;
            nk[i] = !(i / nw >= 3 && i / nw < 7 && i % nw >= 3 && i % nw < 8);
        }
        nan_img[2 * nw + 5] = NAN;
        CHECK(pfs_fill_membrane(nan_img, 1, nw, nh, nw, nk) == 0);
        size_t bad = 0;
        for (int i = 0; i < nw * nh; i++)
            bad += i != 2 * nw + 5 && !isfinite(nan_img[i]);
        CHECK(bad == 0 && isnan(nan_img[2 * nw + 5]));
    }
    /* A single known value fills everything with it. */
    float one[2 * 3 * 2] = {0};
    uint8_t k1[6] = {0, 0, 0, 0, 1, 0};
    one[4 * 2] = 3;
    one[4 * 2 + 1] = -2;
    CHECK(pfs_fill_membrane(one, 2, 3, 2, 6, k1) == 0);
    for (int i = 0; i < 6; i++)
        CHECK(fabsf(one[2 * i] - 3) < 1e-5f && fabsf(one[2 * i + 1] + 2) < 1e-5f);
    free(known);
    free(k2);
}

/* A plate at 1920x1080: the sample frame enlarged 3x (bilinear). */
static float *plate_1080(void)
{
    const int W = 1920, H = 1080;
    const struct pfs_image *f = &frames[0];
    float *p = malloc((size_t)W * H * 4 * sizeof *p);
    REQUIRE(p);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double fx = (x + 0.5) / 3 - 0.5, fy = (y + 0.5) / 3 - 0.5;
            int x0 = (int)floor(fx), y0 = (int)floor(fy);
            double ax = fx - x0, ay = fy - y0;
            for (int c = 0; c < 4; c++) {
                double v = 0;
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < 2; i++) {
                        int X = x0 + i < 0 ? 0 : x0 + i >= f->width ? f->width - 1 : x0 + i;
                        int Y = y0 + j < 0 ? 0 : y0 + j >= f->height ? f->height - 1 : y0 + j;
                        v += (i ? ax : 1 - ax) * (j ? ay : 1 - ay) *
                             f->px[((size_t)Y * f->width + X) * 4 + c];
                    }
                p[((size_t)y * W + x) * 4 + c] = (float)v;
            }
        }
    return p;
}

static void test_timing_1080(void)
{
    const int W = 1920, H = 1080;
    float *plate = plate_1080(), *work = malloc((size_t)W * H * 4 * sizeof *work);
    uint8_t *hole = calloc((size_t)W * H, 1), *known = malloc((size_t)W * H);
    REQUIRE(work && hole && known);
    static const struct {
        const char *name;
        double ax, ay, bx, by;
    } wires[] = {{"horizontal", -10, 540, 1930, 540}, {"diagonal", -10, 100, 1930, 1000}};
    for (int k = 0; k < 2; k++) {
        memset(hole, 0, (size_t)W * H);
        draw_line(hole, W, H, wires[k].ax, wires[k].ay, wires[k].bx, wires[k].by, 6);
        for (size_t i = 0; i < (size_t)W * H; i++)
            known[i] = !hole[i];
        double best = 1e9, sbest = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            memcpy(work, plate, (size_t)W * H * 4 * sizeof *work);
            double t0 = now_ms();
            CHECK(pfs_fill_membrane(work, 4, W, H, W * 4, known) == 0);
            best = fmin(best, now_ms() - t0);
            memcpy(work, plate, (size_t)W * H * 4 * sizeof *work);
            t0 = now_ms();
            CHECK(pfs_fill_spatial(work, W, H, W * 4, hole) == 0);
            sbest = fmin(sbest, now_ms() - t0);
        }
        fprintf(stderr, "timing: 6 px %s wire across 1920x1080 RGBA: membrane %.2f ms, spatial "
                        "%.1f ms (best of 5)\n", wires[k].name, best, sbest);
    }
    free(plate);
    free(work);
    free(hole);
    free(known);
}

/* ---- spatial fill against Telea -------------------------------------------------- */

static bool have_cv2(void)
{
    return run("/usr/bin/python3 -c 'import cv2, numpy' >/dev/null 2>&1") == 0;
}

/* Telea's fill of every (frame, mask) pair in one Python run: inputs are
 * 8-bit sRGB RGB and the mask, raw; outputs come back the same way. */
static uint8_t **telea_all(uint8_t *const *masked, uint8_t *const *masks, int n, int w, int h)
{
    char script[1024];
    snprintf(script, sizeof script, "%s/telea.py", tmpdir);
    FILE *f = fopen(script, "w");
    REQUIRE(f);
    fputs("import sys, numpy as np, cv2\n"
          "d, w, h, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n"
          "for i in range(n):\n"
          "    img = np.fromfile('%s/in%d.raw' % (d, i), np.uint8).reshape(h, w, 3)\n"
          "    m = np.fromfile('%s/mask%d.raw' % (d, i), np.uint8).reshape(h, w)\n"
          "    cv2.inpaint(img, m, 5, cv2.INPAINT_TELEA).tofile('%s/out%d.raw' % (d, i))\n",
          f);
    fclose(f);
    for (int i = 0; i < n; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/in%d.raw", tmpdir, i);
        f = fopen(p, "wb");
        REQUIRE(f && fwrite(masked[i], 1, (size_t)w * h * 3, f) == (size_t)w * h * 3);
        fclose(f);
        snprintf(p, sizeof p, "%s/mask%d.raw", tmpdir, i);
        f = fopen(p, "wb");
        REQUIRE(f && fwrite(masks[i], 1, (size_t)w * h, f) == (size_t)w * h);
        fclose(f);
    }
    int rc = run("/usr/bin/python3 %s %s %d %d %d", script, tmpdir, w, h, n);
    CHECKF(rc == 0, "Telea (python3 + cv2) failed with status %d", rc);
    if (rc)
        return NULL;
    uint8_t **out = calloc((size_t)n, sizeof *out);
    REQUIRE(out);
    for (int i = 0; i < n; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/out%d.raw", tmpdir, i);
        out[i] = malloc((size_t)w * h * 3);
        f = fopen(p, "rb");
        REQUIRE(out[i] && f && fread(out[i], 1, (size_t)w * h * 3, f) == (size_t)w * h * 3);
        fclose(f);
    }
    return out;
}

static void test_spatial_vs_telea(void)
{
    if (!have_cv2()) {
        CHECKF(false, "/usr/bin/python3 cannot import cv2: install python3-opencv (a declared "
                      "test dependency, packaging/deps.sh) to compare with Telea");
        return;
    }
    const int w = frames[0].width, h = frames[0].height;
    uint8_t *cases[NCASES];
    for (int k = 0; k < NCASES; k++) {
        cases[k] = calloc((size_t)w * h, 1);
        REQUIRE(cases[k]);
        draw_case(k, cases[k], w, h);
    }

    /* Every case on every frame: inputs for Telea, then ours. */
    int n = NCASES * NFRAMES;
    uint8_t **in = calloc((size_t)n, sizeof *in), **masks = calloc((size_t)n, sizeof *masks);
    REQUIRE(in && masks);
    for (int i = 0; i < n; i++) {
        const struct pfs_image *f = &frames[i % NFRAMES];
        masks[i] = cases[i / NFRAMES];
        in[i] = malloc((size_t)w * h * 3);
        REQUIRE(in[i]);
        for (size_t p = 0; p < (size_t)w * h; p++)
            for (int c = 0; c < 3; c++)
                in[i][p * 3 + c] = masks[i][p] ? 0 : srgb8(f->px[p * 4 + c]);
    }
    uint8_t **telea = telea_all(in, masks, n, w, h);
    float *work = malloc((size_t)w * h * 4 * sizeof *work);
    REQUIRE(work);
    double total_ms = 0;
    size_t outside_changed = 0;
    for (int k = 0; k < NCASES && telea; k++) {
        double se_ours = 0, se_telea = 0;
        size_t count = 0;
        for (int fi = 0; fi < NFRAMES; fi++) {
            int i = k * NFRAMES + fi;
            const struct pfs_image *f = &frames[fi];
            memcpy(work, f->px, pfs_image_floats(f) * sizeof *work);
            for (size_t p = 0; p < (size_t)w * h; p++)
                if (masks[i][p])
                    for (int c = 0; c < 4; c++)
                        work[p * 4 + c] = NAN; /* the fill must not read under the mask */
            double t0 = now_ms();
            CHECK(pfs_fill_spatial(work, w, h, w * 4, masks[i]) == 0);
            total_ms += now_ms() - t0;
            for (size_t p = 0; p < (size_t)w * h; p++) {
                if (!masks[i][p]) {
                    outside_changed += memcmp(&work[p * 4], &f->px[p * 4], 16) != 0;
                    continue;
                }
                for (int c = 0; c < 3; c++) {
                    double ref = srgb(f->px[p * 4 + c]);
                    double ours = srgb8(work[p * 4 + c]) / 255.0;
                    double tel = telea[i][p * 3 + c] / 255.0;
                    se_ours += (ours - ref) * (ours - ref);
                    se_telea += (tel - ref) * (tel - ref);
                    count++;
                }
            }
        }
        double p_ours = 10 * log10(count / se_ours), p_tel = 10 * log10(count / se_telea);
        fprintf(stderr, "  %-28s in-mask PSNR over %d frames: spatial %.2f dB, Telea %.2f dB "
                        "(%+.2f)\n", case_names[k], NFRAMES, p_ours, p_tel, p_ours - p_tel);
        CHECKF(p_ours > p_tel, "%s: %.2f dB is not better than Telea's %.2f dB", case_names[k],
               p_ours, p_tel);
    }
    CHECK(outside_changed == 0);
    if (telea)
        fprintf(stderr, "timing: spatial fill of the 640x360 cases: %.2f ms each on average\n",
                total_ms / n);
    for (int i = 0; i < n; i++) {
        free(in[i]);
        if (telea)
            free(telea[i]);
    }
    for (int k = 0; k < NCASES; k++)
        free(cases[k]);
    free(in);
    free(masks);
    free(telea);
    free(work);
}

/* Where a row's profile crosses a fraction f of the way from lo to hi, by
 * linear interpolation between pixels (the first crossing from the left). */
static double crossing(const float *row, int w, double lo, double hi, double f)
{
    double level = lo + f * (hi - lo);
    for (int x = 0; x + 1 < w; x++) {
        double a = row[4 * x], b = row[4 * (x + 1)];
        if (a < level && b >= level)
            return x + (level - a) / (b - a);
    }
    return -1;
}

/* An anti-aliased straight edge crossing a 6-pixel wire 30 degrees off the
 * wire's normal: in every row of the hole the fill puts the edge where it
 * was, as sharp as it was; the membrane smears it over many pixels. */
static void test_spatial_edge(void)
{
    const int w = 160, h = 100;
    float *ref = malloc((size_t)w * h * 4 * sizeof *ref);
    float *img[2] = {malloc((size_t)w * h * 4 * sizeof(float)),
                     malloc((size_t)w * h * 4 * sizeof(float))};
    uint8_t *hole = calloc((size_t)w * h, 1), *known = malloc((size_t)w * h);
    REQUIRE(ref && img[0] && img[1] && hole && known);
    const double lo = 0.05, hi = 0.6, ang = 30 * M_PI / 180;
    const double nx = cos(ang), ny = -sin(ang); /* the edge's normal; it runs through (80.3, 50) */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int in = 0;
            for (int j = 0; j < 8; j++)
                for (int i = 0; i < 8; i++) {
                    double sx = x - 0.5 + (i + 0.5) / 8, sy = y - 0.5 + (j + 0.5) / 8;
                    in += (sx - 80.3) * nx + (sy - 50) * ny > 0;
                }
            double v = lo + (hi - lo) * in / 64.0;
            float *p = &ref[((size_t)y * w + x) * 4];
            p[0] = (float)v;
            p[1] = (float)(0.8 * v);
            p[2] = (float)(0.5 * v + 0.02);
            p[3] = 1;
        }
    draw_line(hole, w, h, -5, 47.5, w + 5, 47.5, 6);
    for (size_t i = 0; i < (size_t)w * h; i++)
        known[i] = !hole[i];
    for (int k = 0; k < 2; k++)
        memcpy(img[k], ref, (size_t)w * h * 4 * sizeof(float));
    CHECK(pfs_fill_spatial(img[0], w, h, w * 4, hole) == 0);
    CHECK(pfs_fill_membrane(img[1], 4, w, h, w * 4, known) == 0);
    double pos[2] = {0}, width[2] = {0}, ref_width = 0, flat = 0;
    int rows = 0;
    for (int y = 0; y < h; y++) {
        if (!hole[y * w])
            continue;
        const float *r = &ref[(size_t)y * w * 4];
        double c50 = crossing(r, w, lo, hi, 0.5);
        ref_width = fmax(ref_width, crossing(r, w, lo, hi, 0.9) - crossing(r, w, lo, hi, 0.1));
        for (int k = 0; k < 2; k++) {
            const float *q = &img[k][(size_t)y * w * 4];
            pos[k] = fmax(pos[k], fabs(crossing(q, w, lo, hi, 0.5) - c50));
            width[k] = fmax(width[k], crossing(q, w, lo, hi, 0.9) - crossing(q, w, lo, hi, 0.1));
        }
        /* Away from the edge the plate is flat and so must the fill be. */
        for (int x = 0; x < w; x++)
            if (fabs(x - c50) > 2)
                flat = fmax(flat, fabs(img[0][((size_t)y * w + x) * 4] - r[4 * x]) / (hi - lo));
        rows++;
    }
    fprintf(stderr, "  edge across a wire (%d rows): 50%% crossing off by %.2f px (membrane %.2f), "
                    "10-90%% width %.2f px (plate %.2f, membrane %.2f); flat parts off by %.2g "
                    "of the step\n", rows, pos[0], pos[1], width[0], ref_width, width[1], flat);
    CHECK(rows == 6);
    CHECK(pos[0] < 0.25);
    CHECK(width[0] < ref_width + 1);
    CHECK(width[1] > 3 * ref_width);
    CHECK(flat < 0.01);
    free(ref);
    free(img[0]);
    free(img[1]);
    free(hole);
    free(known);
}

static void test_spatial_degenerate(void)
{
    /* Every pixel a hole: nothing to fill from. A hole at the frame's edge
     * and a one-pixel frame work. */
    float px[4 * 4] = {0};
    uint8_t all[4] = {1, 1, 1, 1};
    CHECK(pfs_fill_spatial(px, 2, 2, 8, all) == EINVAL);
    uint8_t corner[4] = {1, 0, 0, 0};
    for (int i = 4; i < 16; i++)
        px[i] = 0.5f;
    CHECK(pfs_fill_spatial(px, 2, 2, 8, corner) == 0);
    CHECK(fabsf(px[0] - 0.5f) < 1e-5f && fabsf(px[3] - 0.5f) < 1e-5f);
    uint8_t none[1] = {0};
    CHECK(pfs_fill_spatial(px, 1, 1, 4, none) == 0);

    /* A hole far wider than a ray reaches, over a ramp: the membrane in the
     * middle, crossings near the edge, a hand-over between; each of them
     * reproduces a ramp, so the whole fill must, seamlessly (up to the
     * crossings' end samples, which are taken from the known pixels only
     * and so sit up to half a pixel off the ray: 0.002 on this ramp). */
    const int w = 220, h = 200;
    float *img = malloc((size_t)w * h * 4 * sizeof *img);
    uint8_t *hole = calloc((size_t)w * h, 1);
    REQUIRE(img && hole);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = &img[((size_t)y * w + x) * 4];
            p[0] = 0.1f + 0.004f * x;
            p[1] = 0.2f + 0.003f * y;
            p[2] = 0.5f - 0.001f * x + 0.001f * y;
            p[3] = 1;
            if (abs(x - 110) < 80 && abs(y - 100) < 80)
                hole[(size_t)y * w + x] = 1;
        }
    float *ref = dup_floats(img, (size_t)w * h * 4);
    CHECK(pfs_fill_spatial(img, w, h, w * 4, hole) == 0);
    double err = 0;
    for (size_t i = 0; i < (size_t)w * h * 4; i++)
        err = fmax(err, fabs(img[i] - ref[i]));
    fprintf(stderr, "  spatial fill of a 159x159 hole in a ramp: max error %.2g\n", err);
    CHECK(err < 2e-3);
    free(img);
    free(ref);
    free(hole);
}

/* ---- blend --------------------------------------------------------------------------- */

static void test_blend(void)
{
    const struct pfs_image *src = &frames[2], *other = &frames[6];
    const int w = src->width, h = src->height, ring = 4;
    uint8_t *region = calloc((size_t)w * h, 1);
    REQUIRE(region);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if ((x - 300) * (x - 300) + (y - 180) * (y - 180) <= (40 + ring) * (40 + ring))
                region[y * w + x] = 1;
    /* A constant offset is exactly what the blend removes. */
    float *fill = copy_px(src);
    for (size_t p = 0; p < (size_t)w * h; p++)
        if (region[p])
            for (int c = 0; c < 3; c++)
                fill[p * 4 + c] += 0.1f;
    CHECK(pfs_fill_blend(src->px, fill, 4, w, h, w * 4, region) == 0);
    double e = 0;
    for (size_t i = 0; i < pfs_image_floats(src); i++)
        e = fmax(e, fabs(fill[i] - src->px[i]));
    fprintf(stderr, "  blend of a constant 0.1 offset: max difference from the plate %.2g\n", e);
    CHECK(e < 1e-4);
    free(fill);

    /* Another frame's texture with an offset: after the blend it meets the
     * plate at the region's edge, and what was added is smooth (harmonic:
     * its Laplacian vanishes inside). */
    fill = copy_px(src);
    float *before = copy_px(src);
    for (size_t p = 0; p < (size_t)w * h; p++)
        if (region[p])
            for (int c = 0; c < 4; c++)
                before[p * 4 + c] = fill[p * 4 + c] = other->px[p * 4 + c] + (c < 3 ? 0.1f : 0);
    double t0 = now_ms();
    CHECK(pfs_fill_blend(src->px, fill, 4, w, h, w * 4, region) == 0);
    double ms = now_ms() - t0;
    double seam = 0, lap = 0;
    size_t outside_changed = 0;
    for (int y = 1; y < h - 1; y++)
        for (int x = 1; x < w - 1; x++) {
            size_t p = (size_t)y * w + x;
            if (!region[p]) {
                outside_changed += memcmp(&fill[p * 4], &before[p * 4], 16) != 0;
                continue;
            }
            bool edge = !region[p - 1] || !region[p + 1] || !region[p - w] || !region[p + w];
            for (int c = 0; c < 3; c++) {
                if (edge) {
                    seam = fmax(seam, fabs(fill[p * 4 + c] - src->px[p * 4 + c]));
                    continue;
                }
                double d[5];
                size_t q[5] = {p, p - 1, p + 1, p - w, p + w};
                for (int k = 0; k < 5; k++)
                    d[k] = fill[q[k] * 4 + c] - before[q[k] * 4 + c];
                lap = fmax(lap, fabs(d[1] + d[2] + d[3] + d[4] - 4 * d[0]));
            }
        }
    fprintf(stderr, "  blend of another frame's texture: seam %.2g, max |Laplacian| of the "
                    "correction %.2g, %.2f ms\n", seam, lap, ms);
    CHECK(seam < 1e-5);
    CHECK(lap < 1e-4);
    CHECK(outside_changed == 0);
    free(fill);
    free(before);
    free(region);
}

/* ---- grain --------------------------------------------------------------------------- */

/* Known grain: sigma per channel as a function of luma, white or shaped by
 * a 3x3 box (renormalised), channels sharing a part with correlation cc. */
struct grain_truth {
    double gain[3];
    bool box;
    double cc;
};

static double truth_sigma(const struct grain_truth *g, int c, double luma)
{
    /* Two strengths: a floor in the shadows, rising towards the highlights. */
    double l = luma < 0 ? 0 : luma;
    return g->gain[c] * (0.004 + 0.025 * sqrt(l));
}

/* The test plate: a smooth, tinted gradient whose luma runs from about 0.01
 * to 1 across the frame, with real texture (frame 1001) in three areas
 * that must not be mistaken for grain. */
static float *grain_plate(void)
{
    const struct pfs_image *f = &frames[0];
    const int w = f->width, h = f->height;
    float *p = malloc((size_t)w * h * 4 * sizeof *p);
    REQUIRE(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *q = &p[((size_t)y * w + x) * 4];
            bool textured = (x >= 64 && x < 224 && y >= 32 && y < 192) ||
                            (x >= 352 && x < 544 && y >= 224 && y < 352) ||
                            (x >= 448 && x < 640 && y >= 0 && y < 96);
            if (textured) {
                memcpy(q, &f->px[((size_t)y * w + x) * 4], 16);
                continue;
            }
            double l = 0.01 * pow(100, (double)x / (w - 1)) * (1 + 0.3 * sin(y / 40.0));
            q[0] = (float)(l * 1.1);
            q[1] = (float)(l * 0.98);
            q[2] = (float)(l * 0.9);
            q[3] = 1;
        }
    return p;
}

static void add_grain(float *p, int w, int h, const struct grain_truth *g, unsigned seed)
{
    srand(seed);
    size_t n = (size_t)w * h;
    float *z = malloc(n * 4 * sizeof *z), *s = malloc(n * 4 * sizeof *s);
    REQUIRE(z && s);
    for (size_t i = 0; i < n * 4; i++)
        z[i] = (float)gauss();
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 4; c++) {
                double v = 0;
                if (g->box) {
                    for (int j = -1; j <= 1; j++)
                        for (int i = -1; i <= 1; i++) {
                            int X = (x + i + w) % w, Y = (y + j + h) % h;
                            v += z[((size_t)Y * w + X) * 4 + c];
                        }
                    v /= 3;
                } else {
                    v = z[((size_t)y * w + x) * 4 + c];
                }
                s[((size_t)y * w + x) * 4 + c] = (float)v;
            }
    for (size_t i = 0; i < n; i++) {
        float *q = &p[i * 4];
        double l = 0.2126 * q[0] + 0.7152 * q[1] + 0.0722 * q[2];
        for (int c = 0; c < 3; c++) {
            double nz = sqrt(1 - g->cc) * s[i * 4 + c] + sqrt(g->cc) * s[i * 4 + 3];
            q[c] += (float)(truth_sigma(g, c, l) * nz);
        }
    }
    free(z);
    free(s);
}

/* The model's autocorrelation at lag (1, 0): what the kernel's output has. */
static double model_lag1(const struct pfs_grain_model *m)
{
    double s = 0;
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 4; x++)
            s += (double)m->kernel[y][x] * m->kernel[y][x + 1];
    return s;
}

static double sigma_of(const struct pfs_grain_model *m, int c, double luma)
{
    double l = log(fmax(luma, 1e-4));
    if (l <= log(m->level[0]))
        return m->sigma[c][0];
    for (int j = 0; j + 1 < m->nbins; j++) {
        double a = log(m->level[j]), b = log(m->level[j + 1]);
        if (l < b)
            return m->sigma[c][j] + (m->sigma[c][j + 1] - m->sigma[c][j]) * (l - a) / (b - a);
    }
    return m->sigma[c][m->nbins - 1];
}

/* Worst relative error of the model's sigma against the truth at the
 * model's levels (which span the kept blocks' brightness). */
static double sigma_error(const struct pfs_grain_model *m, const struct grain_truth *g)
{
    double worst = 0;
    for (int j = 0; j < m->nbins; j++)
        for (int c = 0; c < 3; c++) {
            double t = truth_sigma(g, c, m->level[j]);
            worst = fmax(worst, fabs(m->sigma[c][j] - t) / t);
        }
    return worst;
}

static void test_grain_estimate(void)
{
    const int w = frames[0].width, h = frames[0].height;
    float *clean = grain_plate();
    struct pfs_grain_model m;
    CHECK(pfs_grain_estimate(clean, w, h, w * 4, NULL, &m) == 0);
    fprintf(stderr, "  clean plate (no grain in the gradient): %d blocks, sigma G at %.3g: %.2g\n",
            m.blocks, m.nbins ? m.level[m.nbins / 2] : 0, m.nbins ? m.sigma[1][m.nbins / 2] : 0);
    CHECK(m.nbins == 0 || m.sigma[1][m.nbins / 2] < 1e-3);
    /* The sample frame itself: textured everywhere (grass, leaves), its
     * noise that of a compressed video; printed, for the record. */
    CHECK(pfs_grain_estimate(frames[0].px, w, h, w * 4, NULL, &m) == 0);
    if (m.nbins)
        fprintf(stderr, "  frame 1001 as it is: %d blocks, sigma G %.3g at luma %.3g .. %.3g at "
                        "%.3g, lag-1 corr %.2f\n", m.blocks, m.sigma[1][0], m.level[0],
                m.sigma[1][m.nbins - 1], m.level[m.nbins - 1], model_lag1(&m));

    static const struct grain_truth truths[] = {
        {{1.0, 0.8, 1.3}, false, 0.0},
        {{1.0, 0.8, 1.3}, true, 0.0},
        {{0.9, 1.0, 1.4}, true, 0.5},
        {{1.2, 1.0, 0.7}, false, 0.3},
    };
    for (size_t k = 0; k < sizeof truths / sizeof truths[0]; k++) {
        const struct grain_truth *g = &truths[k];
        float *p = grain_plate();
        add_grain(p, w, h, g, 100 + (unsigned)k);
        double t0 = now_ms();
        CHECK(pfs_grain_estimate(p, w, h, w * 4, NULL, &m) == 0);
        double ms = now_ms() - t0;
        double err = sigma_error(&m, g), lag1 = model_lag1(&m);
        fprintf(stderr, "  grain %s, channel corr %.1f: %d blocks, levels %.3g..%.3g, worst "
                        "sigma error %.1f %%, lag-1 corr %.3f (true %.3f), channel corr %.2f, "
                        "%.1f ms\n", g->box ? "3x3-correlated" : "white", g->cc, m.blocks,
                m.level[0], m.level[m.nbins - 1], 100 * err, lag1, g->box ? 2 / 3.0 : 0,
                m.channel_corr, ms);
        for (int j = 0; j < m.nbins; j++)
            fprintf(stderr, "    level %.4f: sigma %.5f %.5f %.5f (true %.5f %.5f %.5f)\n",
                    m.level[j], m.sigma[0][j], m.sigma[1][j], m.sigma[2][j],
                    truth_sigma(g, 0, m.level[j]), truth_sigma(g, 1, m.level[j]),
                    truth_sigma(g, 2, m.level[j]));
        CHECK(m.nbins == PFS_GRAIN_BINS);
        CHECK(m.blocks >= 40);
        /* The gradient spans luma 0.01 .. 1.3; the levels must cover most. */
        CHECK(m.level[0] < 0.03 && m.level[m.nbins - 1] > 0.5);
        CHECKF(err < 0.15, "sigma off by %.0f %%", 100 * err);
        CHECK(fabs(lag1 - (g->box ? 2 / 3.0 : 0)) < 0.05);
        CHECK(fabs(m.channel_corr - g->cc) < 0.05);
        double ss = 0;
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 5; x++)
                ss += (double)m.kernel[y][x] * m.kernel[y][x];
        CHECK(fabs(ss - 1) < 1e-4);
        free(p);
    }
    free(clean);
}

/* A fill without grain in the middle of a grainy plate, excluded: the
 * estimate is the one of the plate, and excluded pixels are never read. */
static void test_grain_exclude(void)
{
    const int w = frames[0].width, h = frames[0].height;
    const struct grain_truth g = {{1.0, 0.8, 1.3}, false, 0.0};
    float *p = grain_plate();
    add_grain(p, w, h, &g, 7);
    float *clean = grain_plate();
    uint8_t *ex = calloc((size_t)w * h, 1);
    REQUIRE(ex);
    /* Grainless fills across the whole brightness range, 40 px high. */
    for (int y = 260; y < 300; y++)
        for (int x = 0; x < 352; x++) {
            ex[(size_t)y * w + x] = 1;
            memcpy(&p[((size_t)y * w + x) * 4], &clean[((size_t)y * w + x) * 4], 16);
        }
    for (int y = 100; y < 140; y++)
        for (int x = 224; x < 640; x++) {
            ex[(size_t)y * w + x] = 1;
            memcpy(&p[((size_t)y * w + x) * 4], &clean[((size_t)y * w + x) * 4], 16);
        }
    struct pfs_grain_model with, without, garbage;
    CHECK(pfs_grain_estimate(p, w, h, w * 4, ex, &with) == 0);
    CHECK(pfs_grain_estimate(p, w, h, w * 4, NULL, &without) == 0);
    for (size_t i = 0; i < (size_t)w * h; i++)
        if (ex[i])
            for (int c = 0; c < 4; c++)
                p[i * 4 + c] = c == 1 ? NAN : (float)(1e4 * gauss());
    CHECK(pfs_grain_estimate(p, w, h, w * 4, ex, &garbage) == 0);
    double e_with = sigma_error(&with, &g), e_without = sigma_error(&without, &g);
    fprintf(stderr, "  grainless fills excluded: worst sigma error %.1f %% (%d blocks); not "
                    "excluded: %.1f %% (%d blocks)\n", 100 * e_with, with.blocks,
            100 * e_without, without.blocks);
    CHECK(e_with < 0.15);
    CHECK(e_without > 0.5); /* what exclusion is for */
    CHECK(memcmp(&with, &garbage, sizeof with) == 0);
    free(p);
    free(clean);
    free(ex);
}

static void test_grain_apply(void)
{
    /* A model with two strengths and correlated grain, as estimate makes. */
    struct pfs_grain_model m = {.nbins = 2, .level = {0.05f, 0.5f},
                                .sigma = {{0.01f, 0.04f}, {0.008f, 0.03f}, {0.012f, 0.05f}},
                                .channel_corr = 0.4f, .blocks = 100};
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            m.kernel[y][x] = abs(x - 2) <= 1 && abs(y - 2) <= 1 ? 1 / 3.0f : 0;
    const int w = 256, h = 192;
    float *base = malloc((size_t)w * h * 4 * sizeof *base);
    float *amount = malloc((size_t)w * h * sizeof *amount);
    REQUIRE(base && amount);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float v = x < w / 2 ? 0.05f : 0.5f;
            float *q = &base[((size_t)y * w + x) * 4];
            q[0] = q[1] = q[2] = v;
            q[3] = 1;
            amount[(size_t)y * w + x] = 1;
        }
    float *a = dup_floats(base, (size_t)w * h * 4);
    float *b = dup_floats(base, (size_t)w * h * 4);
    double t0 = now_ms();
    pfs_grain_apply(&m, 42, a, w, h, w * 4, 0, 0, amount);
    double ms = now_ms() - t0;
    pfs_grain_apply(&m, 42, b, w, h, w * 4, 0, 0, amount);
    CHECK(memcmp(a, b, (size_t)w * h * 16) == 0);
    memcpy(b, base, (size_t)w * h * 16);
    pfs_grain_apply(&m, 43, b, w, h, w * 4, 0, 0, amount);
    size_t same = 0;
    for (size_t i = 0; i < (size_t)w * h * 4; i++)
        same += i % 4 != 3 && a[i] == b[i];
    CHECK(same < (size_t)w * h / 100);
    fprintf(stderr, "timing: grain on 256x192: %.2f ms\n", ms);

    /* What was added has the model's statistics. */
    double s2[2][3] = {{0}}, c01 = 0, lag = 0, v1 = 0;
    size_t n[2] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x + 1 < w; x++) {
            size_t i = (size_t)y * w + x;
            int side = x >= w / 2;
            double d[3];
            for (int c = 0; c < 3; c++) {
                d[c] = a[i * 4 + c] - base[i * 4 + c];
                s2[side][c] += d[c] * d[c];
            }
            n[side]++;
            double dn = (a[(i + 1) * 4 + 1] - base[(i + 1) * 4 + 1]);
            if (x + 1 != w / 2) {
                c01 += d[0] * d[1] / (m.sigma[0][side] * m.sigma[1][side]);
                lag += d[1] * dn / (m.sigma[1][side] * m.sigma[1][side]);
                v1 += 1;
            }
        }
    for (int side = 0; side < 2; side++)
        for (int c = 0; c < 3; c++) {
            double s = sqrt(s2[side][c] / n[side]);
            CHECKF(fabs(s / m.sigma[c][side] - 1) < 0.1, "side %d ch %d: %g vs %g", side, c, s,
                   m.sigma[c][side]);
        }
    CHECK(fabs(c01 / v1 - 0.4) < 0.1);
    CHECK(fabs(lag / v1 - 2 / 3.0) < 0.1);
    /* Alpha is never touched. */
    for (size_t i = 3; i < (size_t)w * h * 4; i += 4)
        CHECK(a[i] == 1);

    /* A sub-rectangle at a negative origin, with some pixels not to
     * touch, gets exactly the same grain as the whole frame around it. */
    const int ox = -37, oy = -21, sx = 53, sy = 29, sw = 91, sh = 77;
    float *full = dup_floats(base, (size_t)w * h * 4);
    pfs_grain_apply(&m, 7, full, w, h, w * 4, ox, oy, amount);
    float *sub = malloc((size_t)sw * sh * 4 * sizeof *sub);
    float *sam = malloc((size_t)sw * sh * sizeof *sam);
    REQUIRE(sub && sam);
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++) {
            memcpy(&sub[((size_t)y * sw + x) * 4], &base[((size_t)(y + sy) * w + x + sx) * 4], 16);
            sam[(size_t)y * sw + x] = (x * 7 + y * 3) % 5 ? 1 : 0;
        }
    int stride = sw * 4;
    pfs_grain_apply(&m, 7, sub, sw, sh, stride, ox + sx, oy + sy, sam);
    size_t diff = 0, untouched = 0;
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++) {
            const float *s = &sub[((size_t)y * sw + x) * 4];
            const float *f = &full[((size_t)(y + sy) * w + x + sx) * 4];
            const float *o = &base[((size_t)(y + sy) * w + x + sx) * 4];
            if (sam[(size_t)y * sw + x] > 0)
                diff += memcmp(s, f, 16) != 0;
            else
                untouched += memcmp(s, o, 16) == 0;
        }
    CHECK(diff == 0);
    size_t zeros = 0;
    for (size_t i = 0; i < (size_t)sw * sh; i++)
        zeros += !(sam[i] > 0);
    CHECK(untouched == zeros);

    /* amount scales the variance. */
    for (size_t i = 0; i < (size_t)w * h; i++)
        amount[i] = 0.25f;
    float *q = dup_floats(base, (size_t)w * h * 4);
    pfs_grain_apply(&m, 42, q, w, h, w * 4, 0, 0, amount);
    double r = 0;
    size_t nr = 0;
    for (size_t i = 0; i < (size_t)w * h * 4; i++)
        if (i % 4 != 3 && a[i] != base[i]) {
            r += (q[i] - base[i]) / (a[i] - base[i]);
            nr++;
        }
    CHECK(fabs(r / nr - 0.5) < 1e-3);

    /* No model, no grain. */
    struct pfs_grain_model none = {0};
    memcpy(q, base, (size_t)w * h * 16);
    pfs_grain_apply(&none, 1, q, w, h, w * 4, 0, 0, amount);
    CHECK(memcmp(q, base, (size_t)w * h * 16) == 0);

    /* Round trip: grain made by apply is what estimate finds. */
    float *plate = grain_plate();
    const int W = frames[0].width, H = frames[0].height;
    float *am = malloc((size_t)W * H * sizeof *am);
    REQUIRE(am);
    for (size_t i = 0; i < (size_t)W * H; i++)
        am[i] = 1;
    struct pfs_grain_model mm = m;
    mm.level[0] = 0.01f;
    mm.level[1] = 1.0f;
    mm.sigma[0][0] = 0.004f;
    mm.sigma[0][1] = 0.03f;
    mm.sigma[1][0] = 0.003f;
    mm.sigma[1][1] = 0.025f;
    mm.sigma[2][0] = 0.005f;
    mm.sigma[2][1] = 0.035f;
    pfs_grain_apply(&mm, 9, plate, W, H, W * 4, 0, 0, am);
    struct pfs_grain_model est;
    CHECK(pfs_grain_estimate(plate, W, H, W * 4, NULL, &est) == 0);
    double worst = 0;
    for (int j = 0; j < est.nbins; j++)
        for (int c = 0; c < 3; c++) {
            double t = sigma_of(&mm, c, est.level[j]);
            worst = fmax(worst, fabs(est.sigma[c][j] - t) / t);
        }
    fprintf(stderr, "  round trip through apply and estimate: worst sigma error %.1f %%, lag-1 "
                    "%.3f (model %.3f), channel corr %.2f (model %.2f)\n", 100 * worst,
            model_lag1(&est), model_lag1(&mm), est.channel_corr, mm.channel_corr);
    CHECK(worst < 0.15);
    CHECK(fabs(model_lag1(&est) - model_lag1(&mm)) < 0.05);
    CHECK(fabs(est.channel_corr - mm.channel_corr) < 0.05);
    free(plate);
    free(am);
    free(q);
    free(full);
    free(sub);
    free(sam);
    free(a);
    free(b);
    free(base);
    free(amount);
}

int main(void)
{
    load_frames();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pfs-test-fill-XXXXXX");
    REQUIRE(mkdtemp(tmpdir));

    RUN(test_membrane_ramp);
    RUN(test_spatial_edge);
    RUN(test_spatial_degenerate);
    RUN(test_spatial_vs_telea);
    RUN(test_blend);
    RUN(test_grain_estimate);
    RUN(test_grain_exclude);
    RUN(test_grain_apply);
    RUN(test_timing_1080);

    run("rm -rf '%s'", tmpdir);
    for (int i = 0; i < NFRAMES; i++)
        pfs_image_free(&frames[i]);
    return CHECK_DONE();
}
