"""`edgepipe explain model.onnx`: why is this (int8) model as fast or as slow as it is?

Runs the model in onnxruntime with profiling on and keeps the graph onnxruntime actually executes
(after its fusions), then reports:
  - time per op type (from the profiler's per-kernel events), grouped as integer kernels,
    quantize/dequantize, and float compute;
  - Q/DQ nodes left in the executed graph, i.e. quantized patterns onnxruntime did NOT fuse into an
    integer kernel, with the node that consumes each one — that node runs in float, with the cost
    of converting in and out;
  - float compute ops (Conv, MatMul, Gemm, ...) in a model that was meant to be quantized;
  - the host's int8 capabilities (VNNI / AVX2 / ARM dot product).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from edgepipe.devices.base.atomic import temp_dir

INT_KERNELS = {
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearSoftmax",
    "QLinearReduceMean",
    "QLinearWhere",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "QAttention",
    "NhwcQLinearConv",
}
QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_COMPUTE = {"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose", "NhwcFusedConv"}


def _kind(op: str) -> str:
    return (
        "integer"
        if op in INT_KERNELS
        else "quantize/dequantize"
        if op in QDQ
        else "float compute"
        if op in FLOAT_COMPUTE
        else "other"
    )


def host_int8_note(flags: list[str], arch: str) -> str:
    f = set(flags)
    if f & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "VNNI present: u8×s8 products accumulate in 32 bits (VPDPBUSD); int8 GEMMs run ~4× the fp32 rate"
    if "avx2" in f:
        return (
            "AVX2 without VNNI: u8×s8 uses VPMADDUBSW with 16-bit intermediates (can saturate; use reduce_range); "
            "int8 GEMMs gain ~2× at best over fp32"
        )
    if arch in ("aarch64", "arm64"):
        return (
            "ARM with dot product (SDOT/UDOT): int8 GEMMs gain well over fp32"
            if f & {"asimddp", "dotprod"}
            else "ARM without dot-product instructions: int8 gains less; u8s8 kernels are the faster path"
        )
    return "no int8 dot-product instructions detected"


def _profile(model: Path, threads: int, seconds: float, min_runs: int, batch: int):
    """Run the model under onnxruntime's profiler: (runs done, the profile's events, the graph it executed)."""
    import onnx
    import onnxruntime as ort

    from edgepipe.runtime.inputs.checks import input_feed

    with temp_dir("explain") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        opts.optimized_model_filepath = str(Path(tmp) / "executed.onnx")
        s = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = input_feed(s, batch)
        runs, t0 = 0, time.perf_counter()
        while runs < min_runs or time.perf_counter() - t0 < seconds:
            s.run(None, feed)
            runs += 1
        events = json.loads(Path(s.end_profiling()).read_text())
        executed = onnx.load(str(Path(tmp) / "executed.onnx"), load_external_data=False)
    return runs, events, executed


def _time_by_op(events: list[dict], graph, runs: int) -> tuple[list[dict], dict, dict]:
    """Kernel time per run by op type (slowest first), then its share and its ms per run by kind."""
    op_of = {n.name: n.op_type for n in graph.node}
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name") or op_of.get(e["name"][: -len("_kernel_time")], "?")
            per_op[op] += e["dur"] / 1e3  # µs -> ms
    total = sum(per_op.values()) or 1.0
    by_op = sorted(
        ({"op": op, "kind": _kind(op), "ms_per_run": ms / runs, "share": ms / total} for op, ms in per_op.items()),
        key=lambda r: -r["ms_per_run"],
    )
    by_kind: dict[str, float] = defaultdict(float)
    ms_by_kind: dict[str, float] = defaultdict(float)
    for r in by_op:
        by_kind[r["kind"]] += r["share"]
        ms_by_kind[r["kind"]] += r["ms_per_run"]
    return by_op, dict(by_kind), dict(ms_by_kind)


def _unfused_qdq(graph) -> list[dict]:
    """The Q/DQ nodes left in the executed graph, each with the node(s) it feeds."""
    params = {t.name for t in graph.initializer}
    consumers = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    unfused = []
    for n in graph.node:
        if n.op_type not in QDQ:
            continue
        if n.op_type == "DequantizeLinear":
            users = [c for c in consumers[n.output[0]] if c.op_type not in QDQ]
            what = "weight" if n.input[0] in params else "activation"
            for c in users:
                unfused.append(
                    {
                        "node": n.name,
                        "op": n.op_type,
                        "tensor": n.input[0],
                        "kind": what,
                        "feeds": f"{c.op_type} '{c.name}'",
                        "consumer_runs_in_float": c.op_type in FLOAT_COMPUTE,
                    }
                )
        else:
            unfused.append(
                {
                    "node": n.name,
                    "op": n.op_type,
                    "tensor": n.input[0],
                    "kind": "activation",
                    "feeds": ", ".join(f"{c.op_type} '{c.name}'" for c in consumers[n.output[0]]) or "graph output",
                    "consumer_runs_in_float": False,
                }
            )
    return unfused


def explain(model: str | Path, threads: int = 1, seconds: float = 1.0, min_runs: int = 20, batch: int = 1) -> dict:
    """Profile the model's executed graph: time by op and kind, unfused Q/DQ, float compute, the host's int8."""
    import onnxruntime as ort

    from edgepipe.devices import detect_host
    from edgepipe.runtime.model.session import open_session

    model = Path(model)
    open_session(model)  # one-line errors for a missing or broken file
    runs, events, executed = _profile(model, threads, seconds, min_runs, batch)
    by_op, by_kind, ms_by_kind = _time_by_op(events, executed.graph, runs)
    unfused = _unfused_qdq(executed.graph)
    float_ops = [{"node": n.name, "op": n.op_type} for n in executed.graph.node if n.op_type in FLOAT_COMPUTE]
    fused = [{"node": n.name, "op": n.op_type} for n in executed.graph.node if n.op_type in INT_KERNELS]
    host = detect_host()
    return {
        "model": str(model),
        "runs": runs,
        "threads": threads,
        "batch": batch,
        "time_by_op": by_op,
        "time_by_kind": by_kind,
        "ms_by_kind": ms_by_kind,
        "integer_kernels": fused,
        "unfused_qdq": unfused,
        "float_compute": float_ops,
        "host": {
            "cpu_model": host.cpu_model,
            "arch": host.arch,
            "flags": list(host.flags),
            "int8": host_int8_note(list(host.flags), host.arch),
        },
        "onnxruntime": ort.__version__,
    }


def explain_text(r: dict) -> str:
    lines = [
        f"{r['model']}: {r['runs']} runs at batch {r['batch']}, {r['threads']} thread(s), "
        f"onnxruntime {r['onnxruntime']}",
        f"host: {r['host']['cpu_model']} ({r['host']['arch']}) — {r['host']['int8']}",
        "",
        "time by op type (kernel time per run):",
    ]
    for x in r["time_by_op"][:12]:
        lines.append(f"  {x['op']:<24} {x['kind']:<20} {1e3 * x['ms_per_run']:9.1f} µs  {100 * x['share']:5.1f}%")
    lines.append(
        "  by kind: "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(r["time_by_kind"].items(), key=lambda kv: -kv[1]))
    )
    lines += [
        "",
        f"integer kernels in the executed graph: {len(r['integer_kernels'])}"
        + (f" ({', '.join(sorted({x['op'] for x in r['integer_kernels']}))})" if r["integer_kernels"] else ""),
    ]
    if r["unfused_qdq"]:
        lines.append(f"Q/DQ nodes onnxruntime did not fuse: {len(r['unfused_qdq'])}")
        for u in r["unfused_qdq"][:20]:
            tail = " -> runs in float" if u["consumer_runs_in_float"] else ""
            lines.append(f"  {u['op']} '{u['node']}' ({u['kind']} {u['tensor']}) feeds {u['feeds']}{tail}")
    else:
        lines.append("Q/DQ nodes onnxruntime did not fuse: none")
    if r["float_compute"]:
        lines.append(
            f"float compute ops: {len(r['float_compute'])} ("
            + ", ".join(f"{x['op']} '{x['node']}'" for x in r["float_compute"][:8])
            + ("…" if len(r["float_compute"]) > 8 else "")
            + ")"
        )
    return "\n".join(lines)
