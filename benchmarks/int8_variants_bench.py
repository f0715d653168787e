"""Which QDQ int8 layout onnxruntime runs fastest on the mobile nets, at batch 1 and 1 thread: the
host profile's preset against it without reduce_range, with every op but Conv/MatMul/Gemm kept
in float (the elementwise HardSigmoid/Mul/Add/HardSwish and the pools), and with the depthwise
convolutions kept in float as well — each against fp32, timed side by side in interleaved rounds
(runtime/measure/compare.py, as the deploy stage measures).

The models are paddle.vision nets at 224×224 with random backbones and the digit head of
benchmarks/quant_bench.py (speed does not depend on the weights; this measures layout, not
accuracy), calibrated on 64 upsampled digits.

    .venv/bin/python benchmarks/int8_variants_bench.py
        [--models mobilenet_v3_small mobilenet_v2] [--out FILE] [--keep DIR]

With --keep DIR the files stay: DIR/<model>.onnx (fp32) and DIR/<model>.v0.onnx … v3.onnx in the
table's order, e.g. for `edgepipe explain DIR/mobilenet_v3_small.v0.onnx`.

Prints a table and writes JSON (default benchmarks/results/int8_variants_bench.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quant_bench import _digits, digit_classifier  # noqa: E402  (benchmarks/quant_bench.py)


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "mobilenet_v2"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_variants_bench.json")
    ap.add_argument(
        "--keep", type=Path, help="keep the ONNX files in this folder (for edgepipe explain); default: a temporary one"
    )
    ap.add_argument(
        "--explain",
        action="store_true",
        help="also record edgepipe explain (kernel time per op type, unfused "
        "Q/DQ) of the fp32 file and the preset's int8 file in the JSON",
    )
    return ap.parse_args()


def bench_model(name: str, work: Path, base, calib, x, rounds: int) -> tuple[dict, Path]:
    """Export one net, quantize it four ways and time each against fp32: (its entry, the fp32 file)."""
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.export.quantize import quantize_static
    from edgepipe.runtime.measure.compare import measure
    from edgepipe.runtime.model.cost import load_onnx

    net, _ = digit_classifier(name, 256)
    fp32 = work / f"{name}.onnx"
    export_layer(net, (3, 224, 224), fp32, name=name)
    nodes = load_onnx(fp32).graph.node
    elementwise = [n.name for n in nodes if n.op_type not in ("Conv", "MatMul", "Gemm")]
    depthwise = [
        n.name for n in nodes if n.op_type == "Conv" and next((a.i for a in n.attribute if a.name == "group"), 1) > 1
    ]
    variants = {
        "profile preset": base,
        "without reduce_range": replace(base, reduce_range=False),
        "Conv/MatMul only": replace(base, nodes_to_exclude=tuple(elementwise)),
        "Conv/MatMul only, depthwise float": replace(base, nodes_to_exclude=tuple(elementwise + depthwise)),
    }
    cands = [{"id": "fp32", "model": str(fp32), "backend": "onnxruntime"}]
    for i, (label, opts) in enumerate(variants.items()):
        path = work / f"{name}.v{i}.onnx"
        quantize_static(fp32, path, calib, opts)
        cands.append({"id": label, "model": str(path), "backend": "onnxruntime"})
    res = measure(cands, x, None, threads=1, rounds=rounds, seconds=0.3)
    f32 = res[0]["p50_ms"]
    entry = {
        "elementwise_nodes": len(elementwise),
        "depthwise_convs": len(depthwise),
        "rows": [
            {
                "variant": r["id"],
                "p50_ms": r["p50_ms"],
                "range_ms": r["p50_range_ms"],
                "speedup_vs_fp32": f32 / r["p50_ms"],
            }
            for r in res
        ],
    }
    return entry, fp32


def explain_files(name: str, fp32: Path, work: Path) -> dict:
    """edgepipe explain of the fp32 file and the preset's int8 file, printed; the parts the JSON keeps."""
    from edgepipe.export.explain import explain, explain_text

    kept = {}
    for label, path in (("fp32", fp32), ("profile preset", work / f"{name}.v0.onnx")):
        e = explain(path, threads=1, seconds=3, batch=1)
        print(explain_text(e))
        kept[label] = {k: e[k] for k in ("runs", "time_by_op", "time_by_kind", "ms_by_kind")} | {
            "unfused_qdq": len(e["unfused_qdq"]),
            "integer_kernels": len(e["integer_kernels"]),
        }
    return kept


def print_table(out: dict, host, base, rounds: int) -> None:
    """Print each model's variants against fp32."""
    print(
        f"\nonnxruntime, batch 1, 1 thread, {host.cpu_model} ({', '.join(out['flags']) or 'no AVX flags read'}); "
        f"preset {base.bits}, reduce_range={base.reduce_range} (profile {out['profile']}); "
        f"median of {rounds} rounds\n"
    )
    for name, m in out["models"].items():
        print(f"{name} ({m['elementwise_nodes']} non-Conv/MatMul nodes, {m['depthwise_convs']} depthwise convs)")
        for r in m["rows"]:
            print(
                f"  {r['variant']:<36} {r['p50_ms']:>7.3f} ms [{r['range_ms'][0]:.3f}–{r['range_ms'][1]:.3f}]  "
                f"×{r['speedup_vs_fp32']:.2f} vs fp32"
            )


def main() -> int:
    args = parse_args()
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile
    from edgepipe.export.quantize import QuantOptions

    host = detect_host()
    profile = detect_profile(host)
    base = QuantOptions.from_profile(profile) if profile else QuantOptions()
    calib = _digits("calibration", 64, seed=1)[0]
    x = _digits("val", 64, seed=4)[0]
    out = {
        "host": host.cpu_model,
        "flags": [f for f in host.flags if "vnni" in f or f.startswith("avx")],
        "profile": profile.name if profile else None,
        "preset": base.bits,
        "reduce_range": base.reduce_range,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgepipe-int8v-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            out["models"][name], fp32 = bench_model(name, work, base, calib, x, args.rounds)
            if args.explain:
                out["models"][name]["explain"] = explain_files(name, fp32, work)
    print_table(out, host, base, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
