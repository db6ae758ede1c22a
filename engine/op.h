/*
 * op.h - the descriptor of an image operation, and the op registry.
 *
 * One operation is one file engine/ops/<name>.c (plus cl/<name>.cl) that ends
 * with a `const struct pfs_op_desc`, and one line in engine/ops/registry.c.
 * The descriptor carries the parameter table; the rules module validates
 * every rule file against it (types, ranges, defaults, required, keyframes),
 * so no op parses text. At render time the engine resolves each parameter at
 * the frame being rendered and hands the op a flat array of values in table
 * order; the op turns them into its uniforms once (prepare), and the same
 * uniforms drive the C reference (run_cpu, the test oracle) and the OpenCL
 * path (run_cl).
 */
#ifndef PFS_OP_H
#define PFS_OP_H

#include <stdbool.h>
#include <stddef.h>

#include "image.h"
#include "util/error.h"

#define PFS_PARAM_MAX_COMP 4

struct pfs_op_frames; /* below */

/* The most neighbouring frames an op reads on each side. */
#define PFS_MAX_WINDOW 8

enum pfs_param_type {
    PFS_PARAM_NUMBER, /* one double */
    PFS_PARAM_VEC,    /* ncomp doubles, written [a, b, ...]; each within min..max */
    PFS_PARAM_ENUM,   /* one of choices[], stored as its index */
    PFS_PARAM_BOOL,   /* true/false, stored as 1/0 */
    PFS_PARAM_POINTS, /* a list of points [[x, y], ...]: see pfs_op_points */
};

/* The most points a POINTS parameter holds (a wire's path, a polygon). */
#define PFS_PARAM_MAX_POINTS 64

/*
 * One parameter. Names are dotted paths as written in the rule file:
 * "temperature.from" is the key `from` inside the mapping `temperature`.
 * Keyframable parameters accept either a value or a mapping {frame: value}
 * (linear interpolation between keys, held outside the keyed range).
 */
struct pfs_param_desc {
    const char *name;
    enum pfs_param_type type;
    int ncomp;                      /* VEC: 2..4; POINTS: the fewest points; otherwise 1 */
    double min, max;                /* NUMBER, VEC components, POINTS coordinates */
    double def[PFS_PARAM_MAX_COMP]; /* used when the rule file omits it */
    const char *const *choices;     /* ENUM: NULL-terminated */
    bool required;
    bool keyframable;
    const char *unit; /* shown in messages: "stops", "K", "px"; may be NULL */
    const char *help; /* one sentence for `platefs ops` and error messages */
};

/*
 * The values of every parameter of one op at one frame, in table order.
 * A POINTS parameter's entry is {count, first} and its points are stored
 * after the table's entries, two [x, y] per entry from vals[first] on (a
 * POINTS parameter that is not written has no points). Keyframes of a
 * POINTS parameter have the same number of points, interpolated point by
 * point. Read them with pfs_op_points, never by hand.
 */
typedef double pfs_pvec[PFS_PARAM_MAX_COMP];

/* The points of POINTS parameter `param`: *xy[i][0], *xy[i][1] for i < the
 * count returned (0: none, *xy NULL). */
static inline int pfs_op_points(const pfs_pvec *vals, int param, const double (**xy)[2])
{
    int n = (int)vals[param][0];
    /* The entries from vals[first] on are one block of doubles. */
    *xy = n > 0 ? (const double (*)[2])(const void *)vals[(int)vals[param][1]] : NULL;
    return n;
}

/*
 * What an op does to pixels decides where protect regions allow it:
 * colour ops may touch protected regions, whole-frame geometry is allowed,
 * local ops that move or synthesise pixels are refused inside them.
 */
enum pfs_op_kind {
    PFS_OP_COLOUR,
    PFS_OP_GEOMETRY,
    PFS_OP_LOCAL_SYNTH,
};

/* Inputs and output of one op at one frame. src[0] is the frame being
 * rendered, as the ops before this one left it (nsrc is 1); ops reading
 * neighbours get them through frames. dst has the same geometry as src[0]
 * and never aliases a source. */
struct pfs_op_io {
    int frame;
    const struct pfs_image *const *src;
    int nsrc;
    struct pfs_image *dst;
    const struct pfs_op_frames *frames; /* neighbour-reading ops only, else NULL */
};

struct pfs_cl;      /* cl/cl.h */
struct pfs_cl_image; /* cl/cl.h: a device buffer holding one pfs_image */

struct pfs_op_cl_io {
    int frame;
    const struct pfs_cl_image *const *src;
    int nsrc;
    struct pfs_cl_image *dst;
    const struct pfs_op_frames *frames; /* neighbour-reading ops only, else NULL */
};

/*
 * What an op that reads neighbouring frames (reads_before or reads_after
 * non-zero) sees of them. Such ops come first in a shot's chain (the rules
 * refuse anything else), so they work on the plates as shot: plate[i] is
 * the source frame frame_no[i] decoded, for consecutive frames around the
 * rendered one (plate[current] is the rendered frame as decoded), NULL
 * where the source has no such frame. hole[i] is a byte per pixel of
 * plate[i], non-zero where any local op of the shot removes something at
 * that frame (the core of its pfs_op_desc.mask, where the matte is 1), so
 * no op ever fills from another frame's wire or object. flow gives the optical flow between two of the plates, computed
 * once per pair by the engine (on the op's device when it has one) and
 * shared by every frame that needs it.
 */
struct pfs_flow_field;   /* engine/flow.h */
struct pfs_grain_model;  /* engine/fill.h */
struct pfs_op_frames {
    int n, current;
    const int *frame_no;
    const struct pfs_image *const *plate;
    const unsigned char *const *hole;
    /* The flow from plate[a] to plate[b], one of them being plate[current]:
     * for each pixel of a, where its content lies in b. Valid until the
     * render ends. *out is NULL (and 0 returned) when there is none: the
     * plate is missing, out of the op's reach, or framed differently. */
    /* Fields may be coarser than the plates (flow_scale = plate width /
     * field width, a power of two); displacements are in the field's
     * pixels. */
    int (*flow)(void *ud, int a, int b, const struct pfs_flow_field **out, pfs_error *err);
    int flow_scale;
    void *flow_ud;
    /* The grain of plate[current] (engine/fill.h): learned from its flat
     * areas away from holes and capped by its differences from its nearest
     * neighbour moved onto it by flow, so that texture is not taken for
     * grain. Made once per render, on first call. */
    int (*grain)(void *ud, const struct pfs_grain_model **out, pfs_error *err);
    void *grain_ud;
    /* Seeds synthetic texture (grain): fixed for a shot's frame, so a
     * frame renders the same bytes every time. */
    unsigned long long seed;
};

/*
 * What prepare sees of the frame. frame is the frame's pixels as decoded,
 * before any op of the chain (an op that fits itself to the image, like
 * relight's match, fits the plate as shot). reference is the decoded
 * reference frame when desc->reference names one, else NULL. An op with a
 * reference writes what it fitted into note, a line of exactly
 * desc->note_width characters (the engine pads it), which becomes the
 * platefs/fitted attribute: the header's size is promised before rendering,
 * so the note's width is fixed.
 */
struct pfs_op_frame {
    const struct pfs_image *frame;
    const struct pfs_image *reference;
    int reference_frame;
    char *note;       /* desc->note_width + 1 bytes, or NULL without a reference */
};

struct pfs_op_desc {
    const char *name;
    const char *summary;
    const struct pfs_param_desc *params;
    int nparams;
    /* Neighbouring frames read, each at most PFS_MAX_WINDOW (0, 0: this
     * one only). */
    int reads_before, reads_after;
    /* How many of those frames on each side the op reads with these values
     * (a spatial-only fill reads none). Optional: all of them. */
    int (*reads)(const pfs_pvec *vals);
    enum pfs_op_kind kind;
    size_t uniforms_size; /* bytes of the op's private uniforms struct */

    /* Optional checks across parameters; called by the rules module with the
     * values at one frame. Returns 0 or EINVAL with a message. */
    int (*validate)(const pfs_pvec *vals, pfs_error *err);
    /* Warnings for `platefs check`, with the values at one frame (every
     * keyed frame is checked): writes a sentence into msg, or leaves it
     * empty. A warning never stops a rule from loading. Optional. */
    void (*advise)(const pfs_pvec *vals, char *msg, size_t size);
    /* The frame this op compares the rendered frame against, in the shot's
     * numbering, or -1 for none. Optional (none). */
    int (*reference)(const pfs_pvec *vals);
    int note_width; /* with a reference: the width of the note prepare writes */
    /* The display-window box {x0, y0, x1, y1} (pixel edges) that a
     * PFS_OP_LOCAL_SYNTH op changes at one frame, so `platefs check` can
     * refuse overlaps with protected regions. Returns false when the op may
     * change any pixel of the frame. Optional for LOCAL_SYNTH ops (whole
     * frame); unused for the other kinds. */
    bool (*extent)(const pfs_pvec *vals, double box[4]);
    /* The matte of a PFS_OP_LOCAL_SYNTH op at one frame: for each pixel of
     * an image with geom's data and display windows, 1 where the op replaces
     * the pixel, 0 where it leaves it bit-exact, between in its feather.
     * cover has geom->width * geom->height floats. Lets the engine keep
     * every local op out of every other frame's hole. Optional. */
    int (*mask)(const pfs_pvec *vals, const struct pfs_image *geom, float *cover,
                pfs_error *err);
    /* Turns the frame's parameter values into uniforms (size uniforms_size). */
    int (*prepare)(const pfs_pvec *vals, const struct pfs_op_frame *in, void *uniforms,
                   pfs_error *err);
    /* The C reference implementation: plain, obviously correct, the oracle
     * the OpenCL path is tested against. */
    int (*run_cpu)(const void *uniforms, const struct pfs_op_io *io, pfs_error *err);
    /* The OpenCL implementation; enqueues work on cl's queue. */
    int (*run_cl)(struct pfs_cl *cl, const void *uniforms,
                  const struct pfs_op_cl_io *io, pfs_error *err);
    /* Largest difference per channel between run_cl and run_cpu that the
     * tests accept, relative to max(1, |reference|). */
    double cl_tolerance;
};

/* The registry (engine/ops/registry.c): NULL-terminated, in a stable order. */
extern const struct pfs_op_desc *const pfs_op_registry[];
const struct pfs_op_desc *pfs_op_find(const char *name);
/* Index of a parameter in desc->params by dotted name, or -1. */
int pfs_op_param_index(const struct pfs_op_desc *desc, const char *name);

#endif
