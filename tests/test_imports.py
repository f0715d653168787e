"""The device side must never pull in paddle; --help must not either."""

import subprocess
import sys

CHECK = (
    "import sys; {imports}; bad = [m for m in ('paddle', 'paddle2onnx', 'onnx') if m in sys.modules]; "
    "print(bad); sys.exit(1 if bad else 0)"
)


def fresh(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_runtime_and_devices_import_without_paddle():
    imports = (
        "import edgepipe.devices, edgepipe.devices.profiles, edgepipe.devices.base.config, edgepipe.runtime, "
        "edgepipe.runtime.runner, edgepipe.runtime.measure.bench, edgepipe.runtime.model.session, "
        "edgepipe.devices.base.atomic, edgepipe.runtime.measure.energy, edgepipe.runtime.measure.roofline, "
        "edgepipe.runtime.judge.verdict, edgepipe.runtime.args, "
        "edgepipe.runtime.model.backends, edgepipe.runtime.model.backends.openvino, edgepipe.runtime.measure.compare"
    )
    proc = fresh(CHECK.format(imports=imports))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runner_works_when_paddle_cannot_be_imported(tmp_path):
    """Simulate a device: importing paddle raises; the runner still runs a model."""
    sys.path.insert(0, str(tmp_path))
    from onnx_models import conv_mlp

    model = conv_mlp(tmp_path / "m.onnx")
    code = (
        "import sys; sys.modules['paddle'] = None; sys.modules['onnx'] = None; "
        f"from edgepipe.runtime.runner import main; sys.exit(main([{str(model)!r}, "
        "'--iters', '5', '--min-seconds', '0', "
        "'--energy-seconds', '0.1', '--idle-seconds', '0', '--profile', 'arm-camera-a53']))"
    )
    proc = fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert "latency" in proc.stdout and "verdict" in proc.stdout
    assert "MACs unknown" not in proc.stdout  # the roofline line is simply left out without a MAC count
    code = (
        "import sys; sys.modules['paddle'] = None; sys.modules['onnx'] = None; "
        "from edgepipe.pipeline.cli.main import main; sys.exit(main(['devices']))"
    )
    proc = fresh(code)
    assert proc.returncode == 0 and "rpi5" in proc.stdout and "detected profile" in proc.stdout, proc.stderr


def test_cli_help_imports_nothing_heavy():
    code = (
        "import sys; from edgepipe.pipeline.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('paddle','onnx','onnxruntime','numpy') if m in sys.modules))"
    )
    proc = fresh(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
