"""Images in, model inputs out. The input contract — size (H, W), channels (1 grey, 3 RGB), an
optional resize of the shorter side before a center crop, mean and std, NCHW float32, and the
class names — is what a model was trained with; it is saved in every exported ONNX file's
metadata, so the device decodes and preprocesses a folder of images exactly as training did.

Decoding is Pillow's (an optional extra on the device: `pip install 'edgepipe[images]'`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError

CONTRACT_KEY = "edgepipe.input_contract"  # the ONNX metadata_props key
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class Contract:
    size: tuple[int, int]  # height, width the model takes
    channels: int  # 1 = grey, 3 = RGB
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, ...]
    resize: int | None = None  # shorter side scaled to this, then a center crop to size; None: scaled to size
    classes: tuple[str, ...] = ()  # label i is classes[i] (image folders: the sorted class folder names)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise EdgepipeError(f"input contract: channels must be 1 (grey) or 3 (RGB), not {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise EdgepipeError(f"input contract: give one mean and one std per channel ({self.channels})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def to_dict(self) -> dict:
        """Plain JSON types (lists), as model.json, the manifest and the ONNX metadata hold it."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Contract":
        d = json.loads(text)
        if len(d["size"]) != 2 or not all(isinstance(v, int) and v > 0 for v in d["size"]):
            raise ValueError(f"size {d['size']} is not [height, width]")
        return cls(size=tuple(d["size"]), channels=d["channels"], mean=tuple(d["mean"]), std=tuple(d["std"]),
                   resize=d.get("resize"), classes=tuple(d.get("classes", ())), layout=d.get("layout", "NCHW"),
                   dtype=d.get("dtype", "float32"))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×C (or N×H×W) pixels — uint8, or floats in [0, 1] — to the model's N×C×H×W float32."""
        x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        out = np.empty((x.shape[0], x.shape[3], *x.shape[1:3]), dtype=np.float32)
        for c in range(x.shape[3]):  # per channel, with float32 scalars
            out[:, c] = (x[..., c] - np.float32(self.mean[c])) / np.float32(self.std[c])
        return out


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise EdgepipeError("decoding images needs Pillow: pip install 'edgepipe[images]' (or pillow)") from None
    return Image


def load_image(path: Path, contract: Contract) -> np.ndarray:
    """One image file as H×W×C uint8 at the contract's size and channels."""
    Image = _pil()
    h, w = contract.size
    try:
        with Image.open(path) as im:
            im = im.convert("L" if contract.channels == 1 else "RGB")
            if contract.resize:
                scale = contract.resize / min(im.size)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            elif im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise EdgepipeError(f"{path}: not a readable image ({type(exc).__name__}); remove or replace it") from None
    return arr[..., None] if arr.ndim == 2 else arr


def image_files(root: Path) -> list[Path]:
    """Every image under `root` (by suffix, any case), sorted by path."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def scan_folder(root: Path, classes: tuple[str, ...] | None = None) -> tuple[list[Path], np.ndarray | None, tuple[str, ...]]:
    """(files, labels, class names) of an image folder. With class subfolders (root/<class>/*.png) the
    sorted folder names are the classes; `classes` (a model's) fixes their order and refuses others.
    Images directly in root, with no class folders, are unlabeled (labels None)."""
    root = Path(root)
    if not root.is_dir():
        raise EdgepipeError(f"{root}: image folder not found")
    found = sorted(d.name for d in root.iterdir()  # hidden and tool folders (.ipynb_checkpoints, __MACOSX) are not classes
                   if d.is_dir() and not d.name.startswith((".", "__")) and image_files(d))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not found:
        files = image_files(root)
        if not files:
            raise EdgepipeError(f"{root}: no images ({', '.join(SUFFIXES)}) here or in class folders")
        return files, None, tuple(classes or ())
    if loose:
        raise EdgepipeError(f"{root}: {len(loose)} image(s) lie beside the class folders (e.g. {loose[0].name}); "
                            "move them into a class folder or out of the data")
    names = tuple(classes) if classes else tuple(found)
    unknown = [c for c in found if c not in names]
    if unknown:
        raise EdgepipeError(f"{root}: class folder(s) {unknown[:3]} are not among the model's classes {list(names)[:10]}")
    files, labels = [], []
    for i, name in enumerate(names):
        for f in image_files(root / name) if (root / name).is_dir() else []:
            files.append(f)
            labels.append(i)
    return files, np.asarray(labels, dtype=np.int64), names


def read_images(files: list[Path], contract: Contract, progress=None) -> np.ndarray:
    """N×H×W×C uint8 for `files` (progress(done, total) after each)."""
    out = np.empty((len(files), *contract.size, contract.channels), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = load_image(f, contract)
        if progress is not None:
            progress(i + 1, len(files))
    return out


def contract_of(session) -> Contract | None:
    """The input contract an onnxruntime session's model carries in its metadata, if any."""
    text = session.get_modelmeta().custom_metadata_map.get(CONTRACT_KEY)
    if not text:
        return None
    try:
        return Contract.from_json(text)
    except (ValueError, KeyError, TypeError, EdgepipeError) as exc:
        raise EdgepipeError(f"the model's {CONTRACT_KEY} metadata is not a valid input contract ({exc})") from None


def folder_inputs(root: Path, contract: Contract, progress=None) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
    """A folder of images as model inputs by `contract`: (N×C×H×W float32, labels or None, files)."""
    files, labels, _ = scan_folder(root, contract.classes or None)
    return contract.normalize(read_images(files, contract, progress)), labels, files

