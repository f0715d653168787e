"""Load a model: a model folder (rebuild its source, replay its transforms, load its weights), a
source straight from a recipe (build it, load the user's `weights:` when given). A saved inference
model is never loaded into a Layer: its export is checked against Paddle Inference (export/paddle_infer.py)."""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.artifact import apply_transforms, load_state, load_weights, read_model_info
from edgepipe.pipeline.models.sources import ModelSource, build, parse_source, resolve


def load_model(folder: str | Path):
    """Rebuild the model from spec + transforms and load its weights; returns (layer, info)."""
    folder = Path(folder)
    info = read_model_info(folder)
    source = parse_source(info["spec"], f"{folder / 'model.json'}: spec")
    layer = apply_transforms(build(source), info.get("transforms", []))
    return load_weights(layer, folder), info


def load_source(
    source: ModelSource, base: Path | None = None, *, technique: str = "this stage", name_prefix: str | None = None
):
    """The Layer a recipe's `model:` mapping describes, with its `weights:` loaded when given (eval mode)."""
    layer = build(source, base, technique=technique, name_prefix=name_prefix)
    weights = getattr(source, "weights", None)
    if weights:
        load_state(
            layer,
            resolve(base, weights),
            "give weights: a state dict saved from this architecture (paddle.save(model.state_dict(), PATH))",
        )
    layer.eval()
    return layer


def check_fits(layer, input_shape: tuple[int, ...], classes: int, what: str) -> None:
    """One forward of zeros at the data's input shape: a model that cannot take it, or that gives
    fewer logits than the data has classes, is one line here rather than an error deep in training."""
    import paddle

    was_training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            out = layer(paddle.zeros([2, *input_shape]))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise EdgepipeError(
            f"{what}: the model cannot take the data's inputs of shape {list(input_shape)} "
            f"({first.strip()[:200]}); build it for that input, or use data of its shape"
        ) from None
    finally:
        if was_training:
            layer.train()
    if isinstance(out, (list, tuple)) and len(out) > 1 and all(len(o.shape) == 3 for o in out):
        return  # per-level [N, cells, width] maps: a dense detector's head (its task checks the rest)
    out = out[0] if isinstance(out, (list, tuple)) else out
    if len(out.shape) != 2 or out.shape[1] < classes:
        raise EdgepipeError(
            f"{what}: the model gives outputs of shape {list(out.shape)} for a batch of 2; a classifier "
            f"of the data's {classes} classes gives [2, {classes}] (set num_classes: {classes})"
        )
