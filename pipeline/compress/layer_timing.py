"""Is a factorised layer faster than the layer it replaces, on this machine? (`target: latency` in
the lowrank stage.) Each variant — the original Linear or Conv2D and its factorised chain at
candidate ranks — is built as a small ONNX graph of exactly the ops the exporter emits for it
(MatMul + Add; Conv with the layer's stride, padding and dilation), with random weights of its
shapes, at the layer's input shape in the model, and timed by onnxruntime (fp32, batch 1, one
thread) in interleaved rounds in this process, so a noisy neighbour slows every variant alike.

Timed alone, a layer misses what it shares with its neighbours in the whole model (fusions with
the next activation, cache state), so the choice is per layer and the stage's whole-model speed
still comes from the bench stage; graphs are built with onnx.helper rather than paddle2onnx
because a rank search needs dozens of them per layer and the exporter takes seconds per call.
time_graphs is also the prune stage's before/after timer (compress/channels/speed.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices.base.atomic import temp_dir


def _conv_nodes(x: str, g: dict, method: str, ranks: list[int], rng, inits: list) -> tuple[list, str]:
    """Conv nodes for a dense (method 'dense') or factorised conv with geometry g."""
    from onnx import helper, numpy_helper

    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = g["stride"], g["padding"], g["dilation"], g["kernel"]
    if method == "dense":
        steps = [(g["out"], g["in"], kh, kw, (sh, sw), (ph, pw), (dh, dw))]
    elif method == "tucker2":
        ro, ri = ranks
        steps = [
            (ri, g["in"], 1, 1, (1, 1), (0, 0), (1, 1)),
            (ro, ri, kh, kw, (sh, sw), (ph, pw), (dh, dw)),
            (g["out"], ro, 1, 1, (1, 1), (0, 0), (1, 1)),
        ]
    else:  # spatial
        (r,) = ranks
        steps = [(r, g["in"], kh, 1, (sh, 1), (ph, 0), (dh, 1)), (g["out"], r, 1, kw, (1, sw), (0, pw), (1, dw))]
    nodes, cur = [], x
    for k, (o, i, a, b, stride, pad, dil) in enumerate(steps):
        w = f"w{k}"
        inits.append(numpy_helper.from_array(rng.standard_normal((o, i, a, b)).astype(np.float32) * 0.05, w))
        ins = [cur, w]
        if k == len(steps) - 1 and g.get("bias", True):
            inits.append(numpy_helper.from_array(np.zeros(o, np.float32), f"b{k}"))
            ins.append(f"b{k}")
        out = f"y{k}"
        nodes.append(
            helper.make_node(
                "Conv",
                ins,
                [out],
                kernel_shape=[a, b],
                strides=list(stride),
                pads=[pad[0], pad[1], pad[0], pad[1]],
                dilations=list(dil),
            )
        )
        cur = out
    return nodes, cur


def _linear_nodes(
    x: str, n_in: int, n_out: int, ranks: list[int] | None, bias: bool, rng, inits: list
) -> tuple[list, str]:
    from onnx import helper, numpy_helper

    shapes = [(n_in, n_out)] if ranks is None else [(n_in, ranks[0]), (ranks[0], n_out)]
    nodes, cur = [], x
    for k, shape in enumerate(shapes):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.05, f"w{k}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{k}"], [f"m{k}"]))
        cur = f"m{k}"
    if bias:
        inits.append(numpy_helper.from_array(np.zeros(n_out, np.float32), "b"))
        nodes.append(helper.make_node("Add", [cur, "b"], ["y"]))
        cur = "y"
    return nodes, cur


def layer_graph(
    kind: str, x_shape: tuple[int, ...], geometry: dict, method: str, ranks: list[int] | None, seed: int = 0
):
    """A one-layer ONNX model: `kind` 'linear' (geometry: in, out, bias) or 'conv' (the conv
    geometry of compress/lowrank.py, plus bias), dense (method 'dense') or factorised."""
    import onnx
    from onnx import TensorProto, helper

    rng, inits = np.random.default_rng(seed), []
    if kind == "linear":
        nodes, y = _linear_nodes(
            "x",
            geometry["in"],
            geometry["out"],
            None if method == "dense" else ranks,
            geometry.get("bias", True),
            rng,
            inits,
        )
    else:
        nodes, y = _conv_nodes("x", geometry, method, ranks or [], rng, inits)
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def time_graphs(
    graphs: dict[str, object], rounds: int = 3, seconds: float = 0.05, iters: int = 20, warmup_seconds: float = 0.02
) -> dict[str, dict]:
    """{name: {p50_ms (median over rounds), rounds_ms}} for ONNX models (ModelProtos or files) timed
    by onnxruntime (fp32, batch 1, one thread) in interleaved rounds, the order rotating each round
    (for two models: alternating who goes first)."""
    import onnx

    from edgepipe.runtime.measure.bench import Bench, BenchOptions, interleaved_rounds, timed_runs

    opts = BenchOptions(
        warmup_iters=min(5, iters),
        warmup_seconds=warmup_seconds,
        iters=iters,
        min_seconds=seconds,
        max_seconds=5 * seconds + 1,
    )
    names = list(graphs)
    with temp_dir("layer-timing") as tmp:
        benches = {}
        for k, name in enumerate(names):
            path = graphs[name]
            if isinstance(path, onnx.ModelProto):
                path = Path(tmp) / f"v{k}.onnx"
                onnx.save(graphs[name], str(path))
            benches[name] = Bench(path, opts)
        feeds = {n: b.feed(1) for n, b in benches.items()}
        runs = {n: (lambda b=benches[n], f=feeds[n]: b.run_once(f)) for n in names}

        def warm(n):
            timed_runs(runs[n], min(5, iters), warmup_seconds)

        got, _, _ = interleaved_rounds(runs, rounds, seconds, min_count=iters, before_each=warm)
    return {n: {"p50_ms": float(np.median(v)), "rounds_ms": v} for n, v in got.items()}


def time_candidates(kind: str, geometry: dict, x_shape: tuple[int, ...], cands: list[dict], limit: float) -> dict:
    """The layer and each candidate factorisation ({method, ranks}) timed side by side:
    {input_shape, layer_ms, layer_rounds_ms, limit, how, candidates: [{method, ranks, p50_ms, rounds_ms}]}."""
    graphs = {"layer": layer_graph(kind, x_shape, geometry, "dense", None)}
    graphs.update({f"c{k}": layer_graph(kind, x_shape, geometry, c["method"], c["ranks"]) for k, c in enumerate(cands)})
    t = time_graphs(graphs)
    return {
        "input_shape": list(x_shape),
        "layer_ms": t["layer"]["p50_ms"],
        "layer_rounds_ms": t["layer"]["rounds_ms"],
        "limit": limit,
        "how": "the layer alone, onnxruntime fp32, batch 1, 1 thread, 3 interleaved rounds",
        "candidates": [
            {
                "method": c["method"],
                "ranks": c["ranks"],
                "p50_ms": t[f"c{k}"]["p50_ms"],
                "rounds_ms": t[f"c{k}"]["rounds_ms"],
            }
            for k, c in enumerate(cands)
        ],
    }
