import json
import subprocess
import sys

import numpy as np
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.devices.host import parse_cpuinfo
from edgepipe.runtime.bench import BenchOptions, benchmark, latency_stats
from edgepipe.runtime.session import input_feed, open_session

from onnx_models import conv_mlp


def test_latency_stats_on_known_values():
    s = latency_stats(np.arange(1, 101) * 1_000_000)  # 1..100 ms
    assert s["n"] == 100 and s["min_ms"] == 1 and s["max_ms"] == 100
    assert s["mean_ms"] == pytest.approx(50.5) and s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    with pytest.raises(EdgepipeError):
        latency_stats([])


def test_benchmark_meets_count_and_time(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    r = benchmark(model, BenchOptions(warmup_iters=3, warmup_seconds=0.0, iters=30, min_seconds=0.2, max_seconds=5))
    assert r["latency"]["n"] >= 30
    assert r["latency"]["n"] * r["latency"]["mean_ms"] >= 200 * 0.9  # ran for at least ~min_seconds
    assert r["cold_start"]["session_create_ms"] > 0 and r["batch"] == 1
    assert r["latency"]["min_ms"] <= r["latency"]["p50_ms"] <= r["latency"]["p99_ms"] <= r["latency"]["max_ms"]


def test_max_seconds_caps_the_measured_phase(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    r = benchmark(model, BenchOptions(warmup_iters=1, warmup_seconds=0, iters=10**9, min_seconds=0.0, max_seconds=0.2))
    assert 1 <= r["latency"]["n"] < 10**9


def test_dynamic_batch_resolved_and_bad_files_rejected(tmp_path):
    s = open_session(conv_mlp(tmp_path / "m.onnx"))
    assert input_feed(s, batch=4)["x"].shape == (4, 1, 8, 8)
    with pytest.raises(EdgepipeError, match="model file not found"):
        open_session(tmp_path / "missing.onnx")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes((tmp_path / "m.onnx").read_bytes()[:100])
    with pytest.raises(EdgepipeError, match="t.onnx: onnxruntime cannot load this model") as exc:
        open_session(truncated)
    assert "\n" not in str(exc.value)
    with pytest.raises(EdgepipeError, match="not in this onnxruntime build"):
        open_session(tmp_path / "m.onnx", providers=("NoSuchExecutionProvider",))


def run_runner(*args):
    return subprocess.run([sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_runner_cli_json_accuracy_and_memory(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((50, 1, 8, 8)).astype(np.float32)
    y = open_session(model).run(None, {"x": x})[0].argmax(1)
    y[:5] = (y[:5] + 1) % 10  # 5 of 50 labels wrong -> 90% accuracy
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = tmp_path / "r.json"
    proc = run_runner(model, "--inputs", tmp_path / "data.npz", "--json", out, "--iters", "10", "--min-seconds", "0.01")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["accuracy"] == pytest.approx(0.9) and r["accuracy_samples"] == 50
    assert r["memory"]["peak_rss_mb"] >= r["memory"]["rss_before_session_mb"] > 10
    assert r["host"]["arch"] and r["onnxruntime"]
    assert "p50" in proc.stdout and "accuracy   90.00%" in proc.stdout


def test_runner_bad_inputs_one_line_no_json(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 1, 9, 9), np.float32))
    out = tmp_path / "r.json"
    proc = run_runner(model, "--inputs", tmp_path / "bad.npz", "--json", out)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().count("\n") == 0 and "expects" in proc.stderr
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01garbage")
    proc = run_runner(tmp_path / "junk.onnx", "--json", out)
    assert proc.returncode == 2 and not out.exists() and "junk.onnx" in proc.stderr


def test_cpuinfo_parsing_x86_and_arm():
    model, flags = parse_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert model == "AMD EPYC" and {"avx2", "avx512_vnni"} <= flags
    model, flags = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0b\n")
    assert "asimddp" in flags
