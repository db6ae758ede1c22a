/*
 * reframe.cl - the OpenCL path of the reframe op (engine/ops/reframe.c holds
 * the descriptor, the geometry, the C reference this must match, and the
 * tap and weight tables these kernels read; docs/reframe.md explains the
 * filter and the border rules).
 *
 * No kernel evaluates the filter: every weight comes from the host's
 * filter_weight(), per output column and row without rotation, per
 * sub-pixel phase with rotation. A new filter needs no change here.
 *
 * Pixels are float4 RGBA. NaN and Inf source values read as 0 everywhere,
 * as in the reference, so they never spread into neighbours (a zero weight
 * times NaN would still be NaN). Contraction into fma is off so the result
 * does not depend on what a compiler fused.
 *
 * Anti-ringing (antiring > 0) clamps each output value towards the range of
 * the source pixels under the kernel's main lobe, as the reference does:
 * the range is always taken from the source, never from a filtered pass.
 */
#pragma OPENCL FP_CONTRACT OFF

/* Border rules and the tap limit: keep in step with engine/ops/reframe.c. */
#define REFRAME_BORDER_BLACK 0
#define REFRAME_BORDER_CLAMP 1
#define REFRAME_BORDER_MIRROR 2

#define REFRAME_MAX_TAPS 32

static float4 reframe_finite(float4 v)
{
    return select((float4)(0.0f), v, isfinite(v));
}

/* engine/ops/reframe.c's antiring_value, per channel: beyond [lo, hi] the
 * value moves the fraction a of the way to the range (exactly onto it at
 * a = 1); inside it is left exactly as it is. */
static float4 reframe_antiring(float4 v, float4 lo, float4 hi, float a)
{
    float4 below = (1.0f - a) * v + a * lo;
    float4 above = (1.0f - a) * v + a * hi;
    return select(select(v, above, v > hi), below, v < lo);
}

/* ---- without rotation: two separable passes ------------------------------
 *
 * The host computed, per output column and per output row, ntaps source
 * indices (border rule applied; -1 reads as black) and weights. */

/* Pass 1: tmp row j = source row first_row + j filtered along x, for every
 * output column. Global size: output width x rows needed. */
__kernel void reframe_rows(__global const float4 *src, __global float4 *tmp, const int width,
                           const int first_row, const int ntaps, __global const int *xidx,
                           __global const float *xw)
{
    int x = get_global_id(0), j = get_global_id(1);
    __global const float4 *row = src + (size_t)(first_row + j) * (size_t)width;
    __global const int *idx = xidx + (size_t)x * (size_t)ntaps;
    __global const float *w = xw + (size_t)x * (size_t)ntaps;
    float4 acc = (float4)(0.0f);
    for (int k = 0; k < ntaps; k++) {
        int i = idx[k];
        if (i >= 0)
            acc += w[k] * reframe_finite(row[i]);
    }
    tmp[(size_t)j * (size_t)width + (size_t)x] = acc;
}

/* Pass 2: output pixel (x, y) = tmp column x filtered along y. Row indices
 * are relative to tmp's first row, source row first_row. Global size:
 * output width x height. With antiring > 0 the value is then clamped
 * towards the range of the source pixels in the main lobe: taps xlobe[2x]
 * .. xlobe[2x + 1] of column x's table times ylobe[2y] .. ylobe[2y + 1] of
 * row y's, read from the source itself. */
__kernel void reframe_cols(__global const float4 *tmp, __global float4 *dst, const int width,
                           const int ntaps, __global const int *yidx, __global const float *yw,
                           const float antiring, __global const float4 *src,
                           const int first_row, __global const int *xidx,
                           __global const int *xlobe, __global const int *ylobe)
{
    int x = get_global_id(0), y = get_global_id(1);
    __global const int *idx = yidx + (size_t)y * (size_t)ntaps;
    __global const float *w = yw + (size_t)y * (size_t)ntaps;
    float4 acc = (float4)(0.0f);
    for (int k = 0; k < ntaps; k++) {
        int j = idx[k];
        if (j >= 0)
            acc += w[k] * tmp[(size_t)j * (size_t)width + (size_t)x];
    }
    if (antiring > 0.0f) {
        __global const int *cidx = xidx + (size_t)x * (size_t)ntaps;
        float4 lo = (float4)(INFINITY), hi = (float4)(-INFINITY);
        for (int k = ylobe[2 * y]; k <= ylobe[2 * y + 1]; k++) {
            int j = idx[k];
            for (int l = xlobe[2 * x]; l <= xlobe[2 * x + 1]; l++) {
                int i = cidx[l];
                float4 v = (float4)(0.0f); /* black border */
                if (j >= 0 && i >= 0)
                    v = reframe_finite(src[(size_t)(first_row + j) * (size_t)width + (size_t)i]);
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
        }
        acc = reframe_antiring(acc, lo, hi, antiring);
    }
    dst[(size_t)y * (size_t)width + (size_t)x] = acc;
}

/* ---- with rotation: direct 2-D ------------------------------------------ */

/* One axis's normalised weights at phase f in [0, 1): interpolated between
 * the host's table rows (phases + 1 rows of ntaps weights, row p for phase
 * p / phases). f * phases is exact for a power-of-two phase count. */
static void reframe_axis(float f, int ntaps, int phases, __global const float *table, float *w)
{
    float pf = f * (float)phases;
    int p = min((int)pf, phases - 1);
    float a = pf - (float)p;
    __global const float *w0 = table + (size_t)p * (size_t)ntaps;
    __global const float *w1 = w0 + ntaps;
    for (int k = 0; k < ntaps; k++)
        w[k] = w0[k] + a * (w1[k] - w0[k]);
}

/* engine/ops/reframe.c's lobe_taps in float: the first and last of the
 * taps less than lobe source pixels from a sample at phase f. */
static int2 reframe_lobe(float f, int ntaps, int side, float lobe)
{
    int2 r = (int2)(ntaps, -1);
    for (int k = 0; k < ntaps; k++)
        if (fabs((float)(k + 1 - side) - f) < lobe) {
            r.x = min(r.x, k);
            r.y = k;
        }
    return r;
}

/* engine/ops/reframe.c's border_index. */
static int reframe_border(int i, int n, int border)
{
    if (i >= 0 && i < n)
        return i;
    if (border == REFRAME_BORDER_CLAMP)
        return i < 0 ? 0 : n - 1;
    if (border == REFRAME_BORDER_MIRROR) {
        int period = 2 * n, m = i % period;
        if (m < 0)
            m += period;
        return m < n ? m : period - 1 - m;
    }
    return -1;
}

/*
 * The source position of output pixel (x, y), in source pixel coordinates,
 * is coli[x] + rowi[y] + colf[x] + rowf[y]: integer parts and fractions in
 * [0, 1] that the host split in double, so that large coordinates are never
 * formed in float. The taps of each axis are pixels i + 1 - side .. i + side
 * around the pixel i at or left of (above) the position. With antiring > 0
 * the value is clamped towards the range of the source pixels less than
 * lobe pixels from the position on both axes.
 */
__kernel void reframe_rotated(__global const float4 *src, __global float4 *dst, const int width,
                              const int height, const int ntaps, const int side,
                              const int border, const int phases,
                              __global const float *table, __global const int2 *coli,
                              __global const float2 *colf, __global const int2 *rowi,
                              __global const float2 *rowf, const float lobe,
                              const float antiring)
{
    int x = get_global_id(0), y = get_global_id(1);
    int2 ip = coli[x] + rowi[y];
    float2 fp = colf[x] + rowf[y];
    float2 fl = floor(fp);
    ip += convert_int2(fl);
    fp -= fl;

    float wx[REFRAME_MAX_TAPS], wy[REFRAME_MAX_TAPS];
    int ix[REFRAME_MAX_TAPS];
    reframe_axis(fp.x, ntaps, phases, table, wx);
    reframe_axis(fp.y, ntaps, phases, table, wy);
    int fx = ip.x + 1 - side, fy = ip.y + 1 - side;
    for (int i = 0; i < ntaps; i++)
        ix[i] = reframe_border(fx + i, width, border);

    float4 acc = (float4)(0.0f);
    for (int j = 0; j < ntaps; j++) {
        int iy = reframe_border(fy + j, height, border);
        if (iy < 0)
            continue;
        __global const float4 *row = src + (size_t)iy * (size_t)width;
        float4 racc = (float4)(0.0f);
        for (int i = 0; i < ntaps; i++)
            if (ix[i] >= 0)
                racc += wx[i] * reframe_finite(row[ix[i]]);
        acc += wy[j] * racc;
    }
    if (antiring > 0.0f) {
        int2 lx = reframe_lobe(fp.x, ntaps, side, lobe), ly = reframe_lobe(fp.y, ntaps, side, lobe);
        float4 lo = (float4)(INFINITY), hi = (float4)(-INFINITY);
        for (int j = ly.x; j <= ly.y; j++) {
            int iy = reframe_border(fy + j, height, border);
            for (int i = lx.x; i <= lx.y; i++) {
                float4 v = (float4)(0.0f); /* black border */
                if (iy >= 0 && ix[i] >= 0)
                    v = reframe_finite(src[(size_t)iy * (size_t)width + (size_t)ix[i]]);
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
        }
        acc = reframe_antiring(acc, lo, hi, antiring);
    }
    dst[(size_t)y * (size_t)width + (size_t)x] = acc;
}
