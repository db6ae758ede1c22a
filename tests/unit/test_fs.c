/*
 * test_fs.c - the file system's inode table without a kernel: numbers issued
 * at lookup resolve to their paths, lookup counts follow the kernel's
 * forgets, forgotten or foreign numbers never resolve, and the regular-file
 * walk (used to invalidate pages after a rule change) sees exactly the files.
 * The callbacks themselves are exercised by the integration tests, which
 * mount for real.
 */
#include <limits.h>
#include <string.h>

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "check.h"
#include "fs/inode.h"

static void count_file(void *ud, uint64_t ino)
{
    (*(int *)ud)++;
}

static void test_lookup_and_forget(void)
{
    struct pfs_inode_table *t = pfs_inode_table_new();
    REQUIRE(t);
    char path[PATH_MAX];
    CHECK(pfs_inode_path(t, FUSE_ROOT_ID, path, sizeof path) && path[0] == '\0');

    struct pfs_inode *a = pfs_inode_lookup(t, "A001/A001C003.1001.exr", true);
    struct pfs_inode *again = pfs_inode_lookup(t, "A001/A001C003.1001.exr", true);
    struct pfs_inode *dir = pfs_inode_lookup(t, "A001", false);
    REQUIRE(a && again && dir);
    CHECK(a == again && a->nlookup == 2);
    CHECK(a->ino != dir->ino && a->ino != FUSE_ROOT_ID);
    CHECK(pfs_inode_path(t, a->ino, path, sizeof path) &&
          strcmp(path, "A001/A001C003.1001.exr") == 0);
    CHECK(!pfs_inode_path(t, a->ino, path, 5)); /* too small a buffer: refused */

    int files = 0;
    pfs_inode_each_file(t, count_file, &files);
    CHECK(files == 1);

    uint64_t ino = a->ino;
    pfs_inode_forget(t, ino, 1);
    CHECK(pfs_inode_path(t, ino, path, sizeof path)); /* one lookup left */
    pfs_inode_forget(t, ino, 1);
    CHECK(!pfs_inode_path(t, ino, path, sizeof path)); /* gone */
    pfs_inode_forget(t, ino, 1);                      /* a stale forget is harmless */
    CHECK(!pfs_inode_path(t, 0x12345678, path, sizeof path));
    pfs_inode_forget(t, FUSE_ROOT_ID, 100); /* the root is never forgotten */
    CHECK(pfs_inode_path(t, FUSE_ROOT_ID, path, sizeof path));
    pfs_inode_table_free(t);
}

/* Many paths: every number resolves to its own path. */
static void test_many(void)
{
    struct pfs_inode_table *t = pfs_inode_table_new();
    REQUIRE(t);
    enum { N = 20000 };
    static uint64_t inos[N];
    char name[64], path[PATH_MAX];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "L001/L001C001.%05d.exr", i);
        struct pfs_inode *n = pfs_inode_lookup(t, name, true);
        REQUIRE(n);
        inos[i] = n->ino;
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "L001/L001C001.%05d.exr", i);
        if (!pfs_inode_path(t, inos[i], path, sizeof path) || strcmp(path, name) != 0)
            bad++;
    }
    CHECK(bad == 0);
    for (int i = 0; i < N; i += 2)
        pfs_inode_forget(t, inos[i], 1);
    int files = 0;
    pfs_inode_each_file(t, count_file, &files);
    CHECKF(files == N / 2, "%d files left", files);
    pfs_inode_table_free(t);
}

int main(void)
{
    RUN(test_lookup_and_forget);
    RUN(test_many);
    return CHECK_DONE();
}
