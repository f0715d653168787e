"""MLPerf LoadGen's SingleStream scenario on the runner's session: `edgepipe-runner MODEL --loadgen
--json r.json` (and `edgepipe bench ... --loadgen`), with `mlcommons-loadgen` (the `[loadgen]` extra).

LoadGen issues one query of one sample at a time, the next as soon as the last completes, and
reports its 90th-percentile latency and the early-stopping estimate of it (the bound that holds
with confidence for the number of queries run). The samples are the first rows of --inputs/--images
(up to 128 and 16 MB, held in memory: the runner reads only those from an .npz), or the runner's one
synthetic feed. LoadGen's log files
(mlperf_log_summary.txt, mlperf_log_detail.txt, …) are kept in a folder beside the JSON,
`r.loadgen/`, written whole or not at all. The run lasts at least --loadgen-seconds and 1,024
queries: LoadGen's own rules, not MLPerf's submission minimums (600 s), which the JSON states.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgepipe.devices import EdgepipeError

MAX_SAMPLES = 128
MAX_SAMPLE_BYTES = 16 << 20  # LoadGen's samples sit in the runner's memory figures, beside the model
MIN_QUERIES = 1024


def _lg():
    try:
        import mlperf_loadgen
    except ImportError:
        raise EdgepipeError(
            "--loadgen drives MLPerf LoadGen: pip install 'edgepipe[loadgen]' (mlcommons-loadgen)"
        ) from None
    return mlperf_loadgen


def prepare(args) -> tuple[Path, float] | None:
    """The runner's --loadgen, checked before anything is measured: LoadGen importable, --json given
    (the logs go beside it), a positive duration. Returns (log folder, seconds) or None."""
    if not args.loadgen:
        return None
    if args.stream is not None:
        raise EdgepipeError("--loadgen measures the model on its inputs; it does not go with --stream")
    if args.json is None:
        raise EdgepipeError(
            "--loadgen keeps LoadGen's log files beside the result: give --json FILE (they go in FILE's "
            "name with .loadgen/)"
        )
    if args.loadgen_seconds <= 0:
        raise EdgepipeError(f"--loadgen-seconds {args.loadgen_seconds}: give a positive duration")
    _lg()
    return Path(args.json).with_suffix(".loadgen"), args.loadgen_seconds


def read_detail(path: Path) -> dict:
    """LoadGen's detail log (`:::MLLOG {json}` lines) as key → value."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith(":::MLLOG "):
            try:
                e = json.loads(line[len(":::MLLOG ") :])
            except ValueError:
                continue
            out[e.get("key")] = e.get("value")
    return out


def sample_count(rows: int, row_bytes: int) -> int:
    """How many of the inputs' first rows LoadGen's samples are: at most MAX_SAMPLES and MAX_SAMPLE_BYTES."""
    return max(1, min(rows, MAX_SAMPLES, MAX_SAMPLE_BYTES // max(row_bytes, 1)))


def single_stream(bench, arrays: dict | None, source: str, log_dir: Path, seconds: float, expected_ms: float) -> dict:
    """Drive `bench`'s session through SingleStream for at least `seconds` and MIN_QUERIES queries."""
    lg = _lg()
    if arrays is None:
        feeds = [bench.feed(1)]
    else:
        n = sample_count(len(next(iter(arrays.values()))), sum(v[:1].nbytes for v in arrays.values()))
        feeds = [bench.feed(1, {k: v[i : i + 1] for k, v in arrays.items()}, source) for i in range(n)]
    session, names = bench.session, bench.out_names
    failures = []

    def issue(queries):
        for q in queries:
            try:
                session.run(names, feeds[q.index])
            except Exception as exc:  # reported after the test; LoadGen's thread must not die
                failures.append(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0)])

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.SingleStream
    settings.mode = lg.TestMode.PerformanceOnly
    settings.single_stream_expected_latency_ns = max(int(expected_ms * 1e6), 1000)
    settings.min_duration_ms = int(seconds * 1000)
    settings.min_query_count = MIN_QUERIES
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=log_dir.parent, prefix=f".{log_dir.name}.", suffix=".tmp"))
    try:
        logs = lg.LogSettings()
        logs.log_output.outdir = str(tmp)
        logs.log_output.copy_summary_to_stdout = False
        logs.enable_trace = False
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(len(feeds), len(feeds), lambda samples: None, lambda samples: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, logs)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        if failures:
            raise EdgepipeError(f"--loadgen: the model failed on {len(failures)} queries ({failures[0]})")
        d = read_detail(tmp / "mlperf_log_detail.txt")
        if "result_validity" not in d:
            raise EdgepipeError(f"--loadgen: LoadGen wrote no result in {tmp.name}/mlperf_log_detail.txt")
        (tmp / "mlperf_log_trace.json").unlink(missing_ok=True)  # empty: tracing is off
        if log_dir.exists():
            shutil.rmtree(log_dir)
        os.replace(tmp, log_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def ms(key):
        v = d.get(key)
        return None if v is None else float(v) / 1e6

    return {
        "scenario": "SingleStream",
        "mode": "PerformanceOnly",
        "loadgen_version": d.get("loadgen_version"),
        "validity": d["result_validity"],
        "queries": d.get("result_query_count"),
        "samples": len(feeds),
        "p50_ms": ms("result_50.00_percentile_latency_ns"),
        "p90_ms": ms("result_90.00_percentile_latency_ns"),
        "p99_ms": ms("result_99.00_percentile_latency_ns"),
        "mean_ms": ms("result_mean_latency_ns"),
        "early_stopping_p90_ms": ms("early_stopping_latency_ss"),
        "early_stopping_met": d.get("early_stopping_met"),
        "qps": d.get("result_qps_with_loadgen_overhead"),
        "settings": {
            "min_duration_s": seconds,
            "min_query_count": MIN_QUERIES,
            "expected_latency_ms": settings.single_stream_expected_latency_ns / 1e6,
            "note": "LoadGen's rules with edgepipe's minimums, not MLPerf's submission minimums (600 s)",
        },
        "log_dir": str(log_dir),
    }


def summary_line(r: dict) -> str:
    es = r["early_stopping_p90_ms"]
    return (
        f"loadgen    SingleStream {r['validity']}: p90 {r['p90_ms']:.4f} ms, early-stopping p90 estimate "
        + (f"{es:.4f} ms" if es is not None else "—")
        + f", {r['queries']} queries on {r['samples']} samples; logs in {r['log_dir']}"
    )
