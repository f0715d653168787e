"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash (even kill -9) leaves either the old file or the new one, never half of one; a
leftover temp file starts with '.' and ends with '.tmp'. The renamed file gets the mode a plain
open() would have given it (0666 less the umask, 0644 usually), not mkstemp's private 0600, so a
model copied to a device under another user can be read there.

Temp folders: `temp_dir` makes edgepipe's scratch folders under one root (the run directory's
`.tmp/` during a run, else the system's), named with the owning process id, so `sweep_temp` can
remove those a killed process left behind without touching a live one's.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
_TEMP_ROOT: list[Path] = []  # the innermost temp_root() in force


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temp file over `path` with the user's file mode."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; on success it is published over `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def temp_root(root: str | Path):
    """Make `root` where temp_dir() puts scratch folders while the block runs (a run directory's .tmp)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _TEMP_ROOT.append(root)
    try:
        yield root
    finally:
        _TEMP_ROOT.remove(root)
        try:
            root.rmdir()  # only when empty
        except OSError:
            pass


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A scratch folder `edgepipe-<prefix>-<pid>-*` under the current temp root; use it with `with`."""
    root = _TEMP_ROOT[-1] if _TEMP_ROOT else None
    return tempfile.TemporaryDirectory(prefix=f"edgepipe-{prefix}-{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    """Whether a process of this pid exists (a pid kill() cannot even take counts as alive: not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True
    return True


def sweep_temp(*roots: str | Path, min_age_s: float = 0.0, partials: bool = True) -> list[Path]:
    """Remove the scratch folders (edgepipe-<prefix>-<pid>-*) and partial outputs (.<name>.partial-<pid>)
    under `roots` whose process is gone and that this user owns; returns what was removed. In a
    shared folder (the system's temp) give `min_age_s`: a process in another PID namespace (another
    container) can look gone from here while its folder is in use, and partials=False (another program's
    `.x.partial-N` is not ours)."""
    import re
    import shutil
    import time

    removed = []
    pattern = re.compile(r"^(?:edgepipe-[a-z]+-(\d+)-.+|\..+\.partial-(\d+))$")
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            m = pattern.match(entry.name)
            if not m or not entry.is_dir() or entry.is_symlink() or (m.group(2) and not partials):
                continue
            pid = int(m.group(1) or m.group(2))
            try:
                st = entry.stat()
            except OSError:
                continue
            if st.st_uid != os.getuid() or time.time() - st.st_mtime < min_age_s:
                continue
            if pid != os.getpid() and not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
