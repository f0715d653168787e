"""Camera-mode benchmark: the runner's `--stream` on a video at 5, 15 and 30 fps (and as fast as it
goes) for the demo's fp32 student, its int8 file and the deploy stage's choice, each run a fresh
runner process, the models and rates interleaved in rounds so that a slow moment of this shared
machine falls on every column alike.

The video is made from the bundled MNIST test digits (the demo's test split): each digit drawn
white on black at 224×224, held for --hold frames, written as MJPEG with OpenCV. It is a stand-in
for a camera's stream, not camera footage. Each run also watches for digit 7 (--threshold 0.9,
--consecutive 3) and the events are scored against the frames where a 7 is shown.

    make demo && .venv/bin/python benchmarks/stream_bench.py [--run runs/mnist-kd] [--rounds 3] [--seconds 4]

Prints a table (median over rounds, with the min–max spread) and writes JSON
(default benchmarks/results/stream_bench.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "student fp32": ["export/student.onnx"],
    "student int8": ["quantize/student.int8.onnx"],
    "deployment": ["--deployment", "deploy/deploy.json"],
}
WATCH = "7"


def make_video(run: Path, path: Path, digits: int, hold: int, seed: int = 0) -> list[int]:
    """Write the video; returns the label shown on each frame."""
    import cv2
    import numpy as np

    z = np.load(run / "bench" / "test_split.npz")
    idx = np.random.default_rng(seed).permutation(len(z["y"]))[:digits]
    x = z["x"][idx, 0]
    px = np.clip((x - x.min()) / (x.max() - x.min()) * 255, 0, 255).round().astype(np.uint8)
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (224, 224))
    labels = []
    for p, y in zip(px, z["y"][idx]):
        frame = cv2.cvtColor(cv2.resize(p, (224, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
        for _ in range(hold):
            video.write(frame)
            labels.append(int(y))
    video.release()
    return labels


def runner(model_args: list[str], video: Path, fps: float | None, seconds: float, tmp: Path) -> dict:
    out, events = tmp / "r.json", tmp / "ev.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "edgepipe.runtime",
        *model_args,
        "--stream",
        str(video),
        "--seconds",
        str(seconds),
        "--watch",
        WATCH,
        "--threshold",
        "0.9",
        "--consecutive",
        "3",
        "--events",
        str(events),
        "--energy-seconds",
        "1",
        "--idle-seconds",
        "0",
        "--json",
        str(out),
        "--quiet",
    ]
    if fps:
        cmd += ["--fps", str(fps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"stream_bench: the runner failed on {' '.join(model_args)}: {proc.stderr.strip()}")
    r = json.loads(out.read_text())
    r["events"] = [json.loads(line) for line in events.read_text().splitlines()]
    return r


def score_events(events: list[dict], labels: list[int], hold: int, frames_seen: int) -> dict:
    """Raised events on a held digit 7 (hits) or elsewhere (false alarms), and the 7s held in view
    for all of their frames within the part of the video the run reached."""
    raised = [e["frame"] for e in events if e["event"] == "raised"]
    hits = {f // hold for f in raised if f < len(labels) and labels[f] == int(WATCH)}
    shown = sum(labels[k * hold] == int(WATCH) for k in range(min(frames_seen, len(labels)) // hold))
    return {
        "raised": len(raised),
        "on_a_7": len(hits),
        "sevens_shown": shown,
        "false_alarms": sum(labels[f] != int(WATCH) for f in raised if f < len(labels)),
    }


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/mnist-kd"), help="a finished run of the default recipe")
    ap.add_argument(
        "--fps", type=float, nargs="+", default=[5, 15, 30], help="camera clocks (plus one run as fast as it goes)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each stream run")
    ap.add_argument("--digits", type=int, default=60)
    ap.add_argument("--hold", type=int, default=6, help="frames each digit stays in view")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_bench.json")
    return ap.parse_args()


def measure(args) -> dict:
    """Every model at every clock in interleaved rounds: {(model, fps asked): [runner results]}."""
    rates = [*args.fps, None]
    raw = {(m, f): [] for m in MODELS for f in rates}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "digits.avi"
        labels = make_video(args.run, video, args.digits, args.hold)
        for k in range(args.rounds):
            for f in rates:
                for label, margs in MODELS.items():
                    model_args = [str(args.run / a) if a.endswith((".onnx", ".json")) else a for a in margs]
                    r = runner(model_args, video, f, args.seconds, tmp)
                    r["event_score"] = score_events(
                        r["events"], labels, args.hold, r["frames_processed"] + r["frames_dropped"]
                    )
                    raw[(label, f)].append(r)
                    print(
                        f"round {k + 1}/{args.rounds}: {label} at {f or 'max'} fps: {r['sustained_fps']:.1f} fps, "
                        f"{r['frames_dropped']} dropped",
                        file=sys.stderr,
                        flush=True,
                    )
    return raw


def summarise(label: str, f: float | None, rs: list[dict]) -> dict:
    """One table row: the median [min, max] over rounds of one model at one clock."""

    def med(key, rs=rs):
        v = [key(r) for r in rs]
        return {"median": statistics.median(v), "min": min(v), "max": max(v)}

    e = [r["energy"]["primary"] for r in rs if r.get("energy") and r["energy"]["primary"]]
    return {
        "model": label,
        "model_file": Path(rs[0]["model"]).name,
        "backend": rs[0]["backend"]["name"],
        "fps_asked": f,
        "rounds": len(rs),
        "frames_processed": med(lambda r: r["frames_processed"]),
        "frames_dropped": med(lambda r: r["frames_dropped"]),
        "sustained_fps": med(lambda r: r["sustained_fps"]),
        "p50_ms": med(lambda r: r["latency"]["p50_ms"]),
        "p99_ms": med(lambda r: r["latency"]["p99_ms"]),
        "inference_share": med(lambda r: r["share"]["inference"]),
        "cpu": med(lambda r: r["cpu_utilisation"]),
        "peak_rss_mb": med(lambda r: r["memory"]["peak_rss_mb"]),
        "mj_per_frame": statistics.median(x["mj_per_frame"] for x in e) if e else None,
        "net_mj_per_frame": statistics.median(x["net_mj_per_frame"] for x in e)
        if e and all(x["net_mj_per_frame"] is not None for x in e)
        else None,
        "energy_method": e[0]["method"] if e else None,
        "events": [r["event_score"] for r in rs],
    }


def print_table(rows: list[dict], args) -> None:
    """Print the results table."""
    print(
        f"\nstream mode on {args.digits} bundled test digits as 224×224 MJPEG frames, each held {args.hold} frames; "
        f"{args.seconds:g} s per run, median of {args.rounds} interleaved rounds [min–max]\n"
    )
    head = (
        f"{'model':<14} {'file':<24} {'clock':>6} {'sustained fps':>20} {'dropped':>8} {'p50 ms':>7} {'p99 ms':>16} "
        f"{'infer':>6} {'CPU':>5} {'mJ/frame':>9} {'above idle':>10} {'7s raised':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["fps_asked"] or 1e9, list(MODELS).index(r["model"]))):
        s, p99 = r["sustained_fps"], r["p99_ms"]
        mj = f"{r['mj_per_frame']:.1f}" if r["mj_per_frame"] is not None else "—"
        net = f"{r['net_mj_per_frame']:.2f}" if r["net_mj_per_frame"] is not None else "—"
        ev = r["events"][0]
        sevens = f"{ev['on_a_7']}/{ev['sevens_shown']}" + (
            f" +{ev['false_alarms']} false" if ev["false_alarms"] else ""
        )
        print(
            f"{r['model']:<14} {r['model_file']:<24} {('%g' % r['fps_asked']) if r['fps_asked'] else 'max':>6} "
            f"{s['median']:>7.1f} [{s['min']:.1f}–{s['max']:.1f}] {r['frames_dropped']['median']:>8.0f} "
            f"{r['p50_ms']['median']:>7.2f} {p99['median']:>6.2f} [{p99['min']:.2f}–{p99['max']:.2f}] "
            f"{100 * r['inference_share']['median']:>5.0f}% {100 * r['cpu']['median']:>4.0f}% "
            f"{mj:>9} {net:>10} {sevens:>10}"
        )


def write_result(rows: list[dict], args) -> None:
    """Write the JSON result to --out."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "data": f"{args.digits} bundled MNIST test digits, 224x224 MJPEG, each held {args.hold} frames",
                "seconds_per_run": args.seconds,
                "rounds": args.rounds,
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.out}")


def main() -> int:
    args = parse_args()
    need = [args.run / "bench" / "test_split.npz"] + [args.run / m[-1] for m in MODELS.values()]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        sys.exit(f"stream_bench: {missing[0]} not found; run `make demo` first (or pass --run)")
    raw = measure(args)
    rows = [summarise(label, f, rs) for (label, f), rs in raw.items()]
    print_table(rows, args)
    write_result(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
