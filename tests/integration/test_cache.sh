#!/usr/bin/env bash
# The second read of a frame is a cache hit, a remount keeps the cache,
# and the cache survives the mount being killed.
. "$(dirname "$0")/lib.sh"

mount_fs --readahead 0
md5_first=$(md5sum <"$MNT/$FRAME")
md5_second=$(md5sum <"$MNT/$FRAME")
[ "$md5_first" = "$md5_second" ] || fail "two reads of one frame differ"
unmount_fs
renders=$(cache_stat renders)
entries=$(cache_stat entries)
[ "$renders" = 1 ] || fail "expected 1 render after two reads, got $renders"
[ "$entries" = 1 ] || fail "expected 1 cache entry, got $entries"

# A remount serves the frame from the cache: same bytes, no render.
mount_fs --readahead 0
[ "$(md5sum <"$MNT/$FRAME")" = "$md5_first" ] || fail "bytes changed across a remount"
unmount_fs
[ "$(cache_stat renders)" = 1 ] || fail "remount re-rendered a cached frame"
hits=$(cache_stat hits)
[ "$hits" -ge 1 ] || fail "expected a cache hit after remount, got $hits"

# kill -9 in the middle of renders leaves a cache that opens and serves.
mount_fs --readahead 0
for f in "$MNT"/A001/A001C003.100[4-8].exr; do cat "$f" >/dev/null & done
sleep 0.5
kill -9 "$MOUNT_PID"
wait "$MOUNT_PID" 2>/dev/null || true
MOUNT_PID=
fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
wait || true
"$PLATEFS" cache stats --cache "$CACHE" >/dev/null || fail "cache unreadable after kill -9"
mount_fs --readahead 0
[ "$(md5sum <"$MNT/$FRAME")" = "$md5_first" ] || fail "cached frame changed after kill -9"
for f in "$MNT"/A001/A001C003.100[4-8].exr; do
    [ "$(stat -c %s "$f")" = "$(wc -c <"$f")" ] || fail "$f damaged after kill -9"
done
unmount_fs

# Live counters: a running mount flushes its hits to the store within
# seconds, so `cache stats` beside it is current.
hits_before=$(cache_stat hits)
mount_fs --readahead 0
cat "$MNT/$FRAME" >/dev/null
sleep 5
[ "$(cache_stat hits)" = $((hits_before + 1)) ] ||
    fail "a live mount's hit is not visible: $hits_before -> $(cache_stat hits)"
unmount_fs

# The budget belongs to the store: commands without --cache-size keep it.
budget=$(cache_stat budget)
[ "$budget" = $((2 * 1024 * 1024 * 1024)) ] || fail "the mount's --cache-size 2G gave budget $budget"
"$PLATEFS" prewarm "$DAILIES" --rules "$RULES" --cache "$CACHE" 2>/dev/null || fail "prewarm failed"
[ "$(cache_stat budget)" = "$budget" ] || fail "a prewarm without --cache-size changed the budget"

# clear empties the store; a damaged store is named, and clear removes it.
"$PLATEFS" cache clear --cache "$CACHE" | grep -q cleared || fail "cache clear failed"
[ "$(cache_stat entries)" = 0 ] || fail "cache clear left entries"
head -c 200000 /dev/urandom >"$CACHE/data.mdb"
expect_failure "$CACHE" "$PLATEFS" cache stats --cache "$CACHE"
"$PLATEFS" cache clear --cache "$CACHE" >/dev/null 2>&1 || fail "cache clear of a damaged store failed"
mount_fs --readahead 0
[ "$(md5sum <"$MNT/$FRAME")" = "$md5_first" ] || fail "frame differs after the cache was rebuilt"
unmount_fs
[ "$(cache_stat entries)" = 1 ] || fail "the rebuilt cache does not hold the frame"
echo "cache ok"
