/*
 * engine_window.h - the neighbouring frames an op reads (private to
 * engine/).
 *
 * Ops such as wire removal fill a frame from its neighbours. For one render,
 * the window gathers what they see (engine/op.h, struct pfs_op_frames): the
 * plates as shot, decoded through the shared cache of decoded frames, so
 * neighbouring renders decode each source frame once; each plate's hole
 * (the union of the mattes of every local op of the shot at that frame);
 * and the optical flow between the rendered frame and each neighbour, both
 * ways, computed once per pair into the shared cache and reused by every
 * render that needs the pair. Flow is computed on a luma plane at most
 * WINDOW_FLOW_MAX_WIDTH wide (halving the plate as often as needed): fill
 * needs the background's motion, not a per-pixel field at 4K.
 */
#ifndef PFS_ENGINE_WINDOW_H
#define PFS_ENGINE_WINDOW_H

#include <stdint.h>

#include "engine/engine_refs.h"
#include "engine/op.h"
#include "rules/rules.h"

#define WINDOW_FLOW_MAX_WIDTH 1024

struct pfs_cl;

/* One frame of the window, as the engine found it when it built the frame. */
struct window_plate {
    int frame_no;
    const char *key;                 /* the source frame's identity; NULL: no such frame */
    const struct pfs_frame_ops *ops; /* every op of the shot at that frame */
};

/* Names a frame's holes: the text of every local op with a matte among
 * ops (in force at the frame or not), hashed into 32 hex digits. Part of
 * the key of a frame that reads neighbours, and of its flows. */
void window_hole_id(const struct pfs_frame_ops *ops, char id[33]);

struct window_env {
    struct ref_cache *plates; /* decoded frames, shared with reference frames */
    struct ref_cache *flows;
    struct pfs_cl *cl;        /* NULL: flows are computed on the CPU */
    /* Decodes window plate i. */
    int (*decode)(void *ud, int i, struct pfs_image *img, pfs_error *err);
    void *decode_ud;
    const char *relpath;      /* for messages */
};

/* Opens the window of plates p[0..n-1] around p[current]: decodes the
 * plates, rasterises their holes, computes the flows between p[current]
 * and the plates within `reach` frames of it. */
int window_open(const struct window_env *env, const struct window_plate *p, int n, int current,
                int reach, uint64_t seed, struct pfs_op_frames **out, pfs_error *err);
void window_close(const struct window_env *env, struct pfs_op_frames *w);

#endif
