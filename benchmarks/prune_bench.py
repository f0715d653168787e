"""Structured-pruning benchmark, every ratio measured in this one run.

mnist   the pruning study recipe (pipeline/recipes/mnist_prune.yaml): the distilled student against
        the same student with half of its conv filters and fc1 neurons removed and fine-tuned with
        KD — params, MACs, ONNX bytes, onnxruntime accuracy and p50, with the issue's target checked.
(ResNet-18 / MobileNetV2 at 224×224 pruned to half their MACs: not measured yet.)

    .venv/bin/python benchmarks/prune_bench.py [--out FILE]

mnist needs the study run first: .venv/bin/edgepipe run pipeline/recipes/mnist_prune.yaml
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quant_bench import bench_main  # noqa: E402

def mnist(run_dir: Path) -> dict:
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: not found; run .venv/bin/edgepipe run pipeline/recipes/mnist_prune.yaml first")
    s = json.loads(manifest.read_text())["stages"]
    arts = {n: a["meta"] for st in s.values() for n, a in st.get("artifacts", {}).items()}
    bench = next(st["metrics"]["models"] for st in s.values() if st["type"] == "bench")
    rows = []
    for name in ("student.onnx", "student_half.onnx"):
        a = arts[name]
        rows.append({"model": name, "params": a["params"], "macs": a["macs"], "bytes": a["bytes"],
                     "accuracy": a["accuracy"], "p50_ms": bench[name]["latency"]["p50_ms"]})
    base, half = rows
    drop = 100 * (base["accuracy"] - half["accuracy"])
    print("MNIST distilled student, 50% of conv filters and fc1 neurons removed, fine-tuned with KD")
    print(f"{'model':<20} {'params':>9} {'MACs':>10} {'bytes':>9} {'accuracy':>9} {'p50 ms':>7}")
    for r in rows:
        print(f"{r['model']:<20} {r['params']:>9,} {r['macs']:>10,} {r['bytes']:>9,} {100 * r['accuracy']:>8.2f}% {r['p50_ms']:>7.3f}")
    checks = [(f"≤ 1.0 point accuracy loss after fine-tuning ({drop:.2f})", drop <= 1.0)]
    for text, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {text}")
    return {"rows": rows, "accuracy_drop_points": drop, "checks": [{"target": t, "met": ok} for t, ok in checks]}


def main() -> int:
    return bench_main(__doc__, "prune_bench.json", "runs/mnist-prune", mnist)


if __name__ == "__main__":
    sys.exit(main())
