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
    if data.task == "detect":
        return train_detector(model, data, rng=rng, epochs=epochs, batch_size=batch_size, lr=lr, desc=desc)
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


def train_detector(model, data, *, rng, epochs: int, batch_size: int, lr: float, desc: str):
    """Train a detector (models/detector.py) on detection data: its loss on the boxes, val mAP after each epoch;
    returns (model, history, {'map', 'map50'} on the test split). No augmentation: shifting pixels would
    have to shift the boxes too."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.models.detector import DetectionLoss, is_detector, layer_map
    from edgepipe.pipeline.training import fit

    if not is_detector(model):
        raise EdgepipeError(
            "train: the data holds boxes (detection frames) but the model is not a detector; give "
            'model: {python: "edgepipe.pipeline.models.detector:picodet_lite"}'
        )
    x, rows = data.split("train")
    xv, rv = data.split("val")
    loss = DetectionLoss(data.targets, tuple(data.input_shape[1:]), model.strides, model.reg_max)

    def val(m):
        return {f"val_{k}": v for k, v in layer_map(m, xv, [data.targets[r] for r in rv]).items()}

    history = fit(
        model, x, rows, epochs=epochs, batch_size=batch_size, lr=lr, rng=rng, loss_fn=loss, desc=desc,
        accuracy=False, val=val,
    )  # fmt: skip
    xt, rt = data.split("test")
    return model, history, layer_map(model, xt, [data.targets[r] for r in rt])


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
    if isinstance(test_acc, dict):  # a detector: mAP@[.5:.95] and mAP@.5 on the test split
        return _detector_result(cfg, ctx, model, history, test_acc, params)
    save_model(ctx.out(cfg.output), model, meta={"label": cfg.label, "test_acc": test_acc}, **record(ctx, cfg.model))
    return StageResult(
        metrics={"test_acc": test_acc, "val_acc": history[-1]["val_acc"], "params": params, "history": history},
        artifacts=[
            ctx.artifact(cfg.output, "paddle", cfg.output, label=cfg.label, paddle_test_acc=test_acc, params=params)
        ],
    )


def _detector_result(cfg: TrainConfig, ctx, model, history, test: dict, params: int) -> StageResult:
    from edgepipe.pipeline.models.detector import task_settings

    task = {"name": "detect", "settings": task_settings(model)}
    meta = {"label": cfg.label, "test_map": test["map"], "test_map50": test["map50"], "task": task}
    save_model(ctx.out(cfg.output), model, meta=meta, **record(ctx, cfg.model))
    metrics = {"task": "detect", "test_map": test["map"], "test_map50": test["map50"], "params": params}
    metrics |= {"val_map50": history[-1].get("val_map50"), "history": history}
    facts = {k: v for k, v in metrics.items() if k not in ("history", "task")}
    art = ctx.artifact(cfg.output, "paddle", cfg.output, label=cfg.label, task=task, **facts)
    return StageResult(metrics=metrics, artifacts=[art])
