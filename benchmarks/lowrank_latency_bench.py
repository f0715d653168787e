"""Low-rank by MACs against low-rank by measured latency (`target: latency`), in one run.

For paddle.vision MobileNetV3-small and ResNet-18 at 224×224 (random weights: this measures speed,
which does not depend on them), every Linear and Conv2D layer the factorisations apply to is
factorised with the same budget read two ways: `ratio: 0.5` as ≤ 0.5× the layer's MACs, and
`ratio: 0.5, target: latency` as ≤ 0.5× the layer's measured time on this machine (a layer whose
factorisation is not that fast is left alone). The three models are then timed whole, side by
side (onnxruntime fp32, batch 1, 1 thread, interleaved rounds: runtime/measure/compare.py, as the deploy
stage measures), with the factorisation's own wall time.

    .venv/bin/python benchmarks/lowrank_latency_bench.py
        [--models mobilenet_v3_small resnet18] [--ratio 0.5] [--out FILE]

Prints a table and writes JSON (default benchmarks/results/lowrank_latency_bench.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quant_bench import vision_model  # noqa: E402  (benchmarks/quant_bench.py)


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet18"])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lowrank_latency_bench.json")
    return ap.parse_args()


def bench_model(name: str, work: Path, x, args) -> list[dict]:
    """Factorize one net to each budget, export and time the variants against the original: its table."""
    import paddle

    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.pipeline.compress.lowrank import LayerRank, factorize
    from edgepipe.runtime.measure.compare import measure
    from edgepipe.runtime.model.cost import describe

    paddle.seed(0)
    net = vision_model(name)
    net.eval()
    state = net.state_dict()
    paths, rows = {}, []
    paths["original"] = export_layer(net, (3, 224, 224), work / f"{name}.onnx", name=name)
    for label, rule in (
        ("≤ratio× MACs", LayerRank("*", ratio=args.ratio)),
        ("≤ratio× measured time", LayerRank("*", ratio=args.ratio, target="latency")),
    ):
        m = vision_model(name)
        m.set_state_dict(state)
        m.eval()
        t0 = time.perf_counter()
        m, _, report = factorize(m, (rule,), (3, 224, 224))
        wall = time.perf_counter() - t0
        m.eval()
        paths[label] = export_layer(m, (3, 224, 224), work / f"{name}.{len(paths)}.onnx", name=f"{name}-{len(paths)}")
        done = [r for r in report if "skip" not in r]
        rows.append(
            {
                "variant": label,
                "factorised": len(done),
                "left_alone": len(report) - len(done),
                "factorize_s": wall,
                "layers": report,
            }
        )
    res = measure(
        [{"id": k, "model": str(p), "backend": "onnxruntime"} for k, p in paths.items()],
        x,
        None,
        threads=1,
        rounds=args.rounds,
        seconds=0.3,
    )
    base = res[0]["p50_ms"]
    table = [{"variant": "original", "factorised": 0, "left_alone": 0, "factorize_s": 0.0}] + rows
    for row, r, p in zip(table, res, paths.values()):
        row.update({"p50_ms": r["p50_ms"], "range_ms": r["p50_range_ms"], "speedup": base / r["p50_ms"], **describe(p)})
    return table


def print_table(out: dict, args) -> None:
    """Print every model's variants."""
    print(
        f"\nfp32, onnxruntime, batch 1, 1 thread; median of {args.rounds} interleaved rounds (range over rounds); "
        f"budget ratio {args.ratio:g}\n"
    )
    print(
        f"{'model':<20} {'variant':<24} {'factorised':>10} {'left':>5} {'MACs (M)':>9} {'params (M)':>10} "
        f"{'p50 ms (range)':>22} {'speed-up':>8} {'factorise s':>11}"
    )
    for name, table in out["models"].items():
        for r in table:
            lo, hi = r["range_ms"]
            print(
                f"{name:<20} {r['variant'].replace('ratio', format(args.ratio, 'g')):<24} "
                f"{r['factorised']:>10} {r['left_alone']:>5} "
                f"{r['macs'] / 1e6:>9.1f} {r['params'] / 1e6:>10.2f} {'%.3f (%.3f–%.3f)' % (r['p50_ms'], lo, hi):>22} "
                f"{'×%.2f' % r['speedup']:>8} {r['factorize_s']:>11.1f}"
            )


def main() -> int:
    args = parse_args()
    import numpy as np

    from edgepipe.runtime.runner import environment

    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    out = {"ratio": args.ratio, "rounds": args.rounds, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgepipe-lrlat-") as tmp:
        work = Path(tmp)
        for name in args.models:
            out["models"][name] = bench_model(name, work, x, args)
    print_table(out, args)
    out["environment"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
