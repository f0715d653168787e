"""Load a model folder: rebuild its source, replay its transforms, load its weights."""
from __future__ import annotations

from pathlib import Path

from edgepipe.pipeline.core.artifact import apply_transforms, load_weights, read_model_info
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


def load_model(folder: str | Path):
    """Rebuild the model from spec + transforms and load its weights; returns (layer, info)."""
    folder = Path(folder)
    info = read_model_info(folder)
    spec = ModelSpec.from_json(info["spec"])
    layer = apply_transforms(build_model(spec), info.get("transforms", []))
    return load_weights(layer, folder), info
