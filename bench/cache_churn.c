/*
 * cache_churn.c - how big data.mdb grows against the budget when the cache
 * churns, and what puts and reads cost, side by side with a reference.
 *
 * Each scenario opens a fresh store, puts PUTS_PER_BUDGET x budget worth of
 * frames and records the file size after every put:
 *   seq-fixed  equal frame sizes (a clip of one format), no reads: eviction
 *              is oldest first;
 *   seq-var    frame sizes drawn from [min, max], no reads;
 *   rand-var   before each put one random stored frame is read, so the
 *              eviction order is random in the file;
 *   readers    like seq-var with 4 threads reading whole frames all along
 *              (read transactions pin pages that puts would reuse).
 * Printed per scenario: peak and final file size as % of the budget (the
 * map is budget + PFS_CACHE_MARGIN_PCT %), pages on the free list at the end,
 * failed puts, put throughput, and full-frame read throughput out of the
 * cache against memcpy of the same bytes from a malloc'd buffer.
 *
 * Usage: cache_churn [DIR [BUDGET_MB [MIN_MB MAX_MB]]]
 *   (default /tmp, 512 MB, frames 8-40 MB). Numbers, never asserts.
 */
#include "cache/cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PUTS_PER_BUDGET 4
#define MB (1024.0 * 1024.0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static struct pfs_cache_key key_of(uint64_t id)
{
    struct pfs_cache_key k = {{0}};
    memcpy(k.b, &id, sizeof id);
    k.b[15] = 0x5a;
    return k;
}

struct reader {
    struct pfs_cache *c;
    _Atomic uint64_t *next_id;
    _Atomic int *stop;
    uint8_t *buf;
    size_t cap;
    uint64_t bytes;
};

/* Reads whole frames in 1 MiB requests, as the FUSE layer would. */
static uint64_t read_frame(struct pfs_cache *c, uint64_t id, uint8_t *buf, size_t cap)
{
    struct pfs_cache_key k = key_of(id);
    uint64_t off = 0, total = 0;
    for (;;) {
        size_t n = 0, want = cap - off < (1u << 20) ? cap - off : (1u << 20);
        if (want == 0 || pfs_cache_read(c, &k, off, buf + off, want, &n, &total, NULL))
            break;
        off += n;
        if (n == 0 || off >= total)
            break;
    }
    return off;
}

static void *reader_main(void *p)
{
    struct reader *r = p;
    uint64_t s = (uint64_t)(uintptr_t)p | 1;
    while (!atomic_load(r->stop)) {
        uint64_t hi = atomic_load(r->next_id);
        if (hi == 0)
            continue;
        r->bytes += read_frame(r->c, rng(&s) % hi, r->buf, r->cap);
    }
    return NULL;
}

struct scenario {
    const char *name;
    int fixed, random_reads, readers;
};

static void run(const char *base, uint64_t budget, size_t minlen, size_t maxlen,
                const struct scenario *sc, const uint8_t *src)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/pfs-churn-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        exit(1);
    }
    struct pfs_cache_opts o = {.dir = dir, .budget_bytes = budget};
    struct pfs_cache *c;
    pfs_error err;
    if (pfs_cache_open(&o, &c, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    _Atomic uint64_t next_id = 0;
    _Atomic int stop = 0;
    struct reader rd[4];
    pthread_t th[4];
    for (int i = 0; i < sc->readers; i++) {
        rd[i] = (struct reader){c, &next_id, &stop, malloc(maxlen), maxlen, 0};
        pthread_create(&th[i], NULL, reader_main, &rd[i]);
    }
    uint8_t *buf = malloc(maxlen);
    uint64_t seed = 12345, written = 0, peak = 0, failed = 0, id = 0;
    double t0 = now_s(), tput = 0;
    while (written < PUTS_PER_BUDGET * budget) {
        size_t len = sc->fixed ? maxlen : minlen + rng(&seed) % (maxlen - minlen + 1);
        if (sc->random_reads && id)
            read_frame(c, rng(&seed) % id, buf, maxlen);
        struct pfs_cache_key k = key_of(id);
        double t = now_s();
        if (pfs_cache_put(c, &k, src, len, &err)) {
            failed++;
            if (failed == 1)
                fprintf(stderr, "  %s: first failed put: %s\n", sc->name, err.msg);
        }
        tput += now_s() - t;
        written += len;
        atomic_store(&next_id, ++id);
        struct pfs_cache_stats st;
        if (pfs_cache_stats(c, &st, NULL) == 0 && st.file_bytes > peak)
            peak = st.file_bytes;
    }
    double elapsed = now_s() - t0;
    atomic_store(&stop, 1);
    uint64_t rbytes = 0;
    for (int i = 0; i < sc->readers; i++) {
        pthread_join(th[i], NULL);
        rbytes += rd[i].bytes;
        free(rd[i].buf);
    }
    struct pfs_cache_stats st;
    pfs_cache_stats(c, &st, NULL);

    /* Full-frame reads out of the cache (warm) vs memcpy of the same size. */
    uint64_t hi = id, got = 0;
    double t = now_s();
    for (uint64_t i = hi > 200 ? hi - 200 : 0; i < hi; i++)
        got += read_frame(c, i, buf, maxlen);
    double tread = now_s() - t;
    uint8_t *dst = malloc(maxlen);
    memset(dst, 0, maxlen); /* fault the pages in outside the timing */
    t = now_s();
    uint64_t copied = 0;
    while (copied < got || copied == 0) {
        size_t len = maxlen;
        for (size_t off = 0; off < len; off += 1u << 20)
            memcpy(dst + off, src + off, len - off < (1u << 20) ? len - off : (1u << 20));
        copied += len;
    }
    double tcopy = now_s() - t;
    free(dst);

    printf("%-10s puts %4llu  file peak %5.1f %%  end %5.1f %%  free-list %5.1f %%  "
           "map %5.1f %%  failed %llu  puts %6.0f MB/s (%.1f s)  "
           "reads %6.0f MB/s vs memcpy %6.0f MB/s (x%.2f)",
           sc->name, (unsigned long long)id, 100.0 * (double)peak / (double)budget,
           100.0 * (double)st.file_bytes / (double)budget,
           100.0 * (double)st.free_bytes / (double)budget,
           100.0 * (double)st.map_bytes / (double)budget, (unsigned long long)failed,
           (double)written / MB / tput, elapsed, (double)got / MB / tread,
           (double)copied / MB / tcopy, (tread > 0 && tcopy > 0)
               ? ((double)got / tread) / ((double)copied / tcopy) : 0.0);
    if (sc->readers)
        printf("  concurrent reads %.0f MB", (double)rbytes / MB);
    printf("\n");
    fflush(stdout);
    free(buf);
    pfs_cache_close(c);
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    uint64_t budget = (uint64_t)(argc > 2 ? atof(argv[2]) : 512) * (1u << 20);
    size_t minlen = (size_t)((argc > 3 ? atof(argv[3]) : 8) * MB);
    size_t maxlen = (size_t)((argc > 4 ? atof(argv[4]) : 40) * MB);
    if (maxlen < minlen || maxlen > budget) {
        fprintf(stderr, "usage: cache_churn [DIR [BUDGET_MB [MIN_MB MAX_MB]]]\n");
        return 2;
    }
    uint8_t *src = malloc(maxlen);
    uint64_t s = 7;
    for (size_t i = 0; i < maxlen; i++)
        src[i] = (uint8_t)rng(&s);
    printf("budget %.0f MB, frames %.0f-%.0f MB, %d x budget written per scenario, "
           "margin %d %%\n", (double)budget / MB, (double)minlen / MB,
           (double)maxlen / MB, PUTS_PER_BUDGET, PFS_CACHE_MARGIN_PCT);
    static const struct scenario scs[] = {
        {"seq-fixed", 1, 0, 0},
        {"seq-var", 0, 0, 0},
        {"rand-var", 0, 1, 0},
        {"readers", 0, 0, 4},
    };
    for (size_t i = 0; i < sizeof scs / sizeof scs[0]; i++)
        run(base, budget, minlen, maxlen, &scs[i], src);
    free(src);
    return 0;
}
