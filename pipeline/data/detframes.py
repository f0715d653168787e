"""Camera-like detection frames made from the bundled MNIST digits, with COCO annotations — a stand-in for
people and parcels in a doorway camera's view, since no detection data set can be downloaded here.

Each frame is the camera frames' background (frames.py: gradient, blob, sensor noise) with 1 to
`max_objects` digits pasted at random scales (`scale` of the frame's side) and positions, overlapping
at most `max_overlap` IoU with each other; each object's box is the tight box of its ink. The splits
hold out digits by source: a test or val digit is never seen in training, under any background.

    OUT/train/0000.png …  OUT/train/instances_train.json
    OUT/val/…             OUT/val/instances_val.json
    OUT/test/…            OUT/test/instances_test.json

The COCO files carry categories "0" … "9" (ids 1 … 10) and, per annotation, the source digit's index in
the bundled set (`source_digit`), so the hold-out can be checked. Deterministic for a seed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.data.frames import background, paste
from edgepipe.runtime.tasks.detect import box_iou

SPLITS = ("train", "val", "test")


def _place(size: int, side: int, boxes: list, max_overlap: float, rng) -> tuple[int, int] | None:
    """A top-left corner for a side×side square whose IoU with every box so far is at most max_overlap."""
    for _ in range(30):
        y0, x0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
        if not boxes or (box_iou(np.array([x0, y0, x0 + side, y0 + side]), np.array(boxes)) <= max_overlap).all():
            return y0, x0
    return None


def detection_frame(images, pool, size, max_objects, scale, max_overlap, rng) -> tuple[np.ndarray, list[dict]]:
    """One frame and its objects [{bbox (x, y, w, h), category_id, source_digit}], digits drawn from `pool`."""
    bg = background(size, rng)
    objects, squares = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        i = int(pool[rng.integers(len(pool))])
        side = max(8, int(round(rng.uniform(*scale) * size)))
        at = _place(size, side, squares, max_overlap, rng)
        if at is None:
            continue
        y0, x0 = at
        glyph = paste(bg, images[i], side, y0, x0, rng)
        ys, xs = np.nonzero(glyph > 0.2)
        if not len(ys):
            continue
        squares.append((x0, y0, x0 + side, y0 + side))
        x, y = x0 + int(xs.min()), y0 + int(ys.min())
        w, h = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        objects.append({"bbox": [x, y, w, h], "source_digit": i})
    return np.clip(bg, 0, 255).astype(np.uint8), objects


def split_pools(labels: np.ndarray, counts: dict[str, int], rng) -> dict[str, np.ndarray]:
    """Disjoint digit pools per split: test and val take `held` digits of each class (a tenth of the class,
    at least 20), train the rest."""
    pools = {s: [] for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        held = max(20, len(idx) // 10)
        pools["test"] += list(idx[:held])
        pools["val"] += list(idx[held : 2 * held])
        pools["train"] += list(idx[2 * held :])
    return {s: np.asarray(v) for s, v in pools.items() if counts.get(s)}


def make_detection_frames(
    out: Path,
    size: int = 160,
    counts: dict[str, int] | None = None,
    max_objects: int = 3,
    scale: tuple[float, float] = (0.18, 0.45),
    max_overlap: float = 0.3,
    seed: int = 0,
    progress=None,
) -> dict:
    """Write the frames of each split and its COCO annotations under `out` (a new folder, all at once)."""
    from PIL import Image

    from edgepipe.pipeline.data.mnist import load_bundled

    counts = counts or {"train": 600, "val": 100, "test": 100}
    if not 32 <= size <= 1024:
        raise EdgepipeError(f"--size {size}: detection frames are 32 to 1024 pixels")
    if not 1 <= max_objects <= 20:
        raise EdgepipeError(f"--objects {max_objects}: 1 to 20 objects per frame")
    if set(counts) - set(SPLITS) or min(counts.values()) < 0 or not sum(counts.values()):
        raise EdgepipeError(f"frames per split {counts}: give train, val, test counts, not all zero")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EdgepipeError(f"{out}: not empty; give a new folder")
    images, labels = load_bundled()
    rng = np.random.default_rng(seed)
    pools = split_pools(labels, counts, rng)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    total, done, summary = sum(counts.values()), 0, {}
    try:
        for split, n in counts.items():
            if not n:
                continue
            (tmp / split).mkdir(parents=True)
            doc = {"images": [], "annotations": [], "categories": [{"id": d + 1, "name": str(d)} for d in range(10)]}
            for k in range(n):
                frame, objects = detection_frame(images, pools[split], size, max_objects, scale, max_overlap, rng)
                name = f"{k:04d}.png"
                Image.fromarray(frame).save(tmp / split / name, optimize=False)
                doc["images"].append({"id": k + 1, "file_name": name, "width": size, "height": size})
                for o in objects:
                    w, h = o["bbox"][2:]
                    doc["annotations"].append(
                        {"id": len(doc["annotations"]) + 1, "image_id": k + 1, "iscrowd": 0, "area": w * h,
                         "category_id": int(labels[o["source_digit"]]) + 1, **o}
                    )  # fmt: skip
                done += 1
                if progress is not None:
                    progress(done, total)
            (tmp / split / f"instances_{split}.json").write_text(json.dumps(doc))
            summary[split] = {"frames": n, "objects": len(doc["annotations"])}
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(out), "size": size, "seed": seed, "max_objects": max_objects, "splits": summary}


def _frame_count(v, n_train: int, key: str) -> int:
    """data.test / data.val for detection frames: a count of frames, or a share of the training frames."""
    if isinstance(v, str):
        raise EdgepipeError(f"data.{key}: detection frames are made here; give a count of frames or a share")
    return int(v) if isinstance(v, int) else max(1, round(v * n_train))


def load_detection(cfg, spec):
    """source: frames with frames.objects — detection frames made once into $EDGEPIPE_CACHE/frames/det-…/
    (make_detection_frames) and read back: the images, and per image its boxes in the input's pixels."""
    import sys

    from edgepipe.devices.base.cache import cache_dir
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.pipeline.data.dataset import Dataset, contract_for

    if cfg.resize is not None:
        raise EdgepipeError("data.resize: detection frames are made at size:; leave resize out")
    size, n_train = cfg.size[0], spec.count or 2000
    counts = {
        "train": n_train,
        "val": _frame_count(cfg.val, n_train, "val"),
        "test": _frame_count(cfg.test, n_train, "test"),
    }
    folder = (
        cache_dir()
        / "frames"
        / f"det-{size}-{spec.objects}-{counts['train']}-{counts['val']}-{counts['test']}-{spec.seed}"
    )
    if not folder.is_dir():
        print(f"  making detection frames of {size}×{size} in {folder}", file=sys.stderr, flush=True)
        make_detection_frames(folder, size, counts, spec.objects, seed=spec.seed, progress=progress_bar("frames"))
    images, targets, splits = [], [], {}
    for split in SPLITS:
        pixels, boxes = read_split(folder / split, f"instances_{split}.json")
        splits[split] = np.arange(len(images), len(images) + len(pixels))
        images += pixels
        targets += boxes
    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(splits["train"])
    n_cal = _frame_count(cfg.calibration, n_train, "calibration") if not isinstance(cfg.calibration, str) else 0
    splits["calibration"], splits["train"] = np.sort(order[:n_cal]), np.sort(order[n_cal:][: cfg.train_limit])
    ds = Dataset(
        np.stack(images),
        np.arange(len(images), dtype=np.int64),
        splits,
        f"detection frames made from the bundled MNIST digits, a stand-in for people and parcels in a camera's "
        f"view (1 to {spec.objects} digits a frame, test and val digits held out; RGB {size}×{size} PNGs and COCO "
        f"annotations in {folder})",
        contract_for(cfg, tuple(str(d) for d in range(10))),
        targets=targets,
    )
    return ds


def read_split(folder: Path, annotations: str) -> tuple[list, list]:
    """A folder of frames and its COCO file: the pixels (H×W×3 uint8) of its images in file-name order and
    their boxes ([k, 5]: x1, y1, x2, y2, class index = category id - 1)."""
    from PIL import Image

    doc = json.loads((folder / annotations).read_text())
    ims = sorted(doc["images"], key=lambda im: im["file_name"])
    by_image: dict = {}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append([x, y, x + w, y + h, a["category_id"] - 1])
    pixels = [np.asarray(Image.open(folder / im["file_name"]).convert("RGB")) for im in ims]
    boxes = [np.asarray(by_image.get(im["id"], []), np.float32).reshape(-1, 5) for im in ims]
    return pixels, boxes


def write_split(data, split: str, folder: Path) -> Path:
    """A split of detection data as an image folder the detect task reads: its frames as PNGs and their
    boxes as annotations.json (COCO), for what scores models on a folder (deploy's candidates, a device)."""
    from PIL import Image

    from edgepipe.runtime.tasks.detect import coco_ground_truth

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = data.splits[split]
    doc = coco_ground_truth([data.targets[r] for r in rows], len(data.contract.classes))
    for k, (r, im) in enumerate(zip(rows, doc["images"])):
        im["file_name"] = f"{k:04d}.png"
        Image.fromarray(np.asarray(data.images[r], dtype=np.uint8)).save(folder / im["file_name"])
    doc.pop("order")
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder


def split_image_set(data, split: str, input_name: str):
    """A split of detection data as the task evaluation's ImageSet: one feed of one image each under the
    model's input name, what decoding needs of each, and the split's boxes as COCO ground truth."""
    from edgepipe.runtime.tasks.detect import coco_ground_truth
    from edgepipe.runtime.tasks.evaluate import ImageSet

    x, rows = data.split(split)
    feeds = [{input_name: x[i : i + 1]} for i in range(len(x))]
    metas = [{"file": str(r), "scale": (1.0, 1.0), "input_hw": tuple(x.shape[2:])} for r in rows]
    truth = coco_ground_truth([data.targets[r] for r in rows], len(data.contract.classes))
    return ImageSet(Path(f"{split} split"), feeds, metas, truth)
