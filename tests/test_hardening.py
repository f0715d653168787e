"""Hardening: each finding of the bad-input / crash / tamper / security probe, reproduced and refused.

Every test here failed before the change it guards (the crafted pickle ran, the symlinked data
was copied, `lr: .inf` was accepted, `output: ../../x` wrote outside the run, a killed parent left
its child running, `--threads 4096` ran 4096 threads, NaN inputs were scored, outputs were 0600).
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import edgepipe, one_line_error, outside_connections
from onnx_models import conv_mlp, mnist_linear

from edgepipe.devices import EdgepipeError


def runner(*args, timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


FAST = (
    "--profile",
    "none",
    "--iters",
    "5",
    "--min-seconds",
    "0",
    "--warmup",
    "1",
    "--warmup-seconds",
    "0",
    "--energy-seconds",
    "0",
    "--no-roofline",
)


# 1. weights that cannot run code -------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious .pdparams does: unpickling calls this
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_pdparams_runs_nothing_and_is_refused_in_one_line(tmp_path):
    import paddle

    from edgepipe.pipeline.core.artifact import load_state

    marker = tmp_path / "pwned"
    evil = tmp_path / "w.pdparams"
    evil.write_bytes(pickle.dumps({"0.weight": _Payload(marker)}, protocol=4))
    layer = paddle.nn.Sequential(paddle.nn.Linear(2, 2))
    with pytest.raises(EdgepipeError, match=r"w.pdparams: refused: the pickle asks for pathlib\."):
        load_state(layer, evil, "give another file")
    assert not marker.exists()


def test_the_cli_refuses_a_crafted_pdparams_given_as_weights(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "w.pdparams").write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=4))
    (tmp_path / "r.yaml").write_text(
        "name: evil\ndata: {train_limit: 200, test: 50, val: 20, calibration: 16}\nstages:\n"
        "  - train: {model: {conv: [4], fc: [8], weights: w.pdparams}, epochs: 1}\n"
    )
    line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs"))
    assert "w.pdparams: refused" in line and "could run code" in line
    assert not marker.exists()


def test_a_real_paddle_state_dict_still_loads_through_the_safe_path(tmp_path):
    import paddle

    from edgepipe.pipeline.core.artifact import load_state

    src = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3), paddle.nn.BatchNorm2D(2), paddle.nn.Linear(3, 4))
    paddle.save(src.state_dict(), str(tmp_path / "w.pdparams"))
    dst = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3), paddle.nn.BatchNorm2D(2), paddle.nn.Linear(3, 4))
    load_state(dst, tmp_path / "w.pdparams", "fix")
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_model_folders_hold_safetensors_and_old_pdparams_folders_still_load(tmp_path):
    import paddle

    from edgepipe.pipeline.core.artifact import save_model
    from edgepipe.pipeline.models.builtin import ModelSpec, build_model
    from edgepipe.pipeline.models.load import load_model

    spec = ModelSpec(conv=(4,), fc=(8,))
    layer = build_model(spec)
    save_model(tmp_path / "m", layer, spec)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    assert not (tmp_path / "m" / "model.safetensors").read_bytes().startswith(b"\x80")  # not a pickle
    # a folder written before safetensors: model.pdparams (a pickle) beside the same model.json
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(tmp_path / "m" / "model.json", old / "model.json")
    paddle.save(layer.state_dict(), str(old / "model.pdparams"))
    loaded, _ = load_model(old)
    x = paddle.randn([2, 1, 28, 28])
    np.testing.assert_allclose(loaded(x).numpy(), layer.eval()(x).numpy(), rtol=1e-6)


def test_non_finite_weights_are_refused_when_loaded(tmp_path):
    import paddle

    from edgepipe.pipeline.core.artifact import load_state
    from edgepipe.pipeline.core.weights import write_state

    layer = paddle.nn.Linear(2, 2)
    state = {k: v.numpy() for k, v in layer.state_dict().items()}
    state["weight"][0, 0] = np.nan
    write_state(tmp_path / "w.safetensors", state)
    with pytest.raises(EdgepipeError, match="hold NaN or inf"):
        load_state(layer, tmp_path / "w.safetensors", "fix")


# 2. one ONNX loading gate ---------------------------------------------------------------------------------


def _external_model(folder: Path, secret: Path) -> Path:
    """A MatMul model whose weight lives in external data `w.data`, a symlink to `secret`."""
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    size = (folder / "w.data").stat().st_size
    (folder / "w.data").unlink()
    secret.write_bytes(b"SECRET-" * (size // 7 + 1))
    (folder / "w.data").symlink_to(secret)
    return folder / "m.onnx"


@pytest.mark.parametrize("mode", ["matmul4", "fp16", "dynamic"])
def test_quantize_refuses_symlinked_external_data_and_writes_nothing(tmp_path, mode):
    model = _external_model(tmp_path / "model", tmp_path / "secret.txt")
    out = tmp_path / "out.onnx"
    line = one_line_error(edgepipe("quantize", model, "--mode", mode, "-o", out))
    assert "w.data is a symbolic link" in line
    assert not out.exists() and not list(tmp_path.glob("**/*out*"))


def test_the_runner_and_explain_refuse_the_same_model_at_the_gate(tmp_path):
    model = _external_model(tmp_path / "model", tmp_path / "secret.txt")
    assert "is a symbolic link" in one_line_error(runner(model, *FAST))
    assert "is a symbolic link" in one_line_error(edgepipe("explain", model))


def test_the_gate_refuses_absolute_and_parent_locations_and_admits_a_plain_file(tmp_path):
    from edgepipe.runtime.model.modelfile import check_model_file

    model = _external_model(tmp_path / "model", tmp_path / "secret.txt")
    (tmp_path / "model" / "w.data").unlink()
    shutil.copy(tmp_path / "secret.txt", tmp_path / "model" / "w.data")
    assert check_model_file(model).external == (tmp_path / "model" / "w.data",)
    m = onnx.load(str(model), load_external_data=False)
    for location in (str(tmp_path / "secret.txt"), "../secret.txt", "sub/../../secret.txt"):
        m.graph.initializer[0].external_data[0].value = location
        onnx.save(m, str(tmp_path / "model" / "bad.onnx"))
        with pytest.raises(EdgepipeError, match="outside the model's folder"):
            check_model_file(tmp_path / "model" / "bad.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(EdgepipeError, match="empty.onnx: the file is empty"):
        check_model_file(tmp_path / "empty.onnx")


# 3. numerics -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_a_non_finite_learning_rate_is_a_config_error(tmp_path, value):
    (tmp_path / "r.yaml").write_text(f"name: r\nstages:\n  - train: {{lr: {value}}}\n")
    line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs"))
    assert "stages[0].train.lr:" in line and "not a finite number" in line
    assert not (tmp_path / "runs").exists()


def test_a_diverging_training_stops_with_epoch_step_and_loss():
    import paddle

    from edgepipe.pipeline.training import fit

    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(16, 4))
    x = np.random.default_rng(0).standard_normal((64, 1, 4, 4)).astype(np.float32)
    y = np.zeros(64, np.int64)
    with pytest.raises(EdgepipeError, match=r"the loss became (nan|inf) at epoch 1, step \d+ .*diverged"):
        fit(model, x, y, epochs=2, batch_size=16, lr=1e38, rng=np.random.default_rng(0))  # finite, but diverges


def test_parity_fails_on_nan_outputs(tmp_path):
    from edgepipe.export.paddle_onnx import ParityError, check_parity

    model = conv_mlp(tmp_path / "m.onnx")
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(ParityError, match="NaN or inf"):
        check_parity(model, np.full((4, 10), np.nan, np.float32), x)


def test_export_with_no_parity_samples_is_refused_and_writes_nothing(tmp_path):
    import paddle

    from edgepipe.pipeline.core.artifact import save_model
    from edgepipe.pipeline.models.builtin import ModelSpec, build_model

    paddle.seed(0)
    spec = ModelSpec(conv=(4,), fc=(8,))
    save_model(tmp_path / "m", build_model(spec), spec)
    line = one_line_error(edgepipe("export", tmp_path / "m", "--parity-samples", "0"))
    assert "--parity-samples 0" in line
    assert not (tmp_path / "m" / "model.onnx").exists()


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: {"x": np.full((4, 1, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
        (lambda: {"x": np.zeros((0, 1, 8, 8), np.float32)}, "no rows"),
        (lambda: {"x": np.array([["a"] * 64] * 4)}, "not a numeric array"),
    ],
)
def test_the_runner_refuses_bad_inputs_in_one_line(tmp_path, make, needle):
    model = conv_mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", **make())
    assert needle in one_line_error(runner(model, "--inputs", tmp_path / "in.npz", *FAST))


def test_float64_inputs_are_converted_and_scored(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8))  # float64
    np.savez(tmp_path / "in.npz", x=x, y=np.zeros(8, np.int64))
    proc = runner(model, "--inputs", tmp_path / "in.npz", "--json", tmp_path / "r.json", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["accuracy_samples"] == 8


# 4. paths ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["../../x", "/tmp/x", ".hidden", "a/b"])
def test_a_stage_output_outside_its_folder_is_refused(tmp_path, output):
    (tmp_path / "r.yaml").write_text(f"name: r\nstages:\n  - train: {{output: '{output}'}}\n")
    line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs"))
    assert "stages[0].train.output:" in line and "not a plain file name" in line


@pytest.mark.parametrize("name", ["../escape", "..", "/abs", ".hidden"])
def test_a_run_name_outside_the_runs_directory_is_refused(tmp_path, name):
    (tmp_path / "r.yaml").write_text("name: r\nstages:\n  - train: {}\n")
    line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs", "--name", name))
    assert "run name" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_two_stages_writing_the_same_output_is_a_config_error(tmp_path):
    (tmp_path / "r.yaml").write_text("name: r\nstages:\n  - train: {output: m}\n  - train: {output: m}\n")
    line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs"))
    assert "stages[1].train.output: 'm' is already produced" in line


def test_verify_on_a_missing_folder_is_one_line_with_exit_2(tmp_path):
    proc = edgepipe("verify", tmp_path / "nope")
    assert proc.returncode == 2 and "no such run directory" in one_line_error(proc)


def test_verify_reports_a_file_the_manifest_does_not_list_and_a_damaged_manifest_says_how_to_recover(
    short_run, tmp_path
):
    run_dir = tmp_path / "copy"
    shutil.copytree(short_run[0], run_dir)
    (run_dir / "train" / "planted.txt").write_text("x")
    proc = edgepipe("verify", run_dir)
    assert proc.returncode == 1 and "train/planted.txt: not recorded in the manifest" in proc.stdout
    (run_dir / "manifest.json").write_text("{not json")
    line = one_line_error(edgepipe("verify", run_dir))
    assert "remove that file" in line and "--force" in line


def test_a_read_only_runs_dir_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check cannot fail as root")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    (tmp_path / "r.yaml").write_text("name: r\nstages:\n  - train: {}\n")
    try:
        line = one_line_error(edgepipe("run", tmp_path / "r.yaml", "--runs-dir", ro))
    finally:
        ro.chmod(0o700)
    assert "cannot write there" in line or "Permission denied" in line


# 5. processes ----------------------------------------------------------------------------------------------

_PARENT = """
import sys, time
from edgepipe.devices.base.child import run_child
run_child([sys.executable, "-c", "import os, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
           .replace("sys.argv[1]", repr(sys.argv[1]))])
"""


def test_a_child_dies_with_its_killed_parent(tmp_path):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pidfile)])
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"child {child} outlived its killed parent")


def test_leftovers_of_dead_processes_are_swept_and_a_live_ones_kept(tmp_path):
    from edgepipe.devices.base.atomic import sweep_temp

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = [tmp_path / f"edgepipe-export-{dead.pid}-abc", tmp_path / f".train.partial-{dead.pid}"]
    kept = [tmp_path / f"edgepipe-export-{os.getppid()}-abc", tmp_path / "edgepipe-notes", tmp_path / "user-folder"]
    for p in gone + kept:
        p.mkdir()
    assert sorted(sweep_temp(tmp_path)) == sorted(gone)
    assert all(p.is_dir() for p in kept) and not any(p.exists() for p in gone)


def test_scratch_folders_live_under_the_run_directory_during_a_run(tmp_path):
    from edgepipe.devices.base.atomic import temp_dir, temp_root

    with temp_root(tmp_path / "run" / ".tmp"):
        with temp_dir("export") as d:
            assert Path(d).parent == tmp_path / "run" / ".tmp" and f"-{os.getpid()}-" in Path(d).name
    assert not (tmp_path / "run" / ".tmp").exists()  # an empty root is removed


# 6. errors ----------------------------------------------------------------------------------------------------


def test_threads_above_the_cpus_are_capped_with_a_note(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    t0 = time.perf_counter()
    proc = runner(model, "--threads", "4096", "--json", tmp_path / "r.json", *FAST)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["options"]["threads"] == os.cpu_count()
    assert any("asks for 4096 threads" in n for n in r["notes"])
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--macs", "-5"), "argument --macs: -5 must be at least 1"),
        (("--threads", "0"), "argument --threads: 0 must be"),
        (("--iters", "x"), "argument --iters: 'x' is not an integer"),
        (("--energy-seconds", "inf"), "argument --energy-seconds"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(tmp_path, args, needle):
    proc = runner(conv_mlp(tmp_path / "m.onnx"), *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_an_unwritable_json_path_fails_before_measuring(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    t0 = time.perf_counter()
    line = one_line_error(runner(model, "--json", tmp_path / "no" / "such" / "r.json", "--min-seconds", "20"))
    assert "--json" in line and "does not exist" in line
    assert time.perf_counter() - t0 < 15  # refused up front, not after 20 s of measuring


def test_a_profile_missing_a_field_names_the_field(tmp_path):
    (tmp_path / "p.yaml").write_text("name: mine\n")
    line = one_line_error(runner(conv_mlp(tmp_path / "m.onnx"), "--profile", tmp_path / "p.yaml", *FAST[2:]))
    assert "p.yaml" in line and "missing key" in line and "positional argument" not in line


# 10. file modes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    """Files get 0666 less the umask of the process writing them, not mkstemp's 0600. edgepipe reads the
    umask once, on import, so each umask is set in a fresh process first; the modes expected are literals."""
    code = (
        "import os, sys; os.umask(int(sys.argv[1], 8)); from pathlib import Path; import numpy as np; "
        "from edgepipe.pipeline.core.weights import write_state; "
        "from edgepipe.devices.base.atomic import write_bytes_atomic; "
        "d = Path(sys.argv[2]); write_bytes_atomic(d / 'a.bin', b'x'); "
        "write_state(d / 'w.safetensors', {'w': np.ones(2, np.float32)})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, f"{umask:o}", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("a.bin", "w.safetensors"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(mode), name


# no telemetry ------------------------------------------------------------------------------------------------


def test_the_runner_makes_no_network_connection(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ORT_DISABLE_TELEMETRY")}
    calls = outside_connections(
        tmp_path / "trace.txt",
        [model, "--profile", "none", "--min-seconds", "10", "--max-seconds", "11", "--energy-seconds", "0", "--quiet"],
        env,
    )
    assert not calls, calls[:3]


def test_a_killed_run_leaves_no_live_runner_and_its_rerun_no_leftovers(tmp_path):
    import psutil

    mnist_linear(tmp_path / "m.onnx")
    recipe = tmp_path / "k.yaml"
    body = (
        "name: k\ndata: {{train_limit: 200, test: 50, val: 20, calibration: 16}}\nstages:\n"
        "  - bench: {{models: [{{onnx: m.onnx}}], warmup_iters: 1, warmup_seconds: 0, iters: 1, min_seconds: {s},"
        " max_seconds: {s}, energy_seconds: 0, idle_seconds: 0, roofline: false, profile: none}}\n"
    )
    recipe.write_text(body.format(s=60))
    parent = subprocess.Popen(
        [sys.executable, "-m", "edgepipe.pipeline", "run", str(recipe), "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child = None
    for _ in range(600):  # the runner starts once the data is loaded
        kids = [
            p
            for p in psutil.Process(parent.pid).children(recursive=True)
            if "edgepipe.runtime" in " ".join(p.cmdline())
        ]
        if kids:
            child = kids[0]
            break
        time.sleep(0.1)
    assert child is not None, "the bench runner never started"
    assert (tmp_path / "runs" / "k" / f".bench.partial-{parent.pid}").is_dir()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        child.wait(timeout=10)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the bench runner outlived the killed run")
    recipe.write_text(body.format(s=0.05))
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    left = [p.name for p in (tmp_path / "runs" / "k").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert not left, left


_DTYPE_ATTACK = """
import pickle, sys
import numpy as np
from numpy._core.multiarray import _reconstruct
class FakeDtype:  # a dtype whose state gives it an object field: the array's bytes would be read as pointers
    def __reduce__(self):
        return (np.dtype, ('f4', False, {copy}), (3, '|', None, ('a',), {{'a': (np.dtype('O'), 0)}}, 8, 1, 0))
class FakeArr:
    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (0,), b'b'), (1, (4,), FakeDtype(), False, b'A' * 32))
open(sys.argv[1], 'wb').write(pickle.dumps({{'w': FakeArr(), 'StructuredToParameterName@@': {{'w': 'x'}}}}, protocol=4))
from edgepipe.pipeline.core.weights import read_state
from edgepipe.devices import EdgepipeError
try:
    read_state(sys.argv[1])
except EdgepipeError as exc:
    print("refused:", exc)
assert np.dtype('f4').names is None and not np.dtype('f4').hasobject  # numpy's own float32 untouched
"""


@pytest.mark.parametrize("copy", ["True", "False"])
def test_a_pickled_dtype_cannot_become_an_object_array(tmp_path, copy):
    proc = subprocess.run(
        [sys.executable, "-c", _DTYPE_ATTACK.format(copy=copy), str(tmp_path / "w.pdparams")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-500:]  # a crash (segfault) or the float32 check would fail here
    assert "refused: " in proc.stdout and "could run code" in proc.stdout


def test_the_gate_refuses_two_locations_and_the_in_memory_marker(tmp_path):
    from edgepipe.runtime.model.modelfile import check_model_file

    model = _external_model(tmp_path / "model", tmp_path / "secret.txt")
    (tmp_path / "model" / "w.data").unlink()
    shutil.copy(tmp_path / "secret.txt", tmp_path / "model" / "w.data")
    m = onnx.load(str(model), load_external_data=False)
    entry = m.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", "../secret.txt"
    onnx.save(m, str(tmp_path / "model" / "two.onnx"))
    with pytest.raises(EdgepipeError, match="names its external data twice"):
        check_model_file(tmp_path / "model" / "two.onnx")
    m = onnx.load(str(model), load_external_data=False)
    m.graph.initializer[0].external_data[0].value = "*/_ORT_MEM_ADDR_/*"
    onnx.save(m, str(tmp_path / "model" / "mem.onnx"))
    with pytest.raises(EdgepipeError, match="plain relative file name"):
        check_model_file(tmp_path / "model" / "mem.onnx")


def test_a_number_too_large_for_a_float_is_a_config_error(tmp_path):
    (tmp_path / "r.yaml").write_text("name: r\nstages:\n  - train: {lr: " + "9" * 400 + "}\n")
    assert "too large for a number" in one_line_error(
        edgepipe("run", tmp_path / "r.yaml", "--runs-dir", tmp_path / "runs")
    )


def test_the_sweep_skips_a_pid_no_process_can_have(tmp_path):
    from edgepipe.devices.base.atomic import sweep_temp

    (tmp_path / "edgepipe-export-99999999999999-x").mkdir()
    assert sweep_temp(tmp_path) == [] and (tmp_path / "edgepipe-export-99999999999999-x").is_dir()
