"""What a model is for, and how its outputs are judged: one Task per kind of model, behind one interface.

A task decodes a model's raw outputs into predictions (one per input sample), scores predictions
against labels with its own metric (top-1 accuracy, word accuracy, COCO mAP, hmean), and scores them
against the float model's predictions when there are no labels. A task's settings (a detector's
strides, an OCR model's dictionary) travel in the ONNX file's metadata under TASK_KEY, beside the
input contract, so the runner on the device decodes the file with nothing else.
A new task is one module that subclasses Task and registers itself with @register_task.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgepipe.devices import EdgepipeError

TASK_KEY = "edgepipe.task"
BUILTIN = ("classify", "detect", "ocr_rec", "text_det", "fidelity")  # modules of this package
_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)


def _load_builtin() -> None:
    for mod in BUILTIN:
        importlib.import_module(f"edgepipe.runtime.tasks.{mod}")


@dataclass
class Score:
    """A metric's value in [0, 1] (None where the task has none, e.g. fidelity), per-sample scores where
    the metric is a mean over samples (for paired tests), and the task's other figures."""

    value: float | None
    name: str
    per_sample: np.ndarray | None = None
    figures: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metric": self.name, "value": self.value, **self.figures}


class Task:
    """One kind of model. Subclasses set `name`, `metric` (what `Score.value` is, e.g. "word accuracy"),
    `options` (their settings and defaults) and implement decode and score."""

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""
    options: ClassVar[dict] = {}
    labels_hint: ClassVar[str] = ""  # what a labelled folder holds, for messages

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(self.options))
        if unknown:
            raise EdgepipeError(
                f"task {self.name}: unknown setting(s) {unknown}; it takes {sorted(self.options) or 'none'}"
            )
        self.settings = {**self.options, **settings}

    def configure(self, outputs: list, input_names: list[str], metadata: dict) -> None:
        """Check the settings against the model's outputs (onnxruntime NodeArgs) and fill in what they
        say (a detector's strides); raise one line naming the setting that cannot fit."""

    def decode(self, outputs: dict[str, np.ndarray], meta: dict):
        """One sample's outputs (each with its leading batch axis of 1) -> its prediction. `meta` holds
        the sample's "file", "scale" ((sy, sx) of its resize) and "input_hw"."""
        raise NotImplementedError

    def score(self, preds: list, labels: list) -> Score:
        """Predictions against labels (as read_labels gives them), in the same order."""
        raise NotImplementedError

    def against(self, preds: list, reference: list) -> Score:
        """Predictions against the float model's predictions on the same inputs (no labels needed)."""
        return self.score(preds, reference)

    def read_labels(self, folder: Path, files: list[Path]) -> list | None:
        """The labels of `files` from the folder's labels file; None when the folder has none."""
        return None

    def records(self, preds: list, files: list[Path]) -> list[dict]:
        """Predictions as JSON-ready records, one per file (the runner's --predictions)."""
        return [{"file": str(f), "prediction": p} for p, f in zip(preds, files)]

    def to_metadata(self) -> str:
        return json.dumps({"name": self.name, **{k: v for k, v in self.settings.items() if v is not None}})

    def metadata_props(self) -> dict[str, str]:
        """The ONNX metadata entries that carry this task to the device."""
        return {TASK_KEY: self.to_metadata()}


def get_task(name: str, settings: dict | None = None) -> Task:
    """The task named `name` with its settings; one line listing the known tasks for any other name."""
    _load_builtin()
    key = name.replace("_", "-")
    if key not in _TASKS:
        raise EdgepipeError(f"task {name!r}: unknown; choose one of {', '.join(sorted(_TASKS))}")
    return _TASKS[key](settings)


def task_of(session, override: str | None = None, settings: dict | None = None) -> Task:
    """The task a model's metadata names (with its settings), `override` when given (its settings
    kept if the metadata names the same task), else classify for a model of class scores and
    fidelity for any other."""
    meta = session.get_modelmeta().custom_metadata_map if hasattr(session, "get_modelmeta") else {}
    stored = {}
    if meta.get(TASK_KEY):
        try:
            stored = json.loads(meta[TASK_KEY])
        except ValueError:
            raise EdgepipeError(f"metadata {TASK_KEY}: not JSON ({meta[TASK_KEY][:60]!r})") from None
    stored_name = stored.pop("name", None)
    name = (override or stored_name or "").replace("_", "-") or None
    if override and stored_name and stored_name != name:  # another task's settings do not apply
        stored = {}
    if name is None:
        outs = session.get_outputs()
        scores = len(outs) >= 1 and len(outs[0].shape) == 2 and isinstance(outs[0].shape[1], int)
        name = "classify" if scores and outs[0].shape[1] > 1 else "fidelity"
    task = get_task(name, {**stored, **(settings or {})})
    task.configure(session.get_outputs(), [i.name for i in session.get_inputs()], dict(meta))
    return task


def task_from_args(session, task: str | None = None, opts: list[str] | None = None) -> Task | None:
    """The task of --task/--task-opt (over the model's own), the model's own when it names one, else None."""
    meta = session.get_modelmeta().custom_metadata_map if hasattr(session, "get_modelmeta") else {}
    if task is None and not opts and TASK_KEY not in meta:
        return None
    return task_of(session, task, parse_settings(opts))


def parse_settings(items: list[str] | None) -> dict:
    """--task-opt KEY=VALUE items as a dict (values read as JSON where they parse, else kept as text)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EdgepipeError(f"--task-opt {item!r}: give KEY=VALUE (e.g. score_threshold=0.3)")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def read_tsv(folder: Path, names: tuple[str, ...]) -> tuple[Path, dict[str, str]] | None:
    """The first of `names` found in `folder`: (its path, {image path as written: the rest of the line})
    for lines `path<TAB>rest` (blank lines and lines starting with # skipped)."""
    for n in names:
        p = Path(folder) / n
        if p.is_file():
            out = {}
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip() or line.startswith("#"):
                    continue
                key, sep, rest = line.partition("\t")
                if not sep:
                    raise EdgepipeError(f"{p}:{i}: expected 'image<TAB>label', found no tab")
                out[key.strip()] = rest
            return p, out
    return None


def match_files(path: Path, table: dict[str, str], folder: Path, files: list[Path]) -> list[str]:
    """Each file's entry in a labels table keyed by a path relative to the folder, or by its name alone
    (PaddleOCR's files name them under a data root); one line for an image the table lacks."""
    by_name = {Path(k).name: v for k, v in table.items()}
    out = []
    for f in files:
        rel = str(Path(f).relative_to(folder)) if Path(f).is_relative_to(folder) else Path(f).name
        if rel in table:
            out.append(table[rel])
        elif Path(f).name in by_name:
            out.append(by_name[Path(f).name])
        else:
            raise EdgepipeError(f"{path}: has no line for the image {rel}; label every image or remove it")
    return out
