"""The accuracy guard: quantize, measure, and when the drop is over budget keep the layers that hurt
most in float — one at a time, re-measuring each time — until the budget holds or a limit is hit.

"Hurts most" is measured, not guessed: on held-out inputs, every compute node of the QDQ model is
compared with the float model — the noise-to-signal power of its activation inputs before and
after their Q/DQ pair, and of its output. The node that adds the most noise is where
quantization does the damage (its weights, or a per-tensor input range stretched by one
outlier channel, which flattens the others); it is excluded from quantization. Without labels the
drop is measured as top-1 disagreement with the fp32 model. Where these steps end over budget and the drop
is judged by labels or a task's metric, a bounded search over windows of the compute nodes still quantized
asks that judge directly (guard_search.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgepipe.devices.base.atomic import temp_dir
from edgepipe.export.guard_search import COMPUTE, compute_nodes, outcome, search_window, within
from edgepipe.export.quantize import QuantOptions, as_feeds, quantize_static
from edgepipe.runtime.inputs import feeds as fd
from edgepipe.runtime.judge.fidelity import channel_sums, fidelity, sqnr_from_sums
from edgepipe.runtime.model.cost import probe_session


def _feeds(session, x, batch: int) -> list[dict]:
    """x (an N×C×H×W array for a single-image-input model, or feeds) as feeds of at most `batch`."""
    if isinstance(x, np.ndarray):
        return fd.from_array(fd.signature(session), x, batch)
    return fd.regroup(x, fd.batch_size(fd.signature(session), batch))


def run_outputs(model, x, names: list[str] | None = None, batch: int = 256) -> dict:
    """The model's outputs (or the named intermediate tensors) for x (an array or feeds): each one
    array over all samples, or a list of per-feed arrays where samples of different sizes give
    outputs of different sizes."""
    s, _, names = probe_session(model, names)
    feeds = _feeds(s, x, batch)
    parts = fd.run(s, feeds, names)
    rows = [fd.count([f]) for f in feeds]
    out = {}
    for k, n in enumerate(names):
        pieces = [p[k] for p in parts]
        # one row per sample and one size beyond it: joined; else (an NMS output's k boxes) per feed
        batched = all(q.ndim and len(q) == r for q, r in zip(pieces, rows)) and len({q.shape[1:] for q in pieces}) == 1
        out[n] = np.concatenate(pieces) if batched else pieces
    return out


def compare_outputs(ref: dict, got: dict) -> dict:
    """Every output of a model against its float model's (run_outputs of each): the SQNR of each
    (whole tensor, dB), their minimum, and the top-1 agreement of the first output that holds one
    row of class scores per sample (None where none does)."""
    per, changed, agreement = {}, {}, None
    for name, r in ref.items():
        g = got[name]
        pairs = list(zip(r, g)) if isinstance(r, list) or isinstance(g, list) else [(r, g)]
        same = [(a, b) for a, b in pairs if a.shape == b.shape]
        if len(same) < len(pairs):  # e.g. NMS kept another number of boxes: no noise to measure there
            changed[name] = len(pairs) - len(same)
        sig = err = 0.0
        for a, b in same:
            s1, e1 = channel_sums(a, b, per_channel=False)
            sig, err = sig + s1, err + e1
        per[name] = sqnr_from_sums(np.atleast_1d(sig), np.atleast_1d(err)) if same else None
        if agreement is None and not isinstance(r, list) and r.ndim == 2 and r.shape[1] > 1 and r.shape == g.shape:
            agreement = fidelity(r, g)["top1_agreement"]
    measured = [v for v in per.values() if v is not None]
    return {
        "agreement": agreement,
        "output_sqnr_db": min(measured) if measured else None,
        "outputs_sqnr_db": per,
        **({"outputs_changed_size": changed} if changed else {}),
    }


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


def _dq_sources(f_made: set, q) -> dict[str, str]:
    """Each tensor of the QDQ model that went through a Q/DQ pair -> the tensor before the pair."""
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
            if (
                o.endswith("_QuantizeLinear_Input")
                and o not in f_made
                and o.removesuffix("_QuantizeLinear_Input") in f_made
            ):
                source[o] = o.removesuffix("_QuantizeLinear_Input")
    return source


def _compute_nodes(q, source: dict, f_made: set) -> list[tuple]:
    """The QDQ model's compute nodes, each with the inputs it reads and the outputs the float model also makes."""
    nodes = []
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        ins = sorted({i for i in n.input if i and source.get(i, i) in f_made})  # as the node reads them
        outs = [o for o in n.output if source.get(o, o) in f_made]
        if outs:
            nodes.append((n, ins, outs))
    return nodes


def _noise_sums(f, q, pairs: list, folded: dict, x, batch: int) -> dict[tuple, list]:
    """Signal and noise power of each (float, QDQ) tensor pair over batches: whole-tensor, then per channel."""
    f_names = sorted({a for a, _ in pairs})
    q_names = sorted({b for _, b in pairs})
    fs, _, _ = probe_session(f, f_names)
    qs, _, _ = probe_session(q, q_names)
    sums: dict[tuple, list] = {}
    for feed in _feeds(fs, x, batch):
        fv = dict(zip(f_names, fs.run(f_names, feed)))
        qv = dict(zip(q_names, qs.run(q_names, feed)))
        for a, b in pairs:
            test = np.clip(qv[b], *folded[b]) if b in folded else qv[b]
            # whole-tensor noise power ranks nodes (near-silent channels, common in random or pruned
            # nets, must not dominate); per-channel noise judges an input's Q/DQ pair (one outlier
            # channel stretching a per-tensor range flattens the others without moving the total)
            acc = sums.setdefault((a, b), [0.0, 0.0, 0.0, 0.0])
            for k, per_channel in ((0, False), (2, True)):
                sig, err = channel_sums(fv[a], test, per_channel=per_channel)
                acc[k], acc[k + 1] = acc[k] + sig, acc[k + 1] + err
    return sums


def _nsr(sig, err) -> float:
    """Noise-to-signal power, averaged over the channels with signal; noise adds up along the graph."""
    keep = sig > 0
    return float((err[keep] / sig[keep]).mean()) if keep.any() else 0.0


def _node_noise(n, ins: list, outs: list, source: dict, made_by: dict, noise: dict, noise_pc: dict) -> dict:
    """One node's added noise, split into what its inputs' Q/DQ pairs add and what the node itself adds."""
    before = max((noise[(source[t], source[t])] if t in source else noise[(t, t)] for t in ins), default=0.0)
    after = max((noise[(source.get(t, t), t)] for t in ins), default=0.0)  # what the node reads
    n_out = max(noise[(source.get(o, o), o)] for o in outs)
    # an input pair that alone leaves its channels below 10 dB SQNR on average
    damaging = [
        source[t] for t in ins if t in source and noise_pc[(source[t], t)] - noise_pc[(source[t], source[t])] > 0.1
    ]
    return {
        "node": n.name,
        "op": n.op_type,
        "added_noise": max(n_out - before, 0.0),
        "by_input_qdq": max(after - before, 0.0),
        "by_node": max(n_out - after, 0.0),
        "in_sqnr_db": _db(before),
        "out_sqnr_db": _db(n_out),
        # producers of inputs whose own Q/DQ pair flattens their channels
        "input_producers": [made_by[t].name for t in damaging if t in made_by],
    }


def node_errors(fp32_model: str | Path, qdq_model: str | Path, x: np.ndarray, batch: int = 8) -> list[dict]:
    """Per compute node of the QDQ model, how much noise quantizing it adds (its weights, its Q/DQ'd
    inputs): noise-to-signal power of its output against the float model, minus that of its inputs
    before their Q/DQ pairs, split into what the input pairs add and what the node adds. Largest
    first; statistics accumulate over batches of `batch`."""
    from edgepipe.runtime.model.cost import load_onnx

    f, q = load_onnx(fp32_model), load_onnx(qdq_model)
    f_made = {o for n in f.graph.node for o in n.output}
    made_by = {o: n for n in q.graph.node for o in n.output}
    source = _dq_sources(f_made, q)
    nodes = _compute_nodes(q, source, f_made)
    # (float tensor, QDQ-model tensor) pairs: each input before and after its Q/DQ pair, each output
    pairs = sorted(
        {(source.get(t, t), t) for _, ins, outs in nodes for t in ins}
        | {(source[t], source[t]) for _, ins, _ in nodes for t in ins if t in source}
        | {(source.get(o, o), o) for _, _, outs in nodes for o in outs}
    )
    if not pairs:
        return []
    folded = {
        t: r
        for t, r in _folded_activation(f).items()
        if made_by.get(t) is not None and made_by[t].op_type not in ("Relu", "Clip")
    }
    sums = _noise_sums(f, q, pairs, folded, x, batch)
    noise = {k: _nsr(v[0], v[1]) for k, v in sums.items()}
    noise_pc = {k: _nsr(v[2], v[3]) for k, v in sums.items()}
    out = [_node_noise(n, ins, outs, source, made_by, noise, noise_pc) for n, ins, outs in nodes]
    return sorted(out, key=lambda e: -e["added_noise"])


def _shape_text(v) -> str:
    return "of several sizes" if isinstance(v, list) else "x".join(map(str, v.shape))


def _db(noise_to_signal: float) -> float:
    return 100.0 if noise_to_signal <= 1e-10 else float(min(-10 * np.log10(noise_to_signal), 100.0))


def measure(ref: dict, q_model: str | Path, x, y: np.ndarray | None) -> dict:
    """The quantized model against the float model's outputs `ref` (run_outputs) on x: every output's
    SQNR, top-1 agreement and, with labels, accuracy of the class scores; the drop in points (of
    accuracy, else of agreement; None for a model with no class-score output)."""
    got = run_outputs(q_model, x)
    m = compare_outputs(ref, got)
    scores = next((n for n, r in ref.items() if not isinstance(r, list) and r.ndim == 2 and r.shape[1] > 1), None)
    if y is not None and scores is not None:
        m["accuracy"] = float((got[scores].argmax(1) == y).mean())
        m["drop_points"] = 100.0 * (float((ref[scores].argmax(1) == y).mean()) - m["accuracy"])
    else:
        m["drop_points"] = None if m["agreement"] is None else 100.0 * (1.0 - m["agreement"])
    return m


def _latency_ms(model: Path, feed: dict) -> float:
    from edgepipe.runtime.measure.bench import BenchOptions, benchmark

    r = benchmark(
        model, BenchOptions(warmup_iters=5, warmup_seconds=0.05, iters=30, min_seconds=0.2, max_seconds=2), feed
    )
    return r["runs"][0]["latency"]["p50_ms"]


def guarded_quantize(
    fp32: str | Path,
    out: str | Path,
    calibration: np.ndarray,
    opts: QuantOptions,
    x: np.ndarray,
    y: np.ndarray | None,
    max_drop: float | None,
    max_float_layers: int = 4,
    tensor_overrides: dict | None = None,
    probe_samples: int = 64,
    judge=None,
    trials: int = 3,
    search_trials: int = 12,
    deadline: float | None = None,
) -> dict:
    """Quantize `fp32` to `out`; keep layers in float while the drop exceeds `max_drop` points.
    Returns the steps taken (what was kept float, drop, agreement, p50 latency at batch 1 after each).
    `judge(model file)` (runtime/tasks/evaluate.FolderJudge), when given, measures the drop in its task's
    metric (word accuracy, mAP, hmean) instead of top-1, and each step tries the `trials` noisiest nodes in
    float, keeping the one the metric likes best. Where these `max_float_layers` steps end over budget and
    the drop is judged by `judge` or the labels `y`, a second phase (guard_search.py, at most
    `search_trials` trials; 0: none) searches, from the closest step, the window of still-quantized compute
    nodes whose keeping in float meets the budget: one more step, its record under "search". The file
    written is the first step within the budget, or the step that came closest. No step or search trial
    starts after `deadline` (time.monotonic(): optimize's --time-limit); the result then says
    time_limit_reached."""
    from edgepipe.devices import EdgepipeError

    fp32, out = Path(fp32), Path(out)
    ref = run_outputs(fp32, x)
    if (
        max_drop is not None
        and judge is None
        and not any(not isinstance(r, list) and r.ndim == 2 and r.shape[1] > 1 for r in ref.values())
    ):
        raise EdgepipeError(
            f"{fp32.name}: an accuracy budget needs an output of class scores (N×classes); this model's "
            f"outputs are {', '.join(f'{k} {_shape_text(v)}' for k, v in ref.items())}. Quantize without "
            "the budget and judge it by the SQNR of each output that is printed"
        )
    one = fd.first(as_feeds(fp32, x[:1]) if isinstance(x, np.ndarray) else list(x), 1)[0]  # timed at batch 1
    probe = x[:probe_samples] if isinstance(x, np.ndarray) else fd.spread(list(x), probe_samples)
    steps, files = [], []
    with temp_dir("guard") as tmp:
        run = _Steps(fp32, calibration, opts, tensor_overrides, ref, x, y, one, judge, Path(tmp))
        step, path = run.step(list(opts.nodes_to_exclude), "step0")
        while True:
            steps.append(step)
            files.append(path)
            if within(step["drop_points"], max_drop) or len(steps) > max_float_layers:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            found = run.next_step(step, probe, trials if judge is not None else 1, f"step{len(steps)}")
            if found is None:
                break
            step, path = found
        found = run.search(steps, max_drop, search_trials, deadline)  # phase two, where phase one ended over budget
        if found is not None:
            steps.append(found[0])
            files.append(found[1])
        from edgepipe.devices.base.atomic import write_bytes_atomic

        # the step that met the budget, else the one that came closest (float nodes can make it worse)
        chosen = next((i for i, st in enumerate(steps) if within(st["drop_points"], max_drop)), None)
        if chosen is None:
            chosen = min(range(len(steps)), key=lambda i: (steps[i]["drop_points"], i))
        write_bytes_atomic(out, files[chosen].read_bytes())
    return outcome(steps, chosen, max_drop, deadline)


class _Steps:
    """The guard's steps: each a quantized file with what it keeps in float, its fidelity to the float
    model, its p50 at batch 1 and (with a judge) its task metric."""

    def __init__(self, fp32, calibration, opts, overrides, ref, x, y, one, judge, tmp: Path):
        self.fp32, self.calibration, self.opts, self.overrides = fp32, calibration, opts, overrides
        self.ref, self.x, self.y, self.one, self.judge, self.tmp = ref, x, y, one, judge, tmp

    def step(self, excluded: list[str], name: str, op_types: tuple[str, ...] = ()) -> tuple[dict, Path]:
        path = self.tmp / f"{name}.onnx"
        o = replace(self.opts, nodes_to_exclude=tuple(excluded), op_types=op_types or self.opts.op_types)
        quantize_static(self.fp32, path, self.calibration, o, self.overrides)
        step = {"op_types": list(o.op_types)} if o.op_types else {}
        step |= {
            "kept_float": list(excluded),
            **measure(self.ref, path, self.x, self.y),
            "p50_ms": _latency_ms(path, self.one),
        }
        if self.judge is not None:
            step |= {"task_metric": self.judge(path)}
            step["drop_points"] = step["task_metric"]["drop_points"]
        return step, path

    def next_step(self, prev: dict, probe, trials: int, name: str) -> tuple[dict, Path] | None:
        """The next step: the `trials` nodes whose quantization adds most noise (measured on a QDQ twin,
        whatever the format; only nodes of the op types quantized, where the step names them, since keeping
        another in float changes nothing) each kept in float in turn — and, with a task's metric, once every
        op but Conv/MatMul/Gemm kept in float (element-wise ops are where transformer-like recognizers lose
        most) — the one with the smallest drop taken; None when there is nothing left to try. A node's
        group is itself and, where an input's Q/DQ pair is the damage, that input's producer, so the tensor
        stays float (onnxruntime quantizes a quantized node's output)."""
        excluded, op_types = prev["kept_float"], tuple(prev.get("op_types", ()))
        twin = self.tmp / "twin.onnx"
        o = replace(self.opts, nodes_to_exclude=tuple(excluded), format="qdq", op_types=op_types or self.opts.op_types)
        quantize_static(self.fp32, twin, self.calibration, o, self.overrides)
        worst = [
            e
            for e in node_errors(self.fp32, twin, probe)
            if e["node"] and e["node"] not in excluded and (not op_types or e["op"] in op_types)
        ][:trials]
        tried = []
        if trials > 1 and not op_types:  # every other op (Add, Mul, pooling...) in float: one trial
            tried.append((*self.step(excluded, f"{name}.compute", COMPUTE), {"node": "(all but Conv/MatMul/Gemm)"}))
        for k, e in enumerate(worst):
            group = [n for n in [e["node"], *e["input_producers"]] if n not in excluded]
            tried.append((*self.step(excluded + group, f"{name}.try{k}", op_types), e))
        if not tried:
            return None
        step, path, e = min(tried, key=lambda t: t[0]["drop_points"])
        prev["worst_node"] = e
        if len(tried) > 1:  # what the metric said of each
            prev["tried"] = [{"node": w["node"], "drop_points": t["drop_points"]} for t, _, w in tried]
        return step, path

    def search(
        self, steps: list[dict], max_drop: float | None, limit: int, deadline: float | None = None
    ) -> tuple[dict, Path] | None:
        """Phase two (guard_search.search_window): from the closest step, the smallest window of its
        still-quantized compute nodes, in graph order, whose keeping in float meets the budget (else the
        closest trial); its record says what was searched, each trial and the p50 it costs against the
        step searched from. None where a step is within budget, where the drop is judged by neither a
        task's metric nor labels (agreement with fp32 is what phase one ranks by), or nothing is left."""
        if any(within(st["drop_points"], max_drop) for st in steps) or (self.judge is None and self.y is None):
            return None
        i = min(range(len(steps)), key=lambda k: (steps[k]["drop_points"], k))
        kept, op_types = list(steps[i]["kept_float"]), tuple(steps[i].get("op_types", ()))
        nodes = compute_nodes(self.fp32, op_types, kept)
        found = search_window(
            lambda w, k: self.step(kept + w, f"search{k}", op_types), nodes, max_drop, limit, deadline
        )
        if found is None:
            return None
        step, path, record = found
        step["search"] = {"from_step": i, **record, "cost_ms": step["p50_ms"] - steps[i]["p50_ms"]}
        return step, path
