/*
 * engine_clips.h - the engine's clips: indexes by path, and frame naming
 * (private to engine/).
 *
 * A struct clip is one clip file as of one size and mtime: its packet index
 * (engine/clip.h) and start timecode. The table loads an index from the
 * cache store before it builds one, and stores what it builds, so a clip is
 * opened once per (path, size, mtime) whatever the number of mounts and
 * machines. Clips are reference counted: frames hold theirs while the table
 * may already have replaced it with a newer version of the file.
 */
#ifndef PFS_ENGINE_CLIPS_H
#define PFS_ENGINE_CLIPS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cache/cache.h"
#include "engine/clip.h"
#include "engine/timecode.h"
#include "rules/rules.h"

struct clip {
    atomic_int refs;
    char *relpath;
    off_t size;
    struct timespec mtime;
    struct pfs_clip_index *idx; /* NULL when the clip cannot be read ... */
    char *error_msg;            /* ... and why, naming it */
    bool has_timecode;
    struct pfs_timecode tc;     /* start timecode, when the clip has one */
    struct clip *next;
};

struct clip_table;

struct clip_table *clip_table_new(const char *dailies_root, struct pfs_cache *cache);
void clip_table_free(struct clip_table *t);

/* The clip at relpath as of *st, with a reference the caller releases.
 * Never NULL: a clip that cannot be read comes back with idx NULL. */
struct clip *clip_table_get(struct clip_table *t, const char *relpath, const struct stat *st);
void clip_release(struct clip *c);

/* The number of the clip's first frame under src (a rule's `source:`). */
int64_t clip_first_frame(const struct clip *c, const struct pfs_clip_source *src);
/* Name of frame i in the clip's frames directory. */
void clip_frame_name(const struct clip *c, const struct pfs_clip_source *src, int64_t i,
                     char *buf, size_t size);
/* The frame a name in the clip's frames directory stands for: false unless
 * name is exactly what clip_frame_name gives for some frame of the clip. */
bool clip_frame_of(const struct clip *c, const struct pfs_clip_source *src, const char *name,
                   int64_t *index, int64_t *frame_no);

#endif
