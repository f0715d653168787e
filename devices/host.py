"""Detect the host: architecture, CPU model, the CPU flags that decide int8 speed, cores."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

# Flags that change which int8 kernels onnxruntime can use (x86 VNNI, ARM dot-product), per arch:
# under qemu-user /proc/cpuinfo is the host's, and x86 flags must not be reported for an arm64 process.
X86_INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")  # and bf16
ARM_INT8_FLAGS = ("asimddp", "dotprod", "i8mm", "sve")
INT8_FLAGS = X86_INT8_FLAGS + ARM_INT8_FLAGS


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu_model: str
    physical_cores: int | None
    logical_cores: int | None
    flags: tuple[str, ...] = field(default_factory=tuple)
    os: str = ""
    governor: str | None = None
    board: str | None = None  # device-tree model on ARM boards, e.g. "Raspberry Pi 5 Model B Rev 1.0"
    gpus: tuple[str, ...] = field(default_factory=tuple)  # NVIDIA GPUs the driver reports
    memory_mb: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)  # JSON-shaped, so a manifest in memory equals the one on disk
        d["gpus"] = list(self.gpus)
        return d


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """Return (model name, flags) from the text of /proc/cpuinfo, on x86 or ARM."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, flags


def nvidia_gpus(root: Path = Path("/")) -> tuple[str, ...]:
    """GPU names from the NVIDIA driver's /proc files (no NVML needed); Jetson boards report theirs
    through /etc/nv_tegra_release instead."""
    names = []
    for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
        for line in (_read(info) or "").splitlines():
            if line.lower().startswith("model:"):
                names.append(line.split(":", 1)[1].strip())
    if not names and (root / "etc/nv_tegra_release").is_file():
        names.append("NVIDIA Tegra (integrated)")
    return tuple(names)


def _safe(fn):
    """psutil reads /proc; a minimal root or container without it still gets an answer."""
    try:
        return fn()
    except (OSError, RuntimeError):
        return None


def detect_host(proc_root: Path = Path("/")) -> HostInfo:
    cpuinfo = _read(proc_root / "proc/cpuinfo") or ""
    model, flags = parse_cpuinfo(cpuinfo)
    governor = _read(proc_root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    arch = platform.machine()
    board = _read(proc_root / "proc/device-tree/model") or _read(proc_root / "sys/firmware/devicetree/base/model")
    return HostInfo(
        arch=arch,
        cpu_model=model or platform.processor() or "unknown",
        physical_cores=_safe(lambda: psutil.cpu_count(logical=False)),
        logical_cores=_safe(lambda: psutil.cpu_count(logical=True)) or os.cpu_count(),
        flags=tuple(f for f in (ARM_INT8_FLAGS if arch in ("aarch64", "arm64") else X86_INT8_FLAGS) if f in flags),
        os=f"{platform.system()} {platform.release()}",
        governor=governor.strip() if governor else None,
        board=board.strip("\x00\n ") if board else None,
        gpus=nvidia_gpus(proc_root),
        memory_mb=_safe(lambda: int(psutil.virtual_memory().total / 2**20)),
    )
