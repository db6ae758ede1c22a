#!/usr/bin/env python3
"""clipcmp.py - compares a clip's EXR frames read through the mount with
ffmpeg's own decode of the clip, frame by frame.

ffmpeg decodes both sides: the mount's frames as an EXR sequence (the way
any tool reads one; half floats widened to float, scene-linear), and the
clip straight from its file, to its native planar Y'CbCr. The reference
conversion of those code values is written here, independently and simply,
in double precision, from the definitions platefs documents (docs/colour.md):
range normalisation, bilinear chroma upsampling with the chroma sited left
(co-sited horizontally; vertically centred for 4:2:0, the H.264/MPEG-2
siting these clips declare or default to), the matrix. The mount's linear
values go back through the forward transfer function, so the two are
compared as R'G'B' code values, in 8-bit units, over every pixel (nothing
is clipped on either side).

libswscale is deliberately not the reference: its 4:2:2 upsampling does not
follow the requested siting, and it clips super-whites, so it would measure
swscale rather than platefs.

Prints, per clip: frames, mean and maximum difference, the 99.9th
percentile, and the lowest per-frame PSNR; exits 1 when the mean, the
maximum or the PSNR passes its limit, or the frame counts differ.
"""
import argparse
import subprocess
import sys

import numpy as np


def rec709_oetf(lin):
    """BT.709 OETF with the BT.2020 constants, mirrored below 0 as
    docs/colour.md says."""
    a, b = 1.09929682680944, 0.018053968510807
    lin = np.asarray(lin, dtype=np.float64)
    m = np.abs(lin)
    v = np.where(m < b, 4.5 * m, a * np.power(np.maximum(m, b), 0.45) - (a - 1))
    return np.sign(lin) * v


TRANSFERS = {"rec709": rec709_oetf}


# pix_fmt: bits, log2 chroma subsampling (w, h), full range by name
FORMATS = {
    "yuv420p": (8, 1, 1, False), "yuvj420p": (8, 1, 1, True),
    "yuv422p": (8, 1, 0, False), "yuvj422p": (8, 1, 0, True),
    "yuv444p": (8, 0, 0, False), "yuvj444p": (8, 0, 0, True),
    "yuv420p10le": (10, 1, 1, False), "yuv422p10le": (10, 1, 0, False),
    "yuv444p10le": (10, 0, 0, False), "yuv422p12le": (12, 1, 0, False),
    "yuv444p12le": (12, 0, 0, False),
}
KRKB = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114), "bt2020": (0.2627, 0.0593)}


def upsample(c, axis, log2, pos):
    """Bilinear upsampling by 2^log2 along axis, the chroma sample k sited
    at luma position k * s + pos * (s - 1); edges clamped."""
    if log2 == 0:
        return c
    s = 1 << log2
    n = c.shape[axis] * s
    u = (np.arange(n) - pos * (s - 1)) / s
    j = np.floor(u).astype(np.int64)
    t = u - j
    j0 = np.clip(j, 0, c.shape[axis] - 1)
    j1 = np.clip(j + 1, 0, c.shape[axis] - 1)
    a = np.take(c, j0, axis=axis)
    b = np.take(c, j1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    return a * (1 - t.reshape(shape)) + b * t.reshape(shape)


def yuv_frames(cmd, width, height, pix_fmt, matrix, rng):
    bits, lw, lh, full_by_name = FORMATS[pix_fmt]
    full = full_by_name or rng == "pc"
    cw, ch = (width + (1 << lw) - 1) >> lw, (height + (1 << lh) - 1) >> lh
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    size = (width * height + 2 * cw * ch) * np.dtype(dtype).itemsize
    kr, kb = KRKB[matrix]
    kg = 1 - kr - kb
    scale = 1 << (bits - 8)
    for buf in raw_frames(cmd[:-1] + ["-pix_fmt", pix_fmt, "-"], size):
        v = np.frombuffer(buf, dtype=dtype).astype(np.float64)
        y = v[:width * height].reshape(height, width)
        cb = v[width * height:width * height + cw * ch].reshape(ch, cw)
        cr = v[width * height + cw * ch:].reshape(ch, cw)
        if full:
            top = (1 << bits) - 1
            y, cb, cr = y / top, (cb - (1 << (bits - 1))) / top, (cr - (1 << (bits - 1))) / top
        else:
            y = (y - 16 * scale) / (219 * scale)
            cb = (cb - 128 * scale) / (224 * scale)
            cr = (cr - 128 * scale) / (224 * scale)
        cb = upsample(upsample(cb, 1, lw, 0.0), 0, lh, 0.5)[:height, :width]
        cr = upsample(upsample(cr, 1, lw, 0.0), 0, lh, 0.5)[:height, :width]
        r = y + 2 * (1 - kr) * cr
        b = y + 2 * (1 - kb) * cb
        g = (y - kr * r - kb * b) / kg
        yield np.stack([g, b, r])


def raw_frames(cmd, size):
    """The frames of size bytes that cmd writes to its standard output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        while True:
            buf = proc.stdout.read(size)
            if not buf:
                break
            if len(buf) != size:
                raise SystemExit("short frame from: " + " ".join(cmd))
            yield buf
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise SystemExit("failed: " + " ".join(cmd))


def linear_frames(cmd, width, height):
    """gbrpf32le frames: planes G, B, R."""
    for buf in raw_frames(cmd, width * height * 3 * 4):
        yield np.frombuffer(buf, dtype="<f4").reshape(3, height, width)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--pattern", required=True, help="frames through the mount, printf style")
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--matrix", default="bt709")
    ap.add_argument("--range", default="tv")
    ap.add_argument("--transfer", default="rec709", choices=sorted(TRANSFERS))
    ap.add_argument("--max-mean", type=float, required=True)
    ap.add_argument("--max-diff", type=float, required=True)
    ap.add_argument("--min-psnr", type=float, required=True)
    ap.add_argument("--count", type=int, help="frames expected")
    args = ap.parse_args()

    pix_fmt = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0",
                              "-show_entries", "stream=pix_fmt", "-of", "csv=p=0", args.clip],
                             check=True, capture_output=True, text=True).stdout.strip()
    if pix_fmt not in FORMATS:
        raise SystemExit("%s: no reference conversion for %s" % (args.clip, pix_fmt))
    ref_cmd = ["ffmpeg", "-v", "error", "-i", args.clip, "-map", "0:v:0",
               "-fps_mode", "passthrough", "-f", "rawvideo", "-"]
    ours_cmd = ["ffmpeg", "-v", "error", "-start_number", str(args.start),
                "-i", args.pattern, "-f", "rawvideo", "-pix_fmt", "gbrpf32le", "-"]
    oetf = TRANSFERS[args.transfer]
    n = 0
    total = 0.0
    count = 0
    worst = 0.0
    hist = np.zeros(4096, dtype=np.int64)  # 1/256 code value bins
    min_psnr = float("inf")
    ref_it = yuv_frames(ref_cmd, args.width, args.height, pix_fmt, args.matrix, args.range)
    ours_it = linear_frames(ours_cmd, args.width, args.height)
    for ref, ours in zip(ref_it, ours_it):
        d = np.abs(oetf(ours) - ref).ravel() * 255.0
        total += d.sum()
        count += d.size
        worst = max(worst, float(d.max()) if d.size else 0.0)
        hist += np.bincount(np.minimum((d * 256).astype(np.int64), 4095), minlength=4096)
        mse = float(np.mean(d * d)) if d.size else 0.0
        psnr = 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else 99.0
        min_psnr = min(min_psnr, psnr)
        n += 1
    rest_ref = sum(1 for _ in ref_it)
    rest_ours = sum(1 for _ in ours_it)
    mean = total / max(count, 1)
    cum = np.cumsum(hist)
    p999 = float(np.searchsorted(cum, 0.999 * cum[-1])) / 256.0 if count else 0.0
    print("%s: %d frames, mean %.4f, p99.9 %.4f, max %.3f code values (8-bit), min PSNR %.1f dB"
          % (args.clip, n, mean, p999, worst, min_psnr))
    ok = True
    if rest_ref or rest_ours:
        print("frame counts differ: ffmpeg decoded %d more, the mount had %d more"
              % (rest_ref, rest_ours))
        ok = False
    if args.count is not None and n != args.count:
        print("expected %d frames, compared %d" % (args.count, n))
        ok = False
    if mean > args.max_mean or worst > args.max_diff or min_psnr < args.min_psnr:
        print("over the limits: mean <= %g, max <= %g, PSNR >= %g"
              % (args.max_mean, args.max_diff, args.min_psnr))
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
