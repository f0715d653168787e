"""The recipe's `data:` mapping: which source (bundled MNIST, IDX files, Paddle's downloader, an
image folder, an .npz, camera-like frames made from the bundled digits), how it is split, the input
contract every model of the run is trained with (size, channels, resize + center crop, mean, std)
and the training augmentation of images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgepipe.pipeline.core.config import OPTIONAL, require
from edgepipe.runtime.inputs.images import IMAGENET_MEAN, IMAGENET_STD, default_normalisation  # noqa: F401

MNIST_SOURCES = ("bundled", "idx", "paddle")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Augment:
    """Training augmentation of image data (the MNIST recipes shift by `augment_shift` pixels instead)."""

    flip: bool = False  # random horizontal flip
    crop: tuple[float, float] | None = None  # random resized crop: the share of the area kept, e.g. [0.6, 1.0]

    def __post_init__(self):
        require(
            self.crop is None or (len(self.crop) == 2 and 0.05 <= self.crop[0] <= self.crop[1] <= 1.0),
            "crop",
            "give [min, max] shares of the image area kept, 0.05 <= min <= max <= 1, e.g. [0.6, 1.0]",
        )


@dataclass(frozen=True)
class Frames:
    """source: frames — camera-like RGB frames made from the bundled digits (a stand-in for a camera's
    classes), written once as an image folder of PNGs under $EDGEPIPE_CACHE/frames and read back."""

    per_class: int = (
        500  # digits per class drawn (the bundled digits hold 500 of each); one frame each, or see renderings
    )
    seed: int = 0
    renderings: int = field(
        default=1, metadata=OPTIONAL
    )  # frames per training digit; >1 holds test/val digits out first
    # detection frames: up to this many digits per frame, each with its box (COCO annotations); the task is detect
    objects: int | None = field(default=None, metadata=OPTIONAL)
    count: int | None = field(default=None, metadata=OPTIONAL)  # detection: training frames (default 2000)

    def __post_init__(self):
        require(1 <= self.per_class <= 500, "per_class", "must be between 1 and 500 (the bundled digits per class)")
        require(1 <= self.renderings <= 10, "renderings", "must be between 1 and 10 frames per training digit")
        require(self.objects is None or 1 <= self.objects <= 20, "objects", "must be between 1 and 20 per frame")
        require(self.count is None or self.objects is not None, "count", "goes with objects: (detection frames)")
        require(self.count is None or self.count >= 10, "count", "must be at least 10 training frames")
        require(
            self.objects is None or self.renderings == 1,
            "renderings",
            "detection frames (objects:) draw new digits for every frame; leave renderings out",
        )


@dataclass(frozen=True)
class DataConfig:
    source: Literal["bundled", "idx", "paddle", "imagefolder", "npz", "frames"] = "bundled"
    path: str | None = None  # idx: a folder of MNIST IDX files; imagefolder: root/<class>/*.png; npz: a file (x, y)
    test: int | float | str | None = (
        None  # samples, a share (0.2), or a folder / .npz of its own; MNIST 1000, images 0.2
    )
    val: int | float | str | None = None  # MNIST 300, images 0.1
    calibration: int | float | str | None = (
        None  # or a folder of unlabeled images / an .npz of 'x'; MNIST 200, images 0.1
    )
    train_limit: int | None = None  # use at most this many training samples (quick runs)
    split_seed: int = 0
    # the input contract (MNIST sources: 1×28×28, MNIST's mean/std)
    size: tuple[int, int] | None = field(default=None, metadata=OPTIONAL)  # height, width
    channels: int | None = field(default=None, metadata=OPTIONAL)  # 1 grey, 3 RGB (images: 3)
    resize: int | None = field(default=None, metadata=OPTIONAL)  # shorter side, then a center crop to size
    mean: tuple[float, ...] | None = field(default=None, metadata=OPTIONAL)  # images: ImageNet's for RGB, 0.5 for grey
    std: tuple[float, ...] | None = field(default=None, metadata=OPTIONAL)
    layout: Literal["nchw", "nhwc"] | None = field(default=None, metadata=OPTIONAL)  # npz: how x is laid out
    augment: Augment | None = field(default=None, metadata=OPTIONAL)  # images: random crop / flip while training
    frames: Frames | None = field(default=None, metadata=OPTIONAL)  # source: frames — how many, which seed

    def __post_init__(self):
        mnist = self.source in MNIST_SOURCES
        for name, counts, share in (("test", 1000, 0.2), ("val", 300, 0.1), ("calibration", 200, 0.1)):
            if getattr(self, name) is None:  # the source's default, filled in so the resolved recipe shows it
                object.__setattr__(self, name, counts if mnist else share)
        require(self.source != "idx" or bool(self.path), "path", "source 'idx' needs path: a folder of MNIST IDX files")
        require(
            mnist or self.source == "frames" or bool(self.path),
            "path",
            f"source '{self.source}' needs path: "
            + ("root/<class>/*.png" if self.source == "imagefolder" else "an .npz file with arrays x and y"),
        )
        require(
            self.source != "frames" or self.path is None,
            "path",
            "frames are made into $EDGEPIPE_CACHE/frames; to use a folder of your own, give source: imagefolder",
        )
        require(self.frames is None or self.source == "frames", "frames", "applies to source: frames")
        for name in ("test", "val", "calibration"):
            v = getattr(self, name)
            if isinstance(v, str):
                require(not mnist or name == "calibration", name, f"a {name} folder needs source: imagefolder or npz")
            elif isinstance(v, float):
                require(0.0 < v < 1.0, name, "a share must be in (0, 1)")
            else:
                require(v >= 1, name, "must be at least 1")
        require(self.train_limit is None or self.train_limit >= 1, "train_limit", "must be at least 1")
        if mnist:
            for key in ("size", "channels", "resize", "mean", "std", "layout", "augment"):
                require(
                    getattr(self, key) is None,
                    key,
                    f"MNIST sources are 1×28×28 digits with MNIST's normalisation; "
                    f"{key}: needs source: imagefolder or npz",
                )
            return
        require(
            self.size is not None and len(self.size) == 2 and min(self.size) >= 8,
            "size",
            f"source '{self.source}' needs size: [height, width] (at least 8 each), the input the models take",
        )
        require(self.channels in (None, 1, 3), "channels", "must be 1 (grey) or 3 (RGB)")
        require(
            self.resize is None or self.resize >= max(self.size),
            "resize",
            "the shorter side must be at least the crop size (resize, then center crop to size)",
        )
        require(
            self.resize is None or self.source in ("imagefolder", "frames"),
            "resize",
            "applies to decoded images (imagefolder, frames)",
        )
        require(
            self.source != "frames"
            or (self.size[0] == self.size[1] and (self.channels or 3) == 3 and 16 <= self.size[0] <= 512),
            "size",
            "frames are square RGB images of 16 to 512 pixels: give size: [S, S] and channels: 3",
        )
        c = self.input_shape[0]
        for key in ("mean", "std"):
            v = getattr(self, key)
            require(v is None or len(v) == c, key, f"give one value per channel ({c})")
        require(self.std is None or min(self.std) > 0, "std", "must be positive")
        require(self.layout is None or self.source == "npz", "layout", "applies to source: npz")

    @property
    def mnist(self) -> bool:
        return self.source in MNIST_SOURCES

    @property
    def input_shape(self) -> tuple[int, ...]:
        """C×H×W of one sample as the models see it."""
        if self.mnist:
            return (1, 28, 28)
        return (self.channels or 3, *self.size)

    def contract_fields(self) -> dict:
        """size, channels, resize, mean, std of an image source's input contract, defaults filled in."""
        c, h, w = self.input_shape
        mean, std = default_normalisation(c)
        return {
            "size": (h, w),
            "channels": c,
            "resize": self.resize,
            "mean": tuple(self.mean or mean),
            "std": tuple(self.std or std),
        }
