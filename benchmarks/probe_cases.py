"""Replay the hardening probe's bad inputs against the real CLI and runner; print what each gets.

    .venv/bin/python benchmarks/probe_cases.py            # markdown table on stdout, JSON beside it

Each case builds its bad input in a scratch folder, runs the command a user would, and records the
exit code, the one line edgepipe printed, and the check that matters for the case (no file
created, no output written, nothing left behind). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import conv_mlp  # noqa: E402


def cli(*args, module="edgepipe.pipeline"):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("edgepipe")), lines[-1] if lines else "")
    if p.returncode == 0:
        said = "(ran)"
    return p.returncode, said, "Traceback" in p.stderr


def runner(*args):
    return cli(*args, module="edgepipe.runtime")


class Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


FAST = ("--profile", "none", "--iters", "5", "--min-seconds", "0", "--energy-seconds", "0", "--no-roofline")


def cases(tmp: Path):
    """Every case in order: (case, (exit code, what edgepipe said, traceback?), check)."""
    model = conv_mlp(tmp / "m.onnx")
    yield from pickle_cases(tmp)
    yield from external_data_cases(tmp)
    yield from recipe_cases(tmp)
    yield from runner_input_cases(tmp, model)
    yield from export_cases(tmp)
    yield from limit_cases(tmp, model)
    yield from file_mode_cases(tmp, model)


def pickle_cases(tmp: Path):
    """1: a weights file whose pickle would run a command."""
    marker = tmp / "pwned"
    (tmp / "evil.pdparams").write_bytes(pickle.dumps({"w": Touch(marker)}))
    (tmp / "evil.yaml").write_text(
        "name: evil\nstages:\n  - train: {model: {conv: [4], fc: [8], weights: evil.pdparams}}\n"
    )
    yield (
        "1. a .pdparams whose pickle runs a command",
        cli("run", tmp / "evil.yaml", "--runs-dir", tmp / "runs"),
        f"command ran: {marker.exists()}",
    )


def external_data_cases(tmp: Path):
    """2: quantizing a model whose external data is a symlink out of its folder."""
    ext = tmp / "ext"
    ext.mkdir()
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(ext / "m.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    (ext / "w.data").unlink()
    (tmp / "secret").write_bytes(b"SECRET" * 3000)
    (ext / "w.data").symlink_to(tmp / "secret")
    for mode in ("matmul4", "fp16"):
        out = tmp / f"{mode}.onnx"
        yield (
            f"2. quantize --mode {mode}, external data a symlink outside the folder",
            cli("quantize", ext / "m.onnx", "--mode", mode, "-o", out),
            f"output written: {out.exists()}",
        )


def recipe_cases(tmp: Path):
    """3 and 4: bad recipe values and run names."""
    (tmp / "inf.yaml").write_text("name: inf\nstages:\n  - train: {lr: .inf}\n")
    yield "3. lr: .inf", cli("run", tmp / "inf.yaml", "--runs-dir", tmp / "runs"), ""

    (tmp / "out.yaml").write_text("name: out\nstages:\n  - train: {output: ../../x}\n")
    yield "4. output: ../../x", cli("run", tmp / "out.yaml", "--runs-dir", tmp / "runs"), ""
    (tmp / "ok.yaml").write_text(
        "name: ok\ndata: {train_limit: 200, test: 50, val: 20, calibration: 16}\nstages:\n"
        "  - train: {model: {conv: [4], fc: [8]}, epochs: 1}\n"
    )
    yield (
        "4. --name ../escape",
        cli("run", tmp / "ok.yaml", "--runs-dir", tmp / "runs", "--name", "../escape"),
        f"folder made: {(tmp / 'escape').exists()}",
    )


def runner_input_cases(tmp: Path, model: Path):
    """6: the runner's --inputs and --json."""
    np.savez(tmp / "f64.npz", x=np.zeros((4, 1, 8, 8)), y=np.zeros(4, np.int64))
    np.savez(tmp / "zero.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    code, said, tb = runner(model, "--inputs", tmp / "f64.npz", "--json", tmp / "f.json", *FAST)
    r = json.loads((tmp / "f.json").read_text()) if code == 0 else {}
    yield (
        "6. runner --inputs float64",
        (code, (r.get("notes") or [said])[0], tb),
        f"{r.get('accuracy_samples')} inputs scored",
    )
    yield "6. runner --inputs with zero rows", runner(model, "--inputs", tmp / "zero.npz", *FAST), ""
    yield (
        "6. runner --json in a missing folder",
        runner(model, "--json", tmp / "no" / "r.json", *FAST),
        "refused before measuring",
    )


def export_cases(tmp: Path):
    """7: export with no parity samples."""
    from edgepipe.pipeline.core.artifact import save_model
    from edgepipe.pipeline.models.builtin import ModelSpec, build_model

    spec = ModelSpec(conv=(4,), fc=(8,))
    save_model(tmp / "paddle_model", build_model(spec), spec)
    yield (
        "7. export --parity-samples 0",
        cli("export", tmp / "paddle_model", "--parity-samples", "0"),
        f"ONNX left: {(tmp / 'paddle_model' / 'model.onnx').exists()}",
    )


def limit_cases(tmp: Path, model: Path):
    """8 and 9: out-of-range numbers, bad data, missing or read-only paths."""
    code, said, tb = runner(model, "--threads", "4096", "--json", tmp / "t.json", *FAST)
    notes = json.loads((tmp / "t.json").read_text())["notes"] if code == 0 else []
    yield "8. runner --threads 4096", (code, notes[0] if notes else said, tb), ""

    np.savez(tmp / "nan.npz", x=np.full((4, 1, 8, 8), np.nan, np.float32), y=np.zeros(4, np.int64))
    yield "9. runner --inputs with NaN", runner(model, "--inputs", tmp / "nan.npz", *FAST), ""
    yield "9. runner --macs -5", runner(model, "--macs", "-5"), ""
    (tmp / "dup.yaml").write_text("name: dup\nstages:\n  - train: {output: m}\n  - train: {output: m}\n")
    yield "9. two stages writing the same output", cli("run", tmp / "dup.yaml", "--runs-dir", tmp / "runs"), ""
    yield "9. verify a missing folder", cli("verify", tmp / "nope"), ""
    (tmp / "p.yaml").write_text("name: mine\n")
    yield "9. a profile missing a field", runner(model, "--profile", tmp / "p.yaml"), ""
    np.savez(tmp / "cal.npz", x=np.array([["a"] * 64] * 4))
    yield (
        "9. calibration of the wrong dtype",
        cli("quantize", model, "--calibration", tmp / "cal.npz", "-o", tmp / "q.onnx"),
        "",
    )
    (tmp / "empty.onnx").write_bytes(b"")
    yield "9. a zero-byte model to quantize", cli("quantize", tmp / "empty.onnx", "-o", tmp / "q2.onnx"), ""
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o500)
    if os.geteuid() != 0:  # root writes into a 0500 folder, so the case cannot be made as root
        yield "9. a read-only --runs-dir", cli("run", tmp / "ok.yaml", "--runs-dir", tmp / "ro"), ""


def file_mode_cases(tmp: Path, model: Path):
    """10: the file mode an output is written with."""
    cli("quantize", model, "--mode", "fp16", "-o", tmp / "mode.onnx")
    mask = os.umask(0)
    os.umask(mask)
    yield (
        "10. file mode of an output",
        (0, f"{oct((tmp / 'mode.onnx').stat().st_mode & 0o777)} under umask {oct(mask)}", False),
        "",
    )


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-probe-") as tmp:
        for case, (code, said, traceback), check in cases(Path(tmp)):
            said = said.replace(tmp, "…")
            rows.append({"case": case, "exit": code, "says": said, "traceback": traceback, "check": check})
            print(f"  {case}: exit {code}", file=sys.stderr)
        os.chmod(Path(tmp) / "ro", 0o700)  # so the folder can be removed
    print("| case | exit | what edgepipe says | check |\n|---|---|---|---|")
    for r in rows:
        said = r["says"].replace("|", "\\|")
        print(
            f"| {r['case']} | {r['exit']} | {said[:160]}{'…' if len(said) > 160 else ''} | "
            f"{r['check']}{' TRACEBACK' if r['traceback'] else ''} |"
        )
    out = ROOT / "benchmarks" / "results" / "probe_cases.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
