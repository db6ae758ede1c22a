/*
 * rules.h - per-shot rule files: parse, validate, match, hash.
 *
 * A rules directory holds one YAML file per shot (*.yaml / *.yml). Loading
 * parses every file with libyaml, validates each op's parameters against its
 * descriptor's table (engine/op.h), and checks the set against the dailies:
 * every glob matches at least one file, no frame is matched by two files.
 * Every problem is reported as file:line:column with a sentence a VFX
 * coordinator understands, and a rule set with any error is never returned,
 * so a broken file is never half-applied.
 *
 * This module knows nothing of pixels: it hands the engine, for a path in
 * the dailies, the shot that owns it, the frame number, and the ops in force
 * at that frame (an op may have a frames: range of its own) with their
 * parameter values resolved (keyframes interpolated) plus a canonical text
 * and hash of them. Ops that read neighbouring frames lead the ops: list
 * (anything else is refused), since they fill from the plates as shot.
 *
 * A loaded pfs_ruleset is immutable and reference counted, so a running mount
 * can swap in a newly loaded set while renders still hold the old one.
 */
#ifndef PFS_RULES_H
#define PFS_RULES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/op.h"

enum pfs_diag_severity { PFS_DIAG_ERROR, PFS_DIAG_WARNING };

/* Receives each problem found while loading. file is the rule file path as
 * given (rules_dir joined with the name); line and column are 1-based, 0 when
 * the problem concerns the whole file. msg has no trailing newline. */
typedef void (*pfs_rules_report_fn)(void *ud, enum pfs_diag_severity sev,
                                    const char *file, int line, int col,
                                    const char *msg);

struct pfs_rules_opts {
    const char *rules_dir;    /* directory of rule files */
    const char *dailies_root; /* globs are relative to it; NULL skips the
                                 checks against the dailies */
    pfs_rules_report_fn report; /* NULL: log through util/log.h */
    void *report_ud;
    /* The ops rule files may name, NULL-terminated; NULL: pfs_op_registry.
     * Lets tests validate against ops of their own. */
    const struct pfs_op_desc *const *ops;
};

struct pfs_ruleset;
struct pfs_shot;

/* 0 and *out on success (warnings may have been reported); EINVAL when any
 * error was reported; ENOENT/EACCES when rules_dir cannot be read. */
int pfs_rules_load(const struct pfs_rules_opts *opts, struct pfs_ruleset **out,
                   pfs_error *err);
struct pfs_ruleset *pfs_ruleset_ref(struct pfs_ruleset *rs);
void pfs_ruleset_unref(struct pfs_ruleset *rs);

int pfs_ruleset_shot_count(const struct pfs_ruleset *rs);
const struct pfs_shot *pfs_ruleset_shot(const struct pfs_ruleset *rs, int i);

/*
 * Which shot owns relpath (relative to the dailies root, no leading '/'),
 * and at which frame. Only .exr files are matched (clips: below); the frame number is the
 * last run of digits before the extension ("A001C003.1042.exr" -> 1042).
 * Returns NULL when no rule applies (the file passes through untouched),
 * including when the frame lies outside the shot's `frames:` range.
 */
const struct pfs_shot *pfs_rules_match(const struct pfs_ruleset *rs,
                                       const char *relpath, int *frame);

/* The path of frame `frame` of the EXR sequence relpath is a frame of: its
 * frame number replaced, zero-padded to the same width ("A/x.1001.exr", 1012
 * -> "A/x.1012.exr"). False when relpath is not a numbered .exr frame or the
 * result does not fit in size. */
bool pfs_rules_frame_path(const char *relpath, int frame, char *out, size_t size);

const char *pfs_shot_name(const struct pfs_shot *shot);
/* The rule file, relative to rules_dir ("A001C003.yaml"). */
const char *pfs_shot_file(const struct pfs_shot *shot);
/* Hex XXH3-128 of the shot's canonical form (whitespace and comments do not
 * change it). */
const char *pfs_shot_hash(const struct pfs_shot *shot);

/* The most ops one shot may list (each gets its own header attribute). */
#define PFS_MAX_OPS 16

struct pfs_resolved_op {
    const struct pfs_op_desc *desc;
    /* desc->nparams entries in table order, then the points of the POINTS
     * parameters (engine/op.h; read them with pfs_op_points). */
    pfs_pvec *vals;
    int index;     /* the op's position in the rule file's ops: list, from 0 */
    bool in_range; /* the op is in force at this frame (its own frames:) */
    /* The op's line of the canonical text with the parameters at their
     * defaults left out ("relight exposure=0.35 window.shape=ellipse ..."):
     * what a frame's header shows of it, one attribute per op. Readers such
     * as FFmpeg 5.1 misread EXR headers with string attributes longer than
     * about 500 bytes, which a full line of a rich op can reach. A list of
     * points is listed whole when it has any ("path=[[812,0],[840,540]]"),
     * so a long path alone can pass that length. */
    char *text;
};

/* The ops of one shot at one frame. */
struct pfs_frame_ops {
    int nops;
    struct pfs_resolved_op *ops;
    /* Canonical text of the ops in force: one op per line, "name
     * param=value ..." with every parameter in table order and numbers in
     * %.17g precision (written in the shortest %.15g..%.17g form that reads
     * back exactly), e.g. "relight exposure=0.35 temperature.from=4300 ...";
     * points as "path=[[812,0],[840,540]]" ("path=[]" when not written).
     * An op outside its own frames: is absent. Used verbatim as the
     * provenance attribute and as the hash input. */
    char *canonical;
    char hash[33]; /* hex XXH3-128 of canonical */
};

/* The ops in force at frame, in the order of ops: (an op whose own frames:
 * leave frame out is not listed; every listed op has in_range true). */
int pfs_shot_resolve(const struct pfs_shot *shot, int frame, struct pfs_frame_ops **out,
                     pfs_error *err);
/* Every op of the shot at frame, whatever their own frames: (nops is the
 * length of ops:, ops[i].index == i), with in_range telling which are in
 * force: what the engine needs of a neighbouring frame (the masks of all
 * its local ops). canonical and hash are those of pfs_shot_resolve at the
 * same frame: they cover only the ops in force. */
int pfs_shot_resolve_all(const struct pfs_shot *shot, int frame, struct pfs_frame_ops **out,
                         pfs_error *err);
void pfs_frame_ops_free(struct pfs_frame_ops *ops);

/*
 * Camera clips. A glob that matches a clip file (engine/clip.h names them:
 * .mov, .mp4, .mxf, .mkv, ...) gives the shot the whole clip: the frames of
 * its "<clip>.frames" directory, numbered as the rule's `source:` says, are
 * corrected where `frames:` allows. A clip belongs to one rule file at most.
 */
#define PFS_CLIP_FIRST_FRAME 1001

struct pfs_clip_source {
    bool first_from_timecode; /* number frames from the clip's start timecode */
    int first_frame;          /* otherwise the first frame's number */
    /* Colour overrides as engine/colour.h enums; -1: as the stream declares. */
    int matrix, range, transfer, primaries;
};

/* The shot owning the clip at clip_relpath, or NULL. */
const struct pfs_shot *pfs_rules_match_clip(const struct pfs_ruleset *rs,
                                            const char *clip_relpath);
/* The shot's `source:` settings; defaults (1001, no overrides) when absent.
 * pfs_clip_source_default() is what a clip no rule owns gets. */
const struct pfs_clip_source *pfs_shot_source(const struct pfs_shot *shot);
const struct pfs_clip_source *pfs_clip_source_default(void);
/* Whether frame lies in the shot's `frames:` range (always, without one). */
bool pfs_shot_has_frame(const struct pfs_shot *shot, int frame);

/* A protected (performance) region at a frame: no local op may touch it. */
struct pfs_protect_region {
    enum { PFS_PROTECT_RECT, PFS_PROTECT_ELLIPSE } shape;
    double x0, y0, x1, y1; /* bounding box, display coordinates */
};
/* Fills up to max regions in force at frame; returns how many there are. */
int pfs_shot_protect_at(const struct pfs_shot *shot, int frame,
                        struct pfs_protect_region *out, int max);

/* `platefs check`: loads with reports printed as "file:line:col: error: msg"
 * to `out`, then lists each shot with what it matches (files, frame range).
 * Returns 0 when the rules are valid, 1 otherwise. */
int pfs_rules_check(const char *rules_dir, const char *dailies_root, FILE *out);

#endif
