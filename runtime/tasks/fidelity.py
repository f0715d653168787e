"""fidelity: any other model. No decoding and no labels: each output against the float model's,
by SQNR (dB), cosine similarity and max |diff|; it has no metric a budget could be set in."""

from __future__ import annotations

import numpy as np

from edgepipe.runtime.tasks.base import Score, Task, register_task


@register_task
class Fidelity(Task):
    name = "fidelity"
    metric = "SQNR"

    def decode(self, outputs, meta):
        return {k: np.asarray(v) for k, v in outputs.items()}

    def score(self, preds, labels) -> Score:
        return Score(None, self.metric, None, {"note": "fidelity has no labels; it compares with the float model"})

    def against(self, preds, reference) -> Score:
        from edgepipe.runtime.judge.fidelity import channel_sums, sqnr_from_sums

        figures = {}
        for name in reference[0] if reference else {}:
            pairs = [(r[name], p[name]) for p, r in zip(preds, reference) if r[name].shape == p[name].shape]
            sig = err = 0.0
            cos, worst = [], 0.0
            for r, p in pairs:
                s1, e1 = channel_sums(r, p, per_channel=False)
                sig, err = sig + s1, err + e1
                a, b = r.ravel().astype(np.float64), p.ravel().astype(np.float64)
                n = np.linalg.norm(a) * np.linalg.norm(b)
                cos.append(float(a @ b / n) if n > 0 else float(np.array_equal(a, b)))
                worst = max(worst, float(np.abs(a - b).max()) if a.size else 0.0)
            figures[name] = {
                "sqnr_db": sqnr_from_sums(np.atleast_1d(sig), np.atleast_1d(err)) if pairs else None,
                "cosine": float(np.mean(cos)) if cos else None,
                "max_abs_diff": worst,
                "changed_size": len(preds) - len(pairs),
            }
        measured = [f["sqnr_db"] for f in figures.values() if f["sqnr_db"] is not None]
        return Score(None, self.metric, None, {"outputs": figures, "sqnr_db": min(measured) if measured else None})
