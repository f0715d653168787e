"""What the stages that change a model and then recover its accuracy (prune, lowrank, qat) share:
the checks of their fine-tuning fields, their inputs (the model, an optional teacher), and the
fine-tuning itself, distilled from the teacher when one is given (`previous` = the stage's input)."""

from __future__ import annotations

from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.stages.modelref import is_layer, load_ref, ref_inputs, trained_less


def teacher_inputs(model, teacher) -> dict[str, str]:
    """The inputs of a fine-tuning stage with an optional teacher: `previous` is the stage's own
    input model (no extra dependency); any other name is an artifact of an earlier stage (a source
    mapping, for either, depends on no stage)."""
    out = ref_inputs("model", model)
    if teacher is not None and teacher != "previous":
        out |= ref_inputs("teacher", teacher)
    return out


def finetune_refs(model, teacher) -> dict:
    """The models a fine-tuning stage names: its model, and its teacher unless `previous` or none."""
    return {"model": model, **({"teacher": teacher} if teacher not in (None, "previous") else {})}


def stage_teacher(ctx, teacher, model):
    """The teacher of a fine-tuning stage: `previous` is the stage's input model as it was before the
    stage changed it (unpruned, unfactorised, unquantized); any other name is that artifact (or
    source). Returns (frozen layer, label) or (None, None)."""
    from edgepipe.pipeline.compress.distill import freeze

    if teacher is None:
        return None, None
    layer, _, label = load_ref(ctx, model if teacher == "previous" else teacher, "fine-tuning with a teacher")
    return freeze(layer), label


def check_teacher(teacher) -> None:
    """A teacher named as a source must be one Paddle can run, with trained weights."""
    require(
        teacher is None or is_layer(teacher),
        "teacher",
        "a saved graph (inference:, onnx:) cannot teach in Paddle; "
        "give its family:, zoo: or python: source with weights:",
    )
    require(
        not trained_less(teacher),
        "teacher",
        "a teacher given as a source needs its trained weights: (or "
        "pretrained: true for a zoo model); untrained, it would teach noise",
    )


def judged(layer, test, ref) -> tuple[float, dict]:
    """The changed model's test accuracy and its fidelity against `ref` (the logits of the model before
    the stage), from one forward pass over the test split."""
    from edgepipe.pipeline.training import predict_logits
    from edgepipe.runtime.judge.fidelity import fidelity

    logits = predict_logits(layer, test[0])
    return float((logits.argmax(1) == test[1]).mean()), fidelity(ref, logits)


def stage_start(ctx, model, kind: str):
    """What a compressing stage starts from: (the run's seeded generator, the model, its info and label,
    the test split, the model's test logits — to judge the changed model by — and its test accuracy)."""
    from edgepipe.pipeline.training import predict_logits, seed_everything

    rng = seed_everything(ctx.recipe.seed)
    layer, info, label = load_ref(ctx, model, kind)
    test = ctx.data.split("test")
    ref = predict_logits(layer, test[0])
    return rng, layer, info, label, test, ref, float((ref.argmax(1) == test[1]).mean())


def stage_saved(cfg, ctx, layer, info, transforms, label, meta, metrics, acc_after, **artifact_meta):
    """Save a compressing stage's model (its transforms after the source's, the data's input contract) and
    its result: the metrics and one paddle artifact (label, Paddle test accuracy, fidelity, artifact_meta)."""
    from edgepipe.pipeline.core.artifact import save_model
    from edgepipe.pipeline.core.run import StageResult

    save_model(
        ctx.out(cfg.output_name),
        layer,
        info["spec"],
        [*(info.get("transforms") or []), *transforms],
        meta={"label": label, **meta},
        input_shape=info["input_shape"],
        contract=ctx.data.contract_record,
    )
    art = ctx.artifact(
        cfg.output_name,
        "paddle",
        cfg.output_name,
        label=label,
        paddle_test_acc=acc_after,
        fidelity=metrics["fidelity"],
        **artifact_meta,
    )
    return StageResult(metrics=metrics, artifacts=[art])


def check_fine_tune(cfg) -> None:
    """The checks every stage with a fine-tuning block (prune, lowrank, qat) shares: its fields
    epochs, batch_size, lr, teacher, temperature and alpha."""
    require(cfg.epochs >= 0, "epochs", "must be 0 or more")
    require(cfg.batch_size >= 1, "batch_size", "must be at least 1")
    require(cfg.lr > 0, "lr", "must be positive")
    require(cfg.temperature > 0, "temperature", "must be positive")
    require(0.0 <= cfg.alpha <= 1.0, "alpha", "must be between 0 and 1")
    require(cfg.teacher is None or cfg.epochs > 0, "teacher", "a teacher needs fine-tuning epochs > 0")
    require(
        is_layer(cfg.model),
        "model",
        f"{getattr(cfg.model, 'TAG', '')}: a saved graph cannot be changed in Paddle; "
        "give its python: or zoo: source with weights: (export, quantize and bench take saved graphs)",
    )
    check_teacher(cfg.teacher)


def fine_tune(cfg, ctx, layer, rng, desc: str, after_step=None):
    """Fine-tune `layer` for cfg.epochs on the train split — distilling from cfg.teacher when one is
    given (`previous` = the stage's input model) — for the stages that change a model and then
    recover its accuracy (prune, lowrank, qat). Returns (history, teacher label or None)."""
    from edgepipe.pipeline.compress.distill import soft_target_loss
    from edgepipe.pipeline.training import fit

    if not cfg.epochs:
        return [], None
    teacher, teacher_label = stage_teacher(ctx, cfg.teacher, cfg.model)
    loss = soft_target_loss(teacher, cfg.temperature, cfg.alpha) if teacher is not None else None
    x, y = ctx.data.split("train")
    history = fit(
        layer,
        x,
        y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        rng=rng,
        augment=ctx.data.augmenter(cfg.augment_shift),
        loss_fn=loss,
        desc=desc,
        val=ctx.data.split("val"),
        after_step=after_step,
    )
    return history, teacher_label
