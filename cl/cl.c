/*
 * cl.c - the OpenCL device: platform and device choice, one context and
 * in-order queue, the program built from the embedded kernels, and the
 * on-disk cache of program binaries.
 *
 * Opening walks every platform's devices once into a flat list (the same list
 * `platefs devices` prints, so "P:D" means the same thing in both places),
 * picks one, and builds the program. The program is all embedded .cl files
 * passed as one source list, in file-name order (cl_embedded.h), so kernels
 * from different files may share helpers declared in earlier files.
 *
 * Compiling from source costs seconds on PoCL and on some GPU drivers, and a
 * mount should not pay it every time; so the device binary is kept in
 * binary_cache_dir under a key that changes whenever anything that could
 * change the binary changes: platform name and version, device name, driver
 * version, build options and the full source text (XXH3-128). The file is
 * wrapped in a small header of our own carrying the key and a checksum of
 * the payload, so a truncated or bit-flipped file is refused before the
 * driver ever sees it (drivers are not uniformly robust against garbage);
 * a payload the driver itself rejects is also ignored. Either way the program
 * is rebuilt from source and the file overwritten. Files are written to a
 * temporary name and renamed, so concurrent mounts never read a half-written
 * binary. A cache that cannot be written is a warning, never an error.
 */
#include "cl/cl.h"

#include <CL/cl_ext.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cl/cl_embedded.h"
#include "util/log.h"

#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

#define NO_PLATFORM_HINT                                                       \
    "install an OpenCL ICD: pocl-opencl-icd for the CPU, or your GPU "        \
    "vendor's ICD (e.g. nvidia-opencl-icd, mesa-opencl-icd, intel-opencl-icd)" \
    ", and check that /etc/OpenCL/vendors lists it (one .icd file per "        \
    "driver; OCL_ICD_VENDORS overrides that directory)"

#define MAX_KERNELS 64

struct kernel_slot {
    char *name;
    cl_kernel kernel;
};

struct pfs_cl {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    pthread_mutex_t lock;
    char device_name[256];
    char options[128]; /* PFS_CL_BUILD_OPTIONS plus per-device additions */
    int from_cache;
    struct kernel_slot kernels[MAX_KERNELS];
    int nkernels;
};

/* One device of one platform, with what selection and listing need. */
struct dev_entry {
    int pi, di;
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
    char name[256];
    char platform_name[256];
    cl_uint compute_units;
    cl_ulong global_mem;
    cl_bool available;
};

struct dev_list {
    struct dev_entry *v;
    int n;
};

const char *pfs_cl_status_name(cl_int status)
{
    switch (status) {
#define S(x) \
    case x:  \
        return #x;
        S(CL_SUCCESS)
        S(CL_DEVICE_NOT_FOUND)
        S(CL_DEVICE_NOT_AVAILABLE)
        S(CL_COMPILER_NOT_AVAILABLE)
        S(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        S(CL_OUT_OF_RESOURCES)
        S(CL_OUT_OF_HOST_MEMORY)
        S(CL_PROFILING_INFO_NOT_AVAILABLE)
        S(CL_MEM_COPY_OVERLAP)
        S(CL_IMAGE_FORMAT_MISMATCH)
        S(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        S(CL_BUILD_PROGRAM_FAILURE)
        S(CL_MAP_FAILURE)
        S(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        S(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        S(CL_COMPILE_PROGRAM_FAILURE)
        S(CL_LINKER_NOT_AVAILABLE)
        S(CL_LINK_PROGRAM_FAILURE)
        S(CL_DEVICE_PARTITION_FAILED)
        S(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        S(CL_INVALID_VALUE)
        S(CL_INVALID_DEVICE_TYPE)
        S(CL_INVALID_PLATFORM)
        S(CL_INVALID_DEVICE)
        S(CL_INVALID_CONTEXT)
        S(CL_INVALID_QUEUE_PROPERTIES)
        S(CL_INVALID_COMMAND_QUEUE)
        S(CL_INVALID_HOST_PTR)
        S(CL_INVALID_MEM_OBJECT)
        S(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        S(CL_INVALID_IMAGE_SIZE)
        S(CL_INVALID_SAMPLER)
        S(CL_INVALID_BINARY)
        S(CL_INVALID_BUILD_OPTIONS)
        S(CL_INVALID_PROGRAM)
        S(CL_INVALID_PROGRAM_EXECUTABLE)
        S(CL_INVALID_KERNEL_NAME)
        S(CL_INVALID_KERNEL_DEFINITION)
        S(CL_INVALID_KERNEL)
        S(CL_INVALID_ARG_INDEX)
        S(CL_INVALID_ARG_VALUE)
        S(CL_INVALID_ARG_SIZE)
        S(CL_INVALID_KERNEL_ARGS)
        S(CL_INVALID_WORK_DIMENSION)
        S(CL_INVALID_WORK_GROUP_SIZE)
        S(CL_INVALID_WORK_ITEM_SIZE)
        S(CL_INVALID_GLOBAL_OFFSET)
        S(CL_INVALID_EVENT_WAIT_LIST)
        S(CL_INVALID_EVENT)
        S(CL_INVALID_OPERATION)
        S(CL_INVALID_GL_OBJECT)
        S(CL_INVALID_BUFFER_SIZE)
        S(CL_INVALID_MIP_LEVEL)
        S(CL_INVALID_GLOBAL_WORK_SIZE)
        S(CL_INVALID_PROPERTY)
        S(CL_INVALID_IMAGE_DESCRIPTOR)
        S(CL_INVALID_COMPILER_OPTIONS)
        S(CL_INVALID_LINKER_OPTIONS)
        S(CL_INVALID_DEVICE_PARTITION_COUNT)
        S(CL_PLATFORM_NOT_FOUND_KHR)
#undef S
    default:
        return "unknown OpenCL status";
    }
}

/* Out-of-memory statuses map to ENOMEM so callers can tell "try smaller"
 * from "the device is broken". */
static int status_errno(cl_int status)
{
    switch (status) {
    case CL_OUT_OF_HOST_MEMORY:
    case CL_OUT_OF_RESOURCES:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
        return ENOMEM;
    default:
        return EIO;
    }
}

static int cl_fail(pfs_error *err, cl_int status, const char *what)
{
    return pfs_error_set(err, status_errno(status), "OpenCL: %s failed: %s (%d)", what,
                         pfs_cl_status_name(status), (int)status);
}

static const char *type_name(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (t & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

/* Info strings, trimmed: some drivers pad device names with spaces. */
static void info_string(cl_int (*get)(void *, cl_uint, size_t, void *, size_t *),
                        void *obj, cl_uint param, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    if (get(obj, param, size - 1, buf, &len) != CL_SUCCESS) {
        snprintf(buf, size, "?");
        return;
    }
    buf[size - 1] = '\0';
    char *s = buf;
    while (*s == ' ')
        s++;
    memmove(buf, s, strlen(s) + 1);
    for (size_t n = strlen(buf); n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\n'); n--)
        buf[n - 1] = '\0';
}

static cl_int platform_info(void *p, cl_uint param, size_t size, void *v, size_t *ret)
{
    return clGetPlatformInfo((cl_platform_id)p, param, size, v, ret);
}

static cl_int device_info(void *d, cl_uint param, size_t size, void *v, size_t *ret)
{
    return clGetDeviceInfo((cl_device_id)d, param, size, v, ret);
}

/* A string longer than the buffer fails clGet*Info with CL_INVALID_VALUE;
 * fetch the exact size first for the ones that may be long. */
static char *info_string_alloc(cl_int (*get)(void *, cl_uint, size_t, void *, size_t *),
                               void *obj, cl_uint param)
{
    size_t len = 0;
    if (get(obj, param, 0, NULL, &len) != CL_SUCCESS)
        return strdup("?");
    char *s = calloc(1, len + 1);
    if (s && get(obj, param, len, s, NULL) != CL_SUCCESS)
        s[0] = '\0';
    return s;
}

static int enumerate(struct dev_list *out, pfs_error *err)
{
    out->v = NULL;
    out->n = 0;
    cl_uint np = 0;
    cl_int st = clGetPlatformIDs(0, NULL, &np);
    if (st == CL_PLATFORM_NOT_FOUND_KHR || (st == CL_SUCCESS && np == 0))
        return pfs_error_set(err, ENODEV, "no OpenCL platform found: %s", NO_PLATFORM_HINT);
    if (st != CL_SUCCESS)
        return cl_fail(err, st, "clGetPlatformIDs");
    cl_platform_id *plats = calloc(np, sizeof *plats);
    if (!plats)
        return pfs_error_set(err, ENOMEM, "OpenCL: out of memory");
    st = clGetPlatformIDs(np, plats, NULL);
    if (st != CL_SUCCESS) {
        free(plats);
        return cl_fail(err, st, "clGetPlatformIDs");
    }
    int rc = 0;
    for (cl_uint p = 0; p < np && rc == 0; p++) {
        cl_uint nd = 0;
        st = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
        if (st == CL_DEVICE_NOT_FOUND || nd == 0)
            continue;
        if (st != CL_SUCCESS) {
            /* One broken platform should not hide the others. */
            pfs_log(PFS_LOG_WARN, "OpenCL platform %u: clGetDeviceIDs: %s", p,
                    pfs_cl_status_name(st));
            continue;
        }
        cl_device_id *devs = calloc(nd, sizeof *devs);
        struct dev_entry *grown = realloc(out->v, (size_t)(out->n + (int)nd) * sizeof *grown);
        if (!devs || !grown) {
            free(devs);
            if (grown)
                out->v = grown;
            rc = pfs_error_set(err, ENOMEM, "OpenCL: out of memory");
            break;
        }
        out->v = grown;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL) != CL_SUCCESS)
            nd = 0;
        for (cl_uint d = 0; d < nd; d++) {
            struct dev_entry *e = &out->v[out->n++];
            memset(e, 0, sizeof *e);
            e->pi = (int)p;
            e->di = (int)d;
            e->platform = plats[p];
            e->device = devs[d];
            info_string(platform_info, plats[p], CL_PLATFORM_NAME, e->platform_name,
                        sizeof e->platform_name);
            info_string(device_info, devs[d], CL_DEVICE_NAME, e->name, sizeof e->name);
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof e->type, &e->type, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof e->compute_units,
                            &e->compute_units, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof e->global_mem,
                            &e->global_mem, NULL);
            if (clGetDeviceInfo(devs[d], CL_DEVICE_AVAILABLE, sizeof e->available,
                                &e->available, NULL) != CL_SUCCESS)
                e->available = CL_TRUE;
        }
        free(devs);
    }
    free(plats);
    if (rc) {
        free(out->v);
        out->v = NULL;
        out->n = 0;
    }
    return rc;
}

/* "  0:0  CPU  name (platform)" lines for error messages. */
static void describe_devices(const struct dev_list *l, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    if (l->n == 0)
        snprintf(buf, size, " (none: the platforms expose no device)");
    for (int i = 0; i < l->n && off < size; i++) {
        int w = snprintf(buf + off, size - off, "%s %d:%d %s \"%s\" (%s)", i ? ";" : "",
                         l->v[i].pi, l->v[i].di, type_name(l->v[i].type), l->v[i].name,
                         l->v[i].platform_name);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static bool parse_index_pair(const char *s, int *p, int *d)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    long a = strtol(s, &end, 10);
    if (*end != ':' || end[1] < '0' || end[1] > '9')
        return false;
    long b = strtol(end + 1, &end, 10);
    if (*end != '\0' || a > 1000000 || b > 1000000)
        return false;
    *p = (int)a;
    *d = (int)b;
    return true;
}

static const struct dev_entry *first_of_type(const struct dev_list *l, cl_device_type t)
{
    for (int i = 0; i < l->n; i++)
        if ((l->v[i].type & t) && l->v[i].available)
            return &l->v[i];
    return NULL;
}

static const struct dev_entry *select_device(const struct dev_list *l, const char *spec,
                                             pfs_error *err)
{
    const struct dev_entry *e = NULL;
    int p, d;
    if (!spec || !*spec || strcasecmp(spec, "auto") == 0) {
        e = first_of_type(l, CL_DEVICE_TYPE_GPU);
        if (!e)
            e = first_of_type(l, CL_DEVICE_TYPE_CPU);
        spec = "auto";
    } else if (strcasecmp(spec, "gpu") == 0) {
        e = first_of_type(l, CL_DEVICE_TYPE_GPU);
    } else if (strcasecmp(spec, "cpu") == 0) {
        e = first_of_type(l, CL_DEVICE_TYPE_CPU);
    } else if (parse_index_pair(spec, &p, &d)) {
        for (int i = 0; i < l->n && !e; i++)
            if (l->v[i].pi == p && l->v[i].di == d)
                e = &l->v[i];
    } else {
        for (int i = 0; i < l->n && !e; i++)
            if (strcasestr(l->v[i].name, spec))
                e = &l->v[i];
    }
    if (e && !e->available) {
        pfs_error_set(err, ENODEV, "OpenCL device %d:%d \"%s\" is not available", e->pi,
                      e->di, e->name);
        return NULL;
    }
    if (!e) {
        char list[900];
        describe_devices(l, list, sizeof list);
        pfs_error_set(err, ENODEV,
                      "--device %s: no such OpenCL device; use auto, cpu, gpu, P:D or part "
                      "of a name; devices:%s",
                      spec, list);
    }
    return e;
}

int pfs_cl_list_devices(FILE *out, pfs_error *err)
{
    struct dev_list l;
    int rc = enumerate(&l, err);
    if (rc)
        return rc;
    int last_pi = -1;
    for (int i = 0; i < l.n; i++) {
        const struct dev_entry *e = &l.v[i];
        if (e->pi != last_pi) {
            char *ver = info_string_alloc(platform_info, e->platform, CL_PLATFORM_VERSION);
            fprintf(out, "platform %d: %s (%s)\n", e->pi, e->platform_name, ver ? ver : "?");
            free(ver);
            last_pi = e->pi;
        }
        fprintf(out, "  %d:%d  %-4s %s, %u compute units, %.1f GiB%s\n", e->pi, e->di,
                type_name(e->type), e->name, e->compute_units,
                (double)e->global_mem / (1024.0 * 1024.0 * 1024.0),
                e->available ? "" : " (not available)");
    }
    if (l.n == 0)
        fprintf(out, "no OpenCL device: the platforms found expose none\n");
    free(l.v);
    return 0;
}

/* ---- program build and binary cache ------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void hash_str(XXH3_state_t *st, const char *s)
{
    /* Length first, so ("ab","c") and ("a","bc") hash differently. */
    uint64_t n = strlen(s);
    XXH3_128bits_update(st, &n, sizeof n);
    XXH3_128bits_update(st, s, n);
}

static void cache_key(const struct pfs_cl *cl, char hex[33])
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        hex[0] = '\0';
        return;
    }
    XXH3_128bits_reset(st);
    hash_str(st, "platefs cl binary v1");
    char *s;
    s = info_string_alloc(platform_info, cl->platform, CL_PLATFORM_NAME);
    hash_str(st, s ? s : "");
    free(s);
    s = info_string_alloc(platform_info, cl->platform, CL_PLATFORM_VERSION);
    hash_str(st, s ? s : "");
    free(s);
    s = info_string_alloc(device_info, cl->device, CL_DEVICE_NAME);
    hash_str(st, s ? s : "");
    free(s);
    s = info_string_alloc(device_info, cl->device, CL_DRIVER_VERSION);
    hash_str(st, s ? s : "");
    free(s);
    s = info_string_alloc(device_info, cl->device, CL_DEVICE_VERSION);
    hash_str(st, s ? s : "");
    free(s);
    hash_str(st, cl->options);
    for (size_t i = 0; i < pfs_cl_nsources; i++) {
        hash_str(st, pfs_cl_sources[i].name);
        hash_str(st, pfs_cl_sources[i].text);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
}

/*
 * On-disk layout, little-endian as written by this host (the key already
 * pins the platform, and a foreign file fails the magic or checksum):
 *   magic[8] "PFSCLB1\0", key[32] hex, payload size u64, XXH3-64 of payload,
 *   payload (the driver's CL_PROGRAM_BINARIES blob).
 */
static const char cache_magic[8] = "PFSCLB1";

struct cache_header {
    char magic[8];
    char key[32];
    uint64_t size;
    uint64_t checksum;
};

static int mkdir_p(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return ENAMETOOLONG;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return errno;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return errno;
    return S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
}

/* Reads and checks a cache file; returns the payload or NULL (with why). */
static unsigned char *cache_read(const char *path, const char *key, size_t *size,
                                 const char **why)
{
    *why = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL; /* a miss, not a problem */
    struct cache_header h;
    unsigned char *buf = NULL;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, cache_magic, 8) != 0 ||
        memcmp(h.key, key, 32) != 0) {
        *why = "bad header";
        goto fail;
    }
    if (h.size == 0 || h.size > ((uint64_t)1 << 31)) {
        *why = "bad size";
        goto fail;
    }
    buf = malloc((size_t)h.size);
    if (!buf) {
        *why = "out of memory";
        goto fail;
    }
    if (fread(buf, 1, (size_t)h.size, f) != (size_t)h.size || fgetc(f) != EOF) {
        *why = "wrong length";
        goto fail;
    }
    if (XXH3_64bits(buf, (size_t)h.size) != h.checksum) {
        *why = "checksum mismatch";
        goto fail;
    }
    fclose(f);
    *size = (size_t)h.size;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void cache_write(const char *dir, const char *path, const char *key,
                        const unsigned char *bin, size_t size)
{
    int rc = mkdir_p(dir);
    if (rc) {
        pfs_log(PFS_LOG_WARN, "%s: cannot create OpenCL binary cache directory: %s", dir,
                strerror(rc));
        return;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        pfs_log(PFS_LOG_WARN, "%s: cannot write OpenCL binary cache: %s", tmp, strerror(errno));
        return;
    }
    struct cache_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, cache_magic, 8);
    memcpy(h.key, key, 32);
    h.size = size;
    h.checksum = XXH3_64bits(bin, size);
    rc = write_all(fd, &h, sizeof h);
    if (!rc)
        rc = write_all(fd, bin, size);
    if (!rc && fchmod(fd, 0644) != 0)
        rc = errno;
    if (close(fd) != 0 && !rc)
        rc = errno;
    if (!rc && rename(tmp, path) != 0)
        rc = errno;
    if (rc) {
        pfs_log(PFS_LOG_WARN, "%s: cannot write OpenCL binary cache: %s", path, strerror(rc));
        unlink(tmp);
        return;
    }
    pfs_log(PFS_LOG_DEBUG, "%s: OpenCL program binary cached (%zu bytes)", path, size);
}

static unsigned char *program_binary(cl_program prog, size_t *size)
{
    size_t sz = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) != CL_SUCCESS ||
        sz == 0)
        return NULL;
    unsigned char *bin = malloc(sz);
    if (!bin)
        return NULL;
    unsigned char *ptrs[1] = {bin};
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof ptrs, ptrs, NULL) != CL_SUCCESS) {
        free(bin);
        return NULL;
    }
    *size = sz;
    return bin;
}

static char *build_log(cl_program prog, cl_device_id dev)
{
    size_t len = 0;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) != CL_SUCCESS)
        return NULL;
    char *s = calloc(1, len + 1);
    if (s && clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, len, s, NULL) != CL_SUCCESS)
        s[0] = '\0';
    return s;
}

/* The log sink takes one line per call, of bounded length; a build log can be
 * pages long, so it goes out line by line. */
static void log_lines(enum pfs_log_level level, const char *prefix, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        if (n > 0)
            pfs_log(level, "%s%.*s", prefix, n, p);
        p += n + (nl ? 1 : 0);
    }
}

static int build_from_source(struct pfs_cl *cl, pfs_error *err)
{
    const char **texts = calloc(pfs_cl_nsources, sizeof *texts);
    size_t *lens = calloc(pfs_cl_nsources, sizeof *lens);
    if (!texts || !lens) {
        free(texts);
        free(lens);
        return pfs_error_set(err, ENOMEM, "OpenCL: out of memory");
    }
    for (size_t i = 0; i < pfs_cl_nsources; i++) {
        texts[i] = pfs_cl_sources[i].text;
        lens[i] = pfs_cl_sources[i].len;
    }
    cl_int st;
    cl->program =
        clCreateProgramWithSource(cl->context, (cl_uint)pfs_cl_nsources, texts, lens, &st);
    free(texts);
    free(lens);
    if (st != CL_SUCCESS)
        return cl_fail(err, st, "clCreateProgramWithSource");

    st = clBuildProgram(cl->program, 1, &cl->device, cl->options, NULL, NULL);
    char *blog = build_log(cl->program, cl->device);
    if (st != CL_SUCCESS) {
        pfs_log(PFS_LOG_ERROR, "OpenCL program failed to build for %s (%s); build log:",
                cl->device_name, pfs_cl_status_name(st));
        log_lines(PFS_LOG_ERROR, "  ", blog ? blog : "(no log)");
        /* The first lines usually carry the first error; the rest is in
         * the log. */
        char head[640] = "";
        if (blog) {
            size_t off = 0;
            int lines = 0;
            for (const char *p = blog; *p && lines < 6 && off + 2 < sizeof head; p++) {
                if (*p == '\n') {
                    lines++;
                    if (off > 0 && head[off - 1] != ' ')
                        head[off++] = ' ';
                    head[off++] = '|';
                    head[off++] = ' ';
                    continue;
                }
                head[off++] = *p;
            }
            head[off < sizeof head ? off : sizeof head - 1] = '\0';
        }
        free(blog);
        return pfs_error_set(err, EIO,
                             "OpenCL program (cl/*.cl) failed to build for %s: %s: %s "
                             "(full build log in the log)",
                             cl->device_name, pfs_cl_status_name(st),
                             head[0] ? head : "no build log");
    }
    if (blog && blog[strspn(blog, " \t\r\n")] && pfs_log_enabled(PFS_LOG_DEBUG)) {
        pfs_log(PFS_LOG_DEBUG, "OpenCL build log for %s:", cl->device_name);
        log_lines(PFS_LOG_DEBUG, "  ", blog);
    }
    free(blog);
    return 0;
}

/* Returns true when a cached binary was loaded and built; any failure is
 * logged and leaves cl->program NULL so the caller builds from source. */
static bool load_cached(struct pfs_cl *cl, const char *path, const char *key)
{
    size_t size = 0;
    const char *why = NULL;
    unsigned char *bin = cache_read(path, key, &size, &why);
    if (!bin) {
        if (why)
            pfs_log(PFS_LOG_WARN, "%s: ignoring OpenCL binary cache file (%s); rebuilding",
                    path, why);
        return false;
    }
    const unsigned char *bins[1] = {bin};
    cl_int bin_status = CL_SUCCESS, st;
    cl->program =
        clCreateProgramWithBinary(cl->context, 1, &cl->device, &size, bins, &bin_status, &st);
    free(bin);
    if (st == CL_SUCCESS && bin_status == CL_SUCCESS)
        st = clBuildProgram(cl->program, 1, &cl->device, cl->options, NULL, NULL);
    else if (st == CL_SUCCESS)
        st = bin_status;
    if (st != CL_SUCCESS) {
        pfs_log(PFS_LOG_WARN, "%s: OpenCL driver rejected the cached binary (%s); rebuilding",
                path, pfs_cl_status_name(st));
        if (cl->program)
            clReleaseProgram(cl->program);
        cl->program = NULL;
        return false;
    }
    return true;
}

static int make_program(struct pfs_cl *cl, const char *cache_dir, pfs_error *err)
{
    char key[33] = "";
    char path[4096] = "";
    double t0 = now_s();
    if (cache_dir && *cache_dir) {
        cache_key(cl, key);
        if (key[0] &&
            snprintf(path, sizeof path, "%s/%s.bin", cache_dir, key) < (int)sizeof path &&
            load_cached(cl, path, key)) {
            cl->from_cache = 1;
            pfs_log(PFS_LOG_INFO, "OpenCL program loaded from %s in %.2f s", path,
                    now_s() - t0);
            return 0;
        }
    }
    int rc = build_from_source(cl, err);
    if (rc)
        return rc;
    pfs_log(PFS_LOG_INFO, "OpenCL program built from source for %s in %.2f s",
            cl->device_name, now_s() - t0);
    if (path[0]) {
        size_t size = 0;
        unsigned char *bin = program_binary(cl->program, &size);
        if (bin)
            cache_write(cache_dir, path, key, bin, size);
        else
            pfs_log(PFS_LOG_WARN, "OpenCL driver gave no program binary; not cached");
        free(bin);
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

int pfs_cl_open(const struct pfs_cl_opts *opts, struct pfs_cl **out, pfs_error *err)
{
    *out = NULL;
    struct dev_list l;
    int rc = enumerate(&l, err);
    if (rc)
        return rc;
    const struct dev_entry *e = select_device(&l, opts ? opts->device : NULL, err);
    if (!e) {
        free(l.v);
        return ENODEV;
    }
    struct pfs_cl *cl = calloc(1, sizeof *cl);
    if (!cl) {
        free(l.v);
        return pfs_error_set(err, ENOMEM, "OpenCL: out of memory");
    }
    cl->platform = e->platform;
    cl->device = e->device;
    snprintf(cl->device_name, sizeof cl->device_name, "%s", e->name);
    int pi = e->pi, di = e->di;
    char platform_name[256];
    snprintf(platform_name, sizeof platform_name, "%s", e->platform_name);
    free(l.v);
    pthread_mutex_init(&cl->lock, NULL);

    cl_int st;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform,
                                     0};
    cl->context = clCreateContext(props, 1, &cl->device, NULL, NULL, &st);
    if (st != CL_SUCCESS) {
        rc = cl_fail(err, st, "clCreateContext");
        goto fail;
    }
    cl->queue = clCreateCommandQueue(cl->context, cl->device, 0, &st);
    if (st != CL_SUCCESS) {
        rc = cl_fail(err, st, "clCreateCommandQueue");
        goto fail;
    }
    /* Correctly rounded float division and sqrt where the device offers
     * them: the ops' C references rely on it to compute the same float
     * geometry (window masks) bit for bit. */
    cl_device_fp_config fp = 0;
    clGetDeviceInfo(cl->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    snprintf(cl->options, sizeof cl->options, "%s%s", PFS_CL_BUILD_OPTIONS,
             (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT)
                 ? " -cl-fp32-correctly-rounded-divide-sqrt"
                 : "");
    pfs_log(PFS_LOG_INFO, "OpenCL device %d:%d %s (%s), build options %s", pi, di,
            cl->device_name, platform_name, cl->options);
    rc = make_program(cl, opts ? opts->binary_cache_dir : NULL, err);
    if (rc)
        goto fail;
    *out = cl;
    return 0;
fail:
    pfs_cl_close(cl);
    return rc;
}

void pfs_cl_close(struct pfs_cl *cl)
{
    if (!cl)
        return;
    for (int i = 0; i < cl->nkernels; i++) {
        clReleaseKernel(cl->kernels[i].kernel);
        free(cl->kernels[i].name);
    }
    if (cl->queue) {
        clFinish(cl->queue);
        clReleaseCommandQueue(cl->queue);
    }
    if (cl->program)
        clReleaseProgram(cl->program);
    if (cl->context)
        clReleaseContext(cl->context);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
}

const char *pfs_cl_device_name(const struct pfs_cl *cl)
{
    return cl->device_name;
}

int pfs_cl_program_from_cache(const struct pfs_cl *cl)
{
    return cl->from_cache;
}

void pfs_cl_lock(struct pfs_cl *cl)
{
    pthread_mutex_lock(&cl->lock);
}

void pfs_cl_unlock(struct pfs_cl *cl)
{
    pthread_mutex_unlock(&cl->lock);
}

cl_context pfs_cl_context(struct pfs_cl *cl)
{
    return cl->context;
}

cl_command_queue pfs_cl_queue(struct pfs_cl *cl)
{
    return cl->queue;
}

cl_kernel pfs_cl_kernel(struct pfs_cl *cl, const char *name, pfs_error *err)
{
    for (int i = 0; i < cl->nkernels; i++)
        if (strcmp(cl->kernels[i].name, name) == 0)
            return cl->kernels[i].kernel;
    if (cl->nkernels == MAX_KERNELS) {
        pfs_error_set(err, ENOMEM, "OpenCL: more than %d kernels", MAX_KERNELS);
        return NULL;
    }
    cl_int st;
    cl_kernel k = clCreateKernel(cl->program, name, &st);
    if (st != CL_SUCCESS) {
        pfs_error_set(err, st == CL_INVALID_KERNEL_NAME ? ENOENT : status_errno(st),
                      "OpenCL kernel %s: %s", name, pfs_cl_status_name(st));
        return NULL;
    }
    char *copy = strdup(name);
    if (!copy) {
        clReleaseKernel(k);
        pfs_error_set(err, ENOMEM, "OpenCL: out of memory");
        return NULL;
    }
    cl->kernels[cl->nkernels].name = copy;
    cl->kernels[cl->nkernels].kernel = k;
    cl->nkernels++;
    return k;
}

/* ---- images -------------------------------------------------------------- */

static size_t image_bytes(int width, int height)
{
    return (size_t)width * (size_t)height * 4u * sizeof(float);
}

int pfs_cl_image_create(struct pfs_cl *cl, const struct pfs_image *like,
                        struct pfs_cl_image *out, pfs_error *err)
{
    memset(out, 0, sizeof *out);
    if (like->width <= 0 || like->height <= 0)
        return pfs_error_set(err, EINVAL, "OpenCL image: empty size %dx%d", like->width,
                             like->height);
    cl_int st;
    cl_mem buf = clCreateBuffer(cl->context, CL_MEM_READ_WRITE,
                                image_bytes(like->width, like->height), NULL, &st);
    if (st != CL_SUCCESS)
        return pfs_error_set(err, st == CL_INVALID_BUFFER_SIZE ? ENOMEM : status_errno(st),
                             "OpenCL image %dx%d: clCreateBuffer: %s", like->width,
                             like->height, pfs_cl_status_name(st));
    out->width = like->width;
    out->height = like->height;
    out->origin_x = like->origin_x;
    out->origin_y = like->origin_y;
    out->display = like->display;
    out->buf = buf;
    return 0;
}

void pfs_cl_image_release(struct pfs_cl_image *img)
{
    if (img && img->buf) {
        clReleaseMemObject(img->buf);
        img->buf = NULL;
    }
}

int pfs_cl_upload(struct pfs_cl *cl, const struct pfs_image *src, struct pfs_cl_image *dst,
                  pfs_error *err)
{
    if (src->width != dst->width || src->height != dst->height)
        return pfs_error_set(err, EINVAL, "OpenCL upload: image %dx%d into buffer %dx%d",
                             src->width, src->height, dst->width, dst->height);
    cl_int st = clEnqueueWriteBuffer(cl->queue, dst->buf, CL_TRUE, 0,
                                     image_bytes(src->width, src->height), src->px, 0, NULL,
                                     NULL);
    if (st != CL_SUCCESS)
        return cl_fail(err, st, "upload (clEnqueueWriteBuffer)");
    return 0;
}

int pfs_cl_download(struct pfs_cl *cl, const struct pfs_cl_image *src, struct pfs_image *dst,
                    pfs_error *err)
{
    if (src->width != dst->width || src->height != dst->height)
        return pfs_error_set(err, EINVAL, "OpenCL download: buffer %dx%d into image %dx%d",
                             src->width, src->height, dst->width, dst->height);
    /* A blocking read on an in-order queue completes after every command
     * enqueued before it, i.e. after the op chain. */
    cl_int st = clEnqueueReadBuffer(cl->queue, src->buf, CL_TRUE, 0,
                                    image_bytes(src->width, src->height), dst->px, 0, NULL,
                                    NULL);
    if (st != CL_SUCCESS)
        return cl_fail(err, st, "download (clEnqueueReadBuffer)");
    return 0;
}

int pfs_cl_run_2d(struct pfs_cl *cl, const char *kernel, const struct pfs_cl_arg *args,
                  int nargs, int width, int height, pfs_error *err)
{
    cl_kernel k = pfs_cl_kernel(cl, kernel, err);
    if (!k)
        return err && err->code ? err->code : EIO;
    for (int a = 0; a < nargs; a++) {
        cl_int st = clSetKernelArg(k, (cl_uint)a, args[a].size, args[a].value);
        if (st != CL_SUCCESS)
            return pfs_error_set(err, status_errno(st), "OpenCL kernel %s: argument %d: %s",
                                 kernel, a, pfs_cl_status_name(st));
    }
    size_t global[2] = {(size_t)width, (size_t)height};
    cl_int st = clEnqueueNDRangeKernel(cl->queue, k, 2, NULL, global, NULL, 0, NULL, NULL);
    if (st != CL_SUCCESS)
        return pfs_error_set(err, status_errno(st), "OpenCL kernel %s: enqueue %dx%d: %s",
                             kernel, width, height, pfs_cl_status_name(st));
    return 0;
}

int pfs_cl_buffer_from(struct pfs_cl *cl, const void *data, size_t bytes, cl_mem *out,
                       pfs_error *err)
{
    cl_int st;
    *out = clCreateBuffer(cl->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes,
                          (void *)data, &st);
    if (st != CL_SUCCESS) {
        *out = NULL;
        return pfs_error_set(err, status_errno(st), "OpenCL: a %zu-byte table: %s", bytes,
                             pfs_cl_status_name(st));
    }
    return 0;
}
