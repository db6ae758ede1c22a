#!/usr/bin/env bash
# quality.sh - relight and reframe quality and speed on real footage, side by
# side with ffmpeg's filters (bench/quality/quality.py says what is measured).
#
#   bench/quality.sh [BUILD_DIR] [FOOTAGE_DIR] [--quick]
#
# FOOTAGE_DIR defaults to ../shared/footage beside the repository; without it
# only the repository's sample clip is measured. Prints tables and writes
# bench-quality.json in the build directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
footage=${2:-$here/../shared/footage}
shift $(($# > 2 ? 2 : $#))
platefs=$build/cli/platefs
[ -x "$platefs" ] || { echo "no platefs binary at $platefs; build first" >&2; exit 1; }
[ -d "$footage" ] || footage=$(mktemp -d)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/platefs-bench-xdg}
exec /usr/bin/python3 "$here/bench/quality/quality.py" --platefs "$platefs" \
    --footage "$footage" --samples "$here/samples/dailies" --json "$build/bench-quality.json" "$@"
