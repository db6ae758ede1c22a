/*
 * engine.h - the path of one read below fs/: which files are virtual frames,
 * their exact sizes, and their bytes, rendered once and cached.
 *
 * For a path in the dailies the engine asks the rules which shot owns it.
 * A file no rule touches is not the engine's business (fs/ serves it from
 * the source). A matched EXR frame becomes a pfs_frame: its source identity,
 * the ops in force at that frame, its provenance attributes, its cache key
 * and its exact output size, all computed from headers without rendering.
 * Frame descriptions are remembered per path (up to frame_table_limit; past
 * it the unused ones are forgotten) and revalidated against the source's
 * size and mtime and the rule set's generation, so `ls -l` of a large
 * directory reads each header once.
 *
 * Reads are asynchronous: pfs_engine_read answers from the LMDB cache at
 * once, or joins (or starts) the one render of that frame, and calls back
 * from a render thread when the bytes exist. Renders run on a fixed pool of
 * threads; the frames after a demanded one are rendered ahead when the pool
 * is idle; finished frames stay in memory within a byte budget so that the
 * many range reads of one frame cost a memcpy even without a cache.
 *
 * With a cache, the engine writes the cache's access times and counters
 * every two seconds, so `platefs cache stats` sees a live mount's hits.
 *
 * Camera clips (MOV, MP4, MXF, MKV, ...; engine/clip.h) appear twice: as
 * themselves, passed through, and as a directory "<clip>.frames" beside
 * them holding one EXR per frame, "<stem>.<frame>.exr" where stem is the
 * clip's name without its extension and frame is numbered as the owning
 * rule's `source:` says (1001 for the first frame by default), padded to at
 * least four digits. Clip frames are frames like any other: decoded with
 * FFmpeg, converted to scene-linear (engine/colour.h), corrected by the
 * rule's ops where its `frames:` range allows, cached. A clip's packet index
 * is built the first time its directory is listed or a frame looked up, and
 * kept in the cache store, so later listings open no media.
 *
 * Cache key: XXH3-128 of the engine's output version, the source's path
 * relative to the dailies root, its size and mtime (seconds), and every
 * provenance attribute (which carry the shot, the rule file and its hash,
 * the canonical ops at this frame and the model version). Nothing
 * machine-specific goes in, so machines mounting the same dailies agree.
 */
#ifndef PFS_ENGINE_H
#define PFS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cache/cache.h"
#include "util/error.h"

struct pfs_cl;
struct pfs_ruleset;
struct pfs_engine;
struct pfs_frame;

struct pfs_engine_opts {
    const char *dailies_root;  /* absolute path of the source tree */
    struct pfs_cache *cache;   /* NULL: no persistent cache */
    struct pfs_cl *cl;         /* NULL: run every op's C reference */
    int render_threads;        /* 0: number of online CPUs */
    int readahead;             /* frames rendered ahead of a demanded one; <0: default 2 */
    uint64_t memory_budget;    /* bytes of finished frames kept in memory; 0: 512 MiB */
    int frame_table_limit;     /* frame descriptions remembered; 0: 100,000 */
    int clip_decoders;         /* video decoders kept open; 0: 2 per render thread */
};

/* The clip frames directory next to a clip: clip name + this suffix. A real
 * file or folder of that name in the dailies hides it. */
#define PFS_CLIP_DIR_SUFFIX ".frames"

enum pfs_entry {
    PFS_ENTRY_SOURCE,     /* a file or folder of the dailies */
    PFS_ENTRY_CLIP_DIR,   /* "<clip>.frames" */
    PFS_ENTRY_CLIP_FRAME, /* a name inside "<clip>.frames"; whether that frame
                           * exists, pfs_engine_stat says */
};

/* rules may be NULL (everything passes through); the engine takes a ref. */
int pfs_engine_open(const struct pfs_engine_opts *opts, struct pfs_ruleset *rules,
                    struct pfs_engine **out, pfs_error *err);
/* Waits for renders in flight, then frees everything. */
void pfs_engine_close(struct pfs_engine *e);

/* Swaps in a new rule set (the engine takes a ref). Renders already running
 * finish with the set they started with; the next lookup uses the new one. */
void pfs_engine_set_rules(struct pfs_engine *e, struct pfs_ruleset *rules);

/*
 * What backs relpath in the mirror: *kind and *st, the lstat of the source
 * file or folder, or for a clip's directory and its frames the lstat of the
 * clip. ENOENT (or lstat's error) when nothing does. Only lstat is called.
 */
int pfs_engine_lookup(struct pfs_engine *e, const char *relpath, enum pfs_entry *kind,
                      struct stat *st);

/* Whether a dailies file of this name is a camera clip (by name only). */
bool pfs_engine_is_clip(const char *name);

/* Calls fn with the name of every frame of the clip at clip_relpath (whose
 * lstat is *st), in order. Builds the clip's index if neither memory nor
 * the cache store has it. EIO, naming the clip and why, for a clip FFmpeg
 * cannot read. */
int pfs_engine_clip_list(struct pfs_engine *e, const char *clip_relpath,
                         const struct stat *st, void (*fn)(void *ud, const char *name),
                         void *ud, pfs_error *err);

/*
 * What the mirror shows at relpath, whose source lstat is *st (for a clip
 * frame: the clip's, as pfs_engine_lookup gives it). Returns 0 and
 * sets *is_frame; for a frame also sets *size to the exact byte count a read
 * returns. A frame whose source header cannot be read is still a frame (its
 * size is the source's, reads fail with EIO, the problem is logged once).
 * Never renders.
 */
int pfs_engine_stat(struct pfs_engine *e, const char *relpath, const struct stat *st,
                    bool *is_frame, uint64_t *size);

/* A frame as of now, for the lifetime of an open file: reads through one
 * handle stay consistent even if rules change meanwhile. *out is NULL (and
 * 0 returned) when relpath is not a frame. */
int pfs_engine_frame_open(struct pfs_engine *e, const char *relpath, const struct stat *st,
                          struct pfs_frame **out, pfs_error *err);
void pfs_frame_release(struct pfs_frame *f);
uint64_t pfs_frame_size(const struct pfs_frame *f);

/* Called exactly once per read: with the bytes (valid only during the call,
 * short only at the end of the frame) or with err != 0 and no data. It may
 * run inside a cache read transaction (the bytes are the LMDB map itself):
 * send them on and return; never call back into the engine from it. */
typedef void (*pfs_read_cb)(void *ud, const void *data, size_t len, int err);

void pfs_engine_read(struct pfs_engine *e, struct pfs_frame *f, uint64_t off, size_t len,
                     pfs_read_cb cb, void *ud);

/* Renders one frame synchronously into a malloc'd buffer, bypassing the
 * cache (for `platefs render` and the tests). timing_ms, if not NULL,
 * receives decode, ops, encode milliseconds. */
int pfs_engine_render(struct pfs_engine *e, struct pfs_frame *f, uint8_t **out,
                      size_t *len, double timing_ms[3], pfs_error *err);

/* Renders f and stores it in the cache unless it is there already
 * (prewarm); synchronous, in the calling thread: when it returns 0 the frame
 * is in the store for every process. */
int pfs_engine_warm(struct pfs_engine *e, struct pfs_frame *f, bool *rendered,
                    pfs_error *err);

/* What this engine did (the cache counts its own hits and misses). */
struct pfs_engine_counters {
    uint64_t renders;           /* successful renders, readahead included */
    uint64_t render_failures;
    uint64_t memory_hits;       /* reads answered by a frame held in memory */
    uint64_t readahead_renders; /* renders nobody had asked for yet */
};
void pfs_engine_counters(struct pfs_engine *e, struct pfs_engine_counters *out);

#endif
