/*
 * test_cache.c - the LMDB frame store: round trips, ranges, budget and
 * eviction order, persistence, and the multi-process cases (shared counters,
 * concurrent writers, a read-only reader beside a writer, kill -9 during a
 * stream of puts, a failing write). Every value carries a checksum of itself
 * so that "readable" also means "intact". Child processes fork before they
 * open anything and leave with _exit, never touching a parent's handle.
 */
#include "cache/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define MiB (1024u * 1024u)

/* ---- helpers --------------------------------------------------------- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/pfs-cache-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != NULL);
    return strdup(tmpl);
}

static void rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            rmtree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static struct pfs_cache_key key_of(uint64_t id)
{
    struct pfs_cache_key k;
    for (int i = 0; i < 16; i++)
        k.b[i] = (uint8_t)(id >> (8 * (i % 8))) ^ (uint8_t)(i * 37);
    return k;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* A value of len >= 16 bytes whose last 8 bytes are the hash of the rest. */
static uint8_t *make_value(size_t len, uint64_t seed)
{
    uint8_t *v = malloc(len);
    REQUIRE(v);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    for (; i + 8 <= len - 8; i += 8) {
        uint64_t w = rng_next(&s);
        memcpy(v + i, &w, 8);
    }
    for (; i < len - 8; i++)
        v[i] = (uint8_t)rng_next(&s);
    uint64_t h = hash_bytes(v, len - 8);
    memcpy(v + len - 8, &h, 8);
    return v;
}

static int value_ok(const uint8_t *v, size_t len)
{
    if (len < 16)
        return 0;
    uint64_t h;
    memcpy(&h, v + len - 8, 8);
    return h == hash_bytes(v, len - 8);
}

static struct pfs_cache *open_cache(const char *dir, uint64_t budget, bool ro)
{
    struct pfs_cache_opts o = {.dir = dir, .budget_bytes = budget, .read_only = ro};
    struct pfs_cache *c = NULL;
    pfs_error err;
    int rc = pfs_cache_open(&o, &c, &err);
    if (rc)
        fprintf(stderr, "open %s: %s\n", dir, err.msg);
    REQUIRE(rc == 0);
    return c;
}

static int put(struct pfs_cache *c, uint64_t id, size_t len)
{
    uint8_t *v = make_value(len, id);
    struct pfs_cache_key k = key_of(id);
    pfs_error err;
    int rc = pfs_cache_put(c, &k, v, len, &err);
    if (rc && rc != EFBIG)
        fprintf(stderr, "put %llu (%zu bytes): %s\n", (unsigned long long)id, len, err.msg);
    free(v);
    return rc;
}

/* Reads the whole value in odd-sized pieces; 1 intact, 0 absent, -1 bad. */
static int check_entry(struct pfs_cache *c, uint64_t id, uint64_t *size_out)
{
    struct pfs_cache_key k = key_of(id);
    uint64_t size;
    int rc = pfs_cache_size(c, &k, &size, NULL);
    if (rc == ENOENT)
        return 0;
    if (rc)
        return -1;
    uint8_t *buf = malloc(size ? size : 1);
    REQUIRE(buf);
    uint64_t off = 0;
    while (off < size) {
        size_t nread;
        uint64_t total;
        rc = pfs_cache_read(c, &k, off, buf + off, 1000003, &nread, &total, NULL);
        if (rc == ENOENT) { /* evicted between the calls (concurrent writer) */
            free(buf);
            return 0;
        }
        if (rc || total != size || nread == 0) {
            free(buf);
            return -1;
        }
        off += nread;
    }
    int ok = value_ok(buf, size);
    free(buf);
    if (size_out)
        *size_out = size;
    return ok ? 1 : -1;
}

static struct pfs_cache_stats stats_of(struct pfs_cache *c)
{
    struct pfs_cache_stats st;
    pfs_error err;
    int rc = pfs_cache_stats(c, &st, &err);
    if (rc)
        fprintf(stderr, "stats: %s\n", err.msg);
    REQUIRE(rc == 0);
    return st;
}

/* Checks every id in [lo, hi): present ones intact; their sizes and count
 * match the store's own accounting. Returns the number present. */
static uint64_t verify_range(struct pfs_cache *c, uint64_t lo, uint64_t hi, uint64_t budget)
{
    uint64_t present = 0, bytes = 0;
    for (uint64_t id = lo; id < hi; id++) {
        uint64_t size = 0;
        int r = check_entry(c, id, &size);
        CHECKF(r >= 0, "entry %llu damaged", (unsigned long long)id);
        if (r == 1) {
            present++;
            bytes += size;
        }
    }
    struct pfs_cache_stats st = stats_of(c);
    CHECKF(st.entries == present, "entries %llu, found %llu",
           (unsigned long long)st.entries, (unsigned long long)present);
    CHECKF(st.value_bytes == bytes, "value_bytes %llu, found %llu",
           (unsigned long long)st.value_bytes, (unsigned long long)bytes);
    CHECK(st.value_bytes <= budget);
    CHECK(st.file_bytes <= st.map_bytes);
    return present;
}

static int wait_child(pid_t pid)
{
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- tests ----------------------------------------------------------- */

static void test_round_trip(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 64ull * MiB, false);
    size_t len = MiB + 13;
    uint8_t *v = make_value(len, 1);
    struct pfs_cache_key k = key_of(1);
    pfs_error err;
    REQUIRE(pfs_cache_put(c, &k, v, len, &err) == 0);

    uint64_t size = 0;
    CHECK(pfs_cache_size(c, &k, &size, NULL) == 0 && size == len);

    uint8_t *buf = malloc(len + 100);
    size_t nread = 0;
    uint64_t total = 0;
    CHECK(pfs_cache_read(c, &k, 0, buf, len + 100, &nread, &total, NULL) == 0);
    CHECK(nread == len && total == len && memcmp(buf, v, len) == 0);

    static const uint64_t offs[] = {1, 7, 4095, 4097, 65537, 999999};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        CHECK(pfs_cache_read(c, &k, offs[i], buf, 12345, &nread, &total, NULL) == 0);
        CHECK(nread == 12345 && memcmp(buf, v + offs[i], nread) == 0);
    }
    /* the end: short, then empty */
    CHECK(pfs_cache_read(c, &k, len - 3, buf, 100, &nread, &total, NULL) == 0);
    CHECK(nread == 3 && total == len && memcmp(buf, v + len - 3, 3) == 0);
    CHECK(pfs_cache_read(c, &k, len, buf, 100, &nread, &total, NULL) == 0);
    CHECK(nread == 0 && total == len);
    CHECK(pfs_cache_read(c, &k, len + 5000, buf, 100, &nread, &total, NULL) == 0);
    CHECK(nread == 0);

    struct pfs_cache_key miss = key_of(999);
    CHECK(pfs_cache_read(c, &miss, 0, buf, 100, &nread, &total, &err) == ENOENT);
    CHECK(err.code == ENOENT);
    CHECK(pfs_cache_read(c, &miss, 10, buf, 100, &nread, &total, NULL) == ENOENT);
    CHECK(pfs_cache_size(c, &miss, &size, NULL) == ENOENT);

    /* one hit (off 0), one miss (off 0); ranges at other offsets not counted */
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.counters[PFS_CACHE_HITS] == 1);
    CHECK(st.counters[PFS_CACHE_MISSES] == 1);
    CHECK(st.entries == 1 && st.value_bytes == len);
    CHECK(st.budget_bytes == 64ull * MiB);
    CHECK(st.map_bytes >= 80ull * MiB && st.map_bytes < 81ull * MiB);

    /* a zero-length value */
    struct pfs_cache_key z = key_of(2);
    CHECK(pfs_cache_put(c, &z, "", 0, NULL) == 0);
    CHECK(pfs_cache_read(c, &z, 0, buf, 10, &nread, &total, NULL) == 0);
    CHECK(nread == 0 && total == 0);

    free(buf);
    free(v);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_replace_remove(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 64ull * MiB, false);
    CHECK(put(c, 5, 1000) == 0);
    uint8_t *v2 = make_value(3 * MiB, 55);
    struct pfs_cache_key k = key_of(5);
    CHECK(pfs_cache_put(c, &k, v2, 3 * MiB, NULL) == 0);
    uint8_t *buf = malloc(3 * MiB);
    size_t nread;
    uint64_t total;
    CHECK(pfs_cache_read(c, &k, 0, buf, 3 * MiB, &nread, &total, NULL) == 0);
    CHECK(nread == 3 * MiB && memcmp(buf, v2, nread) == 0);
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.entries == 1 && st.value_bytes == 3 * MiB);

    pfs_error err;
    CHECK(pfs_cache_remove(c, &k, &err) == 0);
    CHECK(pfs_cache_read(c, &k, 0, buf, 10, &nread, &total, NULL) == ENOENT);
    CHECK(pfs_cache_remove(c, &k, NULL) == ENOENT);
    st = stats_of(c);
    CHECK(st.entries == 0 && st.value_bytes == 0);
    free(buf);
    free(v2);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

/* clear empties the frames but keeps counters and named records; the
 * store takes puts again at once; destroy removes a store that will not
 * open at all. */
static void test_clear_and_destroy(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 64ull * MiB, false);
    for (uint64_t id = 1; id <= 5; id++)
        CHECK(put(c, id, 2 * MiB) == 0);
    pfs_cache_count(c, PFS_CACHE_RENDERS, 5);
    CHECK(pfs_cache_meta_put(c, "clip", "x", 1, NULL) == 0);
    pfs_error err;
    CHECK(pfs_cache_clear(c, &err) == 0);
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.entries == 0 && st.value_bytes == 0);
    CHECK(st.counters[PFS_CACHE_RENDERS] == 5);
    CHECK(check_entry(c, 3, NULL) == 0);
    void *meta;
    size_t mlen;
    CHECK(pfs_cache_meta_get(c, "clip", &meta, &mlen, NULL) == 0 && mlen == 1);
    free(meta);
    CHECK(put(c, 9, 3 * MiB) == 0);
    CHECK(check_entry(c, 9, NULL) == 1);
    pfs_cache_close(c);

    char path[512];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f);
    for (int i = 0; i < 20000; i++)
        fputc(0x5a, f);
    fclose(f);
    struct pfs_cache_opts o = {.dir = dir, .budget_bytes = 64ull * MiB};
    c = NULL;
    CHECK(pfs_cache_open(&o, &c, &err) != 0);
    CHECK(strstr(err.msg, dir) != NULL);
    CHECK(pfs_cache_destroy(dir, &err) == 0);
    c = open_cache(dir, 64ull * MiB, false);
    CHECK(stats_of(c).entries == 0);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

/* merge copies what dst lacks, leaves what it has, and is idempotent. */
static void test_merge(void)
{
    char *a = tmpdir(), *b = tmpdir();
    struct pfs_cache *src = open_cache(a, 64ull * MiB, false);
    for (uint64_t id = 1; id <= 6; id++)
        CHECK(put(src, id, (size_t)id * 100000) == 0);
    pfs_cache_close(src);
    struct pfs_cache *dst = open_cache(b, 64ull * MiB, false);
    CHECK(put(dst, 2, 200000) == 0);
    CHECK(put(dst, 42, 5000) == 0);
    CHECK(pfs_cache_meta_put(dst, "clip-index/b", "dst's", 5, NULL) == 0);
    src = open_cache(a, 64ull * MiB, false);
    CHECK(pfs_cache_meta_put(src, "clip-index/a", "index a", 7, NULL) == 0);
    CHECK(pfs_cache_meta_put(src, "clip-index/b", "src's", 5, NULL) == 0);
    pfs_cache_close(src);
    src = open_cache(a, 0, true);
    uint64_t copied = 0, present = 0;
    pfs_error err;
    CHECK(pfs_cache_merge(dst, src, &copied, &present, &err) == 0);
    CHECKF(copied == 5 && present == 1, "copied %llu, present %llu",
           (unsigned long long)copied, (unsigned long long)present);
    for (uint64_t id = 1; id <= 6; id++)
        CHECKF(check_entry(dst, id, NULL) == 1, "entry %llu", (unsigned long long)id);
    CHECK(check_entry(dst, 42, NULL) == 1);
    /* Named records: the missing one copied, the present one kept. */
    void *rec = NULL;
    size_t rlen = 0;
    CHECK(pfs_cache_meta_get(dst, "clip-index/a", &rec, &rlen, NULL) == 0 && rlen == 7 &&
          memcmp(rec, "index a", 7) == 0);
    free(rec);
    CHECK(pfs_cache_meta_get(dst, "clip-index/b", &rec, &rlen, NULL) == 0 && rlen == 5 &&
          memcmp(rec, "dst's", 5) == 0);
    free(rec);
    CHECK(pfs_cache_merge(dst, src, &copied, &present, &err) == 0);
    CHECK(copied == 0 && present == 6);
    struct pfs_cache_stats st = stats_of(dst);
    CHECK(st.entries == 7);
    pfs_cache_close(src);
    pfs_cache_close(dst);
    rmtree(a);
    rmtree(b);
    free(a);
    free(b);
}

static void test_budget_churn(void)
{
    char *dir = tmpdir();
    const uint64_t budget = 64ull * MiB;
    struct pfs_cache *c = open_cache(dir, budget, false);
    uint64_t seed = 42, maxfile = 0;
    for (uint64_t id = 0; id < 100; id++) {
        size_t len = MiB + rng_next(&seed) % (7 * MiB);
        int rc = put(c, id, len);
        CHECKF(rc == 0, "put %llu: %d", (unsigned long long)id, rc);
        struct pfs_cache_stats st = stats_of(c);
        CHECKF(st.value_bytes <= budget, "after put %llu: %llu bytes",
               (unsigned long long)id, (unsigned long long)st.value_bytes);
        CHECKF(st.file_bytes <= st.map_bytes, "after put %llu: file %llu > map %llu",
               (unsigned long long)id, (unsigned long long)st.file_bytes,
               (unsigned long long)st.map_bytes);
        if (st.file_bytes > maxfile)
            maxfile = st.file_bytes;
        CHECK(check_entry(c, id, NULL) == 1); /* the newest is never evicted */
    }
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.counters[PFS_CACHE_EVICTIONS] > 0);
    fprintf(stderr, "  churn: 100 puts of 1-8 MB, budget 64 MB: file peaked at "
            "%.1f MB (map %.1f MB), %llu evictions, %.1f MB free in file\n",
            maxfile / 1048576.0, st.map_bytes / 1048576.0,
            (unsigned long long)st.counters[PFS_CACHE_EVICTIONS],
            st.free_bytes / 1048576.0);
    verify_range(c, 0, 100, budget);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_lru_order(void)
{
    char *dir = tmpdir();
    const size_t sz = 3 * MiB / 2;
    struct pfs_cache *c = open_cache(dir, 16ull * MiB, false);
    for (uint64_t id = 0; id < 8; id++)
        REQUIRE(put(c, id, sz) == 0);
    uint8_t buf[64];
    size_t nread;
    uint64_t total;
    struct pfs_cache_key k0 = key_of(0), k1 = key_of(1), k4 = key_of(4);
    CHECK(pfs_cache_read(c, &k0, 0, buf, sizeof buf, &nread, &total, NULL) == 0);
    CHECK(pfs_cache_read(c, &k1, 100, buf, sizeof buf, &nread, &total, NULL) == 0);
    CHECK(pfs_cache_flush(c, NULL) == 0);
    for (uint64_t id = 8; id < 12; id++)
        REQUIRE(put(c, id, sz) == 0);
    /* 12 x 1.5 MB into 16 MB: the two least recent (2, 3) went, not 0, 1 */
    CHECK(check_entry(c, 0, NULL) == 1);
    CHECK(check_entry(c, 1, NULL) == 1);
    CHECK(check_entry(c, 2, NULL) == 0);
    CHECK(check_entry(c, 3, NULL) == 0);
    for (uint64_t id = 4; id < 12; id++)
        CHECK(check_entry(c, id, NULL) == 1);

    /* Without an explicit flush: a put that evicts applies pending reads
     * first. check_entry read everything above; touch 4 last. */
    CHECK(pfs_cache_read(c, &k4, 0, buf, sizeof buf, &nread, &total, NULL) == 0);
    REQUIRE(put(c, 12, sz) == 0);
    CHECK(check_entry(c, 4, NULL) == 1);
    CHECK(check_entry(c, 0, NULL) == 0); /* the least recent read above */
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_efbig(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 4ull * MiB, false);
    CHECK(put(c, 3, 4 * MiB) == 0); /* exactly the budget fits */
    CHECK(put(c, 1, MiB) == 0);     /* and is evicted for this */
    CHECK(check_entry(c, 3, NULL) == 0);
    pfs_error err;
    uint8_t *v = make_value(4 * MiB + 1, 2);
    struct pfs_cache_key k = key_of(2);
    CHECK(pfs_cache_put(c, &k, v, 4 * MiB + 1, &err) == EFBIG);
    CHECK(strstr(err.msg, dir) != NULL);
    free(v);
    CHECK(check_entry(c, 1, NULL) == 1); /* nothing evicted for it */
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_persistence_and_meta(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 32ull * MiB, false);
    for (uint64_t id = 0; id < 5; id++)
        REQUIRE(put(c, id, 100000 + id * 777) == 0);
    void *data = NULL;
    size_t len = 0;
    CHECK(pfs_cache_meta_get(c, "clip/A001", &data, &len, NULL) == ENOENT);
    CHECK(pfs_cache_meta_put(c, "clip/A001", "frames=8", 8, NULL) == 0);
    CHECK(pfs_cache_meta_put(c, "clip/A001", "frames=120", 10, NULL) == 0);
    uint8_t *big = make_value(300000, 7);
    CHECK(pfs_cache_meta_put(c, "index", big, 300000, NULL) == 0);
    pfs_cache_count(c, PFS_CACHE_RENDERS, 3);
    pfs_cache_close(c);

    c = open_cache(dir, 0, false); /* budget 0: the stored one */
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.budget_bytes == 32ull * MiB);
    CHECK(st.entries == 5);
    CHECK(st.counters[PFS_CACHE_RENDERS] == 3);
    for (uint64_t id = 0; id < 5; id++)
        CHECK(check_entry(c, id, NULL) == 1);
    CHECK(pfs_cache_meta_get(c, "clip/A001", &data, &len, NULL) == 0);
    CHECK(len == 10 && memcmp(data, "frames=120", 10) == 0);
    free(data);
    CHECK(pfs_cache_meta_get(c, "index", &data, &len, NULL) == 0);
    CHECK(len == 300000 && memcmp(data, big, len) == 0);
    free(data);
    free(big);
    CHECK(pfs_cache_meta_put(c, "", "x", 1, NULL) == EINVAL);
    pfs_cache_close(c);

    /* a smaller budget at reopen evicts at once */
    c = open_cache(dir, 250000, false);
    st = stats_of(c);
    CHECK(st.value_bytes <= 250000 && st.entries >= 1 && st.budget_bytes == 250000);
    CHECK(check_entry(c, 4, NULL) == 1);
    CHECK(pfs_cache_meta_get(c, "index", &data, &len, NULL) == 0); /* never evicted */
    free(data);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_counters_shared(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 16ull * MiB, false);
    pfs_cache_count(c, PFS_CACHE_RENDERS, 2);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct pfs_cache *cc = open_cache(dir, 16ull * MiB, false);
        pfs_cache_count(cc, PFS_CACHE_RENDERS, 5);
        uint8_t b[8];
        size_t n;
        uint64_t t;
        struct pfs_cache_key k = key_of(77);
        pfs_cache_read(cc, &k, 0, b, sizeof b, &n, &t, NULL); /* a miss */
        pfs_cache_close(cc);
        _exit(0);
    }
    CHECK(wait_child(pid) == 0);
    struct pfs_cache_stats st = stats_of(c);
    CHECK(st.counters[PFS_CACHE_RENDERS] == 7);
    CHECK(st.counters[PFS_CACHE_MISSES] == 1);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

/* Puts values in [base, base + n) until done or killed. */
static void writer_child(const char *dir, uint64_t budget, uint64_t base, uint64_t n,
                         size_t minlen, size_t maxlen)
{
    struct pfs_cache *c = open_cache(dir, budget, false);
    uint64_t seed = base * 7 + 1;
    int failed = 0;
    for (uint64_t id = base; id < base + n; id++) {
        size_t len = minlen + rng_next(&seed) % (maxlen - minlen);
        if (put(c, id, len))
            failed = 1;
    }
    pfs_cache_close(c);
    _exit(failed);
}

static void test_kill9(void)
{
    char *dir = tmpdir();
    const uint64_t budget = 16ull * MiB, per_round = 2000;
    uint64_t seed = 9;
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            writer_child(dir, budget, round * per_round, per_round, 64 * 1024, 2 * MiB);
        struct timespec ts = {0, (long)(100 + rng_next(&seed) % 300) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        CHECK(wait_child(pid) == 128 + SIGKILL);
        struct pfs_cache *c = open_cache(dir, budget, false);
        uint64_t present = verify_range(c, 0, (round + 1) * per_round, budget);
        CHECK(present > 0);
        pfs_cache_close(c);
    }
    rmtree(dir);
    free(dir);
}

static void test_two_writers(void)
{
    char *dir = tmpdir();
    const uint64_t budget = 24ull * MiB;
    pid_t a = fork();
    REQUIRE(a >= 0);
    if (a == 0)
        writer_child(dir, budget, 0, 40, 256 * 1024, 3 * MiB);
    pid_t b = fork();
    REQUIRE(b >= 0);
    if (b == 0)
        writer_child(dir, budget, 1000, 40, 256 * 1024, 3 * MiB);
    CHECK(wait_child(a) == 0);
    CHECK(wait_child(b) == 0);
    struct pfs_cache *c = open_cache(dir, budget, false);
    uint64_t present = verify_range(c, 0, 1040, budget);
    CHECK(present >= 8);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

static void test_read_only_beside_writer(void)
{
    char *dir = tmpdir();
    struct pfs_cache *c = open_cache(dir, 8ull * MiB, false);
    REQUIRE(put(c, 0, 500000) == 0);
    pfs_cache_close(c);

    /* The writer's larger budget grows the map under the reader, which
     * must recover from MDB_MAP_RESIZED on its own. */
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        writer_child(dir, 48ull * MiB, 1, 60, 256 * 1024, 2 * MiB);
    struct pfs_cache *ro = open_cache(dir, 0, true);
    int loops = 0, status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        struct pfs_cache_stats st = stats_of(ro);
        CHECK(st.entries >= 1);
        CHECK(st.value_bytes <= st.budget_bytes);
        CHECK(check_entry(ro, 0, NULL) >= 0);
        CHECK(check_entry(ro, 1 + (uint64_t)loops % 60, NULL) >= 0);
        loops++;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct pfs_cache_stats st = stats_of(ro);
    CHECK(st.budget_bytes == 48ull * MiB);
    CHECK(st.entries >= 10);
    pfs_error err;
    CHECK(pfs_cache_put(ro, &(struct pfs_cache_key){{0}}, "x", 1, &err) == EROFS);
    CHECK(pfs_cache_flush(ro, NULL) == 0);
    fprintf(stderr, "  read-only: %d stats+reads beside the writer\n", loops);
    CHECK(loops > 0);
    pfs_cache_close(ro);
    rmtree(dir);
    free(dir);
}

static void test_errors(void)
{
    char *dir = tmpdir();
    char path[4200];
    pfs_error err;
    struct pfs_cache *c = NULL;

    /* a directory that cannot be created */
    snprintf(path, sizeof path, "%s/file", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    close(fd);
    snprintf(path, sizeof path, "%s/file/cache", dir);
    struct pfs_cache_opts o = {.dir = path, .budget_bytes = MiB};
    CHECK(pfs_cache_open(&o, &c, &err) != 0 && c == NULL);
    CHECK(strstr(err.msg, path) != NULL);

    /* read-only open of a missing directory */
    snprintf(path, sizeof path, "%s/missing", dir);
    o = (struct pfs_cache_opts){.dir = path, .read_only = true};
    CHECK(pfs_cache_open(&o, &c, &err) == ENOENT);
    CHECK(strstr(err.msg, path) != NULL);

    /* garbage in data.mdb: EIO suggesting `platefs cache clear` */
    snprintf(path, sizeof path, "%s/garbage", dir);
    REQUIRE(mkdir(path, 0755) == 0);
    char file[4300];
    snprintf(file, sizeof file, "%s/data.mdb", path);
    fd = open(file, O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    uint8_t junk[16384];
    uint64_t s = 5;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rng_next(&s);
    REQUIRE(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    o = (struct pfs_cache_opts){.dir = path, .budget_bytes = MiB};
    CHECK(pfs_cache_open(&o, &c, &err) == EIO);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "platefs cache clear"));

    /* another format version: patch the stored "format" record */
    snprintf(path, sizeof path, "%s/oldformat", dir);
    c = open_cache(path, MiB, false);
    pfs_cache_close(c);
    snprintf(file, sizeof file, "%s/data.mdb", path);
    FILE *f = fopen(file, "r+b");
    REQUIRE(f);
    static uint8_t img[1 << 20];
    size_t n = fread(img, 1, sizeof img, f);
    static const uint8_t pat[] = {'f', 'o', 'r', 'm', 'a', 't', 1, 0, 0, 0, 0, 0, 0, 0};
    int patched = 0;
    for (size_t i = 0; i + sizeof pat <= n; i++)
        if (!memcmp(img + i, pat, sizeof pat)) {
            img[i + 6] = 9;
            patched++;
        }
    REQUIRE(patched > 0);
    rewind(f);
    REQUIRE(fwrite(img, 1, n, f) == n);
    fclose(f);
    o = (struct pfs_cache_opts){.dir = path, .budget_bytes = MiB};
    CHECK(pfs_cache_open(&o, &c, &err) == EINVAL);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "format 9"));

    rmtree(dir);
    free(dir);
}

struct reader_arg {
    struct pfs_cache *c;
    _Atomic int *stop;
    int bad, hits;
};

static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    uint64_t seed = (uint64_t)(uintptr_t)a | 1;
    while (!atomic_load(a->stop)) {
        int r = check_entry(a->c, rng_next(&seed) % 80, NULL);
        if (r < 0)
            a->bad++;
        a->hits += r == 1;
    }
    return NULL;
}

/* Threads reading (pooled read transactions, access times recorded) while
 * the main thread puts and evicts in the same handle. Keys are never
 * replaced here: a read spread over several calls is only consistent for a
 * key whose bytes never change, which is what the engine's keys guarantee. */
static void test_threads(void)
{
    char *dir = tmpdir();
    const uint64_t budget = 24ull * MiB;
    struct pfs_cache *c = open_cache(dir, budget, false);
    _Atomic int stop = 0;
    struct reader_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct reader_arg){.c = c, .stop = &stop};
        REQUIRE(pthread_create(&th[i], NULL, reader_thread, &args[i]) == 0);
    }
    uint64_t seed = 3;
    for (uint64_t i = 0; i < 80; i++)
        CHECK(put(c, i, 256 * 1024 + rng_next(&seed) % (2 * MiB)) == 0);
    atomic_store(&stop, 1);
    int hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].bad == 0);
        hits += args[i].hits;
    }
    CHECK(hits > 0);
    verify_range(c, 0, 80, budget);
    pfs_cache_close(c);
    rmtree(dir);
    free(dir);
}

/* A commit whose writes fail (RLIMIT_FSIZE stands in for a full disk) fails
 * the put and leaves the store as it was. In a child: limits are per process. */
static void test_failed_write(void)
{
    char *dir = tmpdir();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct pfs_cache *c = open_cache(dir, 64ull * MiB, false);
        for (uint64_t id = 0; id < 4; id++)
            REQUIRE(put(c, id, MiB) == 0);
        struct pfs_cache_stats st = stats_of(c);
        struct rlimit old, lim;
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = st.file_bytes + 64 * 1024;
        REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        uint8_t *v = make_value(8 * MiB, 100);
        struct pfs_cache_key k = key_of(100);
        pfs_error err;
        int rc = pfs_cache_put(c, &k, v, 8 * MiB, &err);
        REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
        CHECK(rc != 0);
        if (rc)
            fprintf(stderr, "  failed write reported as: %s\n", err.msg);
        CHECK(rc == 0 || strstr(err.msg, dir) != NULL);
        for (uint64_t id = 0; id < 4; id++)
            CHECK(check_entry(c, id, NULL) == 1);
        CHECK(check_entry(c, 100, NULL) == 0);
        rc = pfs_cache_put(c, &k, v, 8 * MiB, &err);
        CHECKF(rc == 0, "%s", err.msg);
        CHECK(check_entry(c, 100, NULL) == 1);
        free(v);
        pfs_cache_close(c);
        c = open_cache(dir, 64ull * MiB, false);
        CHECK(verify_range(c, 0, 101, 64ull * MiB) == 5);
        pfs_cache_close(c);
        _exit(check_failures != 0);
    }
    int st = wait_child(pid);
    CHECKF(st == 0, "child status %d", st);
    rmtree(dir);
    free(dir);
}

int main(void)
{
    RUN(test_round_trip);
    RUN(test_replace_remove);
    RUN(test_clear_and_destroy);
    RUN(test_merge);
    RUN(test_budget_churn);
    RUN(test_lru_order);
    RUN(test_efbig);
    RUN(test_persistence_and_meta);
    RUN(test_counters_shared);
    RUN(test_threads);
    RUN(test_kill9);
    RUN(test_two_writers);
    RUN(test_read_only_beside_writer);
    RUN(test_errors);
    RUN(test_failed_write);
    return CHECK_DONE();
}
