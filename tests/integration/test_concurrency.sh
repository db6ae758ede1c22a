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
echo "concurrency ok"
