#!/usr/bin/env bash
# Eight concurrent readers of the same and of different uncached frames get
# the same bytes as a single reader, and each frame renders once.
. "$(dirname "$0")/lib.sh"

# Reference bytes from a single reader on its own mount and cache.
mount_fs --readahead 0
for f in "$MNT"/A001/*.exr; do md5sum <"$f" >"$WORK/$(basename "$f").single"; done
unmount_fs
rm -rf "$CACHE"

mount_fs --readahead 0
pids=()
for r in $(seq 1 8); do
    (
        # Readers 1-4 hammer frame 1003 with different block sizes; 5-8
        # walk all frames in different orders.
        if [ "$r" -le 4 ]; then
            dd if="$MNT/$FRAME" bs=$((r * 7919)) status=none | md5sum >"$WORK/r$r.1003"
        else
            ls "$MNT"/A001/*.exr | sort -R --random-source=<(yes "$r") | while read -r f; do
                md5sum <"$f" >"$WORK/r$r.$(basename "$f")"
            done
        fi
    ) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a reader failed"; done
for r in 1 2 3 4; do
    cmp -s "$WORK/r$r.1003" "$WORK/A001C003.1003.exr.single" || fail "reader $r got other bytes"
done
for r in 5 6 7 8; do
    for f in "$DAILIES"/A001/*.exr; do
        b=$(basename "$f")
        cmp -s "$WORK/r$r.$b" "$WORK/$b.single" || fail "reader $r got other bytes for $b"
    done
done
# Attributes of other files answer while renders run.
stat "$MNT/A001/A001_camera_report.txt" >/dev/null
unmount_fs
renders=$(cache_stat renders)
[ "$renders" = 8 ] || fail "8 frames should render 8 times, got $renders"

# A slow render never blocks the attributes or the listing of other files:
# four 4K float frames queued on one render thread (seconds of work on the
# C reference path), and meanwhile stat and ls answer at once.
mkdir -p "$DAILIES/S001"
for n in 1 2 3 4; do
    oiiotool "$DAILIES/A001/A001C003.100$n.exr" --resize 4096x2160 -d float --compression zip \
        -o "$DAILIES/S001/S001C001.100$n.exr"
done
cat >"$RULES/S001C001.yaml" <<'YAML'
shot: S001C001
match: ["S001/S001C001.*.exr"]
ops:
  - op: relight
    exposure: 0.5
    window: {shape: ellipse, center: [2048, 1080], size: [3000, 1800], feather: 400}
YAML
rm -rf "$CACHE"
mount_fs --readahead 0 --threads 1 --device reference
slow=()
for n in 1 2 3 4; do
    cat "$MNT/S001/S001C001.100$n.exr" >/dev/null &
    slow+=($!)
done
sleep 0.3
for _ in $(seq 1 20); do
    stat "$MNT/A001/A001_camera_report.txt" >/dev/null
    ls -l "$MNT/A001" >/dev/null
done
done_while_listing=$(grep -c "rendered S001" "$LOG" || true)
for p in "${slow[@]}"; do wait "$p" || fail "a slow reader failed"; done
unmount_fs
[ "$done_while_listing" -lt 4 ] ||
    fail "stat and ls waited for all four renders ($done_while_listing done when they returned)"
echo "concurrency ok"
