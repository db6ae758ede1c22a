#!/usr/bin/env bash
# prewarm fills the cache a running mount uses (two processes on one LMDB
# store), shards split the work exactly, and the mount then serves every
# frame without rendering.
. "$(dirname "$0")/lib.sh"

# The sample clip, cut to 12 frames: prewarm takes a clip's frames too.
ffmpeg -v error -i "$DAILIES/A002/A002C007.mp4" -frames:v 12 -c copy "$WORK/short.mp4"
mv "$WORK/short.mp4" "$DAILIES/A002/A002C007.mp4"
total=20 # 8 EXR frames and 12 clip frames

mount_fs --readahead 0
# Two farm machines, one shard each, while the mount runs.
"$PLATEFS" prewarm "$DAILIES" --rules "$RULES" --cache "$CACHE" --cache-size 2G \
    --shard 0/2 2>"$WORK/shard0.txt" || fail "shard 0 failed: $(cat "$WORK/shard0.txt")"
"$PLATEFS" prewarm "$DAILIES" --rules "$RULES" --cache "$CACHE" --cache-size 2G \
    --shard 1/2 2>"$WORK/shard1.txt" || fail "shard 1 failed: $(cat "$WORK/shard1.txt")"
n0=$(tail -c 200 "$WORK/shard0.txt" | tr '\r' '\n' | grep -o '^prewarm: [0-9]* frames' | tail -1 | awk '{print $2}')
n1=$(tail -c 200 "$WORK/shard1.txt" | tr '\r' '\n' | grep -o '^prewarm: [0-9]* frames' | tail -1 | awk '{print $2}')
[ $((n0 + n1)) = $total ] || fail "shards covered $n0 + $n1 frames, expected $total"
[ "$n0" -gt 0 ] && [ "$n1" -gt 0 ] || fail "one shard got no frames ($n0, $n1)"

# A second prewarm finds everything cached.
"$PLATEFS" prewarm "$DAILIES" --rules "$RULES" --cache "$CACHE" 2>"$WORK/again.txt" ||
    fail "second prewarm failed"
tr '\r' '\n' <"$WORK/again.txt" | grep -q "8 frames, 0 rendered, 8 already cached" ||
    fail "second prewarm rendered again: $(tr '\r' '\n' <"$WORK/again.txt" | tail -1)"

# The mount serves every frame from the cache: no render of its own.
for f in "$MNT"/A001/*.exr; do
    [ "$(wc -c <"$f")" = "$(stat -c %s "$f")" ] || fail "$f: size mismatch after prewarm"
done
for f in "$MNT"/A002/A002C007.mp4.frames/*.exr; do
    [ "$(wc -c <"$f")" = "$(stat -c %s "$f")" ] || fail "$f: size mismatch after prewarm"
done
grep -q "rendered A00[12]" "$LOG" && fail "the mount rendered a prewarmed frame"
unmount_fs
[ "$(cache_stat renders)" = $total ] || fail "expected $total renders in all, got $(cache_stat renders)"
[ "$(cache_stat entries)" = $total ] || fail "expected $total entries, got $(cache_stat entries)"

# A render farm: two machines prewarm one shard each into their own
# caches (one with the dailies at another path); merged, they serve the
# mount without a single render.
cp -rp "$DAILIES" "$WORK/farm-dailies"
"$PLATEFS" prewarm "$DAILIES" --rules "$RULES" --cache "$WORK/farm0" --shard 0/2 2>/dev/null ||
    fail "farm shard 0 failed"
"$PLATEFS" prewarm "$WORK/farm-dailies" --rules "$RULES" --cache "$WORK/farm1" --shard 1/2 2>/dev/null ||
    fail "farm shard 1 failed"
"$PLATEFS" cache merge "$WORK/farm0" "$WORK/farm1" --cache "$WORK/merged" >"$WORK/merge.txt" ||
    fail "merge failed: $(cat "$WORK/merge.txt")"
grep -q "frames copied" "$WORK/merge.txt" || fail "merge printed no summary"
"$PLATEFS" cache merge "$WORK/farm0" --cache "$WORK/merged" | grep -q "0 frames copied" ||
    fail "merging again copied frames"
[ "$("$PLATEFS" cache stats --cache "$WORK/merged" | awk '$1 == "entries" {print $2}')" = $total ] ||
    fail "the merged cache does not hold all $total frames"
CACHE_SAVED=$CACHE
CACHE=$WORK/merged
: >"$LOG"
mount_fs --readahead 0
for f in "$MNT"/A001/*.exr "$MNT"/A002/A002C007.mp4.frames/*.exr; do cat "$f" >/dev/null; done
grep -q "rendered A00[12]" "$LOG" && fail "the mount rendered a frame the farm had rendered"
grep -q "A002C007.mp4: indexed" "$LOG" && fail "the clip was indexed again: the merge lost its index"
unmount_fs
[ "$(cache_stat renders)" = 0 ] || fail "renders counted on the merged cache"
CACHE=$CACHE_SAVED

# The prewarmed bytes equal a render of the same frame.
"$PLATEFS" render "$DAILIES" "$FRAME" -o "$WORK/direct.exr" --rules "$RULES" 2>/dev/null ||
    fail "render failed"
mount_fs
cmp "$WORK/direct.exr" "$MNT/$FRAME" || fail "prewarmed frame differs from a direct render"
unmount_fs
echo "prewarm ok"
