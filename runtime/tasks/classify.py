"""classify: top-1 accuracy of the first output of class scores (N×classes); the labels are class
indices (an image folder's class subfolders); without labels, top-1 agreement with the float model."""

from __future__ import annotations

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.tasks.base import Score, Task, register_task


@register_task
class Classify(Task):
    name = "classify"
    metric = "top-1 accuracy"
    labels_hint = "class subfolders (root/<class>/*.png)"

    def configure(self, outputs, input_names, metadata) -> None:
        if not outputs or len(outputs[0].shape) != 2:
            shapes = ", ".join(f"{o.name} {o.shape}" for o in outputs)
            raise EdgepipeError(
                f"task classify: the model's first output is not N×classes ({shapes}); give --task fidelity "
                "(or the task it is for)"
            )

    def decode(self, outputs, meta):
        scores = next(iter(outputs.values()))
        return int(np.asarray(scores).reshape(len(scores), -1)[0].argmax())

    def score(self, preds, labels) -> Score:
        hit = (np.asarray(preds) == np.asarray(labels)).astype(np.float64)
        figures = {"samples": int(len(hit)), "classes": int(len(np.unique(np.asarray(labels))))}
        return Score(float(hit.mean()) if len(hit) else None, self.metric, hit, figures)

    def against(self, preds, reference) -> Score:
        s = self.score(preds, reference)
        return Score(s.value, "top-1 agreement", s.per_sample, s.figures)
