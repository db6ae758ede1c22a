/*
 * fill.h - filling a hole in a plate from the plate itself, and putting the
 * plate's grain back: the spatial half of wire and object removal
 * (engine/ops/remove.c does the temporal half through optical flow).
 *
 * All functions work on a rectangle of interleaved float channels (linear
 * light, `nch` per pixel, row stride `stride` floats) with a byte mask of
 * the same size (w * h bytes, rows w bytes apart, no stride of its own),
 * and touch only the pixels the mask names. They are plain C,
 * deterministic, and independent of thread count. engine/fill.c says how
 * each works; tests/unit/test_fill.c measures them (against OpenCV's Telea
 * for the spatial fill).
 */
#ifndef PFS_FILL_H
#define PFS_FILL_H

#include <stdint.h>

/*
 * Membrane interpolation: replaces every value where known[i] == 0 by a
 * smooth interpolation of the known values around it (the harmonic
 * function with those boundary values, approximated by a push-pull pyramid
 * and then relaxed to within 1e-5 of the largest value; exact on linear
 * ramps). Used for the seam correction of the gradient-domain blend, to
 * complete optical flow inside a hole, and to pre-fill a hole before flow
 * is computed. Pixels with known[i] != 0 are not changed; known values that
 * are NaN or Inf are not interpolated from. Work is proportional to the
 * unknown pixels, not the frame: a 6-pixel wire across 1920x1080 RGBA takes
 * a few milliseconds. nch is 1 .. 64. Returns 0, ENOMEM, or EINVAL when no
 * value is known (or an argument is invalid).
 */
int pfs_fill_membrane(float *data, int nch, int w, int h, int stride, const uint8_t *known);

/*
 * Structure-aware spatial fill of RGBA pixels where hole[i] != 0, from the
 * pixels around the hole: each hole pixel is interpolated across the hole
 * along the direction in which the two sides' neighbourhoods agree best
 * (so lines and edges crossing a wire continue through it), the direction
 * costs being pooled over a window so neighbouring pixels agree. Where no
 * direction stands out (texture nothing predicts), and where the hole is
 * too wide for a crossing (over 32 pixels each way), the fill leans on, or
 * is, the membrane. Not a blur: edges stay sharp across thin holes. The
 * pixels under the hole are never read. Meant for wires and small objects:
 * the cost grows with the hole's area times 32 directions.
 * Returns 0, ENOMEM, EINVAL when nothing around the hole is known.
 */
int pfs_fill_spatial(float *rgba, int w, int h, int stride, const uint8_t *hole);

/*
 * Gradient-domain (Poisson) blend. fill holds values for the hole pixels
 * and for a ring of ring_width pixels around the hole (both marked in
 * region, non-zero); src is the plate. Adds to fill, inside the region, the
 * membrane interpolation of (src - fill) taken on the region's outer
 * boundary (its pixels with a 4-neighbour outside it, where fill then
 * equals src), so the filled area meets the plate without a seam while
 * keeping its own texture. Pixels outside the region are neither read in
 * fill nor changed; a region with no outside (the whole frame) is left as
 * it is. Returns 0, ENOMEM or EINVAL (invalid arguments).
 */
int pfs_fill_blend(const float *src, float *fill, int nch, int w, int h, int stride,
                   const uint8_t *region);

/* ---- grain ----------------------------------------------------------------- */

#define PFS_GRAIN_BINS 8

/*
 * A plate's grain: its standard deviation per channel as a piecewise-linear
 * function of brightness, and its spatial correlation as a small
 * symmetric kernel that shapes white noise into grain of the right size
 * (estimated from the residual's autocorrelation). Learned from flat areas
 * of the plate (blocks whose content, after removing a smooth fit, is noise
 * only), so texture is not mistaken for grain.
 */
struct pfs_grain_model {
    int nbins;                              /* 0: no grain found */
    float level[PFS_GRAIN_BINS];            /* bin centres, linear luma, increasing */
    float sigma[3][PFS_GRAIN_BINS];         /* R, G, B standard deviation at each level */
    float kernel[5][5];                     /* correlation kernel, sum of squares 1 */
    float channel_corr;                     /* correlation of the grain between channels */
    int blocks;                             /* flat blocks the model was learned from */
};

/* Learns the grain of an RGBA rectangle, ignoring pixels where exclude[i]
 * != 0 (holes, and fills without grain; NULL for none). Flat blocks are
 * found relative to the others, as those with the least residual at their
 * brightness: a plate with flat areas (sky, walls, skin, out-of-focus
 * backgrounds) gives its grain, but one textured everywhere gives its least
 * textured blocks' residual, an overestimate. Returns 0 or ENOMEM; a plate
 * with too few usable blocks (smaller than 32x32, clipped, excluded) gives
 * nbins == 0. */
int pfs_grain_estimate(const float *rgba, int w, int h, int stride, const uint8_t *exclude,
                       struct pfs_grain_model *out);

/*
 * Caps the model's strengths by what the plate's differences from a
 * neighbouring frame allow. Grain is independent from frame to frame and
 * picture detail is not, so once the neighbour is moved onto the plate by
 * optical flow, what differs is the grain of both frames (plus what the
 * motion got wrong): an upper bound on the grain that holds on plates with
 * no flat areas, where the spatial estimate mistakes fine texture for
 * grain. ndiff has 3 floats per pixel of the w x h plate rgba: (plate -
 * moved neighbour) / sqrt(1 + k) per channel, k being the share of the
 * neighbour's grain variance its moving kept, NaN where the motion is not
 * trusted. Bins without enough samples are capped by the ratio found at
 * the nearest bin that has them. Returns the number of samples used.
 */
size_t pfs_grain_cap(struct pfs_grain_model *m, const float *rgba, int stride,
                     const float *ndiff, int w, int h);

/* Adds synthetic grain to RGBA pixels where amount[i] > 0 (w floats a row),
 * scaled by sqrt(amount[i]) (amount is the fraction of the plate's grain
 * variance the pixel lacks: 1 where a fill has none), with the strength of
 * the model at the pixel's luma; alpha is not touched. The noise is a pure
 * function of (seed, x + origin_x, y + origin_y), so the same pixel of the
 * same frame always gets the same grain, whatever rectangle is processed.
 * A model with nbins == 0 adds nothing. */
void pfs_grain_apply(const struct pfs_grain_model *m, uint64_t seed, float *rgba, int w, int h,
                     int stride, int origin_x, int origin_y, const float *amount);

#endif
