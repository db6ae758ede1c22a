/*
 * relight.cl - the OpenCL path of the relight op (engine/ops/relight.c holds
 * the descriptor, the uniforms and the C reference this must match; the
 * colour math is explained in docs/relight.md).
 *
 * One work-item per pixel, pixels as float4 RGBA. Each stage runs only when
 * its flag is set, exactly as in the C reference, so an identity stage leaves
 * values bit-exact (NaN payloads and -0 included) and both paths take the
 * same branches. Contraction of a*b+c into fma is turned off so that the
 * result does not depend on which compiler or device fused what.
 */
#pragma OPENCL FP_CONTRACT OFF

/* Stage flags and shapes: keep in step with engine/ops/relight.c. */
#define RELIGHT_GAIN 1
#define RELIGHT_MATRIX 2
#define RELIGHT_SLOPE_OFFSET 4
#define RELIGHT_POWER 8
#define RELIGHT_SAT 16
#define RELIGHT_FIT 32

#define RELIGHT_SHAPE_NONE 0
#define RELIGHT_SHAPE_ELLIPSE 1
#define RELIGHT_SHAPE_RECT 2
#define RELIGHT_SHAPE_GRADIENT 3

/* ASC CDL power: only strictly positive values are raised (powr is defined
 * for x > 0 only); zero, negatives and NaN pass through. */
static float relight_power(float x, float p)
{
    return (x > 0.0f && p != 1.0f) ? powr(x, p) : x;
}

/* Signed distance in pixels from the window outline, negative inside. This
 * and relight_mask are engine/ops/relight.c's window_distance and
 * window_mask, operation for operation, so both paths get the same mask.
 * rot: cos and sin of window.angle; (lx, ly) is the offset in the window's
 * own axes. */
static float relight_distance(int shape, float dx, float dy, float4 win, float2 rot)
{
    float hw = win.s0, hh = win.s1;
    float lx = dx * rot.x - dy * rot.y;
    float ly = dx * rot.y + dy * rot.x;
    if (shape == RELIGHT_SHAPE_GRADIENT)
        return -lx;
    if (shape == RELIGHT_SHAPE_RECT) {
        float qx = fabs(lx) - hw, qy = fabs(ly) - hh;
        float ox = fmax(qx, 0.0f), oy = fmax(qy, 0.0f);
        return sqrt(ox * ox + oy * oy) + fmin(fmax(qx, qy), 0.0f);
    }
    float a = lx * win.s2, b = ly * win.s3;
    float r = sqrt(a * a + b * b);
    if (r == 0.0f)
        return -fmin(hw, hh);
    float len = sqrt(lx * lx + ly * ly);
    return (r - 1.0f) * (len / r);
}

static float relight_mask(int shape, int invert, float dx, float dy, float4 win,
                          float inv_feather, float2 rot)
{
    float d = relight_distance(shape, dx, dy, win, rot);
    float m;
    if (inv_feather > 0.0f) {
        float s = 0.5f - d * inv_feather;
        s = s < 0.0f ? 0.0f : s > 1.0f ? 1.0f : s;
        m = s * s * (3.0f - 2.0f * s);
    } else {
        m = d <= 0.0f ? 1.0f : 0.0f;
    }
    return invert ? 1.0f - m : m;
}

/*
 * base: data-window origin minus the integer part of the window centre;
 * frac: 0.5 minus the centre's fraction. The pixel's offset from the centre
 * is then an exact integer plus a small fraction, without the cancellation of
 * subtracting two large float coordinates. win: half width, half height and
 * their reciprocals; inv_feather: 1 / feather, 0 for a hard edge; rot: cos
 * and sin of window.angle. fitg, fito: match's fitted per-channel gain and
 * offset (RELIGHT_FIT), applied before everything else.
 */
__kernel void relight(__global const float4 *src, __global float4 *dst, const int width,
                      const int height, const int stages, const float gain,
                      const float16 mat, const float4 slope, const float4 offset,
                      const float4 power, const float sat, const int shape,
                      const int invert, const int2 base, const float2 frac,
                      const float4 win, const float inv_feather, const float2 rot,
                      const float4 fitg, const float4 fito)
{
    int x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height)
        return;
    size_t i = (size_t)y * (size_t)width + (size_t)x;
    float4 in = src[i];

    float m = 1.0f;
    if (shape != RELIGHT_SHAPE_NONE) {
        float dx = (float)(base.x + x) + frac.x;
        float dy = (float)(base.y + y) + frac.y;
        m = relight_mask(shape, invert, dx, dy, win, inv_feather, rot);
    }
    if (stages == 0 || m <= 0.0f) {
        dst[i] = in;
        return;
    }

    float r = in.x, g = in.y, b = in.z;
    if (stages & RELIGHT_FIT) {
        r = r * fitg.x + fito.x;
        g = g * fitg.y + fito.y;
        b = b * fitg.z + fito.z;
    }
    if (stages & RELIGHT_GAIN) {
        r *= gain;
        g *= gain;
        b *= gain;
    }
    if (stages & RELIGHT_MATRIX) {
        float r2 = mat.s0 * r + mat.s1 * g + mat.s2 * b;
        float g2 = mat.s3 * r + mat.s4 * g + mat.s5 * b;
        float b2 = mat.s6 * r + mat.s7 * g + mat.s8 * b;
        r = r2;
        g = g2;
        b = b2;
    }
    if (stages & RELIGHT_SLOPE_OFFSET) {
        r = r * slope.x + offset.x;
        g = g * slope.y + offset.y;
        b = b * slope.z + offset.z;
    }
    if (stages & RELIGHT_POWER) {
        r = relight_power(r, power.x);
        g = relight_power(g, power.y);
        b = relight_power(b, power.z);
    }
    if (stages & RELIGHT_SAT) {
        float luma = 0.2126f * r + 0.7152f * g + 0.0722f * b;
        r = luma + sat * (r - luma);
        g = luma + sat * (g - luma);
        b = luma + sat * (b - luma);
    }

    float4 out = (float4)(r, g, b, in.w);
    if (m < 1.0f)
        out.xyz = in.xyz + m * (out.xyz - in.xyz);
    dst[i] = out;
}
