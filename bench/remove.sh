#!/usr/bin/env bash
# remove.sh - wire and object removal quality and speed on real footage, side
# by side with OpenCV inpaint (Telea, NS) and ffmpeg removelogo
# (bench/quality/remove.py says what is drawn, run and measured).
#
#   bench/remove.sh [BUILD_DIR] [FOOTAGE_DIR] [--quick] [--baselines-only]
#                   [--frames N] [--score-frames M] [--clips cockatoo,bear,juggle,friday]
#                   [--wire-method auto|temporal|spatial] [--dump DIR] [--stand-in]
#
# --quick: 2 clips, 4 scored frames. The baselines take about 3 minutes on 2
# cores for the default 4 clips x 24 frames; the platefs rows add 4 runs x
# clips x scored frames renders (--score-frames M scores, and renders, only
# the middle M frames of the run, the rest being temporal context).
#
# FOOTAGE_DIR defaults to ../shared/footage beside the repository (its video/
# folder is needed). Mounts with FUSE for the platefs rows (root, /dev/fuse,
# fusermount3). Prints tables and writes bench-remove.json in the build
# directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
footage=${2:-$here/../shared/footage}
shift $(($# > 2 ? 2 : $#))
platefs=$build/cli/platefs
[ -x "$platefs" ] || { echo "no platefs binary at $platefs; build first" >&2; exit 1; }
[ -d "$footage/video" ] || { echo "no footage at $footage/video" >&2; exit 1; }
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/platefs-bench-xdg}
exec /usr/bin/python3 "$here/bench/quality/remove.py" --platefs "$platefs" \
    --footage "$footage" --json "$build/bench-remove.json" "$@"
