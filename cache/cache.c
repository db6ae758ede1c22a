/*
 * cache.c - the rendered-frame store: one LMDB environment per directory.
 *
 * This is the only file that includes lmdb.h, after the pattern of Knot
 * Resolver's cdb_lmdb.c: environment flags, map size, recovery from
 * MDB_MAP_RESIZED / MDB_READERS_FULL and the translation of LMDB's errors
 * into errno values with a sentence all live here. docs/cache.md explains
 * the design; in short:
 *
 *   - Named databases: "frames" (key16 -> EXR bytes), "entries" (key16 ->
 *     {size, atime}), "lru" (be64 atime . key16 -> empty, so a cursor walks
 *     least recently used first), "counters" (name -> u64), "meta" (name ->
 *     bytes for pfs_cache_meta_*) and "info" (format, budget, value_bytes).
 *     Every change to frames also changes entries, lru and info.value_bytes
 *     in the same transaction, so they can never disagree.
 *   - The map is budget + PFS_CACHE_MARGIN_PCT %; LMDB never grows data.mdb
 *     past the map, so the margin is the bound on fragmentation. Pages freed
 *     in a transaction are only reusable by later ones, so a put first evicts
 *     in committed transactions of its own and then stores the value in a
 *     second; on MDB_MAP_FULL it evicts down to 60 % and tries once more.
 *   - Reads never write: their access times go to an in-memory table that
 *     puts, pfs_cache_flush and close write out in one transaction; counters
 *     are per-process atomics added to "counters" at the same time.
 *   - Threads: read transactions are short (one per call) and pooled in the
 *     reset state (MDB_NOTLS, reset/renew), so no reader pins old pages
 *     between calls. Write transactions go one at a time through wmutex.
 *     maplock is held shared by every live transaction and exclusively while
 *     the map is re-sized, which LMDB requires to happen with no transaction
 *     in flight.
 *   - Processes: LMDB's lock file serialises writers across processes and
 *     robust mutexes survive kill -9; stale reader slots are cleared at open.
 *     No env is used across fork: a child that inherited a handle must not
 *     use it, and pfs_cache_close in such a child only leaks it.
 */
#include "cache/cache.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <limits.h>
#include <unistd.h>

#include "util/log.h"

#define FORMAT_VERSION 1u
#define MAX_READERS 512
#define POOL_MAX 64
/* Entries evicted per write transaction: keeps each one short and its dirty
 * page list small, so other processes' writers are not starved. */
#define EVICT_BATCH 256
#define FLUSH_INTERVAL_NS (2ull * 1000000000ull)
#define FLUSH_PENDING_MAX 1024
#define ATIME_TAB_MAX (1u << 20)
#define FRAG_RETRY_PCT 60
#define MAX_PUT_ATTEMPTS 8

enum { DBI_FRAMES, DBI_ENTRIES, DBI_LRU, DBI_COUNTERS, DBI_META, DBI_INFO, NDBI };
static const char *const dbi_names[NDBI] = {"frames", "entries", "lru",
                                            "counters", "meta", "info"};
static const char *const counter_names[PFS_CACHE_NCOUNTERS] = {
    [PFS_CACHE_HITS] = "hits",
    [PFS_CACHE_MISSES] = "misses",
    [PFS_CACHE_RENDERS] = "renders",
    [PFS_CACHE_EVICTIONS] = "evictions",
};

/* Value of "entries"; native byte order, like the rest of an LMDB file. */
struct entry_rec {
    uint64_t size;
    uint64_t atime; /* ns since the epoch; also the first half of the lru key */
};

struct atime_slot {
    struct pfs_cache_key key;
    uint64_t t; /* 0: empty slot */
};

/* Access times and counter deltas taken out of memory for one flush, so
 * they can be put back if the transaction fails. */
struct flush_batch {
    struct atime_slot *slots;
    size_t cap;
    uint64_t counts[PFS_CACHE_NCOUNTERS];
};

struct pfs_cache {
    MDB_env *env;
    MDB_dbi dbi[NDBI];
    char *dir;
    bool read_only;
    pid_t pid;

    pthread_rwlock_t maplock;
    pthread_mutex_t wmutex;
    uint64_t last_flush_mono; /* under wmutex */

    pthread_mutex_t pool_mu;
    MDB_txn *pool[POOL_MAX];
    int npool;

    pthread_mutex_t at_mu;
    struct atime_slot *at;
    size_t at_cap, at_n;

    _Atomic uint64_t pending[PFS_CACHE_NCOUNTERS];
    _Atomic uint64_t last_tick;
};

/* ---- errors ---------------------------------------------------------- */

static int lmdb_error(const char *dir, int rc, pfs_error *err, const char *what)
{
    switch (rc) {
    case MDB_NOTFOUND:
        return pfs_error_set(err, ENOENT, "%s: %s: not found", dir, what);
    case MDB_MAP_FULL:
        return pfs_error_set(err, ENOSPC,
                             "%s: %s: the cache map is full (fragmented); "
                             "a larger budget or `platefs cache clear` helps",
                             dir, what);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return pfs_error_set(err, EIO,
                             "%s: %s: the cache is damaged (%s); run "
                             "`platefs cache clear` or remove the directory",
                             dir, what, mdb_strerror(rc));
    case MDB_PANIC:
        return pfs_error_set(err, EIO,
                             "%s: %s: a write to the cache failed earlier and this "
                             "process must reopen it (%s); if it persists run "
                             "`platefs cache clear`", dir, what, mdb_strerror(rc));
    case MDB_READERS_FULL:
        return pfs_error_set(err, EAGAIN, "%s: %s: too many readers (%s)", dir,
                             what, mdb_strerror(rc));
    case ENOSPC:
        return pfs_error_set(err, ENOSPC, "%s: %s: no space left on the disk",
                             dir, what);
    default:
        if (rc > 0)
            return pfs_error_set(err, rc, "%s: %s: %s", dir, what, strerror(rc));
        return pfs_error_set(err, EIO, "%s: %s: %s", dir, what, mdb_strerror(rc));
    }
}

/* A commit failed: LMDB reports a short write as EIO, so a full disk is
 * told apart by looking at the free space. The transaction is aborted and
 * the meta page untouched, so the store is as before the put. */
static int commit_error(const char *dir, int rc, uint64_t len, pfs_error *err,
                        const char *what)
{
    struct statvfs sv;
    if ((rc == EIO || rc == ENOSPC || rc == EFBIG) && statvfs(dir, &sv) == 0 &&
        (uint64_t)sv.f_bavail * sv.f_frsize < len + (16u << 20))
        return pfs_error_set(err, ENOSPC,
                             "%s: %s: the disk is full (%llu bytes free); "
                             "nothing was stored", dir, what,
                             (unsigned long long)sv.f_bavail * sv.f_frsize);
    if (rc > 0)
        return pfs_error_set(err, rc, "%s: %s: writing data.mdb failed (%s); "
                             "nothing was stored", dir, what, strerror(rc));
    return lmdb_error(dir, rc, err, what);
}

/* ---- small helpers --------------------------------------------------- */

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wall-clock time, strictly increasing within the process so that two
 * accesses in the same nanosecond still have an order. Wall clock (not
 * monotonic) because access times from several processes are compared. */
static uint64_t tick(struct pfs_cache *c)
{
    uint64_t t = clock_ns(CLOCK_REALTIME);
    uint64_t prev = atomic_load(&c->last_tick);
    do {
        if (t <= prev)
            t = prev + 1;
    } while (!atomic_compare_exchange_weak(&c->last_tick, &prev, t));
    return t;
}

static uint64_t map_for_budget(uint64_t budget)
{
    uint64_t psize = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t m = budget + budget / 100 * PFS_CACHE_MARGIN_PCT +
                 budget % 100 * PFS_CACHE_MARGIN_PCT / 100;
    return (m + psize - 1) / psize * psize;
}

static void lru_key(uint8_t out[24], uint64_t atime, const struct pfs_cache_key *key)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(atime >> (56 - 8 * i));
    memcpy(out + 8, key->b, 16);
}

static MDB_val kval(const struct pfs_cache_key *key)
{
    return (MDB_val){.mv_size = 16, .mv_data = (void *)key->b};
}

static int info_get(struct pfs_cache *c, MDB_txn *txn, const char *name, uint64_t *v)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, c->dbi[DBI_INFO], &k, &d);
    if (rc == MDB_NOTFOUND) {
        *v = 0;
        return 0;
    }
    if (rc)
        return rc;
    if (d.mv_size != sizeof *v)
        return MDB_CORRUPTED;
    memcpy(v, d.mv_data, sizeof *v);
    return 0;
}

static int u64_put(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
    MDB_val k = {strlen(name), (void *)name}, d = {sizeof v, &v};
    return mdb_put(txn, dbi, &k, &d, 0);
}

static int counter_add(struct pfs_cache *c, MDB_txn *txn, int which, uint64_t n)
{
    uint64_t v = 0;
    const char *name = counter_names[which];
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, c->dbi[DBI_COUNTERS], &k, &d);
    if (rc == 0 && d.mv_size == sizeof v)
        memcpy(&v, d.mv_data, sizeof v);
    else if (rc && rc != MDB_NOTFOUND)
        return rc;
    return u64_put(txn, c->dbi[DBI_COUNTERS], name, v + n);
}

static int entry_get(struct pfs_cache *c, MDB_txn *txn, const struct pfs_cache_key *key,
                     struct entry_rec *e)
{
    MDB_val k = kval(key), d;
    int rc = mdb_get(txn, c->dbi[DBI_ENTRIES], &k, &d);
    if (rc)
        return rc;
    if (d.mv_size != sizeof *e)
        return MDB_CORRUPTED;
    memcpy(e, d.mv_data, sizeof *e);
    return 0;
}

/* Deletes one entry (described by e) from frames, entries and lru. */
static int entry_delete(struct pfs_cache *c, MDB_txn *txn, const struct pfs_cache_key *key,
                        const struct entry_rec *e)
{
    MDB_val k = kval(key);
    uint8_t lk[24];
    lru_key(lk, e->atime, key);
    MDB_val l = {sizeof lk, lk};
    int rc = mdb_del(txn, c->dbi[DBI_FRAMES], &k, NULL);
    if (rc == 0 || rc == MDB_NOTFOUND)
        rc = mdb_del(txn, c->dbi[DBI_ENTRIES], &k, NULL);
    if (rc == 0 || rc == MDB_NOTFOUND)
        rc = mdb_del(txn, c->dbi[DBI_LRU], &l, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- transactions ---------------------------------------------------- */

/* Changes the map size (0: adopt the size another process committed). LMDB
 * requires that no transaction of this process is live: maplock's writer
 * side waits for all of them. */
static int remap(struct pfs_cache *c, size_t size)
{
    pthread_rwlock_wrlock(&c->maplock);
    int rc = mdb_env_set_mapsize(c->env, size);
    pthread_rwlock_unlock(&c->maplock);
    if (rc == 0 && pfs_log_enabled(PFS_LOG_DEBUG)) {
        MDB_envinfo info;
        mdb_env_info(c->env, &info);
        pfs_log(PFS_LOG_DEBUG, "%s: cache map is now %zu bytes", c->dir,
                info.me_mapsize);
    }
    return rc;
}

/* Recovers from the two transient failures of mdb_txn_begin/renew. */
static bool recover(struct pfs_cache *c, int rc)
{
    if (rc == MDB_MAP_RESIZED)
        return remap(c, 0) == 0;
    if (rc == MDB_READERS_FULL) {
        int dead = 0;
        mdb_reader_check(c->env, &dead);
        return dead > 0;
    }
    return false;
}

/* On success maplock is held shared until txn_commit/txn_abort/rtxn_put. */
static int txn_begin(struct pfs_cache *c, unsigned flags, MDB_txn **out)
{
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(&c->maplock);
        int rc = mdb_txn_begin(c->env, NULL, flags, out);
        if (rc == 0)
            return 0;
        pthread_rwlock_unlock(&c->maplock);
        if (tries >= 3 || !recover(c, rc))
            return rc;
    }
}

static int txn_commit(struct pfs_cache *c, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    pthread_rwlock_unlock(&c->maplock);
    return rc;
}

static void txn_abort(struct pfs_cache *c, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&c->maplock);
}

/* A read transaction from the pool of reset ones: renewing keeps the reader
 * slot, which saves the lock-file mutex that mdb_txn_begin takes. */
static int rtxn_get(struct pfs_cache *c, MDB_txn **out)
{
    MDB_txn *t = NULL;
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool > 0)
        t = c->pool[--c->npool];
    pthread_mutex_unlock(&c->pool_mu);
    if (t) {
        pthread_rwlock_rdlock(&c->maplock);
        if (mdb_txn_renew(t) == 0) {
            *out = t;
            return 0;
        }
        pthread_rwlock_unlock(&c->maplock);
        mdb_txn_abort(t); /* txn_begin below does the recovery */
    }
    return txn_begin(c, MDB_RDONLY, out);
}

static void rtxn_put(struct pfs_cache *c, MDB_txn *t)
{
    mdb_txn_reset(t);
    pthread_rwlock_unlock(&c->maplock);
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < POOL_MAX) {
        c->pool[c->npool++] = t;
        t = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (t)
        mdb_txn_abort(t);
}

/* ---- access times in memory ----------------------------------------- */

static size_t at_hash(const struct pfs_cache_key *key, size_t cap)
{
    uint64_t h;
    memcpy(&h, key->b, sizeof h);
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

static void at_insert(struct atime_slot *tab, size_t cap, const struct pfs_cache_key *key,
                      uint64_t t, size_t *n)
{
    for (size_t i = at_hash(key, cap);; i = (i + 1) & (cap - 1)) {
        if (tab[i].t == 0) {
            tab[i].key = *key;
            tab[i].t = t;
            ++*n;
            return;
        }
        if (memcmp(tab[i].key.b, key->b, 16) == 0) {
            if (t > tab[i].t)
                tab[i].t = t;
            return;
        }
    }
}

/* Caller holds at_mu. Drops the access when the table cannot grow: access
 * times only steer eviction, so losing one costs nothing but accuracy. */
static void at_record_locked(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t t)
{
    if ((c->at_n + 1) * 10 > c->at_cap * 7) {
        size_t ncap = c->at_cap ? c->at_cap * 2 : 256;
        if (ncap > ATIME_TAB_MAX)
            return;
        struct atime_slot *nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return;
        size_t n = 0;
        for (size_t i = 0; i < c->at_cap; i++)
            if (c->at[i].t)
                at_insert(nt, ncap, &c->at[i].key, c->at[i].t, &n);
        free(c->at);
        c->at = nt;
        c->at_cap = ncap;
        c->at_n = n;
    }
    at_insert(c->at, c->at_cap, key, t, &c->at_n);
}

static void at_record(struct pfs_cache *c, const struct pfs_cache_key *key)
{
    uint64_t t = tick(c);
    pthread_mutex_lock(&c->at_mu);
    at_record_locked(c, key, t);
    pthread_mutex_unlock(&c->at_mu);
}

static size_t at_pending(struct pfs_cache *c)
{
    pthread_mutex_lock(&c->at_mu);
    size_t n = c->at_n;
    pthread_mutex_unlock(&c->at_mu);
    return n;
}

static void batch_take(struct pfs_cache *c, struct flush_batch *b)
{
    pthread_mutex_lock(&c->at_mu);
    b->slots = c->at;
    b->cap = c->at_cap;
    c->at = NULL;
    c->at_cap = c->at_n = 0;
    pthread_mutex_unlock(&c->at_mu);
    for (int i = 0; i < PFS_CACHE_NCOUNTERS; i++)
        b->counts[i] = atomic_exchange(&c->pending[i], 0);
}

/* The transaction that carried the batch failed: keep its data for the next. */
static void batch_restore(struct pfs_cache *c, struct flush_batch *b)
{
    for (int i = 0; i < PFS_CACHE_NCOUNTERS; i++)
        atomic_fetch_add(&c->pending[i], b->counts[i]);
    pthread_mutex_lock(&c->at_mu);
    for (size_t i = 0; i < b->cap; i++)
        if (b->slots[i].t)
            at_record_locked(c, &b->slots[i].key, b->slots[i].t);
    pthread_mutex_unlock(&c->at_mu);
    free(b->slots);
    b->slots = NULL;
}

static int batch_apply(struct pfs_cache *c, MDB_txn *txn, const struct flush_batch *b)
{
    int rc = 0;
    for (size_t i = 0; i < b->cap && rc == 0; i++) {
        const struct atime_slot *s = &b->slots[i];
        struct entry_rec e;
        if (s->t == 0)
            continue;
        rc = entry_get(c, txn, &s->key, &e);
        if (rc == MDB_NOTFOUND) { /* evicted or removed since the read */
            rc = 0;
            continue;
        }
        if (rc || e.atime >= s->t)
            continue;
        uint8_t lk[24];
        lru_key(lk, e.atime, &s->key);
        MDB_val l = {sizeof lk, lk}, empty = {0, NULL};
        rc = mdb_del(txn, c->dbi[DBI_LRU], &l, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        e.atime = s->t;
        lru_key(lk, e.atime, &s->key);
        if (rc == 0)
            rc = mdb_put(txn, c->dbi[DBI_LRU], &l, &empty, 0);
        MDB_val k = kval(&s->key), d = {sizeof e, &e};
        if (rc == 0)
            rc = mdb_put(txn, c->dbi[DBI_ENTRIES], &k, &d, 0);
    }
    for (int i = 0; i < PFS_CACHE_NCOUNTERS && rc == 0; i++)
        if (b->counts[i])
            rc = counter_add(c, txn, i, b->counts[i]);
    return rc;
}

static bool counters_pending(struct pfs_cache *c)
{
    for (int i = 0; i < PFS_CACHE_NCOUNTERS; i++)
        if (atomic_load(&c->pending[i]))
            return true;
    return false;
}

/* ---- eviction and put ------------------------------------------------ */

struct put_state {
    uint64_t value_bytes, budget, old; /* old: size of the value being replaced */
};

static int state_read(struct pfs_cache *c, MDB_txn *txn, const struct pfs_cache_key *key,
                      struct put_state *st)
{
    int rc = info_get(c, txn, "value_bytes", &st->value_bytes);
    if (rc == 0)
        rc = info_get(c, txn, "budget", &st->budget);
    st->old = 0;
    if (rc == 0 && key) {
        struct entry_rec e;
        rc = entry_get(c, txn, key, &e);
        if (rc == 0)
            st->old = e.size;
        else if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

/* value_bytes after replacing st->old by len bytes */
static uint64_t after_put(const struct put_state *st, uint64_t len)
{
    return (st->value_bytes > st->old ? st->value_bytes - st->old : 0) + len;
}

static uint64_t limit_for(const struct put_state *st, uint64_t len, int phase)
{
    if (phase == 0)
        return st->budget; /* phases 1 and 2: after MDB_MAP_FULL */
    uint64_t l = st->budget / 100 * FRAG_RETRY_PCT;
    return l > len ? l : len;
}

/* Evicts least recently used entries until value_bytes - old + len <= limit,
 * at most EVICT_BATCH of them. *fits says whether the goal was reached. */
static int evict(struct pfs_cache *c, MDB_txn *txn, const struct pfs_cache_key *putkey,
                 uint64_t len, uint64_t limit, struct put_state *st, bool *fits)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->dbi[DBI_LRU], &cur);
    if (rc)
        return rc;
    uint64_t n = 0;
    while (after_put(st, len) > limit && n < EVICT_BATCH) {
        MDB_val k, d;
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            /* Nothing left to evict: value_bytes can only be zero then. */
            if (st->value_bytes)
                pfs_log(PFS_LOG_WARN, "%s: cache accounting off by %llu bytes; reset",
                        c->dir, (unsigned long long)st->value_bytes);
            st->value_bytes = st->old = 0;
            rc = 0;
            break;
        }
        if (rc)
            break;
        if (k.mv_size != 24) {
            rc = MDB_CORRUPTED;
            break;
        }
        struct pfs_cache_key key;
        memcpy(key.b, (uint8_t *)k.mv_data + 8, 16);
        struct entry_rec e;
        rc = entry_get(c, txn, &key, &e);
        if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_del(cur, 0); /* an lru record without entry */
            if (rc)
                break;
            continue;
        }
        if (rc)
            break;
        rc = entry_delete(c, txn, &key, &e);
        if (rc)
            break;
        st->value_bytes -= e.size < st->value_bytes ? e.size : st->value_bytes;
        if (putkey && memcmp(key.b, putkey->b, 16) == 0)
            st->old = 0;
        n++;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && n)
        rc = u64_put(txn, c->dbi[DBI_INFO], "value_bytes", st->value_bytes);
    if (rc == 0 && n)
        rc = counter_add(c, txn, PFS_CACHE_EVICTIONS, n);
    *fits = after_put(st, len) <= limit;
    return rc;
}

/* Flush of access times and counters is due (caller holds wmutex). */
static bool flush_due(struct pfs_cache *c)
{
    size_t n = at_pending(c);
    if (n >= FLUSH_PENDING_MAX)
        return true;
    if (!n && !counters_pending(c))
        return false;
    return clock_ns(CLOCK_MONOTONIC) - c->last_flush_mono >= FLUSH_INTERVAL_NS;
}

/*
 * LMDB keeps the previous commit's snapshot alive (its two meta pages), so
 * pages freed by transaction T are reusable only from T + 2 on, and only
 * once no reader still sees a snapshot older than T + 1. After an eviction,
 * one small commit and then a moment with maplock held exclusively (every
 * read transaction of this process that began before it has ended) make the
 * freed pages available to the put that follows. Readers in other processes
 * are not waited for; the margin absorbs what they pin.
 */
static int bump_generation(struct pfs_cache *c)
{
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return rc;
    uint64_t gen = 0;
    rc = info_get(c, txn, "generation", &gen);
    if (rc == 0)
        rc = u64_put(txn, c->dbi[DBI_INFO], "generation", gen + 1);
    if (rc) {
        txn_abort(c, txn);
        return rc;
    }
    rc = txn_commit(c, txn);
    pthread_rwlock_wrlock(&c->maplock);
    pthread_rwlock_unlock(&c->maplock);
    return rc;
}

/*
 * Makes room for len bytes under key in committed transactions, so that the
 * put's transaction can reuse the freed pages (see bump_generation). Carries
 * the pending access times when due, or when anything is evicted: eviction
 * must see them. Caller holds wmutex.
 */
static int make_room(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t len,
                     int phase, pfs_error *err)
{
    bool carry = flush_due(c), evicted = false;
    for (;;) {
        MDB_txn *txn;
        int rc = txn_begin(c, 0, &txn);
        if (rc)
            return lmdb_error(c->dir, rc, err, "making room");
        struct put_state st = {0};
        rc = state_read(c, txn, key, &st);
        if (rc == 0 && len > st.budget) {
            txn_abort(c, txn);
            return pfs_error_set(err, EFBIG,
                                 "%s: a value of %llu bytes exceeds the cache budget "
                                 "of %llu bytes", c->dir, (unsigned long long)len,
                                 (unsigned long long)st.budget);
        }
        if (rc == 0) {
            /* Another process raised the budget: follow it, or its values
             * would hit MDB_MAP_FULL in our smaller map. */
            MDB_envinfo info;
            mdb_env_info(c->env, &info);
            uint64_t want = map_for_budget(st.budget);
            if (want > info.me_mapsize) {
                txn_abort(c, txn);
                rc = remap(c, want);
                if (rc)
                    return lmdb_error(c->dir, rc, err, "growing the cache map");
                continue;
            }
        }
        uint64_t limit = limit_for(&st, len, phase);
        bool fits = after_put(&st, len) <= limit;
        if (rc == 0 && fits && !carry) {
            txn_abort(c, txn);
            return 0;
        }
        struct flush_batch b = {0};
        bool taken = false;
        if (rc == 0 && (carry || at_pending(c))) {
            batch_take(c, &b);
            taken = true;
            rc = batch_apply(c, txn, &b);
        }
        if (rc == 0 && !fits) {
            rc = evict(c, txn, key, len, limit, &st, &fits);
            evicted = true;
        }
        if (rc) {
            txn_abort(c, txn);
        } else {
            rc = txn_commit(c, txn);
        }
        if (rc) {
            if (taken)
                batch_restore(c, &b);
            return lmdb_error(c->dir, rc, err, "evicting");
        }
        free(b.slots);
        if (taken)
            c->last_flush_mono = clock_ns(CLOCK_MONOTONIC);
        carry = false;
        if (fits) {
            rc = evicted ? bump_generation(c) : 0;
            return rc ? lmdb_error(c->dir, rc, err, "evicting") : 0;
        }
    }
}

/* 1: another process filled the room between make_room and here, and more
 * than one batch would have to go: make room again. */
#define PUT_AGAIN (-1) /* neither an errno nor an LMDB code */

static int put_once(struct pfs_cache *c, const struct pfs_cache_key *key, const void *data,
                    size_t len, int phase, pfs_error *err)
{
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "storing a frame");
    struct put_state st = {0};
    rc = state_read(c, txn, key, &st);
    if (rc == 0 && after_put(&st, len) > limit_for(&st, len, phase)) {
        /* Another process took the room: evict here rather than race it
         * again. These pages are not reusable in this transaction, so the
         * value may go to the end of the file, into the margin. */
        bool fits = false;
        rc = evict(c, txn, key, len, limit_for(&st, len, phase), &st, &fits);
        if (rc == 0 && !fits) {
            txn_abort(c, txn);
            return PUT_AGAIN;
        }
    }
    MDB_val k = kval(key);
    if (rc == 0 && st.old) {
        struct entry_rec e;
        rc = entry_get(c, txn, key, &e);
        if (rc == 0)
            rc = entry_delete(c, txn, key, &e);
    }
    MDB_val d = {len, NULL};
    if (rc == 0)
        rc = mdb_put(txn, c->dbi[DBI_FRAMES], &k, &d, MDB_RESERVE);
    if (rc == 0 && len)
        memcpy(d.mv_data, data, len);
    struct entry_rec e = {.size = len, .atime = tick(c)};
    uint8_t lk[24];
    lru_key(lk, e.atime, key);
    MDB_val l = {sizeof lk, lk}, empty = {0, NULL}, ed = {sizeof e, &e};
    if (rc == 0)
        rc = mdb_put(txn, c->dbi[DBI_ENTRIES], &k, &ed, 0);
    if (rc == 0)
        rc = mdb_put(txn, c->dbi[DBI_LRU], &l, &empty, 0);
    if (rc == 0)
        rc = u64_put(txn, c->dbi[DBI_INFO], "value_bytes", after_put(&st, len));
    if (rc) {
        txn_abort(c, txn);
        if (rc == MDB_MAP_FULL)
            return rc;
        return lmdb_error(c->dir, rc, err, "storing a frame");
    }
    rc = txn_commit(c, txn);
    if (rc == MDB_MAP_FULL)
        return rc;
    return rc ? commit_error(c->dir, rc, len, err, "storing a frame") : 0;
}

int pfs_cache_put(struct pfs_cache *c, const struct pfs_cache_key *key, const void *data,
                  size_t len, pfs_error *err)
{
    if (c->read_only)
        return pfs_error_set(err, EROFS, "%s: cache opened read-only", c->dir);
    if (len > UINT32_MAX) /* LMDB's node size field */
        return pfs_error_set(err, EFBIG, "%s: a value of %zu bytes is too large",
                             c->dir, len);
    pthread_mutex_lock(&c->wmutex);
    int rc = 0, phase = 0;
    for (int attempt = 0; attempt < MAX_PUT_ATTEMPTS; attempt++) {
        rc = make_room(c, key, len, phase, err);
        if (rc)
            break;
        rc = put_once(c, key, data, len, phase, err);
        if (rc == MDB_MAP_FULL) {
            if (phase == 2)
                break;
            if (phase == 1) {
                /* Readers in other processes may pin the freed pages:
                 * give them a moment, then one more commit. */
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
                int brc = bump_generation(c);
                if (brc) {
                    rc = lmdb_error(c->dir, brc, err, "evicting");
                    break;
                }
            } else {
                pfs_log(PFS_LOG_INFO, "%s: cache map full storing %zu bytes; "
                        "evicting down to %d %% of the budget", c->dir, len,
                        FRAG_RETRY_PCT);
            }
            phase++;
            continue;
        }
        if (rc != PUT_AGAIN)
            break;
    }
    if (rc == MDB_MAP_FULL)
        rc = pfs_error_set(err, ENOSPC,
                           "%s: no contiguous room for %zu bytes in the cache map "
                           "even after evicting to %d %% of the budget", c->dir, len,
                           FRAG_RETRY_PCT);
    else if (rc == PUT_AGAIN)
        rc = pfs_error_set(err, EAGAIN, "%s: other writers keep filling the cache",
                           c->dir);
    pthread_mutex_unlock(&c->wmutex);
    return rc;
}

/* ---- reads ----------------------------------------------------------- */

int pfs_cache_view(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t off,
                   size_t len, pfs_cache_view_fn fn, void *ud, pfs_error *err)
{
    MDB_txn *txn;
    int rc = rtxn_get(c, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading a frame");
    MDB_val k = kval(key), d;
    rc = mdb_get(txn, c->dbi[DBI_FRAMES], &k, &d);
    if (rc == 0) {
        size_t n = 0;
        if (off < d.mv_size) {
            n = d.mv_size - off;
            if (n > len)
                n = len;
        }
        fn(ud, n ? (const uint8_t *)d.mv_data + off : d.mv_data, n, d.mv_size);
    }
    rtxn_put(c, txn);
    if (rc == MDB_NOTFOUND) {
        if (off == 0)
            atomic_fetch_add(&c->pending[PFS_CACHE_MISSES], 1);
        return pfs_error_set(err, ENOENT, "%s: not in the cache", c->dir);
    }
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading a frame");
    if (off == 0)
        atomic_fetch_add(&c->pending[PFS_CACHE_HITS], 1);
    if (!c->read_only)
        at_record(c, key);
    return 0;
}

struct copy_out {
    void *buf;
    size_t *nread;
    uint64_t *total;
};

static void copy_view(void *ud, const void *data, size_t n, uint64_t total)
{
    struct copy_out *o = ud;
    memcpy(o->buf, data, n);
    *o->nread = n;
    *o->total = total;
}

int pfs_cache_read(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t off,
                   void *buf, size_t len, size_t *nread, uint64_t *total, pfs_error *err)
{
    struct copy_out o = {.buf = buf, .nread = nread, .total = total};
    return pfs_cache_view(c, key, off, len, copy_view, &o, err);
}

int pfs_cache_size(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t *size,
                   pfs_error *err)
{
    MDB_txn *txn;
    int rc = rtxn_get(c, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading a frame's size");
    MDB_val k = kval(key), d;
    rc = mdb_get(txn, c->dbi[DBI_FRAMES], &k, &d);
    if (rc == 0)
        *size = d.mv_size;
    rtxn_put(c, txn);
    if (rc == MDB_NOTFOUND)
        return pfs_error_set(err, ENOENT, "%s: not in the cache", c->dir);
    return rc ? lmdb_error(c->dir, rc, err, "reading a frame's size") : 0;
}

/* ---- remove, flush, counters ----------------------------------------- */

int pfs_cache_remove(struct pfs_cache *c, const struct pfs_cache_key *key, pfs_error *err)
{
    if (c->read_only)
        return pfs_error_set(err, EROFS, "%s: cache opened read-only", c->dir);
    pthread_mutex_lock(&c->wmutex);
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc) {
        pthread_mutex_unlock(&c->wmutex);
        return lmdb_error(c->dir, rc, err, "removing a frame");
    }
    struct entry_rec e;
    uint64_t vb = 0;
    rc = entry_get(c, txn, key, &e);
    if (rc == 0)
        rc = entry_delete(c, txn, key, &e);
    if (rc == 0)
        rc = info_get(c, txn, "value_bytes", &vb);
    if (rc == 0)
        rc = u64_put(txn, c->dbi[DBI_INFO], "value_bytes", vb - (e.size < vb ? e.size : vb));
    if (rc)
        txn_abort(c, txn);
    else
        rc = txn_commit(c, txn);
    pthread_mutex_unlock(&c->wmutex);
    if (rc == MDB_NOTFOUND)
        return ENOENT;
    return rc ? lmdb_error(c->dir, rc, err, "removing a frame") : 0;
}

int pfs_cache_clear(struct pfs_cache *c, pfs_error *err)
{
    if (c->read_only)
        return pfs_error_set(err, EROFS, "%s: cache opened read-only", c->dir);
    pthread_mutex_lock(&c->wmutex);
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc == 0) {
        static const int dropped[] = {DBI_FRAMES, DBI_ENTRIES, DBI_LRU};
        for (size_t i = 0; i < sizeof dropped / sizeof dropped[0] && rc == 0; i++)
            rc = mdb_drop(txn, c->dbi[dropped[i]], 0);
        if (rc == 0)
            rc = u64_put(txn, c->dbi[DBI_INFO], "value_bytes", 0);
        if (rc)
            txn_abort(c, txn);
        else
            rc = txn_commit(c, txn);
    }
    pthread_mutex_unlock(&c->wmutex);
    return rc ? lmdb_error(c->dir, rc, err, "clearing the cache") : 0;
}

/* What merging does with one record of src's table: copy it into dst or
 * count it as present there. Returns 0 or an error (stops the walk). */
struct merge {
    struct pfs_cache *dst;
    uint64_t copied, present;
    pfs_error *err;
};
typedef int (*merge_fn)(struct merge *m, const MDB_val *k, const MDB_val *d);

/* Calls fn for every record of src's table dbi, inside one read
 * transaction: values go straight from src's map into dst's puts. */
static int merge_walk(struct pfs_cache *src, int dbi, merge_fn fn, struct merge *m)
{
    MDB_txn *txn;
    int rc = rtxn_get(src, &txn);
    if (rc)
        return lmdb_error(src->dir, rc, m->err, "reading the cache to merge");
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, src->dbi[dbi], &cur);
    if (rc) {
        rtxn_put(src, txn);
        return lmdb_error(src->dir, rc, m->err, "reading the cache to merge");
    }
    MDB_val k, d;
    int mrc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
    int out = 0;
    while (mrc == 0 && out == 0) {
        out = fn(m, &k, &d);
        mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    rtxn_put(src, txn);
    if (out)
        return out;
    if (mrc != MDB_NOTFOUND)
        return lmdb_error(src->dir, mrc, m->err, "reading the cache to merge");
    return 0;
}

static int merge_frame(struct merge *m, const MDB_val *k, const MDB_val *d)
{
    struct pfs_cache_key key;
    if (k->mv_size != sizeof key.b)
        return 0;
    memcpy(key.b, k->mv_data, sizeof key.b);
    uint64_t size;
    if (pfs_cache_size(m->dst, &key, &size, NULL) == 0) {
        m->present++;
        return 0;
    }
    int rc = pfs_cache_put(m->dst, &key, d->mv_data, d->mv_size, m->err);
    if (rc == 0)
        m->copied++;
    return rc;
}

/* A named record (a clip index) dst lacks: its name carries what it
 * describes, so one dst already has is the same record. */
static int merge_record(struct merge *m, const MDB_val *k, const MDB_val *d)
{
    char name[512];
    if (k->mv_size == 0 || k->mv_size >= sizeof name)
        return 0;
    memcpy(name, k->mv_data, k->mv_size);
    name[k->mv_size] = '\0';
    void *have = NULL;
    size_t have_len;
    int rc = pfs_cache_meta_get(m->dst, name, &have, &have_len, NULL);
    free(have);
    return rc == ENOENT ? pfs_cache_meta_put(m->dst, name, d->mv_data, d->mv_size, m->err) : 0;
}

int pfs_cache_merge(struct pfs_cache *dst, struct pfs_cache *src, uint64_t *copied,
                    uint64_t *present, pfs_error *err)
{
    struct merge m = {.dst = dst, .err = err};
    int rc = merge_walk(src, DBI_FRAMES, merge_frame, &m);
    if (rc == 0)
        rc = merge_walk(src, DBI_META, merge_record, &m);
    *copied = m.copied;
    *present = m.present;
    return rc;
}

int pfs_cache_destroy(const char *dir, pfs_error *err)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, files[i]) >= (int)sizeof path)
            return pfs_error_set(err, ENAMETOOLONG, "%s: path too long", dir);
        if (unlink(path) != 0 && errno != ENOENT)
            return pfs_error_set(err, errno, "%s: cannot remove: %s", path, strerror(errno));
    }
    return 0;
}

void pfs_cache_count(struct pfs_cache *c, enum pfs_cache_counter which, uint64_t n)
{
    if ((unsigned)which < PFS_CACHE_NCOUNTERS)
        atomic_fetch_add(&c->pending[which], n);
}

int pfs_cache_flush(struct pfs_cache *c, pfs_error *err)
{
    if (c->read_only || (!at_pending(c) && !counters_pending(c)))
        return 0;
    pthread_mutex_lock(&c->wmutex);
    struct flush_batch b = {0};
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc == 0) {
        batch_take(c, &b);
        rc = batch_apply(c, txn, &b);
        if (rc)
            txn_abort(c, txn);
        else
            rc = txn_commit(c, txn);
        if (rc)
            batch_restore(c, &b);
        else
            c->last_flush_mono = clock_ns(CLOCK_MONOTONIC);
        free(b.slots);
    }
    pthread_mutex_unlock(&c->wmutex);
    return rc ? lmdb_error(c->dir, rc, err, "flushing access times") : 0;
}

/* Pages on LMDB's free list: each freeDB record is an IDL, count first. */
static int free_pages(MDB_txn *txn, uint64_t *out)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, 0 /* FREE_DBI */, &cur);
    if (rc)
        return rc;
    MDB_val k, d;
    uint64_t n = 0;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        size_t cnt;
        if (d.mv_size >= sizeof cnt) {
            memcpy(&cnt, d.mv_data, sizeof cnt);
            n += cnt;
        }
    }
    mdb_cursor_close(cur);
    *out = n;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int pfs_cache_stats(struct pfs_cache *c, struct pfs_cache_stats *out, pfs_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = pfs_cache_flush(c, err);
    if (rc)
        return rc;
    MDB_txn *txn;
    rc = rtxn_get(c, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading statistics");
    MDB_stat ms;
    rc = mdb_stat(txn, c->dbi[DBI_ENTRIES], &ms);
    if (rc == 0)
        out->entries = ms.ms_entries;
    if (rc == 0)
        rc = info_get(c, txn, "value_bytes", &out->value_bytes);
    if (rc == 0)
        rc = info_get(c, txn, "budget", &out->budget_bytes);
    for (int i = 0; i < PFS_CACHE_NCOUNTERS && rc == 0; i++) {
        const char *name = counter_names[i];
        MDB_val k = {strlen(name), (void *)name}, d;
        rc = mdb_get(txn, c->dbi[DBI_COUNTERS], &k, &d);
        if (rc == 0 && d.mv_size == sizeof(uint64_t))
            memcpy(&out->counters[i], d.mv_data, sizeof(uint64_t));
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    uint64_t nfree = 0;
    if (rc == 0)
        rc = free_pages(txn, &nfree);
    MDB_envinfo info;
    MDB_stat es;
    mdb_env_info(c->env, &info);
    mdb_env_stat(c->env, &es);
    rtxn_put(c, txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading statistics");
    out->map_bytes = info.me_mapsize;
    out->free_bytes = nfree * es.ms_psize;
    for (int i = 0; i < PFS_CACHE_NCOUNTERS; i++)
        out->counters[i] += atomic_load(&c->pending[i]); /* read-only opens */
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", c->dir);
    if (stat(path, &sb) == 0)
        out->file_bytes = (uint64_t)sb.st_size;
    return 0;
}

/* ---- meta ------------------------------------------------------------ */

int pfs_cache_meta_get(struct pfs_cache *c, const char *name, void **data, size_t *len,
                       pfs_error *err)
{
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 511)
        return pfs_error_set(err, EINVAL, "%s: bad meta name length %zu", c->dir, nlen);
    MDB_txn *txn;
    int rc = rtxn_get(c, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading meta");
    MDB_val k = {nlen, (void *)name}, d;
    rc = mdb_get(txn, c->dbi[DBI_META], &k, &d);
    void *copy = NULL;
    if (rc == 0) {
        copy = malloc(d.mv_size ? d.mv_size : 1);
        if (copy)
            memcpy(copy, d.mv_data, d.mv_size);
        else
            rc = ENOMEM;
    }
    rtxn_put(c, txn);
    if (rc == MDB_NOTFOUND)
        return ENOENT;
    if (rc)
        return lmdb_error(c->dir, rc, err, "reading meta");
    *data = copy;
    *len = d.mv_size;
    return 0;
}

int pfs_cache_meta_put(struct pfs_cache *c, const char *name, const void *data, size_t len,
                       pfs_error *err)
{
    if (c->read_only)
        return pfs_error_set(err, EROFS, "%s: cache opened read-only", c->dir);
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 511)
        return pfs_error_set(err, EINVAL, "%s: bad meta name length %zu", c->dir, nlen);
    pthread_mutex_lock(&c->wmutex);
    int rc = 0;
    for (int phase = 0; phase < 2; phase++) {
        /* The map is full: make room as a put would, then try once more. */
        if (phase == 1 && (rc = make_room(c, NULL, len, 1, err)) != 0)
            goto out;
        MDB_txn *txn;
        rc = txn_begin(c, 0, &txn);
        if (rc)
            break;
        MDB_val k = {nlen, (void *)name}, d = {len, (void *)data};
        rc = mdb_put(txn, c->dbi[DBI_META], &k, &d, 0);
        if (rc) {
            txn_abort(c, txn);
        } else if ((rc = txn_commit(c, txn)) != 0 && rc != MDB_MAP_FULL) {
            rc = commit_error(c->dir, rc, len, err, "storing meta");
            goto out;
        }
        if (rc != MDB_MAP_FULL)
            break;
    }
    if (rc)
        rc = lmdb_error(c->dir, rc, err, "storing meta");
out:
    pthread_mutex_unlock(&c->wmutex);
    return rc;
}

/* ---- open and close -------------------------------------------------- */

static int mkdirs(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return ENAMETOOLONG;
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(path, 0777) && errno != EEXIST)
        return errno;
    return 0;
}

/* LMDB's locking does not work over network file systems. */
static const char *network_fs(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf))
        return NULL;
    switch ((unsigned long)sf.f_type) {
    case 0x6969: return "NFS";
    case 0x517B: return "SMB";
    case 0xFF534D42: return "CIFS";
    case 0xFE534D42: return "SMB2";
    default: return NULL;
    }
}

/* Opens or creates the named databases and checks the format. In a new
 * store writes format and budget; in an existing one, the opener's budget
 * (if any) replaces the stored one. *budget gets the budget in force. */
static int open_dbis(struct pfs_cache *c, uint64_t *budget, uint64_t default_budget,
                     pfs_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, c->read_only ? MDB_RDONLY : 0, &txn);
    if (rc)
        return lmdb_error(c->dir, rc, err, "opening the cache");
    MDB_dbi info;
    rc = mdb_dbi_open(txn, dbi_names[DBI_INFO], 0, &info);
    bool fresh = false;
    if (rc == MDB_NOTFOUND) {
        MDB_stat ms;
        rc = mdb_stat(txn, 1 /* MAIN_DBI */, &ms);
        if (rc == 0 && ms.ms_entries != 0) {
            mdb_txn_abort(txn);
            return pfs_error_set(err, EINVAL,
                                 "%s: not a platefs cache (an LMDB store of something "
                                 "else); choose another directory", c->dir);
        }
        if (rc == 0 && c->read_only) {
            mdb_txn_abort(txn);
            return pfs_error_set(err, ENOENT, "%s: the cache is empty (never written)",
                                 c->dir);
        }
        fresh = true;
    }
    unsigned flags = c->read_only ? 0 : MDB_CREATE;
    for (int i = 0; i < NDBI && rc == 0; i++)
        rc = mdb_dbi_open(txn, dbi_names[i], flags, &c->dbi[i]);
    uint64_t format = 0, stored = 0;
    if (rc == 0 && !fresh)
        rc = info_get(c, txn, "format", &format);
    if (rc == 0 && !fresh && format != FORMAT_VERSION) {
        mdb_txn_abort(txn);
        return pfs_error_set(err, EINVAL,
                             "%s: cache format %llu, this platefs uses %u; run "
                             "`platefs cache clear` or remove the directory", c->dir,
                             (unsigned long long)format, FORMAT_VERSION);
    }
    if (rc == 0)
        rc = info_get(c, txn, "budget", &stored);
    if (rc == 0 && !*budget && !stored)
        *budget = default_budget; /* a new store without an explicit budget */
    if (rc == 0 && !c->read_only) {
        if (fresh)
            rc = u64_put(txn, c->dbi[DBI_INFO], "format", FORMAT_VERSION);
        if (rc == 0 && fresh)
            rc = u64_put(txn, c->dbi[DBI_INFO], "value_bytes", 0);
        if (rc == 0 && *budget && *budget != stored)
            rc = u64_put(txn, c->dbi[DBI_INFO], "budget", *budget);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return lmdb_error(c->dir, rc, err, "opening the cache");
    }
    rc = mdb_txn_commit(txn); /* also for read-only: keeps the DBI handles */
    if (rc)
        return lmdb_error(c->dir, rc, err, "opening the cache");
    if (!*budget)
        *budget = stored;
    if (!*budget)
        return pfs_error_set(err, EINVAL, "%s: no cache budget given or stored", c->dir);
    return 0;
}

static void cache_free(struct pfs_cache *c)
{
    for (int i = 0; i < c->npool; i++)
        mdb_txn_abort(c->pool[i]);
    if (c->env)
        mdb_env_close(c->env);
    pthread_rwlock_destroy(&c->maplock);
    pthread_mutex_destroy(&c->wmutex);
    pthread_mutex_destroy(&c->pool_mu);
    pthread_mutex_destroy(&c->at_mu);
    free(c->at);
    free(c->dir);
    free(c);
}

int pfs_cache_open(const struct pfs_cache_opts *opts, struct pfs_cache **out, pfs_error *err)
{
    *out = NULL;
    if (!opts->dir || !*opts->dir)
        return pfs_error_set(err, EINVAL, "cache: no directory given");
    if (!opts->read_only) {
        int e = mkdirs(opts->dir);
        if (e)
            return pfs_error_set(err, e, "%s: cannot create the cache directory: %s",
                                 opts->dir, strerror(e));
    }
    struct stat sb;
    if (stat(opts->dir, &sb))
        return pfs_error_set(err, errno, "%s: cannot open the cache directory: %s",
                             opts->dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return pfs_error_set(err, ENOTDIR, "%s: the cache must be a directory", opts->dir);
    const char *net = network_fs(opts->dir);
    if (net)
        return pfs_error_set(err, EINVAL,
                             "%s: the cache cannot live on %s (LMDB's locks do not "
                             "work there); use a local disk", opts->dir, net);

    struct pfs_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(opts->dir))) {
        free(c);
        return pfs_error_set(err, ENOMEM, "%s: out of memory", opts->dir);
    }
    c->read_only = opts->read_only;
    c->pid = getpid();
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* A steady stream of reads must not keep a re-map waiting forever. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->maplock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&c->wmutex, NULL);
    pthread_mutex_init(&c->pool_mu, NULL);
    pthread_mutex_init(&c->at_mu, NULL);
    c->last_flush_mono = clock_ns(CLOCK_MONOTONIC);

    int rc = mdb_env_create(&c->env);
    if (rc) {
        c->env = NULL;
        cache_free(c);
        return lmdb_error(opts->dir, rc, err, "creating the LMDB environment");
    }
    mdb_env_set_maxdbs(c->env, NDBI + 2);
    mdb_env_set_maxreaders(c->env, MAX_READERS);
    if (opts->budget_bytes)
        mdb_env_set_mapsize(c->env, map_for_budget(opts->budget_bytes));
    /*
     * No MDB_WRITEMAP: with it the file is a sparse mapping, and a full disk
     * turns into SIGBUS instead of ENOSPC from the commit. MDB_NOMETASYNC
     * keeps ACI (a crash of the machine may lose the last put, never
     * corrupt the store) and saves one of the two fsyncs per commit.
     */
    unsigned flags = MDB_NOTLS | (opts->read_only ? MDB_RDONLY : MDB_NOMETASYNC);
    rc = mdb_env_open(c->env, opts->dir, flags, 0666);
    if (rc) {
        cache_free(c);
        if (rc == ENOENT || rc == EACCES || rc == EROFS || rc == EAGAIN)
            return pfs_error_set(err, rc, "%s: cannot open the cache: %s", opts->dir,
                                 strerror(rc));
        return lmdb_error(opts->dir, rc, err, "opening the cache");
    }
    int dead = 0;
    mdb_reader_check(c->env, &dead);
    if (dead)
        pfs_log(PFS_LOG_INFO, "%s: cleared %d stale cache reader slot(s)", c->dir, dead);

    uint64_t budget = opts->budget_bytes;
    rc = open_dbis(c, &budget, opts->default_budget_bytes, err);
    if (rc) {
        cache_free(c);
        return rc;
    }
    if (!opts->read_only && !opts->budget_bytes) {
        rc = mdb_env_set_mapsize(c->env, map_for_budget(budget));
        if (rc) {
            cache_free(c);
            return lmdb_error(opts->dir, rc, err, "sizing the cache map");
        }
    }
    if (!opts->read_only) {
        /* A budget smaller than before takes effect now, not at the next put. */
        pthread_mutex_lock(&c->wmutex);
        rc = make_room(c, NULL, 0, 0, err);
        pthread_mutex_unlock(&c->wmutex);
        if (rc) {
            cache_free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

void pfs_cache_close(struct pfs_cache *c)
{
    if (!c)
        return;
    if (getpid() != c->pid)
        return; /* inherited across fork: LMDB forbids touching it here */
    pfs_error err;
    if (!c->read_only && pfs_cache_flush(c, &err))
        pfs_log(PFS_LOG_WARN, "%s", err.msg);
    cache_free(c);
}
