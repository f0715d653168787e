"""Latency measurement the way onnxruntime_perf_test and TFLite's benchmark_model do it.

Warm-up and measured phases each run until both a count and a minimum time are met (the
measured phase stops at a maximum time); every iteration is timed with perf_counter_ns;
cold start (session creation, first inference) is reported on its own.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.errors import FieldError
from edgepipe.runtime.session import input_feed, open_session, resolve_feed


@dataclass(frozen=True)
class BenchOptions:
    threads: int = 1
    batch: int = 1
    warmup_iters: int = 10
    warmup_seconds: float = 0.2
    iters: int = 100
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __post_init__(self):
        for name in ("threads", "batch", "iters"):
            if getattr(self, name) < 1:
                raise FieldError(name, "must be at least 1")
        if self.max_seconds < self.min_seconds:
            raise FieldError("max_seconds", "must be at least min_seconds")
        if not self.providers:
            raise FieldError("providers", "list at least one execution provider")


def latency_stats(ns: list[int] | np.ndarray) -> dict[str, float]:
    """Summary of per-iteration times, in milliseconds."""
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        raise EdgepipeError("no iterations were timed")
    pct = np.percentile(ms, [50, 90, 95, 99])
    return {
        "n": int(ms.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "p50_ms": float(pct[0]),
        "p90_ms": float(pct[1]),
        "p95_ms": float(pct[2]),
        "p99_ms": float(pct[3]),
        "max_ms": float(ms.max()),
    }


def _loop(run, min_count: int, min_s: float, max_s: float | None) -> list[int]:
    times: list[int] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - start
        if max_s is not None and elapsed >= max_s:
            break
        if len(times) >= min_count and elapsed >= min_s:
            break
    return times


def benchmark(model: str | Path, opts: BenchOptions = BenchOptions(), feed: dict | None = None,
              feed_source: str = "inputs") -> dict:
    t0 = time.perf_counter_ns()
    session = open_session(model, threads=opts.threads, providers=opts.providers)
    create_ms = (time.perf_counter_ns() - t0) / 1e6
    if feed is None:
        feed = input_feed(session, opts.batch)
    else:
        feed = resolve_feed(session, feed, feed_source)
    out_names = [o.name for o in session.get_outputs()]

    def run():
        session.run(out_names, feed)

    t0 = time.perf_counter_ns()
    run()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    warm = _loop(run, opts.warmup_iters, opts.warmup_seconds, None)
    times = _loop(run, opts.iters, opts.min_seconds, opts.max_seconds)
    stats = latency_stats(times)
    batch = next(iter(feed.values())).shape[0]
    return {
        "model": str(model),
        "model_bytes": Path(model).stat().st_size,
        "options": asdict(opts),
        "batch": int(batch),
        "cold_start": {"session_create_ms": create_ms, "first_inference_ms": first_ms},
        "warmup_iters": len(warm),
        "latency": stats,
        "throughput_per_s": float(batch * 1000.0 / stats["mean_ms"]),
        "providers": session.get_providers(),
    }
