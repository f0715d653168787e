"""How close a model runs to the machine's limit: achieved MAC/s against the host's measured peak.

The peak is measured once per host, onnxruntime version and thread count with a GEMM through
onnxruntime itself (MatMul for fp32, MatMulInteger u8×s8 for int8: the kernels conv and matmul
layers end up in), and cached in $EDGEPIPE_CACHE (default ~/.cache/edgepipe).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from edgepipe.runtime.atomic import write_json_atomic

KERNELS = Path(__file__).with_name("kernels")
INT8_OPS = (b"QLinearConv", b"QLinearMatMul", b"MatMulInteger", b"ConvInteger", b"DequantizeLinear")


def cache_dir() -> Path:
    if os.environ.get("EDGEPIPE_CACHE"):
        return Path(os.environ["EDGEPIPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepipe"


def gemm_peak(precision: str, threads: int, size: int = 512, seconds: float = 0.5) -> float:
    """Best MAC/s of a size³ GEMM through onnxruntime on the CPU (best of repeated runs for `seconds`)."""
    from edgepipe.runtime.session import open_session

    session = open_session(KERNELS / f"gemm_{precision}.onnx", threads=threads)
    rng = np.random.default_rng(0)
    if precision == "fp32":
        a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    else:
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    feed = {"A": a, "B": b}
    session.run(None, feed)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        best = min(best, time.perf_counter_ns() - t0)
    return size**3 / (best / 1e9)


def host_peaks(host: dict, threads: int, refresh: bool = False) -> dict:
    """{'fp32': MAC/s, 'int8': MAC/s, ...} for this host, measured once and cached."""
    import onnxruntime

    key_src = json.dumps([host.get("arch"), host.get("cpu_model"), host.get("flags"), onnxruntime.__version__, threads])
    path = cache_dir() / f"gemm-peak-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.json"
    if path.is_file() and not refresh:
        try:
            cached = json.loads(path.read_text())
            if {"fp32", "int8"} <= cached.keys():
                return cached | {"cached": str(path)}
        except (OSError, ValueError):
            pass  # a damaged cache entry is measured again
    peaks = {"fp32": gemm_peak("fp32", threads), "int8": gemm_peak("int8", threads), "threads": threads,
             "method": "best of 512×512×512 GEMM in onnxruntime (MatMul fp32, MatMulInteger u8×s8)",
             "onnxruntime": onnxruntime.__version__}
    try:
        write_json_atomic(path, peaks)
    except OSError:
        pass  # a read-only home still gets the figures, just not cached
    return peaks | {"cached": None}


def file_precision(model: Path) -> str:
    """What onnxruntime runs a file in: int8 when it holds integer kernels or Q/DQ pairs, else the
    float type of most of its stored weights."""
    from edgepipe.runtime.modelfile import check_model_file

    if any(op in model.read_bytes() for op in INT8_OPS):
        return "int8"
    return check_model_file(model).float_precision


def model_costs(model: Path, macs: int | None = None) -> tuple[int | None, str, str]:
    """(MACs at batch 1, 'int8' or 'fp32', where the MAC count came from). Counting needs the `onnx`
    package (the workstation has it); on a device without it, pass the count (--macs)."""
    precision = "int8" if any(op in model.read_bytes() for op in INT8_OPS) else "fp32"
    if macs is not None:
        return macs, precision, "given"
    try:
        import onnx  # noqa: F401  (analysis imports it lazily; check here)

        from edgepipe.runtime.cost import count_macs, load_onnx
    except ImportError:
        return None, precision, "unknown: the onnx package is not installed here; pass --macs N (from the pipeline's report)"
    from edgepipe.devices import EdgepipeError

    try:
        return int(count_macs(load_onnx(model))), precision, "counted from the graph"
    except EdgepipeError as exc:
        return None, precision, f"unknown: {exc}; pass --macs N"


def roofline(macs: int | None, precision: str, batch: int, mean_ms: float, peaks: dict) -> dict:
    """Achieved MAC/s against the peak of the precision that ran (none yet for bf16 or fp16: the
    fraction is then left out rather than compared with the wrong kernel)."""
    out = {"macs_per_inference": macs, "precision": precision, "peak_macs_per_s": peaks.get(precision),
           "peaks": {k: peaks[k] for k in ("fp32", "int8")}, "peak_method": peaks["method"]}
    if macs and peaks.get(precision) is None:
        out["note"] = f"no {precision} GEMM peak is measured on this host yet; achieved MAC/s only"
        out["achieved_macs_per_s"] = macs * batch / (mean_ms / 1e3)
    elif macs:
        achieved = macs * batch / (mean_ms / 1e3)
        out |= {"achieved_macs_per_s": achieved, "fraction_of_peak": achieved / peaks[precision]}
    return out
