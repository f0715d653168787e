"""The deploy stage: the fastest model × backend × precision that keeps the accuracy and the budgets,
measured side by side, written as deploy.json, and run as chosen by the runner."""
import json
import subprocess
import sys

from conftest import one_line_error

from edgepipe.pipeline.core.run import verify_run
from edgepipe.pipeline.stages.deploy import choose
from edgepipe.runtime.backends import available


def cand(name, acc, p50, precision="fp32", backend="onnxruntime", p90=None, nbytes=1000):
    return {"name": name, "backend": backend, "accuracy": acc, "p50_ms": p50, "p90_ms": p90 or p50 * 1.2, "bytes": nbytes,
            "ran": {"precision": precision}}


def test_choose_takes_the_fastest_that_keeps_accuracy_and_budgets():
    cands = [cand("float.onnx", 0.970, 0.10), cand("int8.onnx", 0.975, 0.15, "int8"), cand("tiny.onnx", 0.950, 0.05),
             cand("fast_big.onnx", 0.971, 0.06, nbytes=10**9), cand("slow_tail.onnx", 0.97, 0.07, p90=30.0)]
    best, table = choose(cands, max_drop=1.0, budgets={"latency_p90_ms": 20.0, "model_bytes": 10**8})
    assert best["name"] == "float.onnx" and [c["name"] for c in table if c["chosen"]] == ["float.onnx"]
    why = {c["name"]: " ".join(c["why_not"]) for c in table}
    assert "slower: p50 ×1.50" in why["int8.onnx"]
    assert "below 96.10%" in why["tiny.onnx"]  # best float 97.1% − 1 pt
    assert "bytes over" in why["fast_big.onnx"] and "over the 20 ms budget" in why["slow_tail.onnx"]
    best, _ = choose(cands, max_drop=3.0, budgets={})
    assert best["name"] == "tiny.onnx"  # with room for 3 points and no budgets, the fastest wins
    assert choose([cand("a", 0.5, 1.0, p90=50.0)], 1.0, {"latency_p90_ms": 20.0})[0] is None


def test_short_run_deploys_its_fastest_candidate_and_the_runner_runs_it(short_run, tmp_path):
    run_dir, proc = short_run
    d = json.loads((run_dir / "deploy" / "deploy.json").read_text())
    assert d["schema"] == "edgepipe-deployment/1" and (run_dir / "deploy" / d["model"]).is_file()
    table = d["candidates"]
    backends = {c["backend"] for c in table}
    assert backends == ({"onnxruntime", "openvino"} if available("openvino")[0] else {"onnxruntime"})
    assert len(table) == 4 * len({(c["backend"], c["precision"]) for c in table})  # every model on every pairing
    chosen = [c for c in table if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["p50_ms"] == min(c["p50_ms"] for c in table if c["eligible"])
    assert d["input_contract"] and "deployment:" in proc.stdout
    assert verify_run(run_dir) == []
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "edgepipe.runtime", "--deployment", run_dir / "deploy" / "deploy.json",
                        "--inputs", run_dir / "bench" / "test_split.npz", "--iters", "5", "--min-seconds", "0",
                        "--energy-seconds", "0", "--json", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["backend"]["name"] == d["backend"] and res["options"]["threads"] == d["threads"]
    assert abs(res["accuracy"] - d["accuracy"]) < 1e-9  # the same session type on the same test split
    md = (run_dir / "report" / "report.md").read_text()
    assert "## Deployment" in md and "**chosen**" in md


def test_a_bad_deployment_file_is_one_line(tmp_path):
    bad = tmp_path / "deploy.json"
    bad.write_text('{"schema": "edgepipe-deployment/1", "model": "../x.onnx"}')
    r = subprocess.run([sys.executable, "-m", "edgepipe.runtime", "--deployment", bad], capture_output=True, text=True,
                       timeout=120)
    assert "must be a file name beside deploy.json" in one_line_error(r)
    r = subprocess.run([sys.executable, "-m", "edgepipe.runtime"], capture_output=True, text=True, timeout=120)
    assert "--deployment" in one_line_error(r)


def test_deploy_command_on_a_finished_run(short_run, tmp_path):
    from conftest import edgepipe

    run_dir, _ = short_run
    out = tmp_path / "dep"
    proc = edgepipe("deploy", run_dir, "--rounds", "1", "--seconds", "0.02", "--max-drop", "100", "--backend", "onnxruntime",
                    "-o", out)
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "deploy.json").read_text())
    assert (out / d["model"]).is_file() and {c["backend"] for c in d["candidates"]} == {"onnxruntime"}
    assert sorted(p.name for p in out.iterdir()) == sorted(["deploy.json", d["model"]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left
    line = one_line_error(edgepipe("deploy", run_dir, "--inputs", tmp_path / "none.npz", "-o", tmp_path / "d2"))
    assert "none.npz: test inputs not found" in line and not (tmp_path / "d2").exists()
