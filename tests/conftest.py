import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHORT_RECIPE = """\
name: {name}
seed: 0
data: {{train_limit: 800, test: 300, val: 100, calibration: 64}}
stages:
  - train: {{model: {{conv: [8, 16], fc: [32]}}, epochs: 2}}
  - distill: {{student: {{conv: [4, 8], fc: [16]}}, teacher: teacher, epochs: 2,
      features: [{{teacher_layer: fc1, student_layer: fc1}}]}}
  - export: {{parity_samples: 64}}
  - quantize: {{calibration_samples: 64, max_accuracy_drop: null}}
  - bench: {{iters: 20, min_seconds: 0.05, warmup_iters: 2, warmup_seconds: 0.01, energy_seconds: 0.2,
      idle_seconds: 0.0}}
  - deploy: {{rounds: 3, seconds: 0.05, max_accuracy_drop: 100}}
  - report: {{}}
"""


def edgepipe(*args, cwd=None, timeout=600):
    """Run the real CLI in a fresh interpreter, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.pipeline", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def one_line_error(proc) -> str:
    """The CLI (or the runner) failed with exactly one error line and no traceback; returns it."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgepipe")]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def outside_connections(log: Path, runner_args, env: dict) -> list[str]:
    """Run the on-device runner under strace; the connect/send calls it made to anything but this
    machine (loopback, Unix and netlink sockets left out). Skips where strace is missing or cannot trace."""
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed here; the check needs it to see connect() calls")
    proc = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg,sendmmsg",
            "-o",
            str(log),
            sys.executable,
            "-m",
            "edgepipe.runtime",
            *map(str, runner_args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr.lower():
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    return [
        ln
        for ln in log.read_text().splitlines()
        if ("connect(" in ln or "send" in ln)
        and "AF_UNIX" not in ln
        and "127.0.0.1" not in ln
        and "::1" not in ln
        and "AF_NETLINK" not in ln
    ]


def run_recipe(tmp_path, text: str, name: str):
    """Write the recipe, run it with the real CLI, return (the CLI result, run dir, manifest stages)."""
    import json

    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(text)
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / name
    return proc, run_dir, json.loads((run_dir / "manifest.json").read_text())["stages"]


@pytest.fixture
def short_recipe(tmp_path):
    def make(name="short"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SHORT_RECIPE.format(name=name))
        return path

    return make


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """One real run of the short recipe, shared by tests that only read its results."""
    root = tmp_path_factory.mktemp("shared-run")
    recipe = root / "short.yaml"
    recipe.write_text(SHORT_RECIPE.format(name="short"))
    proc = edgepipe("run", recipe, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    return root / "runs" / "short", proc


@pytest.fixture(scope="session", autouse=True)
def _edgepipe_cache(tmp_path_factory):
    """The roofline's GEMM peak is cached per host; tests (and the processes they start) measure it
    into their own folder, not the user's ~/.cache."""
    os.environ["EDGEPIPE_CACHE"] = str(tmp_path_factory.mktemp("edgepipe-cache"))
