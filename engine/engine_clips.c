/*
 * engine_clips.c - clip indexes by path, and frame naming; see
 * engine_clips.h.
 *
 * Index records live in the cache store's named records under
 * "clip-index/<hash>", where the hash covers the clip's path relative to the
 * dailies root, its size and its mtime: the same identity the frames' cache
 * keys use, so a farm machine's store serves this machine's listings too.
 * A record that does not parse (another format version, damage) is rebuilt
 * and replaced.
 */
#include "engine_clips.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/log.h"

/* Clips remembered; past this, the ones no frame holds are forgotten. */
#define CLIP_TABLE_LIMIT 256

struct clip_table {
    char *root;
    struct pfs_cache *cache;
    pthread_mutex_t lock;
    struct clip *head;
    int count;
};

struct clip_table *clip_table_new(const char *dailies_root, struct pfs_cache *cache)
{
    struct clip_table *t = calloc(1, sizeof *t);
    if (!t || !(t->root = strdup(dailies_root)))
        abort();
    t->cache = cache;
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

static void clip_free(struct clip *c)
{
    pfs_clip_index_free(c->idx);
    free(c->error_msg);
    free(c->relpath);
    free(c);
}

void clip_release(struct clip *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        clip_free(c);
}

void clip_table_free(struct clip_table *t)
{
    if (!t)
        return;
    while (t->head) {
        struct clip *c = t->head;
        t->head = c->next;
        clip_release(c);
    }
    pthread_mutex_destroy(&t->lock);
    free(t->root);
    free(t);
}

static bool clip_current(const struct clip *c, const struct stat *st)
{
    return c->size == st->st_size && c->mtime.tv_sec == st->st_mtim.tv_sec &&
           c->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void record_name(const char *relpath, const struct stat *st, char name[64])
{
    XXH3_state_t *h = XXH3_createState();
    if (!h)
        abort();
    XXH3_128bits_reset(h);
    XXH3_128bits_update(h, relpath, strlen(relpath) + 1);
    int64_t ident[3] = {st->st_size, st->st_mtim.tv_sec, st->st_mtim.tv_nsec};
    XXH3_128bits_update(h, ident, sizeof ident);
    XXH128_hash_t d = XXH3_128bits_digest(h);
    XXH3_freeState(h);
    snprintf(name, 64, "clip-index/%016" PRIx64 "%016" PRIx64, (uint64_t)d.high64,
             (uint64_t)d.low64);
}

static bool index_matches(const struct pfs_clip_index *idx, const struct stat *st)
{
    const struct pfs_clip_info *in = pfs_clip_index_info(idx);
    return in->src_size == st->st_size && in->src_mtime.tv_sec == st->st_mtim.tv_sec &&
           in->src_mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* From the store if it has this version of the clip, else built and stored. */
static struct pfs_clip_index *load_index(struct clip_table *t, const char *relpath,
                                         const char *path, const struct stat *st,
                                         pfs_error *err)
{
    char name[64];
    record_name(relpath, st, name);
    struct pfs_clip_index *idx = NULL;
    void *blob = NULL;
    size_t len = 0;
    if (t->cache && pfs_cache_meta_get(t->cache, name, &blob, &len, NULL) == 0) {
        pfs_error lerr;
        pfs_error_clear(&lerr);
        if (pfs_clip_index_load(path, blob, len, &idx, &lerr) != 0 ||
            !index_matches(idx, st)) {
            pfs_log(PFS_LOG_INFO, "%s: stored clip index not usable (%s); rebuilding", path,
                    lerr.msg[0] ? lerr.msg : "another version of the file");
            pfs_clip_index_free(idx);
            idx = NULL;
        }
        free(blob);
    }
    if (idx)
        return idx;

    if (pfs_clip_index_build(path, &idx, err) != 0)
        return NULL;
    const struct pfs_clip_info *in = pfs_clip_index_info(idx);
    pfs_log(PFS_LOG_INFO, "%s: indexed %" PRId64 " frames (%s %s, %dx%d)", path, in->nframes,
            in->codec, in->pix_fmt, in->width, in->height);
    /* A file that changed while it was read is indexed again next time. */
    if (t->cache && index_matches(idx, st)) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        pfs_error serr;
        pfs_error_clear(&serr);
        if (pfs_clip_index_save(idx, &out, &out_len, &serr) != 0 ||
            pfs_cache_meta_put(t->cache, name, out, out_len, &serr) != 0)
            pfs_log(PFS_LOG_WARN, "%s: clip index not stored: %s", path, serr.msg);
        free(out);
    }
    return idx;
}

static struct clip *clip_build(struct clip_table *t, const char *relpath, const struct stat *st)
{
    struct clip *c = calloc(1, sizeof *c);
    char *path = NULL;
    if (!c || !(c->relpath = strdup(relpath)) ||
        asprintf(&path, "%s/%s", t->root, relpath) < 0)
        abort();
    atomic_init(&c->refs, 1);
    c->size = st->st_size;
    c->mtime = st->st_mtim;
    pfs_error err;
    pfs_error_clear(&err);
    c->idx = load_index(t, relpath, path, st, &err);
    if (!c->idx) {
        c->error_msg = strdup(err.msg);
        if (!c->error_msg)
            abort();
        pfs_log(PFS_LOG_ERROR, "%s", err.msg);
    } else {
        const struct pfs_clip_info *in = pfs_clip_index_info(c->idx);
        if (in->timecode[0]) {
            if (pfs_timecode_parse(in->timecode, in->rate_num, in->rate_den, &c->tc, &err) == 0)
                c->has_timecode = true;
            else
                pfs_log(PFS_LOG_WARN, "%s: %s; frames carry no timecode", path, err.msg);
        }
    }
    free(path);
    return c;
}

/* Unlinks the clips no frame holds; called with the lock held. */
static struct clip *table_sweep(struct clip_table *t)
{
    struct clip *dropped = NULL, **link = &t->head;
    while (*link) {
        struct clip *c = *link;
        if (atomic_load(&c->refs) == 1) {
            *link = c->next;
            c->next = dropped;
            dropped = c;
            t->count--;
        } else {
            link = &c->next;
        }
    }
    return dropped;
}

struct clip *clip_table_get(struct clip_table *t, const char *relpath, const struct stat *st)
{
    pthread_mutex_lock(&t->lock);
    for (struct clip *c = t->head; c; c = c->next) {
        if (strcmp(c->relpath, relpath) == 0 && clip_current(c, st)) {
            atomic_fetch_add(&c->refs, 1);
            pthread_mutex_unlock(&t->lock);
            return c;
        }
    }
    pthread_mutex_unlock(&t->lock);

    /* Built unlocked: indexing a long clip takes a while, and other clips'
     * frames must not wait for it. Two threads may race to build one clip;
     * the loser's work is dropped. */
    struct clip *built = clip_build(t, relpath, st);

    pthread_mutex_lock(&t->lock);
    struct clip **link = &t->head, *stale = NULL;
    while (*link && strcmp((*link)->relpath, relpath) != 0)
        link = &(*link)->next;
    if (*link && clip_current(*link, st)) {
        struct clip *theirs = *link;
        atomic_fetch_add(&theirs->refs, 1);
        pthread_mutex_unlock(&t->lock);
        clip_release(built);
        return theirs;
    }
    if (*link) {
        stale = *link;
        *link = stale->next;
        t->count--;
    }
    built->next = t->head;
    t->head = built;
    t->count++;
    atomic_fetch_add(&built->refs, 1);
    struct clip *forgotten = t->count > CLIP_TABLE_LIMIT ? table_sweep(t) : NULL;
    pthread_mutex_unlock(&t->lock);
    clip_release(stale);
    while (forgotten) {
        struct clip *next = forgotten->next;
        clip_release(forgotten);
        forgotten = next;
    }
    return built;
}

int64_t clip_first_frame(const struct clip *c, const struct pfs_clip_source *src)
{
    if (src->first_from_timecode && c->has_timecode)
        return c->tc.start;
    return src->first_frame;
}

static int name_width(const struct clip *c, const struct pfs_clip_source *src)
{
    int64_t last = clip_first_frame(c, src) + pfs_clip_index_info(c->idx)->nframes - 1;
    int width = 1;
    while (last >= 10) {
        last /= 10;
        width++;
    }
    return width < 4 ? 4 : width;
}

/* The clip's file name without its extension. */
static void clip_stem(const struct clip *c, const char **stem, int *len)
{
    const char *base = strrchr(c->relpath, '/');
    base = base ? base + 1 : c->relpath;
    const char *dot = strrchr(base, '.');
    *stem = base;
    *len = (int)(dot && dot != base ? dot - base : (ptrdiff_t)strlen(base));
}

void clip_frame_name(const struct clip *c, const struct pfs_clip_source *src, int64_t i,
                     char *buf, size_t size)
{
    const char *stem;
    int len;
    clip_stem(c, &stem, &len);
    snprintf(buf, size, "%.*s.%0*" PRId64 ".exr", len, stem, name_width(c, src),
             clip_first_frame(c, src) + i);
}

bool clip_frame_of(const struct clip *c, const struct pfs_clip_source *src, const char *name,
                   int64_t *index, int64_t *frame_no)
{
    if (!c->idx)
        return false;
    const char *stem;
    int len;
    clip_stem(c, &stem, &len);
    if (strncmp(name, stem, (size_t)len) != 0 || name[len] != '.')
        return false;
    const char *digits = name + len + 1;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(digits, &end, 10);
    if (errno || end == digits || *digits < '0' || *digits > '9' || strcmp(end, ".exr") != 0)
        return false;
    int64_t i = n - clip_first_frame(c, src);
    if (i < 0 || i >= pfs_clip_index_info(c->idx)->nframes)
        return false;
    /* Only the canonical spelling exists: one file per frame. */
    char canon[512];
    clip_frame_name(c, src, i, canon, sizeof canon);
    if (strcmp(canon, name) != 0)
        return false;
    *index = i;
    *frame_no = n;
    return true;
}
