/*
 * flow.cl - the OpenCL path of dense optical flow (engine/flow.h). The host
 * side, the C reference these kernels must match, and the reasons for each
 * stage are in engine/flow.c; every kernel here is one loop body of it, in
 * the same float operations in the same order, so that the two paths agree
 * to the bit where the device rounds as IEEE says. Contraction into fma is
 * off for that reason.
 *
 * Performance on PoCL, the CPU device, shaped the layout: PoCL vectorises
 * a kernel across work-items only when its body has no loop and no
 * interleaved (float2) access. So everything is planar (images, the two
 * components of fields and gradients, the patches' displacements), the
 * variational stage's per-pixel kernels are loop-free over a red-black
 * layout, and the caller's interleaved field is made by flow_pack at the
 * end. The kernels with loops (patch search, densification) work a patch
 * row at a time in float8 for the default 8-pixel patch, and the patch
 * kernel, which reads the patch's rows anyway, also computes the weights
 * densification needs, leaving flow_densify only sums. Sampling clamps
 * tap indices to the plane.
 */
#pragma OPENCL FP_CONTRACT OFF

/* Keep in step with engine/flow.c. */
#define FLOW_HESSIAN_RIDGE 1e-6f
#define FLOW_ERROR_SCALE 255.0f
#define FLOW_VAR_ZETA2 (0.1f / 255.0f * (0.1f / 255.0f))
#define FLOW_VAR_EPS2 1e-6f
#define FLOW_VAR_TIKHONOV 0.01f
#define FLOW_VAR_OMEGA 1.6f
#define FLOW_MAX_SHIFT 1e6f
#define FLOW_MAX_PATCH 16

/* ---- sampling -------------------------------------------------------------- */

/* floor(v), with the exact fraction v - floor(v) in *f. */
static int flow_split(float v, float *f)
{
    v = fmin(fmax(v, -FLOW_MAX_SHIFT), FLOW_MAX_SHIFT);
    float fl = floor(v);
    *f = v - fl;
    return (int)fl;
}

static float flow_bilinear(__global const float *img, int w, int h, int ix, int iy, float fx,
                           float fy)
{
    int x0 = clamp(ix, 0, w - 1), x1 = clamp(ix + 1, 0, w - 1);
    __global const float *r0 = img + (size_t)clamp(iy, 0, h - 1) * (size_t)w;
    __global const float *r1 = img + (size_t)clamp(iy + 1, 0, h - 1) * (size_t)w;
    float top = r0[x0] + fx * (r0[x1] - r0[x0]);
    float bot = r1[x0] + fx * (r1[x1] - r1[x0]);
    return top + fy * (bot - top);
}

/* The field of a level `scale` times coarser at (x, y) of this one, in this
 * level's pixels (engine/flow.c's coarse_flow). */
static float2 flow_coarse(__global const float *cu, __global const float *cv, int cw, int ch,
                          float scale, float x, float y)
{
    float fx, fy;
    int ix = flow_split((x + 0.5f) / scale - 0.5f, &fx);
    int iy = flow_split((y + 0.5f) / scale - 0.5f, &fy);
    return (float2)(flow_bilinear(cu, cw, ch, ix, iy, fx, fy) * scale,
                    flow_bilinear(cv, cw, ch, ix, iy, fx, fy) * scale);
}

/* ---- pyramid --------------------------------------------------------------- */

/* Non-finite input reads as 0. */
__kernel void flow_finite(__global const float *src, __global float *dst, const int w)
{
    size_t i = (size_t)get_global_id(1) * (size_t)w + (size_t)get_global_id(0);
    float v = src[i];
    dst[i] = isfinite(v) ? v : 0.0f;
}

/* [1 3 3 1] / 8 per axis, then every other pixel. Global size: the coarse
 * level's. */
__kernel void flow_downsample(__global const float *src, const int sw, const int sh,
                              __global float *dst, const int dw)
{
    const float k[4] = {0.125f, 0.375f, 0.375f, 0.125f};
    int x = get_global_id(0), y = get_global_id(1);
    float acc = 0.0f;
    for (int j = 0; j < 4; j++) {
        __global const float *row = src + (size_t)clamp(2 * y - 1 + j, 0, sh - 1) * (size_t)sw;
        float r = 0.0f;
        for (int i = 0; i < 4; i++)
            r += k[i] * row[clamp(2 * x - 1 + i, 0, sw - 1)];
        acc += k[j] * r;
    }
    dst[(size_t)y * (size_t)dw + (size_t)x] = acc;
}

/* Sobel / 8. */
__kernel void flow_gradient(__global const float *img, const int w, const int h,
                            __global float *gx_out, __global float *gy_out)
{
    int x = get_global_id(0), y = get_global_id(1);
    int xl = clamp(x - 1, 0, w - 1), xr = clamp(x + 1, 0, w - 1);
    __global const float *rt = img + (size_t)clamp(y - 1, 0, h - 1) * (size_t)w;
    __global const float *rm = img + (size_t)y * (size_t)w;
    __global const float *rb = img + (size_t)clamp(y + 1, 0, h - 1) * (size_t)w;
    float gx = (rt[xr] - rt[xl]) + 2.0f * (rm[xr] - rm[xl]) + (rb[xr] - rb[xl]);
    float gy = (rb[xl] - rt[xl]) + 2.0f * (rb[x] - rt[x]) + (rb[xr] - rt[xr]);
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    gx_out[i] = 0.125f * gx;
    gy_out[i] = 0.125f * gy;
}

/* ---- patch search ------------------------------------------------------------ */

static int flow_patch_origin(int i, int len, int size, int stride)
{
    int o = i * stride;
    return o < len - size ? o : len - size;
}

/* Sums over a patch go per patch column, then across the columns in order
 * (engine/flow.c's patch_search says why); flow_across adds up the
 * columns. The 8-pixel patch, the default, has its own versions that add
 * a row at a time in float8. */
static float flow_across(const float *columns, int size)
{
    float s = 0.0f;
    for (int i = 0; i < size; i++)
        s += columns[i];
    return s;
}

static float flow_across8(float8 c)
{
    float s = 0.0f;
    s += c.s0;
    s += c.s1;
    s += c.s2;
    s += c.s3;
    s += c.s4;
    s += c.s5;
    s += c.s6;
    s += c.s7;
    return s;
}

/* The template's gradient sums: (gx, gy, gx gx, gx gy, gy gy). */
struct flow_moments {
    float gx, gy, xx, xy, yy;
};

static struct flow_moments flow_patch_moments(__global const float *gxs,
                                              __global const float *gys, int w, int x0, int y0,
                                              int size)
{
    struct flow_moments m;
    if (size == 8) {
        float8 cgx = 0.0f, cgy = 0.0f, cxx = 0.0f, cxy = 0.0f, cyy = 0.0f;
        for (int j = 0; j < 8; j++) {
            size_t row = (size_t)(y0 + j) * (size_t)w + (size_t)x0;
            float8 gx = vload8(0, gxs + row), gy = vload8(0, gys + row);
            cgx += gx;
            cgy += gy;
            cxx += gx * gx;
            cxy += gx * gy;
            cyy += gy * gy;
        }
        m.gx = flow_across8(cgx);
        m.gy = flow_across8(cgy);
        m.xx = flow_across8(cxx);
        m.xy = flow_across8(cxy);
        m.yy = flow_across8(cyy);
        return m;
    }
    float cgx[FLOW_MAX_PATCH], cgy[FLOW_MAX_PATCH], cxx[FLOW_MAX_PATCH], cxy[FLOW_MAX_PATCH],
        cyy[FLOW_MAX_PATCH];
    for (int i = 0; i < size; i++)
        cgx[i] = cgy[i] = cxx[i] = cxy[i] = cyy[i] = 0.0f;
    for (int j = 0; j < size; j++)
        for (int i = 0; i < size; i++) {
            size_t k = (size_t)(y0 + j) * (size_t)w + (size_t)(x0 + i);
            float gx = gxs[k], gy = gys[k];
            cgx[i] += gx;
            cgy[i] += gy;
            cxx[i] += gx * gx;
            cxy[i] += gx * gy;
            cyy[i] += gy * gy;
        }
    m.gx = flow_across(cgx, size);
    m.gy = flow_across(cgy, size);
    m.xx = flow_across(cxx, size);
    m.xy = flow_across(cxy, size);
    m.yy = flow_across(cyy, size);
    return m;
}

/* The taps of patch row y (columns x0 ..) in I1 displaced by (iu + fu,
 * iv + fv), bilinear as flow_bilinear, eight pixels at once: whole rows of
 * I1 where the patch's taps lie inside the frame across (inside; nearly
 * all patches), else tap by clamped tap (cols: the columns, clamped). */
static float8 flow_row8(__global const float *i1, int w, int h, int x0, int y, int iu, float fu,
                        int iv, float fv, const int *cols, int inside)
{
    __global const float *r0 = i1 + (size_t)clamp(y + iv, 0, h - 1) * (size_t)w;
    __global const float *r1 = i1 + (size_t)clamp(y + iv + 1, 0, h - 1) * (size_t)w;
    float8 a0, a1, b0, b1;
    if (inside) {
        a0 = vload8(0, r0 + x0 + iu);
        a1 = vload8(0, r0 + x0 + iu + 1);
        b0 = vload8(0, r1 + x0 + iu);
        b1 = vload8(0, r1 + x0 + iu + 1);
    } else {
        a0 = (float8)(r0[cols[0]], r0[cols[1]], r0[cols[2]], r0[cols[3]], r0[cols[4]],
                      r0[cols[5]], r0[cols[6]], r0[cols[7]]);
        a1 = (float8)(r0[cols[1]], r0[cols[2]], r0[cols[3]], r0[cols[4]], r0[cols[5]],
                      r0[cols[6]], r0[cols[7]], r0[cols[8]]);
        b0 = (float8)(r1[cols[0]], r1[cols[1]], r1[cols[2]], r1[cols[3]], r1[cols[4]],
                      r1[cols[5]], r1[cols[6]], r1[cols[7]]);
        b1 = (float8)(r1[cols[1]], r1[cols[2]], r1[cols[3]], r1[cols[4]], r1[cols[5]],
                      r1[cols[6]], r1[cols[7]], r1[cols[8]]);
    }
    float8 top = a0 + fu * (a1 - a0), bot = b0 + fu * (b1 - b0);
    return top + fv * (bot - top);
}

/* One tap of the same, for any patch size. */
static float flow_tap(__global const float *i1, int w, int h, int y, int i, int iv, float fv,
                      float fu, const int *cols)
{
    __global const float *r0 = i1 + (size_t)clamp(y + iv, 0, h - 1) * (size_t)w;
    __global const float *r1 = i1 + (size_t)clamp(y + iv + 1, 0, h - 1) * (size_t)w;
    float top = r0[cols[i]] + fu * (r0[cols[i + 1]] - r0[cols[i]]);
    float bot = r1[cols[i]] + fu * (r1[cols[i + 1]] - r1[cols[i]]);
    return top + fv * (bot - top);
}

/* The columns of the patch's taps at horizontal displacement iu, clamped;
 * 1 when none needed clamping. */
static int flow_tap_columns(int x0, int iu, int size, int w, int *cols)
{
    for (int i = 0; i <= size; i++)
        cols[i] = clamp(x0 + iu + i, 0, w - 1);
    return x0 + iu >= 0 && x0 + iu + size < w;
}

/* The patch against I1 displaced by (iu + fu, iv + fv): the sums of
 * d = I1 - I0, d^2, gx d and gy d. */
static float4 flow_patch_sums(__global const float *i0, __global const float *i1,
                              __global const float *gxs, __global const float *gys, int w,
                              int h, int x0, int y0, int size, int iu, float fu, int iv, float fv)
{
    int cols[FLOW_MAX_PATCH + 1];
    int inside = flow_tap_columns(x0, iu, size, w, cols);
    if (size == 8) {
        float8 cd = 0.0f, cdd = 0.0f, cbx = 0.0f, cby = 0.0f;
        for (int j = 0; j < 8; j++) {
            size_t row = (size_t)(y0 + j) * (size_t)w + (size_t)x0;
            float8 d = flow_row8(i1, w, h, x0, y0 + j, iu, fu, iv, fv, cols, inside) -
                       vload8(0, i0 + row);
            cd += d;
            cdd += d * d;
            cbx += vload8(0, gxs + row) * d;
            cby += vload8(0, gys + row) * d;
        }
        return (float4)(flow_across8(cd), flow_across8(cdd), flow_across8(cbx),
                        flow_across8(cby));
    }
    float cd[FLOW_MAX_PATCH], cdd[FLOW_MAX_PATCH], cbx[FLOW_MAX_PATCH], cby[FLOW_MAX_PATCH];
    for (int i = 0; i < size; i++)
        cd[i] = cdd[i] = cbx[i] = cby[i] = 0.0f;
    for (int j = 0; j < size; j++) {
        size_t row = (size_t)(y0 + j) * (size_t)w + (size_t)x0;
        for (int i = 0; i < size; i++) {
            float d = flow_tap(i1, w, h, y0 + j, i, iv, fv, fu, cols) - i0[row + (size_t)i];
            cd[i] += d;
            cdd[i] += d * d;
            cbx[i] += gxs[row + (size_t)i] * d;
            cby[i] += gys[row + (size_t)i] * d;
        }
    }
    return (float4)(flow_across(cd, size), flow_across(cdd, size), flow_across(cbx, size),
                    flow_across(cby, size));
}

/* The weight of the patch's vote at each of its pixels, row by row into
 * votes: engine/flow.c's densify's 1 / max(1, |e| in code values), with e
 * the mean-normalised error of the patch's final displacement at the
 * pixel. Computed here, where the patch's rows are being read anyway, so
 * that flow_densify only adds (it runs one work-item at a time). */
static void flow_patch_votes(__global const float *i0, __global const float *i1, int w, int h,
                             int x0, int y0, int size, float u, float v, float offset,
                             __global float *votes)
{
    float fu, fv;
    int iu = flow_split(u, &fu), iv = flow_split(v, &fv);
    int cols[FLOW_MAX_PATCH + 1];
    int inside = flow_tap_columns(x0, iu, size, w, cols);
    for (int j = 0; j < size; j++) {
        size_t row = (size_t)(y0 + j) * (size_t)w + (size_t)x0;
        if (size == 8) {
            float8 e = flow_row8(i1, w, h, x0, y0 + j, iu, fu, iv, fv, cols, inside) -
                       vload8(0, i0 + row) - offset;
            vstore8(1.0f / fmax(1.0f, fabs(e) * FLOW_ERROR_SCALE), j, votes);
            continue;
        }
        for (int i = 0; i < size; i++) {
            float e = flow_tap(i1, w, h, y0 + j, i, iv, fv, fu, cols) - i0[row + (size_t)i] -
                      offset;
            votes[j * size + i] = 1.0f / fmax(1.0f, fabs(e) * FLOW_ERROR_SCALE);
        }
    }
}

/*
 * One work-item per patch; global size: patches across x down. Inverse-
 * compositional Gauss-Newton on mean-normalised intensities, started from
 * the coarser field at the patch centre (from zero when cw is 0), keeping
 * the position of least SSD and falling back to the start past a patch
 * size (engine/flow.c's patch_search). Writes the displacement and the
 * patch's size x size vote weights.
 */
__kernel void flow_patch_search(__global const float *i0, __global const float *i1,
                                __global const float *gxs, __global const float *gys,
                                const int w, const int h, __global const float *cu,
                                __global const float *cv, const int cw, const int ch,
                                const int size, const int stride, const int iterations,
                                __global float *pu, __global float *pv, __global float *votes)
{
    int px = get_global_id(0), py = get_global_id(1);
    int x0 = flow_patch_origin(px, w, size, stride), y0 = flow_patch_origin(py, h, size, stride);
    float2 init = (float2)(0.0f, 0.0f);
    if (cw > 0) {
        float c = 0.5f * (float)(size - 1);
        init = flow_coarse(cu, cv, cw, ch, 2.0f, (float)x0 + c, (float)y0 + c);
    }

    float n = (float)(size * size);
    struct flow_moments mo = flow_patch_moments(gxs, gys, w, x0, y0, size);
    float mgx = mo.gx / n, mgy = mo.gy / n;
    float hxx = mo.xx - n * mgx * mgx + n * FLOW_HESSIAN_RIDGE;
    float hxy = mo.xy - n * mgx * mgy;
    float hyy = mo.yy - n * mgy * mgy + n * FLOW_HESSIAN_RIDGE;
    float det = hxx * hyy - hxy * hxy;

    float u = init.x, v = init.y, prev = INFINITY, best_ssd = INFINITY;
    float3 best = (float3)(u, v, 0.0f), start = best;
    for (int t = 0; t <= iterations; t++) {
        float fu, fv;
        int iu = flow_split(u, &fu), iv = flow_split(v, &fv);
        float4 sums = flow_patch_sums(i0, i1, gxs, gys, w, h, x0, y0, size, iu, fu, iv, fv);
        float sd = sums.x, sdd = sums.y, bx = sums.z, by = sums.w;
        float ssd = sdd - sd * sd / n;
        if (t == 0)
            start.z = sd / n;
        if (ssd < best_ssd) {
            best_ssd = ssd;
            best = (float3)(u, v, sd / n);
        }
        if (t == iterations || !(ssd < prev))
            break;
        prev = ssd;
        bx -= mgx * sd;
        by -= mgy * sd;
        u -= (hyy * bx - hxy * by) / det;
        v -= (hxx * by - hxy * bx) / det;
    }
    float du = best.x - init.x, dv = best.y - init.y;
    if (!(sqrt(du * du + dv * dv) <= (float)size))
        best = start;
    size_t k = (size_t)py * (size_t)get_global_size(0) + (size_t)px;
    pu[k] = best.x;
    pv[k] = best.y;
    flow_patch_votes(i0, i1, w, h, x0, y0, size, best.x, best.y, best.z,
                     votes + k * (size_t)(size * size));
}

/* ---- densification ------------------------------------------------------------- */

static int flow_patch_count(int len, int size, int stride)
{
    return (len - size + stride - 1) / stride + 1;
}

/* The patches covering x along one axis, first and last (engine/flow.c's
 * cover_range). */
static int2 flow_cover(int x, int len, int n, int size, int stride)
{
    return (int2)(x - size + 1 > 0 ? (x - size + stride) / stride : 0,
                  x >= len - size ? n - 1 : x / stride);
}

/* One work-item per pixel: the covering patches' displacements averaged
 * with the weights their votes hold for this pixel, in the order
 * engine/flow.c's densify adds them. */
__kernel void flow_densify(__global const float *pu, __global const float *pv,
                           __global const float *votes, const int w, const int h,
                           const int size, const int stride, __global float *u_out,
                           __global float *v_out)
{
    int x = get_global_id(0), y = get_global_id(1);
    int nx = flow_patch_count(w, size, stride), ny = flow_patch_count(h, size, stride);
    int2 xr = flow_cover(x, w, nx, size, stride), yr = flow_cover(y, h, ny, size, stride);
    float su = 0.0f, sv = 0.0f, sw = 0.0f;
    for (int py = yr.x; py <= yr.y; py++) {
        int j = y - flow_patch_origin(py, h, size, stride);
        for (int px = xr.x; px <= xr.y; px++) {
            size_t k = (size_t)py * (size_t)nx + (size_t)px;
            int i = x - flow_patch_origin(px, w, size, stride);
            float wt = votes[k * (size_t)(size * size) + (size_t)(j * size + i)];
            su += wt * pu[k];
            sv += wt * pv[k];
            sw += wt;
        }
    }
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    u_out[i] = su / sw;
    v_out[i] = sv / sw;
}

/* ---- variational refinement ------------------------------------------------------
 *
 * engine/flow.c's refine(), with its per-pixel arrays in a padded red-black
 * layout: pixel (x, y) lives in the half-plane of its colour c = (x + y) & 1,
 * at row y + 1, column 1 + (x >> 1); each half-plane row holds (w + 1) / 2
 * pixels between two guard columns, with a guard row above and below. A
 * field is both half-planes; several fields (the derivatives, the system)
 * lie field after field. A kernel over one colour then reads its own
 * pixels and each of its four neighbours (all of the other colour) at
 * consecutive addresses, with no index clamped: a neighbour past the image
 * edge is a guard, read and multiplied by a zero weight (guards hold finite
 * values: zero from the start, or what an earlier, coarser level, laid out
 * on a narrower stride, left there).
 * Work-items: (w + 1) / 2 x h for one colour, (w + 1) / 2 x 2h for both,
 * grid row 2y + c being row y's colour c.
 */

/* One pixel's place in the layout. */
struct flow_rb {
    int x, y;   /* the pixel; x >= w: none (the odd-width row's spare) */
    int par;    /* x & 1 */
    int stride; /* a half-plane row */
    size_t field;    /* the floats of one field */
    size_t own, oth; /* this pixel, and the other colour at the same column */
};

static struct flow_rb flow_rb_at(int gx, int y, int c, int w, int h)
{
    struct flow_rb p;
    p.y = y;
    p.par = (y + c) & 1;
    p.x = 2 * gx + p.par;
    p.stride = ((w + 1) >> 1) + 2;
    size_t plane = (size_t)p.stride * (size_t)(h + 2);
    size_t at = (size_t)(y + 1) * (size_t)p.stride + 1 + (size_t)gx;
    p.field = 2 * plane;
    p.own = (size_t)c * plane + at;
    p.oth = (size_t)(1 - c) * plane + at;
    return p;
}

/* Where pixel (x, y) of a w x h level is (for the kernels over all pixels). */
static struct flow_rb flow_rb_pixel(int x, int y, int w, int h)
{
    return flow_rb_at(x >> 1, y, (x + y) & 1, w, h);
}

/* I1 warped by the field: avg = (I0 + I1w) / 2 and z = I1w - I0 in natural
 * layout; the field copied into the red-black layout (U then V), the
 * increment cleared. Global size w x h. */
__kernel void flow_var_prepare(__global const float *i0, __global const float *i1,
                               __global const float *u, __global const float *v, const int w,
                               const int h, __global float *avg, __global float *z,
                               __global float *wuv, __global float *duv)
{
    int x = get_global_id(0), y = get_global_id(1);
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    float fu, fv;
    int iu = flow_split(u[i], &fu), iv = flow_split(v[i], &fv);
    float warped = flow_bilinear(i1, w, h, x + iu, y + iv, fu, fv);
    avg[i] = 0.5f * (i0[i] + warped);
    z[i] = warped - i0[i];
    struct flow_rb p = flow_rb_pixel(x, y, w, h);
    wuv[p.own] = u[i];
    wuv[p.field + p.own] = v[i];
    duv[p.own] = 0.0f;
    duv[p.field + p.own] = 0.0f;
}

/* Central differences, clamped. */
static float flow_ddx(__global const float *f, int w, int x, int y)
{
    __global const float *row = f + (size_t)y * (size_t)w;
    return 0.5f * (row[clamp(x + 1, 0, w - 1)] - row[clamp(x - 1, 0, w - 1)]);
}

static float flow_ddy(__global const float *f, int w, int h, int x, int y)
{
    return 0.5f * (f[(size_t)clamp(y + 1, 0, h - 1) * (size_t)w + (size_t)x] -
                   f[(size_t)clamp(y - 1, 0, h - 1) * (size_t)w + (size_t)x]);
}

/* The fields Ix, Iy, Iz, Ixx, Ixy, Iyy, Ixz, Iyz; I the average, z the
 * difference; second derivatives are differences of first ones. Global
 * size (w + 1) / 2 x 2h. */
__kernel void flow_var_derivatives(__global const float *avg, __global const float *z,
                                   const int w, const int h, __global float *deriv)
{
    struct flow_rb p = flow_rb_at(get_global_id(0), get_global_id(1) >> 1,
                                  get_global_id(1) & 1, w, h);
    int x = p.x, y = p.y;
    if (x >= w)
        return;
    int xl = clamp(x - 1, 0, w - 1), xr = clamp(x + 1, 0, w - 1);
    int yt = clamp(y - 1, 0, h - 1), yb = clamp(y + 1, 0, h - 1);
    size_t k = p.own, fs = p.field;
    deriv[k] = flow_ddx(avg, w, x, y);
    deriv[fs + k] = flow_ddy(avg, w, h, x, y);
    deriv[2 * fs + k] = z[(size_t)y * (size_t)w + (size_t)x];
    deriv[3 * fs + k] = 0.5f * (flow_ddx(avg, w, xr, y) - flow_ddx(avg, w, xl, y));
    deriv[4 * fs + k] = 0.5f * (flow_ddx(avg, w, x, yb) - flow_ddx(avg, w, x, yt));
    deriv[5 * fs + k] = 0.5f * (flow_ddy(avg, w, h, x, yb) - flow_ddy(avg, w, h, x, yt));
    deriv[6 * fs + k] = flow_ddx(z, w, x, y);
    deriv[7 * fs + k] = flow_ddy(z, w, h, x, y);
}

/* Psi' of the smoothness term times alpha, per pixel: forward differences
 * of W + dW, zero past the right and lower edges. Global size
 * (w + 1) / 2 x 2h. */
__kernel void flow_var_smoothness(__global const float *wuv, __global const float *duv,
                                  const int w, const int h, const float alpha,
                                  __global float *ws)
{
    struct flow_rb p = flow_rb_at(get_global_id(0), get_global_id(1) >> 1,
                                  get_global_id(1) & 1, w, h);
    if (p.x >= w)
        return;
    size_t fs = p.field, i = p.own, r = p.oth + (size_t)p.par, b = p.oth + (size_t)p.stride;
    float u = wuv[i] + duv[i], v = wuv[fs + i] + duv[fs + i];
    float ur = wuv[r] + duv[r], vr = wuv[fs + r] + duv[fs + r];
    float ub = wuv[b] + duv[b], vb = wuv[fs + b] + duv[fs + b];
    float ux = (p.x < w - 1 ? ur : u) - u, vx = (p.x < w - 1 ? vr : v) - v;
    float uy = (p.y < h - 1 ? ub : u) - u, vy = (p.y < h - 1 ? vb : v) - v;
    ws[i] = 0.5f * alpha / sqrt(ux * ux + vx * vx + uy * uy + vy * vy + FLOW_VAR_EPS2);
}

/* A pixel's four smoothness edges (engine/flow.c's var_edges): neighbours
 * left, right, above, below, and their weights, 0 past the image edge. */
struct flow_edges {
    size_t l, r, t, b;
    float wl, wr, wt, wb;
};

static struct flow_edges flow_var_edges(__global const float *ws, struct flow_rb p, int w,
                                        int h)
{
    struct flow_edges e;
    e.l = p.oth - 1 + (size_t)p.par;
    e.r = p.oth + (size_t)p.par;
    e.t = p.oth - (size_t)p.stride;
    e.b = p.oth + (size_t)p.stride;
    float own = ws[p.own], left = ws[e.l], above = ws[e.t];
    e.wl = p.x > 0 ? left : 0.0f;
    e.wr = p.x < w - 1 ? own : 0.0f;
    e.wt = p.y > 0 ? above : 0.0f;
    e.wb = p.y < h - 1 ? own : 0.0f;
    return e;
}

/* The fields a11, a12, a22, b1, b2 of one fixed-point step. Global size
 * (w + 1) / 2 x 2h. */
__kernel void flow_var_system(__global const float *deriv, __global const float *wuv,
                              __global const float *duv, __global const float *ws, const int w,
                              const int h, const float gamma, const float delta,
                              __global float *sys)
{
    struct flow_rb p = flow_rb_at(get_global_id(0), get_global_id(1) >> 1,
                                  get_global_id(1) & 1, w, h);
    if (p.x >= w)
        return;
    size_t fs = p.field, i = p.own;
    float du = duv[i], dv = duv[fs + i];

    float ix = deriv[i], iy = deriv[fs + i], iz = deriv[2 * fs + i];
    float norm = ix * ix + iy * iy + FLOW_VAR_ZETA2;
    float r = iz + ix * du + iy * dv;
    float wd = 0.5f * delta / sqrt(r * r / norm + FLOW_VAR_EPS2);
    float a11 = wd * (ix * ix / norm) + FLOW_VAR_TIKHONOV;
    float a12 = wd * (ix * iy / norm);
    float a22 = wd * (iy * iy / norm) + FLOW_VAR_TIKHONOV;
    float b1 = -wd * (iz * ix / norm);
    float b2 = -wd * (iz * iy / norm);

    float ixx = deriv[3 * fs + i], ixy = deriv[4 * fs + i], iyy = deriv[5 * fs + i];
    float ixz = deriv[6 * fs + i], iyz = deriv[7 * fs + i];
    float nx = ixx * ixx + ixy * ixy + FLOW_VAR_ZETA2;
    float ny = iyy * iyy + ixy * ixy + FLOW_VAR_ZETA2;
    float rx = ixz + ixx * du + ixy * dv, ry = iyz + ixy * du + iyy * dv;
    float wg = 0.5f * gamma / sqrt(rx * rx / nx + ry * ry / ny + FLOW_VAR_EPS2);
    a11 += wg * (ixx * ixx / nx + ixy * ixy / ny);
    a12 += wg * (ixx * ixy / nx + ixy * iyy / ny);
    a22 += wg * (ixy * ixy / nx + iyy * iyy / ny);
    b1 -= wg * (ixx * ixz / nx + ixy * iyz / ny);
    b2 -= wg * (ixy * ixz / nx + iyy * iyz / ny);

    struct flow_edges e = flow_var_edges(ws, p, w, h);
    float u = wuv[i], v = wuv[fs + i];
    float sum = e.wl + e.wr + e.wt + e.wb;
    a11 += sum;
    a22 += sum;
    b1 += e.wl * (wuv[e.l] - u) + e.wr * (wuv[e.r] - u) + e.wt * (wuv[e.t] - u) +
          e.wb * (wuv[e.b] - u);
    b2 += e.wl * (wuv[fs + e.l] - v) + e.wr * (wuv[fs + e.r] - v) +
          e.wt * (wuv[fs + e.t] - v) + e.wb * (wuv[fs + e.b] - v);

    sys[i] = a11;
    sys[fs + i] = a12;
    sys[2 * fs + i] = a22;
    sys[3 * fs + i] = b1;
    sys[4 * fs + i] = b2;
}

/* One SOR half-sweep: the pixels with (x + y) % 2 == colour, each from its
 * neighbours of the other colour. Global size (w + 1) / 2 x h. */
__kernel void flow_var_sor(__global const float *sys, __global const float *ws,
                           __global float *duv, const int w, const int h, const int colour)
{
    struct flow_rb p = flow_rb_at(get_global_id(0), get_global_id(1), colour, w, h);
    if (p.x >= w)
        return;
    size_t fs = p.field, i = p.own;
    struct flow_edges e = flow_var_edges(ws, p, w, h);
    float su = e.wl * duv[e.l] + e.wr * duv[e.r] + e.wt * duv[e.t] + e.wb * duv[e.b];
    float sv = e.wl * duv[fs + e.l] + e.wr * duv[fs + e.r] + e.wt * duv[fs + e.t] +
               e.wb * duv[fs + e.b];
    float du = duv[i], dv = duv[fs + i];
    du += FLOW_VAR_OMEGA * ((su + sys[3 * fs + i] - sys[fs + i] * dv) / sys[i] - du);
    dv += FLOW_VAR_OMEGA * ((sv + sys[4 * fs + i] - sys[fs + i] * du) / sys[2 * fs + i] - dv);
    duv[i] = du;
    duv[fs + i] = dv;
}

/* W += dW, back in natural layout. Global size w x h. */
__kernel void flow_var_apply(__global float *u, __global float *v, __global const float *duv,
                             const int w, const int h)
{
    int x = get_global_id(0), y = get_global_id(1);
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    struct flow_rb p = flow_rb_pixel(x, y, w, h);
    u[i] += duv[p.own];
    v[i] += duv[p.field + p.own];
}

/* ---- output ------------------------------------------------------------------------ */

/* The finest level searched, upsampled to full resolution. */
__kernel void flow_upsample(__global const float *cu, __global const float *cv, const int cw,
                            const int ch, const float scale, __global float *u,
                            __global float *v, const int w)
{
    int x = get_global_id(0), y = get_global_id(1);
    float2 f = flow_coarse(cu, cv, cw, ch, scale, (float)x, (float)y);
    size_t i = (size_t)y * (size_t)w + (size_t)x;
    u[i] = f.x;
    v[i] = f.y;
}

/* The caller's interleaved field. */
__kernel void flow_pack(__global const float *u, __global const float *v, __global float2 *uv,
                        const int w)
{
    size_t i = (size_t)get_global_id(1) * (size_t)w + (size_t)get_global_id(0);
    uv[i] = (float2)(u[i], v[i]);
}
