/*
 * match.c - fitting a frame to a reference frame of the same shot; see
 * match.h for the contract and docs/relight.md for the method.
 *
 * In short: both frames become images of block means (about 160 blocks
 * across); blocks that are finite, above a noise floor and clear of
 * clipping in both frames are candidates; one global translation (camera
 * motion), found by normalised cross-correlation of log luma over blocks
 * and then refined to the pixel, pairs the frame's blocks with the
 * reference's; a pair is kept when its 3x3 neighbourhood of log luma agrees
 * in shape (textured) or both are flat with the colour ratio the rest of the
 * frame has (so moving objects drop out); then a robust fit per channel over
 * the kept pairs, the pairs it cannot explain dropped, and the fit again.
 * Everything is deterministic: no sampling, no threads, selections with a
 * fixed pivot rule, ties broken toward less motion.
 */
#include "engine/ops/match.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Rec.709 luma weights. */
static const double luma_w[3] = {0.2126, 0.7152, 0.0722};

#define MATCH_BLOCKS_ACROSS 160 /* block grid: about this many blocks across */
#define MATCH_SEARCH 8          /* camera motion searched, blocks each way */
#define MATCH_MIN_SAMPLES 64    /* fewer kept pairs than this (and than 1 %)... */
#define MATCH_MIN_FRACTION 0.01 /* ...of the blocks: the fit is not trusted */
#define MATCH_NOISE_FLOOR 0.005 /* of the 99th-percentile block luma */
#define MATCH_CLIP 0.98         /* of the frame's largest value per channel */
#define MATCH_TEXTURE 0.02      /* std of ln luma over 3x3 blocks: textured above */
#define MATCH_NCC 0.9           /* textured neighbourhoods must correlate this well */
#define MATCH_FLAT_CHROMA 0.05  /* flat pairs: ln chroma ratio off the median by at most */
#define MATCH_FLAT_LUMA 0.15    /* flat pairs: ln luma ratio off the median by at most */

/* One image as block means. Block (i, j) covers pixels
 * [ox + i * bs, ox + (i + 1) * bs) x [oy + j * bs, oy + (j + 1) * bs). */
struct match_grid {
    int nbx, nby, bs, ox, oy;
    double *rgb;       /* nbx * nby * 3 means */
    double *lnl;       /* ln luma, NAN where the block is not usable for it */
    unsigned char *ok; /* well exposed: finite, above the noise floor, unclipped */
};

static void grid_free(struct match_grid *g)
{
    free(g->rgb);
    free(g->lnl);
    free(g->ok);
    memset(g, 0, sizeof *g);
}

/* The k-th smallest of x[0..n) (0 <= k < n); reorders x. Quickselect with
 * a median-of-three pivot: deterministic, linear on average. x holds no
 * NaN. */
static double kth_of(double *x, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (hi > lo) {
        int mid = lo + (hi - lo) / 2;
        double a = x[lo], b = x[mid], c = x[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot)
                i++;
            while (x[j] > pivot)
                j--;
            if (i <= j) {
                double t = x[i];
                x[i] = x[j];
                x[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return x[k];
}

/* Median of x[0..n) (n > 0); reorders x. */
static double median_of(double *x, int n)
{
    double hi = kth_of(x, n, n / 2);
    if (n % 2)
        return hi;
    /* The lower middle is the largest of the part below n / 2. */
    double lo = x[0];
    for (int i = 1; i < n / 2; i++)
        lo = x[i] > lo ? x[i] : lo;
    return 0.5 * (lo + hi);
}

/* The block means of img, in one pass over its pixels, and which blocks are
 * usable: ENOMEM or 0. */
static int grid_build(const struct pfs_image *img, int bs, int ox, int oy, struct match_grid *g)
{
    memset(g, 0, sizeof *g);
    g->bs = bs;
    g->ox = ox;
    g->oy = oy;
    g->nbx = (img->width - ox) / bs;
    g->nby = (img->height - oy) / bs;
    if (g->nbx < 1 || g->nby < 1) {
        g->nbx = g->nby = 0;
        return 0;
    }
    size_t nb = (size_t)g->nbx * (size_t)g->nby;
    g->rgb = calloc(nb * 3, sizeof *g->rgb);
    g->lnl = malloc(nb * sizeof *g->lnl);
    g->ok = calloc(nb, 1);
    float *bmax = malloc(nb * 3 * sizeof *bmax);
    unsigned char *bad = calloc(nb, 1);
    double *work = malloc(nb * sizeof *work);
    if (!g->rgb || !g->lnl || !g->ok || !bmax || !bad || !work) {
        free(bmax);
        free(bad);
        free(work);
        grid_free(g);
        return ENOMEM;
    }
    for (size_t b = 0; b < nb * 3; b++)
        bmax[b] = -INFINITY;

    /* The pass: sums and per-channel maxima per block, a row of a block at
     * a time in float (bs values), added into double. A block with any
     * non-finite R, G or B is bad: x - x is 0 for every finite x and NaN
     * for Inf and NaN, so the block's sum of those is 0 exactly when all
     * are finite. (Sums and maxima of a bad block are never used.) */
    float imax[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int by = 0; by < g->nby; by++) {
        double *sum = g->rgb + (size_t)by * (size_t)g->nbx * 3;
        float *mx = bmax + (size_t)by * (size_t)g->nbx * 3;
        unsigned char *bd = bad + (size_t)by * (size_t)g->nbx;
        for (int y = oy + by * bs; y < oy + (by + 1) * bs; y++) {
            const float *p = img->px + ((size_t)y * (size_t)img->width + (size_t)ox) * 4;
            for (int bx = 0; bx < g->nbx; bx++) {
                float s0 = 0, s1 = 0, s2 = 0, z = 0;
                float m0 = mx[bx * 3], m1 = mx[bx * 3 + 1], m2 = mx[bx * 3 + 2];
                for (int k = 0; k < bs; k++, p += 4) {
                    float r = p[0], gr = p[1], b = p[2];
                    s0 += r;
                    s1 += gr;
                    s2 += b;
                    z += (r - r) + (gr - gr) + (b - b);
                    m0 = r > m0 ? r : m0;
                    m1 = gr > m1 ? gr : m1;
                    m2 = b > m2 ? b : m2;
                }
                sum[bx * 3] += s0;
                sum[bx * 3 + 1] += s1;
                sum[bx * 3 + 2] += s2;
                mx[bx * 3] = m0;
                mx[bx * 3 + 1] = m1;
                mx[bx * 3 + 2] = m2;
                bd[bx] |= z != 0;
            }
        }
    }

    /* Means, ln luma, the frame's largest values and the noise floor. */
    double inv_n = 1.0 / ((double)bs * (double)bs);
    int nl = 0;
    for (size_t b = 0; b < nb; b++) {
        double *c = g->rgb + b * 3;
        g->lnl[b] = NAN;
        if (bad[b])
            continue;
        for (int k = 0; k < 3; k++) {
            c[k] *= inv_n;
            imax[k] = fmaxf(imax[k], bmax[b * 3 + k]);
        }
        double l = luma_w[0] * c[0] + luma_w[1] * c[1] + luma_w[2] * c[2];
        if (l > 0) {
            g->lnl[b] = log(l);
            work[nl++] = l;
        }
    }
    double floor_l = 0;
    if (nl > 0)
        floor_l = MATCH_NOISE_FLOOR * kth_of(work, nl, (int)((nl - 1) * 0.99));
    for (size_t b = 0; b < nb; b++) {
        const double *c = g->rgb + b * 3;
        if (bad[b] || !(floor_l > 0))
            continue;
        double l = luma_w[0] * c[0] + luma_w[1] * c[1] + luma_w[2] * c[2];
        bool ok = l >= floor_l;
        for (int k = 0; k < 3 && ok; k++)
            ok = c[k] >= 0.1 * floor_l && !(bmax[b * 3 + k] >= MATCH_CLIP * imax[k]);
        g->ok[b] = ok;
    }
    free(bmax);
    free(bad);
    free(work);
    return 0;
}

/* Normalised cross-correlation of ln luma between frame block (i, j) and
 * reference block (i + sx, j + sy), over the frame blocks on a grid of the
 * given step where both are usable. -2 when fewer than min_n pairs. */
static double grid_ncc(const struct match_grid *f, const struct match_grid *r, int sx, int sy,
                       int step, int min_n)
{
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    int n = 0;
    int j0 = sy < 0 ? -sy : 0, j1 = r->nby - sy < f->nby ? r->nby - sy : f->nby;
    int i0 = sx < 0 ? -sx : 0, i1 = r->nbx - sx < f->nbx ? r->nbx - sx : f->nbx;
    for (int j = j0; j < j1; j += step) {
        const double *fa = f->lnl + (size_t)j * (size_t)f->nbx;
        const double *rb = r->lnl + (size_t)(j + sy) * (size_t)r->nbx + sx;
        for (int i = i0; i < i1; i += step) {
            double a = fa[i], b = rb[i];
            if (isnan(a) || isnan(b))
                continue;
            sa += a;
            sb += b;
            saa += a * a;
            sbb += b * b;
            sab += a * b;
            n++;
        }
    }
    if (n < min_n || n < 2)
        return -2;
    double va = saa - sa * sa / n, vb = sbb - sb * sb / n, cab = sab - sa * sb / n;
    if (!(va > 0 && vb > 0))
        return -2;
    double ncc = cab / sqrt(va * vb);
    return ncc > 1 ? 1 : ncc; /* rounding may not beat a perfect match */
}

/* Zero-mean NCC and the standard deviations of the 3x3 neighbourhoods of
 * ln luma around frame block (i, j) and reference block (ri, rj). false when
 * a neighbour is missing or unusable. */
static bool neighbourhood(const struct match_grid *f, int i, int j, const struct match_grid *r,
                          int ri, int rj, double *ncc, double *std_f, double *std_r)
{
    if (i < 1 || j < 1 || i + 1 >= f->nbx || j + 1 >= f->nby || ri < 1 || rj < 1 ||
        ri + 1 >= r->nbx || rj + 1 >= r->nby)
        return false;
    double a[9], b[9], ma = 0, mb = 0;
    for (int k = 0; k < 9; k++) {
        a[k] = f->lnl[(size_t)(j + k / 3 - 1) * (size_t)f->nbx + (size_t)(i + k % 3 - 1)];
        b[k] = r->lnl[(size_t)(rj + k / 3 - 1) * (size_t)r->nbx + (size_t)(ri + k % 3 - 1)];
        if (isnan(a[k]) || isnan(b[k]))
            return false;
        ma += a[k];
        mb += b[k];
    }
    ma /= 9;
    mb /= 9;
    double saa = 0, sbb = 0, sab = 0;
    for (int k = 0; k < 9; k++) {
        double da = a[k] - ma, db = b[k] - mb;
        saa += da * da;
        sbb += db * db;
        sab += da * db;
    }
    *std_f = sqrt(saa / 9);
    *std_r = sqrt(sbb / 9);
    *ncc = saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
    return true;
}

/* Tukey biweight location of x[0..n) (ln ratios): starts at the median,
 * scale 1.4826 MAD (at least 1e-4), three reweighted means. work: n doubles. */
static double robust_mean(const double *x, int n, double *work)
{
    memcpy(work, x, (size_t)n * sizeof *work);
    double m = median_of(work, n);
    for (int i = 0; i < n; i++)
        work[i] = fabs(x[i] - m);
    double s = 1.4826 * median_of(work, n);
    double c = 4.685 * (s > 1e-4 ? s : 1e-4);
    for (int it = 0; it < 3; it++) {
        double sw = 0, swx = 0;
        for (int i = 0; i < n; i++) {
            double t = (x[i] - m) / c;
            if (fabs(t) >= 1)
                continue;
            double w = (1 - t * t) * (1 - t * t);
            sw += w;
            swx += w * x[i];
        }
        if (!(sw > 0))
            break;
        m = swx / sw;
    }
    return m;
}

/* ref ~ g * frm + o by iteratively reweighted least squares: errors
 * relative to the reference value (so a bright block weighs what a dark one
 * does, as in the log-domain gain fit), Huber weights (k = 1.345) on the
 * relative residual with scale 1.4826 MAD, 10 iterations from g, o = 0. */
static void robust_line(const double *frm, const double *ref, int n, double *g, double *o,
                        double *work)
{
    double gg = *g, oo = 0;
    for (int it = 0; it < 10; it++) {
        for (int i = 0; i < n; i++)
            work[i] = fabs((ref[i] - gg * frm[i] - oo) / ref[i]);
        double s = 1.4826 * median_of(work, n);
        double ks = 1.345 * (s > 1e-9 ? s : 1e-9);
        double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int i = 0; i < n; i++) {
            double e = fabs((ref[i] - gg * frm[i] - oo) / ref[i]);
            double w = (e <= ks ? 1.0 : ks / e) / (ref[i] * ref[i]);
            sw += w;
            sx += w * frm[i];
            sy += w * ref[i];
            sxx += w * frm[i] * frm[i];
            sxy += w * frm[i] * ref[i];
        }
        double den = sw * sxx - sx * sx;
        if (!(den > 1e-12 * sw * sxx))
            break; /* no spread in the frame's values: keep the gain */
        gg = (sw * sxy - sx * sy) / den;
        oo = (sy - gg * sx) / sw;
    }
    *g = gg;
    *o = oo;
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A monotonic, continuous approximation of log2 for x > 0 (Mitchell's: the
 * float's bits read as fixed point), within 0.09 of it: enough to compare
 * the shapes of two images, at a fraction of log2's cost. */
static float approx_log2(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (float)b * (1.0f / 8388608.0f) - 127.0f;
}

/* Approximate log2 luma of one pixel, NAN where luma is not a positive
 * finite number. */
static float pixel_lnl(const float *p)
{
    float l = 0.2126f * p[0] + 0.7152f * p[1] + 0.0722f * p[2];
    return l > 0 && l <= FLT_MAX ? approx_log2(l) : NAN;
}

/*
 * The pixel shift within radius of (cx, cy) whose NCC of approximate log
 * luma is best, over a lattice of about 16000 frame pixels (the same pixels
 * for every shift): reference pixel (x + qx, y + qy) shows what frame pixel
 * (x, y) does. *found is false when the frames are too small for the shifts
 * or too few pixels are usable. ENOMEM or 0.
 */
static int pixel_shift(const struct pfs_image *f, const struct pfs_image *r, int cx, int cy,
                       int radius, int *qx, int *qy, bool *found)
{
    *found = false;
    int w = f->width, h = f->height;
    int m = (abs(cx) > abs(cy) ? abs(cx) : abs(cy)) + radius;
    if (2 * m + 16 > w || 2 * m + 16 > h)
        return 0;
    int step = (int)sqrt((double)(w - 2 * m) * (double)(h - 2 * m) / 8000.0);
    if (step < 1)
        step = 1;
    int nx = (w - 2 * m + step - 1) / step, ny = (h - 2 * m + step - 1) / step;
    float *a = malloc((size_t)nx * (size_t)ny * sizeof *a);
    float *lr = malloc((size_t)w * (size_t)h * sizeof *lr);
    if (!a || !lr) {
        free(a);
        free(lr);
        return ENOMEM;
    }
    for (int j = 0; j < ny; j++)
        for (int i = 0; i < nx; i++)
            a[(size_t)j * (size_t)nx + (size_t)i] = pixel_lnl(
                f->px + ((size_t)(m + j * step) * (size_t)w + (size_t)(m + i * step)) * 4);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        lr[i] = pixel_lnl(r->px + i * 4);

    double best = -2;
    for (int ring = 0; ring <= radius; ring++)
        for (int dy = -ring; dy <= ring; dy++)
            for (int dx = -ring; dx <= ring; dx++) {
                if (abs(dx) != ring && abs(dy) != ring)
                    continue;
                int ox = cx + dx, oy = cy + dy;
                double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
                int n = 0;
                for (int j = 0; j < ny; j++) {
                    const float *fa = a + (size_t)j * (size_t)nx;
                    const float *rb = lr + (size_t)(m + j * step + oy) * (size_t)w + m + ox;
                    for (int i = 0; i < nx; i++) {
                        float u = fa[i], v = rb[(size_t)i * (size_t)step];
                        if (isnan(u) || isnan(v))
                            continue;
                        sa += u;
                        sb += v;
                        saa += (double)u * u;
                        sbb += (double)v * v;
                        sab += (double)u * v;
                        n++;
                    }
                }
                if (n < 64)
                    continue;
                double va = saa - sa * sa / n, vb = sbb - sb * sb / n;
                if (!(va > 0 && vb > 0))
                    continue;
                double c = (sab - sa * sb / n) / sqrt(va * vb);
                c = c > 1 ? 1 : c;
                if (c > best + 1e-9) {
                    best = c;
                    *qx = ox;
                    *qy = oy;
                    *found = true;
                }
            }
    free(a);
    free(lr);
    return 0;
}

/* Fits the model per channel to the kept pairs: frame means cf and
 * reference means cr, channel k at [k * stride + sample]. Identical pairs
 * give exactly gain 1 and offset 0. lr, work: n doubles each. */
static void fit_samples(const double *cf, const double *cr, int stride, int n, int model,
                        struct pfs_match_result *res, double *lr, double *work)
{
    for (int k = 0; k < 3; k++) {
        const double *a = cf + (size_t)k * (size_t)stride, *b = cr + (size_t)k * (size_t)stride;
        bool same = true;
        for (int sm = 0; sm < n; sm++) {
            lr[sm] = log(b[sm] / a[sm]);
            same = same && a[sm] == b[sm];
        }
        res->gain[k] = 1;
        res->offset[k] = 0;
        if (same)
            continue;
        res->gain[k] = exp(robust_mean(lr, n, work));
        if (model == PFS_MATCH_GAIN_OFFSET)
            robust_line(a, b, n, &res->gain[k], &res->offset[k], work);
    }
}

/* Median over the pairs of the largest |ln(ref / fit)| of their channels;
 * infinite for a pair whose fit is not positive. work: n doubles. */
static double sample_error_median(const double *cf, const double *cr, int stride, int n,
                                  const struct pfs_match_result *res, double *work)
{
    for (int sm = 0; sm < n; sm++) {
        double e = 0;
        for (int k = 0; k < 3; k++) {
            size_t i = (size_t)k * (size_t)stride + (size_t)sm;
            double fit = res->gain[k] * cf[i] + res->offset[k];
            double ek = fit > 0 ? fabs(log(cr[i] / fit)) : INFINITY;
            e = ek > e ? ek : e;
        }
        work[sm] = e;
    }
    return median_of(work, n);
}

/* Fits the model that brings frame to reference. EINVAL for unusable
 * inputs, EIO when the fit cannot be trusted, ENOMEM. */
int pfs_match_fit(const struct pfs_image *frame, const struct pfs_image *ref, int ref_no,
                     int model, struct pfs_match_result *res, pfs_error *err)
{
    memset(res, 0, sizeof *res);
    if (frame->width != ref->width || frame->height != ref->height)
        return pfs_error_set(err, EINVAL,
                             "relight match: reference frame %d is %dx%d but the frame is "
                             "%dx%d; match needs frames of the same size",
                             ref_no, ref->width, ref->height, frame->width, frame->height);
    int longest = frame->width > frame->height ? frame->width : frame->height;
    int bs = (longest + MATCH_BLOCKS_ACROSS - 1) / MATCH_BLOCKS_ACROSS;
    if (bs < 1)
        bs = 1;

    struct match_grid f, r, r2 = {0};
    double *buf = NULL;
    int *cand = NULL; /* candidate blocks, (i, j) pairs */
    int rc = grid_build(frame, bs, 0, 0, &f);
    if (rc == 0)
        rc = grid_build(ref, bs, 0, 0, &r);
    else
        memset(&r, 0, sizeof r);
    if (rc)
        goto oom;
    res->blocks = f.nbx * f.nby;

    /* Camera motion: the block shift with the best NCC of ln luma, searched
     * on every other block in each direction, then the 3x3 shifts around
     * the best on every block. Shifts are visited nearest first and a later
     * one must beat the best by 1e-9, so ties go to the smaller motion (and
     * identical frames to no motion: their NCC at 0 is exactly 1). */
    int sx = 0, sy = 0, cx, cy;
    double best = -3;
    int min_n = res->blocks / 16 > 8 ? res->blocks / 16 : 8;
    for (int pass = 0; pass < 2; pass++) {
        int range = pass ? 1 : MATCH_SEARCH, step = pass ? 1 : 2;
        cx = sx;
        cy = sy;
        best = -3;
        for (int ring = 0; ring <= range; ring++)
            for (int dy = -ring; dy <= ring; dy++)
                for (int dx = -ring; dx <= ring; dx++) {
                    if (abs(dx) != ring && abs(dy) != ring)
                        continue;
                    double c = grid_ncc(&f, &r, cx + dx, cy + dy, step, min_n / step / step);
                    if (c > best + 1e-9) {
                        best = c;
                        sx = cx + dx;
                        sy = cy + dy;
                    }
                }
    }
    /* Below a block: a parabola through the NCC at the best shift and its
     * four neighbours centres a search of pixel shifts, half a block and a
     * pixel each way; the reference is re-binned at the best of them and
     * used only if the blocks' NCC improves (so identical frames, whose NCC
     * at no shift is exactly 1, stay unshifted). */
    const struct match_grid *rg = &r;
    int px = sx * bs, py = sy * bs;
    if (best > -2 && bs > 1) {
        double frac[2] = {0, 0};
        for (int axis = 0; axis < 2; axis++) {
            double lo = grid_ncc(&f, &r, sx - !axis, sy - axis, 1, min_n);
            double hi = grid_ncc(&f, &r, sx + !axis, sy + axis, 1, min_n);
            double curv = lo - 2 * best + hi;
            if (lo > -2 && hi > -2 && curv < 0)
                frac[axis] = clampd(0.5 * (lo - hi) / curv, -0.5, 0.5);
        }
        int qx = (int)lround((sx + frac[0]) * bs), qy = (int)lround((sy + frac[1]) * bs);
        bool found;
        rc = pixel_shift(frame, ref, qx, qy, bs / 2 + 1, &qx, &qy, &found);
        if (rc)
            goto oom;
        if (found && (qx != px || qy != py)) {
            /* floor division: block shift and the offset within a block */
            int bx = qx >= 0 ? qx / bs : -((-qx + bs - 1) / bs);
            int by = qy >= 0 ? qy / bs : -((-qy + bs - 1) / bs);
            rc = grid_build(ref, bs, qx - bx * bs, qy - by * bs, &r2);
            if (rc)
                goto oom;
            if (grid_ncc(&f, &r2, bx, by, 1, min_n) > best + 1e-9) {
                rg = &r2;
                sx = bx;
                sy = by;
                px = qx;
                py = qy;
            }
        }
    }
    res->shift_x = px;
    res->shift_y = py;

    /* Candidates: well exposed in both. */
    int nf = f.nbx * f.nby;
    buf = malloc((size_t)nf * 10 * sizeof *buf);
    cand = malloc((size_t)nf * 2 * sizeof *cand);
    if (!buf || !cand)
        goto oom;
    double *cf = buf, *cr = buf + (size_t)nf * 3; /* candidate means, frame and ref */
    double *k1 = buf + (size_t)nf * 6, *k2 = buf + (size_t)nf * 7, *kl = buf + (size_t)nf * 8;
    double *work = buf + (size_t)nf * 9;
    int nc = 0;
    for (int j = 0; j < f.nby; j++)
        for (int i = 0; i < f.nbx; i++) {
            int ri = i + sx, rj = j + sy;
            if (ri < 0 || rj < 0 || ri >= rg->nbx || rj >= rg->nby)
                continue;
            size_t fb = (size_t)j * (size_t)f.nbx + (size_t)i;
            size_t rb = (size_t)rj * (size_t)rg->nbx + (size_t)ri;
            if (!f.ok[fb] || !rg->ok[rb])
                continue;
            const double *a = f.rgb + fb * 3, *b = rg->rgb + rb * 3;
            double rho[3];
            for (int k = 0; k < 3; k++)
                rho[k] = log(b[k] / a[k]);
            k1[nc] = rho[0] - rho[1];
            k2[nc] = rho[2] - rho[1];
            kl[nc] = rg->lnl[rb] - f.lnl[fb];
            cand[nc * 2] = i;
            cand[nc * 2 + 1] = j;
            nc++;
        }
    double med1 = 0, med2 = 0, medl = 0;
    if (nc > 0) {
        memcpy(work, k1, (size_t)nc * sizeof *work);
        med1 = median_of(work, nc);
        memcpy(work, k2, (size_t)nc * sizeof *work);
        med2 = median_of(work, nc);
        memcpy(work, kl, (size_t)nc * sizeof *work);
        medl = median_of(work, nc);
    }

    /* Motion consistency. */
    int kept = 0;
    for (int c = 0; c < nc; c++) {
        int i = cand[c * 2], j = cand[c * 2 + 1];
        double ncc, sdf, sdr;
        if (!neighbourhood(&f, i, j, rg, i + sx, j + sy, &ncc, &sdf, &sdr))
            continue;
        bool keep;
        if (sdf > MATCH_TEXTURE && sdr > MATCH_TEXTURE)
            keep = ncc >= MATCH_NCC;
        else if (sdf <= MATCH_TEXTURE && sdr <= MATCH_TEXTURE)
            keep = fabs(k1[c] - med1) <= MATCH_FLAT_CHROMA &&
                   fabs(k2[c] - med2) <= MATCH_FLAT_CHROMA && fabs(kl[c] - medl) <= MATCH_FLAT_LUMA;
        else
            keep = false;
        if (!keep)
            continue;
        size_t fb = (size_t)j * (size_t)f.nbx + (size_t)i;
        size_t rb = (size_t)(j + sy) * (size_t)rg->nbx + (size_t)(i + sx);
        for (int k = 0; k < 3; k++) {
            cf[(size_t)k * (size_t)nf + (size_t)kept] = f.rgb[fb * 3 + (size_t)k];
            cr[(size_t)k * (size_t)nf + (size_t)kept] = rg->rgb[rb * 3 + (size_t)k];
        }
        kept++;
    }
    res->kept = kept;
    int need = (int)ceil(MATCH_MIN_FRACTION * res->blocks);
    if (need > MATCH_MIN_SAMPLES)
        need = MATCH_MIN_SAMPLES;
    if (need < 1)
        need = 1;
    if (kept < need)
        goto too_few;

    /* The fit; then the pairs the fit cannot explain (a channel off by more
     * than 0.2 in ln, 0.29 stop, or 4.685 robust sigmas if that is more:
     * what the structure checks let through of moving objects, speculars,
     * changed lights) are dropped and the model fitted again on the rest. */
    fit_samples(cf, cr, nf, kept, model, res, k1, work);
    double cut = 1.4826 * 4.685 * sample_error_median(cf, cr, nf, kept, res, work);
    cut = cut > 0.2 ? cut : 0.2;
    int inl = 0;
    for (int sm = 0; sm < kept; sm++) {
        bool in = true;
        for (int k = 0; k < 3 && in; k++) {
            double fit = res->gain[k] * cf[(size_t)k * (size_t)nf + (size_t)sm] + res->offset[k];
            double e = log(cr[(size_t)k * (size_t)nf + (size_t)sm] / fit);
            in = fit > 0 && fabs(e) <= cut;
        }
        if (!in)
            continue;
        for (int k = 0; k < 3; k++) {
            cf[(size_t)k * (size_t)nf + (size_t)inl] = cf[(size_t)k * (size_t)nf + (size_t)sm];
            cr[(size_t)k * (size_t)nf + (size_t)inl] = cr[(size_t)k * (size_t)nf + (size_t)sm];
        }
        inl++;
    }
    if (inl < kept) {
        kept = res->kept = inl;
        if (kept < need)
            goto too_few;
        fit_samples(cf, cr, nf, kept, model, res, k1, work);
    }

    /* What is left over: RMS of the log2 ratios, all channels. */
    double ss = 0;
    int ns = 0;
    for (int k = 0; k < 3; k++) {
        const double *fa = cf + (size_t)k * (size_t)nf, *rb = cr + (size_t)k * (size_t)nf;
        for (int sm = 0; sm < kept; sm++) {
            double fit = res->gain[k] * fa[sm] + res->offset[k];
            if (fit > 0) {
                double e = log2(rb[sm] / fit);
                ss += e * e;
                ns++;
            }
        }
    }
    res->residual = ns ? sqrt(ss / ns) : 0;
    bool finite = isfinite(res->residual);
    for (int k = 0; k < 3; k++)
        finite = finite && isfinite(res->gain[k]) && res->gain[k] > 0 && isfinite(res->offset[k]);
    if (!finite)
        rc = pfs_error_set(err, EIO,
                           "relight match: the fit of this frame to reference frame %d is not "
                           "usable (gain [%g %g %g], offset [%g %g %g]); pick another reference "
                           "frame or match.model: gain",
                           ref_no, res->gain[0], res->gain[1], res->gain[2], res->offset[0],
                           res->offset[1], res->offset[2]);
    goto done;

too_few:
    rc = pfs_error_set(err, EIO,
                       "relight match: this frame and reference frame %d share only %d "
                       "well-exposed, motion-consistent samples (need %d); pick a reference "
                       "closer in time or with more of the same surfaces in view",
                       ref_no, kept, need);
    goto done;
oom:
    rc = pfs_error_set(err, ENOMEM, "relight match: out of memory");
done:
    free(buf);
    free(cand);
    grid_free(&f);
    grid_free(&r);
    grid_free(&r2);
    return rc;
}
