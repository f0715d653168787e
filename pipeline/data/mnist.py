"""MNIST from three sources: the bundled 5k subset (mnist_5k.npz beside this module, see
PROVENANCE.md), the standard IDX files in a folder, or paddle's downloader (needs internet)."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError


def bundled_path() -> Path:
    return Path(str(resources.files("edgepipe.pipeline.data") / "mnist_5k.npz"))


def load_bundled() -> tuple[np.ndarray, np.ndarray]:
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
        raise EdgepipeError(
            f"{path}: IDX header says {dims} but the file holds {len(raw) - offset} bytes; it is truncated"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns images, labels, and how many trailing samples are the official test set."""
    if not folder.is_dir():
        raise EdgepipeError(f"{folder}: data folder not found; point data.path at a folder of MNIST IDX files")
    pairs = [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ]
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


def load_paddle() -> tuple[np.ndarray, np.ndarray, int]:
    try:
        from paddle.vision.datasets import MNIST

        sets = [MNIST(mode=m, download=True, backend="cv2") for m in ("train", "test")]
    except Exception as exc:
        raise EdgepipeError(
            f"paddle's MNIST downloader failed ({type(exc).__name__}); "
            "this needs internet - use data.source: bundled or idx"
        ) from None
    xs = [np.asarray(s.images, dtype=np.uint8).reshape(-1, 28, 28) for s in sets]
    ys = [np.asarray(s.labels, dtype=np.int64).reshape(-1) for s in sets]
    return np.concatenate(xs), np.concatenate(ys), len(ys[1])
