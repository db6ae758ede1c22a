/*
 * flow.h - dense optical flow between two frames.
 *
 * DIS (Kroeger, Timofte, Dai, Van Gool, "Fast Optical Flow using Dense
 * Inverse Search", ECCV 2016) with OpenCV's additions: coarse to fine over an
 * image pyramid; at each level, a grid of patches each finds its
 * displacement by inverse-compositional Gauss-Newton search started from the
 * coarser level's flow; patches are mean-normalised, so a change of light
 * between the frames does not pull them; the dense field is the
 * photometric-error-weighted average of the overlapping patches; then a
 * variational refinement (data, gradient-constancy and smoothness terms)
 * polishes it. Every stage is per patch or per pixel, which is what the
 * OpenCL version runs; the C version is the reference it is tested against.
 *
 * Frames are given as one plane of perceptually encoded luma (values about
 * 0..1; engine/flow.c's pfs_flow_luma makes one from a linear RGBA plate).
 */
#ifndef PFS_FLOW_H
#define PFS_FLOW_H

#include "engine/image.h"
#include "util/error.h"

struct pfs_cl;

/* A displacement per pixel: the content of frame a at (x, y) lies at
 * (x + uv[2i], y + uv[2i+1]) in frame b, i = y * width + x, in pixels of
 * the plane the flow was computed on. */
struct pfs_flow_field {
    int width, height;
    float *uv; /* width * height * 2, owned */
};

struct pfs_flow_params {
    /* The pyramid halves the frame while the next level stays at least this
     * wide (and a patch high): about 32, so the coarsest search sees ~40
     * pixels across and motion up to about a quarter of the frame. */
    int coarsest_width;
    /* The finest level searched and refined; 0 is full resolution, 1 half
     * (the field is then upsampled to full resolution). */
    int finest_level;
    int patch_size;     /* 8; 2 .. 16 */
    int patch_stride;   /* 4: patches overlap by half; 1 .. patch_size */
    int gd_iterations;  /* Gauss-Newton steps per patch at most */
    /* Variational refinement per level: var_iterations fixed-point steps
     * (the robust weights re-evaluated), each var_sor_iterations red-black
     * SOR sweeps of the linearised system; 0 var_iterations: none. */
    int var_iterations;
    int var_sor_iterations;
    float var_alpha, var_gamma, var_delta; /* smoothness, gradient, intensity */
};

/* The settings used everywhere: about OpenCV's "medium" preset. */
void pfs_flow_params_default(struct pfs_flow_params *p);

/* The luma plane flow works on, from a linear RGBA image: Rec.709 luma,
 * encoded with sRGB's curve (clipped to 0..1; NaN reads as 0). plane has
 * img->width * img->height floats. */
void pfs_flow_luma(const struct pfs_image *img, float *plane);

/* Flow from a to b (both w x h planes) into out (allocated here; free with
 * pfs_flow_field_free; out->uv is NULL after a failure). p NULL means the
 * defaults. Non-finite values in the planes read as 0. ENOMEM; EINVAL for
 * sizes under 16 x 16 or parameters out of range. */
int pfs_flow_cpu(const float *a, const float *b, int w, int h, const struct pfs_flow_params *p,
                 struct pfs_flow_field *out, pfs_error *err);
/* The same on an OpenCL device; call with the device lock held. Every
 * stage does the same float operations in the same order as pfs_flow_cpu,
 * so the fields agree exactly where the device rounds as IEEE says (PoCL
 * does); a device that rounds division or square root otherwise can tip a
 * patch's early stop or its guard, which moves that patch by a fraction of
 * a pixel (tests/unit/test_flow.c bounds the mean difference at 0.01 px).
 * About 0.1 to 0.2 s for 1280x720 on two CPU cores through PoCL. */
int pfs_flow_cl(struct pfs_cl *cl, const float *a, const float *b, int w, int h,
                const struct pfs_flow_params *p, struct pfs_flow_field *out, pfs_error *err);

void pfs_flow_field_free(struct pfs_flow_field *f);

/* Channel c of an interleaved image (nch floats per pixel, w x h) at
 * (x, y) in pixel-index coordinates, bilinear, clamped to the image: how
 * fields and plates are sampled along a flow. */
float pfs_flow_sample(const float *f, int w, int h, int nch, int c, double x, double y);

/* The share of white noise variance that bilinear sampling at (x, y)
 * keeps: the sum of the squared weights. */
float pfs_flow_sample_kept(double x, double y);

#endif
