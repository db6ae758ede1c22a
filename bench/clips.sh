#!/usr/bin/env bash
# bench/clips.sh - camera clips through the mount, side by side with ffmpeg
# in the same run, reported as ratios and latencies (never asserted).
#
#   1. every frame of a clip read in order through the mount, cold (empty
#      cache), against `ffmpeg -i clip -f image2 out.%04d.exr` (ffmpeg's
#      decode and EXR writer, float RGB): ratio of wall times. Also the same
#      read by ffmpeg as an EXR sequence, and a second (cached) pass.
#   2. random access: 50 frames in a random order, each read cold, of a
#      long-GOP H.264 clip (2-second GOPs, B-frames) and of the sample clip
#      (one 247-frame GOP): median and worst latency.
#
# Usage: bench/clips.sh [BUILD_DIR]   (default: build). Needs root for FUSE.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
platefs=$build/cli/platefs
work=$(mktemp -d /tmp/platefs-bench-clips.XXXXXX)
mnt=$work/mnt
cache=$work/cache
log=$work/mount.log
mkdir -p "$mnt" "$work/dailies/A002" "$work/rules" "$work/ffmpeg"
export XDG_CACHE_HOME=$work/xdg
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

sample=$top/samples/dailies/A002/A002C007.mp4
cp "$sample" "$work/dailies/A002/A002C007.mp4"
ffmpeg -v error -i "$sample" -an -c:v libx264 -preset medium -crf 18 \
    -x264-params keyint=48:min-keyint=48:bframes=3:scenecut=0 "$work/dailies/A002/A002C008.mp4"

mount_fs() {
    "$platefs" mount "$work/dailies" "$mnt" --rules "$work/rules" --cache "$cache" \
        --cache-size 8G -f --log-level info "$@" >>"$log" 2>&1 &
    for _ in $(seq 1 600); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
    echo "mount failed" >&2; cat "$log" >&2; exit 1
}
unmount_fs() { fusermount3 -u "$mnt"; wait; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$@"; }

echo "platefs clip benchmarks ($(nproc) cores; clip: 1280x720 H.264 4:2:0, 247 frames)"
echo

# ---- 1. sequential ---------------------------------------------------------
t0=$(now)
ffmpeg -v error -i "$sample" -f image2 "$work/ffmpeg/out.%04d.exr"
t1=$(now)
ref=$(secs "$t0" "$t1")
echo "ffmpeg -i clip -f image2 out.%04d.exr:            $ref s"

rm -rf "$cache"
mount_fs
ls "$mnt/A002/A002C007.mp4.frames" >/dev/null # the index build, timed separately
t0=$(now)
for f in "$mnt"/A002/A002C007.mp4.frames/*.exr; do cat "$f" >/dev/null; done
t1=$(now)
ours=$(secs "$t0" "$t1")
t0=$(now)
for f in "$mnt"/A002/A002C007.mp4.frames/*.exr; do cat "$f" >/dev/null; done
t1=$(now)
cached=$(secs "$t0" "$t1")
unmount_fs
rm -rf "$cache"
mount_fs
t0=$(now)
ffmpeg -v error -start_number 1001 -i "$mnt/A002/A002C007.mp4.frames/A002C007.%04d.exr" -f null -
t1=$(now)
via_ffmpeg=$(secs "$t0" "$t1")
unmount_fs
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$@"; }
echo "mount, every frame in order, cold (cat):          $ours s   ratio to ffmpeg $(ratio "$ours" "$ref")"
echo "mount, read by ffmpeg as an EXR sequence, cold:   $via_ffmpeg s   ratio to ffmpeg $(ratio "$via_ffmpeg" "$ref")"
echo "mount, every frame in order, cached (cat):        $cached s   ratio to ffmpeg $(ratio "$cached" "$ref")"
grep -o 'A002C007.mp4: indexed.*' "$log" | head -1 | sed 's/^/  index: /'
grep -o 'clip decoders:.*' "$log" | head -1 | sed 's/^/  /'
echo

# ---- 2. random access ------------------------------------------------------
random_access() { # clip-name
    rm -rf "$cache"
    : >"$log"
    mount_fs --readahead 0
    ls "$mnt/A002/$1.frames" >/dev/null
    python3 - "$mnt/A002/$1.frames" <<'PY'
import os, random, statistics, sys, time
d = sys.argv[1]
names = sorted(os.listdir(d))
random.seed(7)
lat = []
for n in random.sample(names, 50):
    t = time.perf_counter()
    with open(os.path.join(d, n), "rb") as f:
        while f.read(1 << 20):
            pass
    lat.append((time.perf_counter() - t) * 1000)
print(f"  median {statistics.median(lat):.0f} ms, worst {max(lat):.0f} ms, "
      f"best {min(lat):.0f} ms over 50 frames")
PY
    unmount_fs
    grep -o 'clip decoders:.*' "$log" | head -1 | sed 's/^/  /'
}
echo "random access, 50 frames, each cold (empty cache, no readahead):"
echo " long-GOP H.264 (keyframe every 48 frames, 3 B-frames):"
random_access A002C008.mp4
echo " the sample clip (a single 247-frame GOP):"
random_access A002C007.mp4
