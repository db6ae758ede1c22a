#!/usr/bin/env bash
# Bad input gets a clear error naming the file and nothing is lost: a
# corrupt frame answers EIO while the mount stays up, broken rules stop a
# mount from starting, `platefs check` reports file:line:column.
. "$(dirname "$0")/lib.sh"

# Truncated and garbage frames inside the rule's range.
head -c 400000 "$DAILIES/A001/A001C003.1007.exr" >"$WORK/t.exr"
mv "$WORK/t.exr" "$DAILIES/A001/A001C003.1007.exr"
head -c 20000 /dev/urandom >"$DAILIES/A001/A001C003.1008.exr"

"$PLATEFS" check "$RULES" --dailies "$DAILIES" >"$WORK/check.txt" ||
    fail "check rejected valid rules: $(cat "$WORK/check.txt")"
grep -q "A001C003" "$WORK/check.txt" || fail "check does not list the shot"

mount_fs --readahead 0
expect_failure "Input/output error" cat "$MNT/A001/A001C003.1007.exr"
expect_failure "Input/output error" cat "$MNT/A001/A001C003.1008.exr"
grep -q "A001C003.1007.exr" "$LOG" || fail "the log does not name the truncated file"
ls -l "$MNT/A001" >/dev/null || fail "listing failed next to a corrupt frame"
[ "$(wc -c <"$MNT/$FRAME")" = "$(stat -c %s "$MNT/$FRAME")" ] || fail "good frame unreadable"
unmount_fs

# A broken rule file: check and mount both refuse, naming file:line:col.
cat >"$RULES/A001C003.yaml" <<'YAML'
shot: A001C003
match: ["A001/A001C003.*.exr"]
ops:
  - op: relight
    exposure: 40
YAML
if "$PLATEFS" check "$RULES" --dailies "$DAILIES" >"$WORK/check.txt" 2>&1; then
    fail "check accepted an out-of-range exposure"
fi
grep -q "A001C003.yaml:5:" "$WORK/check.txt" || fail "check output lacks file:line: $(cat "$WORK/check.txt")"
if "$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" --cache "$CACHE" >"$WORK/mount.txt" 2>&1; then
    fusermount3 -u "$MNT" || true
    fail "mount started with broken rules"
fi
grep -q "A001C003.yaml:5:" "$WORK/mount.txt" || fail "mount error lacks file:line: $(cat "$WORK/mount.txt")"
mountpoint -q "$MNT" && fail "something is mounted after a refused start"

# A mount option platefs does not support is refused, not ignored.
expect_failure "unsupported mount option" "$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" \
    --cache "$CACHE" -o rw

# No OpenCL device of that name: a clear error, nothing mounted.
cp "$PFS_SOURCE_DIR/samples/rules/A001C003.yaml" "$RULES/"
expect_failure "no-such-device" "$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" \
    --cache "$CACHE" --device no-such-device

# No OpenCL platform at all: the mount refuses to start and says what to
# install; the C reference still serves when asked for explicitly.
mkdir -p "$WORK/no-vendors"
OCL_ICD_VENDORS=$WORK/no-vendors expect_failure "no OpenCL platform found: install" \
    "$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" --cache "$CACHE"
mountpoint -q "$MNT" && fail "something is mounted without an OpenCL platform"
OCL_ICD_VENDORS=$WORK/no-vendors "$PLATEFS" render "$DAILIES" "$FRAME" -o "$WORK/ref.exr" \
    --rules "$RULES" --device reference 2>/dev/null || fail "--device reference needs no OpenCL"

# Background start and clean unmount on SIGTERM.
"$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" --cache "$CACHE" ||
    fail "background mount failed"
mountpoint -q "$MNT" || fail "background mount returned but nothing is mounted"
[ "$(wc -c <"$MNT/$FRAME")" = "$(stat -c %s "$MNT/$FRAME")" ] || fail "background mount serves wrong sizes"
pid=$(pgrep -f "platefs mount $DAILIES $MNT" | head -1)
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "platefs did not exit on SIGTERM"
grep -q " $MNT " /proc/mounts && fail "SIGTERM left the file system mounted"
echo "errors ok"
