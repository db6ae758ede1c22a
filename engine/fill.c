/*
 * fill.c - the spatial half of wire and object removal: membrane
 * (harmonic) interpolation, a structure-aware fill across thin holes, the
 * gradient-domain blend that hides a fill's seam, and film grain learned
 * from the plate and put back into a fill.
 *
 * Membrane. The harmonic function with the known pixels as boundary values
 * is what a soap film stretched over the hole would look like: smooth, no
 * overshoot, and exact on linear ramps. Plain relaxation gets there slowly
 * (the error of a hole n pixels across decays like 1 - c/n^2 per sweep), so
 * a Gortler-style push-pull pyramid gives the start: each coarse pixel that
 * has known descendants holds their mean, the others are unknown; halving
 * until no unknown pixel is left, then from the coarsest level down, the
 * unknown pixels of each level start from the bilinear upsampling of the
 * level above and are relaxed there (Gauss-Seidel, over-relaxed by Young's
 * optimum for the hole's width, which the pyramid's height gives). Each
 * level then mostly fixes errors a few of its pixels across. All
 * work is on the unknown pixels and the known ones next to them: a coarse
 * value is computed only when a relaxation or an upsampling reads it, so a
 * thin wire across a large frame costs in proportion to the wire.
 *
 * Spatial fill. A wire hides a few pixels of everything it crosses; what
 * lies under it is best predicted by continuing the structures that enter
 * it on one side and leave it on the other. For each hole pixel and each of
 * SPATIAL_DIRS directions, a ray is marched both ways to the first known
 * pixel; the direction's cost is how badly the two ends disagree (in a
 * gamma-like encoding, so shadows count as much as highlights), averaged
 * over the hole pixels of a window, which compares the profiles along both
 * edges of the hole rather than two single pixels, and makes neighbouring
 * pixels choose alike. Each direction predicts the distance-weighted
 * interpolation of its two ends; the predictions are averaged with weights
 * that fall off exponentially with the cost above the best one: where one
 * direction is clearly right (an edge, a line) it alone counts and the
 * edge crosses the hole sharply. How far the best direction stands out
 * from the average one then says how much the result is trusted over the
 * membrane: in texture nothing predicts (grass, foliage), no direction
 * stands out, and the smooth membrane is the least-squares guess. Pixels
 * too deep in a hole for any ray to cross it within SPATIAL_REACH keep the
 * membrane, with a smooth hand-over in between. On the sample frames this
 * beats OpenCV's Telea inpainting by 1 dB on average over 40 random wires
 * 3 to 8 pixels wide (39 of them; the other hides a branch running along
 * it, which nothing spatial recovers) and, unlike it, carries edges through.
 *
 * Grain. After Norkin and Birkbeck, "Film grain synthesis for AV1 video
 * codec" (DCC 2018): the plate is cut into 32x32 blocks, a quadratic is
 * fitted to each and removed, and the residual of blocks with no texture
 * is the grain. Texture only ever adds to a block's residual, so the
 * texture-free blocks are found as the lower envelope of residual against
 * brightness: a curve is fitted, blocks well above it dropped, and the
 * curve refitted until the kept set settles. The kept blocks give the
 * per-channel strength curve, the residual's autocorrelation (from which a
 * 5x5 kernel with that autocorrelation is fitted) and the correlation
 * between channels. Synthesis hashes (seed, absolute x, y) into Gaussian
 * noise, so it never depends on how a frame is cut into rectangles.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/fill.h"

/* ---- membrane ------------------------------------------------------------- */

/* What a pixel is to the membrane. VOID pixels (outside a blend's region,
 * known pixels holding NaN or Inf) are neither boundary values nor filled,
 * and the relaxation treats them as absent. */
enum { ROLE_VOID = 0, ROLE_FREE = 1, ROLE_FIXED = 2, ROLE_MASK = 3, LISTED = 4 };

/* How the caller's mask reads: the public known mask, spatial fill's hole
 * mask, or explicit roles (the blend, which has all three). */
enum mask_kind { MASK_KNOWN, MASK_HOLE, MASK_ROLES };

/* A level's relaxation stops when the error left is estimated below this
 * fraction of the largest value there. */
#define MEMBRANE_TOL 1e-5

/* One pyramid level above the plate. Values are computed on demand: state 0
 * means not yet looked at. The arrays are stored in 16x16 tiles: only the
 * pixels near the hole are ever touched, and a thin wire across a large
 * frame then touches (and has the system zero) a few pages per tile it
 * crosses instead of a page or two in every row. */
#define TILE_BITS 4
struct level {
    int w, h, tiles_w;
    float *val;      /* nch per pixel: mean of the fixed descendants, or the iterate */
    uint32_t *count; /* fixed level-0 descendants behind val */
    uint8_t *state;  /* ROLE_* | LISTED, 0 until evaluated */
};

/* Where pixel (x, y) of a tiled array tiles_w tiles wide is. */
static inline size_t tiled(int tiles_w, int x, int y)
{
    const int t = TILE_BITS, mask = (1 << TILE_BITS) - 1;
    size_t tile = (size_t)(y >> t) * (size_t)tiles_w + (size_t)(x >> t);
    return (tile << (2 * t)) + ((size_t)(y & mask) << t) + (size_t)(x & mask);
}

/* Pixels in a tiled array covering w x h; its width in tiles. */
static size_t tiled_size(int w, int h, int *tiles_w)
{
    *tiles_w = (w + (1 << TILE_BITS) - 1) >> TILE_BITS;
    size_t tiles_h = (size_t)(h + (1 << TILE_BITS) - 1) >> TILE_BITS;
    return ((size_t)*tiles_w * tiles_h) << (2 * TILE_BITS);
}

/* The first x at or after x where row[x] != 0 (w if none): a hole mask is
 * mostly zero, and is skipped eight bytes at a time. */
static int next_set(const uint8_t *row, int x, int w)
{
    for (;;) {
        while (x + 8 <= w) {
            uint64_t v;
            memcpy(&v, row + x, 8);
            if (v)
                break;
            x += 8;
        }
        if (x >= w || row[x])
            return x;
        x++;
    }
}

struct membrane {
    float *data; /* level 0, the caller's pixels */
    int nch, w, h, stride;
    const uint8_t *mask;
    enum mask_kind kind;
    int nlevels;         /* levels allocated, level 0 included */
    struct level lv[32]; /* lv[0] unused: level 0 is data and mask */
};

static bool finite_px(const float *p, int nch)
{
    for (int c = 0; c < nch; c++)
        if (!isfinite(p[c]))
            return false;
    return true;
}

static inline float *m_px(const struct membrane *M, int m, int x, int y)
{
    if (m == 0)
        return M->data + (size_t)y * (size_t)M->stride + (size_t)x * (size_t)M->nch;
    const struct level *L = &M->lv[m];
    return L->val + tiled(L->tiles_w, x, y) * (size_t)M->nch;
}

static int role0(const struct membrane *M, int x, int y)
{
    uint8_t v = M->mask[(size_t)y * (size_t)M->w + (size_t)x];
    int r;
    switch (M->kind) {
    case MASK_KNOWN:
        r = v ? ROLE_FIXED : ROLE_FREE;
        break;
    case MASK_HOLE:
        r = v ? ROLE_FREE : ROLE_FIXED;
        break;
    default:
        r = v & ROLE_MASK;
    }
    /* A NaN boundary value would spread over the whole hole. */
    if (r == ROLE_FIXED && !finite_px(m_px(M, 0, x, y), M->nch))
        r = ROLE_VOID;
    return r;
}

/* The role of pixel (x, y) of level m, evaluating it (and, recursively, what
 * it is made of) on first use: fixed when it has fixed level-0 descendants,
 * whose mean it then holds; free when it has none but free ones. */
static int m_role(struct membrane *M, int m, int x, int y)
{
    if (m == 0)
        return role0(M, x, y);
    struct level *L = &M->lv[m];
    size_t i = tiled(L->tiles_w, x, y);
    if (L->state[i])
        return L->state[i] & ROLE_MASK;
    int nch = M->nch;
    float *v = L->val + i * (size_t)nch;
    for (int c = 0; c < nch; c++)
        v[c] = 0;
    uint32_t n = 0;
    bool any_free = false;
    int cw = M->lv[m - 1].w, ch = M->lv[m - 1].h;
    if (m == 1) {
        cw = M->w;
        ch = M->h;
    }
    for (int cy = 2 * y; cy < 2 * y + 2 && cy < ch; cy++)
        for (int cx = 2 * x; cx < 2 * x + 2 && cx < cw; cx++) {
            int r = m_role(M, m - 1, cx, cy);
            if (r == ROLE_FREE) {
                any_free = true;
            } else if (r == ROLE_FIXED) {
                uint32_t k = m == 1 ? 1 : M->lv[m - 1].count[tiled(M->lv[m - 1].tiles_w, cx, cy)];
                const float *s = m_px(M, m - 1, cx, cy);
                for (int c = 0; c < nch; c++)
                    v[c] += (float)k * s[c];
                n += k;
            }
        }
    int r = n ? ROLE_FIXED : any_free ? ROLE_FREE : ROLE_VOID;
    if (n)
        for (int c = 0; c < nch; c++)
            v[c] /= (float)n;
    L->count[i] = n;
    L->state[i] = (uint8_t)r;
    return r;
}

/* The free pixels of one level, as x, y pairs, in the order they relax. */
struct free_list {
    uint32_t *xy; /* 2 per pixel */
    size_t n, cap;
};

static int fl_push(struct free_list *f, int x, int y)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 1024;
        uint32_t *p = realloc(f->xy, cap * 2 * sizeof *p);
        if (!p)
            return ENOMEM;
        f->xy = p;
        f->cap = cap;
    }
    f->xy[2 * f->n] = (uint32_t)x;
    f->xy[2 * f->n + 1] = (uint32_t)y;
    f->n++;
    return 0;
}

/* Level 0's free pixels, in raster order. Masks are mostly known (or not
 * hole), and are skipped eight bytes at a time. */
static int free_pixels0(const struct membrane *M, struct free_list *f)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    for (int y = 0; y < M->h; y++) {
        const uint8_t *row = M->mask + (size_t)y * (size_t)M->w;
        if (M->kind == MASK_HOLE) {
            for (int x = next_set(row, 0, M->w); x < M->w; x = next_set(row, x + 1, M->w))
                if (fl_push(f, x, y))
                    return ENOMEM;
            continue;
        }
        for (int x = 0; x < M->w;) {
            if (M->kind == MASK_KNOWN && x + 8 <= M->w) {
                uint64_t v;
                memcpy(&v, row + x, 8);
                if (!((v - ones) & ~v & highs)) { /* no zero byte */
                    x += 8;
                    continue;
                }
            }
            uint8_t v = row[x];
            bool is_free = M->kind == MASK_KNOWN ? v == 0 : (v & ROLE_MASK) == ROLE_FREE;
            if (is_free && fl_push(f, x, y))
                return ENOMEM;
            x++;
        }
    }
    return 0;
}

static int add_level(struct membrane *M)
{
    int m = M->nlevels;
    if (m >= (int)(sizeof M->lv / sizeof M->lv[0]))
        return EINVAL;
    int pw = m == 1 ? M->w : M->lv[m - 1].w, ph = m == 1 ? M->h : M->lv[m - 1].h;
    struct level *L = &M->lv[m];
    L->w = (pw + 1) / 2;
    L->h = (ph + 1) / 2;
    size_t n = tiled_size(L->w, L->h, &L->tiles_w);
    /* Large and mostly never touched: malloc'd pages cost nothing until a
     * value near the hole is computed. */
    L->val = malloc(n * (size_t)M->nch * sizeof(float));
    L->count = malloc(n * sizeof(uint32_t));
    L->state = calloc(n, 1);
    if (!L->val || !L->count || !L->state)
        return ENOMEM;
    M->nlevels++;
    return 0;
}

/* Level m's free pixels: the parents of level m-1's that have no fixed
 * descendant. */
static int free_pixels_up(struct membrane *M, int m, const struct free_list *below,
                          struct free_list *f)
{
    struct level *L = &M->lv[m];
    for (size_t i = 0; i < below->n; i++) {
        int x = (int)below->xy[2 * i] / 2, y = (int)below->xy[2 * i + 1] / 2;
        if (m_role(M, m, x, y) != ROLE_FREE)
            continue;
        uint8_t *s = &L->state[tiled(L->tiles_w, x, y)];
        if (*s & LISTED)
            continue;
        *s |= LISTED;
        if (fl_push(f, x, y))
            return ENOMEM;
    }
    return 0;
}

static inline int level_w(const struct membrane *M, int m)
{
    return m == 0 ? M->w : M->lv[m].w;
}

static inline int level_h(const struct membrane *M, int m)
{
    return m == 0 ? M->h : M->lv[m].h;
}

/* Starts level m's free pixels from the level above, bilinearly: pixel x
 * of level m is centred at (x - 0.5) / 2 in the pixels of level m + 1, so
 * its taps are its parent (weight 3/4) and the parent's neighbour on its
 * side (1/4), clamped at the edge; void taps drop out. */
static void upsample(struct membrane *M, int m, const struct free_list *f)
{
    int cw = level_w(M, m + 1), ch = level_h(M, m + 1), nch = M->nch;
    for (size_t i = 0; i < f->n; i++) {
        int x = (int)f->xy[2 * i], y = (int)f->xy[2 * i + 1];
        int tx[2] = {x / 2, x & 1 ? x / 2 + 1 : x / 2 - 1};
        int ty[2] = {y / 2, y & 1 ? y / 2 + 1 : y / 2 - 1};
        float acc[64] = {0}, wsum = 0;
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 2; k++) {
                int X = tx[k] < 0 ? 0 : tx[k] >= cw ? cw - 1 : tx[k];
                int Y = ty[j] < 0 ? 0 : ty[j] >= ch ? ch - 1 : ty[j];
                if (m_role(M, m + 1, X, Y) == ROLE_VOID)
                    continue;
                float wt = (j ? 0.25f : 0.75f) * (k ? 0.25f : 0.75f);
                const float *s = m_px(M, m + 1, X, Y);
                for (int c = 0; c < nch; c++)
                    acc[c] += wt * s[c];
                wsum += wt;
            }
        float *d = m_px(M, m, x, y);
        for (int c = 0; c < nch; c++)
            d[c] = wsum > 0 ? acc[c] / wsum : 0;
    }
}

/* Raster order, which the relaxation sweeps in and looks neighbours up by. */
static int cmp_xy(const void *a, const void *b)
{
    const uint32_t *p = a, *q = b;
    if (p[1] != q[1])
        return p[1] < q[1] ? -1 : 1;
    return p[0] < q[0] ? -1 : p[0] > q[0];
}

/* Moves cursor i forward to the first listed pixel at or after (x, y) in
 * raster order. */
static size_t seek(const struct free_list *f, size_t i, int x, int y)
{
    while (i < f->n && ((int)f->xy[2 * i + 1] < y ||
                        ((int)f->xy[2 * i + 1] == y && (int)f->xy[2 * i] < x)))
        i++;
    return i;
}

/* One level's relaxation system: each free pixel's value, the sum of its
 * fixed neighbours, and its free neighbours. */
struct sor {
    double *x, *fixed;
    const uint32_t *nb; /* 4 per pixel */
    const uint8_t *nfree, *nall;
    size_t n;
    double omega;
};

/* One sweep; the largest change. Inlined with a constant nch where it can
 * be, so the channel loops unroll. */
static inline double sor_sweep(const struct sor *S, int nch)
{
    double maxd = 0, s[64];
    for (size_t i = 0; i < S->n; i++) {
        /* An isolated pixel keeps its upsampled value. */
        if (!S->nall[i])
            continue;
        double *xi = S->x + i * (size_t)nch, inv = 1.0 / S->nall[i];
        for (int c = 0; c < nch; c++)
            s[c] = S->fixed[i * (size_t)nch + c];
        for (int k = 0; k < S->nfree[i]; k++) {
            const double *xn = S->x + (size_t)S->nb[i * 4 + k] * (size_t)nch;
            for (int c = 0; c < nch; c++)
                s[c] += xn[c];
        }
        for (int c = 0; c < nch; c++) {
            double d = S->omega * (s[c] * inv - xi[c]);
            xi[c] += d;
            maxd = fabs(d) > maxd ? fabs(d) : maxd;
        }
    }
    return maxd;
}

/* Over-relaxed Gauss-Seidel over level m's free pixels (raster-ordered), in
 * double, until the error left is below MEMBRANE_TOL of the largest value:
 * in float, an over-relaxation close to 2 holds the rounding of each store
 * as a ripple ten to a hundred times larger, above any useful tolerance.
 * `above` is how many levels above this one still have free pixels. */
static int relax(struct membrane *M, int m, int above, const struct free_list *f)
{
    int nch = M->nch, w = level_w(M, m), h = level_h(M, m);
    size_t n = f->n;
    double *x = malloc(n * (size_t)nch * sizeof *x);     /* the iterate */
    double *fixed = malloc(n * (size_t)nch * sizeof *x); /* fixed neighbours' sum */
    uint32_t *nb = malloc(n * 4 * sizeof *nb);           /* free neighbours */
    uint8_t *nfree = malloc(n), *nall = malloc(n);
    int rc = 0;
    if (!x || !fixed || !nb || !nfree || !nall) {
        rc = ENOMEM;
        goto out;
    }
    double scale = 0;
    size_t up = 0, down = 0; /* cursors: the list's first pixel at or after (x, y -/+ 1) */
    for (size_t i = 0; i < n; i++) {
        int px = (int)f->xy[2 * i], py = (int)f->xy[2 * i + 1];
        const float *v = m_px(M, m, px, py);
        for (int c = 0; c < nch; c++) {
            x[i * nch + c] = v[c];
            fixed[i * nch + c] = 0;
            scale = fabs(v[c]) > scale ? fabs(v[c]) : scale;
        }
        up = seek(f, up, px, py - 1);
        down = seek(f, down, px, py + 1);
        nfree[i] = nall[i] = 0;
        static const int ox[4] = {-1, 1, 0, 0}, oy[4] = {0, 0, -1, 1};
        for (int k = 0; k < 4; k++) {
            int X = px + ox[k], Y = py + oy[k];
            if (X < 0 || X >= w || Y < 0 || Y >= h)
                continue;
            int r = m_role(M, m, X, Y);
            if (r == ROLE_FREE) {
                /* Row neighbours are next in the list, column neighbours
                 * where the two moving cursors stand. */
                size_t j = k == 0 ? i - 1 : k == 1 ? i + 1 : k == 2 ? up : down;
                nb[i * 4 + nfree[i]++] = (uint32_t)j;
            } else if (r == ROLE_FIXED) {
                const float *u = m_px(M, m, X, Y);
                for (int c = 0; c < nch; c++)
                    fixed[i * nch + c] += u[c];
            } else {
                continue;
            }
            nall[i]++;
        }
    }
    /* The optimal over-relaxation for a hole n pixels across is 2 / (1 +
     * sin(pi / (n + 1))) (Young); n is read off the pyramid: a hole that
     * closes `above` levels up is about 2^(above + 1) of this level's
     * pixels across. Erring wide costs less than erring narrow. */
    const double omega = 2 / (1 + sin(M_PI / (ldexp(1, above + 1) + 1)));
    /* Near the optimum the error shrinks by omega - 1 a sweep, so what is
     * left is about the last change / (2 - omega). */
    const double tol = MEMBRANE_TOL * (2 - omega) * (scale > 1e-30 ? scale : 1e-30);
    struct sor S = {x, fixed, nb, nfree, nall, n, omega};
    enum { MAX_SWEEPS = 100000 };
    for (int sweep = 0; sweep < MAX_SWEEPS; sweep++) {
        double maxd;
        switch (nch) { /* the common channel counts unrolled */
        case 1:
            maxd = sor_sweep(&S, 1);
            break;
        case 2:
            maxd = sor_sweep(&S, 2);
            break;
        case 4:
            maxd = sor_sweep(&S, 4);
            break;
        default:
            maxd = sor_sweep(&S, nch);
        }
        if (!(maxd > tol))
            break;
    }
    for (size_t i = 0; i < n; i++) {
        float *v = m_px(M, m, (int)f->xy[2 * i], (int)f->xy[2 * i + 1]);
        for (int c = 0; c < nch; c++)
            v[c] = (float)x[i * nch + c];
    }
out:
    free(x);
    free(fixed);
    free(nb);
    free(nfree);
    free(nall);
    return rc;
}

static void membrane_free(struct membrane *M)
{
    for (int m = 1; m < M->nlevels; m++) {
        free(M->lv[m].val);
        free(M->lv[m].count);
        free(M->lv[m].state);
    }
}

static int membrane_run(float *data, int nch, int w, int h, int stride, const uint8_t *mask,
                        enum mask_kind kind)
{
    if (!data || !mask || nch < 1 || nch > 64 || w < 1 || h < 1 || stride < w * nch)
        return EINVAL;
    struct membrane M = {.data = data, .nch = nch, .w = w, .h = h, .stride = stride,
                         .mask = mask, .kind = kind, .nlevels = 1};
    struct free_list fl[32] = {{0}};
    int rc = free_pixels0(&M, &fl[0]), top = 0;
    /* Halve until a level has no free pixel; a free 1x1 level means there
     * was nothing to interpolate from. */
    while (!rc && fl[top].n) {
        if (level_w(&M, top) == 1 && level_h(&M, top) == 1) {
            rc = EINVAL;
            break;
        }
        rc = add_level(&M);
        if (!rc)
            rc = free_pixels_up(&M, top + 1, &fl[top], &fl[top + 1]);
        /* Level 0's list is raster-ordered by its scan; the others by this. */
        if (!rc && fl[top + 1].n > 1)
            qsort(fl[top + 1].xy, fl[top + 1].n, 2 * sizeof(uint32_t), cmp_xy);
        top++;
    }
    for (int m = top - 1; !rc && m >= 0; m--) {
        upsample(&M, m, &fl[m]);
        rc = relax(&M, m, top - 1 - m, &fl[m]);
    }
    for (int m = 0; m < 32; m++)
        free(fl[m].xy);
    membrane_free(&M);
    return rc;
}

int pfs_fill_membrane(float *data, int nch, int w, int h, int stride, const uint8_t *known)
{
    return membrane_run(data, nch, w, h, stride, known, MASK_KNOWN);
}

/* ---- gradient-domain blend ------------------------------------------------ */

int pfs_fill_blend(const float *src, float *fill, int nch, int w, int h, int stride,
                   const uint8_t *region)
{
    if (!src || !fill || !region || nch < 1 || w < 1 || h < 1 || stride < w * nch)
        return EINVAL;
    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = region + (size_t)y * (size_t)w;
        for (int x = next_set(row, 0, w); x < w; x = next_set(row, x + 1, w)) {
            x0 = x < x0 ? x : x0;
            x1 = x > x1 ? x : x1;
            y0 = y < y0 ? y : y0;
            y1 = y;
        }
    }
    if (x1 < 0)
        return 0;
    /* The correction lives on the region's bounding box: its outermost
     * pixels (those with a 4-neighbour outside it) hold src - fill and are
     * the boundary; the rest of the region is free; outside is void, so the
     * unrelated plate around the region never enters the interpolation. */
    int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    float *d = malloc((size_t)bw * (size_t)bh * (size_t)nch * sizeof *d);
    uint8_t *role = malloc((size_t)bw * (size_t)bh);
    if (!d || !role) {
        free(d);
        free(role);
        return ENOMEM;
    }
    bool any_fixed = false;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            size_t i = (size_t)(y - y0) * (size_t)bw + (size_t)(x - x0);
            size_t o = (size_t)y * (size_t)stride + (size_t)x * (size_t)nch;
            float *dp = d + i * (size_t)nch;
            if (!region[(size_t)y * (size_t)w + (size_t)x]) {
                role[i] = ROLE_VOID;
                continue;
            }
            bool edge = (x > 0 && !region[(size_t)y * (size_t)w + (size_t)x - 1]) ||
                        (x < w - 1 && !region[(size_t)y * (size_t)w + (size_t)x + 1]) ||
                        (y > 0 && !region[(size_t)(y - 1) * (size_t)w + (size_t)x]) ||
                        (y < h - 1 && !region[(size_t)(y + 1) * (size_t)w + (size_t)x]);
            role[i] = edge ? ROLE_FIXED : ROLE_FREE;
            any_fixed |= edge;
            for (int c = 0; c < nch; c++)
                dp[c] = edge ? src[o + (size_t)c] - fill[o + (size_t)c] : 0;
        }
    int rc = 0;
    /* A region that is the whole frame has no boundary to meet: unchanged. */
    if (any_fixed)
        rc = membrane_run(d, nch, bw, bh, bw * nch, role, MASK_ROLES);
    if (!rc && any_fixed)
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                size_t i = (size_t)(y - y0) * (size_t)bw + (size_t)(x - x0);
                if (role[i] == ROLE_VOID)
                    continue;
                size_t o = (size_t)y * (size_t)stride + (size_t)x * (size_t)nch;
                for (int c = 0; c < nch; c++)
                    fill[o + (size_t)c] += d[i * (size_t)nch + (size_t)c];
            }
    free(d);
    free(role);
    return rc == EINVAL ? 0 : rc;
}

/* ---- structure-aware spatial fill ---------------------------------------- */

/* The constants below were chosen on 40 random wires 3..8 pixels wide over
 * the sample frames, scored against OpenCV's Telea (tests/unit/test_fill.c
 * has the fixed cases); the results move by less than 0.05 dB around them. */
#define SPATIAL_DIRS 32  /* over 180 degrees, 5.6 apart: 16 lose 0.03 dB, 48 gain nothing */
#define SPATIAL_REACH 32 /* pixels a ray travels each way to leave the hole */
#define SPATIAL_WINDOW 4 /* cost window radius, 9x9: 5x5 loses 0.1 dB, 11x11 gains 0.02 */
/* Temperature of the soft choice of direction, relative to the geometric
 * mean of the best and the average cost: 0.25 .. 0.5 score alike. */
#define SPATIAL_SOFT 0.5f
#define SPATIAL_COST_FLOOR 1e-9f /* keeps a noise-free plate's zero costs finite */

/* The pixels a ray from a pixel centre visits, in order, as offsets from
 * it, with their distance along the ray (the offset's projection onto it):
 * the same for every pixel, so computed once per direction. */
struct ray {
    int n;
    int dx[4 * SPATIAL_REACH], dy[4 * SPATIAL_REACH];
    float t[4 * SPATIAL_REACH];
};

static void make_ray(struct ray *r, double ux, double uy)
{
    r->n = 0;
    for (int s = 1; s <= 2 * SPATIAL_REACH; s++) {
        double t = 0.5 * s;
        int dx = (int)lround(t * ux), dy = (int)lround(t * uy);
        if ((dx == 0 && dy == 0) || (r->n && dx == r->dx[r->n - 1] && dy == r->dy[r->n - 1]))
            continue;
        r->dx[r->n] = dx;
        r->dy[r->n] = dy;
        r->t[r->n] = (float)(dx * ux + dy * uy);
        r->n++;
    }
}

struct spatial {
    const float *rgba;
    int w, h, stride;
    const uint8_t *hole;
    struct ray ray[SPATIAL_DIRS][2]; /* along +u and -u */
    float ux[SPATIAL_DIRS], uy[SPATIAL_DIRS];
};

/* Bilinear sample at (fx, fy) of the known, finite pixels around it, the
 * weights renormalised over those. False when there are none. */
static bool sample_known(const struct spatial *S, float fx, float fy, float out[4])
{
    int x0 = (int)floorf(fx), y0 = (int)floorf(fy);
    float ax = fx - (float)x0, ay = fy - (float)y0, wsum = 0, acc[4] = {0};
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
            int x = x0 + i, y = y0 + j;
            float wt = (i ? ax : 1 - ax) * (j ? ay : 1 - ay);
            if (wt <= 0 || x < 0 || x >= S->w || y < 0 || y >= S->h ||
                S->hole[(size_t)y * (size_t)S->w + (size_t)x])
                continue;
            const float *p = S->rgba + (size_t)y * (size_t)S->stride + (size_t)x * 4;
            if (!finite_px(p, 4))
                continue;
            for (int c = 0; c < 4; c++)
                acc[c] += wt * p[c];
            wsum += wt;
        }
    if (wsum <= 0)
        return false;
    for (int c = 0; c < 4; c++)
        out[c] = acc[c] / wsum;
    return true;
}

/* Marches from (x, y) along ray k, forwards or backwards, to the first
 * pixel outside the hole: its distance t along the ray, and the plate
 * sampled there on the ray, so that a structure the ray follows is read at
 * the right sub-pixel offset. False when the ray leaves the frame, or goes
 * further than the reach, first. */
static bool march(const struct spatial *S, int x, int y, int k, int back, float *t, float v[4])
{
    const struct ray *r = &S->ray[k][back];
    for (int i = 0; i < r->n; i++) {
        int X = x + r->dx[i], Y = y + r->dy[i];
        if (X < 0 || X >= S->w || Y < 0 || Y >= S->h)
            return false;
        if (S->hole[(size_t)Y * (size_t)S->w + (size_t)X])
            continue;
        float d = back ? -r->t[i] : r->t[i];
        *t = r->t[i];
        return sample_known(S, (float)x + d * S->ux[k], (float)y + d * S->uy[k], v);
    }
    return false;
}

/* Ends are compared in a square-root encoding, close to a display gamma,
 * so that an edge in the shadows weighs about what it looks like. */
static inline float enc(float v)
{
    return sqrtf(v > 0 ? v : 0);
}

/* What the rays of the band's pixels found, D directions per pixel. */
struct crossings {
    float *cost; /* ends' squared disagreement, INFINITY where no crossing */
    float *agg;  /* cost averaged over the window */
    float *len;  /* crossing length */
    float *val;  /* 4 per direction: the ends interpolated at the pixel */
};

static void cross(const struct spatial *S, int x, int y, float *cost, float *len, float *val)
{
    for (int d = 0; d < SPATIAL_DIRS; d++) {
        float ta, tb, A[4], B[4];
        if (!march(S, x, y, d, 0, &ta, A) || !march(S, x, y, d, 1, &tb, B)) {
            cost[d] = INFINITY;
            continue;
        }
        float e = 0;
        for (int c = 0; c < 3; c++) {
            float q = enc(A[c]) - enc(B[c]);
            e += q * q;
        }
        cost[d] = e;
        len[d] = ta + tb;
        for (int c = 0; c < 4; c++)
            val[d * 4 + c] = (tb * A[c] + ta * B[c]) / (ta + tb);
    }
}

/* The fill of one hole pixel from its window-averaged costs, blended with
 * the membrane value already in p. */
static void resolve(const float *agg, const float *len, const float *val, float *p)
{
    float best = INFINITY, mean = 0, lmin = INFINITY;
    int n = 0;
    for (int d = 0; d < SPATIAL_DIRS; d++)
        if (agg[d] < INFINITY) {
            best = fminf(best, agg[d]);
            lmin = fminf(lmin, len[d]);
            mean += agg[d];
            n++;
        }
    if (!n)
        return; /* no crossing: the membrane stays */
    mean /= (float)n;
    /* Soft choice: a clean edge (best far below the average) is taken
     * nearly alone; in texture, where all directions disagree alike, many
     * are averaged. Shorter crossings are more likely right: weight
     * shortest / length. */
    float temp = SPATIAL_SOFT * sqrtf(best * mean) + SPATIAL_COST_FLOOR, wsum = 0, acc[4] = {0};
    for (int d = 0; d < SPATIAL_DIRS; d++) {
        if (agg[d] == INFINITY)
            continue;
        float wt = expf(-(agg[d] - best) / temp) * lmin / len[d];
        for (int c = 0; c < 4; c++)
            acc[c] += wt * val[d * 4 + c];
        wsum += wt;
    }
    /* The directions are trusted as far as the best stands out: where it
     * is no better than the average, nothing predicts the hole and the
     * membrane, the least-squares guess, is the fill. Crossings longer than
     * the reach hand over to it too. */
    float m = mean > 0 ? best / mean : 1;
    float far = fminf(fmaxf((lmin - SPATIAL_REACH) / SPATIAL_REACH, 0), 1);
    m = 1 - (1 - m) * (1 - far);
    for (int c = 0; c < 4; c++)
        p[c] = m * p[c] + (1 - m) * acc[c] / wsum;
}

int pfs_fill_spatial(float *rgba, int w, int h, int stride, const uint8_t *hole)
{
    if (!rgba || !hole || w < 1 || h < 1 || stride < 4 * w)
        return EINVAL;
    /* The membrane first: where no ray crosses, and where no direction is
     * better than the others, it is the fill. */
    int rc = membrane_run(rgba, 4, w, h, stride, hole, MASK_HOLE);
    if (rc)
        return rc;
    struct free_list holes = {0};
    for (int y = 0; y < h && !rc; y++) {
        const uint8_t *row = hole + (size_t)y * (size_t)w;
        for (int x = next_set(row, 0, w); x < w && !rc; x = next_set(row, x + 1, w))
            rc = fl_push(&holes, x, y);
    }
    size_t nh = holes.n;
    uint32_t *xy = holes.xy;
    if (rc || !nh) {
        free(xy);
        return rc;
    }

    /* Where each hole pixel is in the list (slot + 1; 0 outside; tiled, as
     * the pyramid is), and its chessboard depth (1 next to a known pixel),
     * by a breadth-first search from the hole's edge: a pixel deeper than
     * the reach has no ray that crosses, and is not worth marching from. */
    const size_t D = SPATIAL_DIRS;
    int tw;
    uint32_t *slot = calloc(tiled_size(w, h, &tw), sizeof *slot);
    uint32_t *depth = malloc(nh * sizeof *depth);
    uint32_t *queue = malloc(nh * sizeof *queue);
    struct spatial *S = malloc(sizeof *S);
    struct crossings X = {0};
    if (!slot || !depth || !queue || !S) {
        rc = ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nh; i++)
        slot[tiled(tw, (int)xy[2 * i], (int)xy[2 * i + 1])] = (uint32_t)(i + 1);
    size_t qn = 0;
    for (size_t i = 0; i < nh; i++) {
        int x = (int)xy[2 * i], y = (int)xy[2 * i + 1];
        depth[i] = UINT32_MAX;
        for (int j = -1; j <= 1 && depth[i] == UINT32_MAX; j++)
            for (int l = -1; l <= 1; l++) {
                int X0 = x + l, Y0 = y + j;
                if (X0 >= 0 && X0 < w && Y0 >= 0 && Y0 < h &&
                    !hole[(size_t)Y0 * (size_t)w + (size_t)X0]) {
                    depth[i] = 1;
                    queue[qn++] = (uint32_t)i;
                    break;
                }
            }
    }
    for (size_t qh = 0; qh < qn; qh++) {
        size_t i = queue[qh];
        int x = (int)xy[2 * i], y = (int)xy[2 * i + 1];
        for (int j = -1; j <= 1; j++)
            for (int l = -1; l <= 1; l++) {
                int X0 = x + l, Y0 = y + j;
                if (X0 < 0 || X0 >= w || Y0 < 0 || Y0 >= h)
                    continue;
                uint32_t s = slot[tiled(tw, X0, Y0)];
                if (s && depth[s - 1] == UINT32_MAX) {
                    depth[s - 1] = depth[i] + 1;
                    queue[qn++] = s - 1;
                }
            }
    }
    /* The band of pixels some ray may cross from, numbered; the queue's
     * memory becomes each hole pixel's band index (UINT32_MAX: none). */
    uint32_t *band = queue;
    size_t nb = 0;
    for (size_t i = 0; i < nh; i++)
        band[i] = depth[i] <= SPATIAL_REACH + 1 ? (uint32_t)nb++ : UINT32_MAX;
    if (!nb)
        goto out;
    X.cost = malloc(nb * D * sizeof *X.cost);
    X.agg = malloc(nb * D * sizeof *X.agg);
    X.len = malloc(nb * D * sizeof *X.len);
    X.val = malloc(nb * D * 4 * sizeof *X.val);
    if (!X.cost || !X.agg || !X.len || !X.val) {
        rc = ENOMEM;
        goto out;
    }

    S->rgba = rgba;
    S->w = w;
    S->h = h;
    S->stride = stride;
    S->hole = hole;
    for (size_t d = 0; d < D; d++) {
        double th = M_PI * (double)d / (double)D;
        S->ux[d] = (float)cos(th);
        S->uy[d] = (float)sin(th);
        make_ray(&S->ray[d][0], cos(th), sin(th));
        make_ray(&S->ray[d][1], -cos(th), -sin(th));
    }
    for (size_t i = 0; i < nh; i++)
        if (band[i] != UINT32_MAX)
            cross(S, (int)xy[2 * i], (int)xy[2 * i + 1], X.cost + band[i] * D,
                  X.len + band[i] * D, X.val + band[i] * D * 4);

    /* Each direction's cost averaged over the window's hole pixels that
     * have it: the window holds rays parallel to the pixel's own, so this
     * compares the profiles along both edges of the hole, not two pixels,
     * and neighbours see nearly the same costs, so they choose alike. */
    for (size_t i = 0; i < nh; i++) {
        if (band[i] == UINT32_MAX)
            continue;
        int x = (int)xy[2 * i], y = (int)xy[2 * i + 1];
        float sum[SPATIAL_DIRS] = {0}, cnt[SPATIAL_DIRS] = {0};
        for (int j = -SPATIAL_WINDOW; j <= SPATIAL_WINDOW; j++)
            for (int l = -SPATIAL_WINDOW; l <= SPATIAL_WINDOW; l++) {
                int X0 = x + l, Y0 = y + j;
                if (X0 < 0 || X0 >= w || Y0 < 0 || Y0 >= h)
                    continue;
                uint32_t s = slot[tiled(tw, X0, Y0)];
                if (!s || band[s - 1] == UINT32_MAX)
                    continue;
                const float *c = X.cost + band[s - 1] * D;
                for (size_t d = 0; d < D; d++) {
                    bool ok = c[d] < INFINITY;
                    sum[d] += ok ? c[d] : 0;
                    cnt[d] += ok;
                }
            }
        const float *own = X.cost + band[i] * D;
        float *agg = X.agg + band[i] * D;
        for (size_t d = 0; d < D; d++)
            agg[d] = own[d] < INFINITY ? sum[d] / cnt[d] : INFINITY;
    }
    for (size_t i = 0; i < nh; i++)
        if (band[i] != UINT32_MAX)
            resolve(X.agg + band[i] * D, X.len + band[i] * D, X.val + band[i] * D * 4,
                    rgba + (size_t)xy[2 * i + 1] * (size_t)stride + (size_t)xy[2 * i] * 4);

out:
    free(X.cost);
    free(X.agg);
    free(X.len);
    free(X.val);
    free(slot);
    free(xy);
    free(depth);
    free(queue);
    free(S);
    return rc;
}

/* ---- grain: estimation ----------------------------------------------------- */

#define GRAIN_BLOCK 32
#define GRAIN_N (GRAIN_BLOCK * GRAIN_BLOCK)
#define GRAIN_LAG 4 /* autocorrelation lags measured: what a 5x5 kernel's output reaches */
#define GRAIN_MIN_BLOCKS 4
#define GRAIN_AC_BLOCKS 256 /* blocks the autocorrelation is measured on, at most */
/* A block whose residual is within this factor of the lower envelope is
 * taken as grain only: pure-grain blocks of 1024 pixels scatter by a few
 * per cent (about 7 % for grain 3 pixels across), texture adds more. */
#define GRAIN_KEEP 1.25f
#define GRAIN_LUMA_FLOOR 1e-4f /* log luma is taken of max(luma, this) */

/* Rec. 709 luma of linear RGB. */
static inline float luma709(const float *p)
{
    return 0.2126f * p[0] + 0.7152f * p[1] + 0.0722f * p[2];
}

/* Discrete orthogonal polynomials of degree 0, 1, 2 on 0 .. GRAIN_BLOCK-1 and
 * their squared norms: a quadratic fit is then six dot products. */
struct quad_basis {
    float p[3][GRAIN_BLOCK];
    float norm[3];
};

static void quad_basis_init(struct quad_basis *q)
{
    double c = (GRAIN_BLOCK - 1) / 2.0, k = (GRAIN_BLOCK * GRAIN_BLOCK - 1) / 12.0;
    for (int i = 0; i < 3; i++)
        q->norm[i] = 0;
    for (int x = 0; x < GRAIN_BLOCK; x++) {
        double t = x - c;
        q->p[0][x] = 1;
        q->p[1][x] = (float)t;
        q->p[2][x] = (float)(t * t - k);
        for (int i = 0; i < 3; i++)
            q->norm[i] += q->p[i][x] * q->p[i][x];
    }
}

/* Removes the least-squares quadratic surface from a block, in place. */
static void detrend(const struct quad_basis *q, float *v)
{
    static const int ij[6][2] = {{0, 0}, {1, 0}, {0, 1}, {2, 0}, {1, 1}, {0, 2}};
    double row[3][GRAIN_BLOCK], coef[6];
    for (int y = 0; y < GRAIN_BLOCK; y++)
        for (int i = 0; i < 3; i++) {
            double s = 0;
            for (int x = 0; x < GRAIN_BLOCK; x++)
                s += (double)q->p[i][x] * v[y * GRAIN_BLOCK + x];
            row[i][y] = s;
        }
    for (int b = 0; b < 6; b++) {
        int i = ij[b][0], j = ij[b][1];
        double s = 0;
        for (int y = 0; y < GRAIN_BLOCK; y++)
            s += (double)q->p[j][y] * row[i][y];
        coef[b] = s / ((double)q->norm[i] * q->norm[j]);
    }
    for (int y = 0; y < GRAIN_BLOCK; y++)
        for (int x = 0; x < GRAIN_BLOCK; x++) {
            double f = 0;
            for (int b = 0; b < 6; b++)
                f += coef[b] * q->p[ij[b][0]][x] * q->p[ij[b][1]][y];
            v[y * GRAIN_BLOCK + x] -= (float)f;
        }
}

/* The detrended R, G, B and luma of the block at (bx, by), and its mean
 * luma. False for blocks that cannot show grain: with excluded or
 * non-finite pixels, or clipped (an eighth of a channel at its extreme: a
 * clipped area has no grain and would pull the envelope down). */
static bool grain_block(const struct quad_basis *q, const float *rgba, int w, int stride,
                        const uint8_t *exclude, int bx, int by, float res[4][GRAIN_N],
                        float *mean_luma)
{
    double ysum = 0;
    for (int y = 0; y < GRAIN_BLOCK; y++)
        for (int x = 0; x < GRAIN_BLOCK; x++) {
            size_t X = (size_t)bx + (size_t)x, Y = (size_t)by + (size_t)y;
            if (exclude && exclude[Y * (size_t)w + X])
                return false;
            const float *p = rgba + Y * (size_t)stride + X * 4;
            if (!finite_px(p, 3))
                return false;
            int i = y * GRAIN_BLOCK + x;
            for (int c = 0; c < 3; c++)
                res[c][i] = p[c];
            res[3][i] = luma709(p);
            ysum += res[3][i];
        }
    for (int c = 0; c < 3; c++) {
        float lo = res[c][0], hi = res[c][0];
        for (int i = 1; i < GRAIN_N; i++) {
            lo = fminf(lo, res[c][i]);
            hi = fmaxf(hi, res[c][i]);
        }
        int nlo = 0, nhi = 0;
        for (int i = 0; i < GRAIN_N; i++) {
            nlo += res[c][i] == lo;
            nhi += res[c][i] == hi;
        }
        if (nlo > GRAIN_N / 8 || nhi > GRAIN_N / 8)
            return false;
    }
    for (int c = 0; c < 4; c++)
        detrend(q, res[c]);
    *mean_luma = (float)(ysum / GRAIN_N);
    return true;
}

/* Solves the symmetric positive definite n x n system a x = b (Cholesky,
 * a overwritten); false when it is not positive definite. */
static bool solve_spd(int n, double *a, double *b)
{
    for (int j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (int k = 0; k < j; k++)
            d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0))
            return false;
        d = sqrt(d);
        a[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            for (int k = 0; k < j; k++)
                s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / d;
        }
    }
    for (int i = 0; i < n; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++)
            s -= a[i * n + k] * b[k];
        b[i] = s / a[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int k = i + 1; k < n; k++)
            s -= a[k * n + i] * b[k];
        b[i] = s / a[i * n + i];
    }
    return true;
}

/* The hat functions of a piecewise-linear curve with knots at lev[0..n-1]
 * (log luma), flat beyond the ends: at most two are non-zero at l. */
static int hat(const float *lev, int n, float l, float *w0)
{
    if (l <= lev[0]) {
        *w0 = 1;
        return 0;
    }
    for (int j = 0; j + 1 < n; j++)
        if (l < lev[j + 1]) {
            *w0 = (lev[j + 1] - l) / (lev[j + 1] - lev[j]);
            return j;
        }
    *w0 = 1;
    return n - 1;
}

static float curve_at(const float *lev, const float *val, int n, float l)
{
    float w0;
    int j = hat(lev, n, l, &w0);
    return j + 1 < n ? w0 * val[j] + (1 - w0) * val[j + 1] : val[j];
}

/* Least-squares piecewise-linear curve through (l[i], s[i]) for the blocks
 * with use[i], with a small penalty on differences between neighbouring
 * knots, so knots with few blocks follow their neighbours and knots with
 * none interpolate them. */
static void fit_curve(const float *lev, int n, const float *l, const float *s, const bool *use,
                      int nblocks, float *out)
{
    double a[PFS_GRAIN_BINS * PFS_GRAIN_BINS] = {0}, b[PFS_GRAIN_BINS] = {0}, wsum = 0, mean = 0;
    for (int i = 0; i < nblocks; i++) {
        if (!use[i])
            continue;
        float w0;
        int j = hat(lev, n, l[i], &w0);
        double f[2] = {w0, 1 - w0};
        for (int p = 0; p < 2 && j + p < n; p++) {
            b[j + p] += f[p] * s[i];
            for (int r = 0; r < 2 && j + r < n; r++)
                a[(j + p) * n + j + r] += f[p] * f[r];
        }
        wsum += 1;
        mean += s[i];
    }
    mean /= wsum > 0 ? wsum : 1;
    /* Weight of the penalty, per block: at 0.02 the curve's ends were
     * pulled 10 % towards the middle, at 0.001 a kink in the true curve
     * made the end knot miss by 15 %; 0.005 keeps both near 5 %. */
    double lambda = 0.005 * wsum + 1e-9;
    for (int j = 0; j + 1 < n; j++) {
        a[j * n + j] += lambda;
        a[(j + 1) * n + j + 1] += lambda;
        a[j * n + j + 1] -= lambda;
        a[(j + 1) * n + j] -= lambda;
    }
    /* A whisper of pull towards the mean keeps the system definite. */
    for (int j = 0; j < n; j++) {
        a[j * n + j] += 1e-6 * (wsum + 1);
        b[j] += 1e-6 * (wsum + 1) * mean;
    }
    if (!solve_spd(n, a, b))
        for (int j = 0; j < n; j++)
            b[j] = mean;
    for (int j = 0; j < n; j++)
        out[j] = (float)fmax(b[j], 0);
}

/* The 5x5 kernel symmetric about both axes whose quadrant is q[|dx|][|dy|]. */
static void kernel_of(const double q[3][3], double k[5][5])
{
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            k[y][x] = q[abs(x - 2)][abs(y - 2)];
}

/* The autocorrelation of white noise filtered by k, at lags 0..4 x 0..4
 * (the other quadrants mirror it, k being symmetric). */
static void autocorr_of(const double k[5][5], double ac[5][5])
{
    for (int dy = 0; dy <= 4; dy++)
        for (int dx = 0; dx <= 4; dx++) {
            double s = 0;
            for (int y = 0; y + dy < 5; y++)
                for (int x = 0; x + dx < 5; x++)
                    s += k[y][x] * k[y + dy][x + dx];
            ac[dy][dx] = s;
        }
}

static double kernel_misfit(const double q[3][3], const double rho[5][5])
{
    double k[5][5], ac[5][5], e = 0;
    kernel_of(q, k);
    autocorr_of(k, ac);
    for (int dy = 0; dy <= 4; dy++)
        for (int dx = 0; dx <= 4; dx++)
            e += (ac[dy][dx] - rho[dy][dx]) * (ac[dy][dx] - rho[dy][dx]);
    return e;
}

/* The kernel whose output has the measured autocorrelation rho (rho[0][0]
 * = 1: unit variance), by Levenberg-Marquardt over the quadrant's nine
 * values, started from the Gaussian whose output matches rho at lag 1. The
 * Jacobian is numerical: nine parameters, twenty-five residuals. */
static void fit_kernel(const double rho[5][5], float out[5][5])
{
    double q[3][3] = {{0}};
    double r1 = (rho[0][1] + rho[1][0]) / 2;
    if (r1 > 0.02 && r1 < 0.98) {
        /* Gaussian of variance s2: its output's is 2 s2, so rho(1) =
         * exp(-1 / (4 s2)). */
        double s2 = -1 / (4 * log(r1));
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                q[a][b] = exp(-(a * a + b * b) / (2 * s2));
    } else {
        q[0][0] = 1;
    }
    double mu = 1e-3, e = kernel_misfit(q, rho);
    for (int it = 0; it < 200 && e > 1e-12; it++) {
        double J[25][9], r[25], k[5][5], ac[5][5];
        kernel_of(q, k);
        autocorr_of(k, ac);
        for (int i = 0; i < 25; i++)
            r[i] = ac[i / 5][i % 5] - rho[i / 5][i % 5];
        for (int p = 0; p < 9; p++) {
            double qp[3][3], kp[5][5], acp[5][5];
            memcpy(qp, q, sizeof qp);
            double step = 1e-6 * fmax(1, fabs(q[p / 3][p % 3]));
            qp[p / 3][p % 3] += step;
            kernel_of(qp, kp);
            autocorr_of(kp, acp);
            for (int i = 0; i < 25; i++)
                J[i][p] = (acp[i / 5][i % 5] - ac[i / 5][i % 5]) / step;
        }
        double en = e, qn[3][3];
        for (; mu < 1e12; mu *= 4) {
            double A[81] = {0}, g[9] = {0};
            for (int p = 0; p < 9; p++) {
                for (int i = 0; i < 25; i++)
                    g[p] -= J[i][p] * r[i];
                for (int s = 0; s < 9; s++)
                    for (int i = 0; i < 25; i++)
                        A[p * 9 + s] += J[i][p] * J[i][s];
                A[p * 9 + p] = A[p * 9 + p] * (1 + mu) + 1e-12;
            }
            if (!solve_spd(9, A, g))
                continue;
            for (int p = 0; p < 9; p++)
                qn[p / 3][p % 3] = q[p / 3][p % 3] + g[p];
            en = kernel_misfit(qn, rho);
            if (en < e)
                break;
        }
        if (!(en < e))
            break;
        memcpy(q, qn, sizeof q);
        mu = fmax(mu / 3, 1e-9);
        bool stalled = e - en < 1e-12 * e;
        e = en;
        if (stalled)
            break;
    }
    double k[5][5], ss = 0;
    kernel_of(q, k);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            ss += k[y][x] * k[y][x];
    ss = ss > 0 ? sqrt(ss) : 1;
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            out[y][x] = (float)(k[y][x] / ss);
}

int pfs_grain_estimate(const float *rgba, int w, int h, int stride, const uint8_t *exclude,
                       struct pfs_grain_model *out)
{
    memset(out, 0, sizeof *out);
    out->kernel[2][2] = 1;
    if (!rgba || w < GRAIN_BLOCK || h < GRAIN_BLOCK || stride < 4 * w)
        return 0;
    int nbx = w / GRAIN_BLOCK, nby = h / GRAIN_BLOCK, nblocks = nbx * nby;
    /* The grid is centred, so the margins left over are on both sides. */
    int gx = (w - nbx * GRAIN_BLOCK) / 2, gy = (h - nby * GRAIN_BLOCK) / 2;
    float *lx = malloc((size_t)nblocks * sizeof *lx);       /* log mean luma */
    float *sig = malloc((size_t)nblocks * 4 * sizeof *sig); /* residual R, G, B, luma */
    float *sy = malloc((size_t)nblocks * sizeof *sy);       /* one of those */
    bool *valid = malloc((size_t)nblocks * sizeof *valid);
    bool *keep = malloc((size_t)nblocks * sizeof *keep);
    float(*res)[GRAIN_N] = malloc(4 * sizeof *res);
    struct quad_basis *q = malloc(sizeof *q);
    int rc = 0;
    if (!lx || !sig || !sy || !valid || !keep || !res || !q) {
        rc = ENOMEM;
        goto out;
    }
    quad_basis_init(q);

    int nvalid = 0;
    float lo = INFINITY, hi = -INFINITY;
    for (int b = 0; b < nblocks; b++) {
        int bx = gx + b % nbx * GRAIN_BLOCK, by = gy + b / nbx * GRAIN_BLOCK;
        float ml;
        keep[b] = valid[b] = grain_block(q, rgba, w, stride, exclude, bx, by, res, &ml);
        if (!valid[b])
            continue;
        nvalid++;
        lx[b] = logf(fmaxf(ml, GRAIN_LUMA_FLOOR));
        lo = fminf(lo, lx[b]);
        hi = fmaxf(hi, lx[b]);
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int i = 0; i < GRAIN_N; i++)
                s += (double)res[c][i] * res[c][i];
            sig[b * 4 + c] = (float)sqrt(s / GRAIN_N);
        }
    }
    if (nvalid < GRAIN_MIN_BLOCKS)
        goto out;

    /* The lower envelope of luma residual against brightness: fit, keep the
     * blocks close above the fit (or below it), refit, until the kept set
     * settles. Texture only raises a block, so the blocks that stay are
     * those with grain alone, wherever the plate has any at a brightness. */
    const int n = PFS_GRAIN_BINS;
    float lev[PFS_GRAIN_BINS], curve[PFS_GRAIN_BINS];
    if (hi < lo + 0.4f)
        hi = lo + 0.4f;
    for (int j = 0; j < n; j++)
        lev[j] = lo + (hi - lo) * (float)j / (float)(n - 1);
    for (int b = 0; b < nblocks; b++)
        sy[b] = valid[b] ? sig[b * 4 + 3] : 0;
    int kept = nvalid;
    for (int it = 0; it < 50; it++) {
        fit_curve(lev, n, lx, sy, keep, nblocks, curve);
        bool changed = false;
        kept = 0;
        for (int b = 0; b < nblocks; b++) {
            if (!valid[b])
                continue;
            bool k = sy[b] <= GRAIN_KEEP * curve_at(lev, curve, n, lx[b]);
            changed |= k != keep[b];
            keep[b] = k;
            kept += k;
        }
        if (!changed || kept < GRAIN_MIN_BLOCKS)
            break;
    }
    if (kept < GRAIN_MIN_BLOCKS)
        goto out;

    /* Autocorrelation and channel correlation of the kept blocks'
     * residuals, each block normalised by its own variance so bright blocks
     * do not dominate; at most GRAIN_AC_BLOCKS of them, evenly spread, which
     * is plenty for 25 numbers and keeps a large plate's cost bounded. */
    double rho[5][5] = {{0}}, cc = 0;
    int nac = 0, step = (kept + GRAIN_AC_BLOCKS - 1) / GRAIN_AC_BLOCKS, seen = 0;
    for (int b = 0; b < nblocks; b++) {
        if (!keep[b] || seen++ % step)
            continue;
        int bx = gx + b % nbx * GRAIN_BLOCK, by = gy + b / nbx * GRAIN_BLOCK;
        float ml;
        grain_block(q, rgba, w, stride, exclude, bx, by, res, &ml);
        double var[3];
        for (int c = 0; c < 3; c++) {
            double s = 0;
            for (int i = 0; i < GRAIN_N; i++)
                s += (double)res[c][i] * res[c][i];
            var[c] = s / GRAIN_N;
        }
        if (!(var[0] > 0 && var[1] > 0 && var[2] > 0))
            continue;
        for (int c = 0; c < 3; c++) {
            for (int dy = 0; dy <= GRAIN_LAG; dy++)
                for (int dx = 0; dx <= GRAIN_LAG; dx++) {
                    /* Lags (dx, dy) and (dx, -dy) together: the model is
                     * symmetric about both axes. */
                    double s = 0;
                    for (int y = 0; y + dy < GRAIN_BLOCK; y++)
                        for (int x = 0; x + dx < GRAIN_BLOCK; x++)
                            s += (double)res[c][y * GRAIN_BLOCK + x] *
                                     res[c][(y + dy) * GRAIN_BLOCK + x + dx] +
                                 (double)res[c][(y + dy) * GRAIN_BLOCK + x] *
                                     res[c][y * GRAIN_BLOCK + x + dx];
                    int pairs = 2 * (GRAIN_BLOCK - dy) * (GRAIN_BLOCK - dx);
                    rho[dy][dx] += s / pairs / var[c] / 3;
                }
            int d = (c + 1) % 3;
            double s = 0;
            for (int i = 0; i < GRAIN_N; i++)
                s += (double)res[c][i] * res[d][i];
            cc += s / GRAIN_N / sqrt(var[c] * var[d]) / 3;
        }
        nac++;
    }
    if (!nac)
        goto out;
    double meas[5][5];
    for (int dy = 0; dy <= GRAIN_LAG; dy++)
        for (int dx = 0; dx <= GRAIN_LAG; dx++)
            meas[dy][dx] = rho[dy][dx] / nac;
    /* Removing the quadratic took part of the grain with it: projecting
     * onto six smooth functions of the block removes, at every small lag
     * alike, about a = 6 S / n of the variance, S being the sum of the
     * autocorrelation over all lags (1 for white grain, 9 for grain made
     * with a 3x3 box). So measured = (true - a) / (1 - a) at each lag,
     * which a few rounds of S -> a -> true -> S undo. */
    double a = 0;
    for (int round = 0; round < 8; round++) {
        double S = 0;
        for (int dy = 0; dy <= GRAIN_LAG; dy++)
            for (int dx = 0; dx <= GRAIN_LAG; dx++) {
                rho[dy][dx] = meas[dy][dx] * (1 - a) + a;
                S += rho[dy][dx] * (dx ? 2 : 1) * (dy ? 2 : 1);
            }
        a = 6 * fmin(fmax(S, 1), GRAIN_N / 12.0) / GRAIN_N;
    }
    rho[0][0] = 1;
    fit_kernel(rho, out->kernel);
    out->channel_corr = (float)fmin(fmax(cc / nac, 0), 0.999);
    float gain = (float)(1 / sqrt(1 - a)); /* the variance the quadratic took */

    /* The strength curves, on levels spanning the kept blocks. */
    lo = INFINITY;
    hi = -INFINITY;
    for (int b = 0; b < nblocks; b++)
        if (keep[b]) {
            lo = fminf(lo, lx[b]);
            hi = fmaxf(hi, lx[b]);
        }
    if (hi - lo < 0.4f) {
        float mid = (lo + hi) / 2;
        lo = mid - 0.2f;
        hi = mid + 0.2f;
    }
    for (int j = 0; j < n; j++) {
        lev[j] = lo + (hi - lo) * (float)j / (float)(n - 1);
        out->level[j] = expf(lev[j]);
    }
    for (int c = 0; c < 3; c++) {
        for (int b = 0; b < nblocks; b++)
            sy[b] = keep[b] ? sig[b * 4 + c] : 0;
        fit_curve(lev, n, lx, sy, keep, nblocks, out->sigma[c]);
        for (int j = 0; j < n; j++)
            out->sigma[c][j] *= gain;
    }
    out->nbins = n;
    out->blocks = kept;
out:
    free(lx);
    free(sig);
    free(sy);
    free(valid);
    free(keep);
    free(res);
    free(q);
    return rc;
}

/* ---- grain: synthesis -------------------------------------------------------- */

#define GRAIN_TILE 16

/* splitmix64's finaliser: every input bit reaches every output bit. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Four independent standard normal values for absolute pixel (X, Y): R, G,
 * B and the part the channels share. Box-Muller on 32-bit uniforms (never
 * 0, so the logarithm is finite: |g| < 6.7). */
static void gauss4(uint64_t seed, int64_t X, int64_t Y, float g[4])
{
    uint64_t key = mix64(seed ^ mix64(((uint64_t)(uint32_t)X << 32) | (uint32_t)Y));
    for (int i = 0; i < 2; i++) {
        uint64_t v = mix64(key + 0x9e3779b97f4a7c15u * (uint64_t)(i + 1));
        double u1 = ((double)(v >> 32) + 0.5) * 0x1p-32;
        double u2 = ((double)(v & 0xffffffffu) + 0.5) * 0x1p-32;
        double r = sqrt(-2 * log(u1)), a = 2 * M_PI * u2;
        g[2 * i] = (float)(r * cos(a));
        g[2 * i + 1] = (float)(r * sin(a));
    }
}

static inline int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void pfs_grain_apply(const struct pfs_grain_model *m, uint64_t seed, float *rgba, int w, int h,
                     int stride, int origin_x, int origin_y, const float *amount)
{
    if (!m || m->nbins < 1 || m->nbins > PFS_GRAIN_BINS || !rgba || !amount || w < 1 || h < 1 ||
        stride < 4 * w)
        return;
    int n = m->nbins;
    float lev[PFS_GRAIN_BINS];
    for (int j = 0; j < n; j++)
        lev[j] = logf(fmaxf(m->level[j], GRAIN_LUMA_FLOOR));
    /* Channel c's noise is own * g_c + shared * g_shared: unit variance,
     * and correlation channel_corr between any two channels. */
    float rho = fminf(fmaxf(m->channel_corr, 0), 1);
    float own = sqrtf(1 - rho), shared = sqrtf(rho);
    enum { RAW = GRAIN_TILE + 4 };
    float raw[RAW][RAW][3];

    /* The noise is made a tile at a time, tiles fixed in absolute
     * coordinates, each from the hashes of its pixels and a 2-pixel margin:
     * a pixel's grain depends on its own 5x5 neighbourhood's hashes only,
     * so any rectangle gets the same values. */
    const int64_t X0 = origin_x, Y0 = origin_y, X1 = X0 + w, Y1 = Y0 + h;
    for (int64_t ty = floor_div(Y0, GRAIN_TILE); ty * GRAIN_TILE < Y1; ty++)
        for (int64_t tx = floor_div(X0, GRAIN_TILE); tx * GRAIN_TILE < X1; tx++) {
            const int64_t ax = tx * GRAIN_TILE, ay = ty * GRAIN_TILE;
            /* The tile's part of the rectangle, in its own coordinates. */
            int xa = (int)(clamp64(ax, X0, X1) - X0);
            int xb = (int)(clamp64(ax + GRAIN_TILE, X0, X1) - X0);
            int ya = (int)(clamp64(ay, Y0, Y1) - Y0);
            int yb = (int)(clamp64(ay + GRAIN_TILE, Y0, Y1) - Y0);
            bool any = false;
            for (int y = ya; y < yb && !any; y++)
                for (int x = xa; x < xb && !any; x++)
                    any = amount[(size_t)y * (size_t)w + (size_t)x] > 0;
            if (!any)
                continue;
            for (int j = 0; j < RAW; j++)
                for (int i = 0; i < RAW; i++) {
                    float g[4];
                    gauss4(seed, ax - 2 + i, ay - 2 + j, g);
                    for (int c = 0; c < 3; c++)
                        raw[j][i][c] = own * g[c] + shared * g[3];
                }
            for (int y = ya; y < yb; y++)
                for (int x = xa; x < xb; x++) {
                    float am = amount[(size_t)y * (size_t)w + (size_t)x];
                    if (!(am > 0))
                        continue;
                    float *p = rgba + (size_t)y * (size_t)stride + (size_t)x * 4;
                    float l = luma709(p);
                    if (!isfinite(l))
                        continue;
                    int rx = (int)(X0 + x - ax), ry = (int)(Y0 + y - ay);
                    float nz[3] = {0, 0, 0};
                    for (int v = 0; v < 5; v++)
                        for (int u = 0; u < 5; u++) {
                            float k = m->kernel[v][u];
                            const float *r = raw[ry + v][rx + u];
                            nz[0] += k * r[0];
                            nz[1] += k * r[1];
                            nz[2] += k * r[2];
                        }
                    float ll = logf(fmaxf(l, GRAIN_LUMA_FLOOR)), s = sqrtf(am);
                    for (int c = 0; c < 3; c++)
                        p[c] += s * curve_at(lev, m->sigma[c], n, ll) * nz[c];
                }
        }
}

/* ---- the temporal cap ----------------------------------------------------- */

struct cap_sample {
    float grad;
    float d2[3];
};

static int cap_grad_cmp(const void *a, const void *b)
{
    float x = ((const struct cap_sample *)a)->grad, y = ((const struct cap_sample *)b)->grad;
    return (x > y) - (x < y);
}

static int float_asc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Samples a bin needs before its cap is trusted. */
#define CAP_MIN_SAMPLES 200

size_t pfs_grain_cap(struct pfs_grain_model *m, const float *rgba, int stride,
                     const float *ndiff, int w, int h)
{
    if (!m || m->nbins < 1 || w < 3 || h < 3)
        return 0;
    int n = m->nbins;
    float lev[PFS_GRAIN_BINS];
    for (int j = 0; j < n; j++)
        lev[j] = logf(fmaxf(m->level[j], GRAIN_LUMA_FLOOR));
    size_t cap = (size_t)w * (size_t)h;
    struct cap_sample *s = malloc(cap * sizeof *s);
    float *v = malloc(cap * sizeof *v);
    if (!s || !v) {
        free(s);
        free(v);
        return 0; /* no cap: the spatial model stands */
    }
    size_t total = 0;
    float ratio[PFS_GRAIN_BINS];
    bool have[PFS_GRAIN_BINS] = {false};
    for (int j = 0; j < n; j++) {
        /* One pass per bin keeps memory to one frame's samples. */
        size_t k = 0;
        for (int y = 1; y < h - 1; y++)
            for (int x = 1; x < w - 1; x++) {
                const float *d = ndiff + 3 * ((size_t)y * (size_t)w + (size_t)x);
                if (!isfinite(d[0]) || !isfinite(d[1]) || !isfinite(d[2]))
                    continue;
                const float *p = rgba + (size_t)y * (size_t)stride + (size_t)x * 4;
                float l = luma709(p);
                if (!isfinite(l))
                    continue;
                float ll = logf(fmaxf(l, GRAIN_LUMA_FLOOR));
                int nearest = 0;
                for (int t = 1; t < n; t++)
                    if (fabsf(ll - lev[t]) < fabsf(ll - lev[nearest]))
                        nearest = t;
                if (nearest != j)
                    continue;
                float gx = luma709(p + 4) - luma709(p - 4);
                float gy = luma709(p + stride) - luma709(p - stride);
                s[k].grad = gx * gx + gy * gy;
                for (int c = 0; c < 3; c++)
                    s[k].d2[c] = d[c] * d[c];
                k++;
            }
        if (k < CAP_MIN_SAMPLES)
            continue;
        /* The smoother half: where a slightly wrong motion costs least. */
        qsort(s, k, sizeof *s, cap_grad_cmp);
        size_t half = k / 2;
        float worst = 0;
        for (int c = 0; c < 3; c++) {
            for (size_t i = 0; i < half; i++)
                v[i] = s[i].d2[c];
            qsort(v, half, sizeof *v, float_asc);
            /* The median of a squared normal is 0.4549 of its variance:
             * robust to the occlusions the consistency check let through. */
            float sigma = sqrtf(v[half / 2] / 0.4549f);
            float r = m->sigma[c][j] > 0 ? sigma / m->sigma[c][j] : 1;
            worst = fmaxf(worst, fminf(r, 1));
            if (sigma < m->sigma[c][j])
                m->sigma[c][j] = sigma;
        }
        ratio[j] = worst;
        have[j] = true;
        total += half;
    }
    for (int j = 0; j < n; j++) {
        if (have[j])
            continue;
        int best = -1;
        for (int t = 0; t < n; t++)
            if (have[t] && (best < 0 || abs(t - j) < abs(best - j)))
                best = t;
        if (best >= 0)
            for (int c = 0; c < 3; c++)
                m->sigma[c][j] *= ratio[best];
    }
    free(s);
    free(v);
    return total;
}
