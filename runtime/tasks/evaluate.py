"""A model's task metric on a folder of images: the images as one feed each (with what decoding needs
of each: its file, its resize's scale, the size fed), the model run and its outputs decoded by the task,
then scored against the folder's labels, or against a reference model's predictions without them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs import feeds as fd
from edgepipe.runtime.tasks.base import Task


def sample_feeds(root: Path, contract, spec: list, progress=None) -> tuple[list[dict], list[dict], list[Path], object]:
    """(one feed per image, in file order; each image's meta; the files; class-folder labels or None)."""
    feeds, scales, labels, files = fd.image_feeds(root, contract, spec, progress)
    image = fd.image_input(spec)
    metas = []
    for feed, scale, f in zip(feeds, scales, files):
        x = feed[image.name][0]
        hw = x.shape[1:3] if contract.layout == "NCHW" else x.shape[0:2]
        metas.append({"file": str(f), "scale": scale, "input_hw": tuple(int(v) for v in hw)})
    return feeds, metas, files, labels


def predict(session, task: Task, feeds: list[dict], metas: list[dict]) -> list:
    """The task's prediction for each feed of one sample (the session's outputs by name, decoded)."""
    names = [o.name for o in session.get_outputs()]
    return [task.decode(dict(zip(names, session.run(None, f))), m) for f, m in zip(feeds, metas)]


def labels_for(task: Task, root: Path, files: list[Path], class_labels) -> list | dict | None:
    """The folder's labels as the task reads them: class folders for classify, its labels file for others."""
    if task.name == "classify":
        return None if class_labels is None else [int(v) for v in class_labels]
    return task.read_labels(Path(root), files)


def scored(task: Task, preds: list, labels=None, reference: list | None = None) -> dict:
    """The task's metric for `preds`: against labels when there are any, else against `reference`."""
    if labels is not None:
        s = task.score(preds, labels)
        how = "labels"
    elif reference is not None:
        s = task.against(preds, reference)
        how = "float model"
    else:
        return {"task": task.name, "metric": task.metric, "value": None, "against": None}
    return {"task": task.name, "against": how, **s.to_dict()}


def task_drop(task: Task, ref_preds: list, preds: list, labels=None) -> dict:
    """A candidate's metric against the float model's, in points: with labels the two scores' difference,
    without them 100 − the candidate's score against the float model's predictions (which score
    100 against themselves)."""
    got = scored(task, preds, labels, ref_preds)
    if got["value"] is None:
        return got | {"drop_points": None}
    if labels is not None:
        ref = scored(task, ref_preds, labels)
        return got | {"reference_value": ref["value"], "drop_points": 100.0 * (ref["value"] - got["value"])}
    return got | {"reference_value": 1.0, "drop_points": 100.0 * (1.0 - got["value"])}


def summary_line(r: dict) -> str:
    """'word accuracy 83.33% (edit similarity 0.95) on 24 samples, against labels'."""
    if r.get("value") is None:
        return f"task {r['task']}: no metric" + (f" (SQNR {r['sqnr_db']:.1f} dB)" if r.get("sqnr_db") else "")
    extra = [
        f"{k.replace('_', ' ')} {v:.3f}"
        for k, v in r.items()
        if k in ("edit_similarity", "map50", "precision", "recall") and v is not None
    ]
    n = r.get("samples")
    return (
        f"{r['metric']} {100 * r['value']:.2f}%"
        + (f" ({', '.join(extra)})" if extra else "")
        + (f" on {n} samples" if n else "")
        + f", against the {r['against']}"
    )


@dataclass
class ImageSet:
    """A folder of images decoded once for a task: one feed per image in file order, what decoding needs of
    each (metas), and the folder's labels as the task reads them (None without)."""

    folder: Path
    feeds: list[dict]
    metas: list[dict]
    labels: object

    @classmethod
    def read(cls, task: Task, folder: Path, contract, spec: list, progress=None) -> "ImageSet":
        folder = Path(folder)
        feeds, metas, files, class_labels = sample_feeds(folder, contract, spec, progress)
        return cls(folder, feeds, metas, labels_for(task, folder, files, class_labels))


class FolderJudge:
    """A task's metric of candidate models on a folder of images: against its labels where it has them,
    else against the reference (float) model's predictions. Called with a model file, it returns
    task_drop's figures (the metric, the reference's, the drop in points). `images`: the folder already
    decoded by the reference's signature (ImageSet.read), else it is read here."""

    def __init__(self, task: Task, folder: Path, contract, reference: Path, progress=None, images=None):
        from edgepipe.runtime.model.session import open_session

        session = open_session(reference)
        self.task = task
        self.images = images or ImageSet.read(task, folder, contract, fd.signature(session), progress)
        self.ref_preds = predict(session, task, self.images.feeds, self.images.metas)

    def __call__(self, model: Path) -> dict:
        from edgepipe.runtime.model.session import open_session

        preds = predict(open_session(model), self.task, self.images.feeds, self.images.metas)
        return task_drop(self.task, self.ref_preds, preds, self.images.labels)


class CandidateScores:
    """A task's metric for several sessions of one model family (deploy's candidates) on one folder of
    images: the feeds decoded once (by the first session's input signature and the contract), each
    session's predictions kept, then every candidate scored against the folder's labels, against the
    reference's predictions (the first candidate that ran in fp32) and, for a bf16/fp16 run, against
    its own file's fp32 run."""

    def __init__(self, first_session, task_name: str | None, settings: dict, images: Path, contract):
        from edgepipe.runtime.tasks.base import task_of

        self.task = task_of(first_session, task_name, settings)
        self.images = ImageSet.read(self.task, images, contract, fd.signature(first_session))
        if not self.images.feeds:
            raise EdgepipeError(f"{self.images.folder}: no images to score the candidates on")
        self.preds: dict[str, list] = {}

    def timing_feed(self) -> dict:
        return self.images.feeds[0]

    def add(self, key: str, session) -> None:
        self.preds[key] = predict(session, self.task, self.images.feeds, self.images.metas)

    def scores(self, ran: dict[str, dict]) -> dict[str, dict]:
        """{key: {"task": the metric (labels), "vs_reference": value, "vs_own_fp32": value or None}} with
        `ran` {key: {"model", "backend", "precision"}} telling which runs are fp32 and of which file."""
        keys = list(self.preds)
        fp32 = [k for k in keys if ran[k]["precision"] == "fp32"]
        ref = (fp32 or keys)[0]
        out = {}
        for k in keys:
            base = None
            if ran[k]["precision"] in ("bf16", "fp16"):
                same = [b for b in fp32 if ran[b]["model"] == ran[k]["model"]]
                base = next((b for b in same if ran[b]["backend"] == ran[k]["backend"]), same[0] if same else None)
            out[k] = {
                "task": scored(self.task, self.preds[k], self.images.labels, self.preds[ref]),
                "vs_reference": 1.0 if k == ref else self.task.against(self.preds[k], self.preds[ref]).value,
                "vs_own_fp32": None if base is None else self.task.against(self.preds[k], self.preds[base]).value,
            }
        return out
