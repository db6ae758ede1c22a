/*
 * test_remove.c - wire_remove and object_remove: their mattes, the promise
 * that pixels outside the matte are the source's bit for bit, the temporal
 * fill on real frames (static camera with a moving subject, and a camera
 * pan), that nothing is ever taken from another frame's hole, regrain,
 * determinism (runs, paths, thread counts), and the protect refusal of
 * `platefs check`.
 *
 * The window of neighbouring frames is the engine's own
 * (engine/engine_window.c): plates, holes from each frame's matte, flows
 * both ways between the rendered frame and each neighbour, the grain model.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cl/cl.h"
#include "engine/engine_refs.h"
#include "engine/engine_window.h"
#include "engine/exr.h"
#include "engine/fill.h"
#include "engine/flow.h"
#include "engine/op.h"
#include "rules/rules.h"
#include "tests/unit/check.h"
#include "tests/unit/optest.h"

extern const struct pfs_op_desc pfs_op_wire_remove;
extern const struct pfs_op_desc pfs_op_object_remove;

#define NFRAMES 8

static void load_frame(int frame, struct pfs_image *img)
{
    const char *root = getenv("PFS_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/samples/dailies/A001/A001C003.%d.exr", root ? root : ".",
             frame);
    struct pfs_exr_source *src = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_exr_probe(path, &src, &err);
    if (rc == 0)
        rc = pfs_exr_decode(src, img, &err);
    pfs_exr_source_free(src);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

/* ---- parameter values, laid out as the rules module lays them out ------- */

struct values {
    pfs_pvec v[64];
};

static const struct pfs_op_desc *wire = &pfs_op_wire_remove;
static const struct pfs_op_desc *object = &pfs_op_object_remove;

static void set_defaults(struct values *vals, const struct pfs_op_desc *d)
{
    memset(vals, 0, sizeof *vals);
    for (int i = 0; i < d->nparams; i++)
        memcpy(vals->v[i], d->params[i].def, sizeof vals->v[i]);
}

static void set(struct values *vals, const struct pfs_op_desc *d, const char *name, double v)
{
    int i = pfs_op_param_index(d, name);
    REQUIRE(i >= 0);
    vals->v[i][0] = v;
}

static void set_vec(struct values *vals, const struct pfs_op_desc *d, const char *name,
                    const double *v, int n)
{
    int i = pfs_op_param_index(d, name);
    REQUIRE(i >= 0);
    memcpy(vals->v[i], v, (size_t)n * sizeof *v);
}

/* Points go after the table, two per entry. */
static void set_points(struct values *vals, const struct pfs_op_desc *d, const char *name,
                       const double (*xy)[2], int n)
{
    int i = pfs_op_param_index(d, name);
    REQUIRE(i >= 0);
    vals->v[i][0] = n;
    vals->v[i][1] = d->nparams;
    double *dst = vals->v[d->nparams];
    memcpy(dst, xy, (size_t)n * 2 * sizeof(double));
}

/* A slanted wire across the frame whose x moves by dx per frame. */
static void wire_path(int frame, double dx, double (*xy)[2])
{
    double x = 250 + dx * (frame - 1001);
    xy[0][0] = x;
    xy[0][1] = -5;
    xy[1][0] = x + 40;
    xy[1][1] = 365;
}

static void wire_values(struct values *vals, int frame, double dx, double width)
{
    double xy[2][2];
    wire_path(frame, dx, xy);
    set_defaults(vals, wire);
    set_points(vals, wire, "path", (const double(*)[2])xy, 2);
    set(vals, wire, "width", width);
}

/* Composites a dark anti-aliased wire `width` wide along the path. */
static void draw_wire(struct pfs_image *img, const double (*xy)[2], double width, float value)
{
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            double cx = x + 0.5, cy = y + 0.5;
            double ax = xy[0][0], ay = xy[0][1], bx = xy[1][0], by = xy[1][1];
            double t = ((cx - ax) * (bx - ax) + (cy - ay) * (by - ay)) /
                       ((bx - ax) * (bx - ax) + (by - ay) * (by - ay));
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double d = hypot(ax + t * (bx - ax) - cx, ay + t * (by - ay) - cy);
            double c = 0.5 * width + 0.5 - d; /* one pixel of anti-aliasing */
            c = c < 0 ? 0 : c > 1 ? 1 : c;
            float *p = px(img, x, y);
            for (int ch = 0; ch < 3; ch++)
                p[ch] = (float)((1 - c) * p[ch] + c * value);
        }
}

/* ---- the window, built by the engine's own code ------------------------- */

/* The engine's window (engine/engine_window.h) over plates the test made:
 * decoded plates come from the arrays, holes from each frame's values, flows
 * from the CPU reference (or the device when cl is given). */
struct window {
    struct pfs_op_frames *pub;
    struct window_env env;
    struct window_plate plate[NFRAMES];
    struct pfs_frame_ops ops[NFRAMES];
    struct pfs_resolved_op op[NFRAMES];
    char text[NFRAMES][64];
    char key[NFRAMES][64];
    struct pfs_image *src;
};

static int window_decode(void *ud, int i, struct pfs_image *img, pfs_error *err)
{
    struct window *w = ud;
    (void)err;
    return pfs_image_copy(img, &w->src[i]);
}

static void window_build(struct window *w, struct pfs_image *plates, struct values *vals,
                         const struct pfs_op_desc *d, int n, int current, struct pfs_cl *cl)
{
    static int generation; /* keys name this build's plates only */
    generation++;
    memset(w, 0, sizeof *w);
    w->src = plates;
    w->env = (struct window_env){.plates = ref_cache_new(1u << 30), .flows = ref_cache_new(1u << 28),
                                 .cl = cl, .decode = window_decode, .decode_ud = w,
                                 .relpath = "test"};
    REQUIRE(w->env.plates && w->env.flows);
    for (int i = 0; i < n; i++) {
        snprintf(w->key[i], sizeof w->key[i], "test|%d|%d", generation, i);
        snprintf(w->text[i], sizeof w->text[i], "%s %d %d", d->name, generation, i);
        w->op[i] = (struct pfs_resolved_op){.desc = d, .vals = vals[i].v, .text = w->text[i],
                                            .index = 0, .in_range = true};
        w->ops[i] = (struct pfs_frame_ops){.nops = 1, .ops = &w->op[i]};
        w->plate[i] = (struct window_plate){1001 + i, w->key[i], &w->ops[i]};
    }
    pfs_error err;
    pfs_error_clear(&err);
    int rc = window_open(&w->env, w->plate, n, current, n, 0x5eed, &w->pub, &err);
    CHECKF(rc == 0, "%s", err.msg);
    REQUIRE(rc == 0);
}

static void window_free(struct window *w)
{
    window_close(&w->env, w->pub);
    ref_cache_free(w->env.plates);
    ref_cache_free(w->env.flows);
}

/* ---- running the op -------------------------------------------------------- */

static void run_op(const struct pfs_op_desc *d, const struct values *vals,
                   const struct pfs_image *in, const struct pfs_op_frames *frames,
                   struct pfs_image *out)
{
    *out = *in;
    out->px = NULL;
    REQUIRE(pfs_image_alloc(out, in->width, in->height) == 0);
    unsigned char uniforms[65536];
    REQUIRE(d->uniforms_size <= sizeof uniforms);
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_op_frame f = {.frame = in, .reference_frame = -1};
    REQUIRE(d->prepare(vals->v, &f, uniforms, &err) == 0);
    const struct pfs_image *src[1] = {in};
    struct pfs_op_io io = {.frame = 1001, .src = src, .nsrc = 1, .dst = out, .frames = frames};
    int rc = d->run_cpu(uniforms, &io, &err);
    CHECKF(rc == 0, "%s", err.msg);
}

static double srgb(double v)
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return v <= 0.0031308 ? 12.92 * v : 1.055 * pow(v, 1 / 2.4) - 0.055;
}

/* PSNR of RGB inside the hole (matte > 0), on sRGB-encoded values. */
static double psnr_in(const struct pfs_image *a, const struct pfs_image *b,
                      const unsigned char *hole)
{
    double se = 0;
    size_t n = 0;
    for (size_t i = 0; i < (size_t)a->width * (size_t)a->height; i++) {
        if (!hole[i])
            continue;
        for (int c = 0; c < 3; c++) {
            double e = srgb(a->px[4 * i + c]) - srgb(b->px[4 * i + c]);
            se += e * e;
        }
        n += 3;
    }
    return n ? 10 * log10(1.0 / (se / (double)n + 1e-12)) : INFINITY;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_matte(void)
{
    struct pfs_image geom = {.width = 200, .height = 100, .display = {0, 0, 199, 99}};
    float *cover = malloc(200 * 100 * sizeof *cover);
    REQUIRE(cover);
    pfs_error err;
    pfs_error_clear(&err);

    /* A horizontal wire at y = 50, 6 wide, dilate 1, feather 2: covered
     * to 4 px from its centre line, fading out by 6. */
    struct values v;
    set_defaults(&v, wire);
    double xy[2][2] = {{-10, 50}, {210, 50}};
    set_points(&v, wire, "path", (const double(*)[2])xy, 2);
    REQUIRE(wire->mask(v.v, &geom, cover, &err) == 0);
    CHECK(cover[50 * 200 + 100] == 1.0f);       /* centre y 50.5: 0.5 from the line */
    CHECK(cover[53 * 200 + 100] == 1.0f);       /* 3.5 */
    CHECK(cover[54 * 200 + 100] > 0.0f && cover[54 * 200 + 100] < 1.0f); /* 4.5: feather */
    CHECK(cover[55 * 200 + 100] < cover[54 * 200 + 100]);
    CHECK(cover[56 * 200 + 100] == 0.0f);       /* 6.5: beyond */
    CHECK(cover[40 * 200 + 100] == 0.0f);
    double box[4];
    REQUIRE(wire->extent(v.v, box));
    CHECK(box[1] <= 44 && box[3] >= 56 && box[0] <= -10 && box[2] >= 210);

    /* An ellipse [100, 50, 30, 20] without dilate or feather. */
    struct values o;
    set_defaults(&o, object);
    double e[4] = {100, 50, 30, 20};
    set_vec(&o, object, "shape.ellipse", e, 4);
    set(&o, object, "feather", 0);
    set(&o, object, "dilate", 0);
    REQUIRE(object->validate(o.v, &err) == 0);
    REQUIRE(object->mask(o.v, &geom, cover, &err) == 0);
    CHECK(cover[50 * 200 + 100] == 1.0f);
    CHECK(cover[50 * 200 + 128] == 1.0f);  /* 28.5 from the centre, inside */
    CHECK(cover[50 * 200 + 131] == 0.0f);  /* 31.5: outside */
    CHECK(cover[68 * 200 + 100] == 1.0f);
    CHECK(cover[72 * 200 + 100] == 0.0f);
    /* A concave polygon (a U): the notch is outside. */
    set_defaults(&o, object);
    double u[8][2] = {{20, 10}, {80, 10}, {80, 90}, {60, 90}, {60, 30}, {40, 30}, {40, 90},
                      {20, 90}};
    set_points(&o, object, "shape.polygon", (const double(*)[2])u, 8);
    set(&o, object, "feather", 0);
    set(&o, object, "dilate", 0);
    REQUIRE(object->validate(o.v, &err) == 0);
    REQUIRE(object->mask(o.v, &geom, cover, &err) == 0);
    CHECK(cover[50 * 200 + 30] == 1.0f);
    CHECK(cover[50 * 200 + 50] == 0.0f); /* in the notch */
    CHECK(cover[20 * 200 + 50] == 1.0f);
    /* Both shapes, or neither, are refused. */
    set_vec(&o, object, "shape.ellipse", e, 4);
    CHECK(object->validate(o.v, &err) == EINVAL);
    set_defaults(&o, object);
    CHECK(object->validate(o.v, &err) == EINVAL);
    free(cover);
}

/* Outside the matte, the output is the input bit for bit, NaN and Inf
 * included; inside, the wire is gone. */
static void test_outside_exact(void)
{
    struct pfs_image in, out;
    load_frame(1004, &in);
    px(&in, 10, 10)[0] = NAN;
    px(&in, 11, 10)[1] = INFINITY;
    px(&in, 600, 300)[2] = -0.0f;
    struct values v;
    wire_values(&v, 1004, 0, 6);
    set(&v, wire, "method", 2); /* spatial: no neighbours */
    run_op(wire, &v, &in, NULL, &out);
    float *cover = malloc((size_t)in.width * (size_t)in.height * sizeof *cover);
    pfs_error err;
    REQUIRE(cover && wire->mask(v.v, &in, cover, &err) == 0);
    size_t same = 0, outside = 0, changed = 0;
    for (size_t i = 0; i < (size_t)in.width * (size_t)in.height; i++) {
        if (cover[i] > 0) {
            changed += memcmp(in.px + 4 * i, out.px + 4 * i, 16) != 0;
            continue;
        }
        outside++;
        same += memcmp(in.px + 4 * i, out.px + 4 * i, 16) == 0;
    }
    CHECKF(same == outside, "%zu of %zu pixels outside the matte changed", outside - same,
           outside);
    CHECK(changed > 1000);
    free(cover);
    pfs_image_free(&in);
    pfs_image_free(&out);
}

/* The sample frames with a dark wire moving 4 px per frame: the clean
 * frames, the wired ones, and each frame's values. */
static void wired_frames(struct pfs_image *clean, struct pfs_image *wired, struct values *vals,
                         double dx)
{
    for (int i = 0; i < NFRAMES; i++) {
        load_frame(1001 + i, &clean[i]);
        REQUIRE(pfs_image_copy(&wired[i], &clean[i]) == 0);
        double xy[2][2];
        wire_path(1001 + i, dx, xy);
        draw_wire(&wired[i], (const double(*)[2])xy, 5, 0.01f);
        wire_values(&vals[i], 1001 + i, dx, 7);
        set(&vals[i], wire, "grain", 0);
    }
}

static void free_frames(struct pfs_image *f, int n)
{
    for (int i = 0; i < n; i++)
        pfs_image_free(&f[i]);
}

static unsigned char *hole_of(const struct values *v, const struct pfs_image *geom)
{
    size_t n = (size_t)geom->width * (size_t)geom->height;
    float *cover = malloc(n * sizeof *cover);
    unsigned char *hole = malloc(n);
    pfs_error err;
    REQUIRE(cover && hole && wire->mask(v->v, geom, cover, &err) == 0);
    for (size_t i = 0; i < n; i++)
        hole[i] = cover[i] >= 1.0f;
    free(cover);
    return hole;
}

/* Real frames, static camera, a juggler moving: the background under the
 * wire is seen in the neighbours and comes back nearly exactly; the
 * temporal fill beats the frame-only fill by a wide margin. */
static void test_temporal_static_camera(void)
{
    struct pfs_image clean[NFRAMES], wired[NFRAMES], temporal, spatial;
    struct values vals[NFRAMES];
    wired_frames(clean, wired, vals, 4);
    int cur = 3;
    struct window w;
    window_build(&w, wired, vals, wire, NFRAMES, cur, NULL);
    run_op(wire, &vals[cur], &wired[cur], w.pub, &temporal);
    struct values sv = vals[cur];
    set(&sv, wire, "method", 2);
    run_op(wire, &sv, &wired[cur], NULL, &spatial);
    unsigned char *hole = hole_of(&vals[cur], &clean[cur]);
    double pw = psnr_in(&wired[cur], &clean[cur], hole);
    double pt = psnr_in(&temporal, &clean[cur], hole);
    double ps = psnr_in(&spatial, &clean[cur], hole);
    fprintf(stderr, "  static camera, in-hole PSNR: wired %.2f dB, spatial %.2f dB, temporal "
                    "%.2f dB\n", pw, ps, pt);
    CHECK(pt > 40);
    CHECK(pt > ps + 3);
    free(hole);
    window_free(&w);
    pfs_image_free(&temporal);
    pfs_image_free(&spatial);
    free_frames(clean, NFRAMES);
    free_frames(wired, NFRAMES);
}

/* A camera pan: each frame is the sample frame shifted by (2.6, -1.3) px
 * per frame (bilinear resampling, the same for the clean and the wired
 * plate), the wire drifting the other way. The fill must follow the
 * motion. */
static void shifted(const struct pfs_image *src, double sx, double sy, struct pfs_image *dst)
{
    *dst = *src;
    dst->px = NULL;
    REQUIRE(pfs_image_alloc(dst, src->width, src->height) == 0);
    for (int y = 0; y < dst->height; y++)
        for (int x = 0; x < dst->width; x++) {
            double qx = x - sx, qy = y - sy;
            qx = qx < 0 ? 0 : qx > src->width - 1 ? src->width - 1 : qx;
            qy = qy < 0 ? 0 : qy > src->height - 1 ? src->height - 1 : qy;
            int x0 = (int)qx, y0 = (int)qy;
            int x1 = x0 + 1 < src->width ? x0 + 1 : x0, y1 = y0 + 1 < src->height ? y0 + 1 : y0;
            double fx = qx - x0, fy = qy - y0;
            for (int c = 0; c < 4; c++)
                px(dst, x, y)[c] = (float)((1 - fy) * ((1 - fx) * px(src, x0, y0)[c] +
                                                       fx * px(src, x1, y0)[c]) +
                                           fy * ((1 - fx) * px(src, x0, y1)[c] +
                                                 fx * px(src, x1, y1)[c]));
        }
}

static void test_temporal_pan(void)
{
    struct pfs_image base, clean[NFRAMES], wired[NFRAMES], temporal, spatial;
    struct values vals[NFRAMES];
    load_frame(1001, &base);
    for (int i = 0; i < NFRAMES; i++) {
        shifted(&base, 2.6 * i, -1.3 * i, &clean[i]);
        REQUIRE(pfs_image_copy(&wired[i], &clean[i]) == 0);
        double xy[2][2];
        wire_path(1001 + i, -3, xy); /* the wire drifts against the pan */
        draw_wire(&wired[i], (const double(*)[2])xy, 5, 0.9f);
        wire_values(&vals[i], 1001 + i, -3, 7);
        set(&vals[i], wire, "grain", 0);
    }
    int cur = 4;
    struct window w;
    window_build(&w, wired, vals, wire, NFRAMES, cur, NULL);
    run_op(wire, &vals[cur], &wired[cur], w.pub, &temporal);
    struct values sv = vals[cur];
    set(&sv, wire, "method", 2);
    run_op(wire, &sv, &wired[cur], NULL, &spatial);
    unsigned char *hole = hole_of(&vals[cur], &clean[cur]);
    double pt = psnr_in(&temporal, &clean[cur], hole);
    double ps = psnr_in(&spatial, &clean[cur], hole);
    fprintf(stderr, "  camera pan, in-hole PSNR: spatial %.2f dB, temporal %.2f dB\n", ps, pt);
    CHECK(pt > 32);
    CHECK(pt > ps + 3);
    free(hole);
    window_free(&w);
    pfs_image_free(&temporal);
    pfs_image_free(&spatial);
    pfs_image_free(&base);
    free_frames(clean, NFRAMES);
    free_frames(wired, NFRAMES);
}

/* A static wire: every neighbour hides the same background, so no frame
 * may give it; a red wire must not come back from them (the fill is made
 * up from the frame instead, with no red in it). */
static void test_never_from_holes(void)
{
    struct pfs_image clean[NFRAMES], wired[NFRAMES], out;
    struct values vals[NFRAMES];
    for (int i = 0; i < NFRAMES; i++) {
        load_frame(1001 + i, &clean[i]);
        REQUIRE(pfs_image_copy(&wired[i], &clean[i]) == 0);
        double xy[2][2];
        wire_path(1001, 0, xy);
        for (int y = 0; y < wired[i].height; y++)
            for (int x = 0; x < wired[i].width; x++) {
                double cx = x + 0.5, cy = y + 0.5;
                double t = (cy - xy[0][1]) / (xy[1][1] - xy[0][1]);
                double lx = xy[0][0] + t * (xy[1][0] - xy[0][0]);
                if (fabs(cx - lx) < 3) {
                    px(&wired[i], x, y)[0] = 20.0f;
                    px(&wired[i], x, y)[1] = px(&wired[i], x, y)[2] = 0.0f;
                }
            }
        wire_values(&vals[i], 1001, 0, 8);
        set(&vals[i], wire, "grain", 0);
    }
    struct window w;
    window_build(&w, wired, vals, wire, NFRAMES, 3, NULL);
    run_op(wire, &vals[3], &wired[3], w.pub, &out);
    float worst = 0;
    for (size_t i = 0; i < (size_t)out.width * (size_t)out.height; i++)
        worst = fmaxf(worst, out.px[4 * i]);
    float plate_max = 0;
    for (size_t i = 0; i < (size_t)out.width * (size_t)out.height; i++)
        plate_max = fmaxf(plate_max, clean[3].px[4 * i]);
    CHECKF(worst <= plate_max + 1e-3f, "red %g came back into the fill (plate max %g)", worst,
           plate_max);
    window_free(&w);
    pfs_image_free(&out);
    free_frames(clean, NFRAMES);
    free_frames(wired, NFRAMES);
}

/* The spread of img - clean in green over the pixels a mask selects: the
 * grain, where the picture underneath is right. */
static double grain_spread(const struct pfs_image *img, const struct pfs_image *clean,
                           const unsigned char *sel)
{
    double s = 0;
    size_t n = 0;
    for (size_t i = 0; i < (size_t)img->width * (size_t)img->height; i++) {
        if (!sel[i])
            continue;
        double e = img->px[4 * i + 1] - clean->px[4 * i + 1];
        s += e * e;
        n++;
    }
    return sqrt(s / (double)n);
}

/* A grainy plate: the fill (a median of frames, which thins grain out)
 * gets back grain of the plate's strength with grain: 1, and stays thin
 * with grain: 0. */
static void test_regrain(void)
{
    struct pfs_image clean[NFRAMES], wired[NFRAMES], with, without;
    struct values vals[NFRAMES];
    wired_frames(clean, wired, vals, 4);
    srand(7);
    for (int i = 0; i < NFRAMES; i++)
        for (size_t k = 0; k < pfs_image_floats(&wired[i]); k++) {
            if (k % 4 == 3)
                continue;
            /* Gaussian grain, 0.02 linear (strong, to dominate the picture's own detail). */
            double u1 = frand() + 1e-12, u2 = frand();
            wired[i].px[k] += (float)(0.02 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
        }
    int cur = 3;
    for (int i = 0; i < NFRAMES; i++)
        set(&vals[i], wire, "grain", 1);
    struct window w;
    window_build(&w, wired, vals, wire, NFRAMES, cur, NULL);
    run_op(wire, &vals[cur], &wired[cur], w.pub, &with);
    struct values v0 = vals[cur];
    set(&v0, wire, "grain", 0);
    run_op(wire, &v0, &wired[cur], w.pub, &without);
    unsigned char *hole = hole_of(&vals[cur], &clean[cur]);
    /* A band beside the hole as the plate's own grain. */
    size_t n = (size_t)clean[cur].width * (size_t)clean[cur].height;
    unsigned char *band = malloc(n);
    REQUIRE(band);
    struct values wide = vals[cur];
    set(&wide, wire, "width", 40);
    unsigned char *grown = hole_of(&wide, &clean[cur]);
    for (size_t i = 0; i < n; i++)
        band[i] = grown[i] && !hole[i];
    unsigned char *inner = hole_of(&vals[cur], &clean[cur]);
    double plate = grain_spread(&wired[cur], &clean[cur], band);
    double g1 = grain_spread(&with, &clean[cur], inner);
    double g0 = grain_spread(&without, &clean[cur], inner);
    fprintf(stderr, "  grain spread: plate %.4f, fill with regrain %.4f, without %.4f\n", plate,
            g1, g0);
    CHECK(g1 > 0.8 * plate && g1 < 1.25 * plate);
    CHECK(g0 < 0.8 * plate);
    free(hole);
    free(band);
    free(grown);
    free(inner);
    window_free(&w);
    pfs_image_free(&with);
    pfs_image_free(&without);
    free_frames(clean, NFRAMES);
    free_frames(wired, NFRAMES);
}

/* The same frame renders the same bytes: twice on the host, and through
 * the OpenCL path (which fills on the host too, from the same flows). */
static void test_deterministic(void)
{
    struct pfs_image clean[NFRAMES], wired[NFRAMES], a, b;
    struct values vals[NFRAMES];
    wired_frames(clean, wired, vals, 4);
    for (int i = 0; i < NFRAMES; i++)
        set(&vals[i], wire, "grain", 1);
    int cur = 3;
    struct window w;
    window_build(&w, wired, vals, wire, NFRAMES, cur, NULL);
    run_op(wire, &vals[cur], &wired[cur], w.pub, &a);
    run_op(wire, &vals[cur], &wired[cur], w.pub, &b);
    CHECK(memcmp(a.px, b.px, pfs_image_floats(&a) * sizeof(float)) == 0);

    struct pfs_cl *cl = open_test_device(0);
    if (cl) {
        unsigned char uniforms[65536];
        pfs_error err;
        pfs_error_clear(&err);
        struct pfs_op_frame f = {.frame = &wired[cur], .reference_frame = -1};
        REQUIRE(wire->prepare(vals[cur].v, &f, uniforms, &err) == 0);
        struct pfs_cl_image s = {0}, d = {0};
        REQUIRE(pfs_cl_image_create(cl, &wired[cur], &s, &err) == 0);
        REQUIRE(pfs_cl_image_create(cl, &wired[cur], &d, &err) == 0);
        pfs_cl_lock(cl);
        REQUIRE(pfs_cl_upload(cl, &wired[cur], &s, &err) == 0);
        const struct pfs_cl_image *src[1] = {&s};
        struct pfs_op_cl_io io = {.frame = 1004, .src = src, .nsrc = 1, .dst = &d,
                                  .frames = w.pub};
        int rc = wire->run_cl(cl, uniforms, &io, &err);
        CHECKF(rc == 0, "%s", err.msg);
        REQUIRE(pfs_cl_download(cl, &d, &b, &err) == 0);
        pfs_cl_unlock(cl);
        CHECK(memcmp(a.px, b.px, pfs_image_floats(&a) * sizeof(float)) == 0);
        pfs_cl_image_release(&s);
        pfs_cl_image_release(&d);
        pfs_cl_close(cl);
    }
    window_free(&w);
    pfs_image_free(&a);
    pfs_image_free(&b);
    free_frames(clean, NFRAMES);
    free_frames(wired, NFRAMES);
}

struct diags {
    char text[8192];
    size_t len;
};

static void collect(void *ud, enum pfs_diag_severity sev, const char *file, int line, int col,
                    const char *msg)
{
    struct diags *d = ud;
    int n = snprintf(d->text + d->len, sizeof d->text - d->len, "%s:%d:%d: %s: %s\n", file,
                     line, col, sev == PFS_DIAG_ERROR ? "error" : "warning", msg);
    if (n > 0 && d->len + (size_t)n < sizeof d->text)
        d->len += (size_t)n;
}

/* `platefs check` refuses a wire whose path crosses a protected region,
 * naming the frames where it does; a path that stays clear loads. */
static void test_protect_refused(void)
{
    char dir[] = "/tmp/test_remove.XXXXXX";
    REQUIRE(mkdtemp(dir));
    char path[4096];
    snprintf(path, sizeof path, "%s/shot.yaml", dir);
    const char *yaml[2] = {
        /* 100 -> 480 over 1001-1020: x 300-400 is crossed around 1011-1016. */
        "shot: T\nmatch: [\"S/*.exr\"]\nframes: 1001-1020\n"
        "protect:\n  - rect: [300, 0, 400, 360]\n    frames: 1010-1020\n"
        "ops:\n  - op: wire_remove\n    width: 6\n"
        "    path: {1001: [[100, 0], [100, 360]], 1020: [[480, 0], [480, 360]]}\n",
        "shot: T\nmatch: [\"S/*.exr\"]\nframes: 1001-1020\n"
        "protect:\n  - rect: [300, 0, 400, 360]\n"
        "ops:\n  - op: object_remove\n    shape: {1001: {ellipse: [100, 100, 30, 30]}, "
        "1020: {ellipse: [200, 100, 30, 30]}}\n",
    };
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(yaml[k], f);
        fclose(f);
        struct diags d = {0};
        struct pfs_rules_opts o = {.rules_dir = dir, .report = collect, .report_ud = &d};
        struct pfs_ruleset *rs = NULL;
        pfs_error err;
        pfs_error_clear(&err);
        int rc = pfs_rules_load(&o, &rs, &err);
        fprintf(stderr, "%s", d.text);
        if (k == 0) {
            CHECK(rc == EINVAL && rs == NULL);
            CHECK(strstr(d.text, "wire_remove") && strstr(d.text, "protected"));
            CHECKF(strstr(d.text, "1011") || strstr(d.text, "1012"), "frames not named: %s",
                   d.text);
            CHECK(!strstr(d.text, "1005"));
        } else {
            CHECK(rc == 0 && rs != NULL);
        }
        pfs_ruleset_unref(rs);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    RUN(test_matte);
    RUN(test_outside_exact);
    RUN(test_temporal_static_camera);
    RUN(test_temporal_pan);
    RUN(test_never_from_holes);
    RUN(test_regrain);
    RUN(test_deterministic);
    RUN(test_protect_refused);
    return CHECK_DONE();
}
