"""A model's task metric on a folder of images: the images as one feed each (with what decoding needs
of each: its file, its resize's scale, the size fed), the model run and its outputs decoded by the task,
then scored against the folder's labels, or against a reference model's predictions without them."""

from __future__ import annotations

from pathlib import Path

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


class FolderJudge:
    """A task's metric of candidate models on a folder of images: against its labels where it has them,
    else against the reference (float) model's predictions. Called with a model file, it returns
    task_drop's figures (the metric, the reference's, the drop in points)."""

    def __init__(self, task: Task, folder: Path, contract, reference: Path, progress=None):
        from edgepipe.runtime.model.session import open_session

        session = open_session(reference)
        self.task, self.folder = task, Path(folder)
        self.feeds, self.metas, files, class_labels = sample_feeds(
            self.folder, contract, fd.signature(session), progress
        )
        self.labels = labels_for(task, self.folder, files, class_labels)
        self.ref_preds = predict(session, task, self.feeds, self.metas)

    def __call__(self, model: Path) -> dict:
        from edgepipe.runtime.model.session import open_session

        preds = predict(open_session(model), self.task, self.feeds, self.metas)
        return task_drop(self.task, self.ref_preds, preds, self.labels)
