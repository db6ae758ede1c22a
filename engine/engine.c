/*
 * engine.c - frames, keys, and the render pool; see engine.h for the model.
 *
 * Three structures, one mutex:
 *  - the frame table: relpath -> the newest pfs_frame built for it, so that
 *    getattr of a listed directory reads each source header once;
 *  - the job list: every render queued, running, or finished and still held
 *    in memory (bounded by memory_budget), found by cache key, which is what
 *    makes concurrent reads of one uncached frame render it once;
 *  - two FIFO queues, demanded renders before readahead ones.
 * Render threads take a job, render it without the lock and answer every
 * read that joined it while it ran; a storer thread then puts it in the
 * cache, so that render threads are not held by the cache's commits (a
 * render thread stores itself when the storer falls behind).
 */
#include "engine.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <libavutil/frame.h>
#include <libavutil/pixfmt.h>

#include "cl/cl.h"
#include "engine/colour.h"
#include "engine/engine_clips.h"
#include "engine/engine_refs.h"
#include "engine/engine_window.h"
#include "engine/exr.h"
#include "engine/op.h"
#include "rules/rules.h"
#include "util/log.h"

/* Bump when the bytes produced for the same inputs change (encoder layout,
 * op maths): old cache entries then stop matching instead of being served. */
#define PFS_ENGINE_OUTPUT_VERSION "platefs-engine/1"
/* Until `platefs learn` exists there is no production model. */
#define PFS_MODEL_VERSION "none"

#define FRAME_TABLE_BUCKETS 4096
#define PFS_MAX_OP_ATTRS PFS_MAX_OPS
#define MAX_ATTRS (16 + PFS_MAX_OP_ATTRS)
#define MAX_HELD_JOBS 256

/* The frame an op of this frame compares against (relight's match). */
struct frame_ref {
    int frame_no;    /* in the shot's numbering; -1: the op has none */
    char *relpath;   /* an EXR sequence's frame; NULL for a clip's */
    int64_t clip_index;
    char *key;       /* names the reference's pixels: source, version, frame */
};

struct pfs_frame {
    atomic_int refs;
    char *relpath;
    char *path;
    off_t src_size;
    time_t src_mtime;
    long src_mtime_ns;
    uint64_t rules_gen;
    struct pfs_ruleset *rules; /* keeps shot and ops alive */
    const struct pfs_shot *shot; /* NULL for a clip frame no rule corrects */
    int64_t frame_no;
    struct pfs_frame_ops *ops;   /* NULL: no ops */
    struct pfs_exr_source *src; /* NULL when the header could not be read */
    struct clip *clip;          /* a clip frame: its clip, frame and colour */
    int64_t clip_index;
    struct pfs_colour colour;
    struct pfs_exr_attr attrs[MAX_ATTRS]; /* names static, values owned */
    int nattrs;
    struct frame_ref *op_refs; /* one per op, or NULL when no op has one */
    int fitted_attr;           /* index of platefs/fitted in attrs, or -1 */
    /* The neighbouring frames the first win_lead ops read: win_n frames,
     * this one at win_current; each one's source (key NULL when the source
     * has none) and every op of the shot there. */
    int win_lead, win_n, win_current;
    struct frame_ref *win;
    struct pfs_frame_ops **win_ops;
    uint64_t size;
    struct pfs_cache_key key;
    int error;       /* set when src is NULL */
    char *error_msg; /* why, naming the file */
    struct pfs_frame *table_next;
};

struct waiter {
    uint64_t off;
    size_t len;
    pfs_read_cb cb;
    void *ud;
    struct waiter *next;
};

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct job {
    struct pfs_cache_key key;
    struct pfs_frame *frame;
    enum job_state state;
    bool demanded;
    struct waiter *waiters;
    uint8_t *data;
    size_t len;
    int err;
    int readers; /* copying out of data without the lock */
    bool unlinked; /* dropped from the list; freed when readers reach 0 */
    uint64_t finished_seq;
    struct job *list_next;
    struct job *queue_next;
};

struct job_queue {
    struct job *head, *tail;
    int length;
};

struct pfs_engine {
    char *dailies_root;
    struct pfs_cache *cache;
    struct pfs_cl *cl;
    struct clip_table *clips;
    struct pfs_clip_decoders *decoders;
    struct ref_cache *refs;  /* decoded frames */
    struct ref_cache *flows; /* optical flows between them */
    int nthreads;
    int readahead;
    uint64_t memory_budget;

    pthread_mutex_t lock;
    pthread_cond_t work;
    bool stopping;

    struct pfs_ruleset *rules;
    uint64_t rules_gen;

    struct pfs_frame *table[FRAME_TABLE_BUCKETS];
    int table_count;
    int table_limit;

    struct job *jobs;
    int njobs_held;
    uint64_t held_bytes;
    uint64_t finish_seq;
    struct job_queue demand, ahead;

    pthread_t *threads;
    pthread_t flusher;
    pthread_cond_t flusher_wake; /* its own: a job's signal must wake a render thread */
    bool has_flusher;

    /* Finished frames waiting for their cache put, pinned; the storer
     * thread puts them so that render threads go on rendering. */
    struct job_queue store;
    bool render_threads_done; /* no job can be queued for storing any more */
    pthread_t storer;
    pthread_cond_t store_wake;
    bool has_storer;

    /* Cache hits and misses are counted by the cache itself. */
    atomic_uint_fast64_t n_renders, n_failures, n_memory_hits, n_readahead;
};

/* ---- frames ------------------------------------------------------------ */

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort(); /* small strings: out of memory here is not recoverable */
    return d;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static int frame_nops(const struct pfs_frame *f)
{
    return f->ops ? f->ops->nops : 0;
}

static void frame_free(struct pfs_frame *f)
{
    for (int i = 0; i < f->nattrs; i++)
        free((char *)f->attrs[i].value);
    for (int i = 0; f->op_refs && i < frame_nops(f); i++) {
        free(f->op_refs[i].relpath);
        free(f->op_refs[i].key);
    }
    free(f->op_refs);
    for (int i = 0; f->win && i < f->win_n; i++) {
        free(f->win[i].relpath);
        free(f->win[i].key);
        pfs_frame_ops_free(f->win_ops[i]);
    }
    free(f->win);
    free(f->win_ops);
    pfs_exr_source_free(f->src);
    pfs_frame_ops_free(f->ops);
    clip_release(f->clip);
    pfs_ruleset_unref(f->rules);
    free(f->error_msg);
    free(f->path);
    free(f->relpath);
    free(f);
}

static struct pfs_frame *frame_ref(struct pfs_frame *f)
{
    atomic_fetch_add(&f->refs, 1);
    return f;
}

void pfs_frame_release(struct pfs_frame *f)
{
    if (f && atomic_fetch_sub(&f->refs, 1) == 1)
        frame_free(f);
}

uint64_t pfs_frame_size(const struct pfs_frame *f)
{
    return f->size;
}

static void frame_add_attr(struct pfs_frame *f, const char *name, char *value)
{
    f->attrs[f->nattrs].name = name;
    f->attrs[f->nattrs].value = value;
    f->nattrs++;
}

/* The key covers everything the output bytes depend on; see engine.h. */
static void frame_compute_key(struct pfs_frame *f)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        abort();
    XXH3_128bits_reset(st);
    char ident[128];
    int n = snprintf(ident, sizeof ident, "%s%c%lld%c%lld", PFS_ENGINE_OUTPUT_VERSION, 0,
                     (long long)f->src_size, 0, (long long)f->src_mtime);
    XXH3_128bits_update(st, ident, (size_t)n + 1);
    XXH3_128bits_update(st, f->relpath, strlen(f->relpath) + 1);
    for (int i = 0; f->op_refs && i < frame_nops(f); i++)
        if (f->op_refs[i].key)
            XXH3_128bits_update(st, f->op_refs[i].key, strlen(f->op_refs[i].key) + 1);
    for (int i = 0; i < f->win_n; i++) {
        const char *key = f->win[i].key ? f->win[i].key : "-";
        char holes[33];
        window_hole_id(f->win_ops[i], holes);
        XXH3_128bits_update(st, key, strlen(key) + 1);
        XXH3_128bits_update(st, holes, sizeof holes);
    }
    for (int i = 0; i < f->nattrs; i++) {
        XXH3_128bits_update(st, f->attrs[i].name, strlen(f->attrs[i].name) + 1);
        XXH3_128bits_update(st, f->attrs[i].value, strlen(f->attrs[i].value) + 1);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, h);
    memcpy(f->key.b, canon.digest, sizeof f->key.b);
}

static struct pfs_frame *frame_new(struct pfs_engine *e, const char *relpath,
                                   const struct stat *st, struct pfs_ruleset *rules,
                                   uint64_t gen)
{
    struct pfs_frame *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    atomic_init(&f->refs, 1);
    f->relpath = xstrdup(relpath);
    f->path = xasprintf("%s/%s", e->dailies_root, relpath);
    f->src_size = st->st_size;
    f->src_mtime = st->st_mtim.tv_sec;
    f->src_mtime_ns = st->st_mtim.tv_nsec;
    f->rules_gen = gen;
    f->rules = pfs_ruleset_ref(rules);
    f->fitted_attr = -1;
    return f;
}

/*
 * Where frame_no of the same source lies, and the key naming its pixels:
 * in an EXR sequence the file numbered like it in the same folder, in a
 * clip the clip's frame of that number. 0 and r filled, ENOENT when the
 * source has no such frame (err says why, naming what for).
 */
static int frame_locate(struct pfs_engine *e, const struct pfs_frame *f, int frame_no,
                        const char *what, struct frame_ref *r, pfs_error *err)
{
    r->frame_no = frame_no;
    if (f->clip) {
        const struct pfs_clip_source *src = pfs_shot_source(f->shot);
        int64_t index = (int64_t)frame_no - clip_first_frame(f->clip, src);
        int64_t n = pfs_clip_index_info(f->clip->idx)->nframes;
        if (index < 0 || index >= n)
            return pfs_error_set(err, ENOENT,
                                 "%s: %s %d is not a frame of %s (its frames are %" PRId64
                                 "-%" PRId64 ")",
                                 f->relpath, what, frame_no, f->clip->relpath,
                                 clip_first_frame(f->clip, src),
                                 clip_first_frame(f->clip, src) + n - 1);
        r->clip_index = index;
        r->key = xasprintf("clip|%s|%lld|%lld.%09ld|%" PRId64 "|%d,%d,%d,%d", f->clip->relpath,
                           (long long)f->src_size, (long long)f->src_mtime,
                           (long)f->src_mtime_ns, index, (int)f->colour.matrix,
                           (int)f->colour.range, (int)f->colour.transfer,
                           (int)f->colour.primaries);
        return 0;
    }
    char rel[4096];
    struct stat st;
    if (!pfs_rules_frame_path(f->relpath, frame_no, rel, sizeof rel))
        return pfs_error_set(err, ENOENT, "%s: cannot name %s %d beside it", f->relpath, what,
                             frame_no);
    char *path = xasprintf("%s/%s", e->dailies_root, rel);
    int rc = stat(path, &st) ? errno : S_ISREG(st.st_mode) ? 0 : EISDIR;
    free(path);
    if (rc)
        return pfs_error_set(err, ENOENT, "%s: %s %d (%s) cannot be read: %s", f->relpath,
                             what, frame_no, rel, strerror(rc));
    r->relpath = xstrdup(rel);
    r->key = xasprintf("exr|%s|%lld|%lld.%09ld", rel, (long long)st.st_size,
                       (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    return 0;
}

/*
 * The reference frames the frame's ops compare against, found before any
 * pixel is read: a missing reference is the frame's error, named, and each
 * reference's version enters the cache key. The reference need not lie in
 * the shot's `frames:` range (a clean frame just outside it is a fine
 * reference).
 */
static int frame_find_refs(struct pfs_engine *e, struct pfs_frame *f, pfs_error *err)
{
    for (int i = 0; i < frame_nops(f); i++) {
        const struct pfs_resolved_op *op = &f->ops->ops[i];
        int ref = op->desc->reference ? op->desc->reference(op->vals) : -1;
        if (ref < 0)
            continue;
        if (!f->op_refs)
            f->op_refs = calloc((size_t)frame_nops(f), sizeof *f->op_refs);
        if (!f->op_refs)
            abort();
        char what[96];
        snprintf(what, sizeof what, "%s: reference frame", op->desc->name);
        int rc = frame_locate(e, f, ref, what, &f->op_refs[i], err);
        if (rc)
            return rc == ENOENT ? EINVAL : rc;
    }
    return 0;
}

/*
 * The neighbouring frames of a frame whose chain starts with ops that read
 * them (the rules put those first): each neighbour's source and the ops of
 * the shot at it, whose mattes say where it may not be filled from. Both
 * enter the key, so a neighbour that changes, or a shape moved at another
 * frame, renders the frame again. A neighbour the source lacks (the ends of
 * a sequence) is simply absent.
 */
static int frame_find_window(struct pfs_engine *e, struct pfs_frame *f, pfs_error *err)
{
    int before = 0, after = 0, reach = 0, lead = 0;
    for (; lead < frame_nops(f); lead++) {
        const struct pfs_resolved_op *op = &f->ops->ops[lead];
        const struct pfs_op_desc *d = op->desc;
        if (!d->reads_before && !d->reads_after)
            break;
        int r = d->reads ? d->reads(op->vals) : (d->reads_before > d->reads_after
                                                     ? d->reads_before : d->reads_after);
        before = d->reads_before > before ? d->reads_before : before;
        after = d->reads_after > after ? d->reads_after : after;
        reach = r > reach ? r : reach;
    }
    if (!lead)
        return 0;
    if (reach > PFS_MAX_WINDOW)
        reach = PFS_MAX_WINDOW;
    if (reach < before)
        before = reach;
    if (reach < after)
        after = reach;
    f->win_lead = lead;
    f->win_n = before + 1 + after;
    f->win_current = before;
    f->win = calloc((size_t)f->win_n, sizeof *f->win);
    f->win_ops = calloc((size_t)f->win_n, sizeof *f->win_ops);
    if (!f->win || !f->win_ops)
        abort();
    for (int i = 0; i < f->win_n; i++) {
        int frame_no = (int)f->frame_no - before + i;
        pfs_error miss;
        pfs_error_clear(&miss);
        int rc = frame_locate(e, f, frame_no, "neighbouring frame", &f->win[i], &miss);
        if (rc == ENOENT) {
            f->win[i].frame_no = frame_no;
            continue;
        }
        if (rc)
            return pfs_error_set(err, rc, "%s", miss.msg);
        rc = pfs_shot_resolve_all(f->shot, frame_no, &f->win_ops[i], err);
        if (rc)
            return rc;
    }
    if (!f->win[f->win_current].key)
        return pfs_error_set(err, EIO, "%s: cannot locate the frame itself in its sequence",
                             f->relpath);
    return 0;
}

/* Width of the platefs/fitted attribute: each op's note, " | " between. */
static size_t fitted_width(const struct pfs_frame *f)
{
    size_t w = 0;
    for (int i = 0; f->op_refs && i < frame_nops(f); i++)
        if (f->op_refs[i].frame_no >= 0 && f->op_refs[i].key)
            w += (w ? 3 : 0) + (size_t)f->ops->ops[i].desc->note_width;
    return w;
}

/* An op's header line, cut to what readers take: a long path or polygon
 * would pass the length at which FFmpeg 5.1 misreads a header (see
 * pfs_resolved_op.text). The full parameters are in the rule file, named
 * and hashed beside it, and in platefs/opsHash. */
#define OP_ATTR_MAX 400
static char *op_attr_text(const char *text)
{
    size_t n = strlen(text);
    if (n <= OP_ATTR_MAX)
        return xstrdup(text);
    return xasprintf("%.*s ...", OP_ATTR_MAX - 4, text);
}

/* The provenance every corrected frame carries about its shot. */
static void frame_add_shot_attrs(struct pfs_frame *f)
{
    frame_add_attr(f, "platefs/shot", xstrdup(pfs_shot_name(f->shot)));
    frame_add_attr(f, "platefs/ruleFile", xstrdup(pfs_shot_file(f->shot)));
    frame_add_attr(f, "platefs/ruleHash", xstrdup(pfs_shot_hash(f->shot)));
    /* One attribute per op: see pfs_resolved_op.text. */
    static const char *const op_names[PFS_MAX_OP_ATTRS] = {
        "platefs/op1",  "platefs/op2",  "platefs/op3",  "platefs/op4",
        "platefs/op5",  "platefs/op6",  "platefs/op7",  "platefs/op8",
        "platefs/op9",  "platefs/op10", "platefs/op11", "platefs/op12",
        "platefs/op13", "platefs/op14", "platefs/op15", "platefs/op16",
    };
    for (int i = 0; i < frame_nops(f) && i < PFS_MAX_OP_ATTRS; i++)
        frame_add_attr(f, op_names[i], op_attr_text(f->ops->ops[i].text));
    frame_add_attr(f, "platefs/opsHash", xstrdup(f->ops->hash));
    /* What ops fit at render time is only known then, but the header's size
     * is promised now: the attribute is reserved at its fixed width and
     * filled in by the render. */
    size_t w = fitted_width(f);
    if (w) {
        char *blank = malloc(w + 1);
        if (!blank)
            abort();
        memset(blank, ' ', w);
        blank[w] = '\0';
        f->fitted_attr = f->nattrs;
        frame_add_attr(f, "platefs/fitted", blank);
    }
}

/* Output size, or the frame's error: a frame whose source cannot be read is
 * still a frame (listing must not fail because one file is bad); its size
 * is the source's and reads answer EIO. Then the key. */
static struct pfs_frame *frame_finish(struct pfs_frame *f, int rc, pfs_error *err,
                                      const struct stat *st)
{
    if (rc == 0)
        rc = pfs_exr_output_size(f->src, f->attrs, f->nattrs, &f->size, err);
    if (rc != 0) {
        f->error = rc;
        f->error_msg = xstrdup(err->msg);
        f->size = (uint64_t)st->st_size;
        pfs_exr_source_free(f->src);
        f->src = NULL;
        pfs_log(PFS_LOG_ERROR, "%s", err->msg);
    }
    frame_compute_key(f);
    return f;
}

static struct pfs_frame *frame_build(struct pfs_engine *e, const char *relpath,
                                     const struct stat *st, struct pfs_ruleset *rules,
                                     uint64_t gen, const struct pfs_shot *shot, int frame_no)
{
    struct pfs_frame *f = frame_new(e, relpath, st, rules, gen);
    f->shot = shot;
    f->frame_no = frame_no;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_shot_resolve(shot, frame_no, &f->ops, &err);
    if (rc == 0)
        rc = frame_find_refs(e, f, &err);
    if (rc == 0)
        rc = frame_find_window(e, f, &err);
    if (rc == 0)
        rc = pfs_exr_probe(f->path, &f->src, &err);
    if (rc == 0) {
        frame_add_attr(f, "platefs/version", xstrdup(PFS_VERSION));
        frame_add_attr(f, "platefs/source", xstrdup(relpath));
        frame_add_attr(f, "platefs/frame", xasprintf("%d", frame_no));
        frame_add_shot_attrs(f);
        frame_add_attr(f, "platefs/model", xstrdup(PFS_MODEL_VERSION));
    }
    return frame_finish(f, rc, &err, st);
}

/* The colour the clip is converted with: the rule's overrides over what
 * the stream declares. A declared characteristic we cannot convert is no
 * error when the rule names it. */
static int clip_colour(const struct pfs_clip_info *in, const struct pfs_clip_source *src,
                       struct pfs_colour *out, pfs_error *err)
{
    int rc = pfs_colour_from_stream(src->matrix >= 0 ? AVCOL_SPC_UNSPECIFIED : in->matrix,
                                    src->range >= 0 ? AVCOL_RANGE_UNSPECIFIED : in->range,
                                    src->primaries >= 0 ? AVCOL_PRI_UNSPECIFIED : in->primaries,
                                    src->transfer >= 0 ? AVCOL_TRC_UNSPECIFIED : in->transfer,
                                    in->pix_fmt, in->width, out, err);
    if (rc)
        return rc;
    if (src->matrix >= 0)
        out->matrix = (enum pfs_matrix)src->matrix;
    if (src->range >= 0)
        out->range = (enum pfs_range)src->range;
    if (src->transfer >= 0)
        out->transfer = (enum pfs_transfer)src->transfer;
    if (src->primaries >= 0)
        out->primaries = (enum pfs_primaries)src->primaries;
    return 0;
}

/* Frame `name` of clip c, or NULL when the clip has no frame of that name. */
static struct pfs_frame *clip_frame_build(struct pfs_engine *e, const char *relpath,
                                          struct clip *c, const char *name,
                                          const struct stat *st, struct pfs_ruleset *rules,
                                          uint64_t gen)
{
    const struct pfs_shot *shot = rules ? pfs_rules_match_clip(rules, c->relpath) : NULL;
    const struct pfs_clip_source *src = shot ? pfs_shot_source(shot)
                                             : pfs_clip_source_default();
    int64_t index, frame_no;
    if (!c->idx) {
        /* An unreadable clip lists nothing, but a frame opened by name
         * must still say why it fails. */
        struct pfs_frame *f = frame_new(e, relpath, st, rules, gen);
        pfs_error err;
        pfs_error_set(&err, EIO, "%s", c->error_msg);
        return frame_finish(f, EIO, &err, st);
    }
    if (!clip_frame_of(c, src, name, &index, &frame_no))
        return NULL;

    struct pfs_frame *f = frame_new(e, relpath, st, rules, gen);
    atomic_fetch_add(&c->refs, 1);
    f->clip = c;
    f->clip_index = index;
    f->frame_no = frame_no;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = 0;
    if (shot && pfs_shot_has_frame(shot, (int)frame_no)) {
        f->shot = shot;
        rc = pfs_shot_resolve(shot, (int)frame_no, &f->ops, &err);
    }
    const struct pfs_clip_info *in = pfs_clip_index_info(c->idx);
    if (rc == 0) {
        rc = clip_colour(in, src, &f->colour, &err);
        if (rc)
            pfs_error_prefix(&err, "%s", c->relpath);
    }
    if (rc == 0 && f->shot)
        rc = frame_find_refs(e, f, &err);
    if (rc == 0 && f->shot)
        rc = frame_find_window(e, f, &err);
    if (rc == 0) {
        struct pfs_exr_video_header h = {
            .width = in->width,
            .height = in->height,
            .pixel_aspect = (float)in->sar_num / (float)in->sar_den,
            .fps_num = in->rate_num,
            .fps_den = in->rate_den,
        };
        pfs_primaries_chromaticities(f->colour.primaries, h.chromaticities);
        char tc_text[16];
        if (c->has_timecode) {
            pfs_timecode_at(&c->tc, index, tc_text, &h.time_and_flags);
            h.has_timecode = 1;
        }
        rc = pfs_exr_source_new(f->path, &h, &f->src, &err);
    }
    if (rc == 0) {
        double seconds = (double)pfs_clip_frame_pts(c->idx, index) * in->tb_num / in->tb_den;
        frame_add_attr(f, "platefs/version", xstrdup(PFS_VERSION));
        frame_add_attr(f, "platefs/source", xstrdup(c->relpath));
        frame_add_attr(f, "platefs/frame", xasprintf("%" PRId64, frame_no));
        frame_add_attr(f, "platefs/sourceFrame", xasprintf("%" PRId64, index));
        frame_add_attr(f, "platefs/sourceTime", xasprintf("%.6f", seconds));
        frame_add_attr(f, "platefs/colour",
                       xasprintf("matrix=%s range=%s transfer=%s primaries=%s",
                                 pfs_matrix_name(f->colour.matrix),
                                 pfs_range_name(f->colour.range),
                                 pfs_transfer_name(f->colour.transfer),
                                 pfs_primaries_name(f->colour.primaries)));
        if (f->shot)
            frame_add_shot_attrs(f);
        frame_add_attr(f, "platefs/model", xstrdup(PFS_MODEL_VERSION));
    }
    return frame_finish(f, rc, &err, st);
}

/* Splits "dir/<clip>.frames/name" into the clip's relpath and the name,
 * when the clip's name is one of a clip. */
static bool clip_frame_path(const char *relpath, char *clip_rel, size_t size,
                            const char **name)
{
    const char *slash = strrchr(relpath, '/');
    size_t slen = strlen(PFS_CLIP_DIR_SUFFIX);
    if (!slash || (size_t)(slash - relpath) <= slen ||
        strncmp(slash - slen, PFS_CLIP_DIR_SUFFIX, slen) != 0)
        return false;
    size_t clen = (size_t)(slash - relpath) - slen;
    if (clen >= size)
        return false;
    memcpy(clip_rel, relpath, clen);
    clip_rel[clen] = '\0';
    const char *base = strrchr(clip_rel, '/');
    if (!pfs_clip_name(base ? base + 1 : clip_rel))
        return false;
    *name = slash + 1;
    return true;
}

static unsigned frame_bucket(const char *relpath)
{
    return (unsigned)(XXH3_64bits(relpath, strlen(relpath)) % FRAME_TABLE_BUCKETS);
}

static bool frame_current(const struct pfs_frame *f, const struct stat *st, uint64_t gen)
{
    return f->rules_gen == gen && f->src_size == st->st_size &&
           f->src_mtime == st->st_mtim.tv_sec && f->src_mtime_ns == st->st_mtim.tv_nsec;
}

/* Unlinks every frame nobody but the table holds (no open file, no job)
 * and returns them as a list to release outside the lock. Called with the
 * lock held when the table outgrows its limit: a listing of a huge tree
 * then costs header reads again, never unbounded memory. */
static struct pfs_frame *table_sweep(struct pfs_engine *e)
{
    struct pfs_frame *dropped = NULL;
    for (int b = 0; b < FRAME_TABLE_BUCKETS; b++) {
        struct pfs_frame **link = &e->table[b];
        while (*link) {
            struct pfs_frame *f = *link;
            if (atomic_load(&f->refs) == 1) {
                *link = f->table_next;
                f->table_next = dropped;
                dropped = f;
                e->table_count--;
            } else {
                link = &f->table_next;
            }
        }
    }
    pfs_log(PFS_LOG_DEBUG, "frame table over its limit: forgot unused frames, %d remain",
            e->table_count);
    return dropped;
}

static bool source_exists(const struct pfs_engine *e, const char *relpath)
{
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/%s", e->dailies_root, relpath);
    return n > 0 && (size_t)n < sizeof path && lstat(path, &st) == 0;
}

/* The frame for relpath under the current rules, building it if the table
 * has none or only a stale one. *out is NULL when relpath is no frame. */
static void frame_get(struct pfs_engine *e, const char *relpath, const struct stat *st,
                      struct pfs_frame **out)
{
    *out = NULL;
    pthread_mutex_lock(&e->lock);
    struct pfs_ruleset *rules = e->rules ? pfs_ruleset_ref(e->rules) : NULL;
    uint64_t gen = e->rules_gen;
    unsigned b = frame_bucket(relpath);
    struct pfs_frame *f = e->table[b];
    while (f && strcmp(f->relpath, relpath) != 0)
        f = f->table_next;
    if (f && frame_current(f, st, gen)) {
        *out = frame_ref(f);
        pthread_mutex_unlock(&e->lock);
        pfs_ruleset_unref(rules);
        return;
    }
    pthread_mutex_unlock(&e->lock);

    struct pfs_frame *built = NULL;
    char clip_rel[PATH_MAX];
    const char *name;
    if (clip_frame_path(relpath, clip_rel, sizeof clip_rel, &name) &&
        !source_exists(e, relpath)) {
        struct clip *c = clip_table_get(e->clips, clip_rel, st);
        built = clip_frame_build(e, relpath, c, name, st, rules, gen);
        clip_release(c);
    } else {
        int frame_no = 0;
        const struct pfs_shot *shot = rules ? pfs_rules_match(rules, relpath, &frame_no) : NULL;
        if (shot)
            built = frame_build(e, relpath, st, rules, gen, shot, frame_no);
    }
    pfs_ruleset_unref(rules);
    if (!built)
        return;

    /* Publish unless another thread raced us to it; then use theirs. */
    pthread_mutex_lock(&e->lock);
    struct pfs_frame **link = &e->table[b];
    while (*link && strcmp((*link)->relpath, relpath) != 0)
        link = &(*link)->table_next;
    if (*link && frame_current(*link, st, built->rules_gen)) {
        *out = frame_ref(*link);
        pthread_mutex_unlock(&e->lock);
        pfs_frame_release(built);
        return;
    }
    struct pfs_frame *stale = *link;
    if (stale) {
        built->table_next = stale->table_next;
        *link = built;
    } else {
        built->table_next = NULL;
        *link = built;
        e->table_count++;
    }
    *out = frame_ref(built);
    struct pfs_frame *forgotten = e->table_count > e->table_limit ? table_sweep(e) : NULL;
    pthread_mutex_unlock(&e->lock);
    pfs_frame_release(stale);
    while (forgotten) {
        struct pfs_frame *next = forgotten->table_next;
        pfs_frame_release(forgotten);
        forgotten = next;
    }
}

bool pfs_engine_is_clip(const char *name)
{
    return pfs_clip_name(name);
}

int pfs_engine_lookup(struct pfs_engine *e, const char *relpath, enum pfs_entry *kind,
                      struct stat *st)
{
    char path[PATH_MAX];
    int n = relpath[0] ? snprintf(path, sizeof path, "%s/%s", e->dailies_root, relpath)
                       : snprintf(path, sizeof path, "%s", e->dailies_root);
    if (n < 0 || (size_t)n >= sizeof path)
        return ENAMETOOLONG;
    if (lstat(path, st) == 0) {
        *kind = PFS_ENTRY_SOURCE;
        return 0;
    }
    if (errno != ENOENT)
        return errno;

    /* "<clip>.frames" itself, or a name inside it. */
    size_t slen = strlen(PFS_CLIP_DIR_SUFFIX), len = strlen(path);
    char clip[PATH_MAX];
    const char *name;
    if (len > slen && strcmp(path + len - slen, PFS_CLIP_DIR_SUFFIX) == 0) {
        memcpy(clip, path, len - slen);
        clip[len - slen] = '\0';
        *kind = PFS_ENTRY_CLIP_DIR;
    } else if (clip_frame_path(path, clip, sizeof clip, &name)) {
        *kind = PFS_ENTRY_CLIP_FRAME;
    } else {
        return ENOENT;
    }
    const char *base = strrchr(clip, '/');
    if (!pfs_clip_name(base ? base + 1 : clip) || lstat(clip, st) != 0 ||
        !S_ISREG(st->st_mode))
        return ENOENT;
    return 0;
}

int pfs_engine_clip_list(struct pfs_engine *e, const char *clip_relpath,
                         const struct stat *st, void (*fn)(void *ud, const char *name),
                         void *ud, pfs_error *err)
{
    pthread_mutex_lock(&e->lock);
    struct pfs_ruleset *rules = e->rules ? pfs_ruleset_ref(e->rules) : NULL;
    pthread_mutex_unlock(&e->lock);
    struct clip *c = clip_table_get(e->clips, clip_relpath, st);
    int rc = 0;
    if (!c->idx) {
        rc = pfs_error_set(err, EIO, "%s", c->error_msg);
    } else {
        const struct pfs_shot *shot = rules ? pfs_rules_match_clip(rules, clip_relpath) : NULL;
        const struct pfs_clip_source *src = shot ? pfs_shot_source(shot)
                                                 : pfs_clip_source_default();
        int64_t n = pfs_clip_index_info(c->idx)->nframes;
        char name[PATH_MAX];
        for (int64_t i = 0; i < n; i++) {
            clip_frame_name(c, src, i, name, sizeof name);
            fn(ud, name);
        }
    }
    clip_release(c);
    pfs_ruleset_unref(rules);
    return rc;
}

int pfs_engine_stat(struct pfs_engine *e, const char *relpath, const struct stat *st,
                    bool *is_frame, uint64_t *size)
{
    struct pfs_frame *f;
    frame_get(e, relpath, st, &f);
    *is_frame = f != NULL;
    if (f) {
        *size = f->size;
        pfs_frame_release(f);
    }
    return 0;
}

int pfs_engine_frame_open(struct pfs_engine *e, const char *relpath, const struct stat *st,
                          struct pfs_frame **out, pfs_error *err)
{
    frame_get(e, relpath, st, out);
    return 0;
}

/* ---- rendering --------------------------------------------------------- */

/* Seeds what ops synthesise (grain) for this frame: the same shot and
 * frame give the same pixels on every machine. */
static uint64_t frame_seed(const struct pfs_frame *f)
{
    char text[512];
    int n = snprintf(text, sizeof text, "%s|%lld", f->shot ? pfs_shot_name(f->shot) : "",
                     (long long)f->frame_no);
    return XXH3_64bits(text, (size_t)n);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The protected regions in force at the frame (none without a shot). */
static int frame_protect(const struct pfs_frame *f, struct pfs_protect_region *r, int max)
{
    if (!f->shot)
        return 0;
    int n = pfs_shot_protect_at(f->shot, (int)f->frame_no, r, max);
    return n < max ? n : max;
}

/*
 * The engine's half of the protect promise: whatever a local op computed,
 * the pixels of protected regions leave it as they came in. (`platefs
 * check` already refuses rules whose shapes reach a region; this holds even
 * for an op whose matte is wider than its stated extent.) A pixel belongs
 * to a region when its centre does.
 */
static void protect_restore(const struct pfs_protect_region *r, int nr,
                            const struct pfs_image *before, struct pfs_image *after)
{
    for (int k = 0; k < nr; k++) {
        double cx = 0.5 * (r[k].x0 + r[k].x1), cy = 0.5 * (r[k].y0 + r[k].y1);
        double rx = 0.5 * (r[k].x1 - r[k].x0), ry = 0.5 * (r[k].y1 - r[k].y0);
        int y0 = (int)floor(r[k].y0) - after->origin_y, y1 = (int)ceil(r[k].y1) - after->origin_y;
        int x0 = (int)floor(r[k].x0) - after->origin_x, x1 = (int)ceil(r[k].x1) - after->origin_x;
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < after->height; y++) {
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < after->width; x++) {
                double px = x + after->origin_x + 0.5, py = y + after->origin_y + 0.5;
                bool inside;
                if (r[k].shape == PFS_PROTECT_RECT) {
                    inside = px >= r[k].x0 && px <= r[k].x1 && py >= r[k].y0 && py <= r[k].y1;
                } else {
                    double dx = rx > 0 ? (px - cx) / rx : 2, dy = ry > 0 ? (py - cy) / ry : 2;
                    inside = dx * dx + dy * dy <= 1.0;
                }
                if (inside) {
                    size_t i = ((size_t)y * (size_t)after->width + (size_t)x) * 4;
                    memcpy(after->px + i, before->px + i, 4 * sizeof(float));
                }
            }
        }
    }
}

#define MAX_PROTECT 64

/* The window of neighbouring frames the op at chain position i reads, if
 * any. */
static const struct pfs_op_frames *op_window(const struct pfs_frame *f, int i,
                                             const struct pfs_op_frames *win)
{
    return i < f->win_lead ? win : NULL;
}

static int run_ops_cpu(const struct pfs_frame *f, void *const *uniforms,
                       const struct pfs_op_frames *win, struct pfs_image *img, pfs_error *err)
{
    struct pfs_image tmp = *img;
    tmp.px = NULL;
    int rc = pfs_image_alloc(&tmp, img->width, img->height);
    if (rc)
        return pfs_error_set(err, rc, "%s: no memory for a %dx%d frame", f->relpath,
                             img->width, img->height);
    struct pfs_protect_region regions[MAX_PROTECT];
    int nregions = frame_protect(f, regions, MAX_PROTECT);
    for (int i = 0; i < frame_nops(f) && rc == 0; i++) {
        const struct pfs_op_desc *d = f->ops->ops[i].desc;
        const struct pfs_image *src[1] = {img};
        struct pfs_op_io io = {.frame = (int)f->frame_no, .src = src, .nsrc = 1, .dst = &tmp,
                               .frames = op_window(f, i, win)};
        rc = d->run_cpu(uniforms[i], &io, err);
        if (rc == 0) {
            if (d->kind == PFS_OP_LOCAL_SYNTH)
                protect_restore(regions, nregions, img, &tmp);
            struct pfs_image swap = *img;
            *img = tmp;
            tmp = swap;
        }
    }
    pfs_image_free(&tmp);
    return rc;
}

/* protect_restore on device images, through the host: only local ops in
 * frames with protected regions pay for it. */
static int protect_restore_cl(struct pfs_engine *e, const struct pfs_protect_region *r, int nr,
                              const struct pfs_cl_image *before, struct pfs_cl_image *after,
                              const struct pfs_image *like, pfs_error *err)
{
    struct pfs_image a = *like, b = *like;
    a.px = b.px = NULL;
    int rc = pfs_image_alloc(&a, like->width, like->height);
    if (rc == 0)
        rc = pfs_image_alloc(&b, like->width, like->height);
    if (rc)
        rc = pfs_error_set(err, rc, "no memory for a %dx%d frame", like->width, like->height);
    if (rc == 0)
        rc = pfs_cl_download(e->cl, before, &a, err);
    if (rc == 0)
        rc = pfs_cl_download(e->cl, after, &b, err);
    if (rc == 0) {
        protect_restore(r, nr, &a, &b);
        rc = pfs_cl_upload(e->cl, &b, after, err);
    }
    pfs_image_free(&a);
    pfs_image_free(&b);
    return rc;
}

/* Called with the device lock held: one upload, the chain ping-ponging
 * between two device buffers, one download. */
static int run_ops_cl(struct pfs_engine *e, const struct pfs_frame *f, void *const *uniforms,
                      const struct pfs_op_frames *win, struct pfs_image *img, pfs_error *err)
{
    struct pfs_cl_image a = {0}, b = {0};
    int rc = pfs_cl_image_create(e->cl, img, &a, err);
    if (rc == 0)
        rc = pfs_cl_image_create(e->cl, img, &b, err);
    if (rc == 0)
        rc = pfs_cl_upload(e->cl, img, &a, err);
    struct pfs_protect_region regions[MAX_PROTECT];
    int nregions = frame_protect(f, regions, MAX_PROTECT);
    struct pfs_cl_image *cur = &a, *next = &b;
    for (int i = 0; i < frame_nops(f) && rc == 0; i++) {
        const struct pfs_op_desc *d = f->ops->ops[i].desc;
        const struct pfs_cl_image *src[1] = {cur};
        struct pfs_op_cl_io io = {.frame = (int)f->frame_no, .src = src, .nsrc = 1, .dst = next,
                                  .frames = op_window(f, i, win)};
        rc = d->run_cl(e->cl, uniforms[i], &io, err);
        if (rc == 0 && d->kind == PFS_OP_LOCAL_SYNTH && nregions)
            rc = protect_restore_cl(e, regions, nregions, cur, next, img, err);
        struct pfs_cl_image *swap = cur;
        cur = next;
        next = swap;
    }
    if (rc == 0)
        rc = pfs_cl_download(e->cl, cur, img, err);
    pfs_cl_image_release(&a);
    pfs_cl_image_release(&b);
    return rc;
}

/* The source's pixels as scene-linear float RGBA. */
static int frame_decode(struct pfs_engine *e, const struct pfs_frame *f, struct pfs_image *img,
                        pfs_error *err)
{
    if (!f->clip)
        return pfs_exr_decode(f->src, img, err);
    struct AVFrame *pic = NULL;
    int rc = pfs_clip_decode(e->decoders, f->clip->idx, f->clip_index, &pic, err);
    if (rc == 0)
        rc = pfs_colour_to_linear(pic, &f->colour, img, err);
    av_frame_free(&pic);
    return rc;
}

/* Another frame of f's source, as frame_locate found it. */
static int decode_other(struct pfs_engine *e, const struct pfs_frame *f,
                        const struct frame_ref *r, struct pfs_image *img, pfs_error *err)
{
    if (!r->relpath) {
        struct AVFrame *pic = NULL;
        int rc = pfs_clip_decode(e->decoders, f->clip->idx, r->clip_index, &pic, err);
        if (rc == 0)
            rc = pfs_colour_to_linear(pic, &f->colour, img, err);
        av_frame_free(&pic);
        return rc;
    }
    char *path = xasprintf("%s/%s", e->dailies_root, r->relpath);
    struct pfs_exr_source *src = NULL;
    int rc = pfs_exr_probe(path, &src, err);
    if (rc == 0)
        rc = pfs_exr_decode(src, img, err);
    pfs_exr_source_free(src);
    free(path);
    return rc;
}

struct ref_decode {
    struct pfs_engine *e;
    const struct pfs_frame *f;
    const struct frame_ref *r;
};

static int decode_reference(void *ud, struct pfs_image *img, pfs_error *err)
{
    const struct ref_decode *d = ud;
    return decode_other(d->e, d->f, d->r, img, err);
}

static int decode_window_plate(void *ud, int i, struct pfs_image *img, pfs_error *err)
{
    const struct ref_decode *d = ud;
    return decode_other(d->e, d->f, &d->f->win[i], img, err);
}

/* Every op's uniforms for this frame, from the decoded pixels (and the
 * decoded reference frames of ops that have one); ops that fit themselves
 * write their notes into fitted, the platefs/fitted attribute's value. */
static int prepare_ops(struct pfs_engine *e, const struct pfs_frame *f,
                       const struct pfs_image *img, void **uniforms, char *fitted,
                       pfs_error *err)
{
    size_t used = 0;
    for (int i = 0; i < frame_nops(f); i++) {
        const struct pfs_resolved_op *op = &f->ops->ops[i];
        const struct pfs_op_desc *d = op->desc;
        uniforms[i] = calloc(1, d->uniforms_size ? d->uniforms_size : 1);
        if (!uniforms[i])
            return ENOMEM;
        struct pfs_op_frame in = {.frame = img, .reference_frame = -1};
        const struct frame_ref *r = f->op_refs ? &f->op_refs[i] : NULL;
        char *note = NULL;
        if (r && r->key) {
            struct ref_decode rd = {e, f, r};
            int rc = ref_cache_get_image(e->refs, r->key, decode_reference, &rd, &in.reference,
                                         err);
            if (rc) {
                pfs_error_prefix(err, "%s: %s: reference frame %d", f->relpath, d->name,
                                 r->frame_no);
                return rc == ENOMEM ? rc : EIO;
            }
            in.reference_frame = r->frame_no;
            note = calloc(1, (size_t)d->note_width + 1);
            if (!note) {
                ref_cache_release(e->refs, in.reference);
                return ENOMEM;
            }
            in.note = note;
        }
        int rc = d->prepare(op->vals, &in, uniforms[i], err);
        ref_cache_release(e->refs, in.reference);
        if (rc == 0 && note) {
            /* Exactly note_width characters, whatever the op wrote. */
            size_t n = strnlen(note, (size_t)d->note_width);
            memset(note + n, ' ', (size_t)d->note_width - n);
            while (n > 0 && note[n - 1] == ' ')
                n--; /* the log line without the padding */
            if (used)
                memcpy(fitted + used, " | ", 3), used += 3;
            memcpy(fitted + used, note, (size_t)d->note_width);
            used += (size_t)d->note_width;
            pfs_log(PFS_LOG_INFO, "%s: %.*s", f->relpath, (int)n, note);
        }
        free(note);
        if (rc) {
            if (err && err->code && !strstr(err->msg, f->relpath))
                pfs_error_prefix(err, "%s", f->relpath);
            return rc;
        }
    }
    return 0;
}

static int render_frame(struct pfs_engine *e, const struct pfs_frame *f, uint8_t **out,
                        size_t *len, double timing[3], pfs_error *err)
{
    *out = NULL;
    *len = 0;
    if (f->error)
        return pfs_error_set(err, EIO, "%s", f->error_msg);

    double t0 = now_ms();
    struct pfs_image img = {0};
    struct pfs_op_frames *win = NULL;
    struct ref_decode wd = {e, f, NULL};
    struct window_env wenv = {.plates = e->refs, .flows = e->flows, .cl = e->cl,
                              .decode = decode_window_plate, .decode_ud = &wd,
                              .relpath = f->relpath};
    int rc;
    if (f->win_n) {
        /* The window decodes this frame too, into the shared cache: the
         * chain works on a copy. */
        struct window_plate plates[2 * PFS_MAX_WINDOW + 1];
        int reach = 0;
        for (int i = 0; i < f->win_n; i++) {
            plates[i] = (struct window_plate){f->win[i].frame_no, f->win[i].key, f->win_ops[i]};
            if (f->win[i].key && abs(i - f->win_current) > reach)
                reach = abs(i - f->win_current);
        }
        rc = window_open(&wenv, plates, f->win_n, f->win_current, reach, frame_seed(f), &win,
                         err);
        if (rc == 0)
            rc = pfs_image_copy(&img, win->plate[win->current]);
    } else {
        rc = frame_decode(e, f, &img, err);
    }
    if (rc) {
        window_close(&wenv, win);
        pfs_image_free(&img);
        return rc == ENOMEM ? rc : EIO;
    }
    double t1 = now_ms();

    int nops = frame_nops(f);
    void **uniforms = calloc((size_t)nops + 1, sizeof *uniforms);
    struct pfs_exr_attr attrs[MAX_ATTRS];
    memcpy(attrs, f->attrs, sizeof attrs);
    char *fitted = NULL;
    if (!uniforms)
        rc = ENOMEM;
    if (rc == 0 && f->fitted_attr >= 0) {
        fitted = strdup(f->attrs[f->fitted_attr].value);
        if (!fitted)
            rc = ENOMEM;
        else
            attrs[f->fitted_attr].value = fitted;
    }
    if (rc == 0)
        rc = prepare_ops(e, f, &img, uniforms, fitted, err);
    if (rc == 0 && nops > 0) {
        if (e->cl) {
            pfs_cl_lock(e->cl);
            rc = run_ops_cl(e, f, uniforms, win, &img, err);
            pfs_cl_unlock(e->cl);
        } else {
            rc = run_ops_cpu(f, uniforms, win, &img, err);
        }
    }
    window_close(&wenv, win);
    for (int i = 0; uniforms && i < nops; i++)
        free(uniforms[i]);
    free(uniforms);
    double t2 = now_ms();

    if (rc == 0)
        rc = pfs_exr_encode(f->src, attrs, f->nattrs, &img, out, len, err);
    pfs_image_free(&img);
    free(fitted);
    double t3 = now_ms();
    if (rc == 0 && *len != f->size) {
        /* The size promised to stat is a contract with every reader. */
        rc = pfs_error_set(err, EIO, "%s: encoded %zu bytes but promised %llu", f->relpath,
                           *len, (unsigned long long)f->size);
        free(*out);
        *out = NULL;
    }
    if (rc && err && err->code == 0)
        pfs_error_set(err, rc, "%s: render failed: %s", f->relpath, strerror(rc));
    if (timing) {
        timing[0] = t1 - t0;
        timing[1] = t2 - t1;
        timing[2] = t3 - t2;
    }
    return rc;
}

int pfs_engine_render(struct pfs_engine *e, struct pfs_frame *f, uint8_t **out, size_t *len,
                      double timing_ms[3], pfs_error *err)
{
    return render_frame(e, f, out, len, timing_ms, err);
}

/* ---- jobs -------------------------------------------------------------- */

static void queue_push(struct job_queue *q, struct job *j)
{
    j->queue_next = NULL;
    if (q->tail)
        q->tail->queue_next = j;
    else
        q->head = j;
    q->tail = j;
    q->length++;
}

static struct job *queue_pop(struct job_queue *q)
{
    struct job *j = q->head;
    if (j) {
        q->head = j->queue_next;
        if (!q->head)
            q->tail = NULL;
        q->length--;
    }
    return j;
}

static void queue_remove(struct job_queue *q, struct job *j)
{
    struct job **link = &q->head;
    struct job *prev = NULL;
    while (*link && *link != j) {
        prev = *link;
        link = &(*link)->queue_next;
    }
    if (!*link)
        return;
    *link = j->queue_next;
    if (q->tail == j)
        q->tail = prev;
    q->length--;
}

static struct job *job_find(struct pfs_engine *e, const struct pfs_cache_key *key)
{
    for (struct job *j = e->jobs; j; j = j->list_next)
        if (memcmp(j->key.b, key->b, sizeof key->b) == 0)
            return j;
    return NULL;
}

static void job_free(struct job *j)
{
    pfs_frame_release(j->frame);
    free(j->data);
    free(j);
}

static void job_unlink(struct pfs_engine *e, struct job *j)
{
    struct job **link = &e->jobs;
    while (*link != j)
        link = &(*link)->list_next;
    *link = j->list_next;
    if (j->state == JOB_DONE) {
        e->njobs_held--;
        e->held_bytes -= j->len;
    }
    j->unlinked = true;
    if (j->readers == 0)
        job_free(j);
}

/* Drops a pin taken with readers++ (lock held). A job unlinked while
 * pinned is freed by whoever drops the last pin. */
static void job_unpin(struct job *j)
{
    j->readers--;
    if (j->unlinked && j->readers == 0)
        job_free(j);
}

/* Drops the oldest finished frames until the held ones fit the budget. */
static void jobs_trim(struct pfs_engine *e)
{
    while (e->held_bytes > e->memory_budget || e->njobs_held > MAX_HELD_JOBS) {
        struct job *oldest = NULL;
        for (struct job *j = e->jobs; j; j = j->list_next)
            if (j->state == JOB_DONE && (!oldest || j->finished_seq < oldest->finished_seq))
                oldest = j;
        if (!oldest)
            return;
        job_unlink(e, oldest);
    }
}

static struct job *job_new(struct pfs_frame *f)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->key = f->key;
    j->frame = frame_ref(f);
    j->state = JOB_QUEUED;
    return j;
}

static void serve(const uint8_t *data, size_t total, uint64_t off, size_t len, pfs_read_cb cb,
                  void *ud)
{
    size_t n = off >= total ? 0 : (size_t)(total - off < len ? total - off : len);
    cb(ud, n ? data + off : data, n, 0);
}

/* Answers a read from a finished job: its bytes, or the error it ended
 * with (a failed render is briefly visible before it is dropped). */
static void serve_job(const struct job *j, uint64_t off, size_t len, pfs_read_cb cb, void *ud)
{
    if (j->err)
        cb(ud, NULL, 0, j->err);
    else
        serve(j->data, j->len, off, len, cb, ud);
}

/* Serves a read from a finished job. Called with the lock held; returns
 * with it released. The copy runs unlocked, pinned by the readers count so
 * that trimming cannot free the bytes under it. */
static void serve_done_unlock(struct pfs_engine *e, struct job *j, uint64_t off, size_t len,
                              pfs_read_cb cb, void *ud)
{
    j->readers++;
    pthread_mutex_unlock(&e->lock);
    serve_job(j, off, len, cb, ud);
    pthread_mutex_lock(&e->lock);
    job_unpin(j);
    pthread_mutex_unlock(&e->lock);
}

/* Name of frame_no + step in the same sequence: the last run of digits of
 * the file name, same padding. NULL when the name has no frame number. */
static char *sibling_relpath(const char *relpath, int step)
{
    const char *base = strrchr(relpath, '/');
    base = base ? base + 1 : relpath;
    const char *dot = strrchr(base, '.');
    const char *end = dot ? dot : base + strlen(base);
    const char *p = end;
    while (p > base && isdigit((unsigned char)p[-1]))
        p--;
    if (p == end || end - p > 9)
        return NULL;
    int width = (int)(end - p);
    long n = strtol(p, NULL, 10) + step;
    if (n < 0)
        return NULL;
    return xasprintf("%.*s%0*ld%s", (int)(p - relpath), relpath, width, n, end);
}

static void schedule_readahead(struct pfs_engine *e, const struct pfs_frame *f)
{
    for (int k = 1; k <= e->readahead; k++) {
        char *rel = sibling_relpath(f->relpath, k);
        if (!rel)
            return;
        struct stat st;
        enum pfs_entry kind;
        struct pfs_frame *next = NULL;
        if (pfs_engine_lookup(e, rel, &kind, &st) == 0 &&
            (kind == PFS_ENTRY_CLIP_FRAME || S_ISREG(st.st_mode)))
            frame_get(e, rel, &st, &next);
        free(rel);
        if (!next)
            return;
        uint64_t cached_size;
        bool cached = next->error ||
                      (e->cache && pfs_cache_size(e->cache, &next->key, &cached_size, NULL) == 0);
        pthread_mutex_lock(&e->lock);
        if (!cached && !e->stopping && !job_find(e, &next->key) &&
            e->ahead.length < 2 * e->nthreads) {
            struct job *j = job_new(next);
            if (j) {
                j->list_next = e->jobs;
                e->jobs = j;
                queue_push(&e->ahead, j);
                pthread_cond_signal(&e->work);
            }
        }
        pthread_mutex_unlock(&e->lock);
        pfs_frame_release(next);
    }
}

/* Puts a finished job's bytes in the cache; the job is pinned by the
 * caller. A full or unwritable cache costs speed, never correctness: the
 * frame is still served from memory while it is held there. */
static void store_job(struct pfs_engine *e, struct job *j)
{
    double t0 = now_ms();
    pfs_error err;
    pfs_error_clear(&err);
    pfs_cache_count(e->cache, PFS_CACHE_RENDERS, 1);
    if (pfs_cache_put(e->cache, &j->key, j->data, j->len, &err))
        pfs_log(PFS_LOG_WARN, "cache: %s (frame %s is served uncached)", err.msg,
                j->frame->relpath);
    else
        pfs_log(PFS_LOG_DEBUG, "stored %s: %.1f ms", j->frame->relpath, now_ms() - t0);
}

/* Stores queued frames until the engine stops and the queue is empty, so
 * every frame rendered before an unmount is in the cache after it. */
static void *store_thread(void *arg)
{
    struct pfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        struct job *j = queue_pop(&e->store);
        if (!j) {
            if (e->stopping && e->render_threads_done)
                break;
            pthread_cond_wait(&e->store_wake, &e->lock);
            continue;
        }
        pthread_mutex_unlock(&e->lock);
        store_job(e, j);
        pthread_mutex_lock(&e->lock);
        job_unpin(j);
        jobs_trim(e);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static void run_job(struct pfs_engine *e, struct job *j)
{
    /* Our own reference: the job may be trimmed and freed before we are
     * done with its frame (readahead below). */
    struct pfs_frame *frame = frame_ref(j->frame);
    uint8_t *data = NULL;
    size_t len = 0;
    double timing[3] = {0};
    pfs_error err;
    pfs_error_clear(&err);
    double t0 = now_ms();
    int rc = render_frame(e, frame, &data, &len, timing, &err);
    if (rc == 0) {
        atomic_fetch_add(&e->n_renders, 1);
        if (!j->demanded)
            atomic_fetch_add(&e->n_readahead, 1);
    } else {
        atomic_fetch_add(&e->n_failures, 1);
        pfs_log(PFS_LOG_ERROR, "%s", err.msg);
    }
    double t_render = now_ms() - t0;

    /* Publish first, store second: waiting readers get their bytes now,
     * not after the cache's fsync, and reads arriving during the put are
     * served from memory. */
    pthread_mutex_lock(&e->lock);
    j->state = JOB_DONE;
    j->data = data;
    j->len = len;
    j->err = rc ? EIO : 0;
    j->finished_seq = ++e->finish_seq;
    e->njobs_held++;
    e->held_bytes += len;
    struct waiter *waiters = j->waiters;
    j->waiters = NULL;
    bool demanded = j->demanded;
    j->readers++; /* pins data through the replies and the put */
    pthread_mutex_unlock(&e->lock);

    while (waiters) {
        struct waiter *w = waiters;
        waiters = w->next;
        if (rc)
            w->cb(w->ud, NULL, 0, EIO);
        else
            serve(data, len, w->off, w->len, w->cb, w->ud);
        free(w);
    }

    if (rc == 0)
        pfs_log(PFS_LOG_DEBUG,
                "rendered %s: decode %.1f ms, ops %.1f ms (%s), encode %.1f ms, total %.1f ms",
                frame->relpath, timing[0], timing[1], e->cl ? "opencl" : "reference",
                timing[2], t_render);

    pthread_mutex_lock(&e->lock);
    if (rc == 0 && e->cache && e->has_storer && e->store.length < 2 * e->nthreads) {
        /* The pin passes to the storer. */
        queue_push(&e->store, j);
        pthread_cond_signal(&e->store_wake);
        pthread_mutex_unlock(&e->lock);
    } else {
        pthread_mutex_unlock(&e->lock);
        /* No storer, or it is behind: storing here holds this thread back,
         * which keeps unstored frames from piling up in memory. */
        if (rc == 0 && e->cache)
            store_job(e, j);
        pthread_mutex_lock(&e->lock);
        if (rc && !j->unlinked) {
            /* Failed renders are not kept: the next read tries again (a
             * source being copied in may be complete by then). */
            j->readers--;
            job_unlink(e, j);
        } else {
            job_unpin(j);
            if (rc == 0)
                jobs_trim(e);
        }
        pthread_mutex_unlock(&e->lock);
    }

    if (demanded && rc == 0 && e->readahead > 0)
        schedule_readahead(e, frame);
    pfs_frame_release(frame);
}

static void *render_thread(void *arg)
{
    struct pfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        struct job *j = queue_pop(&e->demand);
        if (!j)
            j = queue_pop(&e->ahead);
        if (!j) {
            if (e->stopping)
                break;
            pthread_cond_wait(&e->work, &e->lock);
            continue;
        }
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&e->lock);
        run_job(e, j);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

struct cache_reply {
    pfs_read_cb cb;
    void *ud;
};

static void reply_from_cache(void *ud, const void *data, size_t n, uint64_t total)
{
    struct cache_reply *r = ud;
    r->cb(r->ud, data, n, 0);
}

void pfs_engine_read(struct pfs_engine *e, struct pfs_frame *f, uint64_t off, size_t len,
                     pfs_read_cb cb, void *ud)
{
    if (f->error) {
        cb(ud, NULL, 0, EIO);
        return;
    }
    pthread_mutex_lock(&e->lock);
    struct job *j = job_find(e, &f->key);
    if (j && j->state == JOB_DONE) {
        atomic_fetch_add(&e->n_memory_hits, off == 0);
        serve_done_unlock(e, j, off, len, cb, ud);
        return;
    }
    pthread_mutex_unlock(&e->lock);

    if (!j && e->cache) {
        /* The reply is written straight out of the LMDB map, inside the
         * read transaction: no copy in between. */
        struct cache_reply r = {.cb = cb, .ud = ud};
        if (pfs_cache_view(e->cache, &f->key, off, len, reply_from_cache, &r, NULL) == 0)
            return;
    }

    struct waiter *w = malloc(sizeof *w);
    if (!w) {
        cb(ud, NULL, 0, ENOMEM);
        return;
    }
    *w = (struct waiter){.off = off, .len = len, .cb = cb, .ud = ud};

    pthread_mutex_lock(&e->lock);
    j = job_find(e, &f->key);
    if (j && j->state == JOB_DONE) {
        /* Finished while we looked in the cache. */
        free(w);
        serve_done_unlock(e, j, off, len, cb, ud);
        return;
    }
    if (!j) {
        j = job_new(f);
        if (!j) {
            pthread_mutex_unlock(&e->lock);
            free(w);
            cb(ud, NULL, 0, ENOMEM);
            return;
        }
        j->list_next = e->jobs;
        e->jobs = j;
        j->demanded = true;
        queue_push(&e->demand, j);
        pthread_cond_signal(&e->work);
    } else if (!j->demanded) {
        /* A reader caught up with readahead: promote the queued render. */
        j->demanded = true;
        if (j->state == JOB_QUEUED) {
            queue_remove(&e->ahead, j);
            queue_push(&e->demand, j);
        }
    }
    w->next = j->waiters;
    j->waiters = w;
    pthread_mutex_unlock(&e->lock);
}

int pfs_engine_warm(struct pfs_engine *e, struct pfs_frame *f, bool *rendered, pfs_error *err)
{
    *rendered = false;
    if (f->error)
        return pfs_error_set(err, EIO, "%s", f->error_msg);
    if (!e->cache)
        return pfs_error_set(err, EINVAL, "%s: prewarming needs a cache", f->relpath);
    uint64_t size;
    if (pfs_cache_size(e->cache, &f->key, &size, NULL) == 0)
        return 0;
    /* Rendered here and stored before returning: when warm returns, every
     * process using the cache finds the frame. */
    uint8_t *data;
    size_t len;
    int rc = render_frame(e, f, &data, &len, NULL, err);
    if (rc)
        return rc;
    atomic_fetch_add(&e->n_renders, 1);
    pfs_cache_count(e->cache, PFS_CACHE_RENDERS, 1);
    rc = pfs_cache_put(e->cache, &f->key, data, len, err);
    free(data);
    *rendered = rc == 0;
    return rc;
}

/* ---- lifecycle --------------------------------------------------------- */

#define FLUSH_INTERVAL_S 2

/* Access times and counters live in memory until flushed (reads must not
 * become writes); a mount that only serves hits would otherwise show none
 * of them to `platefs cache stats` until it unmounts. */
static void *flush_thread(void *arg)
{
    struct pfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += FLUSH_INTERVAL_S;
        pthread_cond_timedwait(&e->flusher_wake, &e->lock, &until);
        if (e->stopping)
            break;
        pthread_mutex_unlock(&e->lock);
        pfs_error err;
        pfs_error_clear(&err);
        if (pfs_cache_flush(e->cache, &err))
            pfs_log(PFS_LOG_WARN, "cache: %s", err.msg);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int pfs_engine_open(const struct pfs_engine_opts *opts, struct pfs_ruleset *rules,
                    struct pfs_engine **out, pfs_error *err)
{
    struct pfs_engine *e = calloc(1, sizeof *e);
    if (!e)
        return pfs_error_set(err, ENOMEM, "engine: out of memory");
    e->dailies_root = xstrdup(opts->dailies_root);
    size_t rl = strlen(e->dailies_root);
    while (rl > 1 && e->dailies_root[rl - 1] == '/')
        e->dailies_root[--rl] = '\0';
    e->cache = opts->cache;
    e->cl = opts->cl;
    e->nthreads = opts->render_threads > 0 ? opts->render_threads
                                           : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (e->nthreads < 1)
        e->nthreads = 1;
    e->readahead = opts->readahead < 0 ? 2 : opts->readahead;
    e->memory_budget = opts->memory_budget ? opts->memory_budget : 512ull << 20;
    e->table_limit = opts->frame_table_limit > 0 ? opts->frame_table_limit : 100000;
    e->rules = rules ? pfs_ruleset_ref(rules) : NULL;
    e->rules_gen = 1;
    e->clips = clip_table_new(e->dailies_root, e->cache);
    /* Two per render thread: each may be matching a different shot. */
    /* Decoded frames: references, and the neighbours removal ops read.
     * Renders hold what they use; this is what stays decoded between
     * them. Flows (and the luma planes they are computed on) likewise. */
    e->refs = ref_cache_new(e->memory_budget);
    e->flows = ref_cache_new(e->memory_budget / 2);
    if (!e->refs || !e->flows)
        abort();

    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->flusher_wake, NULL);
    pthread_cond_init(&e->store_wake, NULL);
    int rc = pfs_clip_decoders_new(opts->clip_decoders > 0 ? opts->clip_decoders
                                                            : 2 * e->nthreads,
                                   &e->decoders, err);
    e->threads = rc ? NULL : calloc((size_t)e->nthreads, sizeof *e->threads);
    if (!e->threads) {
        e->nthreads = 0;
        pfs_engine_close(e);
        return rc ? rc : pfs_error_set(err, ENOMEM, "engine: out of memory");
    }
    for (int i = 0; i < e->nthreads; i++) {
        rc = pthread_create(&e->threads[i], NULL, render_thread, e);
        if (rc) {
            e->nthreads = i;
            pfs_engine_close(e);
            return pfs_error_set(err, rc, "engine: cannot start render threads: %s",
                                 strerror(rc));
        }
    }
    if (e->cache && pthread_create(&e->flusher, NULL, flush_thread, e) == 0)
        e->has_flusher = true;
    if (e->cache && pthread_create(&e->storer, NULL, store_thread, e) == 0)
        e->has_storer = true;
    *out = e;
    return 0;
}

void pfs_engine_close(struct pfs_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    /* Readahead nobody asked for is dropped; demanded renders finish so
     * that every pending read is answered. */
    struct job *j;
    while ((j = queue_pop(&e->ahead))) {
        if (j->waiters) {
            queue_push(&e->demand, j);
            continue;
        }
        struct job **link = &e->jobs;
        while (*link != j)
            link = &(*link)->list_next;
        *link = j->list_next;
        job_free(j);
    }
    pthread_cond_broadcast(&e->work);
    pthread_cond_signal(&e->flusher_wake);
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < e->nthreads; i++)
        pthread_join(e->threads[i], NULL);
    free(e->threads);
    if (e->has_storer) {
        pthread_mutex_lock(&e->lock);
        e->render_threads_done = true;
        pthread_cond_signal(&e->store_wake);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->storer, NULL);
    }
    if (e->has_flusher)
        pthread_join(e->flusher, NULL);

    while ((j = e->jobs)) {
        e->jobs = j->list_next;
        job_free(j);
    }
    for (int b = 0; b < FRAME_TABLE_BUCKETS; b++) {
        struct pfs_frame *f = e->table[b];
        while (f) {
            struct pfs_frame *next = f->table_next;
            pfs_frame_release(f);
            f = next;
        }
    }
    if (e->decoders) {
        struct pfs_clip_decoder_stats ds;
        pfs_clip_decoder_stats(e->decoders, &ds);
        if (ds.decodes)
            pfs_log(PFS_LOG_INFO,
                    "clip decoders: %" PRIu64 " frames, %" PRIu64 " seeks, %" PRIu64
                    " opened, %" PRIu64 " pictures decoded",
                    ds.decodes, ds.seeks, ds.opens, ds.pictures);
    }
    pfs_clip_decoders_free(e->decoders);
    clip_table_free(e->clips);
    ref_cache_free(e->refs);
    ref_cache_free(e->flows);
    pfs_ruleset_unref(e->rules);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->flusher_wake);
    pthread_cond_destroy(&e->store_wake);
    free(e->dailies_root);
    free(e);
}

void pfs_engine_set_rules(struct pfs_engine *e, struct pfs_ruleset *rules)
{
    struct pfs_ruleset *ref = rules ? pfs_ruleset_ref(rules) : NULL;
    pthread_mutex_lock(&e->lock);
    struct pfs_ruleset *old = e->rules;
    e->rules = ref;
    e->rules_gen++;
    pthread_mutex_unlock(&e->lock);
    pfs_ruleset_unref(old);
}

void pfs_engine_counters(struct pfs_engine *e, struct pfs_engine_counters *out)
{
    out->renders = atomic_load(&e->n_renders);
    out->render_failures = atomic_load(&e->n_failures);
    out->memory_hits = atomic_load(&e->n_memory_hits);
    out->readahead_renders = atomic_load(&e->n_readahead);
}
