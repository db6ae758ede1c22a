/*
 * fill.h - filling a hole in a plate from the plate itself, and putting the
 * plate's grain back: the spatial half of wire and object removal
 * (engine/ops/remove.c does the temporal half through optical flow).
 *
 * All functions work on a rectangle of interleaved float channels (linear
 * light, `nch` per pixel, row stride `stride` floats) with a byte mask of
 * the same size, and touch only the pixels the mask names. They are plain C,
 * deterministic, and independent of thread count.
 */
#ifndef PFS_FILL_H
#define PFS_FILL_H

#include <stdint.h>

/*
 * Membrane interpolation: replaces every value where known[i] == 0 by a
 * smooth interpolation of the known values around it (the harmonic
 * function with those boundary values, approximated by a push-pull pyramid
 * and then relaxed). Used for the seam correction of the gradient-domain
 * blend, to complete optical flow inside a hole, and to pre-fill a hole
 * before flow is computed. Pixels with known[i] != 0 are not changed.
 * Returns 0, ENOMEM, or EINVAL when no value is known.
 */
int pfs_fill_membrane(float *data, int nch, int w, int h, int stride, const uint8_t *known);

/*
 * Structure-aware spatial fill of RGBA pixels where hole[i] != 0, from the
 * pixels around the hole: each hole pixel is interpolated across the hole
 * along the direction in which the two sides' neighbourhoods agree best
 * (so lines and edges crossing a wire continue through it), the direction
 * field being smoothed so neighbouring pixels agree; the widest holes fall
 * back to the membrane. Not a blur: edges stay sharp across thin holes.
 * Returns 0, ENOMEM, EINVAL when nothing around the hole is known.
 */
int pfs_fill_spatial(float *rgba, int w, int h, int stride, const uint8_t *hole);

/*
 * Gradient-domain (Poisson) blend. fill holds values for the hole pixels
 * and for a ring of ring_width pixels around the hole (both marked in
 * region, non-zero); src is the plate. Adds to fill, inside the region, the
 * membrane interpolation of (src - fill) taken on the region's outer
 * boundary, so the filled area meets the plate without a seam while keeping
 * its own texture. Returns 0 or ENOMEM.
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
 * != 0 (holes, and NULL for none). Returns 0 or ENOMEM; a plate with too
 * few flat blocks gives nbins == 0. */
int pfs_grain_estimate(const float *rgba, int w, int h, int stride, const uint8_t *exclude,
                       struct pfs_grain_model *out);

/* Adds synthetic grain to RGBA pixels where amount[i] > 0, scaled by
 * sqrt(amount[i]) (amount is the fraction of the plate's grain variance the
 * pixel lacks: 1 where a fill has none). The noise is a pure function of
 * (seed, x + origin_x, y + origin_y), so the same pixel of the same frame
 * always gets the same grain, whatever rectangle is processed. */
void pfs_grain_apply(const struct pfs_grain_model *m, uint64_t seed, float *rgba, int w, int h,
                     int stride, int origin_x, int origin_y, const float *amount);

#endif
