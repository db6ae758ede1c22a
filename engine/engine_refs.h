/*
 * engine_refs.h - decoded reference frames, shared between renders (private
 * to engine/).
 *
 * An op that compares each frame with one reference frame of its shot
 * (relight's match) would otherwise decode that reference once per rendered
 * frame. The cache keeps the few most recently used references decoded,
 * keyed by a string naming the source and its version (path, size, mtime,
 * clip frame), so a changed source is a different key. An image is held
 * while a render uses it and is freed only once released and evicted.
 */
#ifndef PFS_ENGINE_REFS_H
#define PFS_ENGINE_REFS_H

#include "engine/image.h"
#include "util/error.h"

struct ref_cache;

/* capacity: decoded images kept when nobody holds them. */
struct ref_cache *ref_cache_new(int capacity);
void ref_cache_free(struct ref_cache *rc);

/* Decodes the reference into img (allocated by the callee). */
typedef int (*ref_decode_fn)(void *ud, struct pfs_image *img, pfs_error *err);

/* The image under key, decoded by decode(ud) on a miss; *out stays valid
 * until ref_cache_release. Two renders missing at once may both decode; the
 * first to finish is kept. */
int ref_cache_get(struct ref_cache *rc, const char *key, ref_decode_fn decode, void *ud,
                  const struct pfs_image **out, pfs_error *err);
void ref_cache_release(struct ref_cache *rc, const struct pfs_image *img);

#endif
