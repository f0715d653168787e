"""The model folder: `model.json` (source spec + applied transforms + facts) beside `model.safetensors`
(weights in a format that cannot run code; a folder from before it holds `model.pdparams`, which is
still read, through the same safe loader: edgepipe.pipeline.core.weights).

A stage that changes the architecture (pruning, low-rank) appends a transform with its
parameters (kept channel indices, ranks); loading rebuilds the source (edgepipe.pipeline.models
builds it), replays the transforms in order (found through the registry), then loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import write_json_atomic
from edgepipe.pipeline.core.registry import transforms as known_transforms
from edgepipe.pipeline.core.weights import read_state, write_state

FORMAT = "edgepipe-model/1"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pdparams"  # written by edgepipe before safetensors; read, never written


def weights_file(folder: str | Path) -> Path | None:
    """The weights file of a model folder (model.safetensors, or an older folder's model.pdparams)."""
    folder = Path(folder)
    for name in (WEIGHTS, LEGACY_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    return None


def count_parameters(layer) -> int:
    return int(sum(int(p.size) for p in layer.parameters()))


def apply_transforms(layer, transforms: list[dict]):
    known = known_transforms() if transforms else {}
    for i, t in enumerate(transforms):
        fn = known.get(t.get("type"))
        if fn is None:
            raise EdgepipeError(
                f"transforms[{i}]: unknown transform '{t.get('type')}' (known: {', '.join(known) or 'none'}); "
                "the artifact was made by a newer edgepipe"
            )
        layer = fn(layer, **t.get("params", {}))
    return layer


def save_model(
    folder: str | Path,
    layer,
    spec,
    transforms: list[dict] | None = None,
    meta: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
    contract: dict | None = None,
) -> Path:
    """Write the weights and model.json. `spec` is what rebuilds the architecture: a source config
    (to_dict(), input_shape) or the mapping a model folder recorded (then give input_shape);
    `contract` is the input contract of the data it was trained on (size, channels, mean, std...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_state(folder / WEIGHTS, layer.state_dict())
    write_json_atomic(
        folder / "model.json",
        {
            "format": FORMAT,
            "spec": spec if isinstance(spec, dict) else spec.to_dict(),
            "transforms": list(transforms or []),
            "input_shape": list(input_shape or spec.input_shape),
            "params": count_parameters(layer),
            "meta": meta or {},
            **({"contract": contract} if contract else {}),
        },
    )
    return folder


def read_model_info(folder: str | Path) -> dict:
    folder = Path(folder)
    info_path = folder / "model.json"
    if not info_path.is_file():
        raise EdgepipeError(
            f"{info_path}: model description not found; pass a folder written by edgepipe (model.json + {WEIGHTS})"
        )
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgepipeError(
            f"{info_path}: not valid JSON; the artifact is damaged, re-run the stage that made it"
        ) from None
    if info.get("format") != FORMAT:
        raise EdgepipeError(f"{info_path}: format {info.get('format')!r} is not {FORMAT!r}")
    return info


def load_weights(layer, folder: str | Path):
    """Load the folder's weights into `layer` (already rebuilt and transformed); eval mode."""
    return load_state(layer, weights_file(folder) or Path(folder) / WEIGHTS, "re-run the stage that made this model")


def load_state(layer, params_path: Path, fix: str):
    """Load a state dict file (.safetensors, or a .pdparams read without running code) into `layer`,
    refusing any missing, unexpected, mis-shaped or non-finite entry (listing the first few) before
    touching the layer; eval mode. `fix` says what to do about a bad file."""
    import numpy as np

    params_path = Path(params_path)
    if not params_path.is_file():
        raise EdgepipeError(f"{params_path}: weights not found; {fix}")
    try:
        state = read_state(params_path)
    except EdgepipeError as exc:
        raise EdgepipeError(f"{exc}; {fix}") from None
    want = {k: list(v.shape) for k, v in layer.state_dict().items()}
    got = {k: list(getattr(v, "shape", [])) for k, v in state.items()}
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {got[k]} vs {want[k]}" for k in want if k in got and got[k] != want[k]]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {items[:3]}" + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shapes", shapes))
            if items
        ]
        raise EdgepipeError(f"{params_path}: weights do not match the model spec ({'; '.join(parts)}); {fix}")
    bad = [k for k, v in state.items() if v.dtype.kind in "fc" and not np.isfinite(v).all()]
    if bad:
        raise EdgepipeError(f"{params_path}: {len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); {fix}")
    layer.set_state_dict(state)
    layer.eval()
    return layer
