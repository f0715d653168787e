"""detect: object detectors. Boxes, classes and scores from the model's outputs by one of three heads,
class-wise NMS in numpy, COCO mAP@[.5:.95] and mAP@.5 by pycocotools' own COCOeval.

Heads (`head:`, inferred from the output shapes when not given):
- `nms`: the graph already ends in NMS (PaddleDetection's export with NMS: `[k, 6]` rows of class,
  score, x1, y1, x2, y2; or boxes `[k, 4]` with scores `[k]` and optionally classes `[k]`). Kept as is.
- `distribution`: a PicoDet/GFL head without its post-processing, per stride level (or the levels
  concatenated) a `[1, n, classes]` score map and a `[1, n, 4·(reg_max+1)]` box distribution: the
  expectation of each side's softmax over reg_max+1 bins, times the stride, from the cell's centre.
  reg_max comes from the box branch's width, the strides from the levels' sizes against the input size.
- `boxes`: boxes already decoded to x1, y1, x2, y2 (`[1, n, 4]`) with class scores (`[1, n, classes]` or
  `[1, classes, n]`): only NMS is left to do.
Boxes are reported in the original image's pixels (divided by the resize's scale, unless the model
took `scale_factor` and did so itself).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.tasks.base import Score, Task, register_task

LEVEL_STRIDES = (4, 8, 16, 32, 64, 128)
COMMON_REG_MAX = (7, 8, 10, 12, 15, 16)  # PicoDet and NanoDet 7 (10), GFL and PP-YOLOE 16
ANNOTATION_FILES = ("annotations.json", "instances.json", "coco.json")


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x1, y1, x2, y2] box with each row of an N×4 array of them."""
    area = np.maximum(box[2] - box[0], 0) * np.maximum(box[3] - box[1], 0)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = w * h
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first) at the IoU threshold."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def classwise_nms(boxes, scores, score_threshold: float, iou: float, keep_top: int) -> np.ndarray:
    """boxes [n, 4] and class scores [n, classes] -> detections [k, 6] (x1, y1, x2, y2, score, class)."""
    rows = []
    for c in range(scores.shape[1]):
        hit = np.flatnonzero(scores[:, c] > score_threshold)
        if hit.size:
            kept = hit[nms(boxes[hit], scores[hit, c], iou)]
            rows.append(np.column_stack([boxes[kept], scores[kept, c], np.full(len(kept), c)]))
    if not rows:
        return np.zeros((0, 6), dtype=np.float32)
    det = np.concatenate(rows)
    return det[np.argsort(-det[:, 4], kind="stable")[:keep_top]].astype(np.float32)


def cells(stride: int, hw) -> int:
    """The cells of a level at `stride` over an H×W input (ceil division, as a strided conv gives)."""
    return -(-hw[0] // stride) * -(-hw[1] // stride)


def level_strides(counts: list[int], hw: tuple[int, int]) -> list[int] | None:
    """The stride of each level from its cell count against the input's H×W (ceil division, as a
    strided conv gives); for levels joined into one, the consecutive strides whose counts add up."""
    if len(counts) > 1:
        out = [next((s for s in LEVEL_STRIDES if cells(s, hw) == n), None) for n in counts]
        return None if None in out else out
    for i in range(len(LEVEL_STRIDES)):
        for j in range(i + 1, len(LEVEL_STRIDES) + 1):
            if sum(cells(s, hw) for s in LEVEL_STRIDES[i:j]) == counts[0]:
                return list(LEVEL_STRIDES[i:j])
    return None


def distribution_boxes(dist: np.ndarray, strides: list[int], counts: list[int], hw, offset: float) -> np.ndarray:
    """GFL's box decoding: [n, 4·(reg_max+1)] logits -> [n, 4] x1, y1, x2, y2 in input pixels."""
    bins = dist.shape[1] // 4
    logits = dist.reshape(-1, 4, bins).astype(np.float64)
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    side = p @ np.arange(bins)  # [n, 4]: left, top, right, bottom in strides
    centres, steps = [], []
    for s, n in zip(strides, counts):
        cols = -(-hw[1] // s)
        yy, xx = np.divmod(np.arange(n), cols)
        centres.append(np.column_stack([(xx + offset) * s, (yy + offset) * s]))
        steps.append(np.full(n, s))
    c, st = np.concatenate(centres), np.concatenate(steps)[:, None]
    return np.column_stack([c - side[:, :2] * st, c + side[:, 2:] * st])


@register_task
class Detect(Task):
    name = "detect"
    metric = "mAP@[.5:.95]"
    options = {
        "head": None,  # nms | distribution | boxes (inferred)
        "strides": None,
        "reg_max": None,
        "cell_offset": 0.5,
        "score_threshold": 0.025,
        "nms_iou": 0.6,
        "keep_top": 100,
        "sigmoid": None,  # apply a sigmoid to the class scores (inferred: when they are not in [0, 1])
        "reference_score": 0.3,  # the float model's detections taken as ground truth without labels
        "category_ids": None,  # class index -> COCO category id (default: the annotations' ids, sorted)
    }
    labels_hint = "COCO-format annotations (annotations.json or instances*.json beside the images)"

    def configure(self, outputs, input_names, metadata) -> None:
        self.names = [o.name for o in outputs]
        self.shapes = [tuple(o.shape) for o in outputs]
        self.scaled_by_model = "scale_factor" in input_names
        head = self.settings["head"] or self._infer_head()
        if head not in ("nms", "distribution", "boxes"):
            raise EdgepipeError(f"task detect head: {head!r}; choose nms, distribution or boxes")
        self.settings["head"] = head
        if head == "distribution":
            self._split_levels()

    def _infer_head(self) -> str:
        ranks = [len(s) for s in self.shapes]
        if any(r == 2 and s[-1] == 6 for r, s in zip(ranks, self.shapes)) or (
            any(r == 2 and s[-1] == 4 for r, s in zip(ranks, self.shapes)) and 1 in ranks
        ):
            return "nms"
        widths = {s[-1] for s in self.shapes if len(s) == 3}
        if all(r == 3 for r in ranks) and len(self.shapes) % 2 == 0 and len(widths) == 2:
            return "distribution" if any(isinstance(w, int) and w % 4 == 0 and w > 4 for w in widths) else "boxes"
        if all(r == 3 for r in ranks) and len(self.shapes) == 2 and 4 in widths:
            return "boxes"
        shapes = ", ".join(f"{n} {list(s)}" for n, s in zip(self.names, self.shapes))
        raise EdgepipeError(
            f"task detect: cannot tell the head from the outputs ({shapes}); give --task-opt head=nms, "
            "distribution or boxes"
        )

    def _split_levels(self) -> None:
        """Which outputs are class scores and which box distributions: the box branch is 4·(reg_max+1)
        wide (reg_max given, or the width both branches do not share that is a multiple of 4)."""
        widths = sorted({s[-1] for s in self.shapes})
        reg = self.settings["reg_max"]
        box_w = 4 * (reg + 1) if reg is not None else None
        if box_w is None:
            cands = [w for w in widths if isinstance(w, int) and w % 4 == 0 and w > 4]
            if len(cands) > 1:  # e.g. 80 classes beside a 32-wide box branch: the usual reg_max decides
                cands = [w for w in cands if w // 4 - 1 in COMMON_REG_MAX]
            if len(cands) != 1:
                raise EdgepipeError(
                    f"task detect: the outputs are {widths} wide; which is the box branch is ambiguous: give "
                    "--task-opt reg_max=N (the box branch is 4·(N+1) wide)"
                )
            box_w = cands[0]
        if box_w not in widths:
            raise EdgepipeError(f"task detect reg_max: {reg} needs a {box_w}-wide box output; the outputs are {widths}")
        self.box_outputs = [n for n, s in zip(self.names, self.shapes) if s[-1] == box_w]
        self.score_outputs = [n for n, s in zip(self.names, self.shapes) if s[-1] != box_w]
        self.settings["reg_max"] = box_w // 4 - 1

    def box_head_outputs(self) -> list[str]:
        """The outputs that carry box regression (the distribution or decoded-box branch); none after NMS."""
        if self.settings["head"] == "distribution":
            return list(self.box_outputs)
        if self.settings["head"] == "boxes":
            return [n for n, s in zip(self.names, self.shapes) if s[-1] == 4]
        return []

    def decode(self, outputs, meta):
        head = self.settings["head"]
        if head == "nms":
            det = self._passthrough(outputs)
        else:
            boxes, scores = self._dense(outputs, meta)
            if self.settings["sigmoid"] or (
                self.settings["sigmoid"] is None and (scores.min() < 0 or scores.max() > 1)
            ):
                scores = 1 / (1 + np.exp(-scores))
            st = self.settings
            det = classwise_nms(boxes, scores, st["score_threshold"], st["nms_iou"], st["keep_top"])
        if not (head == "nms" and self.scaled_by_model):
            sy, sx = meta.get("scale", (1.0, 1.0))
            det[:, :4] /= np.array([sx, sy, sx, sy], dtype=np.float32)
        return det

    def _passthrough(self, outputs) -> np.ndarray:
        arrs = {k: np.asarray(v) for k, v in outputs.items()}
        six = next((a for a in arrs.values() if a.ndim == 2 and a.shape[-1] == 6), None)
        if six is not None:  # class, score, x1, y1, x2, y2
            det = np.column_stack([six[:, 2:6], six[:, 1], six[:, 0]]).astype(np.float32)
        else:
            boxes = next(a for a in arrs.values() if a.ndim == 2 and a.shape[-1] == 4)
            ones = [a for a in arrs.values() if a.ndim == 1 and len(a) == len(boxes)]
            scores = next((a for a in ones if a.dtype.kind == "f"), np.ones(len(boxes)))
            classes = next((a for a in ones if a.dtype.kind in "iu"), np.zeros(len(boxes)))
            det = np.column_stack([boxes, scores, classes]).astype(np.float32)
        return det[det[:, 4] > self.settings["score_threshold"]]

    def _dense(self, outputs, meta) -> tuple[np.ndarray, np.ndarray]:
        hw = tuple(meta["input_hw"])
        if self.settings["head"] == "boxes":
            arrs = [np.asarray(v)[0] for v in outputs.values()]
            boxes = next(a for a in arrs if a.shape[-1] == 4)
            scores = next(a for a in arrs if a is not boxes)
            return boxes, scores.T if scores.shape[0] != len(boxes) else scores
        dist = np.concatenate([np.asarray(outputs[n])[0] for n in self.box_outputs])
        scores = np.concatenate([np.asarray(outputs[n])[0] for n in self.score_outputs])
        counts = [np.asarray(outputs[n]).shape[1] for n in self.box_outputs]
        strides = self.settings["strides"] or level_strides(counts, hw)
        if strides is None or sum(cells(s, hw) for s in strides) != sum(counts):
            raise EdgepipeError(
                f"task detect strides: levels of {counts} cells do not fit a {hw[0]}x{hw[1]} input at "
                f"{strides or 'any stride'}; give --task-opt strides=[8,16,32,64]"
            )
        if len(counts) == 1 and len(strides) > 1:
            counts = [cells(s, hw) for s in strides]
        self.settings["strides"] = list(strides)
        return distribution_boxes(dist, strides, counts, hw, self.settings["cell_offset"]), scores

    def score(self, preds, labels) -> Score:
        gt = labels if isinstance(labels, dict) else None
        if gt is None:
            raise EdgepipeError("task detect: labels are COCO annotations (read_labels)")
        return coco_map(preds, gt, self.settings["category_ids"], self.metric)

    def against(self, preds, reference) -> Score:
        thr = self.settings["reference_score"]
        images = [{"id": i + 1, "file_name": str(i)} for i in range(len(reference))]
        anns = [
            {
                "id": k + 1,
                "image_id": i + 1,
                "category_id": int(r[5]) + 1,
                "bbox": _xywh(r[:4]),
                "iscrowd": 0,
                "area": float(max(r[2] - r[0], 0) * max(r[3] - r[1], 0)),
            }
            for k, (i, r) in enumerate((i, r) for i, det in enumerate(reference) for r in det if r[4] >= thr)
        ]
        classes = sorted({int(r[5]) for det in [*reference, *preds] for r in det} | {0})
        gt = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c + 1} for c in classes],
            "order": [i + 1 for i in range(len(reference))],
        }
        s = coco_map(preds, gt, [c + 1 for c in range(max(classes) + 1)], "mAP against the float model")
        s.figures["reference_score"] = thr
        return s

    def read_labels(self, folder, files):
        folder = Path(folder)
        path = next((folder / n for n in ANNOTATION_FILES if (folder / n).is_file()), None)
        path = path or next(iter(sorted(folder.glob("instances*.json"))), None)
        return None if path is None else read_coco(path, folder, files)

    def records(self, preds, files):
        return [
            {
                "file": str(f),
                "detections": [
                    {"box": d[:4].round(2).tolist(), "score": round(float(d[4]), 4), "class": int(d[5])} for d in p
                ],
            }
            for p, f in zip(preds, files)
        ]


def _xywh(b) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def read_coco(path: Path, folder: Path, files: list[Path]) -> dict:
    """A COCO annotation file, its images matched to `files` by file name; one line for an image it lacks."""
    try:
        doc = json.loads(Path(path).read_text())
        by_name = {Path(im["file_name"]).name: im["id"] for im in doc["images"]}
        doc["annotations"], doc["categories"]
    except (ValueError, KeyError, TypeError):
        raise EdgepipeError(f"{path}: not COCO-format annotations (images, annotations, categories)") from None
    missing = [Path(f).name for f in files if Path(f).name not in by_name]
    if missing:
        raise EdgepipeError(f"{path}: lists no image {missing[0]} (of {len(missing)} missing); annotate every image")
    doc["order"] = [by_name[Path(f).name] for f in files]
    return doc


def coco_map(preds: list[np.ndarray], gt: dict, category_ids, metric: str) -> Score:
    """mAP@[.5:.95] and mAP@.5 of the detections by pycocotools' COCOeval (its printout kept quiet)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise EdgepipeError("task detect needs pycocotools for mAP: pip install 'edgepipe[tasks]'") from None
    cats = category_ids or sorted(c["id"] for c in gt["categories"])
    dets = [
        {
            "image_id": img,
            "category_id": int(cats[int(d[5])]) if int(d[5]) < len(cats) else -1,
            "bbox": _xywh(d[:4]),
            "score": float(d[4]),
        }
        for img, det in zip(gt["order"], preds)
        for d in det
    ]
    dets = [d for d in dets if d["category_id"] != -1]
    coco = COCO()
    coco.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        if not dets or not gt["annotations"]:
            return Score(0.0 if gt["annotations"] else None, metric, None, {"map50": 0.0, "detections": len(dets)})
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.imgIds = list(gt["order"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats[:2]]
    return Score(
        stats[0],
        metric,
        None,
        {"map50": stats[1], "detections": len(dets), "boxes_labelled": len(gt["annotations"]), "samples": len(preds)},
    )


def coco_ground_truth(boxes: list, classes: int) -> dict:
    """Boxes ([k, 5] per image: x1, y1, x2, y2, class index) as the COCO ground truth `score` takes, the
    images in list order and category ids 1 … classes."""
    anns = [
        {"id": n + 1, "image_id": i + 1, "category_id": int(b[4]) + 1, "bbox": _xywh(b[:4]),
         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
        for n, (i, b) in enumerate((i, b) for i, t in enumerate(boxes) for b in t)
    ]  # fmt: skip
    return {
        "images": [{"id": i + 1, "file_name": str(i)} for i in range(len(boxes))],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)],
        "order": [i + 1 for i in range(len(boxes))],
    }
