/*
 * inode.c - relpath <-> inode number table with lookup counts; see inode.h.
 *
 * A chained hash on the path finds an inode at lookup; the inode number is
 * the entry's address, and a second hash on the number resolves what the
 * kernel sends. Numbers are looked up rather than dereferenced, so a stale
 * or wrong number is an ENOENT, never a crash.
 */
#include "inode.h"

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define BUCKETS 16384

struct pfs_inode_table {
    pthread_mutex_t lock;
    struct pfs_inode root;
    struct pfs_inode *by_path[BUCKETS];
    struct pfs_inode *by_ino[BUCKETS];
};

static unsigned ino_bucket(uint64_t ino);

static unsigned path_bucket(const char *relpath)
{
    return (unsigned)(XXH3_64bits(relpath, strlen(relpath)) % BUCKETS);
}

struct pfs_inode_table *pfs_inode_table_new(void)
{
    struct pfs_inode_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    t->root.ino = FUSE_ROOT_ID;
    t->root.relpath = "";
    t->root.nlookup = 1;
    return t;
}

void pfs_inode_table_free(struct pfs_inode_table *t)
{
    if (!t)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        struct pfs_inode *i = t->by_path[b];
        while (i) {
            struct pfs_inode *next = i->hash_next;
            free(i->relpath);
            free(i);
            i = next;
        }
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

struct pfs_inode *pfs_inode_lookup(struct pfs_inode_table *t, const char *relpath,
                                   bool is_file)
{
    unsigned b = path_bucket(relpath);
    pthread_mutex_lock(&t->lock);
    struct pfs_inode *i = t->by_path[b];
    while (i && strcmp(i->relpath, relpath) != 0)
        i = i->hash_next;
    if (!i) {
        i = calloc(1, sizeof *i);
        char *copy = strdup(relpath);
        if (!i || !copy) {
            free(i);
            free(copy);
            pthread_mutex_unlock(&t->lock);
            return NULL;
        }
        i->relpath = copy;
        i->ino = (uint64_t)(uintptr_t)i;
        i->hash_next = t->by_path[b];
        t->by_path[b] = i;
        unsigned ib = ino_bucket(i->ino);
        i->ino_next = t->by_ino[ib];
        t->by_ino[ib] = i;
    }
    i->is_file = is_file;
    i->nlookup++;
    pthread_mutex_unlock(&t->lock);
    return i;
}

static unsigned ino_bucket(uint64_t ino)
{
    return (unsigned)(XXH3_64bits(&ino, sizeof ino) % BUCKETS);
}

/* Called with the lock held. */
static struct pfs_inode *find_ino(struct pfs_inode_table *t, uint64_t ino)
{
    if (ino == FUSE_ROOT_ID)
        return &t->root;
    struct pfs_inode *i = t->by_ino[ino_bucket(ino)];
    while (i && i->ino != ino)
        i = i->ino_next;
    return i;
}

bool pfs_inode_path(struct pfs_inode_table *t, uint64_t ino, char *buf, size_t size)
{
    pthread_mutex_lock(&t->lock);
    struct pfs_inode *i = find_ino(t, ino);
    bool ok = i && strlen(i->relpath) < size;
    if (ok)
        strcpy(buf, i->relpath);
    pthread_mutex_unlock(&t->lock);
    return ok;
}

void pfs_inode_forget(struct pfs_inode_table *t, uint64_t ino, uint64_t nlookup)
{
    if (ino == FUSE_ROOT_ID)
        return;
    pthread_mutex_lock(&t->lock);
    struct pfs_inode *i = find_ino(t, ino);
    if (i) {
        i->nlookup = nlookup >= i->nlookup ? 0 : i->nlookup - nlookup;
        if (i->nlookup == 0) {
            struct pfs_inode **link = &t->by_path[path_bucket(i->relpath)];
            while (*link != i)
                link = &(*link)->hash_next;
            *link = i->hash_next;
            struct pfs_inode **ilink = &t->by_ino[ino_bucket(i->ino)];
            while (*ilink != i)
                ilink = &(*ilink)->ino_next;
            *ilink = i->ino_next;
            free(i->relpath);
            free(i);
        }
    }
    pthread_mutex_unlock(&t->lock);
}

void pfs_inode_each_file(struct pfs_inode_table *t, void (*fn)(void *ud, uint64_t ino),
                         void *ud)
{
    pthread_mutex_lock(&t->lock);
    for (int b = 0; b < BUCKETS; b++)
        for (struct pfs_inode *i = t->by_path[b]; i; i = i->hash_next)
            if (i->is_file)
                fn(ud, i->ino);
    pthread_mutex_unlock(&t->lock);
}
