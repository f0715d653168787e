"""train: train a model (the teacher) on the training split: from scratch, or from the `weights:` of
its source (a built-in family, a paddle.vision zoo model or the user's own nn.Layer factory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepipe.pipeline.core.artifact import count_parameters, save_model
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.models.sources import LAYER_SOURCES, ModelSource, ModelSpec
from edgepipe.pipeline.stages.modelref import TakesModels, record


@dataclass(frozen=True)
class TrainConfig(TakesModels):
    model: ModelSource = field(default_factory=ModelSpec)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.002
    augment_shift: int = 2  # random translation, pixels
    output: str = "teacher"
    label: str = "teacher"

    uses_data = True
    trains = True  # every rank runs it under `edgepipe run --nproc` (core/distributed.py)

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(0 <= self.augment_shift <= 8, "augment_shift", "must be between 0 and 8 pixels")
        require(
            isinstance(self.model, LAYER_SOURCES),
            "model",
            "a saved graph (inference:, onnx:) cannot be trained; "
            "give its family:, zoo: or python: source (with weights: to start from trained weights)",
        )

    def inputs(self, available) -> dict[str, str]:
        return {}

    def model_refs(self) -> dict:
        return {"model": self.model}

    def outputs(self) -> dict[str, str]:
        return {self.output: "paddle"}


def train_model(
    spec: ModelSource,
    data,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    augment_shift: int,
    desc: str,
    loss_fn=None,
    extra_parameters=None,
    make_loss=None,
    base=None,
):
    """Build `spec` (with its weights: when given), seed everything, train on the train split;
    returns (model, history, test_acc)."""
    from edgepipe.pipeline.models.load import load_source
    from edgepipe.pipeline.stages.modelref import check_classes
    from edgepipe.pipeline.training import evaluate, fit, seed_everything

    rng = seed_everything(seed)
    model = load_source(spec, base, technique="train")
    check_classes(spec, model, data, "train")
    if make_loss is not None:  # a loss that needs the freshly built model (e.g. feature hooks)
        loss_fn, extra_parameters = make_loss(model)
    x, y = data.split("train")
    history = fit(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        rng=rng,
        augment=data.augmenter(augment_shift),
        loss_fn=loss_fn,
        extra_parameters=extra_parameters,
        desc=desc,
        val=data.split("val"),
    )
    return model, history, evaluate(model, *data.split("test"))


@register_stage("train", TrainConfig)
def run_train(cfg: TrainConfig, ctx) -> StageResult:
    """Train a model from scratch (Adam, cosine LR, seeded)."""
    model, history, test_acc = train_model(
        cfg.model,
        ctx.data,
        seed=ctx.recipe.seed,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        augment_shift=cfg.augment_shift,
        desc=cfg.output,
        base=ctx.base,
    )
    params = count_parameters(model)
    save_model(ctx.out(cfg.output), model, meta={"label": cfg.label, "test_acc": test_acc}, **record(ctx, cfg.model))
    return StageResult(
        metrics={"test_acc": test_acc, "val_acc": history[-1]["val_acc"], "params": params, "history": history},
        artifacts=[
            ctx.artifact(cfg.output, "paddle", cfg.output, label=cfg.label, paddle_test_acc=test_acc, params=params)
        ],
    )
