"""train: train a model (the teacher) from scratch on the training split."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgepipe.pipeline.core.artifact import count_parameters, save_model
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.002
    augment_shift: int = 2  # random translation, pixels
    output: str = "teacher"
    label: str = "teacher"

    uses_data = True

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(0 <= self.augment_shift <= 8, "augment_shift", "must be between 0 and 8 pixels")

    def inputs(self, available) -> dict[str, str]:
        return {}

    def outputs(self) -> dict[str, str]:
        return {self.output: "paddle"}


def train_model(spec: ModelSpec, data, *, seed: int, epochs: int, batch_size: int, lr: float, augment_shift: int,
                desc: str, loss_fn=None, extra_parameters=None, make_loss=None):
    """Build `spec`, seed everything, train on the train split; returns (model, history, test_acc)."""
    from edgepipe.pipeline.training import evaluate, fit, seed_everything

    rng = seed_everything(seed)
    model = build_model(spec)
    if make_loss is not None:  # a loss that needs the freshly built model (e.g. feature hooks)
        loss_fn, extra_parameters = make_loss(model)
    x, y = data.split("train")
    history = fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, rng=rng, augment_shift=augment_shift,
                  loss_fn=loss_fn, extra_parameters=extra_parameters, desc=desc, val=data.split("val"))
    return model, history, evaluate(model, *data.split("test"))


@register_stage("train", TrainConfig)
def run_train(cfg: TrainConfig, ctx) -> StageResult:
    """Train a model from scratch (Adam, cosine LR, seeded)."""
    model, history, test_acc = train_model(
        cfg.model, ctx.data, seed=ctx.recipe.seed, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        augment_shift=cfg.augment_shift, desc=cfg.output,
    )
    params = count_parameters(model)
    save_model(ctx.out(cfg.output), model, cfg.model, meta={"label": cfg.label, "test_acc": test_acc})
    return StageResult(
        metrics={"test_acc": test_acc, "val_acc": history[-1]["val_acc"], "params": params, "history": history},
        artifacts=[ctx.artifact(cfg.output, "paddle", cfg.output, label=cfg.label, paddle_test_acc=test_acc, params=params)],
    )
