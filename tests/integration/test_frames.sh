#!/usr/bin/env bash
# Corrected frames: provenance in the header, pixels equal to the C
# reference within tolerance, exact sizes from the first stat, any byte
# range at any offset, listing renders nothing.
. "$(dirname "$0")/lib.sh"

# A 1,000-frame sequence of hard links (cheap) under a second rule, for the
# listing check.
mkdir -p "$DAILIES/L001"
for i in $(seq 1001 2000); do
    ln "$DAILIES/A001/A001C003.1001.exr" "$DAILIES/L001/L001C001.$i.exr"
done
cat >"$RULES/L001C001.yaml" <<'YAML'
shot: L001C001
match: ["L001/L001C001.*.exr"]
ops:
  - op: relight
    exposure: 1
YAML

# A DWAA frame (the lossy compression many dailies pipelines write).
oiiotool "$DAILIES/A001/A001C003.1006.exr" --compression dwaa -o "$WORK/dwaa.exr"
mv "$WORK/dwaa.exr" "$DAILIES/A001/A001C003.1006.exr"

mount_fs

# Listing and stat of a thousand frames renders nothing, and every size is
# known from the first stat.
ls -l "$MNT/L001" >/dev/null
ls -l "$MNT/A001" >/dev/null
sizes=$(stat -c %s "$MNT"/L001/*.exr | sort -u)
[ "$(echo "$sizes" | wc -l)" = 1 ] || fail "frames of one shape report different sizes: $sizes"
grep -q "rendered " "$LOG" && fail "listing rendered a frame"

# st_size equals the bytes a read returns, for every frame.
for f in "$MNT"/A001/*.exr; do
    promised=$(stat -c %s "$f")
    got=$(wc -c <"$f")
    [ "$promised" = "$got" ] || fail "$f: stat says $promised bytes, read returned $got"
done
[ "$(stat -c %s "$MNT/L001/L001C001.1500.exr")" = "$(wc -c <"$MNT/L001/L001C001.1500.exr")" ] ||
    fail "L001 frame size mismatch"

oiiotool --stats "$MNT/A001/A001C003.1006.exr" | grep -q "Stats Avg" || fail "the DWAA frame does not read"

# The header carries the source's attributes and the provenance.
hdr=$(exrheader "$MNT/$FRAME")
for want in 'platefs/op1' 'platefs/opsHash' 'platefs/ruleFile (type string): "A001C003.yaml"' \
    'platefs/ruleHash' 'platefs/shot (type string): "A001C003"' 'platefs/version' \
    'platefs/source (type string): "A001/A001C003.1003.exr"' 'platefs/frame (type string): "1003"' \
    'timeCode' 'framesPerSecond' 'compression (type compression): none'; do
    grep -qF "$want" <<<"$hdr" || fail "header lacks '$want': $hdr"
done
grep -q 'platefs/op1 (type string): "relight exposure=0.2928' <<<"$hdr" ||
    fail "frame 1003 should carry the interpolated exposure 0.25 + 2/7 * 0.15: $hdr"

# Pixels equal the C reference of the same rules, read with a real reader.
# The OpenCL path computes in float, the reference in double; both round to
# half at the end, so they may differ by one half ULP: 2^-10 for values in
# [1, 2), 2^-9 in [2, 4) (the sample's corrected values stay below 4).
"$PLATEFS" render "$DAILIES" "$FRAME" -o "$WORK/reference.exr" --rules "$RULES" \
    --device reference 2>>"$LOG" || fail "reference render failed"
oiiotool --fail 0.00196 --failpercent 0 --warn 0.00196 \
    "$MNT/$FRAME" "$WORK/reference.exr" --diff >"$WORK/diff.txt" 2>&1 || fail "mount differs from the C reference: $(cat "$WORK/diff.txt")"
oiiotool --stats "$MNT/$FRAME" >"$WORK/stats.txt" || fail "oiiotool cannot read the frame"
grep -q "Stats Avg" "$WORK/stats.txt" || fail "oiiotool --stats printed no statistics"
# And they differ from the source (the correction happened).
if oiiotool --fail 1e-3 "$MNT/$FRAME" "$DAILIES/$FRAME" --diff >/dev/null 2>&1; then
    fail "corrected frame equals the source"
fi

# Any byte range at any offset, tail first, random chunks.
full=$WORK/full.exr
cat "$MNT/A001/A001C003.1005.exr" >"$full"
size=$(stat -c %s "$full")
python3 - "$MNT/A001/A001C003.1005.exr" "$full" "$size" <<'PY' || fail "range reads differ"
import os, random, sys
path, ref_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ref = open(ref_path, "rb").read()
assert len(ref) == size
rng = random.Random(1042)
fd = os.open(path, os.O_RDONLY)
try:
    cases = [(size - 100, 100), (size - 1, 1), (size, 10), (0, 1), (0, size + 4096)]
    cases += [(rng.randrange(size), rng.randrange(1, 300000)) for _ in range(60)]
    for off, n in cases:
        got = os.pread(fd, n, off)
        if got != ref[off:off + n]:
            raise SystemExit(f"range {off}+{n} differs")
finally:
    os.close(fd)
PY

# Reading the sources never changes them.
unmount_fs
echo "frames ok"
