#!/usr/bin/env bash
# Files no rule touches read back byte-identical, and the mirror refuses
# every kind of write with EROFS while the sources stay untouched.
. "$(dirname "$0")/lib.sh"

# A frame outside the rule's frame range and a sequence no rule matches.
cp "$DAILIES/A001/A001C003.1001.exr" "$DAILIES/A001/A001C003.0999.exr"
mkdir -p "$DAILIES/B002/deep/er"
cp "$DAILIES/A001/A001C003.1002.exr" "$DAILIES/B002/deep/er/B002C001.1001.exr"
head -c 3000000 /dev/urandom >"$DAILIES/B002/random.bin"
ln -s ../A001/A001_camera_report.txt "$DAILIES/B002/report-link.txt"
before=$(cd "$DAILIES" && find . -type f -exec md5sum {} + | sort)

mount_fs -o ro,allow_other
grep " $MNT " /proc/mounts | grep -q "allow_other" || fail "-o allow_other did not reach the mount"

for f in A001/A001_camera_report.txt A001/A001C003.0999.exr \
    B002/deep/er/B002C001.1001.exr B002/random.bin; do
    cmp "$DAILIES/$f" "$MNT/$f" || fail "$f differs through the mount"
    [ "$(stat -c %s "$MNT/$f")" = "$(stat -c %s "$DAILIES/$f")" ] || fail "$f size differs"
done
[ "$(readlink "$MNT/B002/report-link.txt")" = "../A001/A001_camera_report.txt" ] ||
    fail "symlink target differs"
cmp "$DAILIES/A001/A001_camera_report.txt" "$MNT/B002/report-link.txt" ||
    fail "reading through a symlink differs"

# Random ranges of a passthrough file.
for off in 0 1 4095 65536 1048575 2999000; do
    a=$(dd if="$DAILIES/B002/random.bin" bs=1 skip=$off count=2000 status=none | md5sum)
    b=$(dd if="$MNT/B002/random.bin" bs=1 skip=$off count=2000 status=none | md5sum)
    [ "$a" = "$b" ] || fail "range at $off differs"
done

# The listing mirrors the source tree, plus one frames folder per clip.
diff <(cd "$DAILIES" && find . | sort) <(cd "$MNT" && find . -not -path '*.mp4.frames*' | sort) ||
    fail "directory trees differ"
diff <(cd "$DAILIES" && find . -name '*.mp4' | sed 's/$/.frames/' | sort) \
    <(cd "$MNT" && find . -name '*.frames' | sort) || fail "frames folders differ from the clips"

# Every write-type call is refused with EROFS.
expect_failure "Read-only file system" sh -c "echo x > '$MNT/A001/new.txt'"
expect_failure "Read-only file system" sh -c "echo x >> '$MNT/A001/A001_camera_report.txt'"
expect_failure "Read-only file system" rm "$MNT/A001/A001_camera_report.txt"
expect_failure "Read-only file system" rm "$MNT/$FRAME"
expect_failure "Read-only file system" mv "$MNT/A001/A001_camera_report.txt" "$MNT/A001/x.txt"
expect_failure "Read-only file system" mkdir "$MNT/A001/sub"
expect_failure "Read-only file system" rmdir "$MNT/B002/deep/er"
expect_failure "Read-only file system" chmod 777 "$MNT/$FRAME"
expect_failure "Read-only file system" truncate -s 0 "$MNT/$FRAME"
expect_failure "Read-only file system" touch "$MNT/$FRAME"
expect_failure "Read-only file system" ln -s x "$MNT/A001/link"
python3 - "$MNT/$FRAME" <<'PY' || fail "open for writing was not refused with EROFS"
import errno, os, sys
for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT):
    try:
        os.close(os.open(sys.argv[1], flags))
    except OSError as e:
        if e.errno != errno.EROFS:
            raise SystemExit(f"open flags {flags}: {e}")
    else:
        raise SystemExit(f"open flags {flags} succeeded")
PY

unmount_fs
after=$(cd "$DAILIES" && find . -type f -exec md5sum {} + | sort)
[ "$before" = "$after" ] || fail "the sources changed"
echo "passthrough ok"
