"""Child processes that never outlive edgepipe: on Linux each child asks the kernel for SIGKILL when
its parent dies (PR_SET_PDEATHSIG), so a killed `edgepipe run` cannot leave a bench runner measuring
beside the rerun's, or writing into a run directory after it finished."""

from __future__ import annotations

import signal
import subprocess
import sys


def _prctl():
    """libc's prctl, looked up here in the parent: between fork and exec a multi-threaded process
    (paddle's) must not dlopen or allocate, only call what is already resolved."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except Exception:
        return None


_PRCTL = _prctl() if sys.platform.startswith("linux") else None


def _die_with_parent():  # pragma: no cover - runs in the child, between fork and exec
    try:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_child(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, **kwargs), tied to this process's life."""
    if _PRCTL is not None:
        kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)
