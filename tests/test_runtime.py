import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx_models import CONV_MLP_MACS, conv_mlp

from edgepipe.devices import EdgepipeError
from edgepipe.devices.host import parse_cpuinfo
from edgepipe.runtime.inputs.checks import input_feed
from edgepipe.runtime.measure.bench import Bench, BenchOptions, benchmark, latency_stats
from edgepipe.runtime.model.session import open_session


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
    (run,) = r["runs"]
    assert run["latency"]["n"] >= 30 and run["warmup_iters"] >= 3
    assert run["measured_ms"] >= 200  # ran for at least min_seconds (the loop's wall time, not the sum of runs)
    assert run["latency"]["n"] * run["latency"]["mean_ms"] <= run["measured_ms"]
    assert r["cold_start"]["session_create_ms"] > 0 and r["cold_start"]["first_inference_ms"] > 0 and run["batch"] == 1
    lat = run["latency"]
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]


def test_warmup_time_is_met_before_measuring(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    r = benchmark(model, BenchOptions(warmup_iters=1, warmup_seconds=0.3, iters=5, min_seconds=0.0))
    run = r["runs"][0]
    assert run["warmup_ms"] >= 300 and run["warmup_iters"] > 1  # it kept warming up for 0.3 s, not 1 iteration


@pytest.mark.timeout(60)  # 10**9 inferences would take hours: a max_seconds not honoured fails here, not hangs
def test_max_seconds_caps_the_measured_phase(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    r = benchmark(model, BenchOptions(warmup_iters=1, warmup_seconds=0, iters=10**9, min_seconds=0.0, max_seconds=0.2))
    run = r["runs"][0]
    lat = run["latency"]
    # the loop stops after the first inference that ends past 0.2 s: it measured 0.2 s, plus at most that
    # last inference and the loop's own overhead (generous on a loaded host), however many iters were asked
    assert 200 <= run["measured_ms"] <= 200 + lat["max_ms"] + 300
    assert 1 <= lat["n"] and lat["n"] * lat["min_ms"] <= run["measured_ms"]


def test_batch_sweep_shares_one_cold_start_and_reports_throughput(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    r = benchmark(
        model,
        BenchOptions(
            batches=(1, 16),
            warmup_iters=2,
            warmup_seconds=0,
            iters=20,
            min_seconds=0.0,
            graph_optimization="basic",
            threads=2,
            inter_threads=1,
        ),
    )
    assert [run["batch"] for run in r["runs"]] == [1, 16]
    for run in r["runs"]:
        assert run["throughput_per_s"] == pytest.approx(run["batch"] * 1000 / run["latency"]["mean_ms"])
    assert r["options"]["graph_optimization"] == "basic" and r["options"]["threads"] == 2


def test_given_inputs_are_cut_or_repeated_to_the_batch(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    r = benchmark(
        model, BenchOptions(batches=(2, 7), warmup_iters=0, warmup_seconds=0, iters=3, min_seconds=0), {"x": x}
    )
    assert [run["batch"] for run in r["runs"]] == [2, 7]


def test_named_dynamic_dims_come_from_options(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    s = open_session(model)
    assert input_feed(s, batch=1, dims={"N": 5})["x"].shape == (5, 1, 8, 8)
    with pytest.raises(EdgepipeError, match="dims: 'N5' is not NAME=VALUE"):
        BenchOptions(dims=("N5",))
    for bad in ({"batches": ()}, {"batches": (0,)}, {"threads": 0}, {"max_seconds": 0.5, "min_seconds": 1.0}):
        with pytest.raises(EdgepipeError):
            BenchOptions(**bad)


def test_profile_providers_missing_from_the_build_are_reported_not_hidden(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    opts = BenchOptions(
        providers=("XnnpackFakeExecutionProvider", "CPUExecutionProvider"),
        iters=2,
        min_seconds=0,
        warmup_iters=0,
        warmup_seconds=0,
    )
    with pytest.raises(EdgepipeError, match="XnnpackFakeExecutionProvider is not in this onnxruntime build"):
        Bench(model, opts, strict_providers=True)  # named by the user: an error
    b = Bench(model, opts, strict_providers=False)  # a profile's preference order: skipped and reported
    assert b.providers["used"] == ["CPUExecutionProvider"]
    assert b.providers["unavailable"] == [
        {"provider": "XnnpackFakeExecutionProvider", "reason": "not in this onnxruntime build"}
    ]
    with pytest.raises(EdgepipeError):
        Bench(model, BenchOptions(providers=("XnnpackFakeExecutionProvider",)), strict_providers=False)


def test_dynamic_batch_resolved_and_bad_files_rejected(tmp_path):
    s = open_session(conv_mlp(tmp_path / "m.onnx"))
    assert input_feed(s, batch=4)["x"].shape == (4, 1, 8, 8)
    with pytest.raises(EdgepipeError, match="model file not found"):
        open_session(tmp_path / "missing.onnx")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes((tmp_path / "m.onnx").read_bytes()[:100])
    with pytest.raises(EdgepipeError, match="t.onnx: not an ONNX model") as exc:
        open_session(truncated)
    assert "\n" not in str(exc.value)
    with pytest.raises(EdgepipeError, match="not in this onnxruntime build"):
        open_session(tmp_path / "m.onnx", providers=("NoSuchExecutionProvider",))


def run_runner(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_runner_cli_json_accuracy_and_memory(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((50, 1, 8, 8)).astype(np.float32)
    y = open_session(model).run(None, {"x": x})[0].argmax(1)
    y[:5] = (y[:5] + 1) % 10  # 5 of 50 labels wrong -> 90% accuracy
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = tmp_path / "r.json"
    csv_out, saved = tmp_path / "r.csv", tmp_path / "outputs.npz"
    proc = run_runner(
        model,
        "--inputs",
        tmp_path / "data.npz",
        "--json",
        out,
        "--csv",
        csv_out,
        "--iters",
        "10",
        "--min-seconds",
        "0.01",
        "--batch",
        "1",
        "--batch",
        "4",
        "--profile",
        "rpi4",
        "--energy-seconds",
        "0.2",
        "--idle-seconds",
        "0",
        "--save-outputs",
        saved,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["schema"] == "edgepipe-bench/1"
    assert r["accuracy"] == pytest.approx(0.9) and r["accuracy_samples"] == 50
    assert r["memory"]["peak_rss_mb"] >= r["memory"]["rss_before_session_mb"] > 10
    env = r["environment"]
    assert env["host"]["arch"] and env["onnxruntime"] and "CPUExecutionProvider" in env["onnxruntime_build_providers"]
    assert "p50" in proc.stdout and "accuracy   90.00%" in proc.stdout
    # rpi4 prefers XNNPACK, which this build lacks: reported, and CPU used
    assert r["providers"]["used"] == ["CPUExecutionProvider"]
    assert "XnnpackExecutionProvider requested but not in this onnxruntime build" in proc.stdout
    assert r["profile"]["name"] == "rpi4" and r["verdict"]["profile"] == "rpi4"
    # no power sensor here: the estimate is used, labelled, and its figure follows the power model
    e = r["energy"]["primary"]
    assert e["method"] == "estimate" and e["uncertainty_rel"] == 0.5 and e["idle_w"] == 2.7
    assert e["inferences"] >= 1 and e["mj_per_inference"] == pytest.approx(1e3 * e["joules"] / e["inferences"])
    assert 2.7 <= e["avg_w"] <= 2.7 + 0.9 * (os.cpu_count() + 1)
    # roofline: MACs counted from the graph (onnx is installed here), fraction of a measured peak
    roof = r["runs"][0]["roofline"]
    assert roof["macs_per_inference"] == CONV_MLP_MACS and 0 < roof["fraction_of_peak"] < 1
    rows = list(csv.DictReader(csv_out.open()))
    assert [row["batch"] for row in rows] == ["1", "4"] and rows[0]["verdict"] == r["verdict"]["overall"]
    with np.load(saved) as z:
        np.testing.assert_allclose(z["outputs"], open_session(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


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


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="host load is read from Linux's /proc/stat")
def test_host_load_counts_other_processes_and_not_this_one():
    """A spinning child process is someone else's CPU; this process's own spinning is not."""
    from edgepipe.runtime.measure.hostload import HostLoad, contended

    with HostLoad() as own:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.6:
            pass
    spin = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 1.5: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.2)
        with HostLoad() as other:
            time.sleep(0.8)
    finally:
        child.wait(timeout=30)
    cpus = len(os.sched_getaffinity(0))
    assert other.others * cpus > 0.6  # most of one CPU went to the child
    assert (
        other.others - own.others
    ) * cpus > 0.4 and other.steal is not None  # and this process's own work is not counted
    d = other.as_dict()
    assert d["cpus"] == cpus and contended(d, threads=cpus)  # a run on every CPU had to share one
    assert not contended({"others_cpu_share": 0.0, "steal_share": 0.0, "cpus": cpus}, threads=1)
