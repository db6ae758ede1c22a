/*
 * cache.h - the rendered-frame store, on LMDB.
 *
 * This is the only module that includes lmdb.h. A cache is a directory
 * holding one LMDB environment; keys are 16-byte digests computed by the
 * engine (identical on every machine that mounts the same dailies), values
 * are whole encoded EXR files.
 *
 * Budget: the store never holds more than budget_bytes of values; a put that
 * would exceed it first evicts least-recently-used entries. The LMDB map is
 * sized budget + PFS_CACHE_MARGIN_PCT %, so the file on disk can never exceed
 * that, whatever the fragmentation. A value larger than the budget is refused
 * with EFBIG.
 *
 * Access times are kept in memory and flushed in batches, so reads never
 * become writes. Counters (hits, misses, renders) are shared through the
 * store so that `platefs cache stats` in another process sees them.
 *
 * Concurrency: a pfs_cache may be used by many threads; several processes
 * (a mount and a prewarm) may open the same directory at once. Survives
 * kill -9 of any of them without corruption (LMDB's copy-on-write commits).
 */
#ifndef PFS_CACHE_H
#define PFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define PFS_CACHE_MARGIN_PCT 25

struct pfs_cache;

struct pfs_cache_key {
    uint8_t b[16];
};

struct pfs_cache_opts {
    const char *dir;       /* created if missing */
    uint64_t budget_bytes; /* e.g. 8 GiB; 0: the budget stored in the dir.
                            * A non-zero budget replaces the stored one
                            * (the last writer to open sets it). */
    uint64_t default_budget_bytes; /* a new store's budget when budget_bytes is 0 */
    bool read_only;        /* stats from another process */
};

int pfs_cache_open(const struct pfs_cache_opts *opts, struct pfs_cache **out,
                   pfs_error *err);
/* Flushes access times and counters, then closes. */
void pfs_cache_close(struct pfs_cache *c);

/*
 * Copies bytes [off, off + len) of the value for key into buf. On a hit sets
 * *nread to the bytes copied (short only at the end of the value) and
 * *total to the value's size; returns 0. Returns ENOENT on a miss.
 * Counts a hit or a miss only when off == 0 (one per frame read, not per
 * FUSE request).
 */
int pfs_cache_read(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t off,
                   void *buf, size_t len, size_t *nread, uint64_t *total,
                   pfs_error *err);

/*
 * The zero-copy form of pfs_cache_read: on a hit calls fn once with a
 * pointer to bytes [off, off + len) of the value straight out of the map
 * (n short only at the end of the value), and returns 0. The pointer is
 * valid only during the call, which runs inside a read transaction: fn must
 * be quick and must not call into the cache. ENOENT on a miss (fn is not
 * called). Counts hits and misses as pfs_cache_read does.
 */
typedef void (*pfs_cache_view_fn)(void *ud, const void *data, size_t n, uint64_t total);
int pfs_cache_view(struct pfs_cache *c, const struct pfs_cache_key *key, uint64_t off,
                   size_t len, pfs_cache_view_fn fn, void *ud, pfs_error *err);

/* Size of the value for key without copying; ENOENT on a miss. */
int pfs_cache_size(struct pfs_cache *c, const struct pfs_cache_key *key,
                   uint64_t *size, pfs_error *err);

/* Stores (or replaces) the value, evicting LRU entries to stay within the
 * budget. ENOSPC when the disk is full (nothing stored, store intact),
 * EFBIG when the value alone exceeds the budget. */
int pfs_cache_put(struct pfs_cache *c, const struct pfs_cache_key *key,
                  const void *data, size_t len, pfs_error *err);

/* ENOENT when the key is not stored. */
int pfs_cache_remove(struct pfs_cache *c, const struct pfs_cache_key *key,
                     pfs_error *err);

/* Drops every frame (counters and named records stay). Safe while other
 * processes use the store: they see an empty cache from their next read. */
int pfs_cache_clear(struct pfs_cache *c, pfs_error *err);

/* The escape hatch for a store that no longer opens (corrupt, foreign
 * format): deletes the LMDB files in dir. Only for stores nobody has open. */
int pfs_cache_destroy(const char *dir, pfs_error *err);

/* Copies into dst every frame of src (another store, e.g. one a farm
 * machine filled, opened read_only) that dst lacks. Keys mean the same on
 * every machine, so no frame is re-rendered. dst's budget still applies:
 * merging more than it holds evicts dst's least recently used frames.
 * Named records dst lacks (clip indexes) are copied too. Counts the frames
 * copied and the frames dst already had. */
int pfs_cache_merge(struct pfs_cache *dst, struct pfs_cache *src, uint64_t *copied,
                    uint64_t *present, pfs_error *err);

enum pfs_cache_counter {
    PFS_CACHE_HITS,
    PFS_CACHE_MISSES,
    PFS_CACHE_RENDERS,
    PFS_CACHE_EVICTIONS,
    PFS_CACHE_NCOUNTERS,
};

/* Adds to a shared counter (in memory; flushed with access times). */
void pfs_cache_count(struct pfs_cache *c, enum pfs_cache_counter which, uint64_t n);

struct pfs_cache_stats {
    uint64_t entries;
    uint64_t value_bytes;  /* sum of stored value sizes */
    uint64_t file_bytes;   /* size of the LMDB data file */
    uint64_t budget_bytes;
    uint64_t map_bytes;
    uint64_t free_bytes;   /* pages of data.mdb on LMDB's free list */
    uint64_t counters[PFS_CACHE_NCOUNTERS];
};

/* Flushes this process's pending counters first, then reads the store. */
int pfs_cache_stats(struct pfs_cache *c, struct pfs_cache_stats *out, pfs_error *err);

/* Writes pending access times and counters now (also done periodically by
 * puts and at close). */
int pfs_cache_flush(struct pfs_cache *c, pfs_error *err);

/* Small named records (per-clip indexes, settings) beside the frames; they
 * are not counted against the budget and never evicted. */
int pfs_cache_meta_get(struct pfs_cache *c, const char *name, void **data, size_t *len,
                       pfs_error *err); /* *data malloc'd; ENOENT if absent */
int pfs_cache_meta_put(struct pfs_cache *c, const char *name, const void *data,
                       size_t len, pfs_error *err);

#endif
