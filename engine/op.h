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

enum pfs_param_type {
    PFS_PARAM_NUMBER, /* one double */
    PFS_PARAM_VEC,    /* ncomp doubles, written [a, b, ...]; each within min..max */
    PFS_PARAM_ENUM,   /* one of choices[], stored as its index */
    PFS_PARAM_BOOL,   /* true/false, stored as 1/0 */
};

/*
 * One parameter. Names are dotted paths as written in the rule file:
 * "temperature.from" is the key `from` inside the mapping `temperature`.
 * Keyframable parameters accept either a value or a mapping {frame: value}
 * (linear interpolation between keys, held outside the keyed range).
 */
struct pfs_param_desc {
    const char *name;
    enum pfs_param_type type;
    int ncomp;                      /* VEC: 2..4; otherwise 1 */
    double min, max;                /* NUMBER and VEC components */
    double def[PFS_PARAM_MAX_COMP]; /* used when the rule file omits it */
    const char *const *choices;     /* ENUM: NULL-terminated */
    bool required;
    bool keyframable;
    const char *unit; /* shown in messages: "stops", "K", "px"; may be NULL */
    const char *help; /* one sentence for `platefs ops` and error messages */
};

/* The values of every parameter of one op at one frame, in table order. */
typedef double pfs_pvec[PFS_PARAM_MAX_COMP];

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

/* Inputs and output of one op at one frame. src[reads_before] is the frame
 * being rendered; neighbours come before and after it. dst has the same
 * geometry as that frame and never aliases a source. */
struct pfs_op_io {
    int frame;
    const struct pfs_image *const *src;
    int nsrc;
    struct pfs_image *dst;
};

struct pfs_cl;      /* cl/cl.h */
struct pfs_cl_image; /* cl/cl.h: a device buffer holding one pfs_image */

struct pfs_op_cl_io {
    int frame;
    const struct pfs_cl_image *const *src;
    int nsrc;
    struct pfs_cl_image *dst;
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
    int reads_before, reads_after; /* neighbouring frames read (0, 0: this one only) */
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
