"""Running arm64 code on this host, shared by `make image-arm` (build.py) and `make test-arm`
(tests/test_arm.py): whether it can be done here (root, debootstrap and qemu-user-static installed with
apt-get where missing, binfmt_misc on x86), commands in an arm64 root under chroot, the Debian
release and mirror the roots are made from, the wheelhouse of aarch64 wheels their pip installs
from, and the runner's arguments for a short run (timings under emulation mean nothing).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"  # Debian 12: Python 3.11, as the official base image has
MIRROR = os.environ.get("EDGEPIPE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
RUNNER_ARGS = [
    "--iters",
    "3",
    "--min-seconds",
    "0",
    "--warmup",
    "1",
    "--warmup-seconds",
    "0",
    "--energy-seconds",
    "0.2",
    "--idle-seconds",
    "0",
    "--no-roofline",
]
DEBIAN_TOOLS = ("debootstrap", "qemu-user-static", "binfmt-support")


def sh(*cmd, timeout: float = 3600, **kw) -> subprocess.CompletedProcess:
    """Run a command, its output captured; a failure raises RuntimeError with the tail of its stderr."""
    proc = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd[:5]))} ... failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}"
        )
    return proc


def arm_emulation_problem(
    tools: tuple[str, ...] = DEBIAN_TOOLS, binaries: tuple[str, ...] = ("debootstrap",)
) -> str | None:
    """Why arm64 binaries cannot be run in a chroot here, or None: root, the Debian packages (installed
    with apt-get where missing), and an enabled qemu-aarch64 entry in binfmt_misc on x86."""
    if platform.machine() not in ("x86_64", "aarch64"):
        return f"host architecture {platform.machine()} is not supported by this target"
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot and mount); run it with sudo"
    if any(not shutil.which(b) for b in binaries) or not Path("/usr/bin/qemu-aarch64-static").exists():
        if not shutil.which("apt-get"):
            return f"{', '.join(tools)} are missing and there is no apt-get to install them"
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-q", *tools],
            capture_output=True,
            text=True,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
        if proc.returncode != 0:
            return f"could not install {', '.join(tools)}: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    if platform.machine() == "x86_64":
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
        if not (binfmt / "qemu-aarch64").exists():
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
        entry = binfmt / "qemu-aarch64"
        if not entry.exists() or "enabled" not in entry.read_text():
            return (
                "binfmt_misc has no enabled qemu-aarch64 entry "
                "(mount binfmt_misc; update-binfmts --enable qemu-aarch64)"
            )
    return None


def chroot_run(
    root: Path, cmd: list, path: str, home: str, user: str | None = None, env: dict | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run in an arm64 root with /proc mounted (psutil and the host facts read it), as `user` (uid[:gid])
    where given. The host's /sys is not bound in: its x86 CPU topology makes onnxruntime's cpuinfo
    crash under emulation."""
    mounted = []
    try:
        target = root / "proc"
        target.mkdir(exist_ok=True)
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode != 0:
            sh("mount", "-t", "proc", "proc", target)
            mounted.append(target)
        who = [f"--userspec={user}"] if user else []
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(
            ["chroot", *who, str(root), "/usr/bin/env", "-i", f"PATH={path}", f"HOME={home}", *extra, *map(str, cmd)],
            text=True,
            capture_output=True,
            timeout=timeout,
        )
    finally:
        for t in reversed(mounted):
            subprocess.run(["umount", "-l", str(t)], capture_output=True)


def requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """The device install's requirements from pyproject.toml, onnxruntime and numpy pinned to this
    host's versions (so that x86 and arm64 run the same kernels), plus the build backend."""
    import numpy
    import onnxruntime
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(project["project"]["dependencies"])
    for extra in extras:
        reqs += project["project"]["optional-dependencies"][extra]
    pins = {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
    out = []
    for r in reqs:
        name = r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
        out.append(f"{name}=={pins[name]}" if name in pins else r)
    return out + project["build-system"]["requires"]


def wheelhouse_command(dest: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The host pip's download of aarch64 CPython 3.11 wheels (binary only) for the image's install."""
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "3.11",
        *plats,
        "-d",
        str(dest),
        *requirements(extras),
    ]
