/*
 * inode.h - the file system's inode table (private to fs/).
 *
 * FUSE's low-level API names files by inode number; the table maps each
 * number the kernel holds to the file's path relative to the dailies root,
 * with the kernel's lookup count, as libfuse's passthrough_hp does. An inode
 * lives from its first lookup until the kernel forgets it. Inode numbers are
 * the addresses of the entries; the root is FUSE_ROOT_ID.
 */
#ifndef PFS_FS_INODE_H
#define PFS_FS_INODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pfs_inode {
    uint64_t ino;
    char *relpath; /* "" for the root */
    uint64_t nlookup;
    bool is_file;  /* a regular file: its pages may need invalidating */
    struct pfs_inode *hash_next;
    struct pfs_inode *ino_next;
};

struct pfs_inode_table;

struct pfs_inode_table *pfs_inode_table_new(void);
void pfs_inode_table_free(struct pfs_inode_table *t);

/* The inode for relpath with its lookup count raised by one, created if
 * new. NULL only when out of memory. */
struct pfs_inode *pfs_inode_lookup(struct pfs_inode_table *t, const char *relpath,
                                   bool is_file);
/* The inode for a number the kernel sent, NULL for an unknown one. The
 * returned relpath is copied into buf (size PATH_MAX) so the entry may be
 * forgotten concurrently. */
bool pfs_inode_path(struct pfs_inode_table *t, uint64_t ino, char *buf, size_t size);
void pfs_inode_forget(struct pfs_inode_table *t, uint64_t ino, uint64_t nlookup);

/* Calls fn for every regular file's inode number (for invalidation after a
 * rule change); fn must not call back into the table. */
void pfs_inode_each_file(struct pfs_inode_table *t, void (*fn)(void *ud, uint64_t ino),
                         void *ud);

#endif
