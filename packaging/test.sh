#!/usr/bin/env bash
# test.sh - installs what is needed, then builds and runs the whole test
# suite twice: a normal build, and one under AddressSanitizer and
# UndefinedBehaviorSanitizer. Integration tests mount real FUSE file
# systems, so they need /dev/fuse (run as root, or with fuse3 set up).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/packaging/deps.sh"

jobs=$(nproc)
export PFS_TEST_XDG_CACHE=$(mktemp -d /tmp/platefs-test-xdg.XXXXXX)
trap 'rm -rf "$PFS_TEST_XDG_CACHE"' EXIT

echo "== build and test"
"$top/packaging/build.sh" "$top/build"
(cd "$top/build" && ctest --output-on-failure -j "$jobs" -LE integration &&
    ctest --output-on-failure -L integration)

echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
"$top/packaging/build.sh" "$top/build-sanitize" -DPFS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# use_tls=0: LeakSanitizer (GCC 12) crashes reading the dynamic TLS of a
# process that has dlopen'ed many modules, as PoCL does (one per compiled
# kernel); platefs keeps nothing in thread-local storage, and what libraries
# keep there is suppressed in lsan.supp.
if [ -f "$top/tests/lsan.supp" ]; then
    export LSAN_OPTIONS=suppressions=$top/tests/lsan.supp:print_suppressions=0:use_tls=0
fi
(cd "$top/build-sanitize" && ctest --output-on-failure -j "$jobs" -LE integration &&
    ctest --output-on-failure -L integration)
echo "all tests passed"
