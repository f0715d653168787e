"""int8 made by NNCF (OpenVINO's post-training quantizer) for the OpenVINO backend: `nncf.quantize` on the
ONNX model with the calibration feeds, written as an ONNX file whose QuantizeLinear/DequantizeLinear pairs
sit where OpenVINO's CPU plugin fuses them into int8 kernels (onnxruntime-style QDQ graphs often run
slower than fp32 on OpenVINO). The file keeps the source's metadata (input contract, task), so the
runner and the deploy stage treat it like any other candidate.

NNCF comes with the `[openvino]` extra; without it the caller gets one line saying so."""

from __future__ import annotations

import sys
from pathlib import Path

from edgepipe.devices import EdgepipeError


def nncf_available() -> tuple[bool, str]:
    """(whether NNCF imports here, why not)."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False, "NNCF is not installed (pip install 'edgepipe[openvino]')"
    return True, ""


def single_samples(feeds: list[dict]) -> list[dict]:
    """Each feed's samples one by one (NNCF's statistics are per calibration item)."""
    out = []
    for f in feeds:
        n = len(next(iter(f.values())))
        out += [{k: v[i : i + 1] for k, v in f.items()} for i in range(n)]
    return out


def nncf_quantize(fp32: Path, out: Path, feeds: list[dict], preset: str = "performance") -> dict:
    """Quantize `fp32` with NNCF on the calibration `feeds` (dicts of input name → batch) into `out`,
    atomically; returns what was done (NNCF's version, samples, the preset, QDQ pairs inserted)."""
    import logging

    import onnx

    from edgepipe.devices.base.atomic import write_bytes_atomic

    ok, why = nncf_available()
    if not ok:
        raise EdgepipeError(why)
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)  # its progress bars and notes, not edgepipe's
    items = single_samples(feeds)
    if not items:
        raise EdgepipeError(f"{fp32}: NNCF needs at least one calibration sample")
    model = onnx.load(str(fp32))
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        q = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset(preset), subset_size=len(items))
    except Exception as exc:  # NNCF raises many kinds; one line naming the model and the first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgepipeError(f"{fp32}: NNCF could not quantize this model ({first[:200]})") from None
    del q.metadata_props[:]
    for k, v in meta.items():
        q.metadata_props.add(key=k, value=v)
    write_bytes_atomic(out, q.SerializeToString())
    pairs = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    print(f"  nncf: {out.name}: {pairs} quantize/dequantize pairs, {len(items)} calibration samples", file=sys.stderr)
    return {"quantizer": "nncf", "version": nncf.__version__, "samples": len(items), "preset": preset, "qdq": pairs}
