"""Runtime backends: onnxruntime and OpenVINO run the same ONNX files behind one interface, and the
runner reports which ran and in what precision."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import outside_connections
from onnx_models import conv_mlp, mnist_linear

from edgepipe.runtime.model.backends import available, describe, open_model

needs_openvino = pytest.mark.skipif(
    not available("openvino")[0], reason="openvino is not installed (make test installs the [openvino] extra)"
)


def runner(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


FAST = (
    "--iters",
    "20",
    "--min-seconds",
    "0",
    "--warmup",
    "2",
    "--warmup-seconds",
    "0",
    "--energy-seconds",
    "0.1",
    "--idle-seconds",
    "0",
    "--profile",
    "none",
)


@needs_openvino
def test_openvino_and_onnxruntime_give_the_same_outputs(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    ort = open_model(model)
    ov = open_model(model, "openvino", precision="f32")
    assert [(i.name, i.type) for i in ov.get_inputs()] == [(i.name, i.type) for i in ort.get_inputs()]
    assert ov.get_inputs()[0].shape == [None, 1, 8, 8]
    for n in (1, 5):  # a dynamic batch, as onnxruntime takes it
        a, b = ort.run(None, {"x": x[:n]})[0], ov.run(None, {"x": x[:n]})[0]
        assert b.shape == (n, 10) and np.allclose(a, b, atol=1e-4, rtol=1e-4)
    d = describe(ov, model)
    assert d["name"] == "openvino" and d["precision"] == "fp32" and d["inference_precision"] == "fp32"
    assert d["compute_layer_precisions"] and set(d["compute_layer_precisions"]) == {"f32"}
    assert describe(ort, model) | {"version": None} == {
        "name": "onnxruntime",
        "version": None,
        "device": "CPU",
        "providers": ["CPUExecutionProvider"],
        "precision": "fp32",
        "precision_asked": "auto",
    }


@needs_openvino
def test_runner_prints_the_same_layout_and_records_what_ran(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    np.savez(
        tmp_path / "in.npz",
        x=np.random.default_rng(2).standard_normal((40, 1, 8, 8)).astype(np.float32),
        y=np.arange(40) % 10,
    )
    out = {}
    for backend in ("onnxruntime", "openvino"):
        proc = runner(
            model,
            "--backend",
            backend,
            "--inputs",
            tmp_path / "in.npz",
            "--json",
            tmp_path / f"{backend}.json",
            "--csv",
            tmp_path / f"{backend}.csv",
            *FAST,
        )
        assert proc.returncode == 0, proc.stderr
        out[backend] = (proc.stdout, json.loads((tmp_path / f"{backend}.json").read_text()))
    # a host-load note ("other processes took …") depends on the machine at that moment, not on the backend
    heads = {
        b: [line.split()[0] for line in text.splitlines() if "other processes took" not in line]
        for b, (text, _) in out.items()
    }
    assert heads["onnxruntime"] == heads["openvino"]  # the same table, line for line
    ov, ort = out["openvino"][1], out["onnxruntime"][1]
    assert ov["backend"]["name"] == "openvino" and ov["providers"]["used"] == ["OpenVINO:CPU"]
    assert ort["backend"]["name"] == "onnxruntime"
    # OpenVINO's default precision is the host's: fp32 gives onnxruntime's predictions; bf16 (on
    # avx512_bf16/AMX hosts) may flip near-ties of this random-weight model, so it is only recorded
    assert ov["backend"]["precision"] in ("fp32", "bf16")
    if ov["backend"]["precision"] == "fp32":
        assert ov["accuracy"] == ort["accuracy"]
    assert "openvino" in out["openvino"][0].splitlines()[1]
    assert ov["runs"][0]["roofline"]["precision"] == ov["backend"]["precision"]
    assert (tmp_path / "openvino.csv").read_text().splitlines()[1].split(",")[3:5] == [
        "openvino",
        ov["backend"]["precision"],
    ]


def test_unavailable_backend_and_wrong_precision_are_one_line_errors(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    proc = runner(model, "--precision", "bf16", *FAST)
    assert (
        proc.returncode == 2
        and proc.stderr.count("\n") == 1
        and "onnxruntime runs the precision the file stores" in proc.stderr
    )
    code = (
        "import sys; sys.modules['openvino'] = None; from edgepipe.runtime.runner import main; "
        f"sys.exit(main([{str(model)!r}, '--backend', 'openvino', '--profile', 'none']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "backend openvino: the openvino package is not installed" in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


@needs_openvino
def test_openvino_backend_sends_nothing_and_writes_nothing_home(tmp_path):
    """`import openvino` alone sends a Google Analytics event (its converter's telemetry treats a missing
    consent file as consent); the backend blocks it, and writes no client id under $HOME."""
    model = conv_mlp(tmp_path / "m.onnx")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")} | {"HOME": str(home)}
    calls = outside_connections(
        tmp_path / "trace.txt",
        [
            model,
            "--backend",
            "openvino",
            "--min-seconds",
            "3",
            "--max-seconds",
            "4",
            "--energy-seconds",
            "0",
            "--profile",
            "none",
            "--quiet",
        ],
        env,
    )
    assert not calls, calls[:3]
    assert list(home.iterdir()) == []


@needs_openvino
def test_bench_stage_measures_on_openvino(tmp_path):
    from conftest import edgepipe

    mnist_linear(tmp_path / "m.onnx")
    recipe = tmp_path / "ov.yaml"
    recipe.write_text(
        "name: ov\ndata: {train_limit: 200, test: 50, val: 20, calibration: 16}\nstages:\n"
        "  - bench: {models: [{onnx: m.onnx}], backend: openvino, precision: f32, iters: 5, min_seconds: 0,"
        " warmup_iters: 1, warmup_seconds: 0, energy_seconds: 0, idle_seconds: 0, profile: none}\n"
    )
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "runs" / "ov" / "manifest.json").read_text())["stages"]["bench"]["metrics"]["models"][
        "m.onnx"
    ]
    assert m["providers"] == ["OpenVINO:CPU"] and m["backend"]["precision_asked"] == "f32" and "explain" not in m


def test_a_profiles_missing_backend_is_skipped_with_a_note(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    code = (
        "import sys; sys.modules['openvino'] = None; from edgepipe.runtime.runner import main; "
        f"sys.exit(main([{str(model)!r}, '--profile', 'x86-amx', '--iters', '5', '--min-seconds', '0', "
        f"'--energy-seconds', '0', '--json', {str(tmp_path / 'r.json')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["backend"]["name"] == "onnxruntime"
    assert any(
        "lists backend openvino, but the openvino package is not installed" in n and n.endswith("skipped")
        for n in r["notes"]
    ), r["notes"]


@needs_openvino
def test_a_profile_that_prefers_openvino_gets_it(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    proc = runner(
        model,
        "--profile",
        "x86-amx",
        "--iters",
        "5",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["backend"]["name"] == "openvino"
