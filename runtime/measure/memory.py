"""This process's memory as the runner reports it: resident set now, its high-water mark, and the
GPU memory it holds (through NVML)."""

from __future__ import annotations

import os
import resource
import sys

import psutil


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss() -> tuple[float, str]:
    """Peak resident memory of this process in MB, and where the figure comes from.

    On Linux, VmHWM (/proc/self/status): ru_maxrss is *not* used there because the kernel
    carries the pre-exec high-water mark across execve, so a runner started by a large
    parent (a training process holding paddle) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM"
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "ru_maxrss"


def gpu_memory_mb() -> dict:
    """Device memory this process holds on the GPU, from NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        used = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == os.getpid() and p.usedGpuMemory:
                    used += p.usedGpuMemory
        return {"gpu_memory_mb": used / 2**20, "gpu_memory_source": "NVML compute processes (this pid)"}
    except Exception as exc:  # no nvidia-ml-py, no driver, no permission
        return {"gpu_memory_mb": None, "gpu_memory_source": f"unreadable ({type(exc).__name__}: {exc})"[:200]}
