#!/usr/bin/env python3
"""quality.py - the relight and reframe quality bench, side by side with ffmpeg.

Runs platefs (`platefs render`, the engine exactly as a mount uses it, on
the OpenCL device it picks: PoCL on a machine without a GPU) and ffmpeg's
filters on the same real frames, and scores both against ground truth:

relight
  inverse   a known miss (-0.5 stop, lit 6500 K -> 5200 K) is applied with
            platefs, then corrected with the inverse explicit parameters.
            Exact math: PSNR must be >= 60 dB.
  match     the miss is applied to a frame of a real clip, which is then
            corrected by `match` to an untouched frame of the same clip a
            second or so earlier (camera and subject have moved). Scored by
            PSNR and mean CIEDE2000; beside it ffmpeg `colortemperature` +
            `eq` "set by hand", simulated as the best setting of a grid
            search against the ground truth (an upper bound on what a hand
            could reach with those two filters).
reframe
  a frame G is shrunk by 1/s (zscale Lanczos, float) into the middle of a
  same-size canvas with its edges extended, as if shot wider; reframing by s
  should give G back. platefs `reframe` against ffmpeg
  `crop,scale=flags=lanczos` and `crop,zscale=filter=lanczos` on the same
  input, s = 1.08, 1.25, 2. PSNR and SSIM against G.
speed
  Mpixels/s of each op (platefs: the render's op stage as `--timing`
  reports it, upload and download included; ffmpeg: the filter's time over
  a `null` filter run on the same looped frame).

All scoring is on display-referred values: scene-linear RGB clipped to
[0, 1] and encoded with the sRGB curve, float, for every method alike.
ffmpeg's filters get the data they are built for: the relight baseline
works on 16-bit sRGB-encoded RGB; the scalers work on the same float
linear data as platefs (gbrpf32le). Results go to stdout as tables and to
--json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# ---- image I/O through ffmpeg ----------------------------------------------


def run(cmd, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if res.returncode != 0:
        sys.stderr.write(res.stderr.decode(errors="replace")[-2000:])
        raise RuntimeError(f"{' '.join(cmd)}: exit status {res.returncode}")
    return res


def probe_size(path):
    out = run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
               "stream=width,height", "-of", "csv=p=0", path]).stdout.decode()
    w, h = out.strip().split(",")[:2]
    return int(w), int(h)


def read_rgb(path):
    """Any image ffmpeg reads, as float32 H x W x 3 (EXR: scene-linear)."""
    w, h = probe_size(path)
    raw = run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", "-f", "rawvideo",
               "-pix_fmt", "gbrpf32le", "-"]).stdout
    planes = np.frombuffer(raw, dtype=np.float32).reshape(3, h, w)
    return np.stack([planes[2], planes[0], planes[1]], axis=-1).copy()


def write_exr(path, rgb, half=True):
    g, b, r = rgb[..., 1], rgb[..., 2], rgb[..., 0]
    raw = np.ascontiguousarray(np.stack([g, b, r]).astype(np.float32)).tobytes()
    h, w = rgb.shape[:2]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gbrpf32le",
                    "-s", f"{w}x{h}", "-i", "-", "-c:v", "exr", "-format",
                    "half" if half else "float", "-compression", "zip16", path],
                   input=raw, check=True)


def write_png16(path, enc):
    """sRGB-encoded [0, 1] RGB as a 16-bit PNG."""
    q = np.clip(np.round(enc * 65535.0), 0, 65535).astype("<u2")
    h, w = enc.shape[:2]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb48le",
                    "-s", f"{w}x{h}", "-i", "-", path], input=q.tobytes(), check=True)


def filter_png16(src, vf):
    """ffmpeg filter chain on a 16-bit PNG, back as sRGB-encoded float."""
    w, h = probe_size(src)
    raw = run(["ffmpeg", "-v", "error", "-i", src, "-vf", vf, "-frames:v", "1", "-f",
               "rawvideo", "-pix_fmt", "rgb48le", "-"]).stdout
    return np.frombuffer(raw, dtype="<u2").reshape(h, w, 3).astype(np.float64) / 65535.0


def filter_float(src, vf, w, h):
    raw = run(["ffmpeg", "-v", "error", "-i", src, "-vf", vf, "-frames:v", "1", "-f",
               "rawvideo", "-pix_fmt", "gbrpf32le", "-"]).stdout
    planes = np.frombuffer(raw, dtype=np.float32).reshape(3, h, w)
    return np.stack([planes[2], planes[0], planes[1]], axis=-1)


# ---- metrics -----------------------------------------------------------------


def srgb_encode(lin):
    x = np.clip(np.asarray(lin, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(enc):
    x = np.asarray(enc, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def psnr(a_enc, b_enc):
    mse = float(np.mean((a_enc - b_enc) ** 2))
    return 99.0 if mse <= 1e-20 else 10 * np.log10(1.0 / mse)


def _gauss_blur(x, sigma=1.5, radius=5):
    t = np.arange(-radius, radius + 1)
    k = np.exp(-(t * t) / (2 * sigma * sigma))
    k /= k.sum()
    pad = np.pad(x, radius, mode="reflect")
    tmp = sum(k[i] * pad[:, i:i + x.shape[1]] for i in range(len(k)))
    return sum(k[i] * tmp[i:i + x.shape[0], radius:radius + x.shape[1]]
               for i in range(len(k)))


def ssim(a_enc, b_enc):
    """SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5) of Rec.709 luma."""
    w = np.array([0.2126, 0.7152, 0.0722])
    x, y = a_enc @ w, b_enc @ w
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _gauss_blur(x), _gauss_blur(y)
    sxx = _gauss_blur(x * x) - mx * mx
    syy = _gauss_blur(y * y) - my * my
    sxy = _gauss_blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(np.mean(s))


RGB_TO_XYZ = np.array([[0.4123908, 0.3575843, 0.1804808],
                       [0.2126390, 0.7151687, 0.0721923],
                       [0.0193308, 0.1191948, 0.9505322]])
D65 = RGB_TO_XYZ.sum(axis=1)


def lab(lin):
    xyz = np.clip(lin, 0, 1) @ RGB_TO_XYZ.T / D65
    d = 6 / 29
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e2000(lin_a, lin_b):
    """Mean CIEDE2000 (Sharma, Wu, Dalal 2005) between two linear RGB images."""
    l1, a1, b1 = np.moveaxis(lab(lin_a), -1, 0)
    l2, a2, b2 = np.moveaxis(lab(lin_b), -1, 0)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    cm = (c1 + c2) / 2
    g = 0.5 * (1 - np.sqrt(cm ** 7 / (cm ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    dhh = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lm, cmp_ = (l1 + l2) / 2, (c1p + c2p) / 2
    hs = h1p + h2p
    hm = np.where(c1p * c2p == 0, hs,
                  np.where(np.abs(h1p - h2p) <= 180, hs / 2,
                           np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2)))
    t = (1 - 0.17 * np.cos(np.radians(hm - 30)) + 0.24 * np.cos(np.radians(2 * hm))
         + 0.32 * np.cos(np.radians(3 * hm + 6)) - 0.20 * np.cos(np.radians(4 * hm - 63)))
    sl = 1 + 0.015 * (lm - 50) ** 2 / np.sqrt(20 + (lm - 50) ** 2)
    sc = 1 + 0.045 * cmp_
    sh = 1 + 0.015 * cmp_ * t
    rt = (-2 * np.sqrt(cmp_ ** 7 / (cmp_ ** 7 + 25.0 ** 7))
          * np.sin(np.radians(60 * np.exp(-(((hm - 275) / 25) ** 2)))))
    de = np.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dhh / sh) ** 2
                 + rt * (dc / sc) * (dhh / sh))
    return float(np.mean(de))


# ---- platefs -------------------------------------------------------------------


class Platefs:
    def __init__(self, binary, work):
        self.binary = binary
        self.work = work
        self.n = 0

    def render(self, image_or_dailies, rule_ops, relpath=None, frames=None):
        """Renders one frame through the engine. image_or_dailies: an EXR
        file (copied into a one-frame dailies) or (dailies, relpath).
        Returns (linear RGB, ops_ms, the output's path)."""
        self.n += 1
        root = os.path.join(self.work, f"r{self.n}")
        rules = os.path.join(root, "rules")
        os.makedirs(rules)
        args = ["--rules", rules] if rule_ops else []
        if relpath is None:
            dailies = os.path.join(root, "dailies")
            os.makedirs(os.path.join(dailies, "S"))
            relpath = "S/plate.1001.exr"
            shutil.copyfile(image_or_dailies, os.path.join(dailies, relpath))
        else:
            dailies = image_or_dailies
        glob = relpath.split(".frames/")[0] if ".frames/" in relpath else \
            os.path.join(os.path.dirname(relpath), "*.exr")
        if rule_ops:
            with open(os.path.join(rules, "shot.yaml"), "w") as f:
                f.write(f"shot: BENCH\nmatch: [\"{glob}\"]\n")
                if frames:
                    f.write(f"frames: {frames}\n")
                f.write("ops:\n" + rule_ops)
        out = os.path.join(root, "out.exr")
        res = run([self.binary, "render", dailies, relpath, "-o", out, "--timing"] + args)
        ops_ms = None
        for line in res.stdout.decode().splitlines():
            if line.startswith("ops_ms"):
                ops_ms = float(line.split()[1])
        return read_rgb(out), ops_ms, out


MISS = "  - op: relight\n    exposure: -0.5\n    temperature: {from: 6500, to: 5200}\n"
INVERSE = "  - op: relight\n    exposure: 0.5\n    temperature: {from: 5200, to: 6500}\n"


def bench_inverse(pf, images, results):
    print("\n## relight: known miss, corrected by the inverse explicit parameters")
    print(f"{'image':<28} {'missed PSNR':>11} {'corrected PSNR':>15} {'max |rel| err':>14}")
    for name, path in images:
        orig = read_rgb(path)
        missed, _, missed_path = pf.render(path, MISS)
        fixed, _, _ = pf.render(missed_path, INVERSE)
        p_m = psnr(srgb_encode(missed), srgb_encode(orig))
        p_c = psnr(srgb_encode(fixed), srgb_encode(orig))
        ok = np.isfinite(orig)
        rel = float(np.max(np.abs(fixed[ok] - orig[ok]) / np.maximum(1.0, np.abs(orig[ok]))))
        print(f"{name:<28} {p_m:>11.2f} {p_c:>15.2f} {rel:>14.2e}")
        results.append({"test": "relight_inverse", "image": name, "missed_psnr": p_m,
                        "psnr": p_c, "max_rel_err": rel})


def best_ffmpeg_hand(missed_png, orig_enc):
    """Grid search of colortemperature + eq gamma against the truth, coarse
    then fine, on a quarter-size copy; the winner is scored at full size."""
    w, h = probe_size(missed_png)
    small = missed_png + ".small.png"
    run(["ffmpeg", "-v", "error", "-y", "-i", missed_png, "-vf",
         f"scale={w // 4}:{h // 4}:flags=area", "-pix_fmt", "rgb48le", small])
    orig_small = orig_enc[::4, ::4][: h // 4, : w // 4]

    def chain(t, g):
        return (f"format=rgb48le,colortemperature=temperature={t:.0f},format=yuv444p16le,"
                f"eq=gamma={g:.3f},format=rgb48le")

    def score(t, g, src, ref):
        out = filter_png16(src, chain(t, g))
        out = out[: ref.shape[0], : ref.shape[1]]
        return psnr(out, ref)

    best = (-1.0, 6500.0, 1.0)
    for t in range(5000, 9001, 500):
        for g in (1.0, 1.1, 1.2, 1.3, 1.4, 1.5):
            s = score(t, g, small, orig_small)
            if s > best[0]:
                best = (s, t, g)
    _, t0, g0 = best
    for t in np.arange(t0 - 400, t0 + 401, 100):
        for g in np.arange(g0 - 0.08, g0 + 0.081, 0.02):
            s = score(float(t), float(g), small, orig_small)
            if s > best[0]:
                best = (s, float(t), float(g))
    _, t, g = best
    return filter_png16(missed_png, chain(t, g)), t, g


def bench_match(pf, clips, work, results):
    print("\n## relight: match to a reference frame of the same clip")
    print(f"{'clip (ref -> frame)':<34} {'method':<34} {'PSNR':>7} {'dE2000':>7}")
    for name, dailies, clip_rel, ref_frame, frame in clips:
        stem = os.path.splitext(os.path.basename(clip_rel))[0]
        frames_dir = clip_rel + ".frames"
        ref_lin, _, ref_path = pf.render(dailies, "", f"{frames_dir}/{stem}.{ref_frame}.exr")
        orig, _, orig_path = pf.render(dailies, "", f"{frames_dir}/{stem}.{frame}.exr")
        missed, _, missed_path = pf.render(orig_path, MISS)
        seq = os.path.join(work, f"match-{name}")
        os.makedirs(os.path.join(seq, "S"), exist_ok=True)
        shutil.copyfile(ref_path, os.path.join(seq, "S", f"plate.{ref_frame}.exr"))
        shutil.copyfile(missed_path, os.path.join(seq, "S", f"plate.{frame}.exr"))
        rows = [("uncorrected", missed)]
        for model in ("gain", "gain_offset"):
            fixed, _, fixed_path = pf.render(
                seq, f"  - op: relight\n    match: {{frame: {ref_frame}, model: {model}}}\n",
                f"S/plate.{frame}.exr", frames=f"{frame}")
            fitted = run(["exrheader", fixed_path]).stdout.decode()
            note = [ln for ln in fitted.splitlines() if "match" in ln and "frame=" in ln]
            if note:
                print(f"    {note[0].strip()[:150]}")
            rows.append((f"platefs match ({model})", fixed))
        rows.append(("platefs inverse (explicit)", pf.render(missed_path, INVERSE)[0]))
        orig_enc = srgb_encode(orig)
        png = os.path.join(work, f"missed-{name}.png")
        write_png16(png, srgb_encode(missed))
        hand, t, g = best_ffmpeg_hand(png, orig_enc)
        hand_lin = srgb_decode(hand)
        label = f"ffmpeg colortemperature={t:.0f},eq gamma={g:.2f}"
        results_rows = []
        for method, img in rows:
            results_rows.append((method, psnr(srgb_encode(img), orig_enc),
                                 delta_e2000(img, orig)))
        results_rows.append((label, psnr(hand, orig_enc), delta_e2000(hand_lin, orig)))
        for method, p, de in results_rows:
            print(f"{name + f' ({ref_frame} -> {frame})':<34} {method:<34} {p:>7.2f} {de:>7.3f}")
            results.append({"test": "relight_match", "clip": name, "reference": ref_frame,
                            "frame": frame, "method": method, "psnr": p, "delta_e2000": de})


def fit_size(n, s):
    """Largest size <= n whose 1/s-scaled size is a whole number with an
    even margin, so the shrunk frame sits exactly in the middle."""
    for m in range(n, 0, -1):
        small = m / s
        if abs(small - round(small)) < 1e-9 and (m - round(small)) % 2 == 0:
            return m, int(round(small))
    raise ValueError


def bench_reframe(pf, images, work, results):
    print("\n## reframe: shrink by 1/s, reframe back by s")
    print(f"{'image':<28} {'s':>5} {'method':<30} {'PSNR':>7} {'SSIM':>7}")
    for name, path in images:
        full = read_rgb(path)
        for s in (1.08, 1.25, 2.0):
            W, w = fit_size(full.shape[1], s)
            H, h = fit_size(full.shape[0], s)
            y0, x0 = (full.shape[0] - H) // 2, (full.shape[1] - W) // 2
            truth = np.ascontiguousarray(full[y0:y0 + H, x0:x0 + W])
            truth_path = os.path.join(work, f"truth-{name}-{s}.exr")
            write_exr(truth_path, truth, half=False)
            small = filter_float(truth_path, f"zscale=w={w}:h={h}:filter=lanczos", w, h)
            px, py = (W - w) // 2, (H - h) // 2
            canvas = np.pad(small, ((py, H - h - py), (px, W - w - px), (0, 0)), mode="edge")
            src_path = os.path.join(work, f"wide-{name}-{s}.exr")
            write_exr(src_path, canvas, half=False)
            truth_enc = srgb_encode(truth)
            rows = []
            out, _, _ = pf.render(src_path,
                                  f"  - op: reframe\n    scale: {s}\n    border: clamp\n")
            rows.append(("platefs reframe (lanczos3)", out))
            crop = f"crop={w}:{h}:{px}:{py}"
            rows.append(("ffmpeg scale lanczos", filter_float(
                src_path, f"{crop},scale={W}:{H}:flags=lanczos+accurate_rnd+full_chroma_int",
                W, H)))
            rows.append(("ffmpeg zscale lanczos", filter_float(
                src_path, f"{crop},zscale=w={W}:h={H}:filter=lanczos", W, H)))
            for method, img in rows:
                enc = srgb_encode(img)
                p, q = psnr(enc, truth_enc), ssim(enc, truth_enc)
                print(f"{name:<28} {s:>5.2f} {method:<30} {p:>7.2f} {q:>7.4f}")
                results.append({"test": "reframe", "image": name, "scale": s,
                                "method": method, "psnr": p, "ssim": q})


def ffmpeg_filter_seconds(src, vf, frames):
    cmd = ["ffmpeg", "-v", "error", "-loop", "1", "-i", src, "-frames:v", str(frames),
           "-vf", vf, "-f", "null", "-"]
    t0 = time.perf_counter()
    run(cmd)
    return time.perf_counter() - t0


def bench_speed(pf, path, results, runs=5):
    print("\n## speed (Mpixels/s)")
    img = read_rgb(path)
    H, W = img.shape[:2]
    mpix = W * H / 1e6
    cases = [
        ("relight exposure+WB", MISS, "format=gbrpf32le,null",
         "format=rgb48le,colortemperature=temperature=5200,format=yuv444p16le,eq=gamma=1.2"),
        ("relight window+CDL",
         "  - op: relight\n    exposure: 0.3\n    cdl: {slope: [1.1, 1, 0.9], power: [1.1, 1, 1],"
         " saturation: 0.9}\n    window: {shape: ellipse, center: [400, 300], size: [500, 300],"
         " feather: 80}\n", "format=gbrpf32le,null", "format=rgb48le,eq=gamma=1.2:saturation=0.9"),
        ("reframe 1.08", "  - op: reframe\n    scale: 1.08\n", "format=gbrpf32le,null",
         f"format=gbrpf32le,crop=iw/1.08:ih/1.08,scale={W}:{H}:flags=lanczos+accurate_rnd"),
        ("reframe 1.08 rotate 2",
         "  - op: reframe\n    scale: 1.08\n    rotate: 2\n", "format=gbrpf32le,null",
         f"format=gbrpf32le,rotate=2*PI/180,crop=iw/1.08:ih/1.08,scale={W}:{H}:flags=lanczos"),
    ]
    print(f"{'op':<26} {'platefs ms':>10} {'platefs Mpx/s':>14} {'ffmpeg ms':>10} "
          f"{'ffmpeg Mpx/s':>13}   ffmpeg filter")
    for name, ops, null_vf, vf in cases:
        times = [pf.render(path, ops)[1] for _ in range(runs)]
        ms = statistics.median(times)
        n = 30
        base = min(ffmpeg_filter_seconds(path, null_vf, n) for _ in range(2))
        filt = min(ffmpeg_filter_seconds(path, vf, n) for _ in range(2))
        fms = max(filt - base, 1e-6) / n * 1e3
        print(f"{name:<26} {ms:>10.1f} {mpix / (ms / 1e3):>14.1f} {fms:>10.1f} "
              f"{mpix / (fms / 1e3):>13.1f}   {vf}")
        results.append({"test": "speed", "op": name, "width": W, "height": H,
                        "platefs_ms": ms, "platefs_mpix_s": mpix / (ms / 1e3),
                        "ffmpeg_ms": fms, "ffmpeg_mpix_s": mpix / (fms / 1e3),
                        "ffmpeg_filter": vf})


def summarise(results):
    print("\n## summary")
    inv = [r["psnr"] for r in results if r["test"] == "relight_inverse"]
    print(f"relight inverse: min PSNR {min(inv):.2f} dB over {len(inv)} images (goal >= 60)")
    for model in ("gain", "gain_offset"):
        gains = []
        for r in results:
            if r["test"] == "relight_match" and r["method"] == f"platefs match ({model})":
                hand = [h for h in results if h["test"] == "relight_match" and
                        h["clip"] == r["clip"] and h["method"].startswith("ffmpeg")][0]
                gains.append((r["psnr"] - hand["psnr"], r["delta_e2000"] - hand["delta_e2000"]))
        if gains:
            print(f"relight match ({model}) vs ffmpeg by hand: PSNR "
                  f"{min(g[0] for g in gains):+.2f}..{max(g[0] for g in gains):+.2f} dB, "
                  f"dE2000 {min(g[1] for g in gains):+.3f}..{max(g[1] for g in gains):+.3f}")
    for other in ("ffmpeg scale lanczos", "ffmpeg zscale lanczos"):
        d = []
        for r in results:
            if r["test"] == "reframe" and r["method"].startswith("platefs"):
                o = [x for x in results if x["test"] == "reframe" and x["image"] == r["image"]
                     and x["scale"] == r["scale"] and x["method"] == other][0]
                d.append((r["psnr"] - o["psnr"], r["ssim"] - o["ssim"]))
        print(f"reframe vs {other}: PSNR {min(x[0] for x in d):+.3f}..{max(x[0] for x in d):+.3f}"
              f" dB, SSIM {min(x[1] for x in d):+.4f}..{max(x[1] for x in d):+.4f} "
              f"over {len(d)} cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--platefs", required=True)
    ap.add_argument("--footage", required=True, help="the shared footage folder")
    ap.add_argument("--samples", required=True, help="the repository's samples/dailies")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="fewer images (for a smoke run)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pfs-quality-")
    try:
        pf = Platefs(os.path.abspath(args.platefs), work)
        stills = [(n, os.path.join(args.footage, "exr_stills", n + ".exr"))
                  for n in ("Desk", "Cannon", "GoldenGate")]
        stills = [s for s in stills if os.path.exists(s[1])]
        # Frames of real clips, decoded by platefs (scene-linear EXR).
        video = os.path.join(args.footage, "video")
        clips = [("juggle", os.path.abspath(args.samples), "A002/A002C007.mp4", 1010, 1034)]
        extra = [("cockatoo", "imageio_cockatoo_yuv420.mp4", 1040, 1058),
                 ("bear", "cotracker_davis_bear.mp4", 1010, 1030)]
        for name, f, r, t in extra:
            if os.path.exists(os.path.join(video, f)):
                clips.append((name, os.path.abspath(video), f, r, t))
        if args.quick:
            stills, clips = stills[:1], clips[:1]
        frames = []
        for name, dailies, rel, _, t in clips:
            stem = os.path.splitext(os.path.basename(rel))[0]
            _, _, p = pf.render(dailies, "", f"{rel}.frames/{stem}.{t}.exr")
            keep = os.path.join(work, f"frame-{name}.exr")
            shutil.copyfile(p, keep)
            frames.append((f"{name} frame {t}", keep))

        results = []
        bench_inverse(pf, stills + frames, results)
        bench_match(pf, clips, work, results)
        bench_reframe(pf, stills + frames, work, results)
        bench_speed(pf, frames[0][1], results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        summarise(results)
        bad = [r for r in results if r["test"] == "relight_inverse" and r["psnr"] < 60]
        if bad:
            print(f"\nFAIL: relight inverse below 60 dB on {len(bad)} image(s)")
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
