#!/usr/bin/env bash
# Wire and object removal through the mount: a dark wire drifting across
# the sample shot and a moving blob are drawn onto copies of its frames;
# reading the mounted frames gives them back without wire or blob (close to
# the clean frames inside the matte, the source bit for bit outside it),
# with the op's provenance in the header, the same bytes however the frame
# is rendered (mount, render, one thread or two, OpenCL flows on any run),
# and ffmpeg reading the whole fixed sequence. `platefs check` refuses a
# wire that crosses a protected region, naming the frames.
. "$(dirname "$0")/lib.sh"

mkdir -p "$DAILIES/W001" "$DAILIES/O001" "$WORK/clean"
# The wire: 5 px, dark, anti-aliased, from (250 + 4t, 0) to (290 + 4t, 360)
# at frame 1001 + t. The blob: a soft-edged grey disc of radius 26 moving
# 12 px a frame to the right along y = 120.
"$PY" - "$DAILIES" "$WORK/clean" <<'PY' || fail "could not draw the test plates"
import subprocess, sys
import numpy as np
dailies, clean_dir = sys.argv[1], sys.argv[2]
def read(p):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", p, "-f", "rawvideo", "-pix_fmt",
                          "gbrpf32le", "-"], check=True, stdout=subprocess.PIPE).stdout
    return np.frombuffer(raw, np.float32).reshape(3, 360, 640).copy()  # g, b, r
def write(p, planes):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gbrpf32le",
                    "-s", "640x360", "-i", "-", "-c:v", "exr", "-format", "float",
                    "-compression", "zip16", p],
                   input=np.ascontiguousarray(planes, dtype=np.float32).tobytes(), check=True)
yy, xx = np.mgrid[0:360, 0:640] + 0.5
for t in range(8):
    f = 1001 + t
    img = read(f"{dailies}/A001/A001C003.{f}.exr")
    write(f"{clean_dir}/clean.{f}.exr", img)
    ax, ay, bx, by = 250 + 4 * t, 0.0, 290 + 4 * t, 360.0
    s = np.clip(((xx - ax) * (bx - ax) + (yy - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    d = np.hypot(ax + s * (bx - ax) - xx, ay + s * (by - ay) - yy)
    c = np.clip(2.5 + 0.5 - d, 0, 1)
    write(f"{dailies}/W001/W001C001.{f}.exr", img * (1 - c) + 0.01 * c)
    d = np.hypot(xx - (150 + 12 * t), yy - 120)
    c = np.clip(26 - d, 0, 1)
    write(f"{dailies}/O001/O001C001.{f}.exr", img * (1 - c) + 0.3 * c)
PY

cat >"$RULES/W001C001.yaml" <<'YAML'
shot: W001C001
match: ["W001/W001C001.*.exr"]
protect:
  - rect: [560, 0, 640, 360]
ops:
  - op: wire_remove
    width: 7
    path:
      1001: [[250, 0], [290, 360]]
      1008: [[278, 0], [318, 360]]
YAML
cat >"$RULES/O001C001.yaml" <<'YAML'
shot: O001C001
match: ["O001/O001C001.*.exr"]
ops:
  - op: object_remove
    shape:
      1001: {ellipse: [150, 120, 27, 27]}
      1008: {ellipse: [234, 120, 27, 27]}
    feather: 3
    dilate: 2
YAML

out=$("$PLATEFS" check "$RULES" --dailies "$DAILIES" 2>&1) || fail "check failed: $out"
# What a coordinator writing these rules looks up.
out=$("$PLATEFS" ops) || fail "platefs ops failed"
grep -q "^  path  *points, 2 to 64 \[x, y\] px, required, keyframable" <<<"$out" ||
    fail "platefs ops does not describe wire_remove's path: $out"
grep -q "^object_remove" <<<"$out" || fail "platefs ops lacks object_remove"
# The same wire with a protected region across its path from 1004 on.
mkdir -p "$WORK/protected"
sed 's/rect: \[560, 0, 640, 360\]/rect: [270, 100, 330, 200]\n    frames: 1004-1008/' \
    "$RULES/W001C001.yaml" >"$WORK/protected/W001C001.yaml"
out=$("$PLATEFS" check "$WORK/protected" --dailies "$DAILIES" 2>&1) &&
    fail "check accepted a wire across a protected region"
grep -q "wire_remove.*protected region.*at frames 1004-1008" <<<"$out" ||
    fail "unclear protect refusal: $out"

mount_fs

# Inside the matte the frames come back close to the clean plates; outside
# they are the source's pixels exactly.
"$PY" - "$MNT" "$DAILIES" "$WORK/clean" <<'PY' || fail "removal quality"
import subprocess, sys
import numpy as np
mnt, dailies, clean_dir = sys.argv[1:4]
def read(p):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", p, "-f", "rawvideo", "-pix_fmt",
                          "gbrpf32le", "-"], check=True, stdout=subprocess.PIPE).stdout
    return np.frombuffer(raw, np.float32).reshape(3, 360, 640)
def enc(v):
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
def psnr(a, b, m):
    e = ((enc(a) - enc(b)) ** 2)[:, m].mean()
    return 10 * np.log10(1 / e)
yy, xx = np.mgrid[0:360, 0:640] + 0.5
for name, shot in (("wire", "W001/W001C001"), ("object", "O001/O001C001")):
    for f in (1001, 1004, 1008):
        t = f - 1001
        if name == "wire":
            ax, bx = 250 + 4 * t, 290 + 4 * t
            s = np.clip(((xx - ax) * (bx - ax) + yy * 360) / ((bx - ax) ** 2 + 360 ** 2), 0, 1)
            d = np.hypot(ax + s * (bx - ax) - xx, s * 360 - yy)
            inner, outer = d < 3.5, d > 3.5 + 1 + 2 + 1.5
        else:
            d = np.hypot(xx - (150 + 12 * t), yy - 120)
            inner, outer = d < 26, d > 27 + 2 + 3 + 1.5
        got = read(f"{mnt}/{shot}.{f}.exr")
        src = read(f"{dailies}/{shot}.{f}.exr")
        clean = read(f"{clean_dir}/clean.{f}.exr")
        assert np.array_equal(got[:, outer], src[:, outer]), f"{name} {f}: pixels outside changed"
        before, after = psnr(src, clean, inner), psnr(got, clean, inner)
        print(f"{name} {f}: in-matte PSNR {before:.2f} dB -> {after:.2f} dB")
        assert after > 33 and after > before + 10, (name, f, before, after)
PY

hdr=$(exrheader "$MNT/W001/W001C001.1004.exr")
grep -qF 'platefs/op1 (type string): "wire_remove path=[[262,0],[302,360]] width=7"' <<<"$hdr" ||
    fail "frame 1004 should carry the interpolated path: $hdr"
hdr=$(exrheader "$MNT/O001/O001C001.1008.exr")
grep -qF 'object_remove shape.ellipse=234,120,27,27 feather=3' <<<"$hdr" || fail "object provenance: $hdr"

# The same bytes from a render outside the mount, on one thread or two.
for threads in 1 2; do
    "$PLATEFS" render "$DAILIES" W001/W001C001.1005.exr -o "$WORK/r$threads.exr" \
        --rules "$RULES" --threads $threads 2>>"$LOG" || fail "render with $threads threads"
    cmp -s "$WORK/r$threads.exr" "$MNT/W001/W001C001.1005.exr" ||
        fail "render with $threads threads differs from the mount's frame"
done

# ffmpeg reads the fixed sequence whole.
ffmpeg -v error -start_number 1001 -i "$MNT/W001/W001C001.%04d.exr" -f rawvideo \
    -pix_fmt gbrpf32le "$WORK/seq.raw" || fail "ffmpeg cannot read the fixed sequence"
[ "$(stat -c %s "$WORK/seq.raw")" = $((8 * 640 * 360 * 3 * 4)) ] || fail "ffmpeg read a short sequence"
# Every flow was computed once: the 8 frames, each reading up to 6 on each
# side, share 27 pairs of frames (all but 1001-1008), two flows each;
# without reuse each frame would compute its own 12 or so.
n=$(grep -c "W001/W001C001\.[0-9]*\.exr: flow [0-9]* -> [0-9]* .* computed" "$LOG" || true)
[ "$n" = 54 ] || fail "flows computed $n times for the 8 frames' 27 pairs"
for i in 1001 1008; do
    [ "$(stat -c %s "$MNT/W001/W001C001.$i.exr")" = "$(wc -c <"$MNT/W001/W001C001.$i.exr")" ] ||
        fail "size of fixed frame $i changed"
done

unmount_fs
echo "PASS"
