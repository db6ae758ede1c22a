# lib.sh - shared set-up for the integration tests: a scratch copy of the
# sample dailies and rules, a real FUSE mount of them served by the platefs
# binary under test, and teardown that always unmounts.
#
# Environment (set by ctest): PLATEFS (the binary), PFS_SOURCE_DIR.
set -euo pipefail

: "${PLATEFS:?PLATEFS must name the platefs binary}"
: "${PFS_SOURCE_DIR:?PFS_SOURCE_DIR must name the source tree}"

SKIP=77
# Debian's interpreter, with the packages deps.sh installed (numpy), even
# when another python3 comes first in PATH.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
    echo "SKIP: no /dev/fuse or fusermount3 on this machine"
    exit $SKIP
fi

WORK=$(mktemp -d /tmp/platefs-test.XXXXXX)
DAILIES=$WORK/dailies
RULES=$WORK/rules
MNT=$WORK/mnt
CACHE=$WORK/cache
LOG=$WORK/mount.log
MOUNT_PID=
mkdir -p "$MNT"
cp -r "$PFS_SOURCE_DIR/samples/dailies" "$DAILIES"
cp -r "$PFS_SOURCE_DIR/samples/rules" "$RULES"
# One kernel binary cache for the whole suite, so only the first test pays
# for the OpenCL compile.
export XDG_CACHE_HOME=${PFS_TEST_XDG_CACHE:-/tmp/platefs-test-xdg}

fail() {
    echo "FAIL: $*" >&2
    if [ -f "$LOG" ]; then
        echo "--- mount log ---" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

# mount_fs [extra platefs options...]: mounts DAILIES at MNT in the
# foreground (in the background of this shell) and waits until it serves.
mount_fs() {
    "$PLATEFS" mount "$DAILIES" "$MNT" --rules "$RULES" --cache "$CACHE" \
        --cache-size 2G -f --log-level debug "$@" >>"$LOG" 2>&1 &
    MOUNT_PID=$!
    for _ in $(seq 1 600); do
        if mountpoint -q "$MNT"; then
            return 0
        fi
        if ! kill -0 "$MOUNT_PID" 2>/dev/null; then
            MOUNT_PID=
            fail "platefs mount exited before mounting"
        fi
        sleep 0.1
    done
    fail "mount did not come up within 60 s"
}

unmount_fs() {
    if mountpoint -q "$MNT"; then
        fusermount3 -u "$MNT" || umount -l "$MNT" || true
    fi
    if [ -n "$MOUNT_PID" ]; then
        for _ in $(seq 1 300); do
            kill -0 "$MOUNT_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$MOUNT_PID" 2>/dev/null; then
            kill -9 "$MOUNT_PID" || true
            fail "platefs did not exit after unmount"
        fi
        wait "$MOUNT_PID" || fail "platefs exited with status $? after unmount"
        MOUNT_PID=
    fi
}

cleanup() {
    local status=$?
    if mountpoint -q "$MNT" 2>/dev/null; then
        fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    fi
    if [ -n "$MOUNT_PID" ]; then
        kill "$MOUNT_PID" 2>/dev/null || true
    fi
    if [ $status -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "work directory kept: $WORK" >&2
    fi
}
trap cleanup EXIT

# cache_stat NAME: one counter of `platefs cache stats` (hits, renders, ...).
cache_stat() {
    "$PLATEFS" cache stats --cache "$CACHE" | awk -v k="$1" '$1 == k { print $2 }'
}

# expect_errno MESSAGE COMMAND...: the command must fail, printing MESSAGE.
expect_failure() {
    local want=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        fail "expected '$*' to fail with '$want', it succeeded"
    fi
    case "$out" in
    *"$want"*) ;;
    *) fail "expected '$*' to fail with '$want', got: $out" ;;
    esac
}

FRAME=A001/A001C003.1003.exr
