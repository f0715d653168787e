"""Knowledge-distillation losses.

Soft targets (Hinton et al.): T² · KL(softmax(t/T) ‖ softmax(s/T)), computed from the
student's *log*-probabilities (the seed fed probabilities to kl_div), mixed with hard-label
cross-entropy: loss = α · soft + (1 − α) · CE.
Feature hints (FitNets): a named student layer's output goes through a learned adapter
(Linear or 1×1 Conv, plus pooling to the teacher's spatial size) and is matched to a named
teacher layer's output with MSE, so shapes always agree (the seed compared 128-dim student
features with 10-dim teacher logits).
Also here: teacher logits cached on disk keyed by the teacher's hash, and deep mutual learning
(online distillation between peers trained together). How a stage fine-tunes with a teacher
is edgepipe.pipeline.stages.finetune.
"""

from __future__ import annotations

from edgepipe.devices import EdgepipeError


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    import paddle.nn.functional as F

    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, axis=-1), F.softmax(teacher_logits / t, axis=-1), reduction="batchmean"
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * (t * t) * soft + (1.0 - alpha) * hard


def sublayer(model, name: str, role: str):
    layers = dict(model.named_sublayers())
    if name not in layers:
        raise EdgepipeError(
            f"{role} has no layer named '{name}' (layers: {', '.join(n for n in layers if '.' not in n)})"
        )
    return layers[name]


class FeatureHint:
    """Capture a teacher and a student layer's outputs with hooks; adapt student → teacher shape."""

    def __init__(self, teacher, student, teacher_layer: str, student_layer: str, probe, index: int = 0):
        import paddle
        import paddle.nn as nn

        self.t_out, self.s_out = {}, {}
        self._hooks = [
            sublayer(teacher, teacher_layer, "teacher").register_forward_post_hook(
                lambda l, i, o: self.t_out.__setitem__("v", o)
            ),
            sublayer(student, student_layer, "student").register_forward_post_hook(
                lambda l, i, o: self.s_out.__setitem__("v", o)
            ),
        ]
        with paddle.no_grad():  # one probe batch to learn both shapes
            teacher.eval()
            student.eval()
            teacher(probe)
            student(probe)
        ts, ss = self.t_out["v"].shape, self.s_out["v"].shape
        if len(ts) != len(ss) or len(ts) not in (2, 4):
            raise EdgepipeError(
                f"feature hint: teacher '{teacher_layer}' gives {ts}, student '{student_layer}' gives {ss}; "
                "pick two dense layers or two conv layers"
            )
        # Own name space: it shares the student's optimizer, whose state is keyed by parameter
        # name, and models number their parameters from 0 (see models.builtin.build_model).
        with paddle.utils.unique_name.guard(f"hint{index}_adapter_"):
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


def freeze(model):
    """A teacher: eval mode, no gradients."""
    model.eval()
    for p in model.parameters():
        p.stop_gradient = True
    return model


def soft_target_loss(teacher, temperature: float, alpha: float, cached=None):
    """fit() loss: KD from a frozen teacher, or from its cached logits (rows of the train split)."""
    import paddle

    def loss(logits, xb, yb, idx):
        if cached is not None:
            t_logits = paddle.to_tensor(cached[idx])
        else:
            with paddle.no_grad():
                t_logits = teacher(xb)
        return kd_loss(logits, t_logits, yb, temperature, alpha)

    return loss


def model_fingerprint(folder) -> str:
    """sha256 over an artifact's model.json and weights: any change to the teacher changes it."""
    import hashlib
    from pathlib import Path

    from edgepipe.pipeline.core.artifact import weights_file

    h = hashlib.sha256()
    for path in (Path(folder) / "model.json", weights_file(folder) or Path(folder) / "model.safetensors"):
        h.update(path.read_bytes())
    return h.hexdigest()


def cached_teacher_logits(teacher, teacher_dir, x, data_fingerprint: str):
    """Teacher logits on `x`, computed once and kept in $EDGEPIPE_CACHE/teacher-logits/.

    The key hashes the teacher's files (`teacher_dir`, a model folder; or a str fingerprint of a
    teacher given as a source), the dataset fingerprint and x's shape, so a retrained or edited
    teacher (or other data) never reads stale logits. Returns (logits, {path, hit}).
    """
    import hashlib

    import numpy as np

    from edgepipe.devices.base.cache import cache_dir
    from edgepipe.pipeline.core import distributed
    from edgepipe.pipeline.training import predict_logits

    ident = teacher_dir if isinstance(teacher_dir, str) else model_fingerprint(teacher_dir)
    key = hashlib.sha256(f"{ident}|{data_fingerprint}|{x.shape}".encode()).hexdigest()[:24]
    folder = cache_dir() / "teacher-logits"
    path = folder / f"{key}.npy"
    logits = None
    if path.is_file():
        try:
            logits = np.load(path)
            logits = logits if logits.shape[0] == len(x) else None
        except (OSError, ValueError):
            pass  # a damaged entry is computed again
    if distributed.every(logits is not None):  # data-parallel: computed together unless every rank has it
        return logits, {"path": str(path), "hit": True}
    logits = predict_logits(teacher, x).astype(np.float32)
    if not distributed.is_main() and distributed.parallel() > 1:
        return logits, {"path": str(path), "hit": False}  # rank 0 keeps it
    try:
        from edgepipe.devices.base.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, logits)
    except OSError:
        return logits, {"path": None, "hit": False}  # read-only cache: still correct, just not kept
    return logits, {"path": str(path), "hit": False}


def build_cohort(peers, keep: int = 0):
    """Deep mutual learning: one Layer holding every peer, so one optimizer trains them all.

    forward() runs every peer, keeps their logits for the loss, and returns the kept peer's,
    so training accuracy and validation follow the network the recipe keeps.
    """
    import paddle.nn as nn

    class Cohort(nn.Layer):
        def __init__(self):
            super().__init__()
            for k, p in enumerate(peers):
                self.add_sublayer(f"peer{k}", p)
            self.keep = keep
            self.outputs = []

        def forward(self, x):
            self.outputs = [p(x) for p in self.children()]
            return self.outputs[self.keep]

    return Cohort()


def mutual_loss(cohort, temperature: float, alpha: float):
    """Σ_k mean_{j≠k} kd_loss(z_k, z_j detached): each peer learns from the others' soft predictions
    and the labels (Zhang et al. 2018); the peers' gradients stay separate because of the detach."""

    def loss(logits, xb, yb, idx):
        outs = cohort.outputs
        total = 0.0
        for k, z in enumerate(outs):
            terms = [kd_loss(z, o.detach(), yb, temperature, alpha) for j, o in enumerate(outs) if j != k]
            total = total + sum(terms) / len(terms)
        return total

    return loss
