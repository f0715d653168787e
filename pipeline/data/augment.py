"""Training augmentation on batches of model inputs (N×C×H×W float32): the MNIST recipes' shift by
a few pixels, and for images a random resized crop and a horizontal flip (Pillow resamples)."""

from __future__ import annotations

import numpy as np


def shift_augment(x: np.ndarray, rng: np.random.Generator, max_shift: int, fill) -> np.ndarray:
    """Translate each image by up to ±max_shift pixels, filling with `fill` (per channel: the
    normalised value of a black pixel)."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    pad = max_shift
    padded = np.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    for ch in range(c):
        padded[:, ch] = fill[ch]
    padded[:, :, pad : pad + h, pad : pad + w] = x
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def augment_images(x: np.ndarray, rng: np.random.Generator, crop: tuple[float, float] | None, flip: bool) -> np.ndarray:
    """Random resized crop (a share of the area in `crop`, aspect 3/4..4/3, resized back with Pillow's
    bilinear filter) and a random horizontal flip, per image of an N×C×H×W float batch."""
    from PIL import Image

    n, c, h, w = x.shape
    out = x.copy()
    for i in range(n):
        if crop:
            area = rng.uniform(crop[0], crop[1]) * h * w
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch_ = min(w, max(1.0, np.sqrt(area * ratio))), min(h, max(1.0, np.sqrt(area / ratio)))
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch_)
            box = (x0, y0, x0 + cw, y0 + ch_)
            for k in range(c):
                out[i, k] = np.asarray(Image.fromarray(x[i, k], mode="F").resize((w, h), Image.BILINEAR, box=box))
        if flip and rng.random() < 0.5:
            out[i] = out[i, :, :, ::-1]
    return out
