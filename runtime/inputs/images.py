"""Images in, model inputs out. The input contract — size (H, W), channels (1 grey, 3 RGB or BGR), an
optional resize of the shorter side before a center crop or a keep-ratio resize (padded to the size,
as OCR recognizers and letterboxing detectors take it, or left at its own size for dynamic-shape
models), mean and std, NCHW or NHWC float32, and the class names — is what a model was trained with;
it is saved in every exported ONNX file's metadata, so the device decodes and preprocesses a folder
of images exactly as training did.

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
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of images whose normalisation is not given: ImageNet's for RGB, 0.5 / 0.5 for grey."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))


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
    keep_ratio: bool = False  # scale to fit within size keeping the aspect ratio (no crop)
    pad: bool = True  # keep_ratio: pad right and bottom to size with zeros after normalisation; False: own size
    multiple: int = 1  # keep_ratio without pad: each side rounded to a multiple of this (e.g. 32 for detectors)
    bgr: bool = False  # channels in BGR order, as OpenCV decodes (the order many Paddle models were trained in)

    def __post_init__(self):
        if self.layout not in ("NCHW", "NHWC"):
            raise EdgepipeError(f"input contract: layout must be NCHW or NHWC, not {self.layout}")
        if self.resize and self.keep_ratio:
            raise EdgepipeError(
                "input contract: give resize (shorter side, then a center crop) or keep_ratio, not both"
            )
        if self.multiple < 1:
            raise EdgepipeError(f"input contract: multiple must be at least 1, not {self.multiple}")
        if self.channels not in (1, 3):
            raise EdgepipeError(f"input contract: channels must be 1 (grey) or 3 (RGB), not {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise EdgepipeError(f"input contract: give one mean and one std per channel ({self.channels})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size) if self.layout == "NCHW" else (*self.size, self.channels)

    @property
    def fixed_size(self) -> bool:
        """Every image comes out at `size` (False: keep-ratio without padding, each at its own size)."""
        return not self.keep_ratio or self.pad

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
        return cls(
            size=tuple(d["size"]),
            channels=d["channels"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize=d.get("resize"),
            classes=tuple(d.get("classes", ())),
            layout=d.get("layout", "NCHW"),
            dtype=d.get("dtype", "float32"),
            keep_ratio=bool(d.get("keep_ratio", False)),
            pad=bool(d.get("pad", True)),
            multiple=int(d.get("multiple", 1)),
            bgr=bool(d.get("bgr", False)),
        )

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×C (or N×H×W) pixels — uint8, or floats in [0, 1] — to the model's N×C×H×W (or NHWC) float32."""
        x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        out = np.empty((x.shape[0], x.shape[3], *x.shape[1:3]), dtype=np.float32)
        for c in range(x.shape[3]):  # per channel, with float32 scalars
            out[:, c] = (x[..., c] - np.float32(self.mean[c])) / np.float32(self.std[c])
        return out if self.layout == "NCHW" else np.ascontiguousarray(out.transpose(0, 2, 3, 1))

    def fitted_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) an image of this size is resized to under keep_ratio: within `size`, ratio kept,
        sides rounded to `multiple` when not padded."""
        h, w = self.size
        scale = min(h / height, w / width)
        rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
        if not self.pad and self.multiple > 1:
            m = self.multiple
            rh, rw = max(m, round(rh / m) * m), max(m, round(rw / m) * m)
        return min(rh, h) if self.pad else rh, min(rw, w) if self.pad else rw

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """One decoded image (H×W×C uint8 from load_image) as the model's input sample (C×H×W float32,
        or H×W×C under NHWC): normalised, then padded right and bottom to `size` under keep_ratio + pad."""
        x = self.normalize(pixels[None])[0]
        if not (self.keep_ratio and self.pad) or tuple(pixels.shape[:2]) == tuple(self.size):
            return x
        out = np.zeros(self.input_shape, dtype=np.float32)
        h, w = pixels.shape[:2]
        if self.layout == "NCHW":
            out[:, :h, :w] = x
        else:
            out[:h, :w] = x
        return out


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise EdgepipeError("decoding images needs Pillow: pip install 'edgepipe[images]' (or pillow)") from None
    return Image


def load_image(path: Path, contract: Contract, with_scale: bool = False):
    """One image file as H×W×C uint8 at the contract's size and channels (under keep_ratio: at the
    size it is resized to, before any padding); with_scale: also (sy, sx), resized over original."""
    Image = _pil()
    h, w = contract.size
    try:
        with Image.open(path) as im:
            im = im.convert("L" if contract.channels == 1 else "RGB")
            h0, w0 = im.height, im.width
            if contract.keep_ratio:
                fh, fw = contract.fitted_size(im.height, im.width)
                if (fw, fh) != im.size:
                    im = im.resize((fw, fh), Image.BILINEAR)
            elif contract.resize:
                scale = contract.resize / min(im.size)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            elif im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:  # UnidentifiedImageError is an OSError
        raise EdgepipeError(f"{path}: not a readable image ({type(exc).__name__}); remove or replace it") from None
    arr = arr[..., None] if arr.ndim == 2 else (arr[..., ::-1] if contract.bgr else arr)
    if with_scale:
        return arr, (arr.shape[0] / h0, arr.shape[1] / w0)
    return arr


def image_files(root: Path) -> list[Path]:
    """Every image under `root` (by suffix, any case), sorted by path."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def scan_folder(
    root: Path, classes: tuple[str, ...] | None = None
) -> tuple[list[Path], np.ndarray | None, tuple[str, ...]]:
    """(files, labels, class names) of an image folder. With class subfolders (root/<class>/*.png) the
    sorted folder names are the classes; `classes` (a model's) fixes their order and refuses others.
    Images directly in root, with no class folders, are unlabeled (labels None)."""
    root = Path(root)
    if not root.is_dir():
        raise EdgepipeError(f"{root}: image folder not found")
    found = sorted(
        d.name
        for d in root.iterdir()  # hidden and tool folders (.ipynb_checkpoints, __MACOSX) are not classes
        if d.is_dir() and not d.name.startswith((".", "__")) and image_files(d)
    )
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not found:
        files = image_files(root)
        if not files:
            raise EdgepipeError(f"{root}: no images ({', '.join(SUFFIXES)}) here or in class folders")
        return files, None, tuple(classes or ())
    if loose:
        raise EdgepipeError(
            f"{root}: {len(loose)} image(s) lie beside the class folders (e.g. {loose[0].name}); "
            "move them into a class folder or out of the data"
        )
    names = tuple(classes) if classes else tuple(found)
    unknown = [c for c in found if c not in names]
    if unknown:
        raise EdgepipeError(
            f"{root}: class folder(s) {unknown[:3]} are not among the model's classes {list(names)[:10]}"
        )
    files, labels = [], []
    for i, name in enumerate(names):
        for f in image_files(root / name) if (root / name).is_dir() else []:
            files.append(f)
            labels.append(i)
    return files, np.asarray(labels, dtype=np.int64), names


def read_images(files: list[Path], contract: Contract, progress=None) -> np.ndarray:
    """N×H×W×C uint8 for `files` (progress(done, total) after each); a keep-ratio contract's images
    padded with zero pixels (folder_samples pads after normalisation, as the model expects)."""
    out = np.zeros((len(files), *contract.size, contract.channels), dtype=np.uint8)
    for i, f in enumerate(files):
        img = load_image(f, contract)
        out[i, : img.shape[0], : img.shape[1]] = img
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
    if not contract.fixed_size or contract.keep_ratio:
        samples, labels, files = folder_samples(root, contract, progress)
        if not contract.fixed_size:
            raise EdgepipeError(
                f"{root}: the input contract keeps each image at its own size (keep_ratio without pad); "
                "these inputs cannot form one array"
            )
        return np.stack([s for s, _ in samples]), labels, files
    files, labels, _ = scan_folder(root, contract.classes or None)
    return contract.normalize(read_images(files, contract, progress)), labels, files


def folder_samples(root: Path, contract: Contract, progress=None):
    """A folder of images as model input samples, each on its own: ([(C×H×W float32, (sy, sx))],
    labels or None, files). Under keep_ratio without pad the samples differ in size."""
    files, labels, _ = scan_folder(root, contract.classes or None)
    out = []
    for i, f in enumerate(files):
        img, scale = load_image(f, contract, with_scale=True)
        out.append((contract.prepare(img), scale))
        if progress is not None:
            progress(i + 1, len(files))
    return out, labels, files


CONTRACT_FLAGS = (
    "size",
    "channels",
    "resize",
    "keep_ratio",
    "no_pad",
    "multiple",
    "mean",
    "std",
    "layout",
    "classes",
    "bgr",
)


def contract_from_args(
    args, base: Contract | None, image_shape: tuple | None = None, shape: tuple | None = None, note=None
) -> Contract | None:
    """The input contract a command works under: the model's own (`base`), with any contract flags
    (runtime/args.add_contract_args) laid over it; a model without one gets it from the flags, its
    size and channels defaulting to the image input's fixed dimensions (`image_shape`, N×C×H×W with
    None where dynamic) or a --shape given for it (`shape`). `note(text)` hears when flags override
    the file's contract. None when neither the model nor the flags give one."""
    given = {k: getattr(args, k) for k in CONTRACT_FLAGS if getattr(args, k, None) not in (None, False)}
    if not given:
        return base
    nhwc = (given.get("layout") or (base.layout if base else "NCHW")).upper() == "NHWC"
    dims = tuple(shape or image_shape or ())
    c_axis, hw = (3, (1, 2)) if nhwc else (1, (2, 3))
    size = (
        _size(given["size"])
        if "size" in given
        else base.size
        if base
        else (tuple(dims[i] for i in hw) if len(dims) == 4 and all(dims[i] for i in hw) else None)
    )
    channels = given.get("channels") or (
        base.channels if base else (dims[c_axis] if len(dims) == 4 and dims[c_axis] else 3)
    )
    if size is None:
        raise EdgepipeError(
            "the model's image size is dynamic and no input contract gives it: add --size HxW (the size "
            "images are brought to; with --keep-ratio the box they are fitted into)"
        )
    mean, std = (base.mean, base.std) if base and base.channels == channels else default_normalisation(channels)
    classes = base.classes if base else ()
    if "classes" in given:
        folder = Path(given["classes"])
        classes = scan_folder(folder)[2] if folder.is_dir() else tuple(c.strip() for c in given["classes"].split(","))
    fields = dict(
        size=size,
        channels=channels,
        mean=_floats(given.get("mean"), mean, "--mean"),
        std=_floats(given.get("std"), std, "--std"),
        classes=classes,
        resize=given.get("resize", base.resize if base and "keep_ratio" not in given else None),
        layout="NHWC" if nhwc else "NCHW",
        keep_ratio="keep_ratio" in given or bool(base and base.keep_ratio and "resize" not in given),
        pad=not given.get("no_pad", base is not None and not base.pad),
        multiple=given.get("multiple", base.multiple if base else 1),
        bgr=given.get("bgr", base.bgr if base else False),
    )
    contract = Contract(**fields)
    if base is not None and contract != base and note is not None:
        note(
            f"input contract: the command line's ({', '.join(f'--{k.replace(chr(95), chr(45))}' for k in given)}) "
            "replaces parts of the model's own"
        )
    return contract


def _size(text) -> tuple[int, int]:
    try:
        parts = [int(v) for v in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or any(v < 1 for v in parts):
        raise EdgepipeError(f"--size {text}: give HxW (e.g. 48x320) or one side for a square")
    return (parts[0], parts[-1])


def _floats(text, default, flag):
    if not text:
        return tuple(default)
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise EdgepipeError(f"{flag} {text}: give comma-separated numbers, one per channel") from None
