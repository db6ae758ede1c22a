/*
 * engine_refs.c - decoded frames and flows, shared between renders; see
 * engine_refs.h.
 */
#include "engine/engine_refs.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ref_entry {
    char *key;
    void *item;       /* NULL while being made */
    size_t bytes;
    ref_free_fn free_item;
    bool failed;      /* make failed: waiters report err, the entry goes */
    pfs_error err;
    int users;        /* holders, and waiters while being made */
    uint64_t used;    /* last use, for LRU eviction */
    struct ref_entry *next;
};

struct ref_cache {
    pthread_mutex_t lock;
    pthread_cond_t made;
    struct ref_entry *entries;
    size_t budget;
    uint64_t clock;
};

struct ref_cache *ref_cache_new(size_t budget)
{
    struct ref_cache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    pthread_mutex_init(&rc->lock, NULL);
    pthread_cond_init(&rc->made, NULL);
    rc->budget = budget;
    return rc;
}

static void entry_free(struct ref_entry *e)
{
    if (e->item && e->free_item)
        e->free_item(e->item);
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
    pthread_cond_destroy(&rc->made);
    pthread_mutex_destroy(&rc->lock);
    free(rc);
}

static struct ref_entry *find(struct ref_cache *rc, const char *key)
{
    for (struct ref_entry *e = rc->entries; e; e = e->next)
        if (!e->failed && !strcmp(e->key, key))
            return e;
    return NULL;
}

static void unlink_entry(struct ref_cache *rc, struct ref_entry *victim)
{
    for (struct ref_entry **link = &rc->entries; *link; link = &(*link)->next) {
        if (*link == victim) {
            *link = victim->next;
            return;
        }
    }
}

/* Drops least recently used finished entries nobody holds until the unheld
 * ones fit the budget. Called with the lock held. */
static void evict(struct ref_cache *rc)
{
    for (;;) {
        size_t unheld = 0;
        struct ref_entry *victim = NULL;
        for (struct ref_entry *e = rc->entries; e; e = e->next) {
            if (e->users || !e->item)
                continue;
            unheld += e->bytes;
            if (!victim || e->used < victim->used)
                victim = e;
        }
        if (!victim || unheld <= rc->budget)
            return;
        unlink_entry(rc, victim);
        entry_free(victim);
    }
}

int ref_cache_get(struct ref_cache *rc, const char *key, ref_make_fn make, void *ud,
                  ref_free_fn free_item, const void **out, pfs_error *err)
{
    *out = NULL;
    pthread_mutex_lock(&rc->lock);
    struct ref_entry *e = find(rc, key);
    if (e) {
        e->users++;
        while (!e->item && !e->failed)
            pthread_cond_wait(&rc->made, &rc->lock);
        if (e->failed) {
            int code = e->err.code ? e->err.code : EIO;
            if (err)
                *err = e->err;
            if (--e->users == 0)
                entry_free(e); /* unlinked by its maker */
            pthread_mutex_unlock(&rc->lock);
            return code;
        }
        e->used = ++rc->clock;
        *out = e->item;
        pthread_mutex_unlock(&rc->lock);
        return 0;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) {
        free(e);
        pthread_mutex_unlock(&rc->lock);
        return pfs_error_set(err, ENOMEM, "%s: out of memory", key);
    }
    e->free_item = free_item;
    e->users = 1;
    e->next = rc->entries;
    rc->entries = e;
    pthread_mutex_unlock(&rc->lock);

    /* Made without the lock: decoding and flow take long. */
    void *item = NULL;
    size_t bytes = 0;
    pfs_error merr;
    pfs_error_clear(&merr);
    int rc_make = make(ud, &item, &bytes, &merr);

    pthread_mutex_lock(&rc->lock);
    if (rc_make) {
        e->failed = true;
        e->err = merr;
        if (!e->err.code)
            e->err.code = rc_make;
        unlink_entry(rc, e);
        if (err)
            *err = merr;
        if (--e->users == 0)
            entry_free(e);
    } else {
        e->item = item;
        e->bytes = bytes;
        e->used = ++rc->clock;
        *out = item;
    }
    pthread_cond_broadcast(&rc->made);
    if (!rc_make)
        evict(rc);
    pthread_mutex_unlock(&rc->lock);
    return rc_make;
}

void ref_cache_release(struct ref_cache *rc, const void *item)
{
    if (!item)
        return;
    pthread_mutex_lock(&rc->lock);
    for (struct ref_entry *e = rc->entries; e; e = e->next) {
        if (e->item == item) {
            e->users--;
            break;
        }
    }
    evict(rc);
    pthread_mutex_unlock(&rc->lock);
}

/* ---- images -------------------------------------------------------------- */

struct image_make {
    ref_decode_fn decode;
    void *ud;
};

static void image_free(void *item)
{
    pfs_image_free(item);
    free(item);
}

static int image_make(void *ud, void **item, size_t *bytes, pfs_error *err)
{
    const struct image_make *m = ud;
    struct pfs_image *img = calloc(1, sizeof *img);
    if (!img)
        return pfs_error_set(err, ENOMEM, "out of memory");
    int rc = m->decode(m->ud, img, err);
    if (rc) {
        image_free(img);
        return rc;
    }
    *item = img;
    *bytes = pfs_image_floats(img) * sizeof(float);
    return 0;
}

int ref_cache_get_image(struct ref_cache *rc, const char *key, ref_decode_fn decode, void *ud,
                        const struct pfs_image **out, pfs_error *err)
{
    struct image_make m = {decode, ud};
    const void *item = NULL;
    int r = ref_cache_get(rc, key, image_make, &m, image_free, &item, err);
    *out = item;
    return r;
}
