/*
 * remove.c - wire and rig removal (wire_remove) and object removal
 * (object_remove): the background hidden by a shape is brought back from
 * the neighbouring frames where it was seen, and made up from the frame
 * itself where it never was.
 *
 * Both ops share one pipeline and differ only in their shape: a wire is a
 * polyline (or a Catmull-Rom spline through its points) of a given width, an
 * object a polygon or an ellipse, grown by `dilate`; both have a soft edge of
 * `feather` pixels. The matte (remove_matte) is 1 inside the shape, falls to
 * 0 across the feather, and is 0 elsewhere, where output pixels are the
 * source's bit for bit.
 *
 * For one frame t, inside the matte's box:
 *
 *  1. Temporal fill. For each neighbour s, nearest first, the engine's flow
 *     t->s says where each pixel's content lies in s. Inside t's hole that
 *     flow tracked the wire, not the background, so it is thrown away there
 *     (over the hole grown by the flow's patch reach) and completed from
 *     the flow around it (a membrane): the background's motion continues
 *     under the wire. A pixel p takes s's value at q = p + flow(p) when q is
 *     inside s, not in any hole of s (so nothing is ever copied from
 *     another frame's wire or object), and the flow back s->t at q returns
 *     to p within a pixel (forward-backward consistency: occlusions and
 *     flow errors fail it). The first three frames that pass are combined:
 *     one is taken, two averaged, three by their per-channel median.
 *  2. Spatial fill (engine/fill.h) of what no neighbour saw: structure-aware
 *     interpolation across the hole.
 *  3. Gradient-domain blend: the fill keeps its own gradients and takes the
 *     plate's values at the edge of its region, so a change of light between
 *     frames or a slight misregistration leaves no seam.
 *  4. Regrain: averaging frames and interpolating take out the plate's
 *     grain; each filled pixel gets back the share of grain it lost, drawn
 *     from a model of this plate's grain (engine/fill.h), seeded by shot and
 *     frame so the frame renders the same bytes every time.
 *  5. Composite through the matte.
 *
 * The steps run on the host over the shape's box only; the optical flow,
 * the expensive part, runs on the render's OpenCL device (engine/flow.h,
 * computed by the engine once per frame pair and shared between renders).
 * run_cl and run_cpu therefore compute the same pixels from the same flows:
 * the OpenCL path downloads the frame, fills it, and uploads the result.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/fill.h"
#include "engine/flow.h"
#include "engine/op.h"

static const char *const method_names[] = {"auto", "temporal", "spatial", NULL};
enum remove_method { METHOD_AUTO, METHOD_TEMPORAL, METHOD_SPATIAL };

/* Frames searched on each side by default, and at most. */
#define REMOVE_REACH_DEFAULT 6
#define REMOVE_REACH_MAX PFS_MAX_WINDOW
/* Frames combined per pixel by the temporal fill. */
#define REMOVE_CANDIDATES 5
/* Points per span when a spline path is flattened into segments. */
#define SPLINE_STEPS 16
/* Ring around the filled region whose values anchor the blend. */
#define BLEND_RING 2

#define COMMON_PARAMS(feather_def, dilate_def)                                                  \
    {.name = "feather", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 200,            \
     .def = {feather_def}, .keyframable = true, .unit = "px",                                  \
     .help = "width of the soft edge outside the shape, over which the fix fades into the "    \
             "plate"},                                                                         \
    {.name = "dilate", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 200,             \
     .def = {dilate_def}, .keyframable = true, .unit = "px",                                   \
     .help = "grows the shape by this much before the feather, to cover motion blur and "      \
             "edge fringes"},                                                                  \
    {.name = "method", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = method_names,           \
     .def = {METHOD_AUTO},                                                                     \
     .help = "auto: background from neighbouring frames where they agree, made up from the "   \
             "frame elsewhere; temporal: also from the nearest frame that saw it when they "   \
             "disagree; spatial: from the frame only (no neighbours read)"},                   \
    {.name = "reach", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1, .max = REMOVE_REACH_MAX, \
     .def = {REMOVE_REACH_DEFAULT}, .unit = "frames",                                          \
     .help = "neighbouring frames searched on each side for the hidden background"},           \
    {.name = "grain", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 2, .def = {1},    \
     .help = "strength of the plate's grain put back into the fill (0: none)"}

/* The shared parameters sit after each op's shape parameters. */
enum { C_FEATHER, C_DILATE, C_METHOD, C_REACH, C_GRAIN, C_COUNT };

static const struct pfs_param_desc wire_params[] = {
    {.name = "path", .type = PFS_PARAM_POINTS, .ncomp = 2, .min = -1e5, .max = 1e5,
     .required = true, .keyframable = true, .unit = "px",
     .help = "the wire's centre line, [[x, y], ...] in display pixels; keyframe it to follow "
             "the wire"},
    {.name = "width", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0.5, .max = 500,
     .def = {6}, .keyframable = true, .unit = "px",
     .help = "the wire's full visible width"},
    {.name = "spline", .type = PFS_PARAM_BOOL, .ncomp = 1, .def = {0},
     .help = "true: a smooth Catmull-Rom curve through the path's points; false: straight "
             "segments"},
    COMMON_PARAMS(2, 1),
};
enum { W_PATH, W_WIDTH, W_SPLINE, W_COMMON };
_Static_assert(sizeof wire_params / sizeof wire_params[0] == W_COMMON + C_COUNT,
               "wire_remove: parameter enum out of step with the table");

static const struct pfs_param_desc object_params[] = {
    {.name = "shape.polygon", .type = PFS_PARAM_POINTS, .ncomp = 3, .min = -1e5, .max = 1e5,
     .keyframable = true, .unit = "px",
     .help = "the object's outline, [[x, y], ...] in display pixels (give this or "
             "shape.ellipse)"},
    {.name = "shape.ellipse", .type = PFS_PARAM_VEC, .ncomp = 4, .min = -1e5, .max = 1e5,
     .def = {0, 0, 0, 0}, .keyframable = true, .unit = "px",
     .help = "an ellipse [cx, cy, rx, ry] in display pixels (give this or shape.polygon)"},
    COMMON_PARAMS(4, 2),
};
enum { O_POLYGON, O_ELLIPSE, O_COMMON };
_Static_assert(sizeof object_params / sizeof object_params[0] == O_COMMON + C_COUNT,
               "object_remove: parameter enum out of step with the table");

/* ---- the shape -------------------------------------------------------------- */

/* Vertices of an ellipse outline: fine enough that the polygon stays within
 * a hundredth of a pixel of the curve for radii up to a few thousand. */
#define ELLIPSE_VERTICES 256
#define MAX_VERTICES (ELLIPSE_VERTICES > (PFS_PARAM_MAX_POINTS - 1) * SPLINE_STEPS + 1       \
                          ? ELLIPSE_VERTICES                                                  \
                          : (PFS_PARAM_MAX_POINTS - 1) * SPLINE_STEPS + 1)

/* A shape at one frame, in display coordinates: an open polyline whose
 * pixels within `radius` are covered (a wire), or a closed polygon whose
 * inside and pixels within `radius` of it are (an object). */
struct shape {
    bool closed;
    int n;
    double xy[MAX_VERTICES][2];
    double radius;  /* half the wire's width + dilate; dilate for objects */
    double feather;
};

struct remove_uniforms {
    struct shape shape;
    enum remove_method method;
    int reach;
    double grain;
};

/* Catmull-Rom (uniform) through p, ends extended by reflection. */
static int flatten_spline(const double (*p)[2], int n, double (*out)[2])
{
    int k = 0;
    for (int i = 0; i + 1 < n; i++) {
        double p0[2], p3[2];
        for (int c = 0; c < 2; c++) {
            p0[c] = i > 0 ? p[i - 1][c] : 2 * p[0][c] - p[1][c];
            p3[c] = i + 2 < n ? p[i + 2][c] : 2 * p[n - 1][c] - p[n - 2][c];
        }
        for (int s = 0; s < SPLINE_STEPS; s++) {
            double t = (double)s / SPLINE_STEPS, t2 = t * t, t3 = t2 * t;
            for (int c = 0; c < 2; c++)
                out[k][c] = 0.5 * (2 * p[i][c] + (-p0[c] + p[i + 1][c]) * t +
                                   (2 * p0[c] - 5 * p[i][c] + 4 * p[i + 1][c] - p3[c]) * t2 +
                                   (-p0[c] + 3 * p[i][c] - 3 * p[i + 1][c] + p3[c]) * t3);
            k++;
        }
    }
    out[k][0] = p[n - 1][0];
    out[k][1] = p[n - 1][1];
    return k + 1;
}

static void wire_shape(const pfs_pvec *vals, struct shape *s)
{
    const double(*p)[2];
    int n = pfs_op_points(vals, W_PATH, &p);
    s->closed = false;
    if (vals[W_SPLINE][0] != 0 && n > 2) {
        s->n = flatten_spline(p, n, s->xy);
    } else {
        s->n = n;
        memcpy(s->xy, p, (size_t)n * sizeof p[0]);
    }
    const pfs_pvec *c = vals + W_COMMON;
    s->radius = 0.5 * vals[W_WIDTH][0] + c[C_DILATE][0];
    s->feather = c[C_FEATHER][0];
}

static void object_shape(const pfs_pvec *vals, struct shape *s)
{
    const double(*p)[2];
    int n = pfs_op_points(vals, O_POLYGON, &p);
    s->closed = true;
    if (n > 0) {
        s->n = n;
        memcpy(s->xy, p, (size_t)n * sizeof p[0]);
    } else {
        const double *e = vals[O_ELLIPSE];
        s->n = ELLIPSE_VERTICES;
        for (int i = 0; i < ELLIPSE_VERTICES; i++) {
            double a = 2 * M_PI * i / ELLIPSE_VERTICES;
            s->xy[i][0] = e[0] + e[2] * cos(a);
            s->xy[i][1] = e[1] + e[3] * sin(a);
        }
    }
    const pfs_pvec *c = vals + O_COMMON;
    s->radius = c[C_DILATE][0];
    s->feather = c[C_FEATHER][0];
}

/* The box {x0, y0, x1, y1} (display pixel edges) outside which the matte
 * is 0. */
static void shape_box(const struct shape *s, double box[4])
{
    box[0] = box[1] = INFINITY;
    box[2] = box[3] = -INFINITY;
    for (int i = 0; i < s->n; i++) {
        box[0] = fmin(box[0], s->xy[i][0]);
        box[1] = fmin(box[1], s->xy[i][1]);
        box[2] = fmax(box[2], s->xy[i][0]);
        box[3] = fmax(box[3], s->xy[i][1]);
    }
    double grow = s->radius + s->feather + 1;
    box[0] -= grow;
    box[1] -= grow;
    box[2] += grow;
    box[3] += grow;
}

static double segment_distance(const double a[2], const double b[2], double px, double py)
{
    double dx = b[0] - a[0], dy = b[1] - a[1];
    double len2 = dx * dx + dy * dy;
    double t = len2 > 0 ? ((px - a[0]) * dx + (py - a[1]) * dy) / len2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double ex = a[0] + t * dx - px, ey = a[1] + t * dy - py;
    return sqrt(ex * ex + ey * ey);
}

/* Distance from (px, py) to the shape's outline, and (closed shapes)
 * whether the point is inside: even-odd crossings. */
static double shape_distance(const struct shape *s, double px, double py, bool *inside)
{
    double d = INFINITY;
    bool in = false;
    int nseg = s->closed ? s->n : s->n - 1;
    for (int i = 0; i < nseg; i++) {
        const double *a = s->xy[i], *b = s->xy[(i + 1) % s->n];
        d = fmin(d, segment_distance(a, b, px, py));
        if (s->closed && (a[1] > py) != (b[1] > py) &&
            px < a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1]))
            in = !in;
    }
    if (s->n == 1)
        d = hypot(px - s->xy[0][0], py - s->xy[0][1]);
    *inside = in;
    return d;
}

/* Coverage of a pixel whose centre lies `d` outside the grown shape:
 * 1 inside, a smooth fall over the feather, 0 beyond. Without feather the
 * edge is anti-aliased over one pixel. */
static float cover_at(double d, double feather)
{
    double f = feather > 0.5 ? feather : 0.5;
    double t = (d + (feather > 0.5 ? 0 : 0.5)) / f;
    if (t <= 0)
        return 1.0f;
    if (t >= 1)
        return 0.0f;
    return (float)(1 - t * t * (3 - 2 * t));
}

/* The matte over the image's data window; returns the box of its non-zero
 * pixels (data coordinates, half-open), empty when x0 >= x1. */
static void shape_matte(const struct shape *s, const struct pfs_image *geom, float *cover,
                        int box_out[4])
{
    memset(cover, 0, (size_t)geom->width * (size_t)geom->height * sizeof *cover);
    box_out[0] = box_out[1] = box_out[2] = box_out[3] = 0;
    if (s->n < 1)
        return;
    double box[4];
    shape_box(s, box);
    int x0 = (int)floor(box[0]) - geom->origin_x, y0 = (int)floor(box[1]) - geom->origin_y;
    int x1 = (int)ceil(box[2]) - geom->origin_x, y1 = (int)ceil(box[3]) - geom->origin_y;
    x0 = x0 < 0 ? 0 : x0;
    y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > geom->width ? geom->width : x1;
    y1 = y1 > geom->height ? geom->height : y1;
    int bx0 = geom->width, by0 = geom->height, bx1 = 0, by1 = 0;
    for (int y = y0; y < y1; y++) {
        for (int x = x0; x < x1; x++) {
            double px = x + geom->origin_x + 0.5, py = y + geom->origin_y + 0.5;
            bool inside;
            double d = shape_distance(s, px, py, &inside);
            float c = inside ? 1.0f : cover_at(d - s->radius, s->feather);
            if (c > 0) {
                cover[(size_t)y * (size_t)geom->width + (size_t)x] = c;
                bx0 = x < bx0 ? x : bx0;
                by0 = y < by0 ? y : by0;
                bx1 = x + 1 > bx1 ? x + 1 : bx1;
                by1 = y + 1 > by1 ? y + 1 : by1;
            }
        }
    }
    if (bx1 > bx0) {
        box_out[0] = bx0;
        box_out[1] = by0;
        box_out[2] = bx1;
        box_out[3] = by1;
    }
}

/* ---- descriptor hooks --------------------------------------------------- */

static int object_validate(const pfs_pvec *vals, pfs_error *err)
{
    const double(*p)[2];
    int n = pfs_op_points(vals, O_POLYGON, &p);
    bool ellipse = vals[O_ELLIPSE][2] > 0 || vals[O_ELLIPSE][3] > 0;
    if (n > 0 && ellipse)
        return pfs_error_set(err, EINVAL, "shape: give a polygon or an ellipse, not both");
    if (n == 0 && !ellipse)
        return pfs_error_set(err, EINVAL, "shape: needs a polygon ([[x, y], ...], at least 3 "
                             "points) or an ellipse ([cx, cy, rx, ry] with radii above 0)");
    if (ellipse && (vals[O_ELLIPSE][2] <= 0 || vals[O_ELLIPSE][3] <= 0))
        return pfs_error_set(err, EINVAL, "shape.ellipse: both radii must be above 0, got "
                             "[%g, %g]", vals[O_ELLIPSE][2], vals[O_ELLIPSE][3]);
    return 0;
}

static bool wire_extent(const pfs_pvec *vals, double box[4])
{
    struct shape s;
    wire_shape(vals, &s);
    shape_box(&s, box);
    return true;
}

static bool object_extent(const pfs_pvec *vals, double box[4])
{
    struct shape s;
    object_shape(vals, &s);
    shape_box(&s, box);
    return true;
}

static int wire_mask(const pfs_pvec *vals, const struct pfs_image *geom, float *cover,
                     pfs_error *err)
{
    (void)err;
    struct shape s;
    int box[4];
    wire_shape(vals, &s);
    shape_matte(&s, geom, cover, box);
    return 0;
}

static int object_mask(const pfs_pvec *vals, const struct pfs_image *geom, float *cover,
                       pfs_error *err)
{
    (void)err;
    struct shape s;
    int box[4];
    object_shape(vals, &s);
    shape_matte(&s, geom, cover, box);
    return 0;
}

static int common_reads(const pfs_pvec *c)
{
    return c[C_METHOD][0] == METHOD_SPATIAL ? 0 : (int)c[C_REACH][0];
}

static int wire_reads(const pfs_pvec *vals)
{
    return common_reads(vals + W_COMMON);
}

static int object_reads(const pfs_pvec *vals)
{
    return common_reads(vals + O_COMMON);
}

static void common_prepare(const pfs_pvec *c, struct remove_uniforms *u)
{
    u->method = (enum remove_method)(int)c[C_METHOD][0];
    u->reach = (int)c[C_REACH][0];
    u->grain = c[C_GRAIN][0];
}

static int wire_prepare(const pfs_pvec *vals, const struct pfs_op_frame *in, void *uniforms,
                        pfs_error *err)
{
    (void)in;
    (void)err;
    struct remove_uniforms *u = uniforms;
    wire_shape(vals, &u->shape);
    common_prepare(vals + W_COMMON, u);
    return 0;
}

static int object_prepare(const pfs_pvec *vals, const struct pfs_op_frame *in, void *uniforms,
                          pfs_error *err)
{
    (void)in;
    (void)err;
    struct remove_uniforms *u = uniforms;
    object_shape(vals, &u->shape);
    common_prepare(vals + O_COMMON, u);
    return 0;
}

/* ---- the fill ------------------------------------------------------------ */

/* The pixels worked on: the matte's box grown by the blend ring, in data
 * coordinates; the region pixels (matte > 0, or within the ring) listed. */
struct work {
    int x0, y0, w, h;
    float *alpha;      /* w * h: the matte */
    uint8_t *region;   /* w * h: 1 in the matte, 2 in the ring */
    float *src, *fill; /* w * h * 4 */
    float *kept;       /* w * h: share of the plate's grain variance the fill kept */
    int *ncand;        /* w * h: temporal candidates found */
    float *cand;       /* w * h * REMOVE_CANDIDATES * 4 */
    float *cand_kept;  /* w * h * REMOVE_CANDIDATES */
    float *fallback;   /* w * h * 4: METHOD_TEMPORAL's inconsistent source */
    float *fallback_kept;
};

static void work_free(struct work *k)
{
    free(k->alpha);
    free(k->region);
    free(k->src);
    free(k->fill);
    free(k->kept);
    free(k->ncand);
    free(k->cand);
    free(k->cand_kept);
    free(k->fallback);
    free(k->fallback_kept);
}

/* Grows a byte mask by r pixels (square neighbourhood): two passes of a
 * running count of set pixels in a window of 2r + 1. */
static int dilate(uint8_t *m, int w, int h, int r)
{
    if (r <= 0)
        return 0;
    int n = w > h ? w : h;
    uint8_t *line = malloc((size_t)n);
    if (!line)
        return ENOMEM;
    for (int pass = 0; pass < 2; pass++) {
        int len = pass == 0 ? w : h, lines = pass == 0 ? h : w;
        size_t step = pass == 0 ? 1 : (size_t)w, next = pass == 0 ? (size_t)w : 1;
        for (int l = 0; l < lines; l++) {
            uint8_t *p = m + (size_t)l * next;
            for (int i = 0; i < len; i++)
                line[i] = p[(size_t)i * step] != 0;
            int count = 0;
            for (int i = 0; i < r && i < len; i++)
                count += line[i];
            for (int i = 0; i < len; i++) {
                if (i + r < len)
                    count += line[i + r];
                if (i - r - 1 >= 0)
                    count -= line[i - r - 1];
                p[(size_t)i * step] = count > 0;
            }
        }
    }
    free(line);
    return 0;
}

/* Gives up on a work area that could not be set up: freed and empty. */
static int work_fail(struct work *k, int rc, pfs_error *err)
{
    pfs_error_set(err, rc, "no memory for a %dx%d fill", k->w, k->h);
    work_free(k);
    k->w = 0;
    return rc;
}

/* The matte and the region around it; k->w == 0 when the matte is empty. */
static int work_open(const struct remove_uniforms *u, const struct pfs_image *in, struct work *k,
                     pfs_error *err)
{
    memset(k, 0, sizeof *k);
    size_t npx = (size_t)in->width * (size_t)in->height;
    float *matte = malloc(npx * sizeof *matte);
    if (!matte)
        return pfs_error_set(err, ENOMEM, "no memory for a %dx%d matte", in->width, in->height);
    int box[4];
    shape_matte(&u->shape, in, matte, box);
    if (box[2] <= box[0]) {
        free(matte);
        return 0;
    }
    k->x0 = box[0] - BLEND_RING > 0 ? box[0] - BLEND_RING : 0;
    k->y0 = box[1] - BLEND_RING > 0 ? box[1] - BLEND_RING : 0;
    int x1 = box[2] + BLEND_RING < in->width ? box[2] + BLEND_RING : in->width;
    int y1 = box[3] + BLEND_RING < in->height ? box[3] + BLEND_RING : in->height;
    k->w = x1 - k->x0;
    k->h = y1 - k->y0;
    size_t n = (size_t)k->w * (size_t)k->h;
    k->alpha = malloc(n * sizeof *k->alpha);
    k->region = calloc(n, 1);
    k->src = malloc(n * 4 * sizeof *k->src);
    k->fill = malloc(n * 4 * sizeof *k->fill);
    k->kept = calloc(n, sizeof *k->kept);
    k->ncand = calloc(n, sizeof *k->ncand);
    k->cand = malloc(n * REMOVE_CANDIDATES * 4 * sizeof *k->cand);
    k->cand_kept = malloc(n * REMOVE_CANDIDATES * sizeof *k->cand_kept);
    k->fallback = malloc(n * 4 * sizeof *k->fallback);
    k->fallback_kept = calloc(n, sizeof *k->fallback_kept);
    uint8_t *grown = malloc(n);
    if (!grown || !k->alpha || !k->region || !k->src || !k->fill || !k->kept || !k->ncand ||
        !k->cand || !k->cand_kept || !k->fallback || !k->fallback_kept) {
        free(matte);
        free(grown);
        return work_fail(k, ENOMEM, err);
    }
    for (int y = 0; y < k->h; y++) {
        for (int x = 0; x < k->w; x++) {
            size_t i = (size_t)y * (size_t)k->w + (size_t)x;
            size_t g = (size_t)(y + k->y0) * (size_t)in->width + (size_t)(x + k->x0);
            k->alpha[i] = matte[g];
            k->region[i] = matte[g] > 0;
            memcpy(k->src + 4 * i, in->px + 4 * g, 4 * sizeof(float));
            memcpy(k->fill + 4 * i, in->px + 4 * g, 4 * sizeof(float));
        }
    }
    free(matte);
    /* The ring: pixels within BLEND_RING of the matte. */
    memcpy(grown, k->region, n);
    int rc = dilate(grown, k->w, k->h, BLEND_RING);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (grown[i] && !k->region[i])
            k->region[i] = 2;
    free(grown);
    return rc ? work_fail(k, rc, err) : 0;
}

/* Forward-backward disagreement allowed, in plate pixels: a pixel, plus a
 * share of the motion (long flows are less precise). */
static double consistency_limit(double du, double dv)
{
    return 1.0 + 0.05 * sqrt(du * du + dv * dv);
}

static int float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Whether any plate pixel under field pixel (x, y), shifted by (sx, sy)
 * plate pixels, lies in hole. */
static bool footprint_in(const unsigned char *hole, int pw, int ph, int scale, int x, int y,
                         int sx, int sy)
{
    for (int dy = 0; dy < scale; dy++)
        for (int dx = 0; dx < scale; dx++) {
            int px = x * scale + dx + sx, py = y * scale + dy + sy;
            if (px >= 0 && py >= 0 && px < pw && py < ph && hole[(size_t)py * (size_t)pw + (size_t)px])
                return true;
        }
    return false;
}

/*
 * The flow from the rendered frame t to neighbour s over the work area, in
 * field pixels. Where a patch of t or of s overlapped a hole, the flow
 * followed a wire (or the smooth fill that hid it), not the background:
 * those values are thrown away, over t's holes and over s's holes brought
 * into t by the area's typical motion, both grown by how far a patch
 * reaches, and completed from the flow around them (a membrane), so the
 * background's motion continues under the wire. Covers the work area's
 * footprint on the field plus a margin; *fx0, *fy0, *fw, *fh say where.
 */
struct completed {
    float *uv; /* NULL: nothing to complete from */
    int x0, y0, w, h; /* in field pixels */
    float shift[2];   /* the typical motion, plate pixels */
};

static int completed_flow(const struct pfs_flow_field *f, int scale, const int box[4],
                          const unsigned char *hole_t, const unsigned char *hole_s, int pw,
                          int ph, struct completed *out)
{
    const int margin = 16; /* field pixels of real flow around the hole to complete from */
    const int reach = 5;   /* a DIS patch's reach, in field pixels */
    int x0 = (int)floor((double)box[0] / scale) - margin;
    int y0 = (int)floor((double)box[1] / scale) - margin;
    int x1 = (box[2] + scale - 1) / scale + margin;
    int y1 = (box[3] + scale - 1) / scale + margin;
    x0 = x0 < 0 ? 0 : x0;
    y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > f->width ? f->width : x1;
    y1 = y1 > f->height ? f->height : y1;
    int w = x1 - x0, h = y1 - y0;
    memset(out, 0, sizeof *out);
    if (w <= 0 || h <= 0)
        return 0;
    size_t n = (size_t)w * (size_t)h;
    float *uv = malloc(n * 2 * sizeof *uv);
    uint8_t *unknown = malloc(n);
    float *sample = malloc(n * sizeof *sample);
    if (!uv || !unknown || !sample) {
        free(uv);
        free(unknown);
        free(sample);
        return ENOMEM;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            const float *src = f->uv + 2 * ((size_t)(y + y0) * (size_t)f->width + (size_t)(x + x0));
            uv[2 * i] = src[0];
            uv[2 * i + 1] = src[1];
            unknown[i] = footprint_in(hole_t, pw, ph, scale, x + x0, y + y0, 0, 0);
        }
    int rc = dilate(unknown, w, h, reach);
    /* The area's typical motion: the median flow away from t's holes. */
    float shift[2] = {0, 0};
    for (int c = 0; rc == 0 && c < 2; c++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!unknown[i])
                sample[m++] = uv[2 * i + c];
        if (m) {
            qsort(sample, m, sizeof *sample, float_cmp);
            shift[c] = sample[m / 2] * (float)scale;
        }
    }
    free(sample);
    if (rc == 0) {
        uint8_t *from_s = malloc(n);
        if (!from_s)
            rc = ENOMEM;
        for (int y = 0; from_s && y < h; y++)
            for (int x = 0; x < w; x++)
                from_s[(size_t)y * (size_t)w + (size_t)x] = footprint_in(
                    hole_s, pw, ph, scale, x + x0, y + y0, (int)lrintf(shift[0]),
                    (int)lrintf(shift[1]));
        if (from_s)
            rc = dilate(from_s, w, h, reach);
        for (size_t i = 0; rc == 0 && i < n; i++)
            unknown[i] |= from_s[i];
        free(from_s);
    }
    size_t nknown = 0;
    for (size_t i = 0; i < n; i++) {
        unknown[i] = !unknown[i]; /* from here on: known */
        nknown += unknown[i];
    }
    if (rc == 0 && nknown == 0) {
        free(uv);
        free(unknown);
        return 0; /* nothing around to complete from: no source */
    }
    if (rc == 0 && nknown < n)
        rc = pfs_fill_membrane(uv, 2, w, h, 2 * w, unknown);
    free(unknown);
    if (rc) {
        free(uv);
        return rc;
    }
    *out = (struct completed){uv, x0, y0, w, h, {shift[0], shift[1]}};
    return 0;
}

/* The completed flow at plate pixel centre (x + .5, y + .5), in plate
 * pixels; the raw field outside the completed box. */
static void flow_at(const struct completed *c, const struct pfs_flow_field *f, int scale,
                    double x, double y, double *du, double *dv)
{
    double fx = (x + 0.5) / scale - 0.5, fy = (y + 0.5) / scale - 0.5;
    if (c->uv && fx >= c->x0 && fy >= c->y0 && fx <= c->x0 + c->w - 1 &&
        fy <= c->y0 + c->h - 1) {
        *du = scale * pfs_flow_sample(c->uv, c->w, c->h, 2, 0, fx - c->x0, fy - c->y0);
        *dv = scale * pfs_flow_sample(c->uv, c->w, c->h, 2, 1, fx - c->x0, fy - c->y0);
    } else {
        *du = scale * pfs_flow_sample(f->uv, f->width, f->height, 2, 0, fx, fy);
        *dv = scale * pfs_flow_sample(f->uv, f->width, f->height, 2, 1, fx, fy);
    }
}

/* Step 1: candidates from neighbour i for every region pixel still short of
 * REMOVE_CANDIDATES. */
static int temporal_from(const struct remove_uniforms *u, const struct pfs_op_frames *fr, int i,
                         struct work *k, pfs_error *err)
{
    int c = fr->current;
    const struct pfs_flow_field *fwd = NULL, *bwd = NULL;
    int rc = fr->flow(fr->flow_ud, c, i, &fwd, err);
    if (rc == 0)
        rc = fr->flow(fr->flow_ud, i, c, &bwd, err);
    if (rc || !fwd || !bwd)
        return rc;
    const struct pfs_image *plate = fr->plate[i], *cur = fr->plate[c];
    const unsigned char *hole = fr->hole[i];
    int s = fr->flow_scale;
    /* Forward over the work area; backward over where it lands in s. */
    struct completed cf = {0}, cb = {0};
    int box[4] = {k->x0, k->y0, k->x0 + k->w, k->y0 + k->h};
    rc = completed_flow(fwd, s, box, fr->hole[c], hole, cur->width, cur->height, &cf);
    if (rc == 0 && cf.uv) {
        int sx = (int)lrintf(cf.shift[0]), sy = (int)lrintf(cf.shift[1]);
        int bbox[4] = {box[0] + sx, box[1] + sy, box[2] + sx, box[3] + sy};
        rc = completed_flow(bwd, s, bbox, hole, fr->hole[c], cur->width, cur->height, &cb);
    }
    if (rc) {
        free(cf.uv);
        return pfs_error_set(err, rc, "no memory to complete the flow");
    }
    if (!cf.uv)
        return 0;
    for (int y = 0; y < k->h; y++) {
        for (int x = 0; x < k->w; x++) {
            size_t p = (size_t)y * (size_t)k->w + (size_t)x;
            if (!k->region[p] || k->ncand[p] >= REMOVE_CANDIDATES)
                continue;
            int gx = x + k->x0, gy = y + k->y0;
            double du, dv;
            flow_at(&cf, fwd, s, gx, gy, &du, &dv);
            double qx = gx + du, qy = gy + dv;
            if (!(qx >= 0 && qy >= 0 && qx <= plate->width - 1 && qy <= plate->height - 1))
                continue;
            /* The taps sampled at q must be clear of the neighbour's holes. */
            int ix = (int)qx, iy = (int)qy;
            int ix1 = ix + 1 < plate->width ? ix + 1 : ix;
            int iy1 = iy + 1 < plate->height ? iy + 1 : iy;
            size_t pw = (size_t)plate->width;
            if (hole[(size_t)iy * pw + (size_t)ix] || hole[(size_t)iy * pw + (size_t)ix1] ||
                hole[(size_t)iy1 * pw + (size_t)ix] || hole[(size_t)iy1 * pw + (size_t)ix1])
                continue;
            double bu, bv;
            flow_at(&cb, bwd, s, qx, qy, &bu, &bv);
            bool consistent = hypot(du + bu, dv + bv) <= consistency_limit(du, dv);
            float v[4];
            for (int ch = 0; ch < 4; ch++)
                v[ch] = pfs_flow_sample(plate->px, plate->width, plate->height, 4, ch, qx, qy);
            if (consistent) {
                int n = k->ncand[p]++;
                memcpy(k->cand + (p * REMOVE_CANDIDATES + (size_t)n) * 4, v, sizeof v);
                k->cand_kept[p * REMOVE_CANDIDATES + (size_t)n] = pfs_flow_sample_kept(qx, qy);
            } else if (u->method == METHOD_TEMPORAL && k->fallback_kept[p] == 0) {
                memcpy(k->fallback + 4 * p, v, sizeof v);
                k->fallback_kept[p] = pfs_flow_sample_kept(qx, qy);
            }
        }
    }
    free(cf.uv);
    free(cb.uv);
    return 0;
}

/* The median of n values (the mean of the middle two for even n). */
static float median_of(float *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            float t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* Step 1's result per pixel: 1 where the temporal fill gave a value. The
 * per-channel median of the sources: robust to one or two bad ones, and
 * steadier from frame to frame than any single source. */
static void temporal_combine(struct work *k, uint8_t *filled)
{
    size_t n = (size_t)k->w * (size_t)k->h;
    for (size_t p = 0; p < n; p++) {
        filled[p] = 0;
        if (!k->region[p])
            continue;
        const float *c = k->cand + p * REMOVE_CANDIDATES * 4;
        const float *ck = k->cand_kept + p * REMOVE_CANDIDATES;
        float *out = k->fill + 4 * p;
        int m = k->ncand[p];
        if (m == 0) {
            if (k->fallback_kept[p] > 0) {
                memcpy(out, k->fallback + 4 * p, 4 * sizeof *out);
                k->kept[p] = k->fallback_kept[p];
                filled[p] = 1;
            }
            continue;
        }
        float v[REMOVE_CANDIDATES];
        for (int ch = 0; ch < 4; ch++) {
            for (int i = 0; i < m; i++)
                v[i] = c[4 * i + ch];
            out[ch] = median_of(v, m);
        }
        float mean_kept = 0;
        for (int i = 0; i < m; i++)
            mean_kept += ck[i] / (float)m;
        /* The share of one source's grain variance a median of m keeps:
         * 1 for one, 1/2 for the mean of two, about pi / (2m) beyond. */
        k->kept[p] = mean_kept * (m == 1 ? 1.0f : m == 2 ? 0.5f : fminf(1.0f, 1.5708f / (float)m));
        filled[p] = 1;
    }
}

/* Steps 2 and 3: what no neighbour saw is made up from the frame, then the
 * whole fill is blended into the plate through its gradients. */
static int spatial_and_blend(struct work *k, const uint8_t *filled, pfs_error *err)
{
    size_t n = (size_t)k->w * (size_t)k->h;
    uint8_t *hole = malloc(n);
    if (!hole)
        return pfs_error_set(err, ENOMEM, "no memory for a fill");
    size_t nhole = 0;
    for (size_t p = 0; p < n; p++) {
        /* Ring pixels without a temporal value anchor the blend at the
         * plate's own value. */
        if (k->region[p] == 2 && !filled[p])
            memcpy(k->fill + 4 * p, k->src + 4 * p, 4 * sizeof(float));
        hole[p] = k->region[p] == 1 && !filled[p];
        nhole += hole[p];
    }
    int rc = 0;
    if (nhole) {
        rc = pfs_fill_spatial(k->fill, k->w, k->h, 4 * k->w, hole);
        if (rc == EINVAL)
            rc = pfs_error_set(err, EIO, "the shape covers the whole frame: nothing around it "
                               "to fill from");
        else if (rc)
            rc = pfs_error_set(err, rc, "spatial fill failed: %s", strerror(rc));
    }
    free(hole);
    if (rc == 0) {
        rc = pfs_fill_blend(k->src, k->fill, 4, k->w, k->h, 4 * k->w, k->region);
        if (rc)
            rc = pfs_error_set(err, rc, "no memory for the blend");
    }
    return rc;
}

/* Step 4: the grain the fill lost, from the plate's own grain (the
 * window's model of it; without a window, learned here from the frame). */
static int regrain(const struct remove_uniforms *u, const struct pfs_image *in,
                   const unsigned char *exclude, const struct pfs_op_frames *fr, uint64_t seed,
                   struct work *k, pfs_error *err)
{
    if (u->grain <= 0)
        return 0;
    struct pfs_grain_model own;
    const struct pfs_grain_model *m = &own;
    int rc = fr ? fr->grain(fr->grain_ud, &m, err)
                : pfs_grain_estimate(in->px, in->width, in->height, 4 * in->width, exclude, &own);
    if (rc)
        return fr ? rc : pfs_error_set(err, rc, "no memory to measure the grain");
    if (m->nbins == 0)
        return 0; /* a clean plate: nothing to put back */
    struct pfs_grain_model model = *m;
    size_t n = (size_t)k->w * (size_t)k->h;
    float *amount = calloc(n, sizeof *amount);
    if (!amount)
        return pfs_error_set(err, ENOMEM, "no memory for grain");
    for (size_t p = 0; p < n; p++)
        if (k->region[p] == 1)
            amount[p] = (float)(u->grain * u->grain) * fmaxf(0.0f, 1.0f - k->kept[p]);
    pfs_grain_apply(&model, seed, k->fill, k->w, k->h, 4 * k->w, in->origin_x + k->x0,
                    in->origin_y + k->y0, amount);
    free(amount);
    return 0;
}

/* The whole op on host images: dst = src outside the matte, bit for bit. */
static int remove_run(const struct remove_uniforms *u, const struct pfs_image *in,
                      struct pfs_image *out, const struct pfs_op_frames *fr, pfs_error *err)
{
    memcpy(out->px, in->px, pfs_image_floats(in) * sizeof(float));
    struct work k;
    int rc = work_open(u, in, &k, err);
    if (rc || k.w == 0)
        return rc;
    size_t n = (size_t)k.w * (size_t)k.h;
    uint8_t *filled = calloc(n, 1);
    if (!filled)
        rc = pfs_error_set(err, ENOMEM, "no memory for a fill");
    if (rc == 0 && u->method != METHOD_SPATIAL && fr) {
        const struct pfs_image *cur = fr->plate[fr->current];
        bool same = cur && cur->width == in->width && cur->height == in->height;
        /* Nearest frames first: they share the most with this one. */
        for (int d = 1; same && rc == 0 && d <= u->reach; d++) {
            for (int side = -1; side <= 1 && rc == 0; side += 2) {
                int i = fr->current + side * d;
                if (i >= 0 && i < fr->n && fr->plate[i])
                    rc = temporal_from(u, fr, i, &k, err);
            }
        }
    }
    if (rc == 0) {
        temporal_combine(&k, filled);
        rc = spatial_and_blend(&k, filled, err);
    }
    if (rc == 0) {
        unsigned char *exclude = NULL;
        const unsigned char *ex = fr ? fr->hole[fr->current] : NULL;
        if (!ex) {
            /* Without a window (a direct call), this op's own matte. */
            exclude = calloc((size_t)in->width * (size_t)in->height, 1);
            if (!exclude)
                rc = pfs_error_set(err, ENOMEM, "no memory for grain");
            for (int y = 0; exclude && y < k.h; y++)
                for (int x = 0; x < k.w; x++)
                    exclude[(size_t)(y + k.y0) * (size_t)in->width + (size_t)(x + k.x0)] =
                        k.region[(size_t)y * (size_t)k.w + (size_t)x] == 1;
            ex = exclude;
        }
        if (rc == 0)
            rc = regrain(u, in, ex, fr, fr ? fr->seed : 0, &k, err);
        free(exclude);
    }
    /* Step 5: through the matte. */
    for (int y = 0; rc == 0 && y < k.h; y++) {
        for (int x = 0; x < k.w; x++) {
            size_t p = (size_t)y * (size_t)k.w + (size_t)x;
            float a = k.alpha[p];
            if (a <= 0)
                continue;
            float *o = out->px + 4 * ((size_t)(y + k.y0) * (size_t)in->width + (size_t)(x + k.x0));
            const float *s = k.src + 4 * p, *f = k.fill + 4 * p;
            for (int ch = 0; ch < 4; ch++)
                o[ch] = a >= 1 ? f[ch] : s[ch] + a * (f[ch] - s[ch]);
        }
    }
    free(filled);
    work_free(&k);
    return rc;
}

static int remove_run_cpu(const void *uniforms, const struct pfs_op_io *io, pfs_error *err)
{
    return remove_run(uniforms, io->src[0], io->dst, io->frames, err);
}

/* The fill runs on the host (see the top of the file): the frame comes
 * down, the result goes up. */
static int remove_run_cl(struct pfs_cl *cl, const void *uniforms, const struct pfs_op_cl_io *io,
                         pfs_error *err)
{
    const struct pfs_cl_image *s = io->src[0];
    struct pfs_image in = {.width = s->width, .height = s->height, .origin_x = s->origin_x,
                           .origin_y = s->origin_y, .display = s->display};
    struct pfs_image out = in;
    int rc = pfs_image_alloc(&in, s->width, s->height);
    if (rc == 0)
        rc = pfs_image_alloc(&out, s->width, s->height);
    if (rc)
        rc = pfs_error_set(err, rc, "no memory for a %dx%d frame", s->width, s->height);
    if (rc == 0)
        rc = pfs_cl_download(cl, s, &in, err);
    if (rc == 0)
        rc = remove_run(uniforms, &in, &out, io->frames, err);
    if (rc == 0)
        rc = pfs_cl_upload(cl, &out, io->dst, err);
    pfs_image_free(&in);
    pfs_image_free(&out);
    return rc;
}

const struct pfs_op_desc pfs_op_wire_remove = {
    .name = "wire_remove",
    .summary = "removes a wire or rig along a keyframed path: background from neighbouring "
               "frames through optical flow, spatial fill where never seen, blended and "
               "regrained",
    .params = wire_params,
    .nparams = sizeof wire_params / sizeof wire_params[0],
    .reads_before = REMOVE_REACH_MAX,
    .reads_after = REMOVE_REACH_MAX,
    .reads = wire_reads,
    .kind = PFS_OP_LOCAL_SYNTH,
    .uniforms_size = sizeof(struct remove_uniforms),
    .extent = wire_extent,
    .mask = wire_mask,
    .prepare = wire_prepare,
    .run_cpu = remove_run_cpu,
    .run_cl = remove_run_cl,
    /* Both paths run the same host code on the same flows. */
    .cl_tolerance = 0,
};

const struct pfs_op_desc pfs_op_object_remove = {
    .name = "object_remove",
    .summary = "removes an object inside a keyframed polygon or ellipse: background from "
               "neighbouring frames through optical flow, spatial fill where never seen, "
               "blended and regrained",
    .params = object_params,
    .nparams = sizeof object_params / sizeof object_params[0],
    .reads_before = REMOVE_REACH_MAX,
    .reads_after = REMOVE_REACH_MAX,
    .reads = object_reads,
    .kind = PFS_OP_LOCAL_SYNTH,
    .uniforms_size = sizeof(struct remove_uniforms),
    .validate = object_validate,
    .extent = object_extent,
    .mask = object_mask,
    .prepare = object_prepare,
    .run_cpu = remove_run_cpu,
    .run_cl = remove_run_cl,
    .cl_tolerance = 0,
};
