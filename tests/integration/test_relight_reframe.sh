#!/usr/bin/env bash
# Relight and reframe through the mount with keyframed rules: a push-in that
# ramps over the shot (identity at its first key, bit for bit), a rotated
# window and a gradient with tint, `match` to a reference frame recovering a
# known miss, the provenance attributes (interpolated values, the fitted
# parameters), pixels equal to the C reference, and real readers (ffmpeg,
# oiiotool, exrheader) on the mounted frames. `platefs check` allows colour
# and geometry ops over protected regions and warns on a push-in past 20 %.
. "$(dirname "$0")/lib.sh"

SRC=A001/A001C003.1001.exr

# R001: eight copies of one frame, reframed with a keyframed push-in,
# a small keyframed rotation, under a protected region (allowed: reframe is
# whole-frame geometry).
mkdir -p "$DAILIES/R001"
for i in $(seq 1001 1008); do
    cp "$DAILIES/$SRC" "$DAILIES/R001/R001C001.$i.exr"
done
cat >"$RULES/R001C001.yaml" <<'YAML'
shot: R001C001
match: ["R001/R001C001.*.exr"]
protect:
  - rect: {1001: [200, 100, 300, 250], 1008: [220, 100, 320, 250]}
ops:
  - op: reframe
    scale: {1001: 1.0, 1008: 1.14}
    rotate: {1001: 0, 1008: 1.4}
    border: mirror
YAML

# W001: a rotated soft window warming a face-sized area, and a gradient
# darkening the right of frame with a green-magenta correction.
mkdir -p "$DAILIES/W001"
cp "$DAILIES/$SRC" "$DAILIES/W001/W001C001.1001.exr"
cp "$DAILIES/$SRC" "$DAILIES/W001/W001C001.1002.exr"
cat >"$RULES/W001C001.yaml" <<'YAML'
shot: W001C001
match: ["W001/W001C001.*.exr"]
protect: [{ellipse: [320, 180, 60, 80]}]
ops:
  - op: relight
    exposure: 0.4
    temperature: {from: 5600, to: 4800}
    window: {shape: ellipse, center: [320, 180], size: [220, 140], feather: 40, angle: {1001: 0, 1002: 30}}
  - op: relight
    exposure: -0.6
    tint: {from: -8, to: 0}
    window: {shape: gradient, center: [420, 180], angle: 0, feather: 200}
YAML

# M001: a clean frame 1001 and frames 1002-1004 shot with a miss (-0.5
# stop, red up and blue down as from a warmer light), made here with platefs
# itself. The miss is a per-channel gain, which the gain model can undo
# exactly; how matching copes with real misses on moving footage is the
# quality bench's (bench/quality.sh).
mkdir -p "$DAILIES/M001" "$WORK/missrules"
cp "$DAILIES/$SRC" "$DAILIES/M001/M001C001.1001.exr"
cat >"$WORK/missrules/miss.yaml" <<'YAML'
shot: MISS
match: ["A001/A001C003.*.exr"]
ops:
  - op: relight
    exposure: -0.5
    cdl: {slope: [1.12, 1.0, 0.85]}
YAML
"$PLATEFS" render "$DAILIES" "$SRC" -o "$WORK/missed.exr" --rules "$WORK/missrules" \
    2>>"$LOG" || fail "could not make the missed frame"
for i in 1002 1003 1004; do
    cp "$WORK/missed.exr" "$DAILIES/M001/M001C001.$i.exr"
done
cat >"$RULES/M001C001.yaml" <<'YAML'
shot: M001C001
match: ["M001/M001C001.*.exr"]
frames: 1002-1004
ops:
  - op: relight
    match: {frame: 1001, model: gain}
YAML

# A push-in past 20 % is a warning, not an error.
mkdir -p "$WORK/warnrules"
sed 's/1008: 1.14/1008: 1.3/' "$RULES/R001C001.yaml" >"$WORK/warnrules/R001C001.yaml"
out=$("$PLATEFS" check "$WORK/warnrules" --dailies "$DAILIES" 2>&1) ||
    fail "check refused a large push-in: $out"
grep -q "warning: reframe.*1.3" <<<"$out" || fail "no push-in warning: $out"
out=$("$PLATEFS" check "$RULES" --dailies "$DAILIES" 2>&1) || fail "check failed: $out"
grep -q "warning" <<<"$out" && fail "unexpected warning: $out"
# A reference frame the sequence does not have is refused by check.
mkdir -p "$WORK/badref"
sed 's/frame: 1001/frame: 999/' "$RULES/M001C001.yaml" >"$WORK/badref/M001C001.yaml"
out=$("$PLATEFS" check "$WORK/badref" --dailies "$DAILIES" 2>&1) &&
    fail "check accepted a missing reference frame"
grep -q "reference frame 999 is not a frame of this shot's files (they are numbered 1001-1004)" \
    <<<"$out" || fail "unclear missing-reference message: $out"

mount_fs

# ---- reframe -----------------------------------------------------------------
# At the first key the push-in is identity: the pixels are the source's.
oiiotool --fail 0 --failpercent 0 "$MNT/R001/R001C001.1001.exr" "$DAILIES/R001/R001C001.1001.exr" \
    --diff >"$WORK/d.txt" 2>&1 || fail "reframe at scale 1 changed pixels: $(cat "$WORK/d.txt")"
# Halfway the values are interpolated: frame 1004.5 does not exist, 1004 is
# 3/7 of the way: scale 1.06, rotate 0.6.
hdr=$(exrheader "$MNT/R001/R001C001.1004.exr")
grep -qF 'platefs/op1 (type string): "reframe scale=1.06 rotate=0.6 border=mirror"' <<<"$hdr" ||
    fail "frame 1004 should carry scale 1.06 and rotate 0.6: $hdr"
grep -qF 'dataWindow (type box2i): (0 0) - (639 359)' <<<"$hdr" || fail "data window changed: $hdr"
grep -qF 'displayWindow (type box2i): (0 0) - (639 359)' <<<"$hdr" || fail "display window changed"
# The mount's pixels equal the C reference's (OpenCL in float, the
# reference in double, both rounded to half).
same_as_reference() {
    "$PLATEFS" render "$DAILIES" "$1" -o "$WORK/reference.exr" --rules "$RULES" \
        --device reference 2>>"$LOG" || fail "reference render of $1 failed"
    oiiotool --fail 0.004 --failpercent 0 "$MNT/$1" "$WORK/reference.exr" --diff \
        >"$WORK/d.txt" 2>&1 || fail "$1 differs from the C reference: $(cat "$WORK/d.txt")"
}
same_as_reference R001/R001C001.1004.exr
same_as_reference R001/R001C001.1008.exr
# ffmpeg reads the reframed sequence whole. The frame centre is the fixed
# point of the push-in and the rotation: there the last frame shows what the
# source shows, while towards the edges the picture has moved.
ffmpeg -v error -start_number 1001 -i "$MNT/R001/R001C001.%04d.exr" -f rawvideo \
    -pix_fmt gbrpf32le "$WORK/seq.raw" || fail "ffmpeg cannot read the reframed sequence"
[ "$(stat -c %s "$WORK/seq.raw")" = $((8 * 640 * 360 * 3 * 4)) ] || fail "ffmpeg read a short sequence"
"$PY" - "$WORK/seq.raw" <<'PY' || fail "the push-in is not about the frame centre"
import sys
import numpy as np
seq = np.fromfile(sys.argv[1], np.float32).reshape(8, 3, 360, 640)
first, last = seq[0], seq[7]
centre = np.abs(last[:, 179:181, 319:321] - first[:, 179:181, 319:321]).mean()
edge = np.abs(last[:, :, :40] - first[:, :, :40]).mean()
assert edge > 5 * centre and edge > 1e-3, (edge, centre)
print("centre change", centre, "edge change", edge)
PY

# ---- windows, gradient, tint ------------------------------------------------
same_as_reference W001/W001C001.1001.exr
same_as_reference W001/W001C001.1002.exr
"$PY" - "$MNT/W001/W001C001.1001.exr" "$DAILIES/W001/W001C001.1001.exr" <<'PY' || fail "window/gradient placement"
import subprocess, sys
import numpy as np
def read(p):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", p, "-f", "rawvideo", "-pix_fmt",
                          "gbrpf32le", "-"], check=True, stdout=subprocess.PIPE).stdout
    g, b, r = np.frombuffer(raw, np.float32).reshape(3, 360, 640)
    return np.stack([r, g, b], -1).astype(np.float64)
out, src = read(sys.argv[1]), read(sys.argv[2])
ratio = lambda y, x: (out[y, x] + 1e-6) / (src[y, x] + 1e-6)
# The window's centre is warmer and brighter (+0.4 stop, 5600 -> 4800 K),
# the gradient's left end untouched, its right end -0.6 stop.
c = ratio(180, 320)
assert c[0] > c[2] and 1.1 < c[1] < 1.5, c
left = ratio(180, 5)
assert np.allclose(left, 1, atol=2e-3), left
right = out[150:210, 600:630].mean() / src[150:210, 600:630].mean()
assert abs(right - 2 ** -0.6) < 0.06, right
print("window centre ratio", c, "gradient right", right)
PY

# ---- match ------------------------------------------------------------------
# The fit recovers the miss: the matched frame equals the clean one.
for i in 1002 1004; do
    oiiotool --fail 0.004 --failpercent 0.01 --hardfail 0.02 "$MNT/M001/M001C001.$i.exr" \
        "$DAILIES/M001/M001C001.1001.exr" --diff >"$WORK/d.txt" 2>&1 ||
        fail "match did not recover the miss on $i: $(cat "$WORK/d.txt")"
done
hdr=$(exrheader "$MNT/M001/M001C001.1003.exr")
fitted=$(grep 'platefs/fitted' <<<"$hdr") || fail "no platefs/fitted attribute: $hdr"
grep -q 'match frame=1001 model=gain' <<<"$fitted" || fail "fitted note lacks the match: $fitted"
grep -qF 'platefs/op1 (type string): "relight match.frame=1001"' <<<"$hdr" ||
    fail "the op's provenance should name only what differs from the defaults: $hdr"
# The fitted gains are the inverse of the miss: 2^0.5 / 1.12, 2^0.5,
# 2^0.5 / 0.85, and the exposure (of the luma-weighted gain) about +0.486.
"$PY" - "$fitted" <<'PY' || fail "fitted exposure: $fitted"
import re, sys
m = re.search(r"exposure=([+-][0-9.]+)", sys.argv[1])
assert m, sys.argv[1]
e = float(m.group(1))
assert abs(e - 0.486) < 0.01, e
g = re.search(r"gain=\[([0-9.]+) ([0-9.]+) ([0-9.]+)\]", sys.argv[1])
want = (2 ** 0.5 / 1.12, 2 ** 0.5, 2 ** 0.5 / 0.85)
assert g and all(abs(float(g.group(i + 1)) / want[i] - 1) < 0.005 for i in range(3)), (g, want)
print("fitted exposure", e, "gains", g.groups())
PY
grep -q 'match frame=1001' "$LOG" || fail "the fit was not logged"
# The size promised before the render held (the note has a fixed width).
for i in 1002 1003 1004; do
    [ "$(stat -c %s "$MNT/M001/M001C001.$i.exr")" = "$(wc -c <"$MNT/M001/M001C001.$i.exr")" ] ||
        fail "size of matched frame $i changed"
done

unmount_fs
echo "PASS"
