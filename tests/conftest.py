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
  - distill: {{student: {{conv: [4, 8], fc: [16]}}, teacher: teacher, epochs: 2, features: [{{teacher_layer: fc1, student_layer: fc1}}]}}
  - export: {{parity_samples: 64}}
  - quantize: {{calibration_samples: 64, max_accuracy_drop: null}}
  - bench: {{iters: 20, min_seconds: 0.05, warmup_iters: 2, warmup_seconds: 0.01, energy_seconds: 0.2, idle_seconds: 0.0}}
  - deploy: {{rounds: 3, seconds: 0.05, max_accuracy_drop: 100}}
  - report: {{}}
"""


def edgepipe(*args, cwd=None, timeout=600):
    """Run the real CLI in a fresh interpreter, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "edgepipe.pipeline", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(proc) -> str:
    """The CLI (or the runner) failed with exactly one error line and no traceback; returns it."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgepipe")]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


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
