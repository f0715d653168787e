"""Detect the host: architecture, CPU model, the CPU flags that decide int8 speed, cores."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

# Flags that change which int8 kernels onnxruntime can use (x86 VNNI, ARM dot-product).
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "dotprod", "i8mm", "sve")


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu_model: str
    physical_cores: int | None
    logical_cores: int | None
    flags: tuple[str, ...] = field(default_factory=tuple)
    os: str = ""
    governor: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)  # JSON-shaped, so a manifest in memory equals the one on disk
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


def detect_host(proc_root: Path = Path("/")) -> HostInfo:
    cpuinfo = _read(proc_root / "proc/cpuinfo") or ""
    model, flags = parse_cpuinfo(cpuinfo)
    governor = _read(proc_root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return HostInfo(
        arch=platform.machine(),
        cpu_model=model or platform.processor() or "unknown",
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count(),
        flags=tuple(f for f in INT8_FLAGS if f in flags),
        os=f"{platform.system()} {platform.release()}",
        governor=governor.strip() if governor else None,
    )
