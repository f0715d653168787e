"""A dataset and its splits: the images and labels of a source (mnist.py, images.py; load.py picks it), a seeded
test / val / calibration / train split, and the input contract (runtime/inputs/images.py) that turns
pixels into the N×C×H×W float32 the models take — the same one the device applies.

MNIST: 28×28 grey digits normalised with MNIST's mean/std. Image folders and .npz files: the
size, channels, resize + center crop and mean/std the recipe's `data:` declares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.dataspec import MNIST_MEAN, MNIST_STD, DataConfig
from edgepipe.runtime.inputs.images import Contract

SPLITS = ("train", "val", "test", "calibration")
MNIST_CONTRACT = Contract(
    size=(28, 28), channels=1, mean=(MNIST_MEAN,), std=(MNIST_STD,), classes=tuple(str(d) for d in range(10))
)


@dataclass
class Dataset:
    images: np.ndarray  # N×H×W (MNIST) or N×H×W×C pixels: uint8, or floats in [0, 1]
    labels: np.ndarray  # N int64
    splits: dict[str, np.ndarray]
    source: str
    contract: Contract = MNIST_CONTRACT
    details: dict = field(default_factory=dict)
    calibration: np.ndarray | None = None  # model inputs given apart from the data (data.calibration: PATH)
    augment_options: object = None  # DataConfig.augment
    # a detection data set: per image its boxes, [k, 5] rows of x1, y1, x2, y2 (the model's input pixels) and
    # class; `labels` are then the images' row numbers, which a detector's loss looks the boxes up by
    targets: list | None = None

    @property
    def task(self) -> str:
        return "detect" if self.targets is not None else "classify"

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        if name == "calibration" and self.calibration is not None:
            return self.calibration, None
        idx = self.splits[name]
        return self.contract.normalize(self.images[idx]), self.labels[idx]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """C×H×W of one normalised sample: what a model trained on this data takes."""
        return self.contract.input_shape

    @property
    def classes(self) -> int:
        return len(self.contract.classes) or int(self.labels.max()) + 1

    def counts(self) -> dict[str, int]:
        out = {k: int(len(v)) for k, v in self.splits.items()}
        if self.calibration is not None:
            out["calibration"] = int(len(self.calibration))
        return out

    @property
    def contract_record(self) -> dict:
        """The input contract as model.json and the manifest record it."""
        return self.contract.to_dict()

    def summary(self) -> dict:
        """What the manifest records of the data: source, split sizes, sha256 and the input contract."""
        out = {"source": self.source, "counts": self.counts(), "sha256": self.fingerprint()}
        if self.contract != MNIST_CONTRACT:
            out["contract"] = self.contract_record
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        for k in SPLITS:
            h.update(k.encode() + self.splits[k].tobytes())
        if self.contract != MNIST_CONTRACT:  # MNIST runs keep the fingerprint they had before contracts
            h.update(self.contract.to_json().encode())
        if self.calibration is not None:
            h.update(self.calibration.tobytes())
        if self.augment_options is not None:
            h.update(repr(self.augment_options).encode())
        for t in self.targets or ():
            h.update(np.ascontiguousarray(t, dtype=np.float32).tobytes() + b"|")
        return h.hexdigest()

    def augmenter(self, shift: int):
        """fit()'s augmentation for this data: shift by up to `shift` pixels (filled with black), then the
        random resized crop and flip the recipe's data.augment asks for."""
        from edgepipe.pipeline.data.augment import augment_images, shift_augment

        fill = [(0.0 - m) / s for m, s in zip(self.contract.mean, self.contract.std)]
        opts = self.augment_options

        def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            x = shift_augment(x, rng, shift, fill)
            if opts is not None and (opts.crop or opts.flip):
                x = augment_images(x, rng, opts.crop, opts.flip)
            return x

        return augment


def _count(v, n: int) -> int:
    """A split's size: a count as given, a share of n (at least 1), or 0 for a path (given apart)."""
    if isinstance(v, str):
        return 0
    return max(1, int(round(v * n))) if isinstance(v, float) else int(v)


def make_splits(n: int, cfg: DataConfig, n_official_test: int = 0) -> dict[str, np.ndarray]:
    """MNIST: a seeded permutation (the official test set first, where the source has one)."""
    rng = np.random.default_rng(cfg.split_seed)
    n_t, n_v, n_c = (_count(getattr(cfg, k), n) for k in ("test", "val", "calibration"))
    if n_official_test:
        test = np.arange(n - n_official_test, n)[:n_t]
        rest = rng.permutation(n - n_official_test)
    else:
        perm = rng.permutation(n)
        test, rest = perm[:n_t], perm[n_t:]
    if len(rest) < n_v + n_c + 1:
        raise EdgepipeError(
            f"data: {n} samples cannot hold test={n_t}, val={n_v}, calibration={n_c} and a training set"
        )
    val, calib, train = rest[:n_v], rest[n_v : n_v + n_c], rest[n_v + n_c :]
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    return {"train": train, "val": val, "test": np.sort(test), "calibration": calib}


def stratified_splits(labels: np.ndarray, cfg: DataConfig, fixed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Image data: test / val / calibration drawn class by class in proportion (seeded), except the
    splits given as folders of their own (`fixed`: their indices); the rest is the training set."""
    rng = np.random.default_rng(cfg.split_seed)
    pool = np.setdiff1d(
        np.arange(len(labels)), np.concatenate([np.asarray(v, dtype=np.int64) for v in fixed.values()] or [[]])
    )
    keys = np.empty(len(pool))
    for c in np.unique(labels[pool]):  # evenly spaced positions per class, classes interleaved
        members = np.flatnonzero(labels[pool] == c)
        keys[members[rng.permutation(len(members))]] = (np.arange(len(members)) + rng.random()) / len(members)
    order = pool[np.argsort(keys, kind="stable")]
    out, start = {}, 0
    for name in ("test", "val", "calibration"):
        if name in fixed:
            out[name] = np.sort(fixed[name])
            continue
        k = _count(getattr(cfg, name), len(pool))
        out[name] = np.sort(order[start : start + k])
        start += k
    if start >= len(order):
        raise EdgepipeError(
            f"data: {len(pool)} images cannot hold "
            + ", ".join(f"{k}={len(v)}" for k, v in out.items())
            + " and a training set; give shares (test: 0.2) or fewer samples"
        )
    train = order[start:]
    out["train"] = np.sort(train[: cfg.train_limit] if cfg.train_limit else train)
    return out


def contract_for(cfg: DataConfig, classes: tuple[str, ...]) -> Contract:
    return Contract(classes=tuple(classes), **cfg.contract_fields())
