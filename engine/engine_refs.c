/*
 * engine_refs.c - decoded reference frames, shared between renders; see
 * engine_refs.h.
 */
#include "engine/engine_refs.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ref_entry {
    char *key;
    struct pfs_image img;
    int users;
    uint64_t used; /* last use, for LRU eviction */
    struct ref_entry *next;
};

struct ref_cache {
    pthread_mutex_t lock;
    struct ref_entry *entries;
    int capacity;
    uint64_t clock;
};

struct ref_cache *ref_cache_new(int capacity)
{
    struct ref_cache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    pthread_mutex_init(&rc->lock, NULL);
    rc->capacity = capacity > 0 ? capacity : 1;
    return rc;
}

static void entry_free(struct ref_entry *e)
{
    pfs_image_free(&e->img);
    free(e->key);
    free(e);
}

void ref_cache_free(struct ref_cache *rc)
{
    if (!rc)
        return;
    struct ref_entry *e = rc->entries;
    while (e) {
        struct ref_entry *next = e->next;
        entry_free(e);
        e = next;
    }
    pthread_mutex_destroy(&rc->lock);
    free(rc);
}

static struct ref_entry *find(struct ref_cache *rc, const char *key)
{
    for (struct ref_entry *e = rc->entries; e; e = e->next)
        if (!strcmp(e->key, key))
            return e;
    return NULL;
}

/* Drops least recently used entries nobody holds, down to capacity. Called
 * with the lock held. */
static void evict(struct ref_cache *rc)
{
    for (;;) {
        int unheld = 0;
        struct ref_entry **victim = NULL;
        for (struct ref_entry **link = &rc->entries; *link; link = &(*link)->next) {
            if ((*link)->users)
                continue;
            unheld++;
            if (!victim || (*link)->used < (*victim)->used)
                victim = link;
        }
        if (unheld <= rc->capacity)
            return;
        struct ref_entry *e = *victim;
        *victim = e->next;
        entry_free(e);
    }
}

int ref_cache_get(struct ref_cache *rc, const char *key, ref_decode_fn decode, void *ud,
                  const struct pfs_image **out, pfs_error *err)
{
    pthread_mutex_lock(&rc->lock);
    struct ref_entry *e = find(rc, key);
    if (e) {
        e->users++;
        e->used = ++rc->clock;
        *out = &e->img;
        pthread_mutex_unlock(&rc->lock);
        return 0;
    }
    pthread_mutex_unlock(&rc->lock);

    struct ref_entry *n = calloc(1, sizeof *n);
    if (!n || !(n->key = strdup(key))) {
        free(n);
        return pfs_error_set(err, ENOMEM, "reference frame: out of memory");
    }
    int rc_dec = decode(ud, &n->img, err);
    if (rc_dec) {
        entry_free(n);
        return rc_dec;
    }
    pthread_mutex_lock(&rc->lock);
    e = find(rc, key);
    if (e) {
        entry_free(n); /* another render decoded it first */
    } else {
        e = n;
        e->next = rc->entries;
        rc->entries = e;
    }
    e->users++;
    e->used = ++rc->clock;
    *out = &e->img;
    evict(rc);
    pthread_mutex_unlock(&rc->lock);
    return 0;
}

void ref_cache_release(struct ref_cache *rc, const struct pfs_image *img)
{
    if (!img)
        return;
    pthread_mutex_lock(&rc->lock);
    for (struct ref_entry *e = rc->entries; e; e = e->next) {
        if (&e->img == img) {
            e->users--;
            break;
        }
    }
    evict(rc);
    pthread_mutex_unlock(&rc->lock);
}
