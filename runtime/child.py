"""Child processes that never outlive edgepipe: on Linux each child asks the kernel for SIGKILL when
its parent dies (PR_SET_PDEATHSIG), so a killed `edgepipe run` cannot leave a bench runner measuring
beside the rerun's, or writing into a run directory after it finished."""
from __future__ import annotations

import signal
import subprocess
import sys


def _die_with_parent():  # pragma: no cover - runs in the child, between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_child(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, **kwargs), tied to this process's life."""
    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)
