/*
 * internal.h - what the files of the rules module share and nobody else sees.
 *
 * A loaded rule set is a tree of plain structs allocated from one arena owned
 * by the set, so freeing a set (or throwing away a half-parsed one when a file
 * is broken) is a single call. The loader context carries the diagnostics
 * sink and counts, so that every stage (YAML schema, parameters, dailies)
 * reports the same way and keeps going after an error: a coordinator fixing a
 * file wants every problem at once, not one per run.
 */
#ifndef PFS_RULES_INTERNAL_H
#define PFS_RULES_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "rules/rules.h"

/* ---- arena ---------------------------------------------------------------- */

struct rules_arena_block;
struct rules_arena {
    struct rules_arena_block *head;
};

void *rules_arena_alloc(struct rules_arena *a, size_t size); /* zeroed; NULL on OOM */
char *rules_arena_strndup(struct rules_arena *a, const char *s, size_t n);
void rules_arena_free(struct rules_arena *a);

/* ---- the loaded model ----------------------------------------------------- */

/* One keyframe; a constant parameter is a single key whose frame is unused.
 * A POINTS parameter's key holds its points in pts (npts of them; every key
 * of one parameter has the same count) and leaves v unused. */
struct rules_key {
    int frame;
    double v[PFS_PARAM_MAX_COMP];
    int npts;
    double (*pts)[2];
    int line, col; /* of the value (a keyframe: of its frame), for messages */
};

struct rules_param {
    bool set;   /* written in the file (otherwise the default, as one key) */
    bool keyed; /* written as {frame: value} */
    int nkeys;  /* >= 1, sorted by frame */
    struct rules_key *keys;
    int line, col; /* of the key naming the parameter */
};

struct rules_op {
    const struct pfs_op_desc *desc;
    struct rules_param *params; /* desc->nparams */
    bool ranged; /* the op's own `frames:` given: in force only there */
    int first, last;
    int frames_line, frames_col; /* of that range */
    int line, col;
};

struct rules_protect {
    int shape; /* PFS_PROTECT_RECT or PFS_PROTECT_ELLIPSE */
    /* Keys of [x0, y0, x1, y1] or [cx, cy, rx, ry], as written. */
    struct rules_param box;
    bool ranged;
    int first, last;
    int line, col; /* of the region's list item */
};

/* The parameters a protect region's shape is read as: rect, then ellipse. */
extern const struct pfs_param_desc rules_protect_params[2];

struct rules_glob {
    const char *pat;
    int line, col;
    int nfiles;  /* files under the dailies it matches (any kind) */
    int nframes; /* of those, EXR frames the shot claims through it */
    int nclips;  /* and camera clips */
};

struct pfs_shot {
    const char *name;
    const char *file; /* relative to rules_dir */
    const char *path; /* rules_dir joined with file, as diagnostics show it */
    int name_line, name_col;
    struct rules_glob *globs;
    int nglobs;
    bool ranged; /* `frames:` given */
    int first, last;
    struct rules_protect *protect;
    int nprotect;
    struct rules_op *ops;
    int nops;
    bool has_source; /* `source:` given */
    struct pfs_clip_source source;
    char hash[33];
    /* Filled by the dailies check; nfiles stays 0 without one. */
    bool checked;
    int nfiles, frame_min, frame_max;
    int nclips; /* camera clips the shot owns */
    bool seq_any; /* an EXR frame matched a glob, in range or not ... */
    int seq_min, seq_max; /* ... and the numbers they span */
};

struct pfs_ruleset {
    atomic_int refs;
    struct rules_arena arena;
    struct pfs_shot **shots;
    int nshots;
};

/* ---- loading -------------------------------------------------------------- */

struct rules_loader {
    const struct pfs_rules_opts *opts;
    const struct pfs_op_desc *const *registry;
    struct rules_arena *arena;
    int nerrors, nwarnings;
    bool oom;
};

void rules_diag(struct rules_loader *L, enum pfs_diag_severity sev, const char *file,
                int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Parses and validates one rule file. Returns the shot, or NULL when the file
 * had errors (all of them reported) or memory ran out (L->oom). */
struct pfs_shot *rules_parse_file(struct rules_loader *L, const char *path,
                                  const char *file);

/* Walks the dailies once and checks every shot's globs and frame claims
 * against it, filling the shots' counts. */
void rules_check_dailies(struct rules_loader *L, const char *root,
                         struct pfs_shot *const *shots, int nshots);

/* The frame number of an EXR frame path: its name ends in .exr (any case)
 * and the last run of digits before that is the frame. False otherwise. */
bool rules_frame_of(const char *relpath, int *frame);

/* Whether the shot claims relpath (a glob matches and the frame is in range). */
const struct rules_glob *rules_shot_claims(const struct pfs_shot *shot,
                                           const char *relpath, int frame);

/* Value of a parameter at frame: held outside the keys, linear between. A
 * POINTS parameter gets {count, 0} (its points: rules_points_at). */
void rules_param_at(const struct rules_param *p, const struct pfs_param_desc *pd,
                    int frame, double out[PFS_PARAM_MAX_COMP]);
/* The points of a POINTS parameter at frame, point by point like
 * rules_param_at; out has room for p->keys[0].npts points. */
void rules_points_at(const struct rules_param *p, int frame, double (*out)[2]);

/* Whether the op is in force at frame (its own `frames:`, if any). */
bool rules_op_in_force(const struct rules_op *op, int frame);
/* How many pfs_pvec entries the op's values take: the table's entries plus
 * the points of its POINTS parameters after them (engine/op.h). */
int rules_op_nvals(const struct rules_op *op);
/* The op's values at frame in that layout; malloc'd (rules_op_nvals
 * entries), NULL when memory runs out. What descriptors' hooks receive. */
pfs_pvec *rules_op_values(const struct rules_op *op, int frame);
/* The same into vals, which has rules_op_nvals(op) entries. */
void rules_op_fill(const struct rules_op *op, int frame, pfs_pvec *vals);

/* A protect region's bounding box at frame (its shape keys interpolated). */
void rules_protect_region_at(const struct rules_protect *r, int frame,
                             struct pfs_protect_region *out);

/* Shortest %.Ng (N = 15..17) that reads back as exactly v; "-0" becomes "0". */
void rules_format_number(double v, char buf[32]);

/* Levenshtein distance, capped; for "did you mean" suggestions. */
int rules_edit_distance(const char *a, const char *b);

#endif
