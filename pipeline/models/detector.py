"""A PicoDet-style anchor-free detector small enough to train from scratch on two CPU cores, and its loss.

The network: a depthwise-separable backbone (BatchNorm, Hardswish) to strides 8 and 16, a light FPN
neck (1×1 laterals, top-down upsample-and-add) and a GFL head per level: a shared tower of two
depthwise-separable convs, then class logits and a box *distribution* — for each side (left, top,
right, bottom) reg_max + 1 logits over distances 0 … reg_max strides from the cell's centre.

In eval mode (and so in its ONNX export) it returns what PaddleDetection's PicoDet export without
post-processing returns and the runtime's `detect` task decodes (runtime/tasks/detect.py): per level
the class scores after a sigmoid, [N, cells, classes], then per level the distributions,
[N, cells, 4·(reg_max+1)], cells in row-major order, centres at (col + 0.5, row + 0.5) × stride.
In train mode it returns the logits of both per level, for the loss.

The loss (`DetectionLoss`): each ground-truth box is given to the level its size suits (its longer
side up to 4 strides of the finer level, else the coarser) and to the cells of that level whose
centres lie inside it and within 1.5 strides of its centre (the nearest cell when none does; a cell
wanted by two boxes takes the smaller), as FCOS's centre sampling does. Then sigmoid focal loss on
the class logits of every cell (normalised by the positives), and for the positives GIoU on the
decoded boxes and the distribution focal loss (GFL) on the sides' distributions, weighted 1, 2 and
0.25 as PicoDet weights its VFL, GIoU and DFL.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False), nn.BatchNorm2D(cout)]
    return nn.Sequential(*layers, nn.Hardswish()) if act else nn.Sequential(*layers)


def _dw_sep(cin, cout, stride=1):
    """Depthwise 3×3 then pointwise 1×1, each with BatchNorm and Hardswish."""
    return nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1))


class PicoDetLite(nn.Layer):
    """Backbone to strides 8 and 16, FPN neck, GFL head (see the module's docstring)."""

    strides = (8, 16)

    def __init__(self, num_classes: int = 10, width: int = 32, reg_max: int = 7, in_channels: int = 3):
        super().__init__()
        w = width
        self.num_classes, self.reg_max = num_classes, reg_max
        self.stem = nn.Sequential(_conv_bn(in_channels, w // 2, 3, 2), _dw_sep(w // 2, w, 2))  # stride 4
        self.c3 = nn.Sequential(_dw_sep(w, 2 * w, 2), _dw_sep(2 * w, 2 * w))  # stride 8
        self.c4 = nn.Sequential(_dw_sep(2 * w, 4 * w, 2), _dw_sep(4 * w, 4 * w))  # stride 16
        self.lat3, self.lat4 = _conv_bn(2 * w, w, 1), _conv_bn(4 * w, w, 1)
        self.towers = nn.LayerList([nn.Sequential(_dw_sep(w, w), _dw_sep(w, w)) for _ in self.strides])
        self.cls = nn.LayerList([nn.Conv2D(w, num_classes, 1) for _ in self.strides])
        self.reg = nn.LayerList([nn.Conv2D(w, 4 * (reg_max + 1), 1) for _ in self.strides])
        prior = -float(np.log((1 - 0.01) / 0.01))  # class scores start near 0.01, as focal-loss detectors do
        for c in self.cls:
            c.bias.set_value(paddle.full(c.bias.shape, prior, "float32"))

    def levels(self, x):
        """Per level: (class logits [N, cells, C], distribution logits [N, cells, 4(R+1)])."""
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        p4 = self.lat4(c4)
        p3 = self.lat3(c3) + F.interpolate(p4, size=c3.shape[2:], mode="nearest")
        out = []
        for k, p in enumerate((p3, p4)):
            t = self.towers[k](p)
            out.append((self.cls[k](t).flatten(2).transpose([0, 2, 1]), self.reg[k](t).flatten(2).transpose([0, 2, 1])))
        return out

    def forward(self, x):
        levels = self.levels(x)
        if self.training:
            return levels
        return [F.sigmoid(c) for c, _ in levels] + [r for _, r in levels]


def cell_centres(hw: tuple[int, int], strides) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every level's cell centres (x, y) in input pixels, each cell's stride and level, concatenated."""
    centres, steps, level = [], [], []
    for k, s in enumerate(strides):
        rows, cols = -(-hw[0] // s), -(-hw[1] // s)
        yy, xx = np.divmod(np.arange(rows * cols), cols)
        centres.append(np.column_stack([(xx + 0.5) * s, (yy + 0.5) * s]))
        steps.append(np.full(rows * cols, s, np.float32))
        level.append(np.full(rows * cols, k))
    return np.concatenate(centres).astype(np.float32), np.concatenate(steps), np.concatenate(level)


def assign(boxes: np.ndarray, centres: np.ndarray, steps: np.ndarray, level: np.ndarray, strides, radius=1.5):
    """One image's targets: for each cell the index of its box (-1: background). `boxes` [k, 5] rows are
    x1, y1, x2, y2, class in input pixels."""
    owner = np.full(len(centres), -1, np.int64)
    best_area = np.full(len(centres), np.inf)
    for j, (x1, y1, x2, y2, _) in enumerate(boxes):
        side = max(x2 - x1, y2 - y1)
        lv = 0 if side <= 4 * strides[0] or len(strides) == 1 else 1
        on = level == lv
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        px, py = centres[:, 0], centres[:, 1]
        inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
        near = (np.abs(px - cx) < radius * steps) & (np.abs(py - cy) < radius * steps)
        hit = np.flatnonzero(on & inside & near)
        if not hit.size:  # a small box between centres: its nearest cell of the level
            cand = np.flatnonzero(on)
            hit = cand[[np.argmin((px[cand] - cx) ** 2 + (py[cand] - cy) ** 2)]]
        area = (x2 - x1) * (y2 - y1)
        take = hit[area < best_area[hit]]
        owner[take], best_area[take] = j, area
    return owner


def giou(a, b):
    """Generalised IoU of matching rows of two [n, 4] x1, y1, x2, y2 tensors."""
    area_a = (a[:, 2] - a[:, 0]).clip(min=0) * (a[:, 3] - a[:, 1]).clip(min=0)
    area_b = (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)
    iw = (paddle.minimum(a[:, 2], b[:, 2]) - paddle.maximum(a[:, 0], b[:, 0])).clip(min=0)
    ih = (paddle.minimum(a[:, 3], b[:, 3]) - paddle.maximum(a[:, 1], b[:, 1])).clip(min=0)
    inter = iw * ih
    union = area_a + area_b - inter + 1e-9
    cw = paddle.maximum(a[:, 2], b[:, 2]) - paddle.minimum(a[:, 0], b[:, 0])
    ch = paddle.maximum(a[:, 3], b[:, 3]) - paddle.minimum(a[:, 1], b[:, 1])
    hull = cw * ch + 1e-9
    return inter / union - (hull - union) / hull


class DetectionLoss:
    """fit()'s loss_fn for a PicoDetLite: targets[i] holds row i's boxes ([k, 5]: x1, y1, x2, y2, class), and
    the labels fit() is given are the rows' numbers (Dataset.labels of a detection data set)."""

    def __init__(self, targets: list[np.ndarray], hw: tuple[int, int], strides, reg_max: int):
        # targets[i]: the boxes of the data set's row i; fit() passes each batch's rows as its labels (yb)
        self.targets, self.reg_max, self.strides = targets, reg_max, tuple(strides)
        self.centres, self.steps, self.level = cell_centres(hw, strides)

    def __call__(self, levels, xb, yb, idx):
        cls = paddle.concat([c for c, _ in levels], axis=1)  # [B, n, C]
        reg = paddle.concat([r for _, r in levels], axis=1)  # [B, n, 4(R+1)]
        b, n, classes = cls.shape
        onehot = np.zeros((b, n, classes), np.float32)
        pos_rows, pos_boxes = [], []
        for i, row in enumerate(yb.numpy()):
            boxes = self.targets[int(row)]
            if not len(boxes):
                continue
            owner = assign(boxes, self.centres, self.steps, self.level, self.strides)
            cells = np.flatnonzero(owner >= 0)
            onehot[i, cells, boxes[owner[cells], 4].astype(np.int64)] = 1.0
            pos_rows.append(i * n + cells)
            pos_boxes.append(boxes[owner[cells], :4])
        num_pos = max(sum(len(p) for p in pos_rows), 1)
        loss_cls = F.sigmoid_focal_loss(
            cls.reshape([-1, classes]), paddle.to_tensor(onehot.reshape(-1, classes)), reduction="sum"
        ) / float(num_pos)
        if not pos_rows:
            return loss_cls
        rows = np.concatenate(pos_rows)
        gt = paddle.to_tensor(np.concatenate(pos_boxes).astype(np.float32))
        cell = rows % n
        centre = paddle.to_tensor(self.centres[cell])
        step = paddle.to_tensor(self.steps[cell][:, None])
        logits = paddle.gather(reg.reshape([b * n, -1]), paddle.to_tensor(rows)).reshape([-1, 4, self.reg_max + 1])
        dist = (F.softmax(logits, axis=-1) * paddle.arange(self.reg_max + 1, dtype="float32")).sum(-1)  # [p, 4]
        pred = paddle.concat([centre - dist[:, :2] * step, centre + dist[:, 2:] * step], axis=1)
        loss_giou = (1 - giou(pred, gt)).mean()
        target = paddle.concat([centre - gt[:, :2], gt[:, 2:] - centre], axis=1) / step  # sides in strides
        target = target.clip(0, self.reg_max - 0.01)
        left = target.floor()
        w_right = target - left
        lp = F.log_softmax(logits, axis=-1)
        take = paddle.nn.functional.one_hot(left.astype("int64"), self.reg_max + 1)
        take_r = paddle.nn.functional.one_hot(left.astype("int64") + 1, self.reg_max + 1)
        loss_dfl = -((lp * take).sum(-1) * (1 - w_right) + (lp * take_r).sum(-1) * w_right).mean()
        return loss_cls + 2.0 * loss_giou + 0.25 * loss_dfl


def predict_levels(model, x: np.ndarray, batch: int = 64) -> list[dict]:
    """The eval-mode outputs for every row of x, as one {output name: [1, …] array} per image, named as the
    export names them (score_<stride> then box_<stride>)."""
    model.eval()
    names = [f"score_{s}" for s in model.strides] + [f"box_{s}" for s in model.strides]
    out = []
    with paddle.no_grad():
        for i in range(0, len(x), batch):
            arrs = [o.numpy() for o in model(paddle.to_tensor(x[i : i + batch]))]
            out += [{n: a[j : j + 1] for n, a in zip(names, arrs)} for j in range(len(arrs[0]))]
    return out


def picodet_lite(num_classes: int = 10, width: int = 32, reg_max: int = 7, in_channels: int = 3) -> PicoDetLite:
    """The recipes' detector: `model: {python: "edgepipe.pipeline.models.detector:picodet_lite", kwargs: {…}}`."""
    return PicoDetLite(num_classes, width, reg_max, in_channels)


def is_detector(layer) -> bool:
    return all(hasattr(layer, k) for k in ("strides", "reg_max", "levels"))


def task_settings(layer) -> dict:
    """The detect task's settings the ONNX export carries, so the device decodes the file with no flags."""
    return {"head": "distribution", "strides": list(layer.strides), "reg_max": int(layer.reg_max)}


def detection_score(outputs: list[dict], targets: list, hw: tuple[int, int], settings: dict):
    """mAP@[.5:.95] (Score.value) and mAP@.5 (figures['map50']) of a detector's raw outputs (one {name: array}
    per image) against the images' boxes, decoded and scored by the runtime's detect task."""
    from types import SimpleNamespace

    from edgepipe.runtime.tasks.detect import Detect, coco_ground_truth

    task = Detect(settings)
    task.configure([SimpleNamespace(name=k, shape=v.shape) for k, v in outputs[0].items()], ["x"], {})
    preds = [task.decode(o, {"input_hw": tuple(hw)}) for o in outputs]
    return task.score(preds, coco_ground_truth(targets, int(outputs[0][task.score_outputs[0]].shape[-1])))


def layer_map(layer, x: np.ndarray, targets: list) -> dict:
    """{'map': mAP@[.5:.95], 'map50': mAP@.5} of a PicoDetLite on images x (N×C×H×W) with their boxes."""
    s = detection_score(predict_levels(layer, x), targets, tuple(x.shape[2:]), task_settings(layer))
    return {"map": float(s.value or 0.0), "map50": float(s.figures.get("map50", 0.0))}
