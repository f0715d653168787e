"""Training throughput with 1 and 2 data-parallel ranks (`edgepipe run --nproc N`, paddle.distributed.launch,
gloo on CPU), on this machine, in interleaved rounds.

Cases (each a recipe with one train stage, run with --force so every round trains again):
  mnist teacher   the default recipe's teacher (LeNet-like, conv 32-64, fc 128) on the bundled digits'
                  training split, batch 64
  camera net      the camera recipe's network (paddle.vision MobileNetV3-small ×0.5, BatchNorm) on 96×96
                  frames made from the bundled digits (a smaller frame set than the camera recipe's:
                  --frames-per-class renderings of one per digit), batch 64

Samples per second = epochs × training samples / the train stage's own wall time (the manifest's
wall_s: loading the data and starting the ranks are not in it; starting two ranks costs about 6 s
more than one process, once per run). Rounds alternate 1 and 2 ranks in an order rotated each round;
the table gives the median over rounds [min–max] and the median of the per-round ratio.

What a 2-core machine can show: one training process keeps about one core busy (Paddle's CPU kernels
run these small convolutions on one thread: a one-process run's user time is its wall time), so two
ranks can use the second core, at the cost of an all-reduce per step. Two cores bound the figure at ×2;
more ranks than cores would only share them.

    .venv/bin/python benchmarks/distributed_bench.py [--rounds 3] [--epochs 1]

Prints the table and writes JSON (default benchmarks/results/distributed_bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "mnist teacher": (
        "data: {{source: bundled, test: 1000, val: 300, calibration: 200}}\n"
        "stages:\n  - train: {{model: {{conv: [32, 64], fc: [128]}}, epochs: {epochs}, batch_size: 64}}\n"
    ),
    "camera net": (
        "data: {{source: frames, size: [96, 96], channels: 3, frames: {{per_class: {per_class}, renderings: 1}},"
        " test: 0.2, val: 0.06, calibration: 0.03}}\n"
        "stages:\n  - train: {{model: {{zoo: mobilenet_v3_small, kwargs: {{num_classes: 10, scale: 0.5}}}},"
        " epochs: {epochs}, batch_size: 64, augment_shift: 4}}\n"
    ),
}


def run_once(recipe: Path, runs: Path, nproc: int) -> dict:
    args = [sys.executable, "-m", "edgepipe.pipeline", "run", str(recipe), "--runs-dir", str(runs), "--force"]
    proc = subprocess.run(args + ["--nproc", str(nproc)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{recipe.name} with {nproc} rank(s) failed: {proc.stderr.strip().splitlines()[-1]}")
    manifest = json.loads((runs / recipe.stem / "manifest.json").read_text())
    train = manifest["stages"]["train"]
    n = manifest["data"]["counts"]["train"]
    return {"wall_s": train["wall_s"], "train_samples": n, "ranks": train.get("ranks", 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--frames-per-class", type=int, default=200)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "distributed_bench.json"))
    args = ap.parse_args()
    rows, work = {}, Path(tempfile.mkdtemp(prefix="edgepipe-dist-bench-"))
    for case in args.cases:
        name = case.replace(" ", "-")
        recipe = work / f"{name}.yaml"
        recipe.write_text(
            f"name: {name}\nseed: 0\n" + CASES[case].format(epochs=args.epochs, per_class=args.frames_per_class)
        )
        rounds = []
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            got = {n: run_once(recipe, work / "runs", n) for n in order}
            rounds.append(got)
            n_train = got[1]["train_samples"]
            print(
                f"  {case} round {r + 1}: " + ", ".join(f"{n} rank(s) {got[n]['wall_s']:.1f} s" for n in (1, 2)),
                f"({n_train} samples × {args.epochs} epoch(s))",
                file=sys.stderr,
                flush=True,
            )
        rows[case] = summarise(rounds, args.epochs)
    print_table(rows)
    out = {
        "host": {"cpus": os.cpu_count()},
        "rounds": args.rounds,
        "epochs": args.epochs,
        "frames_per_class": args.frames_per_class,
        "cases": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.json}")
    return 0


def summarise(rounds: list[dict], epochs: int) -> dict:
    out = {}
    for n in (1, 2):
        rates = [epochs * r[n]["train_samples"] / r[n]["wall_s"] for r in rounds]
        out[f"{n}"] = {"samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}
    ratios = [r[1]["wall_s"] / r[2]["wall_s"] for r in rounds]
    out["ratio_2_over_1"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    out["train_samples"] = rounds[0][1]["train_samples"]
    return out


def print_table(rows: dict) -> None:
    head = ("case", "samples", "1 rank: samples/s", "2 ranks: samples/s", "2 ranks ÷ 1")
    lines = []
    for case, r in rows.items():
        one, two, ratio = r["1"], r["2"], r["ratio_2_over_1"]
        lines.append(
            (
                case,
                str(r["train_samples"]),
                f"{one['samples_per_s']:.0f} [{one['min']:.0f}–{one['max']:.0f}]",
                f"{two['samples_per_s']:.0f} [{two['min']:.0f}–{two['max']:.0f}]",
                f"×{ratio['median']:.2f} [{ratio['min']:.2f}–{ratio['max']:.2f}]",
            )
        )
    widths = [max(len(row[k]) for row in [head, *lines]) for k in range(len(head))]
    for row in [head, *lines]:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    sys.exit(main())
