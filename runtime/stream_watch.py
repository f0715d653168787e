"""What the stream mode makes of each frame and when it raises an event. A classifier: its softmax, and
an event when the watched class scores above --threshold on --consecutive frames in a row (Watch). A
detector: its outputs decoded by the model's `detect` task (boxes in the frame's pixels), and an event
when a box of the watched class — score of at least --threshold, its centre inside the --zone polygon
where one is given — is found on --consecutive frames in a row (DetectWatch); the event carries the
boxes. Either clears on the first frame without it. With --snapshot DIR, the frame that raised an event is
written there as a JPEG (the watched boxes, their scores and the zone drawn with OpenCV) and the event names
it, so a webhook gets the picture's path with the alert."""

from __future__ import annotations

import json

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.images import Contract
from edgepipe.runtime.model.session import softmax


def classify_post(outputs: list, scale) -> tuple[np.ndarray, int]:
    """A classifier's post-processing: its first output's softmax, and the top class."""
    probs = softmax(outputs[0][0])
    return probs, int(probs.argmax())


class Snapshots:
    """The frames that raised events, as JPEGs in `folder` (made when missing), the watched boxes drawn."""

    def __init__(self, folder):
        from pathlib import Path

        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgepipeError(f"--snapshot {folder}: cannot make this folder ({exc.strerror})") from None
        self.written = 0

    def write(self, frame: np.ndarray, index: int, label: str, boxes=(), zone=None) -> str:
        """frame (BGR) with `boxes` (rows [x1, y1, x2, y2, score, …]) and `zone` drawn and `label` written
        on it, as event-<frame>.jpg, written whole (a temp file renamed); returns its path."""
        import os

        import cv2

        img = frame.copy()
        if zone is not None:
            cv2.polylines(img, [np.round(zone).astype(np.int32)], True, (0, 255, 255), 1)
        for b in boxes:
            x1, y1, x2, y2 = (int(round(float(v))) for v in b[:4])
            cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
            cv2.putText(img, f"{float(b[4]):.2f}", (x1, max(y1 - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 255), 1)
        cv2.putText(img, label, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
        path = self.folder / f"event-{index:06d}.jpg"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.jpg")
        if not cv2.imwrite(str(tmp), img):
            raise EdgepipeError(f"--snapshot {self.folder}: OpenCV could not write {path.name} there")
        os.replace(tmp, path)
        self.written += 1
        return str(path)


class Watch:
    """Raise when `cls` scores above `threshold` on `consecutive` frames in a row; clear below it."""

    def __init__(self, cls: int, name: str, threshold: float, consecutive: int, out, notify=None, snapshots=None):
        self.cls, self.name, self.threshold, self.k = cls, name, threshold, consecutive
        self.out, self.notify, self.snapshots = out, notify, snapshots
        self.run, self.active, self.events = 0, False, []

    def see(self, index: int, t: float, probs: np.ndarray, latency_ms: float, frame=None) -> None:
        score = float(probs[self.cls])
        shot = (frame, f"{self.name} {score:.2f}", (), None)
        self.step(score > self.threshold, index, t, latency_ms, {"score": round(score, 4)}, shot=shot)

    def step(
        self, hit: bool, index: int, t: float, latency_ms: float, figures: dict, tail: dict | None = None, shot=None
    ):
        """Count a frame that shows the watched thing (`hit`) or not; on a raise or a clear, write the event
        (its `figures` before the latency, `tail` after; a raise's snapshot from `shot`: frame, label, boxes,
        zone), keep it and post it to the webhook."""
        self.run = self.run + 1 if hit else 0
        raised, cleared = self.run >= self.k and not self.active, self.active and self.run == 0
        if not (raised or cleared):
            return
        self.active = raised
        ev = {"event": "raised" if raised else "cleared", "time_s": round(t, 4), "frame": index, "class": self.name}
        ev |= figures | {"latency_ms": round(latency_ms, 3)} | (tail or {})
        if raised and self.snapshots is not None and shot is not None and shot[0] is not None:
            ev["snapshot"] = self.snapshots.write(shot[0], index, *shot[1:])
        self.events.append(ev)
        self.out.write(json.dumps(ev) + "\n")
        self.out.flush()
        if self.notify is not None:
            self.notify.send(ev)


def watched_class(watch: str, classes: tuple, what: str = "model", hint: str = "give a class name or index"):
    """The watched class as (index, name): a name the model's classes hold, or an index."""
    if watch in classes:
        return classes.index(watch), watch
    if watch.isdigit():
        return int(watch), classes[int(watch)] if int(watch) < len(classes) else watch
    raise EdgepipeError(
        f"--watch {watch}: not a class of this {what} ({', '.join(map(str, classes)) or 'it names none'}); {hint}"
    )


def parse_zone(text: str) -> np.ndarray:
    """--zone "x1,y1 x2,y2 x3,y3 …" (frame pixels) as a K×2 float32 polygon of at least 3 points."""
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in text.split()]
    except ValueError:
        pts = []
    if len(pts) < 3 or any(len(p) != 2 for p in pts):
        raise EdgepipeError(
            f'--zone {text!r}: give a polygon of at least 3 points in frame pixels, "x1,y1 x2,y2 x3,y3 …"'
        )
    return np.asarray(pts, dtype=np.float32)


class DetectWatch(Watch):
    """Raise when class `cls` is detected (score ≥ threshold, centre inside `zone`) on `consecutive` frames in
    a row; clear on the first frame without it."""

    def __init__(
        self, cls: int, name: str, threshold: float, consecutive: int, out, zone=None, notify=None, snapshots=None
    ):
        super().__init__(cls, name, threshold, consecutive, out, notify, snapshots)
        self.zone = zone

    def matches(self, det: np.ndarray) -> np.ndarray:
        """The rows of an N×6 detection array [x1, y1, x2, y2, score, class] that count for this watch."""
        keep = (det[:, 5].astype(np.int64) == self.cls) & (det[:, 4] >= self.threshold)
        if self.zone is not None and keep.any():
            import cv2

            cx, cy = (det[:, 0] + det[:, 2]) / 2, (det[:, 1] + det[:, 3]) / 2
            inside = [cv2.pointPolygonTest(self.zone, (float(x), float(y)), False) >= 0 for x, y in zip(cx, cy)]
            keep &= np.asarray(inside, dtype=bool)
        return det[keep]

    def see(self, index: int, t: float, det: np.ndarray, latency_ms: float, frame=None) -> None:
        found = self.matches(det)
        figures = {
            "score": round(float(found[:, 4].max()), 4) if len(found) else 0.0,
            "boxes": [{"box": [round(float(v), 1) for v in r[:4]], "score": round(float(r[4]), 4)} for r in found[:20]],
        }
        tail = {"zone": self.zone.tolist()} if self.zone is not None else None
        shot = (frame, f"{self.name} x{len(found)}", found, self.zone)
        self.step(len(found) > 0, index, t, latency_ms, figures, tail, shot=shot)


def detector_post(session, task, input_hw: tuple[int, int]):
    """post(outputs, scale): the frame's detections (N×6 [x1, y1, x2, y2, score, class], in the frame's
    pixels: divided by its resize's scale (sy, sx)) and the class of the best one (None without any), for
    the stream's post-processing step."""
    names = [o.name for o in session.get_outputs()]

    def post(outputs: list, scale) -> tuple[np.ndarray, int | None]:
        det = task.decode(dict(zip(names, outputs)), {"scale": tuple(scale), "input_hw": tuple(input_hw)})
        return det, (int(det[0, 5]) if len(det) else None)

    return post


def frame_post(args, session, contract: Contract):
    """The frames' post-processing: a detector's boxes when the model's task (or --task) is detect, else the
    classifier's softmax."""
    from edgepipe.runtime.tasks import task_from_args

    task = task_from_args(session, getattr(args, "task", None), getattr(args, "task_opt", None))
    if task is None or task.name != "detect":
        if getattr(args, "zone", None):
            raise EdgepipeError("--zone: a region for a detector's boxes; this model's task is not detect")
        if task is not None and task.name != "classify":
            raise EdgepipeError(f"--stream: watches classifiers and detectors; this model's task is {task.name}")
        return classify_post
    return detector_post(session, task, contract.size)


def make_watch(args, contract: Contract, post, threshold: float, out, notifier):
    """The event rule: a class's softmax over --threshold (Watch), or a detected box of the class (DetectWatch);
    with --snapshot, the raising frames written as JPEGs."""
    shots = Snapshots(args.snapshot) if getattr(args, "snapshot", None) else None
    if post is classify_post:
        cls, name = watched_class(args.watch, tuple(contract.classes))
        return Watch(cls, name, threshold, args.consecutive or 1, out, notify=notifier, snapshots=shots)
    hint = "give a class index, or write its class names with `edgepipe contract --classes`"
    cls, name = watched_class(args.watch, tuple(contract.classes), "detector", hint)
    zone = parse_zone(args.zone) if getattr(args, "zone", None) else None
    return DetectWatch(cls, name, threshold, args.consecutive or 1, out, zone=zone, notify=notifier, snapshots=shots)
