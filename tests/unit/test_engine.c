/*
 * test_engine.c - the engine without FUSE: frames and sizes, single-flight
 * renders, cache keys that agree across machines, determinism across
 * thread counts, and the OpenCL path against the C reference.
 *
 * Works on a scratch copy of the sample dailies and rules.
 */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "check.h"
#include "cl/cl.h"
#include "engine/engine.h"
#include "rules/rules.h"

#define FRAME "A001/A001C003.1003.exr"

static char scratch[256];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    REQUIRE(system(cmd) == 0);
}

static struct pfs_ruleset *load_rules(const char *dailies)
{
    char rules[300];
    snprintf(rules, sizeof rules, "%s/rules", scratch);
    struct pfs_rules_opts o = {.rules_dir = rules, .dailies_root = dailies};
    struct pfs_ruleset *rs = NULL;
    pfs_error err;
    REQUIRE(pfs_rules_load(&o, &rs, &err) == 0);
    return rs;
}

struct fixture {
    struct pfs_ruleset *rules;
    struct pfs_engine *engine;
};

static void open_engine(struct fixture *fx, const char *dailies, struct pfs_cache *cache,
                        struct pfs_cl *cl, int threads)
{
    fx->rules = load_rules(dailies);
    struct pfs_engine_opts o = {.dailies_root = dailies, .cache = cache, .cl = cl,
                                .render_threads = threads, .readahead = 0};
    pfs_error err;
    REQUIRE(pfs_engine_open(&o, fx->rules, &fx->engine, &err) == 0);
}

static void close_engine(struct fixture *fx)
{
    pfs_engine_close(fx->engine);
    pfs_ruleset_unref(fx->rules);
}

static struct pfs_frame *frame(struct pfs_engine *e, const char *dailies, const char *rel)
{
    struct stat st;
    enum pfs_entry kind;
    REQUIRE(pfs_engine_lookup(e, rel, &kind, &st) == 0);
    struct pfs_frame *f = NULL;
    pfs_error err;
    REQUIRE(pfs_engine_frame_open(e, rel, &st, &f, &err) == 0);
    return f;
}

/* A synchronous whole-frame read through the asynchronous API. */
struct read_result {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    int err;
    uint8_t *data;
    size_t len;
};

static void on_read(void *ud, const void *data, size_t len, int err)
{
    struct read_result *r = ud;
    pthread_mutex_lock(&r->m);
    r->err = err;
    if (!err) {
        r->data = malloc(len ? len : 1);
        memcpy(r->data, data, len);
        r->len = len;
    }
    r->done = true;
    pthread_cond_signal(&r->c);
    pthread_mutex_unlock(&r->m);
}

static int read_range(struct pfs_engine *e, struct pfs_frame *f, uint64_t off, size_t len,
                      uint8_t **out, size_t *outlen)
{
    struct read_result r = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    pfs_engine_read(e, f, off, len, on_read, &r);
    pthread_mutex_lock(&r.m);
    while (!r.done)
        pthread_cond_wait(&r.c, &r.m);
    pthread_mutex_unlock(&r.m);
    *out = r.data;
    *outlen = r.len;
    return r.err;
}

static char dailies_a[300], dailies_b[300];

static void test_sizes_and_passthrough(void)
{
    struct fixture fx;
    open_engine(&fx, dailies_a, NULL, NULL, 2);
    char path[512];
    snprintf(path, sizeof path, "%s/A001/A001_camera_report.txt", dailies_a);
    struct stat st;
    REQUIRE(lstat(path, &st) == 0);
    bool is_frame = true;
    uint64_t size = 0;
    CHECK(pfs_engine_stat(fx.engine, "A001/A001_camera_report.txt", &st, &is_frame, &size) == 0);
    CHECK(!is_frame);

    struct pfs_frame *f = frame(fx.engine, dailies_a, FRAME);
    REQUIRE(f);
    uint8_t *data;
    size_t len;
    CHECK(read_range(fx.engine, f, 0, 1u << 30, &data, &len) == 0);
    CHECKF(len == pfs_frame_size(f), "read %zu bytes, size says %llu", len,
           (unsigned long long)pfs_frame_size(f));
    CHECK(len > 8 && memcmp(data, "\x76\x2f\x31\x01", 4) == 0);
    /* A range read is the matching slice of the whole. */
    uint8_t *part;
    size_t plen;
    CHECK(read_range(fx.engine, f, 1001, 77777, &part, &plen) == 0);
    CHECK(plen == 77777 && memcmp(part, data + 1001, plen) == 0);
    free(part);
    CHECK(read_range(fx.engine, f, len - 10, 100, &part, &plen) == 0);
    CHECK(plen == 10 && memcmp(part, data + len - 10, 10) == 0);
    free(part);
    CHECK(read_range(fx.engine, f, len + 5, 100, &part, &plen) == 0);
    CHECK(plen == 0);
    free(part);
    free(data);
    pfs_frame_release(f);

    struct pfs_engine_counters c;
    pfs_engine_counters(fx.engine, &c);
    CHECKF(c.renders == 1, "renders %llu", (unsigned long long)c.renders);
    close_engine(&fx);
}

struct reader_arg {
    struct pfs_engine *e;
    struct pfs_frame *f;
    uint8_t *data;
    size_t len;
    int err;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    a->err = read_range(a->e, a->f, 0, 64u << 20, &a->data, &a->len);
    return NULL;
}

/* Eight readers of one uncached frame: one render, identical bytes. */
static void test_single_flight(void)
{
    struct fixture fx;
    open_engine(&fx, dailies_a, NULL, NULL, 2);
    struct pfs_frame *f = frame(fx.engine, dailies_a, FRAME);
    pthread_t t[8];
    struct reader_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (struct reader_arg){.e = fx.engine, .f = f};
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 8; i++) {
        CHECK(a[i].err == 0);
        CHECK(a[i].len == a[0].len && memcmp(a[i].data, a[0].data, a[0].len) == 0);
    }
    /* A read of the finished frame is answered from memory. */
    uint8_t *again;
    size_t alen;
    CHECK(read_range(fx.engine, f, 0, 4096, &again, &alen) == 0 && alen == 4096);
    CHECK(memcmp(again, a[0].data, 4096) == 0);
    free(again);
    struct pfs_engine_counters c;
    pfs_engine_counters(fx.engine, &c);
    CHECKF(c.renders == 1, "8 readers of one frame caused %llu renders",
           (unsigned long long)c.renders);
    CHECKF(c.memory_hits >= 1, "no read was served from memory");
    for (int i = 0; i < 8; i++)
        free(a[i].data);
    pfs_frame_release(f);
    close_engine(&fx);
}

/* The same dailies mounted at another absolute path (another machine)
 * finds the frames rendered by the first: keys are machine-independent. */
static void test_keys_across_machines(void)
{
    char cache_dir[300];
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", scratch);
    struct pfs_cache_opts co = {.dir = cache_dir, .budget_bytes = 256u << 20};
    struct pfs_cache *cache;
    pfs_error err;
    REQUIRE(pfs_cache_open(&co, &cache, &err) == 0);

    struct fixture a, b;
    open_engine(&a, dailies_a, cache, NULL, 1);
    struct pfs_frame *fa = frame(a.engine, dailies_a, FRAME);
    bool rendered = false;
    CHECK(pfs_engine_warm(a.engine, fa, &rendered, &err) == 0);
    CHECK(rendered);
    open_engine(&b, dailies_b, cache, NULL, 1);
    struct pfs_frame *fb = frame(b.engine, dailies_b, FRAME);
    CHECK(pfs_engine_warm(b.engine, fb, &rendered, &err) == 0);
    CHECKF(!rendered, "a copy of the dailies at another path re-rendered the frame");
    uint8_t *da, *db;
    size_t la, lb;
    CHECK(read_range(a.engine, fa, 0, 64u << 20, &da, &la) == 0);
    CHECK(read_range(b.engine, fb, 0, 64u << 20, &db, &lb) == 0);
    CHECK(la == lb && memcmp(da, db, la) == 0);
    free(da);
    free(db);
    pfs_frame_release(fa);
    pfs_frame_release(fb);
    close_engine(&a);
    close_engine(&b);
    pfs_cache_close(cache);
}

/* Same bytes whatever the thread count and read order; OpenCL matches the
 * C reference within the op's tolerance (checked on the decoded halves by
 * the integration test; here: same size, same header). */
static void test_determinism(void)
{
    uint8_t *ref[3] = {0};
    size_t reflen[3] = {0};
    const char *frames[3] = {"A001/A001C003.1001.exr", FRAME, "A001/A001C003.1008.exr"};
    for (int threads = 1; threads <= 4; threads *= 2) {
        struct fixture fx;
        open_engine(&fx, dailies_a, NULL, NULL, threads);
        for (int k = 0; k < 3; k++) {
            int i = threads == 1 ? k : 2 - k; /* reverse order on the second pass */
            struct pfs_frame *f = frame(fx.engine, dailies_a, frames[i]);
            uint8_t *d;
            size_t l;
            CHECK(read_range(fx.engine, f, 0, 64u << 20, &d, &l) == 0);
            if (!ref[i]) {
                ref[i] = d;
                reflen[i] = l;
            } else {
                CHECKF(l == reflen[i] && memcmp(d, ref[i], l) == 0,
                       "%s differs with %d threads", frames[i], threads);
                free(d);
            }
            pfs_frame_release(f);
        }
        close_engine(&fx);
    }
    for (int i = 0; i < 3; i++)
        free(ref[i]);
}

/* A frame table far smaller than the tree: frames are forgotten and built
 * again, sizes stay right, and frames still held (open files) survive. */
/* A demanded frame queues the next ones of the sequence; they render
 * without being asked and are then served without another render. */
static void test_readahead(void)
{
    struct pfs_ruleset *rules = load_rules(dailies_a);
    struct pfs_engine_opts o = {.dailies_root = dailies_a, .render_threads = 2,
                                .readahead = 2};
    struct pfs_engine *e;
    pfs_error err;
    REQUIRE(pfs_engine_open(&o, rules, &e, &err) == 0);
    struct pfs_frame *f = frame(e, dailies_a, "A001/A001C003.1005.exr");
    uint8_t *d;
    size_t l;
    CHECK(read_range(e, f, 0, 100, &d, &l) == 0);
    free(d);
    struct pfs_engine_counters c = {0};
    for (int i = 0; i < 500 && c.readahead_renders < 2; i++) {
        usleep(10000);
        pfs_engine_counters(e, &c);
    }
    CHECKF(c.readahead_renders == 2, "readahead rendered %llu frames, expected 1006 and 1007",
           (unsigned long long)c.readahead_renders);
    struct pfs_frame *next = frame(e, dailies_a, "A001/A001C003.1007.exr");
    uint64_t renders_before = c.renders;
    CHECK(read_range(e, next, 0, 100, &d, &l) == 0);
    free(d);
    pfs_engine_counters(e, &c);
    CHECKF(c.renders == renders_before, "frame 1007 was rendered again (%llu renders)",
           (unsigned long long)(c.renders - renders_before));
    CHECK(c.memory_hits >= 1);
    pfs_frame_release(next);
    pfs_frame_release(f);
    pfs_engine_close(e);
    pfs_ruleset_unref(rules);
}

static void test_frame_table_limit(void)
{
    struct pfs_ruleset *rules = load_rules(dailies_a);
    struct pfs_engine_opts o = {.dailies_root = dailies_a, .render_threads = 1,
                                .readahead = 0, .frame_table_limit = 3};
    struct pfs_engine *e;
    pfs_error err;
    REQUIRE(pfs_engine_open(&o, rules, &e, &err) == 0);
    struct pfs_frame *held = frame(e, dailies_a, FRAME);
    uint64_t first[8] = {0};
    for (int pass = 0; pass < 3; pass++) {
        for (int n = 0; n < 8; n++) {
            char rel[64], path[512];
            snprintf(rel, sizeof rel, "A001/A001C003.%d.exr", 1001 + n);
            snprintf(path, sizeof path, "%s/%s", dailies_a, rel);
            struct stat st;
            REQUIRE(lstat(path, &st) == 0);
            bool is_frame = false;
            uint64_t size = 0;
            CHECK(pfs_engine_stat(e, rel, &st, &is_frame, &size) == 0 && is_frame);
            if (pass == 0)
                first[n] = size;
            CHECKF(size == first[n], "frame %d: size %llu, first %llu", 1001 + n,
                   (unsigned long long)size, (unsigned long long)first[n]);
        }
    }
    uint8_t *d;
    size_t l;
    CHECK(read_range(e, held, 0, 64u << 20, &d, &l) == 0 && l == pfs_frame_size(held));
    free(d);
    pfs_frame_release(held);
    pfs_engine_close(e);
    pfs_ruleset_unref(rules);
}

static void test_opencl_matches_reference(void)
{
    struct pfs_cl *cl = NULL;
    struct pfs_cl_opts co = {.device = "auto"};
    pfs_error err;
    if (pfs_cl_open(&co, &cl, &err) != 0) {
        fprintf(stderr, "skipping OpenCL comparison: %s\n", err.msg);
        return;
    }
    struct fixture ref, dev;
    open_engine(&ref, dailies_a, NULL, NULL, 1);
    open_engine(&dev, dailies_a, NULL, cl, 1);
    struct pfs_frame *fr = frame(ref.engine, dailies_a, FRAME);
    struct pfs_frame *fd = frame(dev.engine, dailies_a, FRAME);
    CHECK(pfs_frame_size(fr) == pfs_frame_size(fd));
    uint8_t *a, *b;
    size_t la, lb;
    double t[3];
    CHECK(pfs_engine_render(ref.engine, fr, &a, &la, t, &err) == 0);
    CHECK(pfs_engine_render(dev.engine, fd, &b, &lb, t, &err) == 0);
    CHECK(la == lb);
    /* Half pixels: count the halves that differ by more than one ULP. */
    size_t differ = 0, total = 0;
    uint64_t pixels_at = la - (size_t)360 * (8 + 640 * 6);
    for (size_t i = pixels_at; i + 1 < la && la == lb; i += 2) {
        int ha = a[i] | a[i + 1] << 8, hb = b[i] | b[i + 1] << 8;
        total++;
        if (abs(ha - hb) > 1)
            differ++;
    }
    CHECKF(differ == 0, "%zu of %zu half values differ by more than one ULP", differ, total);
    free(a);
    free(b);
    pfs_frame_release(fr);
    pfs_frame_release(fd);
    close_engine(&ref);
    close_engine(&dev);
    pfs_cl_close(cl);
}

#define CLIP "A002/A002C007.mp4"
#define CLIP_DIR CLIP ".frames"

struct names {
    int n;
    char first[64], last[64];
};

static void collect_name(void *ud, const char *name)
{
    struct names *ns = ud;
    if (ns->n++ == 0)
        snprintf(ns->first, sizeof ns->first, "%s", name);
    snprintf(ns->last, sizeof ns->last, "%s", name);
}

static bool clip_frame_exists(struct pfs_engine *e, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s", CLIP_DIR, name);
    struct stat st;
    enum pfs_entry kind;
    bool is_frame = false;
    uint64_t size = 0;
    return pfs_engine_lookup(e, rel, &kind, &st) == 0 && kind == PFS_ENTRY_CLIP_FRAME &&
           pfs_engine_stat(e, rel, &st, &is_frame, &size) == 0 && is_frame;
}

/* Clip frames through the engine: the names of a clip's frames directory,
 * what lookups resolve to, exact sizes, renders of corrected and plain
 * frames, and the stored index and frames serving a copy of the dailies
 * at another path without opening its media. */
static void test_clip_frames(void)
{
    char cache_dir[300];
    snprintf(cache_dir, sizeof cache_dir, "%s/clipcache", scratch);
    struct pfs_cache_opts co = {.dir = cache_dir, .budget_bytes = 256u << 20};
    struct pfs_cache *cache;
    pfs_error err;
    REQUIRE(pfs_cache_open(&co, &cache, &err) == 0);
    struct fixture a;
    open_engine(&a, dailies_a, cache, NULL, 2);

    enum pfs_entry kind;
    struct stat st;
    CHECK(pfs_engine_lookup(a.engine, CLIP, &kind, &st) == 0 && kind == PFS_ENTRY_SOURCE);
    CHECK(pfs_engine_lookup(a.engine, CLIP_DIR, &kind, &st) == 0 &&
          kind == PFS_ENTRY_CLIP_DIR && S_ISREG(st.st_mode));
    CHECK(pfs_engine_lookup(a.engine, "A002/A002C099.mp4.frames", &kind, &st) == ENOENT);
    CHECK(pfs_engine_lookup(a.engine, "A001/A001_camera_report.txt.frames", &kind, &st) ==
          ENOENT);
    CHECK(pfs_engine_is_clip("A.MOV") && pfs_engine_is_clip("b.mxf") &&
          !pfs_engine_is_clip("c.exr") && !pfs_engine_is_clip("mov"));

    REQUIRE(pfs_engine_lookup(a.engine, CLIP, &kind, &st) == 0);
    struct names ns = {0};
    CHECK(pfs_engine_clip_list(a.engine, CLIP, &st, collect_name, &ns, &err) == 0);
    CHECKF(ns.n == 247 && !strcmp(ns.first, "A002C007.1001.exr") &&
               !strcmp(ns.last, "A002C007.1247.exr"),
           "%d frames, %s .. %s", ns.n, ns.first, ns.last);
    CHECK(clip_frame_exists(a.engine, "A002C007.1001.exr"));
    CHECK(clip_frame_exists(a.engine, "A002C007.1247.exr"));
    CHECK(!clip_frame_exists(a.engine, "A002C007.1248.exr"));
    CHECK(!clip_frame_exists(a.engine, "A002C007.1000.exr"));
    CHECK(!clip_frame_exists(a.engine, "A002C007.01001.exr"));
    CHECK(!clip_frame_exists(a.engine, "A002C008.1001.exr"));
    CHECK(!clip_frame_exists(a.engine, "A002C007.1001.EXR"));

    /* 1010 lies in the sample rule's frames (relight), 1100 does not. */
    const char *rels[2] = {CLIP_DIR "/A002C007.1010.exr", CLIP_DIR "/A002C007.1100.exr"};
    uint8_t *first[2];
    size_t first_len[2];
    for (int i = 0; i < 2; i++) {
        struct pfs_frame *f = frame(a.engine, dailies_a, rels[i]);
        REQUIRE(f);
        CHECK(read_range(a.engine, f, 0, 64u << 20, &first[i], &first_len[i]) == 0);
        CHECKF(first_len[i] == pfs_frame_size(f), "%s: read %zu, promised %llu", rels[i],
               first_len[i], (unsigned long long)pfs_frame_size(f));
        bool rendered = true;
        CHECK(pfs_engine_warm(a.engine, f, &rendered, &err) == 0);
        pfs_frame_release(f);
    }
    CHECK(memmem(first[0], first_len[0], "relight exposure=0.5", 20) != NULL);
    CHECK(memmem(first[1], first_len[1], "platefs/op1", 11) == NULL);
    close_engine(&a);

    /* Another machine's copy of the dailies, its clip's bytes zeroed with
     * size and mtime kept: the stored index lists it and the stored frames
     * serve it, so nothing of its media is read. */
    char clip_b[512];
    snprintf(clip_b, sizeof clip_b, "%s/%s", dailies_b, CLIP);
    struct stat before;
    REQUIRE(stat(clip_b, &before) == 0);
    sh("truncate -s 0 %s && truncate -s %lld %s && touch -d @%lld.%09ld %s", clip_b,
       (long long)before.st_size, clip_b, (long long)before.st_mtim.tv_sec,
       before.st_mtim.tv_nsec, clip_b);
    struct fixture b;
    open_engine(&b, dailies_b, cache, NULL, 2);
    REQUIRE(pfs_engine_lookup(b.engine, CLIP, &kind, &st) == 0);
    struct names nb = {0};
    CHECK(pfs_engine_clip_list(b.engine, CLIP, &st, collect_name, &nb, &err) == 0);
    CHECKF(nb.n == 247, "the zeroed clip lists %d frames", nb.n);
    for (int i = 0; i < 2; i++) {
        struct pfs_frame *f = frame(b.engine, dailies_b, rels[i]);
        REQUIRE(f);
        bool rendered = true;
        CHECK(pfs_engine_warm(b.engine, f, &rendered, &err) == 0);
        CHECKF(!rendered, "%s rendered again", rels[i]);
        uint8_t *d;
        size_t l;
        CHECK(read_range(b.engine, f, 0, 64u << 20, &d, &l) == 0);
        CHECK(l == first_len[i] && memcmp(d, first[i], l) == 0);
        free(d);
        pfs_frame_release(f);
        free(first[i]);
    }
    close_engine(&b);
    pfs_cache_close(cache);
}

int main(void)
{
    const char *src = getenv("PFS_SOURCE_DIR");
    REQUIRE(src);
    snprintf(scratch, sizeof scratch, "/tmp/pfs-test-engine.XXXXXX");
    REQUIRE(mkdtemp(scratch));
    snprintf(dailies_a, sizeof dailies_a, "%s/a/dailies", scratch);
    snprintf(dailies_b, sizeof dailies_b, "%s/elsewhere/b/dailies", scratch);
    sh("mkdir -p %s/a %s/elsewhere/b && cp -rp %s/samples/dailies %s && cp -rp %s/samples/dailies %s"
       " && cp -r %s/samples/rules %s/rules",
       scratch, scratch, src, dailies_a, src, dailies_b, src, scratch);

    RUN(test_sizes_and_passthrough);
    RUN(test_single_flight);
    RUN(test_keys_across_machines);
    RUN(test_determinism);
    RUN(test_readahead);
    RUN(test_frame_table_limit);
    RUN(test_opencl_matches_reference);
    RUN(test_clip_frames);

    sh("rm -rf %s", scratch);
    return CHECK_DONE();
}
