"""Camera-like frames made from the bundled MNIST digits — a stand-in for a camera's classes, since
no camera data set can be downloaded here: each digit is scaled, tinted and pasted at a random
position on a coloured, noisy, gradient background, and saved as an RGB PNG in an image folder
(root/<digit>/<n>.png), so it goes through exactly the path a user's photos take.

Deterministic for a seed. By default each frame is made from a different digit of the 5,000.
With `holdout` (per class, e.g. {"test": 100, "val": 30}) the digits are split first: each held-out
digit is rendered once into root/<split>/<digit>/, every other digit `renderings` times (new
background, scale, position and colours each time) into root/train/<digit>/ — so no test digit is
ever seen in training under another background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like empty frame (float, size×size×3): a linear gradient between two random colours, a
    soft blob of light or shadow, and sensor-like noise."""
    c0, c1 = rng.uniform(0, 200, 3), rng.uniform(0, 200, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    bg = c0 * (1 - t[..., None]) + c1 * t[..., None]
    cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.1, 0.4) * size]
    blob = np.exp(-(((yy * (size - 1) - cy) ** 2 + (xx * (size - 1) - cx) ** 2) / (2 * r * r)))
    bg += blob[..., None] * rng.uniform(-60, 60, 3)
    bg += rng.normal(0, rng.uniform(4, 16), bg.shape)
    return bg


def paste(bg: np.ndarray, digit: np.ndarray, side: int, y0: int, x0: int, rng: np.random.Generator) -> np.ndarray:
    """Paste `digit` scaled to side×side at (y0, x0), in an ink far from the background there; returns the
    glyph's coverage (side×side, 0..1), from which a tight box follows."""
    from PIL import Image

    glyph = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    region = bg[y0 : y0 + side, x0 : x0 + side]
    ink = np.where(region.mean() < 128, rng.uniform(170, 255, 3), rng.uniform(0, 70, 3))
    alpha = glyph[..., None] * rng.uniform(0.75, 1.0)
    bg[y0 : y0 + side, x0 : x0 + side] = region * (1 - alpha) + ink * alpha
    return glyph


def _frame(digit: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    bg = background(size, rng)
    # the digit: 40-85% of the frame's side, at a random position, in a colour far from the background
    side = int(round(rng.uniform(0.40, 0.85) * size))
    y0, x0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    paste(bg, digit, side, y0, x0, rng)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _class_jobs(
    chosen: np.ndarray, d: int, renderings: int, holdout: dict[str, int] | None
) -> list[tuple[str, int, int]]:
    """(folder under out, digit index, rendering) for every frame of class d, from its chosen digits."""
    if holdout is None:
        return [(str(d), int(i), 0) for i in chosen]
    jobs, start = [], 0
    for split, n in holdout.items():
        jobs += [(f"{split}/{d}", int(i), 0) for i in chosen[start : start + n]]
        start += n
    return jobs + [(f"train/{d}", int(i), r) for i in chosen[start:] for r in range(renderings)]


def make_frames(
    out: Path,
    size: int = 96,
    per_class: int = 100,
    seed: int = 0,
    progress=None,
    renderings: int = 1,
    holdout: dict[str, int] | None = None,
) -> dict:
    """Write per_class frames of each digit to out/<digit>/<n>.png — or, with `holdout`, the held-out
    digits once each to out/<split>/<digit>/ and the rest `renderings` times to out/train/<digit>/;
    returns what was written."""
    from PIL import Image

    from edgepipe.pipeline.data.mnist import load_bundled

    if not 16 <= size <= 512:
        raise EdgepipeError(f"--size {size}: frames are 16 to 512 pixels")
    images, labels = load_bundled()
    counts = np.bincount(labels, minlength=10)
    if not 1 <= per_class <= counts.min():
        raise EdgepipeError(f"--per-class {per_class}: the bundled digits hold {counts.min()} of each class")
    if renderings < 1 or (renderings > 1 and holdout is None):
        raise EdgepipeError(
            f"renderings {renderings}: more than one rendering per digit needs held-out test/val digits"
        )
    if holdout is not None and (
        not holdout or set(holdout) - {"test", "val"} or min(holdout.values()) < 1 or sum(holdout.values()) >= per_class
    ):
        raise EdgepipeError(
            f"holdout {holdout}: give test/val digits per class, at least 1 each, fewer than {per_class} in all"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EdgepipeError(f"{out}: not empty; give a new folder")
    rng = np.random.default_rng(seed)
    import os

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    held = sum(holdout.values()) if holdout else 0
    total = 10 * (held + (per_class - held) * renderings)
    written = 0
    try:
        for d in range(10):  # per class: choose its digits, then draw its frames (the seed's stream, as it always was)
            chosen = rng.permutation(np.flatnonzero(labels == d))[:per_class]
            for n, (folder, i, r) in enumerate(_class_jobs(chosen, d, renderings, holdout)):
                (tmp / folder).mkdir(parents=True, exist_ok=True)
                name = f"{n:04d}.png" if holdout is None else f"{i:04d}-{r}.png"  # split: named by the source digit
                Image.fromarray(_frame(images[i], size, rng)).save(tmp / folder / name, optimize=False)
                written += 1
                if progress is not None:
                    progress(written, total)
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
    return {
        "path": str(out),
        "classes": 10,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "images": written,
        "renderings": renderings,
        "holdout": holdout,
    }
