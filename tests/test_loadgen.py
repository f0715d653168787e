"""`--loadgen`: MLPerf LoadGen's SingleStream scenario on the runner's session, its figures read
from LoadGen's own logs, the logs kept whole beside the JSON, and the misuses as one line."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import one_line_error
from onnx_models import mnist_linear

pytest.importorskip(
    "mlperf_loadgen", reason="mlcommons-loadgen is not installed (make test installs the [loadgen] extra)"
)


def runner(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=300
    )


QUICK = ["--profile", "none", "--iters", "50", "--min-seconds", "0", "--warmup-seconds", "0", "--energy-seconds", "0"]


def test_single_stream_reports_loadgens_p90_and_keeps_its_logs(tmp_path):
    model = mnist_linear(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", x=rng.standard_normal((40, 1, 28, 28)).astype(np.float32), y=rng.integers(0, 10, 40))
    proc = runner(
        model,
        "--inputs",
        tmp_path / "in.npz",
        "--loadgen",
        "--loadgen-seconds",
        "0.5",
        "--json",
        tmp_path / "r.json",
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    lg = json.loads((tmp_path / "r.json").read_text())["loadgen"]
    assert lg["scenario"] == "SingleStream" and lg["validity"] == "VALID" and lg["early_stopping_met"] is True
    assert lg["queries"] >= 1024 and lg["samples"] == 40  # every labelled row is a sample
    assert 0 < lg["p50_ms"] <= lg["p90_ms"] <= lg["p99_ms"] and lg["early_stopping_p90_ms"] >= lg["p90_ms"]
    logs = tmp_path / "r.loadgen"
    assert logs.is_dir() and lg["log_dir"] == str(logs)
    # the JSON's figures are LoadGen's, as its own summary states them
    text = (logs / "mlperf_log_summary.txt").read_text()
    assert "Scenario : SingleStream" in text and "Result is : VALID" in text
    p90_ns = int(re.search(r"90\.0th percentile latency \(ns\) : (\d+)", text).group(1))
    es_ns = int(re.search(r"Early stopping 90\.0th percentile estimate: (\d+)", text).group(1))
    assert p90_ns == round(lg["p90_ms"] * 1e6) and es_ns == round(lg["early_stopping_p90_ms"] * 1e6)
    assert "loadgen    SingleStream VALID" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.npz",
        "m.onnx",
        "r.json",
        "r.loadgen",
    ]  # no temp folder left


def test_loadgen_misuses_are_one_line(tmp_path):
    model = mnist_linear(tmp_path / "m.onnx")
    assert "give --json FILE" in one_line_error(runner(model, "--loadgen", *QUICK))
    assert "does not go with --stream" in one_line_error(
        runner(model, "--loadgen", "--stream", tmp_path, "--json", tmp_path / "r.json", *QUICK)
    )
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.loadgen").exists()
