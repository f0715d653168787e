"""Knowledge-distillation losses.

Soft targets (Hinton et al.): T² · KL(softmax(t/T) ‖ softmax(s/T)), computed from the
student's *log*-probabilities (the seed fed probabilities to kl_div), mixed with hard-label
cross-entropy: loss = α · soft + (1 − α) · CE.
Feature hints (FitNets): a named student layer's output goes through a learned adapter
(Linear or 1×1 Conv, plus pooling to the teacher's spatial size) and is matched to a named
teacher layer's output with MSE, so shapes always agree (the seed compared 128-dim student
features with 10-dim teacher logits).
"""
from __future__ import annotations

from edgepipe.devices import EdgepipeError


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    import paddle.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, axis=-1), F.softmax(teacher_logits / t, axis=-1), reduction="batchmean")
    hard = F.cross_entropy(student_logits, labels)
    return alpha * (t * t) * soft + (1.0 - alpha) * hard


def sublayer(model, name: str, role: str):
    layers = dict(model.named_sublayers())
    if name not in layers:
        raise EdgepipeError(f"{role} has no layer named '{name}' (layers: {', '.join(n for n in layers if '.' not in n)})")
    return layers[name]


class FeatureHint:
    """Capture a teacher and a student layer's outputs with hooks; adapt student → teacher shape."""

    def __init__(self, teacher, student, teacher_layer: str, student_layer: str, probe):
        import paddle
        import paddle.nn as nn

        self.t_out, self.s_out = {}, {}
        self._hooks = [
            sublayer(teacher, teacher_layer, "teacher").register_forward_post_hook(lambda l, i, o: self.t_out.__setitem__("v", o)),
            sublayer(student, student_layer, "student").register_forward_post_hook(lambda l, i, o: self.s_out.__setitem__("v", o)),
        ]
        with paddle.no_grad():  # one probe batch to learn both shapes
            teacher.eval()
            student.eval()
            teacher(probe)
            student(probe)
        ts, ss = self.t_out["v"].shape, self.s_out["v"].shape
        if len(ts) != len(ss) or len(ts) not in (2, 4):
            raise EdgepipeError(f"feature hint: teacher '{teacher_layer}' gives {ts}, student '{student_layer}' gives {ss}; "
                                "pick two dense layers or two conv layers")
        # Own name space: it shares the student's optimizer, whose state is keyed by parameter
        # name, and models number their parameters from 0 (see models.build_model).
        with paddle.utils.unique_name.guard("hint_adapter_"):
            if len(ts) == 2:
                self.adapter = nn.Linear(ss[1], ts[1])
            else:
                self.adapter = nn.Sequential(nn.Conv2D(ss[1], ts[1], 1), nn.AdaptiveAvgPool2D(ts[2:]))
        self.shapes = {"teacher": list(ts), "student": list(ss)}

    def loss(self):
        import paddle.nn.functional as F

        return F.mse_loss(self.adapter(self.s_out["v"]), self.t_out["v"].detach())

    def remove(self):
        for h in self._hooks:
            h.remove()
