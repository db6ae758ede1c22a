/*
 * match.h - fitting a frame to a reference frame of the same shot, the
 * engine of relight's `match` (engine/ops/relight.c).
 *
 * The fit finds the per-channel correction (a gain, or a gain and an
 * offset) that makes the frame look like the reference, on pixels that are
 * well exposed in both and show the same surfaces (camera motion is found
 * and followed; moving objects drop out). It runs on the CPU, once per
 * frame, deterministically: the same inputs give the same numbers.
 */
#ifndef PFS_MATCH_H
#define PFS_MATCH_H

#include "engine/image.h"
#include "util/error.h"

enum pfs_match_model {
    PFS_MATCH_GAIN,        /* ref = gain * frame, per channel */
    PFS_MATCH_GAIN_OFFSET, /* ref = gain * frame + offset, per channel */
};

struct pfs_match_result {
    double gain[3], offset[3];
    double residual; /* RMS log2 ratio left over, stops */
    int kept, blocks, shift_x, shift_y;
};

/* Fits the model (enum pfs_match_model) that brings frame to ref, the
 * reference frame numbered ref_no (for messages). EINVAL for unusable
 * inputs (sizes differ), EIO when the fit cannot be trusted (too few
 * well-exposed, motion-consistent samples; the message says what to do),
 * ENOMEM. */
int pfs_match_fit(const struct pfs_image *frame, const struct pfs_image *ref, int ref_no,
                  int model, struct pfs_match_result *res, pfs_error *err);

#endif
