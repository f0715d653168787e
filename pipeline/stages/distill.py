"""distill: offline knowledge distillation of a trained teacher into a smaller student,
with the same student trained from scratch (same seed, epochs, data) as the baseline."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgepipe.pipeline.artifact import load_model, save_model
from edgepipe.pipeline.config import require
from edgepipe.pipeline.models import ModelSpec, count_parameters
from edgepipe.pipeline.registry import register_stage
from edgepipe.pipeline.run import StageResult
from edgepipe.pipeline.stages.train import train_model


@dataclass(frozen=True)
class FeatureHintConfig:
    teacher_layer: str = "fc1"
    student_layer: str = "fc1"
    weight: float = 0.1

    def __post_init__(self):
        require(self.weight >= 0, "weight", "must be non-negative")


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = "teacher"
    student: ModelSpec = field(default_factory=lambda: ModelSpec(conv=(16, 32), fc=(128,)))
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target term; 1 - alpha goes to hard-label CE
    feature: FeatureHintConfig | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.002
    augment_shift: int = 2
    output: str = "student"
    baseline: str | None = "student_scratch"  # also train the student without a teacher; null to skip

    uses_data = True

    def __post_init__(self):
        require(self.temperature > 0, "temperature", "must be positive")
        require(0.0 <= self.alpha <= 1.0, "alpha", "must be between 0 and 1")
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(self.baseline != self.output, "baseline", "must differ from output")

    def inputs(self, available) -> dict[str, str]:
        return {"teacher": self.teacher}

    def outputs(self) -> dict[str, str]:
        out = {self.output: "paddle"}
        if self.baseline:
            out[self.baseline] = "paddle"
        return out


@register_stage("distill", DistillConfig)
def run_distill(cfg: DistillConfig, ctx) -> StageResult:
    """Offline KD (T²·KL on log-probabilities + α-mixed CE, optional feature hint) plus a from-scratch baseline."""
    import paddle

    from edgepipe.pipeline.distill import FeatureHint, kd_loss

    teacher, _ = load_model(ctx.path_of(cfg.teacher))
    teacher.eval()
    for p in teacher.parameters():
        p.stop_gradient = True
    data, seed = ctx.data, ctx.recipe.seed
    common = dict(seed=seed, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, augment_shift=cfg.augment_shift)
    hint_info = {}

    def make_loss(student):
        hint = None
        if cfg.feature is not None:
            probe = paddle.to_tensor(data.split("val")[0][:2])
            hint = FeatureHint(teacher, student, cfg.feature.teacher_layer, cfg.feature.student_layer, probe)
            hint_info.update(hint.shapes)

        def loss(logits, xb, yb):
            with paddle.no_grad():
                t_logits = teacher(xb)
            value = kd_loss(logits, t_logits, yb, cfg.temperature, cfg.alpha)
            if hint is not None:
                value = value + cfg.feature.weight * hint.loss()
            return value

        return loss, (list(hint.adapter.parameters()) if hint else None)

    student, hist, acc = train_model(cfg.student, data, desc=cfg.output, make_loss=make_loss, **common)
    params = count_parameters(student)
    teacher_label = ctx.artifacts[cfg.teacher].meta.get("label", cfg.teacher)
    save_model(ctx.out(cfg.output), student, cfg.student, meta={"label": "student (distilled)", "teacher": teacher_label})
    metrics = {"student": {"test_acc": acc, "val_acc": hist[-1]["val_acc"], "params": params, "history": hist}}
    if hint_info:
        metrics["feature_hint"] = hint_info
    arts = [ctx.artifact(cfg.output, "paddle", cfg.output, label="student (distilled)", paddle_test_acc=acc, params=params)]
    if cfg.baseline:
        base, bhist, bacc = train_model(cfg.student, data, desc=cfg.baseline, **common)
        save_model(ctx.out(cfg.baseline), base, cfg.student, meta={"label": "student (from scratch)"})
        metrics["baseline"] = {"test_acc": bacc, "val_acc": bhist[-1]["val_acc"], "params": params, "history": bhist}
        arts.append(ctx.artifact(cfg.baseline, "paddle", cfg.baseline, label="student (from scratch)", paddle_test_acc=bacc, params=params))
    return StageResult(metrics=metrics, artifacts=arts)
