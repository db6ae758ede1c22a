#!/usr/bin/env bash
# demo.sh - installs what is needed, builds, mounts the bundled sample
# dailies with the sample rule file, and shows a corrected frame: its
# header (with provenance) and its pixel statistics beside the source's.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/packaging/deps.sh"
"$top/packaging/build.sh"

platefs=$top/build/cli/platefs
mnt=$(mktemp -d /tmp/platefs-demo.XXXXXX)
cache=$(mktemp -d /tmp/platefs-demo-cache.XXXXXX)
trap 'fusermount3 -u "$mnt" 2>/dev/null || true; rmdir "$mnt"; rm -rf "$cache"' EXIT

frame=A001/A001C003.1004.exr
echo "== platefs check: the sample rules against the sample dailies"
"$platefs" check "$top/samples/rules" --dailies "$top/samples/dailies"
echo
echo "== platefs mount $top/samples/dailies $mnt"
"$platefs" mount "$top/samples/dailies" "$mnt" --rules "$top/samples/rules" --cache "$cache"
echo
echo "== ls -l $mnt/A001   (sizes are exact; nothing has been rendered yet)"
ls -l "$mnt/A001"
echo
echo "== exrheader $mnt/$frame"
exrheader "$mnt/$frame"
echo
echo "== oiiotool --stats: the source, then the corrected frame (brighter, cooler)"
oiiotool --stats "$top/samples/dailies/$frame" | grep -E "Stats (Min|Max|Avg)" | sed 's/^ */  source     /'
oiiotool --stats "$mnt/$frame" | grep -E "Stats (Min|Max|Avg)" | sed 's/^ */  corrected  /'
echo
clip=A002/A002C007.mp4
echo "== a camera clip: $mnt/$clip and beside it $clip.frames/"
ls -l "$mnt/A002"
echo "  $(ls "$mnt/$clip.frames" | wc -l) frames: $(ls "$mnt/$clip.frames" | head -2 | tr '\n' ' ')..."
echo
echo "== ffmpeg reads the clip's frames as an EXR sequence (frames 1001-1048 corrected by A002C007.yaml)"
ffmpeg -v error -start_number 1040 -i "$mnt/$clip.frames/A002C007.%04d.exr" -frames:v 16 -f framemd5 - |
    grep -v '^#' | head -4
echo "  ..."
exrheader "$mnt/$clip.frames/A002C007.1045.exr" | grep -E "platefs/(colour|ops|source)|timeCode|chromaticities" -A1 | grep -v '^--'
echo
echo "== the untouched camera report reads back byte for byte"
cmp "$top/samples/dailies/A001/A001_camera_report.txt" "$mnt/A001/A001_camera_report.txt" && echo "  identical"
echo
"$platefs" cache stats --cache "$cache" | sed -n '1,2p'
fusermount3 -u "$mnt"
