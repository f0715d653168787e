"""Checks of arrays given as model inputs (numeric, rows, finite; matching the model's signature), and
random inputs from a signature for timing. Work on anything with onnxruntime's `get_inputs()`."""

from __future__ import annotations

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.feeds import NP_TYPES


def input_feed(session, batch: int = 1, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random inputs from the model's input signature. A dynamic dim named in `dims` takes that
    value; any other dynamic first dim becomes `batch`."""
    rng = np.random.default_rng(seed)
    dims = dims or {}
    feed = {}
    for inp in session.get_inputs():
        shape = []
        for i, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in dims:
                shape.append(dims[dim])
            elif i == 0:
                shape.append(batch)
            else:
                raise EdgepipeError(
                    f"input '{inp.name}' has dynamic dimension {i} ({dim!r}); "
                    f"give it a value with --dim {dim or 'NAME'}=VALUE, or pass real inputs with --inputs FILE.npz"
                )
        dtype = NP_TYPES.get(inp.type)
        if dtype is None:
            raise EdgepipeError(f"input '{inp.name}' has type {inp.type}, which the runner cannot generate")
        feed[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def check_feed(session, feed: dict[str, np.ndarray], source: str) -> None:
    """Fail with one line when given inputs do not match the model's signature."""
    for inp in session.get_inputs():
        if inp.name not in feed:
            raise EdgepipeError(f"{source}: no array named '{inp.name}' (has: {', '.join(feed)})")
        arr = feed[inp.name]
        if len(arr.shape) != len(inp.shape) or any(
            isinstance(d, int) and d > 0 and d != a for d, a in zip(inp.shape, arr.shape)
        ):
            raise EdgepipeError(f"{source}: '{inp.name}' has shape {list(arr.shape)}, model expects {inp.shape}")


def check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Inputs a model can be measured on: numeric, at least one row, every float finite. A NaN input
    would be measured as if it were data (and scored: NaN logits argmax to class 0)."""
    for k, v in arrays.items():
        if v.dtype.kind not in "fiub":
            raise EdgepipeError(
                f"{source}: '{k}' has dtype {v.dtype}, not a numeric array; save numbers (float32 for images)"
            )
        if v.ndim == 0 or v.shape[0] == 0:
            raise EdgepipeError(f"{source}: '{k}' has shape {list(v.shape)}: no rows; give at least one input")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            bad = int(np.size(v) - np.isfinite(v).sum())
            raise EdgepipeError(f"{source}: '{k}' holds {bad} NaN or infinite values; inputs must be finite numbers")
