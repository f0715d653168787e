"""How close a model runs to the machine's limit: achieved MAC/s against the host's measured peak.

The peak is the best of several kernels — square GEMMs and 3×3 convolutions at two shapes (fp32:
MatMul, Conv; int8: MatMulInteger, QLinearConv u8×s8), the kernels conv and matmul layers end up
in — run through the backend that ran the model (onnxruntime or OpenVINO, at the float precision
OpenVINO ran), measured once per host, backend version and thread count, and cached in
$EDGEPIPE_CACHE (default ~/.cache/edgepipe). A model that still runs faster than every kernel is
flagged, not clipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edgepipe.devices.base.atomic import write_json_atomic
from edgepipe.devices.base.cache import cache_dir
from edgepipe.runtime.model.modelfile import INT8_OPS

KERNELS = Path(__file__).with_name("kernels")
# (file, MACs per run, what it is) per precision; the peak is the best of them (a model's convolutions
# can run faster than a square MatMul: on this project's AMD EPYC, 3×3 convs beat a 512³ GEMM by up to 8%)
PEAK_KERNELS = {
    "fp32": (
        ("gemm_fp32.onnx", 512**3, "MatMul 512×512×512"),
        ("gemm_fp32.onnx", 256**3, "MatMul 256×256×256"),
        ("conv_fp32_64x56.onnx", 64 * 64 * 9 * 56 * 56, "Conv 3×3 64→64 on 56×56"),
        ("conv_fp32_256x14.onnx", 256 * 256 * 9 * 14 * 14, "Conv 3×3 256→256 on 14×14"),
    ),
    "int8": (
        ("gemm_int8.onnx", 512**3, "MatMulInteger u8×s8 512×512×512"),
        ("conv_int8_64x56.onnx", 64 * 64 * 9 * 56 * 56, "QLinearConv u8×s8 3×3 64→64 on 56×56"),
        ("conv_int8_256x14.onnx", 256 * 256 * 9 * 14 * 14, "QLinearConv u8×s8 3×3 256→256 on 14×14"),
    ),
}


def _kernel_feed(session, name: str, macs: int) -> dict:
    rng = np.random.default_rng(0)
    if name.startswith("gemm"):
        n = round(macs ** (1 / 3))
        if "int8" in name:
            return {
                "A": rng.integers(0, 256, (n, n), dtype=np.uint8),
                "B": rng.integers(-128, 128, (n, n), dtype=np.int8),
            }
        return {"A": rng.standard_normal((n, n), np.float32), "B": rng.standard_normal((n, n), np.float32)}
    shape = list(session.get_inputs()[0].shape)
    return {
        "x": rng.integers(0, 256, shape, dtype=np.uint8)
        if "int8" in name
        else rng.standard_normal(shape).astype(np.float32)
    }


def kernel_rate(
    name: str, macs: int, threads: int, seconds: float = 0.3, backend: str = "onnxruntime", precision: str = "auto"
) -> float:
    """Best MAC/s of one peak kernel: the fastest single run over `seconds`, after a warm-up run."""
    from edgepipe.runtime.measure.bench import timed_runs
    from edgepipe.runtime.model.backends import open_model

    session = open_model(KERNELS / name, backend, threads=threads, precision=precision)
    feed = _kernel_feed(session, name, macs)
    session.run(None, feed)
    return macs / (min(timed_runs(lambda: session.run(None, feed), 1, seconds)) / 1e9)


def peak(kind: str, threads: int, backend: str = "onnxruntime", precision: str = "auto") -> dict:
    """{'macs_per_s', 'kernel' (the best one), 'rates' (every kernel's, or its error)} for the 'fp32'
    kernels (run at `precision` on OpenVINO) or the 'int8' ones."""
    rates: dict = {}
    for name, macs, what in PEAK_KERNELS[kind]:
        try:
            rates[what] = kernel_rate(name, macs, threads, backend=backend, precision=precision)
        except Exception as exc:  # a kernel this backend cannot run is reported, the others still count
            rates[what] = f"failed: {type(exc).__name__}: {str(exc).strip()[:120]}"
    ok = {k: v for k, v in rates.items() if isinstance(v, float)}
    best = max(ok, key=ok.get) if ok else None
    return {"macs_per_s": ok.get(best), "kernel": best, "rates": rates}


def host_peaks(
    host: dict, threads: int, refresh: bool = False, backend: str = "onnxruntime", precision: str = "fp32"
) -> dict:
    """{'fp32' (or the float precision OpenVINO ran: 'bf16', 'fp16'): MAC/s, 'int8': MAC/s,
    'kernels': the best kernel of each, ...} for this host, backend and thread count, measured once
    and cached."""
    if backend == "openvino":
        from edgepipe.runtime.model.backends.openvino import load_openvino

        version = load_openvino().__version__
    else:
        import onnxruntime

        version = onnxruntime.__version__
    float_name = precision if backend == "openvino" and precision in ("bf16", "fp16") else "fp32"
    hint = "auto"
    if backend == "openvino":
        from edgepipe.runtime.model.backends.openvino import PRECISION_NAMES

        hint = next(h for h, n in PRECISION_NAMES.items() if n == float_name)
    key_src = json.dumps(
        [host.get("arch"), host.get("cpu_model"), host.get("flags"), backend, version, threads, hint, 2]
    )
    path = cache_dir() / f"peak-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.json"
    if path.is_file() and not refresh:
        try:
            cached = json.loads(path.read_text())
            if {float_name, "int8", "kernels"} <= cached.keys():
                return cached | {"cached": str(path)}
        except (OSError, ValueError):
            pass  # a damaged cache entry is measured again
    fl, i8 = peak("fp32", threads, backend, hint), peak("int8", threads, backend)
    peaks = {
        float_name: fl["macs_per_s"],
        "int8": i8["macs_per_s"],
        "kernels": {float_name: fl["kernel"], "int8": i8["kernel"]},
        "rates": {float_name: fl["rates"], "int8": i8["rates"]},
        "threads": threads,
        "backend": backend,
        "version": version,
        "method": f"best of the GEMM and 3×3 conv kernels in runtime/measure/kernels/, run through {backend} {version}",
    }
    try:
        write_json_atomic(path, peaks)
    except OSError:
        pass  # a read-only home still gets the figures, just not cached
    return peaks | {"cached": None}


def model_costs(model: Path, macs: int | None = None) -> tuple[int | None, str, str]:
    """(MACs at batch 1, 'int8' or 'fp32', where the MAC count came from). Counting needs the `onnx`
    package (the workstation has it); on a device without it, pass the count (--macs)."""
    precision = "int8" if any(op in model.read_bytes() for op in INT8_OPS) else "fp32"
    if macs is not None:
        return macs, precision, "given"
    try:
        import onnx  # noqa: F401  (analysis imports it lazily; check here)

        from edgepipe.runtime.model.cost import count_macs, load_onnx
    except ImportError:
        return (
            None,
            precision,
            "unknown: the onnx package is not installed here; pass --macs N (from the pipeline's report)",
        )
    from edgepipe.devices import EdgepipeError

    try:
        return int(count_macs(load_onnx(model))), precision, "counted from the graph"
    except EdgepipeError as exc:
        return None, precision, f"unknown: {exc}; pass --macs N"


def roofline(macs: int | None, precision: str, batch: int, mean_ms: float, peaks: dict) -> dict:
    """Achieved MAC/s against the peak of the precision that ran (none measured: the fraction is left
    out rather than compared with the wrong kernel). Faster than every peak kernel: flagged."""
    out = {
        "macs_per_inference": macs,
        "precision": precision,
        "peak_macs_per_s": peaks.get(precision),
        "peaks": {k: peaks[k] for k in ("fp32", "bf16", "fp16", "int8") if peaks.get(k)},
        "peak_kernel": (peaks.get("kernels") or {}).get(precision),
        "peak_method": peaks["method"],
    }
    if not macs:
        return out
    achieved = macs * batch / (mean_ms / 1e3)
    out["achieved_macs_per_s"] = achieved
    if not peaks.get(precision):
        out["note"] = f"no {precision} peak is measured for this backend here; achieved MAC/s only"
        return out
    out["fraction_of_peak"] = achieved / peaks[precision]
    if out["fraction_of_peak"] > 1.0:
        out["note"] = (
            f"ran faster than every {precision} peak kernel ({out['fraction_of_peak']:.0%}); the peak is a lower "
            "bound for this model's kernels (or its MAC count includes work the runtime skips)"
        )
    return out
