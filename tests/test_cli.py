"""The CLI as a user meets it: bad input gets one line, a non-zero exit, nothing half-written."""

import json

import pytest
from conftest import edgepipe


def one_line_error(proc):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warnings.warn" not in ln]
    assert len(lines) == 1 and lines[0].startswith("edgepipe: error: "), proc.stderr
    return lines[0]


def test_misspelt_key_in_recipe(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: b\nstages:\n  - train: {}\n  - distill: {temprature: 3}\n")
    line = one_line_error(edgepipe("run", bad, "--runs-dir", tmp_path / "runs"))
    assert line == f"edgepipe: error: {bad}: stages[1].distill.temprature: unknown key; did you mean 'temperature'?"
    assert not (tmp_path / "runs").exists()


def test_missing_recipe_and_missing_model(tmp_path):
    assert "recipe file not found" in one_line_error(edgepipe("run", tmp_path / "nope.yaml"))
    line = one_line_error(edgepipe("export", tmp_path / "no-model"))
    assert "model.json: model description not found" in line


def test_truncated_onnx_to_bench(tmp_path):
    from onnx_models import conv_mlp

    good = conv_mlp(tmp_path / "m.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    out = tmp_path / "r.json"
    proc = edgepipe("bench", cut, "--json", out)
    assert proc.returncode != 0 and not out.exists()
    assert "cut.onnx: not an ONNX model (it does not parse)" in proc.stderr and proc.stderr.strip().count("\n") == 0
    proc = edgepipe(
        "bench", good, "--json", out, "--iters", "5", "--min-seconds", "0", "--energy-seconds", "0", "--no-roofline"
    )
    assert proc.returncode == 0 and json.loads(out.read_text())["runs"][0]["latency"]["n"] >= 5


def test_report_and_verify_on_a_non_run(tmp_path):
    assert "no manifest.json here" in one_line_error(edgepipe("report", tmp_path))


COMMANDS = [
    "run",
    "export",
    "quantize",
    "contract",
    "prune",
    "frames",
    "explain",
    "bench",
    "deploy",
    "optimize",
    "devices",
    "report",
    "verify",
]


def test_the_help_test_covers_every_command():
    import argparse

    from edgepipe.pipeline.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == COMMANDS  # in the order `edgepipe --help` lists them


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    proc = edgepipe(cmd, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: edgepipe {cmd} [-h]"), proc.stdout[:300]
