"""A short recipe end to end on the bundled data, through the real CLI, plus kill -9 recovery."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import edgepipe, run_recipe

from edgepipe.pipeline.core.manifest import verify_run
from edgepipe.runtime.model.session import open_session, predict

pytestmark = pytest.mark.slow


def test_short_recipe_end_to_end(short_run):
    run_dir, proc = short_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert list(m["stages"]) == ["train", "distill", "export", "quantize", "bench", "deploy", "report"]
    assert m["data"]["counts"] == {"train": 800, "val": 100, "test": 300, "calibration": 64}
    arts = {n: a for s in m["stages"].values() for n, a in s["artifacts"].items()}
    assert {"teacher", "student", "student_scratch", "teacher.onnx", "student.onnx", "student.int8.onnx"} <= set(arts)
    int8, fp32 = arts["student.int8.onnx"]["meta"], arts["student.onnx"]["meta"]
    assert int8["bytes"] < fp32["bytes"] and int8["macs"] == fp32["macs"] and fp32["parity"]["max_abs_diff"] < 1e-3
    for name in ("teacher.onnx", "student.onnx", "student_scratch.onnx", "student.int8.onnx"):
        b = m["stages"]["bench"]["metrics"]["models"][name]
        assert b["latency"]["p50_ms"] > 0 and 10 < b["memory"]["peak_rss_mb"] < 400
        assert b["device_accuracy"] == pytest.approx(arts[name]["meta"]["accuracy"])  # runner agrees with export
        assert b["energy"]["method"] in ("estimate", "rapl") and b["energy"]["mj_per_inference"] > 0
        assert b["verdict"]["overall"] in ("pass", "marginal", "fail", "incomplete") and b["profile"]
    assert m["stages"]["distill"]["metrics"]["feature_hints"] == [{"teacher": [2, 32], "student": [2, 16]}]
    # fidelity against the float model: the int8 file against its fp32 file, the student against its teacher
    q = int8["fidelity"]
    assert q["samples"] == 300 and q["top1_agreement"] > 0.9 and q["cosine"] > 0.95 and q["sqnr_db"] > 10
    kd = fp32["fidelity"]
    assert kd == arts["student"]["meta"]["fidelity"]
    test = np.load(run_dir / "bench" / "test_split.npz")
    teacher_top1, student_top1 = (
        predict(open_session(run_dir / "export" / f), test["x"]).argmax(1) for f in ("teacher.onnx", "student.onnx")
    )
    assert kd["top1_agreement"] == pytest.approx((teacher_top1 == student_top1).mean(), abs=0.01)
    assert "fidelity" not in arts["teacher.onnx"]["meta"]  # nothing to compare a trained-from-scratch model with
    report = (run_dir / "report" / "report.md").read_text()
    assert f"{100 * q['top1_agreement']:.1f}% · {q['cosine']:.3f} · {q['sqnr_db']:.0f} dB" in report
    assert "student (distilled) int8" in report and "bundled MNIST subset" in report
    assert "student (distilled) int8" in proc.stdout  # the table on stdout
    # what each hop bought: teacher -> student -> int8, with the bytes ratios to the teacher
    teacher = arts["teacher.onnx"]["meta"]
    assert "## What each hop bought: teacher → student → student.int8" in report
    hops = report.split("## What each hop bought: teacher → student → student.int8")[1].split("\n## ")[0]
    hop = [line for line in hops.splitlines() if line.startswith("| ")][-1]  # the last model: the int8 file
    cells = [c.strip() for c in hop.strip("|").split("|")]
    assert cells[1:4] == [
        f"{int8['bytes']:,}",
        f"{int8['deflated_bytes']:,}",
        f"×{teacher['bytes'] / int8['bytes']:.1f} (deflated ×{teacher['deflated_bytes'] / int8['deflated_bytes']:.1f})",
    ]
    assert cells[5] == f"{100 * (int8['accuracy'] - teacher['accuracy']):+.2f} pt"
    assert "what each hop bought" in proc.stdout
    assert verify_run(run_dir) == []


def test_second_run_reuses_every_stage(short_run):
    run_dir, _ = short_run
    before = json.loads((run_dir / "manifest.json").read_text())
    proc = edgepipe("run", run_dir.parent.parent / "short.yaml", "--runs-dir", run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reused (config and inputs unchanged)") == 7
    after = json.loads((run_dir / "manifest.json").read_text())
    assert {k: v["outputs"] for k, v in before["stages"].items()} == {
        k: v["outputs"] for k, v in after["stages"].items()
    }


def test_report_command_rebuilds_table(short_run, tmp_path):
    run_dir, _ = short_run
    proc = edgepipe("report", run_dir, "-o", tmp_path / "r.md")
    assert proc.returncode == 0 and "student (from scratch) fp32" in proc.stdout
    assert (tmp_path / "r.md").read_text().startswith("# edgepipe report: short")


def test_export_and_quantize_commands_on_a_run(short_run, tmp_path):
    run_dir, _ = short_run
    out = tmp_path / "s.onnx"
    proc = edgepipe("export", run_dir / "distill" / "student", "-o", out)
    assert proc.returncode == 0 and out.is_file() and "parity max |diff|" in proc.stdout
    data = run_dir / "bench" / "test_split.npz"
    proc = edgepipe("quantize", out, "--samples", "32", "--eval", data, "--max-drop", "2", "--profile", "x86-avx2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.int8.onnx").is_file() and "reduce_range=True" in proc.stdout and "x86-avx2" in proc.stdout
    assert "top-1 agreement with fp32" in proc.stdout
    proc = edgepipe("quantize", out, "--mode", "dynamic")
    assert (
        proc.returncode == 0 and "ConvInteger" in proc.stderr and "convolution by MACs" in proc.stderr
    )  # conv-dominated
    for mode, suffix in (("fp16", "fp16"), ("matmul4", "mm4")):
        proc = edgepipe("quantize", out, "--mode", mode)
        assert proc.returncode == 0 and (tmp_path / f"s.{suffix}.onnx").stat().st_size < out.stat().st_size, proc.stderr
    assert "2 MatMul weight(s) converted" in proc.stdout
    proc = edgepipe("explain", tmp_path / "s.int8.onnx", "--seconds", "0.1", "--json", tmp_path / "x.json")
    assert proc.returncode == 0 and "QLinearConv" in proc.stdout and "time by op type" in proc.stdout
    assert json.loads((tmp_path / "x.json").read_text())["integer_kernels"]


def kill_during(stage, cmd, run_dir, timeout=300):
    """Start `cmd`, SIGKILL it while `stage` is in progress; True if it was caught mid-stage."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if run_dir.is_dir() and any(p.name.startswith(f".{stage}.partial-") for p in run_dir.iterdir()):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return any(p.name.startswith(f".{stage}.partial-") for p in run_dir.iterdir())
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


@pytest.mark.parametrize(
    "stage,extra",
    [
        ("train", []),
        # 28 s, and a stage like the others here: a killed stage's partial folder and a rerun are what the
        # train and quantize cases check; `make test-long` runs it
        pytest.param("export", ["--from", "export"], marks=pytest.mark.long),
        ("quantize", ["--from", "quantize"]),
    ],
)
def test_kill_9_mid_stage_then_same_command_finishes(stage, extra, short_recipe, short_run, tmp_path):
    import shutil

    name = "killme" if stage == "train" else "short"
    recipe, runs = short_recipe(name), tmp_path / "runs"
    run_dir = runs / name
    if stage != "train":  # a copy of the finished shared run, so the killed command has that stage to redo
        shutil.copytree(short_run[0], run_dir)
    args = ["run", str(recipe), "--runs-dir", str(runs), *extra]
    assert kill_during(stage, [sys.executable, "-m", "edgepipe.pipeline", *args], run_dir), f"the kill missed {stage}"
    proc = edgepipe(*args)
    assert proc.returncode == 0, proc.stderr
    assert verify_run(run_dir) == []
    assert not any(".partial-" in p.name or ".trash-" in p.name for p in run_dir.iterdir())
    m = json.loads((run_dir / "manifest.json").read_text())
    assert list(m["stages"]) == ["train", "distill", "export", "quantize", "bench", "deploy", "report"]


def test_report_merges_a_device_result(short_run, tmp_path):
    run_dir, _ = short_run
    result = tmp_path / "cam.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            run_dir / "quantize" / "student.int8.onnx",
            "--inputs",
            run_dir / "bench" / "test_split.npz",
            "--profile",
            "arm-camera-a53",
            "--iters",
            "5",
            "--min-seconds",
            "0",
            "--energy-seconds",
            "0.1",
            "--idle-seconds",
            "0",
            "--json",
            result,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(result.read_text())
    md = tmp_path / "report.md"
    proc = edgepipe("report", run_dir, "--device", result, "-o", md)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("student.int8.onnx"))
    assert "arm-camera-a53" in row and f"{100 * r['accuracy']:.2f}%" in row and r["verdict"]["overall"] in row
    assert "## Measured on devices" in md.read_text()
    (tmp_path / "junk.json").write_text('{"schema": "other"}')
    proc = edgepipe("report", run_dir, "--device", tmp_path / "junk.json")
    assert proc.returncode == 2 and "junk.json: not an edgepipe-runner result" in proc.stderr


QAT_RECIPE = """\
name: qshort
seed: 0
data: {source: bundled, test: 300, val: 100, calibration: 64, train_limit: 800}
stages:
  - train: {model: {conv: [8, 16], fc: [32]}, epochs: 2, output: student, label: student}
  - qat: {model: student, weight_bits: 4, epochs: 1}
  - export: {models: [student, student_qat4], parity_samples: 32}
  - quantize: {model: student.onnx, calibration: entropy, max_accuracy_drop: null}
  - quantize: {model: student_qat4.onnx, weight_type: s4, max_accuracy_drop: null, profile: x86-avx2}
  - quantize: {model: student.onnx, mode: fp16, max_accuracy_drop: null}
  - report: {}
"""


def test_qat_model_with_the_wrong_weight_bits_is_refused(tmp_path):
    recipe = tmp_path / "q.yaml"
    recipe.write_text(
        QAT_RECIPE.replace(
            "weight_type: s4, max_accuracy_drop: null, profile: x86-avx2", "weight_type: s8, max_accuracy_drop: null"
        )
    )
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    assert (
        "quantize.weight_type: student_qat4.onnx was trained by QAT for 4-bit signed weights; use weight_type: s4"
        in proc.stderr
    )


def test_qat_recipe_reaches_onnxruntime_with_its_ranges(tmp_path):
    recipe = tmp_path / "q.yaml"
    recipe.write_text(QAT_RECIPE)
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "runs" / "qshort" / "manifest.json").read_text())
    qat = m["stages"]["qat"]["metrics"]
    assert [layer["op"] for layer in qat["layers"]] == ["conv", "conv", "linear", "linear"]
    assert all(layer["rmax"] > layer["rmin"] for layer in qat["layers"])
    q4 = m["stages"]["quantize2"]["metrics"]
    assert q4["options_source"]["qat_ranges"] == 4 and q4["options"]["weight_type"] == "s4"
    # the AVX2 preset asks for reduce_range, but QAT trained on the full grid: turned off, and said so
    assert q4["options_source"]["profile"] == "x86-avx2" and q4["options"]["reduce_range"] is False
    assert "QAT trained the weights on the full grid" in q4["options_source"]["note"]
    assert m["stages"]["quantize"]["metrics"]["options"]["calibration"] == "entropy"
    arts = {n: a["meta"] for s in m["stages"].values() for n, a in s.get("artifacts", {}).items()}
    assert (
        arts["student_qat4.int4.onnx"]["bytes"]
        < arts["student.int8.onnx"]["bytes"]
        < arts["student.fp16.onnx"]["bytes"]
    )
    # the deployed int4 model is about as accurate as QAT's own simulation of it
    assert abs(arts["student_qat4.int4.onnx"]["accuracy"] - qat["test_acc_simulated"]) <= 0.03
    report = (tmp_path / "runs" / "qshort" / "report" / "report.md").read_text()
    assert "activation ranges from QAT (4 tensors)" in report and "preset of profile `x86-avx2`" in report


KD_RECIPE = """\
name: kdshort
seed: 0
data: {train_limit: 600, test: 300, val: 100, calibration: 64}
stages:
  - train: {model: {conv: [8, 16], fc: [32]}, epochs: 2}
  - distill: {teacher: teacher, student: {conv: [4, 8], fc: [16]}, epochs: 1, seeds: [0, 1],
      cache_teacher_logits: true, augment_shift: 0}
  - distill: {mode: online, student: {conv: [4, 8], fc: [16]}, epochs: 1, seeds: [0, 1],
      output: student_dml, baseline: null}
  - distill: {mode: self, student: {conv: [4, 8], fc: [16]}, epochs: 1, generations: 2,
      output: student_ban, baseline: ban0}
  - lowrank: {model: student, layers: [{name: fc1, rank: 4}, {name: conv2, energy: 0.8}], epochs: 1, teacher: previous}
  - export: {models: [student, student_lowrank], parity_samples: 64}
  - quantize: {model: student_lowrank.onnx, calibration_samples: 64, max_accuracy_drop: null}
  - report: {}
"""


def test_distillation_modes_and_lowrank_recipe(tmp_path):
    proc, run_dir, s = run_recipe(tmp_path, KD_RECIPE, "kdshort")
    off, dml, ban = s["distill"]["metrics"], s["distill2"]["metrics"], s["distill3"]["metrics"]
    assert off["seeds"] == [0, 1] and len(off["student"]["per_seed"]) == 2 and len(off["baseline"]["per_seed"]) == 2
    assert off["student"]["mean"] == pytest.approx(sum(off["student"]["per_seed"]) / 2)
    assert off["teacher_cache"]["hit"] is False and "teacher-logits" in off["teacher_cache"]["path"]
    assert len(dml["student"]["peers_test_acc"]) == 2 and all(len(p) == 2 for p in dml["student"]["peers_test_acc"])
    gens = ban["student"]["generations_test_acc"][0]
    assert len(gens) == 3 and gens[0] == ban["baseline"]["test_acc"] and gens[-1] == ban["student"]["test_acc"]
    lr = s["lowrank"]["metrics"]
    fc1 = next(r for r in lr["layers"] if r["layer"] == "fc1")
    assert fc1["method"] == "svd" and fc1["ranks"] == [4] and fc1["params_before"] / fc1["params_after"] > 3
    assert lr["params_after"] < lr["params_before"] and lr["teacher"] == "student (distilled)"
    arts = {n: a["meta"] for st in s.values() for n, a in st.get("artifacts", {}).items()}
    assert arts["student_lowrank.onnx"]["bytes"] < arts["student.onnx"]["bytes"]
    assert arts["student_lowrank.onnx"]["macs"] < arts["student.onnx"]["macs"]
    assert arts["student_lowrank.onnx"]["parity"]["max_abs_diff"] < 1e-3
    # the factorised model quantizes like any other (this one is too small for int8 to shrink the file:
    # per-channel scales and Q/DQ nodes outweigh 2,000 weights)
    assert abs(arts["student_lowrank.int8.onnx"]["accuracy"] - arts["student_lowrank.onnx"]["accuracy"]) <= 0.1
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Distillation" in report and "online DML, kept peer" in report and "self (born-again) gen 2" in report
    assert "## Low-rank decomposition" in report and "| fc1 | svd | 4 |" in report
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert " ± " in rows["offline KD (T=4, α=0.9)"]  # two seeds: mean ± sample std
    assert " ± " not in rows["self (born-again) gen 2 (T=4, α=0.9)"]  # one seed has no spread to show
    assert "distillation (Paddle test accuracy)" in proc.stdout
    # the HTML report follows the lineage from the exported student (its teacher was not exported)
    html = (run_dir / "report" / "report.html").read_text()
    assert "What each hop bought: student → student_lowrank → student_lowrank.int8" in html
    # the factorised artifact reloads in a fresh process by replaying its transforms
    out = tmp_path / "again.onnx"
    proc = edgepipe("export", run_dir / "lowrank" / "student_lowrank", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == arts["student_lowrank.onnx"]["bytes"]
