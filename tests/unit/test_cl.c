/*
 * test_cl.c - cl/ against the real OpenCL platform (PoCL's CPU device when
 * there is no GPU): device choice and its errors, the message when no
 * platform exists at all, the binary cache (miss, hit, corrupt file, file the
 * driver rejects, unwritable directory), kernels by name, and bit-exact
 * upload/download.
 */
#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cl/cl.h"
#include "tests/unit/check.h"

static char tmpdir[] = "/tmp/pfs-test-cl-XXXXXX";

/* pfs_image_alloc lives in the engine; this test links cl/ alone. */
static void image_alloc(struct pfs_image *img, int width, int height)
{
    memset(img, 0, sizeof *img);
    img->width = width;
    img->height = height;
    img->px = malloc((size_t)width * (size_t)height * 4 * sizeof(float));
    REQUIRE(img->px);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* The first file of dir matching pat (a glob), and how many match. */
static int find_files(const char *dir, const char *pat, char *path, size_t size)
{
    char pattern[512];
    snprintf(pattern, sizeof pattern, "%s/%s", dir, pat);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return 0;
    int n = (int)g.gl_pathc;
    if (path)
        snprintf(path, size, "%s", g.gl_pathv[0]);
    globfree(&g);
    return n;
}

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    REQUIRE(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void spew(const char *path, const unsigned char *buf, size_t size)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(buf, 1, size, f) == size);
    fclose(f);
}

/* Runs in a child before this process touches OpenCL: the ICD loader reads
 * its vendor directory once per process. */
static void test_no_platform(void)
{
    char empty[64];
    snprintf(empty, sizeof empty, "%s/no-vendors", tmpdir);
    REQUIRE(mkdir(empty, 0700) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setenv("OCL_ICD_VENDORS", empty, 1);
        struct pfs_cl *cl = NULL;
        pfs_error err;
        pfs_error_clear(&err);
        int rc = pfs_cl_open(NULL, &cl, &err);
        fprintf(stderr, "  no platform: %s\n", err.msg);
        int ok = rc == ENODEV && err.code == ENODEV && !cl &&
                 strstr(err.msg, "pocl-opencl-icd") && strstr(err.msg, "/etc/OpenCL/vendors");
        pfs_error_clear(&err);
        ok = ok && pfs_cl_list_devices(stdout, &err) == ENODEV;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_open_auto(void)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    REQUIRE(pfs_cl_open(NULL, &cl, &err) == 0);
    fprintf(stderr, "  auto: %s\n", pfs_cl_device_name(cl));
    CHECK(pfs_cl_device_name(cl)[0] != '\0');
    CHECK(pfs_cl_program_from_cache(cl) == 0);
    CHECK(pfs_cl_context(cl) != NULL);
    CHECK(pfs_cl_queue(cl) != NULL);

    pfs_cl_lock(cl);
    cl_kernel k = pfs_cl_kernel(cl, "relight", &err);
    CHECK(k != NULL);
    CHECK(pfs_cl_kernel(cl, "relight", &err) == k);
    pfs_error_clear(&err);
    CHECK(pfs_cl_kernel(cl, "no_such_kernel", &err) == NULL);
    CHECK(err.code == ENOENT);
    CHECK(pfs_cl_kernel(cl, "no_such_kernel", NULL) == NULL);
    pfs_cl_unlock(cl);
    pfs_cl_close(cl);

    struct pfs_cl_opts opts = {.device = "auto"};
    REQUIRE(pfs_cl_open(&opts, &cl, &err) == 0);
    pfs_cl_close(cl);
}

static void test_open_named(void)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_cl_opts opts = {.device = "cpu"};
    REQUIRE(pfs_cl_open(&opts, &cl, &err) == 0);
    char name[256];
    snprintf(name, sizeof name, "%s", pfs_cl_device_name(cl));
    pfs_cl_close(cl);

    /* The same device by index, by a piece of its name in another case. */
    opts.device = "0:0";
    int rc = pfs_cl_open(&opts, &cl, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0)
        pfs_cl_close(cl);

    char piece[8] = "";
    for (int i = 0; i < 6 && name[i]; i++)
        piece[i] = (char)((name[i] >= 'a' && name[i] <= 'z') ? name[i] - 32 : name[i]);
    opts.device = piece;
    rc = pfs_cl_open(&opts, &cl, &err);
    CHECKF(rc == 0, "%s: %s", piece, err.msg);
    if (rc == 0) {
        CHECK(strcasestr(pfs_cl_device_name(cl), piece) != NULL);
        pfs_cl_close(cl);
    }

    /* "gpu" either opens one or says there is none. */
    opts.device = "gpu";
    rc = pfs_cl_open(&opts, &cl, &err);
    CHECK(rc == 0 || rc == ENODEV);
    if (rc == 0)
        pfs_cl_close(cl);
}

static void test_bad_device(void)
{
    struct pfs_cl *cl = (struct pfs_cl *)&cl;
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_cl_opts opts = {.device = "no-such-device-xyz"};
    CHECK(pfs_cl_open(&opts, &cl, &err) == ENODEV);
    CHECK(cl == NULL);
    CHECK(err.code == ENODEV);
    fprintf(stderr, "  bad device: %s\n", err.msg);
    CHECK(strstr(err.msg, "no-such-device-xyz") != NULL);
    CHECK(strstr(err.msg, "0:0") != NULL); /* the listing */

    opts.device = "7:3";
    CHECK(pfs_cl_open(&opts, &cl, &err) == ENODEV);
    opts.device = "0:";
    CHECK(pfs_cl_open(&opts, &cl, &err) == ENODEV);
    CHECK(pfs_cl_open(&opts, &cl, NULL) == ENODEV);
}

static void test_list_devices(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f);
    pfs_error err;
    CHECK(pfs_cl_list_devices(f, &err) == 0);
    fclose(f);
    fprintf(stderr, "%s", buf);
    CHECK(strstr(buf, "0:0") != NULL);
    CHECK(strstr(buf, "compute units") != NULL);
    CHECK(strstr(buf, "GiB") != NULL);
    free(buf);
}

static int open_cached(const char *dir, double *seconds)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_cl_opts opts = {.device = "auto", .binary_cache_dir = dir};
    double t0 = now_s();
    int rc = pfs_cl_open(&opts, &cl, &err);
    if (seconds)
        *seconds = now_s() - t0;
    CHECKF(rc == 0, "%s", err.msg);
    if (rc)
        return -1;
    /* A loaded program must still yield its kernels. */
    pfs_cl_lock(cl);
    CHECK(pfs_cl_kernel(cl, "relight", &err) != NULL);
    pfs_cl_unlock(cl);
    int from_cache = pfs_cl_program_from_cache(cl);
    pfs_cl_close(cl);
    return from_cache;
}

static void test_binary_cache(void)
{
    char dir[128], bin[1024];
    /* Two levels that do not exist yet: the cache makes them. */
    snprintf(dir, sizeof dir, "%s/cache/kernels", tmpdir);

    double t_build, t_load;
    CHECK(open_cached(dir, &t_build) == 0);
    REQUIRE(find_files(dir, "*.bin", bin, sizeof bin) == 1);
    CHECK(open_cached(dir, &t_load) == 1);
    fprintf(stderr, "  open with compile %.3f s, from the binary cache %.3f s\n", t_build,
            t_load);

    /* Bit flips in the payload: refused by our checksum, rebuilt, rewritten. */
    size_t size;
    unsigned char *good = slurp(bin, &size);
    REQUIRE(size > 200);
    unsigned char *bad = malloc(size);
    REQUIRE(bad);
    memcpy(bad, good, size);
    for (size_t i = size / 2; i < size / 2 + 16; i++)
        bad[i] ^= 0x5a;
    spew(bin, bad, size);
    CHECK(open_cached(dir, NULL) == 0);
    CHECK(open_cached(dir, NULL) == 1);

    /* Truncated, and empty. */
    spew(bin, good, size / 3);
    CHECK(open_cached(dir, NULL) == 0);
    spew(bin, good, 0);
    CHECK(open_cached(dir, NULL) == 0);
    CHECK(open_cached(dir, NULL) == 1);

    /* A well-formed file whose payload the driver cannot make sense of: the
     * header (magic 8, key 32, size 8, XXH3-64 8) is consistent, so only
     * the driver can reject it. */
    const size_t header = 56;
    memcpy(bad, good, size);
    for (size_t i = header; i < size; i++)
        bad[i] = (unsigned char)(i * 7919u >> 3);
    uint64_t sum = XXH3_64bits(bad + header, size - header);
    memcpy(bad + 48, &sum, sizeof sum);
    spew(bin, bad, size);
    CHECK(open_cached(dir, NULL) == 0);
    CHECK(open_cached(dir, NULL) == 1);
    CHECK(find_files(dir, "*", NULL, 0) == 1); /* no temporary files left */
    free(good);
    free(bad);

    /* A cache that cannot be written is only a warning. */
    CHECK(open_cached("/proc/platefs-no-such-dir/kernels", NULL) == 0);
}

static void test_round_trip(void)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    REQUIRE(pfs_cl_open(NULL, &cl, &err) == 0);

    struct pfs_image a = {0}, b = {0};
    image_alloc(&a, 37, 23);
    image_alloc(&b, 37, 23);
    a.origin_x = -5;
    a.origin_y = 7;
    size_t n = pfs_image_floats(&a);
    /* Values a careless path would alter: NaN payloads (quiet and
     * signalling), -0, infinities, subnormals, the extremes. */
    static const uint32_t special[] = {0x7fc12345u, 0x7f812345u, 0xffc00001u, 0x80000000u,
                                       0x7f800000u, 0xff800000u, 0x00000001u, 0x807fffffu,
                                       0x7f7fffffu, 0x3f800000u};
    srand(7);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = i % 5 == 0 ? special[(i / 5) % 10] : (uint32_t)rand() * 2654435761u;
        memcpy(&a.px[i], &bits, sizeof bits);
    }
    memset(b.px, 0xcd, n * sizeof(float));

    struct pfs_cl_image d;
    REQUIRE(pfs_cl_image_create(cl, &a, &d, &err) == 0);
    CHECK(d.width == 37 && d.height == 23 && d.origin_x == -5 && d.origin_y == 7);
    pfs_cl_lock(cl);
    CHECK(pfs_cl_upload(cl, &a, &d, &err) == 0);
    CHECK(pfs_cl_download(cl, &d, &b, &err) == 0);
    pfs_cl_unlock(cl);
    CHECK(memcmp(a.px, b.px, n * sizeof(float)) == 0);

    /* Geometry mismatches are refused, not truncated. */
    struct pfs_image c = {0};
    image_alloc(&c, 23, 37);
    CHECK(pfs_cl_upload(cl, &c, &d, &err) == EINVAL);
    CHECK(pfs_cl_download(cl, &d, &c, NULL) == EINVAL);
    free(c.px);

    struct pfs_image empty = {0};
    struct pfs_cl_image de;
    CHECK(pfs_cl_image_create(cl, &empty, &de, &err) == EINVAL);
    pfs_cl_image_release(&de);

    pfs_cl_image_release(&d);
    pfs_cl_image_release(&d); /* idempotent */
    free(a.px);
    free(b.px);
    pfs_cl_close(cl);
    pfs_cl_close(NULL);
}

static void test_status_names(void)
{
    CHECK(strcmp(pfs_cl_status_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES") == 0);
    CHECK(strcmp(pfs_cl_status_name(-1001), "CL_PLATFORM_NOT_FOUND_KHR") == 0);
    CHECK(strcmp(pfs_cl_status_name(12345), "unknown OpenCL status") == 0);
}

int main(void)
{
    REQUIRE(mkdtemp(tmpdir));
    RUN(test_no_platform);
    RUN(test_open_auto);
    RUN(test_open_named);
    RUN(test_bad_device);
    RUN(test_list_devices);
    RUN(test_binary_cache);
    RUN(test_round_trip);
    RUN(test_status_names);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return CHECK_DONE();
}
