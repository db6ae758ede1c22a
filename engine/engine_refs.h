/*
 * engine_refs.h - decoded frames and what is derived from them, shared
 * between renders (private to engine/).
 *
 * An op that compares each frame with a reference frame (relight's match)
 * or reads its neighbours (wire removal) would otherwise decode the same
 * source frames, and compute the same optical flows, once per rendered
 * frame. This cache keeps the most recently used ones, keyed by a string
 * naming their inputs (source path, size, mtime, clip frame; for a flow,
 * both frames' keys), so a changed source is a different key.
 *
 * An item is made once: a render asking for a key that another render is
 * making waits for it rather than making it again (readahead renders
 * neighbouring frames at once, and they share most of their neighbours).
 * Items are held while a render uses them and freed only once released and
 * evicted; unheld items are evicted least recently used first, down to the
 * byte budget, so memory stays bounded however long the shot.
 */
#ifndef PFS_ENGINE_REFS_H
#define PFS_ENGINE_REFS_H

#include <stddef.h>

#include "engine/image.h"
#include "util/error.h"

struct ref_cache;

/* budget: bytes of items kept when nobody holds them. */
struct ref_cache *ref_cache_new(size_t budget);
void ref_cache_free(struct ref_cache *rc);

/* Makes the item for a key: *item (owned by the cache from then on, freed
 * with free_item) and the bytes it holds. */
typedef int (*ref_make_fn)(void *ud, void **item, size_t *bytes, pfs_error *err);
typedef void (*ref_free_fn)(void *item);

/* The item under key, made by make(ud) on a miss; *out stays valid until
 * ref_cache_release. An error in make is every waiter's error. */
int ref_cache_get(struct ref_cache *rc, const char *key, ref_make_fn make, void *ud,
                  ref_free_fn free_item, const void **out, pfs_error *err);
void ref_cache_release(struct ref_cache *rc, const void *item);

/* Decoded images, the common case: decode fills img (allocated by the
 * callee). */
typedef int (*ref_decode_fn)(void *ud, struct pfs_image *img, pfs_error *err);
int ref_cache_get_image(struct ref_cache *rc, const char *key, ref_decode_fn decode, void *ud,
                        const struct pfs_image **out, pfs_error *err);

#endif
