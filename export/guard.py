"""The accuracy guard: quantize, measure, and when the drop is over budget keep the layers that hurt
most in float — one at a time, re-measuring each time — until the budget holds or a limit is hit.

"Hurts most" is measured, not guessed: on held-out inputs, every compute node of the QDQ model is
compared with the float model — the noise-to-signal power of its activation inputs before and
after their Q/DQ pair, and of its output. The node that adds the most noise is where
quantization does the damage (its weights, or a per-tensor input range stretched by one
outlier channel, which flattens the others); it is excluded from quantization. Without labels the
drop is measured as top-1 disagreement with the fp32 model.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgepipe.export.quantize import QuantOptions, quantize_static
from edgepipe.runtime.atomic import temp_dir
from edgepipe.runtime.cost import probe_session
from edgepipe.runtime.fidelity import channel_sums, fidelity


def run_outputs(model, x: np.ndarray, names: list[str] | None = None, batch: int = 256) -> dict[str, np.ndarray]:
    """The model's outputs (or the named intermediate tensors) for x."""
    s, inp, names = probe_session(model, names)
    parts = [s.run(names, {inp: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def _folded_activation(f_model) -> dict[str, tuple[float, float]]:
    """Tensors the float model makes with Relu or Clip: the quantizer may fold those into a Q/DQ range,
    so the QDQ model's tensor of the same name holds the values *before* the clamp."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in f_model.graph.initializer}
    out = {}
    for n in f_model.graph.node:
        if n.op_type == "Relu":
            out[n.output[0]] = (0.0, np.inf)
        elif n.op_type == "Clip":
            lo = float(inits[n.input[1]]) if len(n.input) > 1 and n.input[1] in inits else -np.inf
            hi = float(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else np.inf
            out[n.output[0]] = (lo, hi)
    return out


def node_errors(fp32_model: str | Path, qdq_model: str | Path, x: np.ndarray, batch: int = 8) -> list[dict]:
    """Per compute node of the QDQ model, how much noise quantizing it adds (its weights, its Q/DQ'd
    inputs): noise-to-signal power of its output against the float model, minus that of its inputs
    before their Q/DQ pairs, split into what the input pairs add and what the node adds. Largest
    first; statistics accumulate over batches of `batch`."""
    from edgepipe.runtime.cost import load_onnx

    f, q = load_onnx(fp32_model), load_onnx(qdq_model)
    f_made = {o for n in f.graph.node for o in n.output}
    q_params = {t.name for t in q.graph.initializer}
    made_by = {o: n for n in q.graph.node for o in n.output}
    source = {}  # dequantized tensor -> the tensor before its Q/DQ pair
    for n in q.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in q_params:
            qn = made_by.get(n.input[0])
            if qn is not None and qn.op_type == "QuantizeLinear":
                source[n.output[0]] = qn.input[0]
    for n in q.graph.node:  # a quantized graph output: its producer now writes "<name>_QuantizeLinear_Input"
        for o in n.output:
            if o.endswith("_QuantizeLinear_Input") and o not in f_made and o.removesuffix("_QuantizeLinear_Input") in f_made:
                source[o] = o.removesuffix("_QuantizeLinear_Input")
    nodes = []
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        ins = sorted({i for i in n.input if i and source.get(i, i) in f_made})  # as the node reads them
        outs = [o for o in n.output if source.get(o, o) in f_made]
        if outs:
            nodes.append((n, ins, outs))
    # (float tensor, QDQ-model tensor) pairs: each input before and after its Q/DQ pair, each output
    pairs = sorted({(source.get(t, t), t) for _, ins, outs in nodes for t in ins}
                   | {(source[t], source[t]) for _, ins, _ in nodes for t in ins if t in source}
                   | {(source.get(o, o), o) for _, _, outs in nodes for o in outs})
    if not pairs:
        return []
    f_names = sorted({a for a, _ in pairs})
    q_names = sorted({b for _, b in pairs})
    folded = {t: r for t, r in _folded_activation(f).items() if made_by.get(t) is not None and made_by[t].op_type not in ("Relu", "Clip")}
    fs, fin, _ = probe_session(f, f_names)
    qs, qin, _ = probe_session(q, q_names)
    sums: dict[tuple, list] = {}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        fv = dict(zip(f_names, fs.run(f_names, {fin: xb})))
        qv = dict(zip(q_names, qs.run(q_names, {qin: xb})))
        for a, b in pairs:
            test = np.clip(qv[b], *folded[b]) if b in folded else qv[b]
            # whole-tensor noise power ranks nodes (near-silent channels, common in random or pruned
            # nets, must not dominate); per-channel noise judges an input's Q/DQ pair (one outlier
            # channel stretching a per-tensor range flattens the others without moving the total)
            acc = sums.setdefault((a, b), [0.0, 0.0, 0.0, 0.0])
            for k, per_channel in ((0, False), (2, True)):
                sig, err = channel_sums(fv[a], test, per_channel=per_channel)
                acc[k], acc[k + 1] = acc[k] + sig, acc[k + 1] + err

    def nsr(sig, err):  # noise-to-signal power; noise adds up along the graph
        keep = sig > 0
        return float((err[keep] / sig[keep]).mean()) if keep.any() else 0.0

    noise = {k: nsr(v[0], v[1]) for k, v in sums.items()}
    noise_pc = {k: nsr(v[2], v[3]) for k, v in sums.items()}
    out = []
    for n, ins, outs in nodes:
        before = max((noise[(source[t], source[t])] if t in source else noise[(t, t)] for t in ins), default=0.0)
        after = max((noise[(source.get(t, t), t)] for t in ins), default=0.0)  # what the node reads
        n_out = max(noise[(source.get(o, o), o)] for o in outs)
        # an input pair that alone leaves its channels below 10 dB SQNR on average
        damaging = [source[t] for t in ins if t in source and noise_pc[(source[t], t)] - noise_pc[(source[t], source[t])] > 0.1]
        out.append({"node": n.name, "op": n.op_type, "added_noise": max(n_out - before, 0.0),
                    "by_input_qdq": max(after - before, 0.0), "by_node": max(n_out - after, 0.0),
                    "in_sqnr_db": _db(before), "out_sqnr_db": _db(n_out),
                    # producers of inputs whose own Q/DQ pair flattens their channels
                    "input_producers": [made_by[t].name for t in damaging if t in made_by]})
    return sorted(out, key=lambda e: -e["added_noise"])


def _db(noise_to_signal: float) -> float:
    return 100.0 if noise_to_signal <= 1e-10 else float(min(-10 * np.log10(noise_to_signal), 100.0))


def measure(fp32_logits: np.ndarray, q_model: str | Path, x: np.ndarray, y: np.ndarray | None) -> dict:
    logits = run_outputs(q_model, x)
    q = next(iter(logits.values()))
    f = fidelity(fp32_logits, q)
    m = {"agreement": f["top1_agreement"], "output_sqnr_db": f["sqnr_db"]}
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
    with temp_dir("guard") as tmp:
        cand = Path(tmp) / "q.onnx"
        while True:
            o = replace(opts, nodes_to_exclude=tuple(excluded))
            quantize_static(fp32, cand, calibration, o, tensor_overrides)
            step = {"kept_float": list(excluded), **measure(ref, cand, x, y), "p50_ms": _latency_ms(cand)}
            steps.append(step)
            over = max_drop is not None and step["drop_points"] > max_drop
            if not over or len(steps) > max_float_layers:
                break
            # the node whose quantization costs most, measured on a QDQ twin (whatever the format)
            twin = Path(tmp) / "twin.onnx"
            quantize_static(fp32, twin, calibration, replace(o, format="qdq"), tensor_overrides)
            worst = next((e for e in node_errors(fp32, twin, x[:probe_samples]) if e["node"] not in excluded), None)
            if worst is None:
                break
            step["worst_node"] = worst
            # the node itself, and where an input's Q/DQ pair is the damage, that input's producer,
            # so the tensor stays float (onnxruntime quantizes a quantized node's output)
            excluded += [n for n in [worst["node"], *worst["input_producers"]] if n not in excluded]
        from edgepipe.runtime.atomic import write_bytes_atomic

        write_bytes_atomic(out, cand.read_bytes())
    final = steps[-1]
    return {"steps": steps, "kept_float": final["kept_float"], "met": max_drop is None or final["drop_points"] <= max_drop,
            "max_drop": max_drop, "drop_points": final["drop_points"], "agreement": final["agreement"],
            "latency_cost_ms": final["p50_ms"] - steps[0]["p50_ms"]}
