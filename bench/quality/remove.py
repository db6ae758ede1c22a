#!/usr/bin/env python3
"""remove.py - the wire and object removal bench, side by side with the
baselines a user would otherwise reach for (OpenCV inpaint, ffmpeg removelogo).

Run it through bench/remove.sh:

    bench/remove.sh [BUILD_DIR] [FOOTAGE_DIR] [--quick] [--baselines-only]
                    [--frames N] [--score-frames M] [--clips a,b]
                    [--wire-method auto|temporal|spatial] [--dump DIR]
                    [--frame-timeout S] [--stand-in] [--work DIR]

It prints tables and writes BUILD_DIR/bench-remove.json (a list of records,
one per clip, damage and method, like bench-quality.json; the first record
says how the run was set up). --baselines-only leaves platefs out; --dump
writes 8-bit PNGs of the first scored frame of every method (and the masks)
for a look; --stand-in runs the whole platefs path (rules, check, mount,
timed reads) with `relight exposure: 0` in place of the removal ops, to
debug the harness on a build without them. A build without the ops is
detected (`platefs check` says "unknown op"): their rows say so and the
rest of the bench runs.

Footage
  A run of N consecutive frames (default 24) of real clips from
  FOOTAGE_DIR/video: moving camera: cockatoo (hand-held, 1280x720), bear
  (panning, 854x480); static camera: juggle (1280x720), friday (grainy
  black-and-white film, 640x480). Frames are decoded by platefs itself
  (`platefs render` of CLIP.frames/STEM.NNNN.exr, as quality.py does):
  scene-linear RGB, half float. These untouched frames are the ground truth.
  All N frames are damaged and given to platefs; the M frames in the middle
  (--score-frames, default all N) are scored, by every method alike, and only
  those are read through platefs: the others are context for its temporal
  fill, and M < N makes the platefs rows cheaper (they cost 4 runs x clips x
  M renders). --quick: bear and friday, N = 12, M = 4.

Damage (drawn in linear light on copies, written as a half-float EXR sequence
dailies/S/plate.NNNN.exr, one sequence per damage)
  wires   three anti-aliased wires over the whole frame, each moving from
          frame to frame (end points drift 1-2 px/frame), all slanted: a
          dark straight 6 px wire, a bright straight 4 px wire, and a dark
          8 px wire sagging in a curve (drawn, and given to platefs, as a
          17-point polyline). Coverage is the box-filtered distance to the
          polyline: clip(width/2 + 0.5 - d, 0, 1).
  object  one opaque shaded ellipse (90 x 68 px; reddish, grey on the
          black-and-white clip) with a 4 px soft edge, moving 2-3 px/frame
          along a wavy line over textured background.
  Geometry uses the engine's convention: pixel (x, y) has its centre at
  (x + 0.5, y + 0.5). The scoring mask of a frame is the exact drawn
  coverage > 0, dilated by 1 px (3x3); the baselines get that same mask.

Methods
  platefs   the sequence is mounted (`platefs mount ... --readahead 0` with a
            fresh cache) with a rule file shot BENCH, match ["S/*.exr"]:
            wires: one `wire_remove` op per wire, `path` keyed at every frame
            with the drawn points, `width` = drawn width + 2 px, `spline:
            false`, `method` auto (--wire-method); object: `object_remove`
            with `shape` {ellipse: [cx, cy, rx + 2, ry + 2]} (where the drawn
            coverage ends) keyed at every frame ({1001: {ellipse: [...]}, ...};
            shape.ellipse: {1001: [...], ...} should a build refuse that
            spelling), feather 4, dilate 2. Each
            op runs on its own damage. Run twice: grain 1 (the default) and
            grain 0, since regrain adds noise that PSNR penalises. Frames are
            read in order through the mount (`cat`, limited to
            --frame-timeout s, default 300); the first read renders, and
            seconds/frame is the wall time of each read (open + read of the
            whole file: EXR decode, the ops, EXR encode, FUSE). Rules are
            checked with `platefs check` first; a failing check or render is
            reported with its error text and the bench goes on.
  Telea, NS OpenCV 4.6 cv2.inpaint (INPAINT_TELEA / INPAINT_NS, radius 5).
            cv2.inpaint takes only 8-bit data for 3 channels, so frames are
            converted at the boundary: linear -> sRGB-encoded, clipped 0..1,
            8 bits; the result is scored as that sRGB data / 255.
  removelogo ffmpeg's removelogo (one static mask per run), run once per
            frame on that frame as an 8-bit PNG with that frame's mask as a
            PNG (white = remove). removelogo takes only yuv420p, so the
            frame goes RGB -> yuv420p (swscale defaults) -> removelogo ->
            RGB; seconds/frame includes the ffmpeg process and PNG I/O.
  damaged   the damaged input, unrepaired (reference row).
  original  the untouched frames (reference row for the temporal error).

Scores (every method alike: sRGB-encoded values, clipped 0..1, against the
untouched original)
  PSNR      inside the mask (mean of the per-frame PSNRs).
  SSIM      SSIM map of Rec.709 luma (Wang 2004, Gaussian 11x11 sigma 1.5,
            as quality.py) on the full frame, averaged inside the mask
            (mean over frames).
  t-err     temporal warping error: optical flow between consecutive
            ORIGINAL frames (OpenCV DIS preset medium on 8-bit grey, both
            directions; pixels failing the forward-backward check
            |f + b(x+f)|^2 < 0.01 (|f|^2 + |b(x+f)|^2) + 0.5, or flowing out
            of the frame, are dropped as occlusions) warps result t+1 onto t
            (bilinear); the squared difference, over RGB, is averaged over
            mask(t) united with mask(t+1) pulled back to frame t by the same
            flow, pooled over all pairs. Shown x 1e4 next to the same measure
            on the original footage; ratio = result / original (goal <= 1:
            the fix flickers no more than the footage itself moves).
  outside   (JSON changed_far_outside_px, and a note when not 0) platefs
            only: the most pixels in a frame that differ from the damaged
            input more than 12 px outside the mask, where the op's output
            must be the source bit for bit.
  s/frame   mean wall time per frame (platefs: per read; "1st s" is the first
            read. Before the first mount of each op, one `platefs render` of
            a frame compiles and caches the OpenCL kernels, untimed).

Summary goals: platefs in-mask PSNR >= Telea + 1.5 dB on the moving-camera
clips, >= removelogo + 3 dB on every clip, temporal error ratio <= 1. The
bench exits 0 whether goals are met or not (it is a measurement); 1 when a
baseline or the set-up fails.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import Platefs, read_rgb, run, srgb_encode, write_exr  # noqa: E402

# name, file, camera, first frame, object: start (fraction of W, H), velocity px/frame
CLIPS = [
    ("cockatoo", "imageio_cockatoo_yuv420.mp4", "moving", 1040, (0.60, 0.40), (-2.5, 1.5)),
    ("bear", "cotracker_davis_bear.mp4", "moving", 1030, (0.45, 0.55), (-2.5, -1.0)),
    ("juggle", "sam2_05_default_juggle.mp4", "static", 1100, (0.35, 0.50), (3.0, -1.0)),
    ("friday", "mdn_cc0_friday.mp4", "static", 1060, (0.55, 0.45), (-2.0, 1.0)),
]
QUICK_CLIPS = ("bear", "friday")

DARK = np.array([0.010, 0.009, 0.008], np.float32)
DARK2 = np.array([0.020, 0.018, 0.016], np.float32)
BRIGHT = np.array([0.80, 0.78, 0.72], np.float32)
OBJ_RX, OBJ_RY, OBJ_SOFT = 45.0, 34.0, 4.0

# ---- damage ------------------------------------------------------------------


def wires_at(t, w, h):
    """The wires of frame index t: [(points K x 2, width px, linear colour)].
    Points are rounded to 1/100 px, so the rule file holds exactly what is
    drawn."""
    a = np.array([[0.30 * w + 2.0 * t, 0.0], [0.36 * w + 1.0 * t, float(h)]])
    b = np.array([[0.0, 0.22 * h + 1.5 * t], [float(w), 0.40 * h - 0.8 * t]])
    s = np.linspace(0.0, 1.0, 17)
    y0, y1, sag = 0.62 * h + 0.6 * t, 0.55 * h + 1.4 * t, 0.10 * h + 0.5 * t
    c = np.stack([w * s, y0 + (y1 - y0) * s + 4 * sag * s * (1 - s)], axis=1)
    return [(np.round(a, 2), 6, DARK), (np.round(b, 2), 4, BRIGHT), (np.round(c, 2), 8, DARK2)]


def polyline_coverage(h, w, pts, width):
    """Anti-aliased coverage of a polyline of the given full width: the box
    filtered distance clip(width / 2 + 0.5 - d, 0, 1), d measured from the
    pixel centre (x + 0.5, y + 0.5) to the polyline (round joins)."""
    reach = width / 2 + 0.5
    dist = np.full((h, w), np.inf, np.float64)
    for p, q in zip(pts[:-1], pts[1:]):
        x0 = max(int(np.floor(min(p[0], q[0]) - reach - 1)), 0)
        x1 = min(int(np.ceil(max(p[0], q[0]) + reach + 1)), w)
        y0 = max(int(np.floor(min(p[1], q[1]) - reach - 1)), 0)
        y1 = min(int(np.ceil(max(p[1], q[1]) + reach + 1)), h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        px, py = xx + 0.5 - p[0], yy + 0.5 - p[1]
        dx, dy = q[0] - p[0], q[1] - p[1]
        u = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        d = np.hypot(px - u * dx, py - u * dy)
        dist[y0:y1, x0:x1] = np.minimum(dist[y0:y1, x0:x1], d)
    return np.clip(reach - dist, 0, 1).astype(np.float32)


def object_at(t, w, h, start, vel):
    cx = start[0] * w + vel[0] * t
    cy = start[1] * h + vel[1] * t + 6.0 * np.sin(t / 4.0)
    return round(float(cx), 2), round(float(cy), 2), OBJ_RX, OBJ_RY


def ellipse_coverage(h, w, cx, cy, rx, ry, soft):
    """Coverage 1 inside, falling linearly over `soft` px across the edge
    (approximate signed distance), 0 from soft/2 px outside."""
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    r = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    grad = np.sqrt((dx / rx ** 2) ** 2 + (dy / ry ** 2) ** 2) / np.maximum(r, 1e-9)
    d = (r - 1) / np.maximum(grad, 1e-9)
    return np.clip(0.5 - d / soft, 0, 1).astype(np.float32), dy / ry


def dilate1(cov):
    return cv2.dilate((cov > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def damage_wires(orig, t):
    h, w = orig.shape[:2]
    out, cover = orig.copy(), np.zeros((h, w), np.float32)
    for pts, width, colour in wires_at(t, w, h):
        a = polyline_coverage(h, w, pts, width)[..., None]
        out = out * (1 - a) + colour * a
        cover = np.maximum(cover, a[..., 0])
    return out, dilate1(cover)


def damage_object(orig, t, clip):
    h, w = orig.shape[:2]
    cx, cy, rx, ry = object_at(t, w, h, clip["obj_start"], clip["obj_vel"])
    a, v = ellipse_coverage(h, w, cx, cy, rx, ry, OBJ_SOFT)
    base = np.array([0.18, 0.18, 0.18] if clip["mono"] else [0.45, 0.12, 0.07], np.float32)
    shade = (0.55 + 0.45 * np.clip(0.5 - 0.5 * v, 0, 1)).astype(np.float32)[..., None]
    a = a[..., None]
    return orig * (1 - a) + base * shade * a, dilate1(a[..., 0])


def write_exr_plain(path, rgb):
    """quality.write_exr, half float, without compression (the plates are
    written 4x faster; platefs writes its output uncompressed too)."""
    h, w = rgb.shape[:2]
    raw = np.ascontiguousarray(np.stack([rgb[..., 1], rgb[..., 2], rgb[..., 0]])
                               .astype(np.float32)).tobytes()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gbrpf32le",
                    "-s", f"{w}x{h}", "-i", "-", "-c:v", "exr", "-format", "half",
                    "-compression", "none", path], input=raw, check=True)


def as_half(x):
    return x.astype(np.float16).astype(np.float32)


# ---- rules ---------------------------------------------------------------------


def fmt(v):
    return f"{v:.2f}".rstrip("0").rstrip(".")


def wire_rules(frames, w, h, grain, method):
    ops = ""
    nw = len(wires_at(0, w, h))
    for k in range(nw):
        width = wires_at(0, w, h)[k][1] + 2
        keys = []
        for t, n in enumerate(frames):
            pts = wires_at(t, w, h)[k][0]
            keys.append(f"{n}: [" + ", ".join(f"[{fmt(x)}, {fmt(y)}]" for x, y in pts) + "]")
        ops += (f"  - op: wire_remove\n    width: {width}\n    path: {{{', '.join(keys)}}}\n"
                f"    spline: false\n    method: {method}\n    grain: {grain}\n")
    return ops


def object_rules(frames, w, h, clip, grain):
    """The object_remove op, in two spellings of the keyframed shape: the
    shape keyed per frame ({1001: {ellipse: [...]}, ...}) and, should this
    build not take that, the generic keyframes of shape.ellipse. The first
    that `platefs check` accepts is used."""
    ells = []
    for t, n in enumerate(frames):
        cx, cy, rx, ry = object_at(t, w, h, clip["obj_start"], clip["obj_vel"])
        e = OBJ_SOFT / 2
        ells.append((n, f"[{fmt(cx)}, {fmt(cy)}, {fmt(rx + e)}, {fmt(ry + e)}]"))
    rest = "    feather: 4\n    dilate: 2\n" + (f"    grain: {grain}\n" if grain is not None else "")
    per_frame = ", ".join(f"{n}: {{ellipse: {v}}}" for n, v in ells)
    generic = ", ".join(f"{n}: {v}" for n, v in ells)
    return [f"  - op: object_remove\n    shape: {{{per_frame}}}\n" + rest,
            f"  - op: object_remove\n    shape.ellipse: {{{generic}}}\n" + rest]


# ---- scoring -------------------------------------------------------------------

LUMA = np.array([0.2126, 0.7152, 0.0722])
# Beyond this distance from the mask a removal op must leave the input's bits
# as they are (the wire width margin, dilate and feather all fit inside).
FAR = 12
FAR_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * FAR + 1, 2 * FAR + 1))


def ssim_map(a_enc, b_enc):
    """quality.py's SSIM (Rec.709 luma, Gaussian 11x11 sigma 1.5, reflected
    borders) as a per-pixel map aligned with the frame; cv2.GaussianBlur with
    BORDER_REFLECT_101 is the same filter as quality._gauss_blur, only fast."""
    x, y = a_enc @ LUMA, b_enc @ LUMA
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT_101)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def to_u8(enc):
    return np.clip(np.round(enc * 255.0), 0, 255).astype(np.uint8)


class Flows:
    """DIS flow between consecutive original frames with a forward-backward
    consistency mask."""

    def __init__(self, orig_enc, scored):
        """Flows t -> t+1 for the consecutive pairs of the scored indices."""
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        grey = {t: cv2.cvtColor(to_u8(orig_enc[t]), cv2.COLOR_RGB2GRAY) for t in scored}
        h, w = grey[scored[0]].shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.maps, self.valid = {}, {}
        for t in scored[:-1]:
            f = dis.calc(grey[t], grey[t + 1], None)
            b = dis.calc(grey[t + 1], grey[t], None)
            mx, my = gx + f[..., 0], gy + f[..., 1]
            bw = cv2.remap(b, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            fb = np.sum((f + bw) ** 2, axis=-1)
            ok = fb < 0.01 * (np.sum(f ** 2, axis=-1) + np.sum(bw ** 2, axis=-1)) + 0.5
            ok &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
            self.maps[t] = (mx, my)
            self.valid[t] = ok

    def warp(self, t, img):
        """Frame t+1's image pulled back onto frame t."""
        mx, my = self.maps[t]
        return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class Score:
    """Accumulates one method's scores over a sequence, frame by frame."""

    def __init__(self, orig_enc, masks, flows, dump=None):
        self.orig, self.masks, self.flows, self.dump = orig_enc, masks, flows, dump
        self.psnr, self.ssim, self.secs = [], [], []
        self.terr_sum, self.terr_n, self.prev = 0.0, 0, None

    def add(self, t, enc, secs=None):
        enc = np.asarray(enc, np.float64)
        m = self.masks[t]
        if self.dump and self.prev is None:
            cv2.imwrite(f"{self.dump}.{t}.png", cv2.cvtColor(to_u8(enc), cv2.COLOR_RGB2BGR))
        d = (enc - self.orig[t])[m]
        mse = float(np.mean(d * d)) if d.size else 0.0
        self.psnr.append(99.0 if mse <= 1e-20 else 10 * np.log10(1.0 / mse))
        self.ssim.append(float(np.mean(ssim_map(enc, self.orig[t])[m])))
        if secs is not None:
            self.secs.append(secs)
        if self.prev is not None and t == self.prev[0] + 1:
            p = t - 1
            reg = self.masks[p] | (self.flows.warp(p, self.masks[t].astype(np.float32)) > 0)
            reg &= self.flows.valid[p]
            warped = self.flows.warp(p, enc.astype(np.float32))
            diff = (warped - self.prev[1].astype(np.float32))[reg]
            self.terr_sum += float(np.sum(diff.astype(np.float64) ** 2))
            self.terr_n += diff.size
        self.prev = (t, enc)

    def result(self):
        return {"psnr": float(np.mean(self.psnr)), "ssim": float(np.mean(self.ssim)),
                "psnr_per_frame": [round(x, 3) for x in self.psnr],
                "temporal_err": self.terr_sum / self.terr_n if self.terr_n else None,
                "s_per_frame": float(np.mean(self.secs)) if self.secs else None,
                "frames": len(self.psnr)}


# ---- baselines -----------------------------------------------------------------


def cv_inpaint(damaged_u8, mask, flag):
    t0 = time.perf_counter()
    out = cv2.inpaint(damaged_u8, mask.astype(np.uint8) * 255, 5, flag)
    return out.astype(np.float64) / 255.0, time.perf_counter() - t0


def removelogo(damaged_u8, mask, work):
    h, w = mask.shape
    src, msk = os.path.join(work, "rl-frame.png"), os.path.join(work, "rl-mask.png")
    cv2.imwrite(src, cv2.cvtColor(damaged_u8, cv2.COLOR_RGB2BGR))
    cv2.imwrite(msk, mask.astype(np.uint8) * 255)
    t0 = time.perf_counter()
    raw = run(["ffmpeg", "-v", "error", "-i", src, "-vf",
               f"format=yuv420p,removelogo=f={msk},format=rgb24", "-frames:v", "1",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]).stdout
    secs = time.perf_counter() - t0
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.float64) / 255.0, secs


# ---- platefs through a mount ------------------------------------------------------


def tail(text, n=6):
    """The last lines of a tool's output, without platefs' info and debug log
    lines (when anything else is left), repeated lines, and with the bench's
    scratch paths cut to their last part."""
    lines = [re.sub(r"/\S*/(?=[^/\s]+)", "", ln) for ln in text.strip().splitlines()
             if ln.strip()]
    quiet = [re.sub(r"^platefs [0-9:.]+ +", "platefs ", ln) for ln in lines
             if not re.match(r"platefs [0-9:.]+ +(info|debug) ", ln)]
    lines = list(dict.fromkeys(quiet or lines))
    return " | ".join(lines[-n:])


def platefs_run(binary, root, dailies, rules_ops, frames, warm=False, frame_timeout=300,
                mnt_timeout=60):
    """frames: [(index, frame number)] to read, in order."""
    """Mounts the damaged sequence with the rules (rules_ops: the ops' text,
    or a list of spellings, the first that `platefs check` takes) and reads
    every frame in order (`cat` with a time limit, so a hung render cannot hang the bench).
    warm: render the first frame once with `platefs render` before mounting,
    so the OpenCL kernels are compiled and cached outside the timed reads.
    Returns ([(t, local copy, seconds)], error text or None, warm-up seconds)."""
    rules = os.path.join(root, "rules")
    os.makedirs(rules)
    first_err = None
    for ops in ([rules_ops] if isinstance(rules_ops, str) else rules_ops):
        with open(os.path.join(rules, "shot.yaml"), "w") as f:
            f.write('shot: BENCH\nmatch: ["S/*.exr"]\nops:\n' + ops)
        chk = subprocess.run([binary, "check", rules, "--dailies", dailies],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if chk.returncode == 0:
            break
        first_err = first_err or "platefs check: " + tail(chk.stdout.decode(errors="replace"), 4)
    else:
        return [], first_err, None

    def render_error(rel, why):
        try:
            r = subprocess.run([binary, "render", dailies, rel, "-o",
                                os.path.join(root, "err.exr"), "--rules", rules],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=frame_timeout)
            text = tail(r.stdout.decode(errors="replace"), 4) if r.returncode else \
                "platefs render of that frame succeeded"
        except subprocess.TimeoutExpired:
            text = f"platefs render of that frame took over {frame_timeout} s too"
        return f"{rel}: {why}; {text}"

    warm_s = None
    if warm:
        t0 = time.perf_counter()
        try:
            r = subprocess.run([binary, "render", dailies, f"S/plate.{frames[0][1]}.exr", "-o",
                                os.path.join(root, "warm.exr"), "--rules", rules],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=frame_timeout + 300)
        except subprocess.TimeoutExpired:
            return [], f"platefs render (kernel warm-up) took over {frame_timeout + 300} s", None
        if r.returncode != 0:
            return [], "platefs render: " + tail(r.stdout.decode(errors="replace"), 4), None
        warm_s = time.perf_counter() - t0
    mnt, cache, log = (os.path.join(root, x) for x in ("mnt", "cache", "mount.log"))
    os.makedirs(mnt)
    out, err = [], None
    with open(log, "w") as logf:
        proc = subprocess.Popen([binary, "mount", dailies, mnt, "--rules", rules, "--cache",
                                 cache, "--cache-size", "4G", "-f", "--readahead", "0",
                                 "--log-level", "info"], stdout=logf, stderr=subprocess.STDOUT)
    try:
        t_end = time.time() + mnt_timeout
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.time() > t_end:
                with open(log, errors="replace") as f:
                    return [], "platefs mount did not come up: " + tail(f.read()), warm_s
            time.sleep(0.05)
        for t, n in frames:
            rel = f"S/plate.{n}.exr"
            local = os.path.join(root, f"out.{n}.exr")
            t0 = time.perf_counter()
            try:
                with open(local, "wb") as f:
                    r = subprocess.run(["cat", os.path.join(mnt, rel)], stdout=f,
                                       stderr=subprocess.PIPE, timeout=frame_timeout)
            except subprocess.TimeoutExpired:
                err = f"{rel}: the read took over {frame_timeout} s (given up)"
                break
            secs = time.perf_counter() - t0
            if r.returncode != 0:
                err = render_error(rel, "read through the mount failed (" +
                                   tail(r.stderr.decode(errors="replace"), 1) + ")")
                break
            out.append((t, local, secs))
    finally:
        for flags in (["-u"], ["-u", "-z"]):
            if not os.path.ismount(mnt):
                break
            subprocess.run(["fusermount3", *flags, mnt], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if err:
        with open(log, errors="replace") as f:
            errs = [ln for ln in f.read().splitlines() if " error " in ln or "error:" in ln]
        if errs:
            err += " | mount log: " + tail("\n".join(errs), 2)
    return out, err, warm_s


PROBE_OPS = {"wire_remove": "    width: 3\n    path: [[1, 1], [14, 14]]\n",
             "object_remove": "    shape: {ellipse: [8, 8, 3, 3]}\n"}


def platefs_available(binary, work, op):
    """None when this build knows the op, else why not (the error text)."""
    root = tempfile.mkdtemp(dir=work, prefix="probe-")
    os.makedirs(os.path.join(root, "d", "S"))
    os.makedirs(os.path.join(root, "r"))
    write_exr(os.path.join(root, "d", "S", "plate.1001.exr"),
              np.full((16, 16, 3), 0.18, np.float32))
    with open(os.path.join(root, "r", "s.yaml"), "w") as f:
        f.write(f'shot: BENCH\nmatch: ["S/*.exr"]\nops:\n  - op: {op}\n' + PROBE_OPS[op])
    r = subprocess.run([binary, "check", os.path.join(root, "r"), "--dailies",
                        os.path.join(root, "d")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    for line in r.stdout.decode(errors="replace").splitlines():
        if "unknown op" in line:
            return "not in this build: " + line.split("error: ", 1)[-1]
    return None  # known (the probe's own parameters may be off: the runs will say)


# ---- the bench -------------------------------------------------------------------


def decode_clip(pf, video, clip, nframes):
    stem = os.path.splitext(clip["file"])[0]
    lin = []
    for n in range(clip["first"], clip["first"] + nframes):
        img, _, _ = pf.render(video, "", f"{clip['file']}.frames/{stem}.{n}.exr")
        lin.append(img)
    return lin


def bench_clip(args, pf, clip, work, results, avail_err):
    frames = list(range(clip["first"], clip["first"] + args.frames))
    t0 = time.perf_counter()
    orig_lin = decode_clip(pf, args.video, clip, args.frames)
    h, w = orig_lin[0].shape[:2]
    clip["mono"] = bool(np.max(np.abs(orig_lin[0] - orig_lin[0][..., 1:2])) < 0.02)
    s0 = (len(frames) - args.score) // 2
    scored = list(range(s0, s0 + args.score))
    orig_enc = [srgb_encode(x) if t in scored else None for t, x in enumerate(orig_lin)]
    flows = Flows(orig_enc, scored)
    prep = time.perf_counter() - t0
    print(f"\n# {clip['name']} ({clip['camera']} camera, {w}x{h}, frames {frames[0]}-"
          f"{frames[-1]}, scored {frames[scored[0]]}-{frames[scored[-1]]}; decode + flow "
          f"{prep:.1f} s)")
    for kind in ("wires", "object"):
        seq = os.path.join(work, f"{clip['name']}-{kind}")
        os.makedirs(os.path.join(seq, "S"))
        damaged, masks = [], []
        for t, img in enumerate(orig_lin):
            d, m = damage_wires(img, t) if kind == "wires" else damage_object(img, t, clip)
            d = as_half(d)
            write_exr_plain(os.path.join(seq, "S", f"plate.{frames[t]}.exr"), d)
            damaged.append(d)
            masks.append(m)
        rows = []

        def dump_name(name):
            if not args.dump:
                return None
            return os.path.join(args.dump, f"{clip['name']}-{kind}-" +
                                re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))

        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            cv2.imwrite(dump_name("mask") + f".{scored[0]}.png",
                        masks[scored[0]].astype(np.uint8) * 255)

        def score(name, gen):
            s = Score(orig_enc, masks, flows, dump_name(name))
            for t, enc, secs in gen:
                s.add(t, enc, secs)
            rows.append((name, s.result(), None, {}))

        score("original", ((t, orig_enc[t], None) for t in scored))
        score("damaged", ((t, srgb_encode(damaged[t]), None) for t in scored))
        u8 = {t: to_u8(srgb_encode(damaged[t])) for t in scored}
        score("OpenCV Telea r5 (8-bit)",
              ((t, *cv_inpaint(u8[t], masks[t], cv2.INPAINT_TELEA)) for t in scored))
        score("OpenCV NS r5 (8-bit)",
              ((t, *cv_inpaint(u8[t], masks[t], cv2.INPAINT_NS)) for t in scored))
        score("ffmpeg removelogo (8-bit 4:2:0)",
              ((t, *removelogo(u8[t], masks[t], work)) for t in scored))
        del u8
        if not args.baselines_only:
            for grain in (1, 0):
                op = "wire_remove" if kind == "wires" else "object_remove"
                name = f"platefs {op}" + (f" {args.wire_method}" if kind == "wires" else "") + \
                    f" grain {grain}"
                info = {"grain": grain, "op": op}
                if avail_err[kind]:
                    rows.append((name, None, avail_err[kind], info))
                    continue
                ops = (wire_rules(frames, w, h, grain, args.wire_method) if kind == "wires"
                       else object_rules(frames, w, h, clip, grain))
                if args.stand_in:
                    ops, name = "  - op: relight\n    exposure: 0\n", name + " [stand-in]"
                root = os.path.join(work, f"pf-{clip['name']}-{kind}-g{grain}")
                os.makedirs(root)
                warm = kind not in args.warmed
                got, err, warm_s = platefs_run(args.platefs, root, seq, ops,
                                               [(t, frames[t]) for t in scored], warm,
                                               args.frame_timeout)
                if warm_s is not None:
                    args.warmed.add(kind)
                    info["warm_up_render_s"] = warm_s
                if err and kind == "object" and grain == 0 and 'unknown parameter "grain"' in err:
                    rows.append((name, None, "object_remove takes no grain parameter", info))
                    continue
                res = None
                if got:
                    s = Score(orig_enc, masks, flows, dump_name(name))
                    outside = []
                    for t, path, secs in got:
                        out = read_rgb(path)
                        s.add(t, srgb_encode(out), secs)
                        far = cv2.dilate(masks[t].astype(np.uint8), FAR_KERNEL) == 0
                        outside.append(int(np.count_nonzero(
                            np.any(out != damaged[t], axis=-1) & far)))
                    res = s.result()
                    res["changed_far_outside_px"] = max(outside)
                    res["first_read_s"] = got[0][2]
                    res["read_s"] = [round(g[2], 4) for g in got]
                rows.append((name, res, err, info))
                shutil.rmtree(root, ignore_errors=True)
        del damaged
        shutil.rmtree(seq, ignore_errors=True)
        print_rows(clip, kind, rows, results)


def print_rows(clip, kind, rows, results):
    orig = rows[0][1]["temporal_err"]
    desc = {"wires": "3 moving wires (6 px dark, 4 px bright, 8 px dark curved)",
            "object": "a moving 90x68 px soft-edged opaque ellipse"}[kind]
    print(f"\n## {clip['name']}: {kind} - {desc}")
    print(f"{'method':<40} {'PSNR':>6} {'SSIM':>7} {'t-err e4':>9} {'orig e4':>8} "
          f"{'ratio':>7} {'s/frame':>8} {'1st s':>6}")
    for name, r, err, info in rows:
        rec = {"test": "remove", "clip": clip["name"], "camera": clip["camera"],
               "damage": kind, "method": name, "temporal_err_original": orig, **info}
        if r is None:
            print(f"{name:<40} {'-':>6} {'-':>7} {'-':>9} {'-':>8} {'-':>7} {'-':>8} {'-':>6}"
                  f"   {err}")
            rec["error"] = err
            results.append(rec)
            continue
        rec.update(r)
        ratio = r["temporal_err"] / orig if r["temporal_err"] is not None and orig else None
        rec["temporal_ratio"] = ratio
        if err:
            rec["error"] = err
        results.append(rec)
        psnr_s = "-" if name == "original" else f"{r['psnr']:.2f}"
        spf = "-" if r["s_per_frame"] is None else f"{r['s_per_frame']:.3f}"
        first = f"{r['first_read_s']:.2f}" if "first_read_s" in r else "-"
        te = "-" if r["temporal_err"] is None else f"{r['temporal_err'] * 1e4:.2f}"
        rt = "-" if ratio is None else f"{ratio:.2f}"
        part = "" if r["frames"] == len(rows[0][1]["psnr_per_frame"]) else \
            f"   (only {r['frames']} frames)"
        print(f"{name:<40} {psnr_s:>6} {r['ssim']:>7.4f} {te:>9} {orig * 1e4:>8.2f} {rt:>7} "
              f"{spf:>8} {first:>6}" + part + (f"   {err}" if err else ""))
        if r.get("changed_far_outside_px"):
            print(f"    note: up to {r['changed_far_outside_px']} px per frame differ from the "
                  f"input more than {FAR} px outside the mask (should be bit-exact)")


def summarise(results, baselines_only):
    print("\n## summary against the goals")
    rem = [r for r in results if r.get("test") == "remove"]
    order = [r["clip"] for r in rem]
    keys = sorted({(r["clip"], r["camera"], r["damage"]) for r in rem},
                  key=lambda k: (k[1] != "moving", order.index(k[0]), k[2] != "wires"))

    def get(clip, damage, prefix):
        for r in rem:
            if r["clip"] == clip and r["damage"] == damage and r["method"].startswith(prefix):
                return r
        return None

    print(f"{'clip':<10} {'camera':<7} {'damage':<7} {'Telea':>7} {'rmlogo':>7} "
          f"{'orig t-err e4':>13}   platefs")
    fails = checks = 0
    for clip, camera, damage in keys:
        te, rl = get(clip, damage, "OpenCV Telea"), get(clip, damage, "ffmpeg removelogo")
        line = (f"{clip:<10} {camera:<7} {damage:<7} {te['psnr']:>7.2f} {rl['psnr']:>7.2f} "
                f"{te['temporal_err_original'] * 1e4:>13.2f}  ")
        pfs = [r for r in rem if r["clip"] == clip and r["damage"] == damage
               and r["method"].startswith("platefs")]
        notes = []
        for r in pfs:
            g = r["grain"]
            if "psnr" not in r:
                notes.append(f"grain {g}: not run")
                continue
            ok_te = r["psnr"] >= te["psnr"] + 1.5 if camera == "moving" else None
            ok_rl = r["psnr"] >= rl["psnr"] + 3.0
            ok_t = r["temporal_ratio"] is not None and r["temporal_ratio"] <= 1.0
            for ok in (ok_te, ok_rl, ok_t):
                if ok is not None:
                    checks += 1
                    fails += not ok
            s = (f"grain {g}: {r['psnr']:.2f} dB"
                 + (f" (Telea{r['psnr'] - te['psnr']:+.2f} {'ok' if ok_te else 'MISS'})"
                    if ok_te is not None else f" (Telea{r['psnr'] - te['psnr']:+.2f})")
                 + f" (rmlogo{r['psnr'] - rl['psnr']:+.2f} {'ok' if ok_rl else 'MISS'})"
                 + f" t-ratio {r['temporal_ratio']:.2f} {'ok' if ok_t else 'MISS'}")
            notes.append(s)
        print(line + ("; ".join(notes) if notes else "-"))
    print("goals: platefs PSNR >= Telea + 1.5 dB (moving camera), >= removelogo + 3 dB, "
          "temporal error ratio <= 1")
    if baselines_only:
        print("platefs: not run (--baselines-only)")
    elif checks:
        print(f"platefs: {checks - fails}/{checks} goal checks met")
    else:
        print("platefs: no platefs results (see the errors above); the bench is ready for the ops")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--platefs", required=True)
    ap.add_argument("--footage", required=True, help="the shared footage folder")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true",
                    help="2 clips, 12 frames, 4 scored (a smoke run)")
    ap.add_argument("--baselines-only", action="store_true", help="skip platefs")
    ap.add_argument("--frames", type=int, help="frames per clip (default 24; --quick 12)")
    ap.add_argument("--score-frames", type=int, dest="score",
                    help="score (and have platefs render) only this many frames in the middle "
                    "of the run; the others are context for temporal fills (default: all; "
                    "--quick 4)")
    ap.add_argument("--clips", help="comma-separated clip names: " +
                    ", ".join(c[0] for c in CLIPS))
    ap.add_argument("--wire-method", default="auto", choices=("auto", "temporal", "spatial"))
    ap.add_argument("--frame-timeout", type=int, default=300,
                    help="seconds one platefs read may take before the run is given up")
    ap.add_argument("--stand-in", action="store_true",
                    help="debug the platefs path (rules, mount, timed reads) with relight "
                    "exposure 0 in place of the removal ops: its scores are the damaged input's")
    ap.add_argument("--work", help="keep the dailies, rules and renders in this folder "
                    "(default: a temporary folder, removed at the end)")
    ap.add_argument("--dump", help="a folder for 8-bit PNGs of the first scored frame of "
                    "every clip, damage and method (and the masks)")
    args = ap.parse_args()
    args.platefs = os.path.abspath(args.platefs)
    args.warmed = set()
    args.video = os.path.abspath(os.path.join(args.footage, "video"))
    if args.frames is None:
        args.frames = 12 if args.quick else 24
    if args.score is None:
        args.score = 4 if args.quick else args.frames
    if not 2 <= args.score <= args.frames:
        ap.error("--score-frames must be 2..--frames (the temporal error needs pairs)")
    clips = [dict(name=c[0], file=c[1], camera=c[2], first=c[3], obj_start=c[4], obj_vel=c[5])
             for c in CLIPS if os.path.exists(os.path.join(args.video, c[1]))]
    if args.clips:
        want = args.clips.split(",")
        clips = [c for c in clips if c["name"] in want]
    elif args.quick:
        clips = [c for c in clips if c["name"] in QUICK_CLIPS]
    if not clips:
        print(f"no clips found in {args.video}", file=sys.stderr)
        return 1

    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = args.work or tempfile.mkdtemp(prefix="pfs-remove-")
    t_start = time.perf_counter()
    try:
        pf = Platefs(args.platefs, work)
        print("Scores on sRGB-encoded values clipped 0..1, inside the damage mask, against the "
              "untouched frames.\nConversions at the boundary: OpenCV inpaint gets 8-bit sRGB "
              "(its only 3-channel input); removelogo gets 8-bit sRGB PNGs, converted to\n"
              "yuv420p (its only format) and back; platefs reads and writes half-float "
              "scene-linear EXR.")
        avail_err = {"wires": None, "object": None}
        if not args.baselines_only and not args.stand_in:
            for kind, op in (("wires", "wire_remove"), ("object", "object_remove")):
                avail_err[kind] = platefs_available(args.platefs, work, op)
                if avail_err[kind]:
                    print(f"platefs: {op} {avail_err[kind]}; its rows are skipped (the bench "
                          "is ready for it)")
        results = [{"test": "remove_setup", "frames": args.frames, "scored_frames": args.score,
                    "clips": [c["name"] for c in clips], "wire_method": args.wire_method,
                    "platefs": None if args.baselines_only else
                    "stand-in" if args.stand_in else
                    {k: v or "available" for k, v in avail_err.items()}}]
        for clip in clips:
            bench_clip(args, pf, clip, work, results, avail_err)
        results[0]["seconds"] = time.perf_counter() - t_start
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        summarise(results, args.baselines_only)
        print(f"\n{len(clips)} clips x {args.frames} frames ({args.score} scored) in "
              f"{time.perf_counter() - t_start:.0f} s")
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
