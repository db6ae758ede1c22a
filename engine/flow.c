/*
 * flow.c - dense optical flow (engine/flow.h): the C reference, and the host
 * side of the OpenCL path whose kernels are cl/flow.cl.
 *
 * Both paths run the same stages over the same pyramid, each stage a loop
 * over independent patches or pixels:
 *
 *   pyramid    each level is the finer one filtered with the binomial
 *              [1 3 3 1] / 8 per axis and decimated, so level pixel i sits
 *              at (2i + 0.5) of the finer level: the same map bilinear
 *              upsampling of the flow uses, so levels stay registered;
 *   patches    a grid of patch_size squares every patch_stride pixels (the
 *              last row and column flush with the edge, so every pixel is
 *              covered), each started from the coarser level's flow at its
 *              centre and moved by inverse-compositional Gauss-Newton on
 *              mean-normalised intensities;
 *   densify    each pixel averages the patches that cover it, weighted by
 *              how well each patch's displacement explains that pixel;
 *   refine     the variational refinement of Brox et al. as OpenCV's
 *              VariationalRefinement: robust intensity and gradient
 *              constancy plus robust smoothness, linearised around the
 *              densified field, solved by red-black SOR.
 *
 * The reference computes in float, in the order the kernels do, so the two
 * agree exactly on a device with IEEE float and correctly rounded division
 * and square root (PoCL: the test measures a difference of 0). No sum runs
 * over more than a patch or a pixel's neighbours, each in an order both
 * paths spell out, and red-black SOR updates one colour from the other
 * only, which makes it the same computation whether the pixels run in a
 * loop or in parallel. The OpenCL path keeps its arrays in other layouts,
 * and has the patch kernel compute each patch's densification weights
 * while it holds the patch's rows (cl/flow.cl says why); neither changes
 * the arithmetic.
 *
 * Coordinates: pixel (x, y) of a level is the sample at (x, y); positions
 * are split into an integer and a fraction in [0, 1) before sampling, and
 * bilinear sampling clamps tap indices to the plane (clamp-to-edge, also
 * the rule of every derivative).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/flow.h"

/* ---- constants (keep in step with cl/flow.cl) --------------------------- */

/* Ridge added per patch pixel to the patch's 2x2 Hessian: a gradient of
 * about a quarter of an 8-bit code value. Textured patches never notice it;
 * a flat patch (singular Hessian) stays where it started instead of taking
 * a huge step, and a patch on a straight edge moves only across the edge. */
#define FLOW_HESSIAN_RIDGE 1e-6f

/* Densification weighs a patch at a pixel by 1 / max(1, |error|), the
 * error in 8-bit code values as in the DIS paper (whose frames were 8-bit):
 * errors below one code value all count fully. */
#define FLOW_ERROR_SCALE 255.0f

/* Variational refinement, OpenCV's constants for 0..255 images rescaled to
 * luma in 0..1 where they are intensities: the floor of the derivative
 * normalisation (zeta = 0.1 code value, squared); the robust penaliser's
 * epsilon (0.001, squared; dimensionless and in pixels of flow); the
 * Tikhonov term that keeps the increment small where the data says nothing
 * (zeta^2 = 0.01 in OpenCV, in pixels^2 of flow, so unchanged); the SOR
 * over-relaxation. */
#define FLOW_VAR_ZETA2 (0.1f / 255.0f * (0.1f / 255.0f))
#define FLOW_VAR_EPS2 1e-6f
#define FLOW_VAR_TIKHONOV 0.01f
#define FLOW_VAR_OMEGA 1.6f

/* Flow vectors are clamped to this before they become integer sample
 * positions: a runaway vector must clamp to the edge, not overflow an int. */
#define FLOW_MAX_SHIFT 1e6f

/* Patch sizes up to this: the per-column sums of a patch are arrays. */
#define FLOW_MAX_PATCH 16

/* Levels at most: sixteen halvings take 65536 pixels down to one. */
#define FLOW_MAX_LEVELS 16

void pfs_flow_params_default(struct pfs_flow_params *p)
{
    /* OpenCV's "medium" preset, with the finest search at full resolution
     * rather than half (wire removal needs the sub-pixel accuracy) and, to
     * pay for it, stride 4 rather than 3 (0.039 against 0.037 px mean
     * error on the tests' motions, for 1.8 times fewer patches). The
     * Gauss-Newton cap hardly matters: the search stops when the SSD stops
     * falling, after about three evaluations per patch on film. OpenCV's
     * spatial propagation (each patch trying its neighbours' vectors in a
     * sequential scan) is left out, as it does not parallelise; the
     * coarse-to-fine start and the variational step are what recover
     * large and smooth motion here (tests/unit/test_flow.c). */
    *p = (struct pfs_flow_params){
        .coarsest_width = 32,
        .finest_level = 0,
        .patch_size = 8,
        .patch_stride = 4,
        .gd_iterations = 16,
        .var_iterations = 5,
        .var_sor_iterations = 5,
        .var_alpha = 20.0f,
        .var_gamma = 10.0f,
        .var_delta = 5.0f,
    };
}

void pfs_flow_luma(const struct pfs_image *img, float *plane)
{
    size_t n = (size_t)img->width * (size_t)img->height;
    for (size_t i = 0; i < n; i++) {
        const float *p = img->px + 4 * i;
        float c[3];
        for (int k = 0; k < 3; k++)
            c[k] = isnan(p[k]) ? 0.0f : p[k];
        float y = 0.2126f * c[0] + 0.7152f * c[1] + 0.0722f * c[2];
        /* +Inf and -Inf together make NaN: read as 0 like a NaN channel. */
        y = isnan(y) ? 0.0f : fminf(fmaxf(y, 0.0f), 1.0f);
        plane[i] = y <= 0.0031308f ? 12.92f * y : 1.055f * powf(y, 1.0f / 2.4f) - 0.055f;
    }
}

void pfs_flow_field_free(struct pfs_flow_field *f)
{
    if (!f)
        return;
    free(f->uv);
    f->uv = NULL;
}

/* ---- geometry shared by both paths --------------------------------------- */

struct flow_size {
    int w, h;
};

/* Level sizes, finest first; returns the number of levels. */
static int pyramid_sizes(int w, int h, const struct pfs_flow_params *p,
                         struct flow_size *sizes)
{
    int n = 1;
    sizes[0] = (struct flow_size){w, h};
    int min_w = p->coarsest_width > p->patch_size ? p->coarsest_width : p->patch_size;
    while (n < FLOW_MAX_LEVELS) {
        int nw = (sizes[n - 1].w + 1) / 2, nh = (sizes[n - 1].h + 1) / 2;
        if (nw < min_w || nh < p->patch_size)
            break;
        sizes[n++] = (struct flow_size){nw, nh};
    }
    return n;
}

/* Patches per row (or column) of a level: enough that the last one, moved
 * flush with the edge, covers the last pixel. */
static int patch_count(int len, int size, int stride)
{
    return (len - size + stride - 1) / stride + 1;
}

static int check_args(const float *a, const float *b, int w, int h,
                      const struct pfs_flow_params *p, struct pfs_flow_field *out,
                      pfs_error *err)
{
    if (!a || !b || !out)
        return pfs_error_set(err, EINVAL, "flow: no frame or no field");
    if (w < 16 || h < 16)
        return pfs_error_set(err, EINVAL, "flow: a %dx%d frame is under 16x16", w, h);
    if ((size_t)w > SIZE_MAX / 8u / (size_t)h)
        return pfs_error_set(err, EINVAL, "flow: a %dx%d frame is too large", w, h);
    if (p->patch_size < 2 || p->patch_size > FLOW_MAX_PATCH || p->patch_stride < 1 ||
        p->patch_stride > p->patch_size || p->coarsest_width < 1 || p->finest_level < 0 ||
        p->gd_iterations < 0 || p->var_iterations < 0 || p->var_sor_iterations < 0 ||
        !(p->var_alpha >= 0) || !(p->var_gamma >= 0) || !(p->var_delta >= 0))
        return pfs_error_set(err, EINVAL,
                             "flow: parameters out of range (patch %d stride %d, coarsest "
                             "width %d, finest level %d, iterations %d/%d/%d)",
                             p->patch_size, p->patch_stride, p->coarsest_width,
                             p->finest_level, p->gd_iterations, p->var_iterations,
                             p->var_sor_iterations);
    return 0;
}

/* ---- the C reference: sampling -------------------------------------------- */

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* v as floor(v) and the fraction v - floor(v), which float represents
 * exactly; separating them keeps the fraction exact when v is added to a
 * pixel index rather than forming index + v in float. */
static inline void split(float v, int *i, float *f)
{
    v = fminf(fmaxf(v, -FLOW_MAX_SHIFT), FLOW_MAX_SHIFT); /* NaN becomes -max */
    float fl = floorf(v);
    *i = (int)fl;
    *f = v - fl;
}

/* Bilinear sample at (ix + fx, iy + fy), fractions in [0, 1). Clamping the
 * tap indices, not the position, is clamp-to-edge sampling exactly. */
static inline float bilinear(const float *img, int w, int h, int ix, int iy, float fx, float fy)
{
    int x0 = clampi(ix, 0, w - 1), x1 = clampi(ix + 1, 0, w - 1);
    const float *r0 = img + (size_t)clampi(iy, 0, h - 1) * (size_t)w;
    const float *r1 = img + (size_t)clampi(iy + 1, 0, h - 1) * (size_t)w;
    float top = r0[x0] + fx * (r0[x1] - r0[x0]);
    float bot = r1[x0] + fx * (r1[x1] - r1[x0]);
    return top + fy * (bot - top);
}

/* The same on an interleaved (u, v) field, one channel at a time. */
static inline void bilinear_uv(const float *uv, int w, int h, int ix, int iy, float fx, float fy,
                               float out[2])
{
    int x0 = clampi(ix, 0, w - 1), x1 = clampi(ix + 1, 0, w - 1);
    const float *r0 = uv + 2 * (size_t)clampi(iy, 0, h - 1) * (size_t)w;
    const float *r1 = uv + 2 * (size_t)clampi(iy + 1, 0, h - 1) * (size_t)w;
    for (int c = 0; c < 2; c++) {
        float top = r0[2 * x0 + c] + fx * (r0[2 * x1 + c] - r0[2 * x0 + c]);
        float bot = r1[2 * x0 + c] + fx * (r1[2 * x1 + c] - r1[2 * x0 + c]);
        out[c] = top + fy * (bot - top);
    }
}

/* The field of a level `scale` times coarser than this one at pixel
 * (x, y) of this one, in this level's pixels. Coarse pixel i lies at
 * scale * (i + 0.5) - 0.5 here (the pyramid's alignment, applied log2(scale)
 * times). scale is a power of two, so the position is exact. */
static void coarse_flow(const float *coarse, int cw, int ch, float scale, float x, float y,
                        float out[2])
{
    int ix, iy;
    float fx, fy;
    split((x + 0.5f) / scale - 0.5f, &ix, &fx);
    split((y + 0.5f) / scale - 0.5f, &iy, &fy);
    bilinear_uv(coarse, cw, ch, ix, iy, fx, fy, out);
    out[0] *= scale;
    out[1] *= scale;
}

/* ---- the C reference: pyramid -------------------------------------------- */

static const float binomial4[4] = {0.125f, 0.375f, 0.375f, 0.125f};

/* Non-finite input reads as 0: a NaN in a plate must not spread through
 * every filter and sum downstream. */
static void finite_copy(const float *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = isfinite(src[i]) ? src[i] : 0.0f;
}

static void downsample(const float *src, int sw, int sh, float *dst, int dw, int dh)
{
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++) {
            float acc = 0.0f;
            for (int j = 0; j < 4; j++) {
                const float *row = src + (size_t)clampi(2 * y - 1 + j, 0, sh - 1) * (size_t)sw;
                float r = 0.0f;
                for (int i = 0; i < 4; i++)
                    r += binomial4[i] * row[clampi(2 * x - 1 + i, 0, sw - 1)];
                acc += binomial4[j] * r;
            }
            dst[(size_t)y * (size_t)dw + (size_t)x] = acc;
        }
}

/* Sobel / 8: the derivative with [1 2 1] smoothing across it, as OpenCV's
 * DIS takes the template's gradient; less noisy than a bare central
 * difference in the patch Hessians. */
static void gradient(const float *img, int w, int h, float *grad)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int xl = clampi(x - 1, 0, w - 1), xr = clampi(x + 1, 0, w - 1);
            const float *rt = img + (size_t)clampi(y - 1, 0, h - 1) * (size_t)w;
            const float *rm = img + (size_t)y * (size_t)w;
            const float *rb = img + (size_t)clampi(y + 1, 0, h - 1) * (size_t)w;
            float gx = (rt[xr] - rt[xl]) + 2.0f * (rm[xr] - rm[xl]) + (rb[xr] - rb[xl]);
            float gy = (rb[xl] - rt[xl]) + 2.0f * (rb[x] - rt[x]) + (rb[xr] - rt[xr]);
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            grad[2 * i] = 0.125f * gx;
            grad[2 * i + 1] = 0.125f * gy;
        }
}

/* ---- the C reference: patch search ---------------------------------------- */

/* A patch's result: its displacement and the mean intensity difference
 * I1 - I0 over it there (what mean normalisation took out), which
 * densification takes out again before judging the patch per pixel. */
struct flow_patch {
    float u, v, offset;
};

/*
 * Inverse-compositional Gauss-Newton for one patch: minimise over (u, v)
 *
 *     sum_k (I1(x_k + u) - T_k - mean_k(I1(x_k + u) - T_k))^2,   T = I0,
 *
 * the SSD of the mean-normalised patches. The Jacobian is the template's
 * gradient made zero-mean (what the normalisation does to it), so the
 * Hessian H = sum g g^T is fixed per patch, and with sum_k g_k = 0 the
 * residual's mean drops out of the step: b = sum g_k d_k with d the raw
 * difference. One pass over the patch gives the step and the SSD of the
 * current position. The search keeps the position of least SSD (the start
 * included), stops when an iteration no longer lowers it, and falls back to
 * its start when the best position lies more than a patch size away (as
 * OpenCV does): a coarser level that far wrong has failed outright, so such
 * a jump is far likelier a lock onto other content than a correction.
 *
 * Sums over the patch are taken per patch column, then across the columns
 * in order: the order in which a vector unit adds a patch a row at a time,
 * as cl/flow.cl does, so the two paths agree to the bit.
 */
static float across(const float *column_sums, int size)
{
    float s = 0.0f;
    for (int i = 0; i < size; i++)
        s += column_sums[i];
    return s;
}

static struct flow_patch patch_search(const float *i0, const float *i1, const float *grad,
                                      int w, int h, int x0, int y0, float u0, float v0,
                                      int size, int iterations)
{
    float n = (float)(size * size);
    float cgx[FLOW_MAX_PATCH] = {0}, cgy[FLOW_MAX_PATCH] = {0};
    float cxx[FLOW_MAX_PATCH] = {0}, cxy[FLOW_MAX_PATCH] = {0}, cyy[FLOW_MAX_PATCH] = {0};
    for (int j = 0; j < size; j++)
        for (int i = 0; i < size; i++) {
            size_t k = (size_t)(y0 + j) * (size_t)w + (size_t)(x0 + i);
            float gx = grad[2 * k], gy = grad[2 * k + 1];
            cgx[i] += gx;
            cgy[i] += gy;
            cxx[i] += gx * gx;
            cxy[i] += gx * gy;
            cyy[i] += gy * gy;
        }
    float mgx = across(cgx, size) / n, mgy = across(cgy, size) / n;
    float hxx = across(cxx, size) - n * mgx * mgx + n * FLOW_HESSIAN_RIDGE;
    float hxy = across(cxy, size) - n * mgx * mgy;
    float hyy = across(cyy, size) - n * mgy * mgy + n * FLOW_HESSIAN_RIDGE;
    float det = hxx * hyy - hxy * hxy;

    float u = u0, v = v0, prev = INFINITY;
    struct flow_patch best = {u0, v0, 0.0f}, start = best;
    float best_ssd = INFINITY;
    for (int t = 0; t <= iterations; t++) {
        int iu, iv;
        float fu, fv;
        split(u, &iu, &fu);
        split(v, &iv, &fv);
        /* The bilinear taps of the whole patch: columns clamped once, not
         * per sample (bilinear() per sample gives the same values). */
        int cols[FLOW_MAX_PATCH + 1];
        for (int i = 0; i <= size; i++)
            cols[i] = clampi(x0 + iu + i, 0, w - 1);
        float cd[FLOW_MAX_PATCH] = {0}, cdd[FLOW_MAX_PATCH] = {0};
        float cbx[FLOW_MAX_PATCH] = {0}, cby[FLOW_MAX_PATCH] = {0};
        for (int j = 0; j < size; j++) {
            const float *r0 = i1 + (size_t)clampi(y0 + iv + j, 0, h - 1) * (size_t)w;
            const float *r1 = i1 + (size_t)clampi(y0 + iv + j + 1, 0, h - 1) * (size_t)w;
            size_t row = (size_t)(y0 + j) * (size_t)w + (size_t)x0;
            for (int i = 0; i < size; i++) {
                float top = r0[cols[i]] + fu * (r0[cols[i + 1]] - r0[cols[i]]);
                float bot = r1[cols[i]] + fu * (r1[cols[i + 1]] - r1[cols[i]]);
                float d = (top + fv * (bot - top)) - i0[row + (size_t)i];
                cd[i] += d;
                cdd[i] += d * d;
                cbx[i] += grad[2 * (row + (size_t)i)] * d;
                cby[i] += grad[2 * (row + (size_t)i) + 1] * d;
            }
        }
        float sd = across(cd, size), sdd = across(cdd, size);
        float bx = across(cbx, size), by = across(cby, size);
        float ssd = sdd - sd * sd / n;
        if (t == 0)
            start.offset = sd / n;
        if (ssd < best_ssd) {
            best_ssd = ssd;
            best = (struct flow_patch){u, v, sd / n};
        }
        if (t == iterations || !(ssd < prev))
            break;
        prev = ssd;
        bx -= mgx * sd;
        by -= mgy * sd;
        u -= (hyy * bx - hxy * by) / det;
        v -= (hxx * by - hxy * bx) / det;
    }
    float du = best.u - u0, dv = best.v - v0;
    if (!(sqrtf(du * du + dv * dv) <= (float)size))
        best = start;
    return best;
}

/* Patch column (or row) i's first pixel: every stride, the last flush with
 * the edge. */
static inline int patch_origin(int i, int len, int size, int stride)
{
    int o = i * stride;
    return o < len - size ? o : len - size;
}

static void search_level(const float *i0, const float *i1, const float *grad, int w, int h,
                         const float *coarse, int cw, int ch, const struct pfs_flow_params *p,
                         struct flow_patch *patches)
{
    int size = p->patch_size, nx = patch_count(w, size, p->patch_stride);
    int ny = patch_count(h, size, p->patch_stride);
    for (int py = 0; py < ny; py++)
        for (int px = 0; px < nx; px++) {
            int x0 = patch_origin(px, w, size, p->patch_stride);
            int y0 = patch_origin(py, h, size, p->patch_stride);
            float init[2] = {0.0f, 0.0f};
            if (coarse) {
                float c = 0.5f * (float)(size - 1);
                coarse_flow(coarse, cw, ch, 2.0f, (float)x0 + c, (float)y0 + c, init);
            }
            patches[(size_t)py * (size_t)nx + (size_t)px] =
                patch_search(i0, i1, grad, w, h, x0, y0, init[0], init[1], size,
                             p->gd_iterations);
        }
}

/* ---- the C reference: densification --------------------------------------- */

/* The patches covering pixel x along one axis, exactly: lo .. hi. Patch i
 * starts at i * stride, except the last, which starts at len - size (the
 * patch count makes (n - 1) * stride >= len - size), so it also covers
 * every x >= len - size. */
static inline void cover_range(int x, int len, int n, int size, int stride, int *lo, int *hi)
{
    *lo = x - size + 1 > 0 ? (x - size + stride) / stride : 0;
    *hi = x >= len - size ? n - 1 : x / stride;
}

/*
 * Each pixel's flow is the average of the covering patches' displacements,
 * patch k weighted by 1 / max(1, |e_k|) with e_k its photometric error at
 * this pixel in code values (the DIS paper's weight): a patch that straddles
 * a motion boundary explains the pixels on its own side and loses the
 * others to the patches that do. e_k is mean-normalised like the search,
 * so a change of light does not flatten the weights.
 */
static void densify(const float *i0, const float *i1, int w, int h,
                    const struct flow_patch *patches, const struct pfs_flow_params *p,
                    float *uv)
{
    int size = p->patch_size, stride = p->patch_stride;
    int nx = patch_count(w, size, stride), ny = patch_count(h, size, stride);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int xlo, xhi, ylo, yhi;
            cover_range(x, w, nx, size, stride, &xlo, &xhi);
            cover_range(y, h, ny, size, stride, &ylo, &yhi);
            float i0v = i0[(size_t)y * (size_t)w + (size_t)x];
            float su = 0.0f, sv = 0.0f, sw = 0.0f;
            for (int py = ylo; py <= yhi; py++)
                for (int px = xlo; px <= xhi; px++) {
                    const struct flow_patch *pt = &patches[(size_t)py * (size_t)nx + (size_t)px];
                    int iu, iv;
                    float fu, fv;
                    split(pt->u, &iu, &fu);
                    split(pt->v, &iv, &fv);
                    float e = bilinear(i1, w, h, x + iu, y + iv, fu, fv) - i0v - pt->offset;
                    float wt = 1.0f / fmaxf(1.0f, fabsf(e) * FLOW_ERROR_SCALE);
                    su += wt * pt->u;
                    sv += wt * pt->v;
                    sw += wt;
                }
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            uv[2 * i] = su / sw;
            uv[2 * i + 1] = sv / sw;
        }
}

/* ---- the C reference: variational refinement ------------------------------ */

/*
 * Minimises, over an increment (du, dv) of the field W = (U, V),
 *
 *   sum_x  delta Psi(E_I) + gamma Psi(E_G) + alpha Psi(|grad(W + dW)|^2)
 *
 * with Psi(s^2) = sqrt(s^2 + eps^2), E_I the intensity constancy and E_G
 * the gradient constancy residuals of I1 warped by W, linearised in dW and
 * each normalised by its derivatives' magnitude (so a strong edge does not
 * outvote everything; Zimmer et al.). Derivatives are taken of the average
 * of I0 and the warped I1, central differences with clamped borders. Each
 * fixed-point step freezes the robust weights Psi' at the current dW,
 * which leaves a linear system per pixel: a 2x2 data block plus a
 * 4-neighbour smoothness coupling, the edges from p to its right and lower
 * neighbours weighted by p's smoothness weight (OpenCV's discretisation).
 * Red-black SOR solves it: all pixels of one colour of the checkerboard
 * depend only on the other colour.
 */

/* The eight derived images per pixel, in order. */
enum { D_IX, D_IY, D_IZ, D_IXX, D_IXY, D_IYY, D_IXZ, D_IYZ, D_COUNT };
/* The per-pixel system of a fixed-point step: 2x2 block, right-hand side. */
enum { S_A11, S_A12, S_A22, S_B1, S_B2, S_COUNT };

/* I1 warped by the field: channel 0 the average with I0, channel 1 the
 * difference I1w - I0. Also clears the increment. */
static void var_prepare(const float *i0, const float *i1, const float *uv, int w, int h,
                        float *avgz, float *duv)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            int iu, iv;
            float fu, fv;
            split(uv[2 * i], &iu, &fu);
            split(uv[2 * i + 1], &iv, &fv);
            float warped = bilinear(i1, w, h, x + iu, y + iv, fu, fv);
            avgz[2 * i] = 0.5f * (i0[i] + warped);
            avgz[2 * i + 1] = warped - i0[i];
            duv[2 * i] = 0.0f;
            duv[2 * i + 1] = 0.0f;
        }
}

/* Central differences of channel c of a 2-channel plane, clamped. */
static inline float ddx(const float *f, int w, int x, int y, int c)
{
    const float *row = f + 2 * (size_t)y * (size_t)w;
    return 0.5f * (row[2 * clampi(x + 1, 0, w - 1) + c] - row[2 * clampi(x - 1, 0, w - 1) + c]);
}

static inline float ddy(const float *f, int w, int h, int x, int y, int c)
{
    size_t below = (size_t)clampi(y + 1, 0, h - 1) * (size_t)w + (size_t)x;
    size_t above = (size_t)clampi(y - 1, 0, h - 1) * (size_t)w + (size_t)x;
    return 0.5f * (f[2 * below + c] - f[2 * above + c]);
}

static void var_derivatives(const float *avgz, int w, int h, float *deriv)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int xl = clampi(x - 1, 0, w - 1), xr = clampi(x + 1, 0, w - 1);
            int yt = clampi(y - 1, 0, h - 1), yb = clampi(y + 1, 0, h - 1);
            float *d = deriv + D_COUNT * ((size_t)y * (size_t)w + (size_t)x);
            d[D_IX] = ddx(avgz, w, x, y, 0);
            d[D_IY] = ddy(avgz, w, h, x, y, 0);
            d[D_IZ] = avgz[2 * ((size_t)y * (size_t)w + (size_t)x) + 1];
            d[D_IXX] = 0.5f * (ddx(avgz, w, xr, y, 0) - ddx(avgz, w, xl, y, 0));
            d[D_IXY] = 0.5f * (ddx(avgz, w, x, yb, 0) - ddx(avgz, w, x, yt, 0));
            d[D_IYY] = 0.5f * (ddy(avgz, w, h, x, yb, 0) - ddy(avgz, w, h, x, yt, 0));
            d[D_IXZ] = ddx(avgz, w, x, y, 1);
            d[D_IYZ] = ddy(avgz, w, h, x, y, 1);
        }
}

/* Psi' of the smoothness term per pixel, times alpha: forward differences
 * of W + dW, zero past the right and lower edges. ws[p] weighs the edges
 * from p to its right and lower neighbours. */
static void var_smoothness(const float *uv, const float *duv, int w, int h, float alpha,
                           float *ws)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            size_t r = (size_t)y * (size_t)w + (size_t)clampi(x + 1, 0, w - 1);
            size_t b = (size_t)clampi(y + 1, 0, h - 1) * (size_t)w + (size_t)x;
            float u = uv[2 * i] + duv[2 * i], v = uv[2 * i + 1] + duv[2 * i + 1];
            float ux = (uv[2 * r] + duv[2 * r]) - u, vx = (uv[2 * r + 1] + duv[2 * r + 1]) - v;
            float uy = (uv[2 * b] + duv[2 * b]) - u, vy = (uv[2 * b + 1] + duv[2 * b + 1]) - v;
            ws[i] = 0.5f * alpha / sqrtf(ux * ux + vx * vx + uy * uy + vy * vy + FLOW_VAR_EPS2);
        }
}

/* A pixel's four smoothness edges: neighbour indices (clamped to the pixel
 * itself where the edge would leave the image) and weights (0 there). */
struct var_edges {
    size_t l, r, t, b;
    float wl, wr, wt, wb;
};

static inline struct var_edges var_edges(const float *ws, int w, int h, int x, int y)
{
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    struct var_edges e = {
        .l = x > 0 ? i - 1 : i,
        .r = x < w - 1 ? i + 1 : i,
        .t = y > 0 ? i - (size_t)w : i,
        .b = y < h - 1 ? i + (size_t)w : i,
    };
    e.wl = x > 0 ? ws[e.l] : 0.0f;
    e.wr = x < w - 1 ? ws[i] : 0.0f;
    e.wt = y > 0 ? ws[e.t] : 0.0f;
    e.wb = y < h - 1 ? ws[i] : 0.0f;
    return e;
}

static void var_system(const float *deriv, const float *uv, const float *duv, const float *ws,
                       int w, int h, const struct pfs_flow_params *p, float *sys)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            const float *d = deriv + D_COUNT * i;
            float du = duv[2 * i], dv = duv[2 * i + 1];

            /* Intensity constancy. */
            float ix = d[D_IX], iy = d[D_IY], iz = d[D_IZ];
            float norm = ix * ix + iy * iy + FLOW_VAR_ZETA2;
            float r = iz + ix * du + iy * dv;
            float wd = 0.5f * p->var_delta / sqrtf(r * r / norm + FLOW_VAR_EPS2);
            float a11 = wd * (ix * ix / norm) + FLOW_VAR_TIKHONOV;
            float a12 = wd * (ix * iy / norm);
            float a22 = wd * (iy * iy / norm) + FLOW_VAR_TIKHONOV;
            float b1 = -wd * (iz * ix / norm);
            float b2 = -wd * (iz * iy / norm);

            /* Gradient constancy. */
            float ixx = d[D_IXX], ixy = d[D_IXY], iyy = d[D_IYY];
            float ixz = d[D_IXZ], iyz = d[D_IYZ];
            float nx = ixx * ixx + ixy * ixy + FLOW_VAR_ZETA2;
            float ny = iyy * iyy + ixy * ixy + FLOW_VAR_ZETA2;
            float rx = ixz + ixx * du + ixy * dv, ry = iyz + ixy * du + iyy * dv;
            float wg = 0.5f * p->var_gamma / sqrtf(rx * rx / nx + ry * ry / ny + FLOW_VAR_EPS2);
            a11 += wg * (ixx * ixx / nx + ixy * ixy / ny);
            a12 += wg * (ixx * ixy / nx + ixy * iyy / ny);
            a22 += wg * (ixy * ixy / nx + iyy * iyy / ny);
            b1 -= wg * (ixx * ixz / nx + ixy * iyz / ny);
            b2 -= wg * (ixy * ixz / nx + iyy * iyz / ny);

            /* Smoothness: each edge pulls W + dW at its two ends together;
             * the dW part is the SOR's, the W part is constant. */
            struct var_edges e = var_edges(ws, w, h, x, y);
            float u = uv[2 * i], v = uv[2 * i + 1];
            float sum = e.wl + e.wr + e.wt + e.wb;
            a11 += sum;
            a22 += sum;
            b1 += e.wl * (uv[2 * e.l] - u) + e.wr * (uv[2 * e.r] - u) +
                  e.wt * (uv[2 * e.t] - u) + e.wb * (uv[2 * e.b] - u);
            b2 += e.wl * (uv[2 * e.l + 1] - v) + e.wr * (uv[2 * e.r + 1] - v) +
                  e.wt * (uv[2 * e.t + 1] - v) + e.wb * (uv[2 * e.b + 1] - v);

            float *s = sys + S_COUNT * i;
            s[S_A11] = a11;
            s[S_A12] = a12;
            s[S_A22] = a22;
            s[S_B1] = b1;
            s[S_B2] = b2;
        }
}

/* One SOR half-sweep over the pixels with (x + y) % 2 == colour. */
static void var_sor(const float *sys, const float *ws, float *duv, int w, int h, int colour)
{
    for (int y = 0; y < h; y++)
        for (int x = (y + colour) & 1; x < w; x += 2) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            const float *s = sys + S_COUNT * i;
            struct var_edges e = var_edges(ws, w, h, x, y);
            float su = e.wl * duv[2 * e.l] + e.wr * duv[2 * e.r] + e.wt * duv[2 * e.t] +
                       e.wb * duv[2 * e.b];
            float sv = e.wl * duv[2 * e.l + 1] + e.wr * duv[2 * e.r + 1] +
                       e.wt * duv[2 * e.t + 1] + e.wb * duv[2 * e.b + 1];
            float du = duv[2 * i], dv = duv[2 * i + 1];
            du += FLOW_VAR_OMEGA * ((su + s[S_B1] - s[S_A12] * dv) / s[S_A11] - du);
            dv += FLOW_VAR_OMEGA * ((sv + s[S_B2] - s[S_A12] * du) / s[S_A22] - dv);
            duv[2 * i] = du;
            duv[2 * i + 1] = dv;
        }
}

struct flow_scratch {
    float *avgz, *deriv, *ws, *sys, *duv;
};

static void refine(const float *i0, const float *i1, float *uv, int w, int h,
                   const struct pfs_flow_params *p, const struct flow_scratch *s)
{
    size_t n = (size_t)w * (size_t)h;
    var_prepare(i0, i1, uv, w, h, s->avgz, s->duv);
    var_derivatives(s->avgz, w, h, s->deriv);
    for (int k = 0; k < p->var_iterations; k++) {
        var_smoothness(uv, s->duv, w, h, p->var_alpha, s->ws);
        var_system(s->deriv, uv, s->duv, s->ws, w, h, p, s->sys);
        for (int j = 0; j < p->var_sor_iterations; j++) {
            var_sor(s->sys, s->ws, s->duv, w, h, 0);
            var_sor(s->sys, s->ws, s->duv, w, h, 1);
        }
    }
    for (size_t i = 0; i < 2 * n; i++)
        uv[i] += s->duv[i];
}

/* ---- the C reference: driver ---------------------------------------------- */

/* What both paths do first: the defaults for a NULL p, the arguments
 * checked, out cleared, the pyramid's sizes and the finest level searched. */
static int flow_begin(const float *a, const float *b, int w, int h,
                      const struct pfs_flow_params **p, struct pfs_flow_params *defaults,
                      struct pfs_flow_field *out, struct flow_size *sizes, int *nlev,
                      int *finest, pfs_error *err)
{
    if (!*p) {
        pfs_flow_params_default(defaults);
        *p = defaults;
    }
    if (out)
        out->uv = NULL;
    int rc = check_args(a, b, w, h, *p, out, err);
    if (rc)
        return rc;
    *nlev = pyramid_sizes(w, h, *p, sizes);
    *finest = (*p)->finest_level < *nlev - 1 ? (*p)->finest_level : *nlev - 1;
    return 0;
}

int pfs_flow_cpu(const float *a, const float *b, int w, int h, const struct pfs_flow_params *p,
                 struct pfs_flow_field *out, pfs_error *err)
{
    struct pfs_flow_params defaults;
    struct flow_size sizes[FLOW_MAX_LEVELS];
    int nlev, finest;
    int rc = flow_begin(a, b, w, h, &p, &defaults, out, sizes, &nlev, &finest, err);
    if (rc)
        return rc;
    size_t n0 = (size_t)w * (size_t)h;
    size_t npatch = (size_t)patch_count(sizes[finest].w, p->patch_size, p->patch_stride) *
                    (size_t)patch_count(sizes[finest].h, p->patch_size, p->patch_stride);

    float *i0[FLOW_MAX_LEVELS] = {0}, *i1[FLOW_MAX_LEVELS] = {0}, *uv[FLOW_MAX_LEVELS] = {0};
    float *grad = malloc(2 * n0 * sizeof *grad);
    struct flow_patch *patches = malloc(npatch * sizeof *patches);
    struct flow_scratch s = {
        .avgz = malloc(2 * n0 * sizeof(float)),
        .deriv = malloc(D_COUNT * n0 * sizeof(float)),
        .ws = malloc(n0 * sizeof(float)),
        .sys = malloc(S_COUNT * n0 * sizeof(float)),
        .duv = malloc(2 * n0 * sizeof(float)),
    };
    int ok = grad && patches && s.avgz && s.deriv && s.ws && s.sys && s.duv;
    for (int l = 0; l < nlev && ok; l++) {
        size_t n = (size_t)sizes[l].w * (size_t)sizes[l].h;
        i0[l] = malloc(n * sizeof(float));
        i1[l] = malloc(n * sizeof(float));
        uv[l] = malloc(2 * n * sizeof(float));
        ok = i0[l] && i1[l] && uv[l];
    }
    if (!ok) {
        rc = pfs_error_set(err, ENOMEM, "flow: no memory for a %dx%d frame's pyramid", w, h);
        goto out;
    }

    finite_copy(a, i0[0], n0);
    finite_copy(b, i1[0], n0);
    for (int l = 1; l < nlev; l++) {
        downsample(i0[l - 1], sizes[l - 1].w, sizes[l - 1].h, i0[l], sizes[l].w, sizes[l].h);
        downsample(i1[l - 1], sizes[l - 1].w, sizes[l - 1].h, i1[l], sizes[l].w, sizes[l].h);
    }
    for (int l = nlev - 1; l >= finest; l--) {
        int lw = sizes[l].w, lh = sizes[l].h;
        gradient(i0[l], lw, lh, grad);
        const float *coarse = l < nlev - 1 ? uv[l + 1] : NULL;
        int cw = l < nlev - 1 ? sizes[l + 1].w : 0, ch = l < nlev - 1 ? sizes[l + 1].h : 0;
        search_level(i0[l], i1[l], grad, lw, lh, coarse, cw, ch, p, patches);
        densify(i0[l], i1[l], lw, lh, patches, p, uv[l]);
        refine(i0[l], i1[l], uv[l], lw, lh, p, &s);
    }
    if (finest > 0) {
        float scale = (float)(1 << finest);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                coarse_flow(uv[finest], sizes[finest].w, sizes[finest].h, scale, (float)x,
                            (float)y, uv[0] + 2 * ((size_t)y * (size_t)w + (size_t)x));
    }
    out->width = w;
    out->height = h;
    out->uv = uv[0];
    uv[0] = NULL;

out:
    for (int l = 0; l < nlev; l++) {
        free(i0[l]);
        free(i1[l]);
        free(uv[l]);
    }
    free(grad);
    free(patches);
    free(s.avgz);
    free(s.deriv);
    free(s.ws);
    free(s.sys);
    free(s.duv);
    return rc;
}

/* ---- OpenCL --------------------------------------------------------------- */

/* The device buffers of one run; every field NULL or owned. Images, fields
 * and gradients are planar (cl/flow.cl says why); the variational stage's
 * arrays (wuv onwards) are in its padded red-black layout. Scratch is sized
 * for the finest level searched and reused by the coarser ones. */
struct flow_cl_mem {
    cl_mem src0, src1; /* the planes as uploaded */
    cl_mem i0[FLOW_MAX_LEVELS], i1[FLOW_MAX_LEVELS];
    cl_mem u[FLOW_MAX_LEVELS], v[FLOW_MAX_LEVELS];
    cl_mem gx, gy, pu, pv, votes, avg, z;
    cl_mem wuv, duv, deriv, ws, sys; /* 2, 2, D_COUNT, 1 and S_COUNT fields */
    cl_mem packed;                   /* the caller's interleaved field */
};

static void release_all(struct flow_cl_mem *m)
{
    cl_mem *all[] = {&m->src0, &m->src1, &m->gx,  &m->gy,    &m->pu, &m->pv,  &m->votes,
                     &m->avg,  &m->z,    &m->wuv, &m->duv,   &m->deriv, &m->ws, &m->sys,
                     &m->packed};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        if (*all[k])
            clReleaseMemObject(*all[k]);
    for (int l = 0; l < FLOW_MAX_LEVELS; l++) {
        cl_mem per_level[] = {m->i0[l], m->i1[l], m->u[l], m->v[l]};
        for (size_t k = 0; k < sizeof per_level / sizeof per_level[0]; k++)
            if (per_level[k])
                clReleaseMemObject(per_level[k]);
    }
}

/* A device buffer; zeroed when asked (the red-black guards must be finite
 * before anything is written there). */
static int device_buffer(struct pfs_cl *cl, size_t bytes, int zero, cl_mem *out, pfs_error *err)
{
    cl_int st;
    *out = clCreateBuffer(pfs_cl_context(cl), CL_MEM_READ_WRITE, bytes, NULL, &st);
    if (st == CL_SUCCESS && zero) {
        const cl_float nought = 0.0f;
        st = clEnqueueFillBuffer(pfs_cl_queue(cl), *out, &nought, sizeof nought, 0, bytes, 0,
                                 NULL, NULL);
    }
    if (st == CL_SUCCESS)
        return 0;
    if (*out)
        clReleaseMemObject(*out);
    *out = NULL;
    return pfs_error_set(err, ENOMEM, "flow: a %zu-byte device buffer: %s", bytes,
                         pfs_cl_status_name(st));
}

#define NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The variational refinement of one level, as refine() does it. */
static int refine_cl(struct pfs_cl *cl, const struct flow_cl_mem *m, int l, cl_int w, cl_int h,
                     const struct pfs_flow_params *p, pfs_error *err)
{
    /* Kernels over the red-black layout: one work-item per pixel of a
     * colour, half a row; both colours on alternate rows of the grid. */
    int hw = (w + 1) / 2;
    const struct pfs_cl_arg prep[] = {
        PFS_CL_ARG(m->i0[l]), PFS_CL_ARG(m->i1[l]), PFS_CL_ARG(m->u[l]), PFS_CL_ARG(m->v[l]),
        PFS_CL_ARG(w),        PFS_CL_ARG(h),        PFS_CL_ARG(m->avg),  PFS_CL_ARG(m->z),
        PFS_CL_ARG(m->wuv),   PFS_CL_ARG(m->duv),
    };
    int rc = pfs_cl_run_2d(cl, "flow_var_prepare", prep, NARGS(prep), w, h, err);
    const struct pfs_cl_arg der[] = {PFS_CL_ARG(m->avg), PFS_CL_ARG(m->z), PFS_CL_ARG(w),
                                     PFS_CL_ARG(h), PFS_CL_ARG(m->deriv)};
    if (rc == 0)
        rc = pfs_cl_run_2d(cl, "flow_var_derivatives", der, NARGS(der), hw, 2 * h, err);
    cl_float alpha = p->var_alpha, gamma = p->var_gamma, delta = p->var_delta;
    const struct pfs_cl_arg smooth[] = {PFS_CL_ARG(m->wuv), PFS_CL_ARG(m->duv), PFS_CL_ARG(w),
                                        PFS_CL_ARG(h),      PFS_CL_ARG(alpha),  PFS_CL_ARG(m->ws)};
    const struct pfs_cl_arg sys[] = {PFS_CL_ARG(m->deriv), PFS_CL_ARG(m->wuv), PFS_CL_ARG(m->duv),
                                     PFS_CL_ARG(m->ws),    PFS_CL_ARG(w),      PFS_CL_ARG(h),
                                     PFS_CL_ARG(gamma),    PFS_CL_ARG(delta),  PFS_CL_ARG(m->sys)};
    cl_int colours[2] = {0, 1};
    for (int k = 0; rc == 0 && k < p->var_iterations; k++) {
        rc = pfs_cl_run_2d(cl, "flow_var_smoothness", smooth, NARGS(smooth), hw, 2 * h, err);
        if (rc == 0)
            rc = pfs_cl_run_2d(cl, "flow_var_system", sys, NARGS(sys), hw, 2 * h, err);
        for (int j = 0; rc == 0 && j < 2 * p->var_sor_iterations; j++) {
            const struct pfs_cl_arg sor[] = {PFS_CL_ARG(m->sys), PFS_CL_ARG(m->ws),
                                             PFS_CL_ARG(m->duv), PFS_CL_ARG(w),
                                             PFS_CL_ARG(h),      PFS_CL_ARG(colours[j & 1])};
            rc = pfs_cl_run_2d(cl, "flow_var_sor", sor, NARGS(sor), hw, h, err);
        }
    }
    const struct pfs_cl_arg apply[] = {PFS_CL_ARG(m->u[l]), PFS_CL_ARG(m->v[l]),
                                       PFS_CL_ARG(m->duv),  PFS_CL_ARG(w), PFS_CL_ARG(h)};
    if (rc == 0)
        rc = pfs_cl_run_2d(cl, "flow_var_apply", apply, NARGS(apply), w, h, err);
    return rc;
}

/* Every buffer of a run. */
static int alloc_cl(struct pfs_cl *cl, const struct flow_size *sizes, int nlev, int finest,
                    const struct pfs_flow_params *p, struct flow_cl_mem *m, pfs_error *err)
{
    int rc = 0;
    for (int l = 0; rc == 0 && l < nlev; l++) {
        size_t bytes = (size_t)sizes[l].w * (size_t)sizes[l].h * sizeof(cl_float);
        cl_mem *per_level[] = {&m->i0[l], &m->i1[l], &m->u[l], &m->v[l]};
        for (size_t k = 0; rc == 0 && k < sizeof per_level / sizeof per_level[0]; k++)
            rc = device_buffer(cl, bytes, 0, per_level[k], err);
    }
    int fw = sizes[finest].w, fh = sizes[finest].h;
    size_t plane = (size_t)fw * (size_t)fh * sizeof(cl_float);
    size_t npatch = (size_t)patch_count(fw, p->patch_size, p->patch_stride) *
                    (size_t)patch_count(fh, p->patch_size, p->patch_stride) * sizeof(cl_float);
    /* A red-black field: two half-planes of (w + 1) / 2 + 2 by h + 2. */
    size_t field = 2 * (size_t)((fw + 1) / 2 + 2) * (size_t)(fh + 2) * sizeof(cl_float);
    struct {
        cl_mem *buf;
        size_t bytes;
        int zero;
    } scratch[] = {
        {&m->gx, plane, 0},  {&m->gy, plane, 0},          {&m->pu, npatch, 0},
        {&m->pv, npatch, 0}, {&m->votes, npatch * (size_t)(p->patch_size * p->patch_size), 0},
        {&m->avg, plane, 0},
        {&m->z, plane, 0},   {&m->wuv, 2 * field, 1},     {&m->duv, 2 * field, 1},
        {&m->ws, field, 1},  {&m->deriv, D_COUNT * field, 0}, {&m->sys, S_COUNT * field, 0},
        {&m->packed, 2 * (size_t)sizes[0].w * (size_t)sizes[0].h * sizeof(cl_float), 0},
    };
    for (size_t k = 0; rc == 0 && k < sizeof scratch / sizeof scratch[0]; k++)
        rc = device_buffer(cl, scratch[k].bytes, scratch[k].zero, scratch[k].buf, err);
    return rc;
}

int pfs_flow_cl(struct pfs_cl *cl, const float *a, const float *b, int w, int h,
                const struct pfs_flow_params *p, struct pfs_flow_field *out, pfs_error *err)
{
    struct pfs_flow_params defaults;
    struct flow_size sizes[FLOW_MAX_LEVELS];
    int nlev, finest;
    int rc = flow_begin(a, b, w, h, &p, &defaults, out, sizes, &nlev, &finest, err);
    if (rc)
        return rc;
    size_t n0 = (size_t)w * (size_t)h;
    struct flow_cl_mem m = {0};
    float *field = malloc(2 * n0 * sizeof *field);
    if (!field) {
        rc = pfs_error_set(err, ENOMEM, "flow: no memory for a %dx%d field", w, h);
        goto out;
    }
    rc = pfs_cl_buffer_from(cl, a, n0 * sizeof(float), &m.src0, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, b, n0 * sizeof(float), &m.src1, err);
    if (rc == 0)
        rc = alloc_cl(cl, sizes, nlev, finest, p, &m, err);
    if (rc)
        goto out;

    cl_int width = w;
    const struct pfs_cl_arg fin0[] = {PFS_CL_ARG(m.src0), PFS_CL_ARG(m.i0[0]), PFS_CL_ARG(width)};
    const struct pfs_cl_arg fin1[] = {PFS_CL_ARG(m.src1), PFS_CL_ARG(m.i1[0]), PFS_CL_ARG(width)};
    rc = pfs_cl_run_2d(cl, "flow_finite", fin0, NARGS(fin0), w, h, err);
    if (rc == 0)
        rc = pfs_cl_run_2d(cl, "flow_finite", fin1, NARGS(fin1), w, h, err);
    for (int l = 1; rc == 0 && l < nlev; l++) {
        cl_int sw = sizes[l - 1].w, sh = sizes[l - 1].h, dw = sizes[l].w;
        for (int k = 0; rc == 0 && k < 2; k++) {
            cl_mem src = k ? m.i1[l - 1] : m.i0[l - 1], dst = k ? m.i1[l] : m.i0[l];
            const struct pfs_cl_arg down[] = {PFS_CL_ARG(src), PFS_CL_ARG(sw), PFS_CL_ARG(sh),
                                              PFS_CL_ARG(dst), PFS_CL_ARG(dw)};
            rc = pfs_cl_run_2d(cl, "flow_downsample", down, NARGS(down), sizes[l].w,
                               sizes[l].h, err);
        }
    }

    cl_int size = p->patch_size, stride = p->patch_stride, iters = p->gd_iterations;
    for (int l = nlev - 1; rc == 0 && l >= finest; l--) {
        cl_int lw = sizes[l].w, lh = sizes[l].h;
        cl_int nx = patch_count(lw, size, stride), ny = patch_count(lh, size, stride);
        /* The coarsest level starts from zero: cw = 0 says so, and its own
         * field stands in for the coarse one, never read. */
        int top = l == nlev - 1;
        cl_mem cu = top ? m.u[l] : m.u[l + 1], cv = top ? m.v[l] : m.v[l + 1];
        cl_int cw = top ? 0 : sizes[l + 1].w, ch = top ? 0 : sizes[l + 1].h;
        const struct pfs_cl_arg grad[] = {PFS_CL_ARG(m.i0[l]), PFS_CL_ARG(lw), PFS_CL_ARG(lh),
                                          PFS_CL_ARG(m.gx), PFS_CL_ARG(m.gy)};
        const struct pfs_cl_arg search[] = {
            PFS_CL_ARG(m.i0[l]), PFS_CL_ARG(m.i1[l]), PFS_CL_ARG(m.gx),   PFS_CL_ARG(m.gy),
            PFS_CL_ARG(lw),      PFS_CL_ARG(lh),      PFS_CL_ARG(cu),     PFS_CL_ARG(cv),
            PFS_CL_ARG(cw),      PFS_CL_ARG(ch),      PFS_CL_ARG(size),   PFS_CL_ARG(stride),
            PFS_CL_ARG(iters),   PFS_CL_ARG(m.pu),    PFS_CL_ARG(m.pv),   PFS_CL_ARG(m.votes),
        };
        const struct pfs_cl_arg dense[] = {
            PFS_CL_ARG(m.pu),   PFS_CL_ARG(m.pv),     PFS_CL_ARG(m.votes), PFS_CL_ARG(lw),
            PFS_CL_ARG(lh),     PFS_CL_ARG(size),     PFS_CL_ARG(stride),  PFS_CL_ARG(m.u[l]),
            PFS_CL_ARG(m.v[l]),
        };
        rc = pfs_cl_run_2d(cl, "flow_gradient", grad, NARGS(grad), lw, lh, err);
        if (rc == 0)
            rc = pfs_cl_run_2d(cl, "flow_patch_search", search, NARGS(search), nx, ny, err);
        if (rc == 0)
            rc = pfs_cl_run_2d(cl, "flow_densify", dense, NARGS(dense), lw, lh, err);
        if (rc == 0)
            rc = refine_cl(cl, &m, l, lw, lh, p, err);
    }
    if (rc == 0 && finest > 0) {
        cl_int fw = sizes[finest].w, fh = sizes[finest].h, ow = w;
        cl_float scale = (cl_float)(1 << finest);
        const struct pfs_cl_arg up[] = {
            PFS_CL_ARG(m.u[finest]), PFS_CL_ARG(m.v[finest]), PFS_CL_ARG(fw),   PFS_CL_ARG(fh),
            PFS_CL_ARG(scale),       PFS_CL_ARG(m.u[0]),      PFS_CL_ARG(m.v[0]), PFS_CL_ARG(ow),
        };
        rc = pfs_cl_run_2d(cl, "flow_upsample", up, NARGS(up), w, h, err);
    }
    const struct pfs_cl_arg pack[] = {PFS_CL_ARG(m.u[0]), PFS_CL_ARG(m.v[0]), PFS_CL_ARG(m.packed),
                                      PFS_CL_ARG(width)};
    if (rc == 0)
        rc = pfs_cl_run_2d(cl, "flow_pack", pack, NARGS(pack), w, h, err);
    if (rc)
        goto out;
    /* Blocking: on the in-order queue it completes after every kernel. */
    cl_int st = clEnqueueReadBuffer(pfs_cl_queue(cl), m.packed, CL_TRUE, 0,
                                    2 * n0 * sizeof(float), field, 0, NULL, NULL);
    if (st != CL_SUCCESS) {
        rc = pfs_error_set(err, st == CL_OUT_OF_RESOURCES || st == CL_MEM_OBJECT_ALLOCATION_FAILURE
                                    ? ENOMEM
                                    : EIO,
                           "flow: reading the field back: %s", pfs_cl_status_name(st));
        goto out;
    }
    out->width = w;
    out->height = h;
    out->uv = field;
    field = NULL;

out:
    /* Safe with kernels still queued after an error: a released buffer
     * lives until the kernels that use it end, and the planes were copied
     * when their buffers were made. */
    release_all(&m);
    free(field);
    return rc;
}

float pfs_flow_sample(const float *f, int w, int h, int nch, int c, double x, double y)
{
    x = x < 0 ? 0 : x > w - 1 ? w - 1 : x;
    y = y < 0 ? 0 : y > h - 1 ? h - 1 : y;
    int x0 = (int)x, y0 = (int)y;
    int x1 = x0 + 1 < w ? x0 + 1 : x0, y1 = y0 + 1 < h ? y0 + 1 : y0;
    double fx = x - x0, fy = y - y0;
    const float *r0 = f + (size_t)y0 * (size_t)w * (size_t)nch;
    const float *r1 = f + (size_t)y1 * (size_t)w * (size_t)nch;
    double top = r0[x0 * nch + c] * (1 - fx) + r0[x1 * nch + c] * fx;
    double bot = r1[x0 * nch + c] * (1 - fx) + r1[x1 * nch + c] * fx;
    return (float)(top * (1 - fy) + bot * fy);
}

float pfs_flow_sample_kept(double x, double y)
{
    double fx = x - floor(x), fy = y - floor(y);
    double kx = (1 - fx) * (1 - fx) + fx * fx, ky = (1 - fy) * (1 - fy) + fy * fy;
    return (float)(kx * ky);
}
