"""onnxruntime sessions and inputs, with one-line errors for the files users get wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.checks import check_feed
from edgepipe.runtime.inputs.feeds import NP_TYPES
from edgepipe.runtime.model.modelfile import check_model_file

# and ORT_DISABLE_TELEMETRY, set by edgepipe.devices.base.telemetry before onnxruntime loads
ort.disable_telemetry_events()


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

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
    return {
        "requested": list(requested),
        "used": used,
        "unavailable": [{"provider": p, "reason": "not in this onnxruntime build"} for p in missing],
        "build_offers": available,
    }


def open_session(
    model: str | Path,
    threads: int = 1,
    inter_threads: int = 1,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    optimization: str = "all",
    spin: bool = True,
) -> ort.InferenceSession:
    """spin=False stops the worker threads busy-waiting after each run (onnxruntime's default keeps
    them spinning, the fastest for back-to-back runs and a waste of a core between camera frames)."""
    path = check_model_file(model).path  # before onnxruntime reads a byte of it or its external data
    usable_providers(providers, strict=True)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = _OPT_LEVELS[optimization]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises several pybind types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepipeError(
            f"{path}: onnxruntime cannot load this model ({first[:200]}); "
            "the file is truncated or not ONNX, re-export it"
        ) from None


def resolve_feed(session: ort.InferenceSession, arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Map arrays onto the model's inputs ('x' stands for the input of a single-input model) and check
    them; float arrays are cast to the float type the model takes (float64 files are common)."""
    names = [i.name for i in session.get_inputs()]
    if len(names) == 1 and names[0] not in arrays and "x" in arrays:
        arrays = {names[0]: arrays["x"]}
    elif "x" in arrays and "x" not in names:  # a detector's image; its im_shape / scale_factor follow from it
        from edgepipe.runtime.inputs.feeds import DERIVED, derived_inputs, image_input, signature

        spec = signature(session)
        image = image_input(spec)
        if image is not None and all(n == image.name or n in DERIVED or n in arrays for n in names):
            x = arrays["x"].astype(image.dtype, copy=False)
            arrays = {image.name: x, **{k: v for k, v in arrays.items() if k != "x"}}
            arrays |= {k: v for k, v in derived_inputs(spec, x).items() if k not in arrays}
    check_feed(session, arrays, source)
    out = {}
    for inp in session.get_inputs():
        arr, want = arrays[inp.name], NP_TYPES.get(inp.type)
        if want is not None and arr.dtype != want:
            if arr.dtype.kind != "f" or np.dtype(want).kind != "f":
                raise EdgepipeError(
                    f"{source}: '{inp.name}' is {arr.dtype}, the model takes {np.dtype(want).name}; "
                    "save the inputs in that type"
                )
            arr = arr.astype(want)
        out[inp.name] = arr
    return out


def predict(session: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits for all of x, fed in batches through the model's single input."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the classes), shifted by the maximum so that it cannot overflow."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def accuracy(session: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(session, x).argmax(axis=1) == y).mean())
