"""Runtime benchmark of the demo's models: latency, throughput, MAC/s against the host's GEMM peak
and estimated energy, per model, batch size and thread count, each model in a fresh runner process
(as on a device). Ratios (int8 vs fp32 student, student vs teacher) come from this one run.

    make demo && .venv/bin/python benchmarks/runtime_bench.py [--run runs/mnist-kd] [--out FILE]

Prints a table and writes JSON (default benchmarks/results/runtime_bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "teacher fp32": "export/teacher.onnx",
    "student fp32": "export/student.onnx",
    "student int8": "quantize/student.int8.onnx",
}


def runner(model: Path, batches, threads: int, out: Path, inputs: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "edgepipe.runtime",
        str(model),
        "--inputs",
        str(inputs),
        "--threads",
        str(threads),
        "--warmup",
        "50",
        "--warmup-seconds",
        "0.5",
        "--iters",
        "300",
        "--min-seconds",
        "2",
        "--max-seconds",
        "20",
        "--energy-seconds",
        "1",
        "--idle-seconds",
        "0",
        "--json",
        str(out),
        "--quiet",
    ]
    cmd += [a for b in batches for a in ("--batch", str(b))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"runtime_bench: the runner failed on {model}: {proc.stderr.strip()}")
    return json.loads(out.read_text())


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/mnist-kd"), help="a finished run of the default recipe")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "runtime_bench.json")
    return ap.parse_args()


def measure(args, inputs: Path) -> tuple[list[dict], dict]:
    """The runner on every model at every thread count: (one row per batch, the runner's results)."""
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, rel in MODELS.items():
            for t in args.threads:
                r = runner(args.run / rel, args.batches, t, Path(tmp) / "r.json", inputs)
                raw[f"{label} / {t} thread(s)"] = r
                e = r["energy"]["primary"]
                for run in r["runs"]:
                    roof = run.get("roofline") or {}
                    rows.append(
                        {
                            "model": label,
                            "threads": t,
                            "batch": run["batch"],
                            "p50_ms": run["latency"]["p50_ms"],
                            "p90_ms": run["latency"]["p90_ms"],
                            "throughput_per_s": run["throughput_per_s"],
                            "fraction_of_peak": roof.get("fraction_of_peak"),
                            "peak_rss_mb": r["memory"]["peak_rss_mb"],
                            "mj_per_inference": e["mj_per_inference"] if run["batch"] == e["batch"] else None,
                            "energy_method": e["method"],
                            "accuracy": r.get("accuracy"),
                        }
                    )
    return rows, raw


def ratios_of(rows: list[dict], threads: list[int], batches: list[int]) -> list[dict]:
    """int8 against fp32 student, and student against teacher, at each thread count and batch."""

    def find(model, t, b):
        return next(x for x in rows if x["model"] == model and x["threads"] == t and x["batch"] == b)

    ratios = []
    for t in threads:
        for b in batches:
            fp, q, te = find("student fp32", t, b), find("student int8", t, b), find("teacher fp32", t, b)
            ratios.append(
                {
                    "threads": t,
                    "batch": b,
                    "int8_speedup_vs_fp32": fp["p50_ms"] / q["p50_ms"],
                    "student_speedup_vs_teacher": te["p50_ms"] / fp["p50_ms"],
                }
            )
    return ratios


def print_table(rows: list[dict], ratios: list[dict]) -> None:
    """Print the rows and the ratios."""
    head = (
        f"{'model':<14} {'thr':>3} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'inf/s':>9} "
        f"{'% peak':>7} {'RSS MB':>7} {'mJ/inf':>7}"
    )
    print(head + "\n" + "-" * len(head))
    for x in rows:
        frac = f"{100 * x['fraction_of_peak']:.1f}" if x["fraction_of_peak"] else "—"
        mj = f"{x['mj_per_inference']:.2f}" if x["mj_per_inference"] is not None else ""
        print(
            f"{x['model']:<14} {x['threads']:>3} {x['batch']:>5} {x['p50_ms']:>8.3f} {x['p90_ms']:>8.3f} "
            f"{x['throughput_per_s']:>9.0f} {frac:>7} {x['peak_rss_mb']:>7.1f} {mj:>7}"
        )
    print("\nratios in this run (p50):")
    for x in ratios:
        print(
            f"  {x['threads']} thread(s), batch {x['batch']:>2}: "
            f"int8 vs fp32 student ×{x['int8_speedup_vs_fp32']:.2f}, "
            f"student vs teacher ×{x['student_speedup_vs_teacher']:.2f}"
        )


def main() -> int:
    args = parse_args()
    inputs = args.run / "bench" / "test_split.npz"
    missing = [str(args.run / m) for m in MODELS.values() if not (args.run / m).is_file()] + (
        [] if inputs.is_file() else [str(inputs)]
    )
    if missing:
        sys.exit(f"runtime_bench: {missing[0]} not found; run `make demo` first (or pass --run)")
    rows, raw = measure(args, inputs)
    ratios = ratios_of(rows, args.threads, args.batches)
    print_table(rows, ratios)
    host = next(iter(raw.values()))["environment"]
    peaks = next((r["runs"][0]["roofline"]["peaks"] for r in raw.values() if r["runs"][0].get("roofline")), None)
    if peaks:
        print(
            f"\nhost peak (best of GEMM and conv kernels): fp32 {peaks['fp32'] / 1e9:.1f} GMAC/s, "
            f"int8 {peaks['int8'] / 1e9:.1f} GMAC/s "
            f"({host['host']['cpu_model']}, flags {', '.join(host['host']['flags'])}); energy is the "
            f"'{rows[0]['energy_method']}' method of the detected profile"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"rows": rows, "ratios": ratios, "environment": host, "gemm_peaks": peaks, "runner_results": raw}, indent=1
        )
        + "\n"
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
