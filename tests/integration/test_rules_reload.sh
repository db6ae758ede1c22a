#!/usr/bin/env bash
# Editing a rule under a live mount changes the next read; a broken edit
# keeps the last good rules; reverting finds the old renders again.
. "$(dirname "$0")/lib.sh"

mount_fs --readahead 0
orig=$(md5sum <"$MNT/$FRAME")
orig_size=$(stat -c %s "$MNT/$FRAME")
cp "$RULES/A001C003.yaml" "$WORK/good.yaml"

wait_for_log() { # wait_for_log PATTERN COUNT
    for _ in $(seq 1 100); do
        [ "$(grep -c "$1" "$LOG" || true)" -ge "$2" ] && return 0
        sleep 0.1
    done
    fail "log never showed '$1' $2 time(s)"
}

# A real edit: one stop more.
sed -i 's/exposure: {1001: 0.25, 1008: 0.4}/exposure: {1001: 1.25, 1008: 1.4}/' "$RULES/A001C003.yaml"
wait_for_log "rules reloaded" 1
edited=$(md5sum <"$MNT/$FRAME")
[ "$edited" != "$orig" ] || fail "the edit did not change the frame"
exrheader "$MNT/$FRAME" | grep -q 'relight exposure=1.29' || fail "provenance does not show the edit"
[ "$(stat -c %s "$MNT/$FRAME")" = "$(wc -c <"$MNT/$FRAME")" ] || fail "size wrong after edit"

# A broken edit: the last good rules stay in force, the error names the spot.
printf 'shot: A001C003\nmatch: ["A001/A001C003.*.exr"]\nops:\n  - op: relight\n    exposure: lots\n' \
    >"$RULES/A001C003.yaml"
wait_for_log "not reloaded" 1
grep -q "A001C003.yaml:5:" "$LOG" || fail "the error does not give file:line"
[ "$(md5sum <"$MNT/$FRAME")" = "$edited" ] || fail "a broken edit changed the frame"

# Revert: the original bytes come back from the cache without a render.
cp "$WORK/good.yaml" "$RULES/A001C003.yaml"
wait_for_log "rules reloaded" 2
[ "$(md5sum <"$MNT/$FRAME")" = "$orig" ] || fail "revert did not restore the frame"
[ "$(stat -c %s "$MNT/$FRAME")" = "$orig_size" ] || fail "revert did not restore the size"
unmount_fs
[ "$(cache_stat renders)" = 2 ] || fail "expected 2 renders (original, edit), got $(cache_stat renders)"
echo "rules reload ok"
