/*
 * engine_window.c - the neighbouring frames an op reads; see
 * engine_window.h.
 */
#include "engine/engine_window.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "cl/cl.h"
#include "engine/fill.h"
#include "engine/flow.h"
#include "util/log.h"

/* Names what a flow depends on besides its two plates; bump when the flow
 * maths changes so that no stale field is reused. */
#define FLOW_VERSION "dis/1"

void window_hole_id(const struct pfs_frame_ops *ops, char id[33])
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        abort();
    XXH3_128bits_reset(st);
    for (int i = 0; ops && i < ops->nops; i++) {
        const struct pfs_op_desc *d = ops->ops[i].desc;
        if (d->kind == PFS_OP_LOCAL_SYNTH && d->mask)
            XXH3_128bits_update(st, ops->ops[i].text, strlen(ops->ops[i].text) + 1);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    snprintf(id, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

struct window {
    struct pfs_op_frames pub;
    const struct window_env *env;
    int *frame_no;
    const char **keys;
    char (*hole_ids)[33];
    const struct pfs_image **plate;
    unsigned char **hole;
    const struct pfs_flow_field **fwd; /* current -> i */
    const struct pfs_flow_field **bwd; /* i -> current */
    bool grain_made;
    int grain_rc;
    pfs_error grain_err;
    struct pfs_grain_model grain;
};

/* ---- luma planes and flows, through the shared cache --------------------- */

struct plane {
    int width, height;
    float *px;
};

static void plane_free(void *item)
{
    struct plane *p = item;
    free(p->px);
    free(p);
}

static void flow_free(void *item)
{
    pfs_flow_field_free(item);
    free(item);
}

/* Halvings that bring width to WINDOW_FLOW_MAX_WIDTH or less. */
static int flow_scale_for(int width)
{
    int scale = 1;
    while (width / scale > WINDOW_FLOW_MAX_WIDTH)
        scale *= 2;
    return scale;
}

struct plane_make {
    const struct pfs_image *img;
    const unsigned char *hole;
    int scale;
};

/* The plate's luma with its holes filled smooth, box-averaged down by
 * scale (a power of two). Flow computed on it follows the background,
 * not the wires that are about to be removed. */
static int plane_make(void *ud, void **item, size_t *bytes, pfs_error *err)
{
    const struct plane_make *m = ud;
    int w = m->img->width, h = m->img->height;
    float *full = malloc((size_t)w * (size_t)h * sizeof *full);
    struct plane *p = calloc(1, sizeof *p);
    if (!full || !p) {
        free(full);
        free(p);
        return pfs_error_set(err, ENOMEM, "no memory for a %dx%d luma plane", w, h);
    }
    pfs_flow_luma(m->img, full);
    size_t npx = (size_t)w * (size_t)h, nhole = 0;
    for (size_t i = 0; i < npx; i++)
        nhole += m->hole[i] != 0;
    if (nhole && nhole < npx) {
        unsigned char *known = malloc(npx);
        int rc = known ? 0 : ENOMEM;
        for (size_t i = 0; known && i < npx; i++)
            known[i] = !m->hole[i];
        if (rc == 0)
            rc = pfs_fill_membrane(full, 1, w, h, w, known);
        free(known);
        if (rc) {
            free(full);
            free(p);
            return pfs_error_set(err, rc, "no memory to fill a %dx%d luma plane", w, h);
        }
    }
    for (int s = 1; s < m->scale; s *= 2) {
        int hw = w / 2, hh = h / 2;
        for (int y = 0; y < hh; y++)
            for (int x = 0; x < hw; x++) {
                const float *a = full + (size_t)(2 * y) * (size_t)w + (size_t)(2 * x);
                full[(size_t)y * (size_t)hw + (size_t)x] = 0.25f * (a[0] + a[1] + a[w] + a[w + 1]);
            }
        w = hw;
        h = hh;
    }
    p->width = w;
    p->height = h;
    p->px = full;
    *item = p;
    *bytes = (size_t)w * (size_t)h * sizeof(float);
    return 0;
}

struct flow_make {
    const struct window_env *env;
    const struct plane *a, *b;
    int frame_a, frame_b;
};

static int flow_make(void *ud, void **item, size_t *bytes, pfs_error *err)
{
    const struct flow_make *m = ud;
    struct pfs_flow_field *f = calloc(1, sizeof *f);
    if (!f)
        return pfs_error_set(err, ENOMEM, "no memory for a flow field");
    struct pfs_flow_params fp;
    pfs_flow_params_default(&fp);
    int rc;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (m->env->cl) {
        pfs_cl_lock(m->env->cl);
        rc = pfs_flow_cl(m->env->cl, m->a->px, m->b->px, m->a->width, m->a->height, &fp, f, err);
        pfs_cl_unlock(m->env->cl);
    } else {
        rc = pfs_flow_cpu(m->a->px, m->b->px, m->a->width, m->a->height, &fp, f, err);
    }
    if (rc) {
        free(f);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* One line per flow computed: reuse between renders shows as its absence. */
    pfs_log(PFS_LOG_DEBUG, "%s: flow %d -> %d (%dx%d) computed in %.1f ms", m->env->relpath,
            m->frame_a, m->frame_b, f->width, f->height,
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    *item = f;
    *bytes = (size_t)f->width * (size_t)f->height * 2 * sizeof(float);
    return 0;
}

static int get_plane(const struct window *w, int i, int scale, const struct plane **out,
                     pfs_error *err)
{
    const struct window_env *env = w->env;
    char name[4200];
    snprintf(name, sizeof name, "luma|%d|%s|%s", scale, w->keys[i], w->hole_ids[i]);
    struct plane_make m = {w->plate[i], w->hole[i], scale};
    const void *item = NULL;
    int rc = ref_cache_get(env->flows, name, plane_make, &m, plane_free, &item, err);
    *out = item;
    return rc;
}

/* The flow from plate a to plate b of the window. */
static int get_flow(struct window *w, int a, int b, const struct pfs_flow_field **out,
                    pfs_error *err)
{
    const struct window_env *env = w->env;
    const struct plane *pa = NULL, *pb = NULL;
    int scale = w->pub.flow_scale;
    int rc = get_plane(w, a, scale, &pa, err);
    if (rc == 0)
        rc = get_plane(w, b, scale, &pb, err);
    if (rc == 0 && (pa->width != pb->width || pa->height != pb->height))
        rc = pfs_error_set(err, EINVAL, "frames %d and %d differ in size (%dx%d, %dx%d): no "
                           "flow between them", w->frame_no[a], w->frame_no[b],
                           w->plate[a]->width, w->plate[a]->height, w->plate[b]->width,
                           w->plate[b]->height);
    if (rc == 0) {
        char *name = NULL;
        if (asprintf(&name, "flow|%s|%d|%s|%s|%s|%s", FLOW_VERSION, scale, w->keys[a],
                     w->hole_ids[a], w->keys[b], w->hole_ids[b]) < 0)
            rc = pfs_error_set(err, ENOMEM, "out of memory");
        struct flow_make m = {env, pa, pb, w->frame_no[a], w->frame_no[b]};
        const void *item = NULL;
        if (rc == 0)
            rc = ref_cache_get(env->flows, name, flow_make, &m, flow_free, &item, err);
        free(name);
        *out = item;
    }
    ref_cache_release(env->flows, pa);
    ref_cache_release(env->flows, pb);
    return rc;
}

/* What ops call: the flows window_open prepared (NULL for a plate with no
 * flow: missing, out of reach, or framed differently). Computing others here
 * could wait on a render that waits for the device this render holds. */
static int window_flow(void *ud, int a, int b, const struct pfs_flow_field **out, pfs_error *err)
{
    struct window *w = ud;
    int c = w->pub.current;
    *out = NULL;
    if (a < 0 || a >= w->pub.n || b < 0 || b >= w->pub.n || (a != c && b != c))
        return pfs_error_set(err, EINVAL, "flow between window frames %d and %d: only flows "
                             "to and from the rendered frame are prepared", a, b);
    *out = a == c ? w->fwd[b] : w->bwd[a];
    return 0;
}

/* ---- grain ------------------------------------------------------------- */

/*
 * The plate's differences from its nearest neighbour moved onto it, for
 * pfs_grain_cap: per pixel and channel (plate - moved) / sqrt(1 + kept),
 * NaN where the motion is not trusted (in a hole of either frame, off the
 * neighbour, or where forward and backward flow disagree by half a pixel).
 * NULL without a neighbour (or memory).
 */
static float *neighbour_differences(const struct window *w)
{
    int c = w->pub.current, s = w->pub.flow_scale;
    const struct pfs_image *in = w->plate[c];
    for (int d = 1; d < w->pub.n; d++) {
        for (int side = 1; side >= -1; side -= 2) {
            int i = c + side * d;
            if (i < 0 || i >= w->pub.n || !w->fwd[i] || !w->bwd[i])
                continue;
            const struct pfs_flow_field *fwd = w->fwd[i], *bwd = w->bwd[i];
            const struct pfs_image *nb = w->plate[i];
            const unsigned char *ht = w->hole[c], *hs = w->hole[i];
            size_t npx = (size_t)in->width * (size_t)in->height, nw = (size_t)nb->width;
            float *nd = malloc(npx * 3 * sizeof *nd);
            if (!nd)
                return NULL;
            for (int y = 0; y < in->height; y++)
                for (int x = 0; x < in->width; x++) {
                    size_t p = (size_t)y * (size_t)in->width + (size_t)x;
                    float *o = nd + 3 * p;
                    o[0] = o[1] = o[2] = NAN;
                    if (ht[p])
                        continue;
                    double fx = (x + 0.5) / s - 0.5, fy = (y + 0.5) / s - 0.5;
                    double du = s * pfs_flow_sample(fwd->uv, fwd->width, fwd->height, 2, 0, fx, fy);
                    double dv = s * pfs_flow_sample(fwd->uv, fwd->width, fwd->height, 2, 1, fx, fy);
                    double qx = x + du, qy = y + dv;
                    if (!(qx >= 0 && qy >= 0 && qx <= nb->width - 1 && qy <= nb->height - 1))
                        continue;
                    size_t ix = (size_t)qx, iy = (size_t)qy;
                    size_t ix1 = ix + 1 < nw ? ix + 1 : ix;
                    size_t iy1 = iy + 1 < (size_t)nb->height ? iy + 1 : iy;
                    if (hs[iy * nw + ix] || hs[iy * nw + ix1] || hs[iy1 * nw + ix] ||
                        hs[iy1 * nw + ix1])
                        continue;
                    double bx = (qx + 0.5) / s - 0.5, by = (qy + 0.5) / s - 0.5;
                    double bu = s * pfs_flow_sample(bwd->uv, bwd->width, bwd->height, 2, 0, bx, by);
                    double bv = s * pfs_flow_sample(bwd->uv, bwd->width, bwd->height, 2, 1, bx, by);
                    if (hypot(du + bu, dv + bv) > 0.5)
                        continue;
                    float norm = 1.0f / sqrtf(1.0f + pfs_flow_sample_kept(qx, qy));
                    for (int ch = 0; ch < 3; ch++)
                        o[ch] = (in->px[4 * p + (size_t)ch] -
                                 pfs_flow_sample(nb->px, nb->width, nb->height, 4, ch, qx, qy)) *
                                norm;
                }
            return nd;
        }
    }
    return NULL;
}

static int window_grain(void *ud, const struct pfs_grain_model **out, pfs_error *err)
{
    struct window *w = ud;
    if (!w->grain_made) {
        const struct pfs_image *in = w->plate[w->pub.current];
        pfs_error_clear(&w->grain_err);
        w->grain_rc = pfs_grain_estimate(in->px, in->width, in->height, 4 * in->width,
                                         w->hole[w->pub.current], &w->grain);
        if (w->grain_rc)
            pfs_error_set(&w->grain_err, w->grain_rc, "%s: no memory to measure the grain",
                          w->env->relpath);
        if (w->grain_rc == 0 && w->grain.nbins > 0) {
            float *nd = neighbour_differences(w);
            if (nd)
                pfs_grain_cap(&w->grain, in->px, 4 * in->width, nd, in->width, in->height);
            free(nd);
        }
        w->grain_made = true;
    }
    *out = &w->grain;
    if (w->grain_rc && err)
        *err = w->grain_err;
    return w->grain_rc;
}

/* ---- holes ------------------------------------------------------------- */

/* Non-zero where any local op of the shot removes something from this
 * plate: the core of its matte (the shape grown by dilate, which covers
 * edge fringes). Its feather is plate being blended, clean enough to fill
 * other frames from. */
static int make_hole(const struct pfs_frame_ops *ops, const struct pfs_image *img,
                     unsigned char *hole, pfs_error *err)
{
    size_t n = (size_t)img->width * (size_t)img->height;
    memset(hole, 0, n);
    float *cover = NULL;
    for (int i = 0; ops && i < ops->nops; i++) {
        const struct pfs_op_desc *d = ops->ops[i].desc;
        if (d->kind != PFS_OP_LOCAL_SYNTH || !d->mask)
            continue;
        if (!cover && !(cover = malloc(n * sizeof *cover)))
            return pfs_error_set(err, ENOMEM, "no memory for a %dx%d matte", img->width,
                                 img->height);
        int rc = d->mask(ops->ops[i].vals, img, cover, err);
        if (rc) {
            free(cover);
            return rc;
        }
        for (size_t k = 0; k < n; k++)
            hole[k] |= cover[k] >= 1.0f;
    }
    free(cover);
    return 0;
}

/* ---- open, close ------------------------------------------------------- */

struct plate_decode {
    const struct window_env *env;
    int i;
};

static int plate_decode(void *ud, struct pfs_image *img, pfs_error *err)
{
    const struct plate_decode *d = ud;
    return d->env->decode(d->env->decode_ud, d->i, img, err);
}

int window_open(const struct window_env *env, const struct window_plate *p, int n, int current,
                int reach, uint64_t seed, struct pfs_op_frames **out, pfs_error *err)
{
    *out = NULL;
    struct window *w = calloc(1, sizeof *w);
    if (!w)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", env->relpath);
    w->env = env;
    w->frame_no = calloc((size_t)n, sizeof *w->frame_no);
    w->keys = calloc((size_t)n, sizeof *w->keys);
    w->hole_ids = calloc((size_t)n, sizeof *w->hole_ids);
    w->plate = calloc((size_t)n, sizeof *w->plate);
    w->hole = calloc((size_t)n, sizeof *w->hole);
    w->fwd = calloc((size_t)n, sizeof *w->fwd);
    w->bwd = calloc((size_t)n, sizeof *w->bwd);
    w->pub.n = n;
    w->pub.current = current;
    w->pub.frame_no = w->frame_no;
    w->pub.plate = w->plate;
    w->pub.hole = (const unsigned char *const *)w->hole;
    w->pub.flow = window_flow;
    w->pub.flow_ud = w;
    w->pub.grain = window_grain;
    w->pub.grain_ud = w;
    w->pub.seed = seed;
    *out = &w->pub;
    if (!w->frame_no || !w->keys || !w->hole_ids || !w->plate || !w->hole || !w->fwd || !w->bwd)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", env->relpath);

    for (int i = 0; i < n; i++) {
        w->frame_no[i] = p[i].frame_no;
        w->keys[i] = p[i].key;
        window_hole_id(p[i].ops, w->hole_ids[i]);
        int near = abs(i - current) <= reach;
        if (!p[i].key || !near)
            continue;
        struct plate_decode d = {env, i};
        int rc = ref_cache_get_image(env->plates, p[i].key, plate_decode, &d, &w->plate[i], err);
        if (rc) {
            pfs_error_prefix(err, "%s: neighbouring frame %d", env->relpath, p[i].frame_no);
            return rc;
        }
        size_t px = (size_t)w->plate[i]->width * (size_t)w->plate[i]->height;
        if (!(w->hole[i] = malloc(px)))
            return pfs_error_set(err, ENOMEM, "%s: out of memory", env->relpath);
        rc = make_hole(p[i].ops, w->plate[i], w->hole[i], err);
        if (rc)
            return rc;
    }
    if (!w->plate[current])
        return pfs_error_set(err, EIO, "%s: the frame itself could not be read", env->relpath);
    w->pub.flow_scale = flow_scale_for(w->plate[current]->width);
    for (int i = 0; i < n; i++) {
        if (i == current || !w->plate[i])
            continue;
        const struct pfs_image *a = w->plate[current], *b = w->plate[i];
        if (a->width != b->width || a->height != b->height || a->origin_x != b->origin_x ||
            a->origin_y != b->origin_y)
            continue; /* a neighbour framed differently is no source */
        int rc = get_flow(w, current, i, &w->fwd[i], err);
        if (rc == 0)
            rc = get_flow(w, i, current, &w->bwd[i], err);
        if (rc) {
            pfs_error_prefix(err, "%s: flow to frame %d", env->relpath, p[i].frame_no);
            return rc;
        }
    }
    return 0;
}

void window_close(const struct window_env *env, struct pfs_op_frames *pub)
{
    if (!pub)
        return;
    struct window *w = (struct window *)pub;
    for (int i = 0; i < pub->n; i++) {
        if (w->fwd)
            ref_cache_release(env->flows, w->fwd[i]);
        if (w->bwd)
            ref_cache_release(env->flows, w->bwd[i]);
        if (w->plate)
            ref_cache_release(env->plates, w->plate[i]);
        if (w->hole)
            free(w->hole[i]);
    }
    free(w->frame_no);
    free(w->keys);
    free(w->hole_ids);
    free((void *)w->plate);
    free(w->hole);
    free((void *)w->fwd);
    free((void *)w->bwd);
    free(w);
}
