"""Data-parallel training under paddle.distributed.launch (gloo on this CPU machine): two ranks reach the
one-process weights, write one manifest, stop together when one dies, resume, and two launchers on
loopback act as two machines."""

import json
import socket

import numpy as np
import pytest
from conftest import edgepipe, one_line_error
from safetensors.numpy import load_file

# a few steps of train and offline distillation on 600 bundled digits (10 steps a stage)
RECIPE = """\
name: {name}
seed: 0
data: {{source: bundled, test: 200, val: 100, calibration: 50, train_limit: 600}}
stages:
  - train: {{model: {{conv: [8, 16], fc: [32]}}, epochs: 1, batch_size: 64}}
  - distill:
      teacher: teacher
      student: {student}
      temperature: 4.0
      alpha: 0.9
      epochs: 1
      batch_size: 64
      baseline: null
"""
# a student (the default's shape) that kills its own process on rank 1 at its third training step
# while the file `kill-rank-1` is beside it
KILLER = """\
import os, signal
from pathlib import Path
import paddle.nn as nn

MARK = Path(__file__).with_name("kill-rank-1")


class Student(nn.Layer):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                                 nn.Linear(4 * 14 * 14, 10))
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        if self.calls == 3 and MARK.exists() and os.environ.get("PADDLE_TRAINER_ID") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def build(num_classes=10):
    return Student()
"""
STUDENT = "{conv: [4, 8], fc: [16]}"


def _recipe(tmp_path, name, student=STUDENT):
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, student=student))
    return path


def _weights(run_dir):
    return {str(f.relative_to(run_dir)): load_file(f) for f in sorted(run_dir.glob("*/*/model.safetensors"))}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    proc = edgepipe("run", _recipe(tmp, "dp"), "--runs-dir", tmp / "runs")
    assert proc.returncode == 0, proc.stderr
    return tmp / "runs" / "dp"


def _same_weights(a, b):
    """Every tensor of every model within 1e-4 of the one-process run. The batch's gradient is the sum
    of the two shards' gradients, each over its own rows: the same terms added in another order, so
    gradients differ in the last float32 bits; Adam divides by sqrt(v), so where a gradient is near
    zero a difference of a few ulps can move a weight by up to lr·(its share) per step. 10 steps at
    lr 0.002 bound that by 0.02; measured here it is about 2e-5."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) == 2, (wa.keys(), wb.keys())
    for model in wa:
        for k in wa[model]:
            np.testing.assert_allclose(wb[model][k], wa[model][k], rtol=0, atol=1e-4, err_msg=f"{model}:{k}")


def test_two_ranks_train_to_the_one_process_weights(tmp_path, one_process):
    proc = edgepipe("run", _recipe(tmp_path, "dp"), "--runs-dir", tmp_path / "runs", "--nproc", "2")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "dp"
    _same_weights(one_process, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {n: e.get("ranks") for n, e in manifest["stages"].items()} == {"train": 2, "distill": 2}
    one = json.loads((one_process / "manifest.json").read_text())
    # the config sha does not depend on the ranks, so either run resumes the other
    assert [e["config_sha"] for e in one["stages"].values()] == [e["config_sha"] for e in manifest["stages"].values()]
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone prints the table
    logs = sorted(p.name for p in (run_dir / "launch").iterdir())
    assert {"launcher.log", "workerlog.0", "workerlog.1"} <= set(logs)
    assert not list(run_dir.glob(".*partial*")) and not (run_dir / ".tmp").exists()


def test_a_rank_killed_mid_stage_stops_every_rank_and_a_rerun_resumes(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "kill-rank-1").write_text("")
    recipe = _recipe(tmp_path, "dies", student="{python: 'killer:build'}")
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs", "--nproc", "2", timeout=300)
    line = one_line_error(proc)
    # the launcher names the killed rank with its signal when it saw that rank fail first, else the rank that
    # ended without an error of its own is named by its log; either way rank 1, and its log
    assert "rank 1 failed: " in line and "workerlog.1" in line, line
    assert "killed by signal 9" in line or "it ended without an error of its own (killed" in line, line
    run_dir = tmp_path / "runs" / "dies"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["train"]  # the finished stage is kept, the killed one left nothing
    assert not (run_dir / "distill").exists() and not list(run_dir.glob(".*partial*"))
    (tmp_path / "kill-rank-1").unlink()
    again = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs", "--nproc", "2", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "[1/2] train: reused" in again.stdout and "[2/2] distill: running on 2 ranks" in again.stdout
    assert list(json.loads((run_dir / "manifest.json").read_text())["stages"]) == ["train", "distill"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(tmp_path, runs_0, runs_1):
    """Two launchers of one rank each, joined through a master on loopback: (machine 0, machine 1)."""
    import subprocess
    import sys

    recipe, master = _recipe(tmp_path, "dp"), f"127.0.0.1:{_free_port()}"

    def start(rank, runs):
        args = ["run", recipe, "--runs-dir", runs, "--nproc", "1", "--nnodes", "2", "--master", master]
        return subprocess.Popen(
            [sys.executable, "-m", "edgepipe.pipeline", *map(str, args), "--rank", str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    machines = [start(0, runs_0), start(1, runs_1)]
    outs = [m.communicate(timeout=300) for m in machines]
    return [(m.returncode, *o) for m, o in zip(machines, outs)]


def test_two_launchers_on_loopback_act_as_two_machines(tmp_path, one_process):
    (rc0, out0, err0), (rc1, _, err1) = _two_machines(tmp_path, tmp_path / "runs", tmp_path / "runs")
    assert rc0 == 0 and rc1 == 0, (err0, err1)
    run_dir = tmp_path / "runs" / "dp"
    _same_weights(one_process, run_dir)
    assert (run_dir / "launch" / "machine-0" / "workerlog.0").is_file()
    assert (run_dir / "launch" / "machine-1" / "workerlog.0").is_file()
    assert out0.count("run directory:") == 1


def test_a_rank_that_cannot_see_the_run_directory_says_so(tmp_path, monkeypatch):
    """Rank 0 names its run directory and a probe folder in it; a rank on a machine where that path is
    not the same shared folder stops the run (on one machine every rank sees it, so the word is faked)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.core import distributed, follow

    monkeypatch.setattr(distributed, "hear", lambda: ("start", str(tmp_path / "runs" / "dp"), "edgepipe-ranks-1-x"))
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    with pytest.raises(EdgepipeError, match=r"rank 1 on .*cannot see the run directory .*runs/dp .*every machine"):
        follow.follow(None, None, None)


def test_bad_launch_input_is_one_line_each(tmp_path):
    recipe = _recipe(tmp_path, "bad")
    runs = tmp_path / "runs"
    assert "--nproc 0: give at least 1" in one_line_error(edgepipe("run", recipe, "--runs-dir", runs, "--nproc", "0"))
    line = one_line_error(edgepipe("run", recipe, "--runs-dir", runs, "--nproc", "65"))
    assert "stages[0].train.batch_size: 64 is smaller than the 65 ranks" in line, line
    line = one_line_error(edgepipe("run", recipe, "--runs-dir", runs, "--nproc", "1", "--nnodes", "2"))
    assert "--nnodes 2: give --master HOST:PORT" in line, line
    port = _free_port()  # nothing listens there
    proc = edgepipe(
        "run", recipe, "--runs-dir", runs, "--nproc", "1", "--nnodes", "2", "--rank", "1",
        "--master", f"127.0.0.1:{port}", "--master-timeout", "2",
    )  # fmt: skip
    assert f"--master 127.0.0.1:{port}: no answer in 2 s" in one_line_error(proc)
    assert not runs.exists()  # nothing written for a run that could not start
