"""The detecting camera's stream case: a digit walks into a zone and out, and the runner's `--stream` with a
trained detector (benchmarks/detector_bench.py's export) must raise the event when it is in the zone and
clear it when it leaves — frames, drops, p50/p99 per frame at the camera's clock, and the events against
the frames where the digit's box centre is inside the zone.

The video is made here: a camera-like background (pipeline/data/frames.py), and a held-out test digit
of the detection frames (an annotation's source digit in the test split, never seen in training)
pasted at --side pixels, stepping --step pixels a frame from the left edge to the right; the zone is the
frame's right half. Written as MJPEG with OpenCV at --scale times the model's input size (the stream
resizes each frame to the model's input and reports boxes in the frame's pixels). Digits stand in for
people; it is not camera footage.

    .venv/bin/python benchmarks/stream_detect_bench.py --model runs/detector-bench/export/detector.onnx \\
        --frames-dir ~/.cache/edgepipe/frames/det-96-3-5000-100-200-0 [--rounds 3] [--fps 15]

Prints a table (median over rounds, min–max) and writes JSON (default
benchmarks/results/stream_detect_bench.json); --snapshot DIR keeps the raising frames as JPEGs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_walk(frames_dir: Path, path: Path, size: int, scale: int, side: int, step: int, cls: int, seed: int):
    """Write the video; returns (the frame indices where the digit's box centre is in the zone, the zone)."""
    import cv2

    from edgepipe.pipeline.data.frames import background, paste
    from edgepipe.pipeline.data.mnist import load_bundled

    images, _ = load_bundled()
    doc = json.loads((frames_dir / "test" / "instances_test.json").read_text())
    source = next(a["source_digit"] for a in doc["annotations"] if a["category_id"] == cls + 1)
    rng = np.random.default_rng(seed)
    base = background(size, rng)
    y0, ink_rng = (size - side) // 2, np.random.default_rng(seed + 1)
    big = size * scale
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (big, big))
    inside, x0s = [], list(range(-side, size + 1, step))
    for k, x0 in enumerate([None, None, *x0s, None, None]):  # empty frames before and after the walk
        frame = base.copy()
        if x0 is not None and 0 <= x0 <= size - side:
            glyph = paste(frame, images[source], side, y0, x0, np.random.default_rng(ink_rng.integers(1 << 30)))
            xs = np.nonzero(glyph.max(axis=0) > 0.2)[0]
            centre = x0 + (xs.min() + xs.max() + 1) / 2 if len(xs) else None
            if centre is not None and centre >= size / 2:
                inside.append(k)
        img = np.clip(frame, 0, 255).astype(np.uint8)[..., ::-1]  # RGB -> BGR for OpenCV
        video.write(cv2.resize(img, (big, big), interpolation=cv2.INTER_NEAREST))
    video.release()
    half = big / 2
    return inside, f"{half:g},0 {big:g},0 {big:g},{big:g} {half:g},{big:g}"


def expected_events(inside: list[int], consecutive: int) -> list[tuple[str, int]]:
    """Raised on the consecutive-th frame of each run of in-zone frames, cleared on the frame after it."""
    runs, out = [], []
    for k in inside:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    for r in runs:
        if len(r) >= consecutive:
            out += [("raised", r[consecutive - 1]), ("cleared", r[-1] + 1)]
    return out


def run_stream(model: Path, video: Path, zone: str, cls: int, args, tmp: Path, snapshot: Path | None) -> dict:
    out, events = tmp / "r.json", tmp / "ev.jsonl"
    cmd = [sys.executable, "-m", "edgepipe.runtime", str(model), "--stream", str(video), "--watch", str(cls),
           "--zone", zone, "--consecutive", str(args.consecutive), "--threshold", str(args.threshold),
           "--events", str(events), "--json", str(out), "--profile", "none", "--energy-seconds", "0"]  # fmt: skip
    cmd += ["--fps", str(args.fps)] if args.fps else []
    cmd += ["--snapshot", str(snapshot)] if snapshot else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the stream failed: {proc.stderr.strip().splitlines()[-1]}")
    r = json.loads(out.read_text())
    r["events"] = [json.loads(line) for line in events.read_text().splitlines()]
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a detector exported by edgepipe (its task in the file)")
    ap.add_argument("--frames-dir", type=Path, required=True, help="the detection frames it was trained on")
    ap.add_argument("--class", dest="cls", type=int, default=7, help="the digit that walks (default 7)")
    ap.add_argument("--side", type=int, default=30, help="the digit's square, in model input pixels")
    ap.add_argument("--step", type=int, default=4, help="pixels it moves a frame")
    ap.add_argument("--scale", type=int, default=2, help="the video's size over the model's input size")
    ap.add_argument("--fps", type=float, default=15)
    ap.add_argument("--consecutive", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--snapshot", type=Path)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "stream_detect_bench.json"))
    args = ap.parse_args()
    import onnxruntime as ort

    size = int(ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[2])
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "walk.avi"
        inside, zone = make_walk(args.frames_dir, video, size, args.scale, args.side, args.step, args.cls, seed=0)
        want = expected_events(inside, args.consecutive)
        for k in range(args.rounds):
            r = run_stream(args.model, video, zone, args.cls, args, Path(tmp), args.snapshot if k == 0 else None)
            got = [(e["event"], e["frame"]) for e in r["events"]]
            lat = r["latency"]
            rounds.append(
                {"events": got, "right": got == want, "frames_processed": r["frames_processed"],
                 "frames_dropped": r["frames_dropped"], "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}
            )  # fmt: skip
            print(f"  round {k + 1}: events {got} (expected {want}), p50 {lat['p50_ms']:.2f} ms", file=sys.stderr)
    out = {
        "model": str(args.model),
        "video": {"in_zone_frames": inside, "zone": zone, "scale": args.scale, "side": args.side, "step": args.step},
        "expected_events": want,
        "fps": args.fps,
        "rounds": rounds,
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "events_right": sum(r["right"] for r in rounds),
    }
    print(f"{'fps':>5} {'frames':>7} {'dropped':>8} {'p50 ms':>14} {'p99 ms':>14}  events right")
    p50s, p99s = [r["p50_ms"] for r in rounds], [r["p99_ms"] for r in rounds]
    print(
        f"{args.fps:>5g} {rounds[0]['frames_processed']:>7} {max(r['frames_dropped'] for r in rounds):>8} "
        f"{out['p50_ms']:>6.2f} [{min(p50s):.2f}–{max(p50s):.2f}] "
        f"{out['p99_ms']:>6.2f} [{min(p99s):.2f}–{max(p99s):.2f}]"
        f"  {out['events_right']} of {len(rounds)} rounds"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
