"""Camera-like frames made from the bundled MNIST digits — a stand-in for a camera's classes, since
no camera data set can be downloaded here: each digit is scaled, tinted and pasted at a random
position on a coloured, noisy, gradient background, and saved as an RGB PNG in an image folder
(root/<digit>/<n>.png), so it goes through exactly the path a user's photos take.

Deterministic for a seed; each frame is made from a different digit of the 5,000.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError


def _frame(digit: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    # background: a linear gradient between two random colours, plus sensor-like noise and a blob
    c0, c1 = rng.uniform(0, 200, 3), rng.uniform(0, 200, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    bg = c0 * (1 - t[..., None]) + c1 * t[..., None]
    cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.1, 0.4) * size]
    blob = np.exp(-(((yy * (size - 1) - cy) ** 2 + (xx * (size - 1) - cx) ** 2) / (2 * r * r)))
    bg += blob[..., None] * rng.uniform(-60, 60, 3)
    bg += rng.normal(0, rng.uniform(4, 16), bg.shape)
    # the digit: 40-85% of the frame's side, at a random position, in a colour far from the background
    side = int(round(rng.uniform(0.40, 0.85) * size))
    glyph = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    y0, x0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    region = bg[y0 : y0 + side, x0 : x0 + side]
    ink = np.where(region.mean() < 128, rng.uniform(170, 255, 3), rng.uniform(0, 70, 3))
    alpha = glyph[..., None] * rng.uniform(0.75, 1.0)
    bg[y0 : y0 + side, x0 : x0 + side] = region * (1 - alpha) + ink * alpha
    return np.clip(bg, 0, 255).astype(np.uint8)


def make_frames(out: Path, size: int = 96, per_class: int = 100, seed: int = 0, progress=None) -> dict:
    """Write per_class frames of each digit to out/<digit>/<n>.png; returns what was written."""
    from PIL import Image

    from edgepipe.pipeline.data.mnist import load_bundled

    if not 16 <= size <= 512:
        raise EdgepipeError(f"--size {size}: frames are 16 to 512 pixels")
    images, labels = load_bundled()
    counts = np.bincount(labels, minlength=10)
    if not 1 <= per_class <= counts.min():
        raise EdgepipeError(f"--per-class {per_class}: the bundled digits hold {counts.min()} of each class")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EdgepipeError(f"{out}: not empty; give a new folder")
    rng = np.random.default_rng(seed)
    import os

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    written = 0
    try:
        for d in range(10):
            (tmp / str(d)).mkdir(parents=True, exist_ok=True)
            chosen = rng.permutation(np.flatnonzero(labels == d))[:per_class]
            for n, i in enumerate(chosen):
                Image.fromarray(_frame(images[i], size, rng)).save(tmp / str(d) / f"{n:04d}.png", optimize=False)
                written += 1
                if progress is not None:
                    progress(written, 10 * per_class)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        try:
            tmp.rename(out)
        except OSError:  # another process made the same folder meanwhile: same seed, same frames
            if not out.is_dir():
                raise
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(out), "classes": 10, "per_class": per_class, "size": size, "seed": seed, "images": written}
