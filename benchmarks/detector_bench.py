"""The detector that trains here, measured as a recipe runs it: detection frames made from the bundled digits
(1 to 3 digits a frame, test and val digits held out), the PicoDet-style detector (models/detector.py)
trained from scratch, exported, quantized to int8 under the mAP guard, and benchmarked — one
`edgepipe run` of a recipe written from the flags, optionally data-parallel (--nproc).

Prints test mAP@[.5:.95] and mAP@.5 of the Paddle model, of its ONNX export and of the int8 file, the int8
file's drop in mAP points, p50 latency of both files, and each stage's wall time; writes the JSON
(default benchmarks/results/detector_bench.json) and keeps the run directory (--runs-dir).

    .venv/bin/python benchmarks/detector_bench.py --size 96 --frames 3000 --width 32 --epochs 24 --nproc 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPE = """\
name: detector-bench
seed: 0
data:
  source: frames
  size: [{size}, {size}]
  frames: {{objects: {objects}, count: {frames}}}
  test: {test}
  val: {val}
  calibration: 0.05
stages:
  - train:
      model: {{python: "edgepipe.pipeline.models.detector:picodet_lite", kwargs: {{width: {width}}}}}
      epochs: {epochs}
      batch_size: {batch}
      lr: {lr}
      augment_shift: 0
      output: detector
      label: detector
  - export: {{models: [detector], parity_samples: 32}}
  - quantize: {{model: detector.onnx, calibration_samples: 64, max_accuracy_drop: {max_drop}}}
  - bench: {{threads: 1, batches: [1], energy_seconds: 0}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--frames", type=int, default=3000, help="training frames")
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--max-drop", type=float, default=1.0, help="the int8 guard's budget, mAP points")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "detector_bench.json"))
    args = ap.parse_args()
    opts = {k: getattr(args, k) for k in ("size", "objects", "frames", "test", "val", "width", "epochs", "batch", "lr")}
    recipe = Path(args.runs_dir) / "detector-bench.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(RECIPE.format(**opts, max_drop=args.max_drop))
    cmd = [sys.executable, "-m", "edgepipe.pipeline", "run", str(recipe), "--runs-dir", args.runs_dir, "--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + (["--nproc", str(args.nproc)] if args.nproc > 1 else []))
    if proc.returncode != 0:
        return proc.returncode
    wall = time.perf_counter() - t0
    stages = json.loads((Path(args.runs_dir) / "detector-bench" / "manifest.json").read_text())["stages"]
    train, export, quant = stages["train"]["metrics"], stages["export"]["metrics"]["detector"], stages["quantize"]
    bench = stages["bench"]["metrics"]["models"]
    out = {
        "options": opts | {"nproc": args.nproc, "max_drop": args.max_drop},
        "paddle": {"map": train["test_map"], "map50": train["test_map50"]},
        "onnx_fp32": {"map": export["map"], "map50": export["map50"], "p50_ms": _p50(bench, "detector.onnx")},
        "int8": {
            "map": quant["metrics"]["accuracy"],
            "map50": quant["metrics"].get("map50"),
            "drop_points": quant["metrics"]["accuracy_drop_points"],
            "kept_float": quant["metrics"].get("guard", {}).get("kept_float"),
            "p50_ms": _p50(bench, "detector.int8.onnx"),
        },
        "stage_wall_s": {n: s["wall_s"] for n, s in stages.items()},
        "run_wall_s": wall,
        "params": train["params"],
        "history": train["history"],
    }
    print(f"\n{'model':<14} {'mAP@[.5:.95]':>13} {'mAP@.5':>8} {'p50 ms':>8}")
    for name, key in (("Paddle", "paddle"), ("ONNX fp32", "onnx_fp32"), ("int8", "int8")):
        r = out[key]
        p50 = f"{r['p50_ms']:.3f}" if r.get("p50_ms") else "—"
        print(f"{name:<14} {100 * r['map']:>12.2f}% {100 * (r['map50'] or 0):>7.2f}% {p50:>8}")
    print(f"int8 drop {out['int8']['drop_points']:.2f} mAP points; kept in float: {out['int8']['kept_float']}")
    print("stage wall s: " + ", ".join(f"{k} {v:.0f}" for k, v in out["stage_wall_s"].items()) + f"; run {wall:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return 0


def _p50(bench: dict, name: str):
    return ((bench.get(name) or {}).get("latency") or {}).get("p50_ms")


if __name__ == "__main__":
    sys.exit(main())
