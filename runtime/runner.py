"""The on-device runner: `python -m edgepipe.runtime MODEL.onnx` (or `edgepipe-runner`).

Needs only onnxruntime, numpy and psutil. Measures latency (see bench.py), memory of this
clean process (RSS growth from session creation, peak RSS from ru_maxrss), model bytes,
and, given an .npz with labels, accuracy on the device. Prints a summary; --json writes it.
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np
import psutil

from edgepipe.devices import EdgepipeError, detect_host
from edgepipe.runtime.atomic import write_json_atomic
from edgepipe.runtime.bench import BenchOptions, benchmark
from edgepipe.runtime.session import accuracy, open_session, resolve_feed

LABEL_KEYS = ("y", "labels", "label")


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss() -> tuple[float, str]:
    """Peak resident memory of this process in MB, and where the figure comes from.

    On Linux, VmHWM (/proc/self/status): ru_maxrss is *not* used there because the kernel
    carries the pre-exec high-water mark across execve, so a runner started by a large
    parent (a training process holding paddle) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM"
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "ru_maxrss"


def load_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if not path.is_file():
        raise EdgepipeError(f"{path}: inputs file not found")
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise EdgepipeError(f"{path}: not a readable .npz file ({type(exc).__name__}); write it with numpy.savez") from None
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    return arrays, labels


def run(model: Path, opts: BenchOptions, inputs: Path | None = None) -> dict:
    """Benchmark first (memory is read right after it, so it reflects a deployed batch-`opts.batch`
    process), then the optional accuracy pass over every labelled input."""
    rss_start = _rss_mb()
    arrays, labels, feed = None, None, None
    if inputs is not None:
        arrays, labels = load_npz(inputs)
        n = len(next(iter(arrays.values()), []))
        if labels is not None and len(labels) != n:
            raise EdgepipeError(f"{inputs}: {len(labels)} labels for {n} inputs")
        feed = {k: np.ascontiguousarray(v[: opts.batch]) for k, v in arrays.items()}
    result = benchmark(model, opts, feed, feed_source=str(inputs))
    result["memory"] = {
        "rss_before_session_mb": rss_start,
        "rss_after_mb": _rss_mb(),
        "rss_growth_mb": _rss_mb() - rss_start,
    }
    result["memory"]["peak_rss_mb"], result["memory"]["peak_rss_source"] = peak_rss()
    if labels is not None:
        session = open_session(model, threads=opts.threads, providers=opts.providers)
        x = next(iter(resolve_feed(session, arrays, str(inputs)).values()))
        result["accuracy"] = accuracy(session, x, labels)
        result["accuracy_samples"] = int(len(labels))
    result["host"] = detect_host().to_dict()
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    return result


def summary(r: dict) -> str:
    lat, mem = r["latency"], r["memory"]
    lines = [
        f"model      {r['model']} ({r['model_bytes'] / 1024:.1f} KiB)",
        f"cold start session {r['cold_start']['session_create_ms']:.1f} ms, first inference {r['cold_start']['first_inference_ms']:.2f} ms",
        f"latency    p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  mean {lat['mean_ms']:.3f} ± {lat['std_ms']:.3f}  (n={lat['n']}, batch {r['batch']}, {r['options']['threads']} thread(s))",
        f"memory     peak RSS {mem['peak_rss_mb']:.1f} MB, growth from session {mem['rss_growth_mb']:.1f} MB",
    ]
    if "accuracy" in r:
        lines.append(f"accuracy   {100 * r['accuracy']:.2f}% on {r['accuracy_samples']} labelled inputs")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgepipe-runner", description="Run and measure an ONNX model on this device (no paddle needed).")
    p.add_argument("model", type=Path, help="the .onnx model")
    p.add_argument("--inputs", type=Path, help=".npz with one array per model input (or 'x'), and optional labels 'y'")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--batch", type=int, default=1, help="batch size for generated inputs (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations, at least (default 10)")
    p.add_argument("--iters", type=int, default=100, help="measured iterations, at least (default 100)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="measure for at least this long (default 1)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop measuring after this long (default 30)")
    p.add_argument("--provider", action="append", help="execution provider, in order (default CPUExecutionProvider)")
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = BenchOptions(
            threads=args.threads, batch=args.batch, warmup_iters=args.warmup, iters=args.iters,
            min_seconds=args.min_seconds, max_seconds=args.max_seconds,
            providers=tuple(args.provider or ("CPUExecutionProvider",)),
        )
        result = run(args.model, opts, args.inputs)
        if args.json:
            write_json_atomic(args.json, result)
    except EdgepipeError as exc:
        print(f"edgepipe-runner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not args.quiet:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
