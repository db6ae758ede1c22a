#!/usr/bin/env bash
# bench/run.sh - the mount's performance, measured side by side with a
# reference in the same run and reported as ratios (never asserted in tests).
#
#   1. cached frame reads through the mount vs reads of the same bytes from
#      a native file in the page cache (goal: ratio >= 0.8), both with the
#      kernel's page cache warm (keep_cache) and through the daemon (after a
#      remount, so every byte comes out of LMDB);
#   2. `ls -l` of a 10,000-frame directory: seconds, and renders (must be 0);
#   3. cold render latency of one 1280x720 frame with relight, split into
#      decode / ops (OpenCL) / encode / cache put.
#
# Usage: bench/run.sh [BUILD_DIR]   (default: build). Needs root for FUSE.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
platefs=$build/cli/platefs
work=$(mktemp -d /tmp/platefs-bench.XXXXXX)
mnt=$work/mnt
cache=$work/cache
log=$work/mount.log
mkdir -p "$mnt" "$work/dailies/A001" "$work/dailies/L001" "$work/rules"
export XDG_CACHE_HOME=$work/xdg
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# 1280x720 RGB half frames made from the sample dailies.
for f in "$top"/samples/dailies/A001/A001C003.100[1-8].exr; do
    oiiotool "$f" --resize 1280x720 -d half --compression zip -o "$work/dailies/A001/$(basename "$f")"
done
for i in $(seq 10001 20000); do
    ln "$work/dailies/A001/A001C003.1001.exr" "$work/dailies/L001/L001C001.$i.exr"
done
cp "$top/samples/rules/A001C003.yaml" "$work/rules/"
cat >"$work/rules/L001C001.yaml" <<'YAML'
shot: L001C001
match: ["L001/L001C001.*.exr"]
ops:
  - op: relight
    exposure: 0.5
YAML

mount_fs() {
    "$platefs" mount "$work/dailies" "$mnt" --rules "$work/rules" --cache "$cache" \
        --cache-size 4G -f --log-level debug "$@" >>"$log" 2>&1 &
    for _ in $(seq 1 600); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
    echo "mount failed" >&2; cat "$log" >&2; exit 1
}
unmount_fs() { fusermount3 -u "$mnt"; wait; }

echo "platefs benchmarks ($(nproc) cores, device: $("$platefs" devices 2>/dev/null | grep -m1 -o '0:0.*' || echo none))"
echo

# ---- 3. cold render latency (first, so nothing is cached) --------------
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$@"; }
mount_fs --readahead 0
echo "cold render of one 1280x720 RGB half frame with relight, read through the mount:"
for n in 1002 1003 1004; do
    frame=A001/A001C003.$n.exr
    start=$(date +%s.%N)
    cat "$mnt/$frame" >/dev/null
    end=$(date +%s.%N)
    # The cache put follows the reply, on the storer thread.
    line=
    stored=
    for _ in $(seq 1 100); do
        line=$(grep "rendered $frame" "$log" | tail -1 || true)
        stored=$(grep "stored $frame" "$log" | tail -1 || true)
        [ -n "$line" ] && [ -n "$stored" ] && break
        sleep 0.05
    done
    what="frame $n"
    [ $n = 1002 ] && what="frame $n (first of the mount: the device compiles its kernels)"
    echo "  $what: wall $(secs "$start" "$end") s"
    echo "    $(echo "$line" | sed 's/.*rendered [^:]*: //'); cache put $(echo "$stored" | sed 's/.*stored [^:]*: //')"
done
unmount_fs
for n in 1003 1004; do
    "$platefs" render "$work/dailies" "A001/A001C003.$n.exr" -o "$work/ref.exr" --rules "$work/rules" \
        --device reference --timing | tr '\n' ' ' | sed "s/^/  C reference, frame $n: /"
    echo
done
echo
mount_fs --readahead 0

# ---- 1. cached frame reads ---------------------------------------------
for f in "$work"/dailies/A001/*.exr; do cat "$mnt/A001/$(basename "$f")" >/dev/null; done
unmount_fs
python3 - "$work" "$mnt" "$platefs" "$cache" "$log" <<'PY'
import os, subprocess, sys, time, glob, shutil
work, mnt, platefs, cache, log = sys.argv[1:6]
frames = sorted(glob.glob(f"{work}/dailies/A001/*.exr"))
names = [os.path.basename(f) for f in frames]
native_dir = f"{work}/native"
os.makedirs(native_dir, exist_ok=True)

def mount():
    p = subprocess.Popen([platefs, "mount", f"{work}/dailies", mnt, "--rules", f"{work}/rules",
                          "--cache", cache, "--cache-size", "4G", "-f", "--readahead", "0"],
                         stdout=open(log, "a"), stderr=subprocess.STDOUT)
    for _ in range(600):
        if os.path.ismount(mnt):
            return p
        time.sleep(0.1)
    raise SystemExit("mount failed")

def unmount(p):
    subprocess.run(["fusermount3", "-u", mnt], check=True)
    p.wait()

def read_all(paths, bs=1 << 20):
    total = 0
    t = time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        while True:
            b = os.read(fd, bs)
            if not b:
                break
            total += len(b)
        os.close(fd)
    return total, time.perf_counter() - t

p = mount()
# Native copies of the exact bytes the mount serves, in the page cache.
for n in names:
    shutil.copyfile(f"{mnt}/A001/{n}", f"{native_dir}/{n}")
native = [f"{native_dir}/{n}" for n in names]
mounted = [f"{mnt}/A001/{n}" for n in names]
read_all(native)
best = {"native": 1e9, "mount, page cache warm": 1e9, "mount, from LMDB (after remount)": 1e9}
nbytes = 0
for _ in range(20):  # alternate, so both see the same machine state
    nbytes, t = read_all(native); best["native"] = min(best["native"], t)
    read_all(mounted)
    nbytes, t = read_all(mounted); best["mount, page cache warm"] = min(best["mount, page cache warm"], t)
unmount(p)
for _ in range(5):
    p = mount()
    nbytes, t = read_all(mounted)
    best["mount, from LMDB (after remount)"] = min(best["mount, from LMDB (after remount)"], t)
    unmount(p)
print(f"cached frame reads, {len(names)} frames, {nbytes / 1e6:.1f} MB, 1 MiB reads, best of 20 (LMDB: of 5 remounts):")
for k, t in best.items():
    print(f"  {k:36s} {nbytes / t / 1e9:6.2f} GB/s   ratio to native {best['native'] / t:5.2f}")
PY
echo

# ---- 2. ls -l of 10,000 frames -----------------------------------------
mount_fs
before=$(grep -c "rendered " "$log" || true)
start=$(date +%s.%N)
n=$(ls -l "$mnt/L001" | tail -n +2 | wc -l)
end=$(date +%s.%N)
start2=$(date +%s.%N)
ls -l "$mnt/L001" >/dev/null
end2=$(date +%s.%N)
after=$(grep -c "rendered " "$log" || true)
unmount_fs
echo "ls -l of a $n-frame directory:"
echo "  first listing (reads every header once): $(secs "$start" "$end") s"
echo "  second listing:                          $(secs "$start2" "$end2") s"
echo "  frames rendered by listing: $((after - before))"
