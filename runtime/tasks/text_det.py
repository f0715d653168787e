"""text-det: a DB text detector (PaddleOCR's PP-OCR det): the probability map -> text boxes (threshold,
contours, the box's mean probability, unclip by the Vatti offset of pyclipper, the minimum-area
rectangle; DBPostProcess's steps and defaults), scored by precision, recall and hmean at IoU 0.5
(one-to-one matches of polygons, as PaddleOCR's DetMetric) against box annotations, or against the
float model's boxes.

Labels: PaddleOCR's detection label file beside the images (`labels.tsv`, `det_gt.txt` or
`label.txt`): `image<TAB>[{"transcription": "...", "points": [[x, y], ...]}, ...]`; a transcription of
"###" marks a region that neither counts as missed nor as a false detection.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.tasks.base import Score, Task, match_files, read_tsv, register_task

LABEL_FILES = ("labels.tsv", "det_gt.txt", "label.txt")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise EdgepipeError("task text-det needs OpenCV: pip install 'edgepipe[tasks]'") from None
    return cv2


def mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle around points, corners clockwise from the top-left, and its short side."""
    cv2 = _cv2()
    rect = cv2.minAreaRect(points.astype(np.float32))
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(pts[:2], key=lambda p: p[1])
    right = sorted(pts[2:], key=lambda p: p[1])
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32), min(rect[1])


def box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """The mean probability inside the box (DBPostProcess's 'fast' score)."""
    cv2 = _cv2()
    h, w = prob.shape
    x0, x1 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1)), int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0, y1 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1)), int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(box - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    """The box grown by area × ratio / perimeter (the DB paper's offset), as polygon points."""
    try:
        import pyclipper
    except ImportError:
        raise EdgepipeError("task text-det needs pyclipper: pip install 'edgepipe[tasks]'") from None
    area = abs(_cv2().contourArea(box))
    length = float(np.linalg.norm(box - np.roll(box, -1, axis=0), axis=1).sum())
    if length == 0:
        return None
    off = pyclipper.PyclipperOffset()
    off.AddPath([tuple(map(float, p)) for p in box], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = off.Execute(area * ratio / length)
    return np.array(grown[0], dtype=np.float32) if grown else None


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quadrilaterals (OpenCV's convex intersection)."""
    cv2 = _cv2()
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter, _ = cv2.intersectConvexConvex(cv2.convexHull(a), cv2.convexHull(b))
    union = abs(cv2.contourArea(a)) + abs(cv2.contourArea(b)) - inter
    return float(inter / union) if union > 0 else 0.0


def match(dets: list, gts: list, ignore: list, iou: float = 0.5) -> tuple[int, int, int]:
    """(matched, detections counted, ground-truth boxes) for one image: one-to-one in order, at IoU > iou;
    a detection lying on an ignored region (IoU > iou) counts neither way."""
    dets = [d for d in dets if not any(polygon_iou(d, g) > iou for g in ignore)]
    used_g, used_d, hits = set(), set(), 0
    for i, g in enumerate(gts):
        for j, d in enumerate(dets):
            if i not in used_g and j not in used_d and polygon_iou(g, d) > iou:
                used_g.add(i)
                used_d.add(j)
                hits += 1
    return hits, len(dets), len(gts)


@register_task
class TextDet(Task):
    name = "text-det"
    metric = "hmean"
    options = {"threshold": 0.3, "box_threshold": 0.6, "unclip_ratio": 1.5, "max_candidates": 1000, "min_size": 3}
    labels_hint = "PaddleOCR's det label file (labels.tsv/det_gt.txt): image<TAB>[{transcription, points}]"

    def configure(self, outputs, input_names, metadata) -> None:
        shape = outputs[0].shape
        if len(shape) != 4 or shape[1] not in (1, None) and not isinstance(shape[1], str):
            raise EdgepipeError(f"task text-det: the model's output {outputs[0].name} is {shape}, not N×1×H×W")

    def decode(self, outputs, meta):
        cv2 = _cv2()
        prob = np.asarray(next(iter(outputs.values())))[0, 0].astype(np.float32)
        st = self.settings
        contours, _ = cv2.findContours(
            (prob > st["threshold"]).astype(np.uint8) * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
        )
        sy, sx = meta.get("scale", (1.0, 1.0))
        boxes, scores = [], []
        for c in contours[: st["max_candidates"]]:
            box, short = mini_box(c.reshape(-1, 2))
            if short < st["min_size"]:
                continue
            score = box_score(prob, box)
            grown = unclip(box, st["unclip_ratio"]) if score >= st["box_threshold"] else None
            if grown is None:
                continue
            box, short = mini_box(grown)
            if short < st["min_size"] + 2:
                continue
            boxes.append((box / [sx, sy]).round(1).tolist())  # in the original image's pixels
            scores.append(round(score, 4))
        return {"boxes": boxes, "scores": scores}

    def score(self, preds, labels) -> Score:
        hits = dets = gts = 0
        for p, lab in zip(preds, labels):
            truth, ignore = (lab["boxes"], lab.get("ignore", [])) if isinstance(lab, dict) else (lab, [])
            h, d, g = match([np.array(b) for b in p["boxes"]], [np.array(b) for b in truth], ignore)
            hits, dets, gts = hits + h, dets + d, gts + g
        precision = hits / dets if dets else (1.0 if not gts else 0.0)
        recall = hits / gts if gts else 1.0
        hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures = {"precision": precision, "recall": recall, "boxes_found": dets, "boxes_labelled": gts}
        return Score(hmean, self.metric, None, figures | {"samples": len(preds)})

    def against(self, preds, reference) -> Score:
        s = self.score(preds, [{"boxes": r["boxes"]} for r in reference])
        return Score(s.value, "hmean against the float model", None, s.figures)

    def read_labels(self, folder, files):
        found = read_tsv(folder, LABEL_FILES)
        if found is None:
            return None
        path, table = found
        out = []
        for f, text in zip(files, match_files(path, table, Path(folder), files)):
            try:
                regions = json.loads(text)
                boxes = [(r["points"], r.get("transcription") == "###") for r in regions]
            except (ValueError, TypeError, KeyError):
                raise EdgepipeError(
                    f"{path}: the line of {Path(f).name} is not a JSON list of {{transcription, points}}"
                ) from None
            out.append(
                {"boxes": [b for b, ign in boxes if not ign], "ignore": [np.array(b) for b, ign in boxes if ign]}
            )
        return out

    def records(self, preds, files):
        return [{"file": str(f), **p} for p, f in zip(preds, files)]
