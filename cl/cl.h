/*
 * cl.h - the OpenCL device platefs renders on.
 *
 * Owns the platform and device choice (a GPU when present, else the CPU
 * through PoCL, or what --device names), one context and in-order queue, the
 * program built from the kernels embedded at build time (the .cl files of cl/), and an
 * on-disk cache of compiled program binaries so a second mount does not
 * recompile. Nothing outside cl/ and the ops' run_cl functions includes
 * CL/cl.h.
 *
 * Thread safety: a pfs_cl may be shared by render threads. pfs_cl_lock and
 * pfs_cl_unlock serialise use of the queue and of the kernel objects (kernel
 * arguments are not thread-safe in OpenCL). The ENGINE holds the lock around
 * the whole chain of one frame: pfs_cl_upload, every op's run_cl, and
 * pfs_cl_download; run_cl and pfs_cl_kernel never lock themselves (the mutex
 * is not recursive). pfs_cl_image_create/release and the queries below need
 * no lock.
 *
 * The program is one OpenCL program made of every .cl file of cl/, in
 * file-name order, built with PFS_CL_BUILD_OPTIONS; kernel names are
 * therefore unique across files. docs/opencl.md describes device choice and
 * the binary cache.
 */
#ifndef PFS_CL_H
#define PFS_CL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>

#include "engine/image.h"
#include "util/error.h"

/* Options every kernel is built with: OpenCL C 1.2, IEEE semantics kept
 * (no -cl-fast-relaxed-math / -cl-finite-math-only: NaN and Inf in plates
 * must behave as on the CPU). Devices that offer it also get
 * -cl-fp32-correctly-rounded-divide-sqrt, so float geometry computed in a
 * kernel can match the C reference bit for bit. The options are part of the
 * binary cache key. */
#define PFS_CL_BUILD_OPTIONS "-cl-std=CL1.2"

struct pfs_cl_opts {
    /* NULL or "auto": first GPU, else first CPU. "cpu" / "gpu": first of that
     * type. "P:D": platform P, device D (indices as `platefs devices` lists).
     * Anything else: the first device whose name contains the string. */
    const char *device;
    /* Directory for compiled program binaries; NULL disables the cache. */
    const char *binary_cache_dir;
};

struct pfs_cl;

/* ENODEV with a clear message when there is no platform or no such device;
 * EIO with the full build log when the program fails to compile. */
int pfs_cl_open(const struct pfs_cl_opts *opts, struct pfs_cl **out, pfs_error *err);
void pfs_cl_close(struct pfs_cl *cl);

/* Lists every platform and device, with the indices --device accepts. */
int pfs_cl_list_devices(FILE *out, pfs_error *err);

const char *pfs_cl_device_name(const struct pfs_cl *cl);
/* 1 when this handle's program was loaded from the binary cache, 0 when it
 * was compiled from source (no cache, a miss, or a corrupt/rejected file). */
int pfs_cl_program_from_cache(const struct pfs_cl *cl);

void pfs_cl_lock(struct pfs_cl *cl);
void pfs_cl_unlock(struct pfs_cl *cl);

cl_context pfs_cl_context(struct pfs_cl *cl);
cl_command_queue pfs_cl_queue(struct pfs_cl *cl);
/* A kernel of the embedded program by function name, created once and kept
 * for the life of cl (do not release it). Call with the lock held; ENOENT
 * when the program has no such kernel. */
cl_kernel pfs_cl_kernel(struct pfs_cl *cl, const char *name, pfs_error *err);

/* One kernel argument; PFS_CL_ARG(x) passes the variable x by value. */
struct pfs_cl_arg {
    size_t size;
    const void *value;
};
#define PFS_CL_ARG(x) ((struct pfs_cl_arg){sizeof(x), &(x)})

/* Sets the kernel's arguments in order and enqueues it over a width x
 * height grid, without waiting. Call with the lock held; errors name the
 * kernel and the call that failed (ENOMEM for out-of-memory statuses). */
int pfs_cl_run_2d(struct pfs_cl *cl, const char *kernel, const struct pfs_cl_arg *args,
                  int nargs, int width, int height, pfs_error *err);

/* A read-only device copy of a small host array (tables an op prepared).
 * Release with clReleaseMemObject once its kernels are enqueued. */
int pfs_cl_buffer_from(struct pfs_cl *cl, const void *data, size_t bytes, cl_mem *out,
                       pfs_error *err);

/* A device buffer holding one image with the same geometry fields. */
struct pfs_cl_image {
    int width, height, origin_x, origin_y;
    struct pfs_rect display;
    cl_mem buf; /* width * height * 4 floats */
};

/* EINVAL for an empty geometry, ENOMEM when the device cannot allocate. */
int pfs_cl_image_create(struct pfs_cl *cl, const struct pfs_image *like,
                        struct pfs_cl_image *out, pfs_error *err);
/* Safe on a zeroed or already released image. */
void pfs_cl_image_release(struct pfs_cl_image *img);
/* Blocking write; EINVAL when the sizes differ. */
int pfs_cl_upload(struct pfs_cl *cl, const struct pfs_image *src,
                  struct pfs_cl_image *dst, pfs_error *err);
/* Blocks until the queue has finished (every kernel enqueued before it on
 * the in-order queue) and the pixels are in dst; EINVAL when sizes differ. */
int pfs_cl_download(struct pfs_cl *cl, const struct pfs_cl_image *src,
                    struct pfs_image *dst, pfs_error *err);

/* Maps an OpenCL status to a message ("CL_OUT_OF_RESOURCES"). */
const char *pfs_cl_status_name(cl_int status);

#endif
