"""Latency measurement the way onnxruntime_perf_test and TFLite's benchmark_model do it.

Warm-up and measured phases each run until both a count and a minimum time are met (the
measured phase stops at a maximum time); every iteration is timed with perf_counter_ns;
cold start (session creation, first inference) is reported on its own, once per model; each
batch size gets its own warm-up and measured phase on the same session.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.errors import FieldError
from edgepipe.runtime.inputs.checks import input_feed
from edgepipe.runtime.measure.hostload import HostLoad
from edgepipe.runtime.model.backends import describe, open_model, precision_problem
from edgepipe.runtime.model.session import resolve_feed, usable_providers


@dataclass(frozen=True)
class BenchOptions:
    threads: int = 1  # intra-op
    inter_threads: int = 1
    batches: tuple[int, ...] = (1,)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    warmup_iters: int = 10
    warmup_seconds: float = 0.2
    iters: int = 100
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    dims: tuple[str, ...] = ()  # values for named dynamic dims, "name=value"
    shapes: tuple[
        str, ...
    ] = ()  # shapes of inputs with dynamic dims, "name=1x3x48x320" (runtime/inputs/feeds.parse_shapes)
    backend: Literal["onnxruntime", "openvino"] = "onnxruntime"
    precision: Literal["auto", "f32", "bf16", "f16"] = "auto"  # OpenVINO's inference precision; auto = its default
    device: str = "CPU"  # OpenVINO device

    def __post_init__(self):
        for name in ("threads", "inter_threads", "iters"):
            if getattr(self, name) < 1:
                raise FieldError(name, "must be at least 1")
        if not self.batches or min(self.batches) < 1:
            raise FieldError("batches", "list batch sizes of at least 1")
        if self.warmup_iters < 0 or self.warmup_seconds < 0 or self.min_seconds < 0:
            raise FieldError("warmup_iters", "warm-up and minimum times must be >= 0")
        if self.max_seconds < self.min_seconds:
            raise FieldError("max_seconds", "must be at least min_seconds")
        if not self.providers:
            raise FieldError("providers", "list at least one execution provider")
        problem = precision_problem(self.backend, self.precision)
        if problem:
            raise FieldError("precision", problem)
        self.dim_values()

    def dim_values(self) -> dict[str, int]:
        out = {}
        for d in self.dims:
            name, sep, value = d.partition("=")
            if not sep or not name or not value.isdigit() or int(value) < 1:
                raise FieldError("dims", f"'{d}' is not NAME=VALUE with a positive integer value")
            out[name] = int(value)
        return out


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


def quantile_ci95(ns: list[int] | np.ndarray, qs=(0.5, 0.9, 0.99)) -> dict[str, list[float]]:
    """Distribution-free 95% confidence interval of each quantile, in ms, from the order statistics
    (the binomial's normal approximation, as in Hahn & Meeker): how well this run's samples pin the
    quantile down. It says nothing of drift between runs on a shared machine."""
    ms = np.sort(np.asarray(ns, dtype=np.float64)) / 1e6
    n, out = ms.size, {}
    for q in qs:
        half = 1.96 * np.sqrt(n * q * (1 - q))
        lo, hi = int(np.clip(np.floor(n * q - half), 0, n - 1)), int(np.clip(np.ceil(n * q + half), 0, n - 1))
        out[f"p{round(100 * q)}"] = [float(ms[lo]), float(ms[hi])]
    return out


def latency_histogram(ns: list[int] | np.ndarray, ratio: float = 1.02, max_bins: int = 400) -> dict[str, list]:
    """Per-iteration times as a fine histogram: bins in geometric steps of `ratio` (2%: finer than the
    run-to-run spread) from the fastest to the slowest iteration, widened if that needs more than
    `max_bins`. Small enough for the JSON, fine enough to draw the distribution and its tail."""
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    lo, hi = float(ms.min()), float(ms.max())
    n = int(np.ceil(np.log(hi / lo) / np.log(ratio))) if hi > lo else 1
    edges = np.geomspace(lo, hi * (1 + 1e-9), min(max(n, 1), max_bins) + 1) if hi > lo else np.array([lo, lo * ratio])
    counts, _ = np.histogram(ms, bins=edges)
    # the edges as counted: rounding them would put the fastest run below the first edge
    return {"edges_ms": [float(e) for e in edges], "counts": counts.tolist()}


def timed_runs(run, min_count: int, min_s: float, max_s: float | None = None) -> list[int]:
    """Nanoseconds of each call of run(), until both `min_count` calls and `min_s` seconds are done
    (stopping at `max_s`)."""
    times: list[int] = []
    if min_count == 0 and min_s == 0:
        return times
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


def interleaved_rounds(
    runs: dict[str, Callable[[], object]],
    rounds: int,
    seconds: float,
    min_count: int = 1,
    before_each: Callable[[str], None] | None = None,
    per_round: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[int]], list]:
    """Each of `runs` timed in `rounds` rounds, their order rotated each round (drift that slows a round
    slows them all): (the p50 in ms of each in each round, every timed run's ns, and what `per_round`'s
    context gave for each round, e.g. the host load). `before_each(name)` runs untimed before each block
    (a settle or a warm-up)."""
    names = list(runs)
    p50: dict[str, list[float]] = {k: [] for k in names}
    every: dict[str, list[int]] = {k: [] for k in names}
    contexts = []
    for r in range(rounds):
        with per_round() if per_round else contextlib.nullcontext() as ctx:
            for k in names[r % len(names) :] + names[: r % len(names)]:
                if before_each is not None:
                    before_each(k)
                ns = timed_runs(runs[k], min_count, seconds)
                p50[k].append(float(np.median(ns)) / 1e6)
                every[k].extend(ns)
        contexts.append(ctx)
    return p50, every, contexts


def batch_of(arrays: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first `batch` rows of each array (repeated when the file holds fewer)."""
    out = {}
    for k, v in arrays.items():
        reps = -(-batch // len(v)) if len(v) else 1
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:batch] if reps > 1 else v[:batch])
    return out


class Bench:
    """One model's session, opened once (that is the cold start), measured at each batch size."""

    def __init__(self, model: str | Path, opts: BenchOptions, strict_providers: bool = True):
        self.model, self.opts = Path(model), opts
        ort = opts.backend == "onnxruntime"
        self.providers = (
            usable_providers(opts.providers, strict=strict_providers)
            if ort
            else {"requested": [], "used": [], "unavailable": [], "build_offers": []}
        )
        t0 = time.perf_counter_ns()
        self.session = open_model(
            model,
            opts.backend,
            threads=opts.threads,
            inter_threads=opts.inter_threads,
            providers=tuple(self.providers["used"]),
            optimization=opts.graph_optimization,
            precision=opts.precision,
            device=opts.device,
        )
        self.create_ms = (time.perf_counter_ns() - t0) / 1e6  # reading, compiling and the first allocation
        failed = [p for p in self.providers["used"] if p not in self.session.get_providers()]
        self.providers["failed_to_initialise"] = failed  # onnxruntime fell back past these
        self.providers["used"] = self.session.get_providers()
        self.backend = describe(self.session, model)
        self.first_ms: float | None = None
        self.out_names = [o.name for o in self.session.get_outputs()]

    def feed(self, batch: int, arrays: dict[str, np.ndarray] | None = None, source: str = "inputs") -> dict:
        from edgepipe.runtime.inputs.feeds import batch_size, parse_shapes, random_feeds, signature

        spec = signature(self.session)
        if batch_size(spec, batch) != batch:
            raise EdgepipeError(
                f"{self.model}: the model fixes its batch at {batch_size(spec, batch)}; it cannot run a "
                f"batch of {batch} (leave --batch out, or export it with a dynamic batch)"
            )
        if arrays is None and not self.opts.dims:  # random inputs at --shape (a detector's derived inputs made to fit)
            shapes = {k: (batch, *v[1:]) for k, v in parse_shapes(self.opts.shapes, spec).items()}
            return random_feeds(spec, batch, shapes, batch=batch, what=str(self.model))[0]
        if arrays is None:
            return input_feed(self.session, batch, dims=self.opts.dim_values())
        return resolve_feed(self.session, batch_of(arrays, batch), source)

    def run_once(self, feed: dict) -> list[np.ndarray]:
        return self.session.run(self.out_names, feed)

    def measure(self, feed: dict) -> dict:
        def run():
            self.session.run(self.out_names, feed)

        if self.first_ms is None:  # the first inference of the session, timed on its own
            t0 = time.perf_counter_ns()
            run()
            self.first_ms = (time.perf_counter_ns() - t0) / 1e6
        o = self.opts
        t0 = time.perf_counter()
        warm = timed_runs(run, o.warmup_iters, o.warmup_seconds, None)
        warm_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        with HostLoad() as load:
            times = timed_runs(run, o.iters, o.min_seconds, o.max_seconds)
        measured_ms = (time.perf_counter() - t0) * 1e3
        stats = latency_stats(times)
        batch = int(next(iter(feed.values())).shape[0])
        shape = "x".join(map(str, next(iter(feed.values())).shape[1:]))  # the first input's, without the batch
        return {
            "batch": batch,
            "input_shape": shape,
            "warmup_iters": len(warm),
            "warmup_ms": warm_ms,
            "measured_ms": measured_ms,
            "latency": stats,
            "latency_ci95_ms": quantile_ci95(times),
            "histogram": latency_histogram(times),
            "throughput_per_s": float(batch * 1000.0 / stats["mean_ms"]),
            "host_load": load.as_dict(),
        }

    def cold_start(self) -> dict:
        return {"session_create_ms": self.create_ms, "first_inference_ms": self.first_ms}


def benchmark(
    model: str | Path, opts: BenchOptions = BenchOptions(), arrays: dict | None = None, feed_source: str = "inputs"
) -> dict:
    """Cold start, then latency and throughput at each of opts.batches."""
    b = Bench(model, opts)
    runs = [b.measure(b.feed(n, arrays, feed_source)) for n in opts.batches]
    return {
        "model": str(model),
        "model_bytes": Path(model).stat().st_size,
        "options": asdict(opts),
        "backend": b.backend,
        "providers": b.providers,
        "cold_start": b.cold_start(),
        "runs": runs,
    }
