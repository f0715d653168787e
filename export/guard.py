"""The accuracy guard: quantize, measure, and when the drop is over budget keep the layers that hurt
most in float — one at a time, re-measuring each time — until the budget holds or a limit is hit.

"Hurts most" is measured, not guessed: each activation that the QDQ model quantizes is compared
before and after its QuantizeLinear/DequantizeLinear pair on held-out inputs, as a per-channel
signal-to-quantization-noise ratio (SQNR, dB, averaged over channels, so one outlier channel that
stretches a per-tensor range and flattens all the others shows up). The nodes around the worst
activation (its producer and consumers) are excluded from quantization. Without labels the drop
is measured as top-1 disagreement with the fp32 model.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgepipe.export.quantize import QuantOptions, quantize_static


def run_outputs(model, x: np.ndarray, names: list[str] | None = None, batch: int = 256) -> dict[str, np.ndarray]:
    """The model's outputs (or the named intermediate tensors) for x, with graph optimisation off
    so every tensor exists as written."""
    import onnx
    import onnxruntime as ort

    from edgepipe.export.analysis import load_onnx

    m = load_onnx(model) if isinstance(model, (str, Path)) else model
    if names:
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        m = probe
    else:
        names = [o.name for o in m.graph.output]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0].name
    parts = [s.run(names, {inp: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def sqnr_db(ref: np.ndarray, test: np.ndarray, per_channel: bool = True) -> float:
    """Signal-to-quantization-noise ratio in dB; per channel (axis 1) then averaged, capped at 100."""
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    if per_channel and ref.ndim >= 2:
        axes = tuple(i for i in range(ref.ndim) if i != 1)
        sig, err = (ref**2).sum(axis=axes), ((ref - test) ** 2).sum(axis=axes)
    else:
        sig, err = np.array([(ref**2).sum()]), np.array([((ref - test) ** 2).sum()])
    keep = sig > 0
    if not keep.any():
        return 100.0
    with np.errstate(divide="ignore"):
        db = np.minimum(10 * np.log10(sig[keep] / np.maximum(err[keep], 1e-30)), 100.0)
    return float(db.mean())


def activation_errors(qdq_model: str | Path, x: np.ndarray) -> list[dict]:
    """Per quantized activation: SQNR across its Q/DQ pair, and the nodes that produce and consume it."""
    from edgepipe.export.analysis import load_onnx

    from onnx import numpy_helper

    m = load_onnx(qdq_model)
    params = {t.name: t for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    pairs = []  # (activation, its dequantized copy, lowest representable value)
    for q in m.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in params:
            continue
        scale = float(numpy_helper.to_array(params[q.input[1]]).ravel()[0])
        zp = numpy_helper.to_array(params[q.input[2]]) if len(q.input) > 2 and q.input[2] in params else np.uint8(0)
        low = (float(np.iinfo(zp.dtype).min) - float(zp.ravel()[0])) * scale
        for dq in m.graph.node:
            if dq.op_type == "DequantizeLinear" and dq.input[0] == q.output[0]:
                pairs.append((q.input[0], dq.output[0], low))
    if not pairs:
        return []
    values = run_outputs(m, x, [n for p in pairs for n in p[:2]])
    out = []
    for act, deq, low in pairs:
        around = [producers[act].name] if act in producers and producers[act].op_type != "DequantizeLinear" else []
        around += [n.name for n in m.graph.node if deq in n.input and n.op_type != "QuantizeLinear"]
        # A range starting at exactly 0 is a Relu the quantizer folded into this pair: that clipping
        # is the model's own semantics, not quantization noise.
        ref = np.maximum(values[act], 0.0) if low == 0.0 else values[act]
        out.append({"tensor": act, "sqnr_db": sqnr_db(ref, values[deq]), "nodes": around})
    return sorted(out, key=lambda e: e["sqnr_db"])


def measure(fp32_logits: np.ndarray, q_model: str | Path, x: np.ndarray, y: np.ndarray | None) -> dict:
    logits = run_outputs(q_model, x)
    q = next(iter(logits.values()))
    m = {"agreement": float((q.argmax(1) == fp32_logits.argmax(1)).mean()),
         "output_sqnr_db": sqnr_db(fp32_logits, q, per_channel=False)}
    if y is not None:
        m["accuracy"] = float((q.argmax(1) == y).mean())
        m["drop_points"] = 100.0 * (float((fp32_logits.argmax(1) == y).mean()) - m["accuracy"])
    else:
        m["drop_points"] = 100.0 * (1.0 - m["agreement"])
    return m


def _latency_ms(model: Path) -> float:
    from edgepipe.runtime.bench import BenchOptions, benchmark

    r = benchmark(model, BenchOptions(warmup_iters=5, warmup_seconds=0.05, iters=30, min_seconds=0.2, max_seconds=2))
    return r["runs"][0]["latency"]["p50_ms"]


def guarded_quantize(fp32: str | Path, out: str | Path, calibration: np.ndarray, opts: QuantOptions,
                     x: np.ndarray, y: np.ndarray | None, max_drop: float | None, max_float_layers: int = 4,
                     tensor_overrides: dict | None = None, probe_samples: int = 64) -> dict:
    """Quantize `fp32` to `out`; keep layers in float while the drop exceeds `max_drop` points.
    Returns the steps taken (what was kept float, drop, agreement, p50 latency at batch 1 after each)."""
    fp32, out = Path(fp32), Path(out)
    ref = next(iter(run_outputs(fp32, x).values()))
    excluded: list[str] = list(opts.nodes_to_exclude)
    steps = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-guard-") as tmp:
        cand = Path(tmp) / "q.onnx"
        while True:
            o = replace(opts, nodes_to_exclude=tuple(excluded))
            quantize_static(fp32, cand, calibration, o, tensor_overrides)
            step = {"kept_float": list(excluded), **measure(ref, cand, x, y), "p50_ms": _latency_ms(cand)}
            steps.append(step)
            over = max_drop is not None and step["drop_points"] > max_drop
            if not over or len(steps) > max_float_layers:
                break
            # find the worst activation on a QDQ twin (the errors need Q/DQ pairs, whatever the format)
            twin = Path(tmp) / "twin.onnx"
            quantize_static(fp32, twin, calibration, replace(o, format="qdq"), tensor_overrides)
            worst = next((e for e in activation_errors(twin, x[:probe_samples])
                          if e["nodes"] and not set(e["nodes"]) <= set(excluded)), None)
            if worst is None:
                break
            step["worst_activation"] = {"tensor": worst["tensor"], "sqnr_db": worst["sqnr_db"]}
            excluded += [n for n in worst["nodes"] if n not in excluded]
        from edgepipe.runtime.atomic import write_bytes_atomic

        write_bytes_atomic(out, cand.read_bytes())
    final = steps[-1]
    return {"steps": steps, "kept_float": final["kept_float"], "met": max_drop is None or final["drop_points"] <= max_drop,
            "max_drop": max_drop, "drop_points": final["drop_points"], "agreement": final["agreement"],
            "latency_cost_ms": final["p50_ms"] - steps[0]["p50_ms"]}
