"""onnxruntime sessions and inputs, with one-line errors for the files users get wrong."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgepipe.devices import EdgepipeError

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def usable_providers(requested: tuple[str, ...], strict: bool = True) -> dict:
    """Which of the requested execution providers this onnxruntime build offers.

    strict (providers the user named): any missing one is an error. Not strict (a device
    profile's preference order): missing ones are dropped *and reported*, never silently."""
    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    used = [p for p in requested if p in available]
    if missing and (strict or not used):
        raise EdgepipeError(
            f"execution provider {', '.join(missing)} is not in this onnxruntime build "
            f"(available: {', '.join(available)}); choose one of those"
        )
    return {"requested": list(requested), "used": used,
            "unavailable": [{"provider": p, "reason": "not in this onnxruntime build"} for p in missing],
            "build_offers": available}


def open_session(
    model: str | Path,
    threads: int = 1,
    inter_threads: int = 1,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    optimization: str = "all",
) -> ort.InferenceSession:
    path = Path(model)
    if not path.is_file():
        raise EdgepipeError(f"{path}: model file not found; pass the path of an .onnx file")
    usable_providers(providers, strict=True)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = _OPT_LEVELS[optimization]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises several pybind types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepipeError(
            f"{path}: onnxruntime cannot load this model ({first[:200]}); "
            "the file is truncated or not ONNX, re-export it"
        ) from None


def input_feed(session: ort.InferenceSession, batch: int = 1, seed: int = 0,
               dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
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
        dtype = _NP_TYPES.get(inp.type)
        if dtype is None:
            raise EdgepipeError(f"input '{inp.name}' has type {inp.type}, which the runner cannot generate")
        feed[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def check_feed(session: ort.InferenceSession, feed: dict[str, np.ndarray], source: str) -> None:
    """Fail with one line when given inputs do not match the model's signature."""
    for inp in session.get_inputs():
        if inp.name not in feed:
            raise EdgepipeError(f"{source}: no array named '{inp.name}' (has: {', '.join(feed)})")
        arr = feed[inp.name]
        if len(arr.shape) != len(inp.shape) or any(
            isinstance(d, int) and d > 0 and d != a for d, a in zip(inp.shape, arr.shape)
        ):
            raise EdgepipeError(
                f"{source}: '{inp.name}' has shape {list(arr.shape)}, model expects {inp.shape}"
            )


def resolve_feed(session: ort.InferenceSession, arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Map arrays onto the model's inputs ('x' stands for the input of a single-input model) and check them."""
    names = [i.name for i in session.get_inputs()]
    if len(names) == 1 and names[0] not in arrays and "x" in arrays:
        arrays = {names[0]: arrays["x"]}
    check_feed(session, arrays, source)
    return {n: arrays[n] for n in names}


def predict(session: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits for all of x, fed in batches through the model's single input."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def accuracy(session: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(session, x).argmax(axis=1) == y).mean())
