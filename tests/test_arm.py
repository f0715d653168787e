"""`make test-arm`: the on-device runner in a Debian arm64 root, run through qemu-user-static.

The root is built once with `debootstrap --arch=arm64` under .arm/ (EDGEPIPE_ARM_DIR); the runner's
runtime requirements are installed there from aarch64 wheels (downloaded by the host's pip,
pinned to the host's onnxruntime and numpy) plus edgepipe's own wheel, with no paddle. The demo's
int8 model then runs on the test split on both sides and the outputs are compared. Timings under
emulation mean nothing and are not compared; outputs, accuracy and the result format are.

Needs root (debootstrap, chroot, mount) and binfmt_misc; skips with the reason otherwise.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "devices" / "image"))
from emulation import MIRROR, RUNNER_ARGS, SUITE, arm_emulation_problem, chroot_run, sh, wheelhouse_command  # noqa: E402  (devices/image/emulation.py)

# the first run debootstraps the root and may run the demo (their own limits: 3600 s and 1800 s), past the
# suite's per-test timeout
pytestmark = [pytest.mark.arm, pytest.mark.timeout(7200)]

ARM = Path(os.environ.get("EDGEPIPE_ARM_DIR", REPO / ".arm"))
ROOT = ARM / "rootfs"


def chroot(*cmd, timeout=1800) -> subprocess.CompletedProcess:
    return chroot_run(
        ROOT,
        list(cmd),
        path="/opt/venv/bin:/usr/bin:/bin",
        home="/root",
        env={"EDGEPIPE_CACHE": "/tmp/edgepipe-cache"},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def arm_root():
    reason = arm_emulation_problem()
    if reason:
        pytest.skip(reason)
    if not (ROOT / ".edgepipe-debootstrap-done").exists():
        shutil.rmtree(ROOT, ignore_errors=True)
        ROOT.parent.mkdir(parents=True, exist_ok=True)
        print(f"debootstrap --arch=arm64 {SUITE} into {ROOT} (a few minutes, once)", file=sys.stderr)
        sh(
            "debootstrap",
            "--arch=arm64",
            "--variant=minbase",
            "--include=python3,python3-venv",
            SUITE,
            ROOT,
            MIRROR,
            timeout=3600,
        )
        (ROOT / ".edgepipe-debootstrap-done").touch()
    wheels = ROOT / "opt/wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    sh(*wheelhouse_command(wheels))  # the same download as `make image-arm`: pyproject's requirements, pins and all
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO)
    proc = chroot(
        "/bin/sh",
        "-c",
        "test -x /opt/venv/bin/python || python3 -m venv /opt/venv; "
        "/opt/venv/bin/pip install -q --no-index --find-links /opt/wheels --force-reinstall --no-deps "
        "/opt/wheels/edgepipe-*.whl && "
        "/opt/venv/bin/pip install -q --no-index --find-links /opt/wheels /opt/wheels/edgepipe-*.whl && "
        "/opt/venv/bin/pip list --format=json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = {p["name"].lower() for p in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert {"edgepipe", "onnxruntime", "numpy", "psutil", "pyyaml"} <= installed
    assert not installed & {"paddlepaddle", "paddle2onnx", "onnx"}, "the device image must carry the runtime only"
    return installed


@pytest.fixture(scope="module")
def demo_model():
    """The demo's int8 model and test split (`make demo` output; made here when missing)."""
    run_dir = REPO / "runs" / "mnist-kd"
    model, data = run_dir / "quantize" / "student.int8.onnx", run_dir / "bench" / "test_split.npz"
    if not (model.is_file() and data.is_file()):
        sh(REPO / ".venv/bin/edgepipe", "run", "--runs-dir", REPO / "runs", cwd=REPO, timeout=1800)
    return model, data


def test_int8_runner_on_arm64_matches_x86(arm_root, demo_model, tmp_path):
    model, data = demo_model
    x86_json, x86_out = tmp_path / "x86.json", tmp_path / "x86.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--inputs",
            data,
            "--profile",
            "x86-avx2",
            "--json",
            x86_json,
            "--save-outputs",
            x86_out,
            *RUNNER_ARGS,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr

    xchg = ROOT / "tmp/edgepipe-arm"
    shutil.rmtree(xchg, ignore_errors=True)
    xchg.mkdir(parents=True)
    shutil.copy(model, xchg / model.name)
    shutil.copy(data, xchg / "test_split.npz")
    proc = chroot(
        "/opt/venv/bin/edgepipe-runner",
        f"/tmp/edgepipe-arm/{model.name}",
        "--inputs",
        "/tmp/edgepipe-arm/test_split.npz",
        "--profile",
        "arm-camera-a53",
        "--json",
        "/tmp/edgepipe-arm/arm.json",
        "--save-outputs",
        "/tmp/edgepipe-arm/arm.npz",
        *RUNNER_ARGS,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout)

    arm = json.loads((xchg / "arm.json").read_text())
    x86 = json.loads(x86_json.read_text())
    assert arm["environment"]["host"]["arch"] == "aarch64" and x86["environment"]["host"]["arch"] == "x86_64"
    assert arm["environment"]["onnxruntime"] == x86["environment"]["onnxruntime"]
    with np.load(xchg / "arm.npz") as a, np.load(x86_out) as b:
        la, lb = a["outputs"], b["outputs"]
    assert la.shape == lb.shape == (arm["accuracy_samples"], 10)
    agreement = float((la.argmax(1) == lb.argmax(1)).mean())
    max_diff = float(np.abs(la - lb).max())
    scale = float(np.abs(lb).max())
    summary = {
        "samples": int(len(la)),
        "top1_agreement": agreement,
        "max_abs_diff": max_diff,
        "logit_scale": scale,
        "accuracy_arm64": arm["accuracy"],
        "accuracy_x86": x86["accuracy"],
        "verdict_arm64": arm["verdict"]["overall"],
        "energy_method_arm64": arm["energy"]["primary"]["method"],
    }
    (ARM / "last-result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    # int8 kernels differ between x86 and ARM only in rounding of the requantisation
    assert agreement >= 0.995
    assert max_diff <= 0.05 * scale
    assert abs(arm["accuracy"] - x86["accuracy"]) <= 0.005
