"""A user's images as a data source: an image folder (root/<class>/*.png|jpg|jpeg|bmp|webp, the
sorted class folder names are the labels) or an .npz of pixels (x: N×C×H×W or N×H×W×C as
`layout:` states; y: labels), decoded with Pillow and brought to the recipe's input contract;
separate test / val folders; and calibration inputs given apart from the data.

Pixels: uint8, other integers in 0..255, or floats in [0, 1]. An .npz given as calibration holds
model inputs already (N×C×H×W float32, as the runner's --inputs does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import resolve_path
from edgepipe.pipeline.core.dataspec import DataConfig
from edgepipe.pipeline.core.progress import progress_bar
from edgepipe.pipeline.data.dataset import Dataset, contract_for, stratified_splits
from edgepipe.runtime.inputs.images import Contract, read_images, scan_folder


def _pixels(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 as is; other integers in 0..255 as uint8; floats checked to lie in [0, 1]."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        raise EdgepipeError(f"{where}: x holds booleans; give pixels as uint8 (0..255) or floats in [0, 1]")
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise EdgepipeError(f"{where}: integer pixels must lie in 0..255, found {x.min()}..{x.max()}")
        return x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.floating):
        raise EdgepipeError(f"{where}: x has dtype {x.dtype}; give numeric pixels")
    if x.size and not np.isfinite(x).all():
        raise EdgepipeError(f"{where}: x holds NaN or infinite values")
    if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise EdgepipeError(
            f"{where}: float pixels must lie in [0, 1], found {x.min():.3g}..{x.max():.3g}; divide by 255 or give uint8"
        )
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def read_npz_pixels(path: Path, cfg: DataConfig, contract: Contract | None = None, labelled: bool = True):
    """(N×H×W×C pixels, labels or None) from an .npz of arrays x and y, checked against the contract."""
    from edgepipe.runtime.inputs.npzfile import load_npz

    arrays, y = load_npz(path)  # labels: y (or labels, label)
    if "x" not in arrays:
        raise EdgepipeError(f"{path}: no array named 'x' (has: {', '.join(arrays) or 'none'})")
    x = arrays["x"]
    if x.ndim == 3:  # N×H×W grey: no layout to state
        x = x[..., None]
    elif x.ndim != 4:
        raise EdgepipeError(f"{path}: x has shape {list(x.shape)}; give N×C×H×W or N×H×W×C images")
    elif cfg.layout is None:
        raise EdgepipeError(f"{path}: state how x is laid out with data.layout: nchw or nhwc")
    elif cfg.layout == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    want = (*cfg.input_shape[1:], cfg.input_shape[0])
    if tuple(x.shape[1:]) != want:
        raise EdgepipeError(
            f"{path}: images are {list(x.shape[1:])} (H, W, C as laid out by data.layout: {cfg.layout}), "
            f"the data's size and channels say {list(want)}"
        )
    if labelled:
        if y is None:
            raise EdgepipeError(f"{path}: no labels 'y'; a training data set needs them")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise EdgepipeError(
                f"{path}: y must be {len(x)} non-negative integer labels, got {y.dtype} of shape {list(y.shape)}"
            )
        y = y.astype(np.int64)
    return _pixels(x, str(path)), y


DECODED_CACHE_LIMIT = 1 << 30  # bytes of decoded pixels kept in the cache; larger folders are decoded each run


def decoded_images(files: list[Path], contract: Contract) -> np.ndarray:
    """The files' pixels as read_images decodes them under the contract, kept once decoded in
    $EDGEPIPE_CACHE/decoded/<key>.npy (read back memory-mapped): the key hashes every file's name and bytes,
    in order, and the contract's decoding fields, so an edited, added or renamed image decodes anew."""
    import hashlib

    from edgepipe.devices.base.atomic import atomic_path
    from edgepipe.devices.base.cache import cache_dir

    h = hashlib.sha256(contract.to_json().encode())  # its decoding fields (size, resize, keep-ratio, bgr, …)
    for f in files:
        h.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + f.read_bytes())
    path = cache_dir() / "decoded" / f"{h.hexdigest()[:32]}.npy"
    shape = f"{contract.channels}×{contract.size[0]}×{contract.size[1]}"
    if path.is_file():
        try:
            images = np.load(path, mmap_mode="r")
            if len(images) == len(files):
                print(f"  {len(files)} images ({shape}) read decoded from {path}", file=sys.stderr, flush=True)
                return images
        except (OSError, ValueError):
            pass  # a damaged entry is decoded again
    print(f"  decoding {len(files)} images ({shape})", file=sys.stderr, flush=True)
    images = read_images(files, contract, progress_bar("decode"))
    if images.nbytes <= DECODED_CACHE_LIMIT:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, images)
        except OSError:
            pass  # a read-only cache: decoded again next time
    return images


def load_image_data(cfg: DataConfig, base: Path | None = None) -> Dataset:
    """An image folder or .npz data source, with its splits and contract."""
    parts, fixed = [], {}
    if cfg.source == "imagefolder":
        root = resolve_path(base, cfg.path)
        files, labels, classes = scan_folder(root)
        if labels is None:
            raise EdgepipeError(
                f"{root}: put the images in class folders, root/<class>/*.png; their names are the labels"
            )
        contract = contract_for(cfg, classes)
        parts.append((files, labels))
        for name in ("test", "val"):
            v = getattr(cfg, name)
            if isinstance(v, str):
                f2, l2, _ = scan_folder(resolve_path(base, v), classes)
                if l2 is None:
                    raise EdgepipeError(
                        f"{resolve_path(base, v)}: data.{name}: put its images in the same class folders as {cfg.path}"
                    )
                start = sum(len(p[0]) for p in parts)
                fixed[name] = np.arange(start, start + len(f2))
                parts.append((f2, l2))
        all_files = [f for p in parts for f in p[0]]
        images = decoded_images(all_files, contract)
        labels = np.concatenate([p[1] for p in parts])
        source = f"image folder {cfg.path} ({len(classes)} classes, {len(all_files)} images)"
    else:
        images, labels = read_npz_pixels(resolve_path(base, cfg.path), cfg)
        chunks_x, chunks_y = [images], [labels]
        for name in ("test", "val"):
            v = getattr(cfg, name)
            if isinstance(v, str):
                x2, y2 = read_npz_pixels(resolve_path(base, v), cfg)
                start = sum(len(c) for c in chunks_x)
                fixed[name] = np.arange(start, start + len(x2))
                chunks_x.append(x2)
                chunks_y.append(y2)
        if len({c.dtype for c in chunks_x}) > 1:  # uint8 and [0, 1] floats: bring all to floats in [0, 1]
            chunks_x = [c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c for c in chunks_x]
        images, labels = np.concatenate(chunks_x), np.concatenate(chunks_y)
        classes = tuple(str(i) for i in range(int(labels.max()) + 1)) if len(labels) else ()
        contract = contract_for(cfg, classes)
        source = f".npz {cfg.path} ({len(labels)} images)"
    ds = Dataset(
        images,
        labels,
        stratified_splits(labels, cfg, fixed),
        source,
        contract,
        details={"classes": list(contract.classes)},
        augment_options=cfg.augment,
    )
    if isinstance(cfg.calibration, str):
        ds.calibration = calibration_inputs(cfg, contract, base)
    return ds


def calibration_inputs(cfg: DataConfig, contract: Contract, base: Path | None = None) -> np.ndarray:
    """data.calibration given as a folder of images (class folders or not) or an .npz of model inputs."""
    return model_inputs(resolve_path(base, cfg.calibration), contract, "data.calibration")[0]


def model_inputs(
    path: Path, contract: Contract | None, what: str = "inputs", shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(model inputs, labels or None) from a folder of images (decoded by `contract`; class folders
    give labels) or an .npz of 'x' (N×C×H×W float32, labels 'y' optional), checked against the
    model's input `shape` (default: the contract's)."""
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.runtime.inputs.images import folder_inputs
    from edgepipe.runtime.inputs.npzfile import load_npz

    if path.is_dir():
        if contract is None:
            raise EdgepipeError(
                f"{path}: {what}: decoding images needs the model's input contract (size, channels, "
                "mean, std), which this model does not carry; give an .npz of model inputs instead"
            )
        x, y, _ = folder_inputs(path, contract, progress_bar(what.lstrip("-")))
    else:
        arrays, y = load_npz(path)
        x = arrays.get("x", next(iter(arrays.values()))).astype(np.float32)
    want = shape or (contract.input_shape if contract else None)
    if want is not None and tuple(x.shape[1:]) != tuple(want):
        raise EdgepipeError(f"{path}: {what}: inputs of shape {list(x.shape[1:])}, the model takes {list(want)}")
    return x, y
