"""The one exception type the CLI turns into a single line and a non-zero exit, and the one handler
that does it (for `edgepipe` and `edgepipe-runner` alike)."""

from __future__ import annotations

import sys
from typing import Callable


class EdgepipeError(Exception):
    """A problem the user can act on. The message names the file or key and what to do."""

    exit_code = 2


class FieldError(EdgepipeError, ValueError):
    """A bad value in a config object; the recipe loader prefixes its path in the recipe."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def os_error_line(exc: OSError) -> str:
    """An OSError as the one line a user acts on: the file, what went wrong, and the usual fix."""
    what = exc.strerror or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    hint = {
        13: "; check its permissions, or write somewhere else",
        30: "; the file system is read-only, write somewhere else",
        28: "; the disk is full, free space or write somewhere else",
        2: "; check the path",
    }.get(exc.errno or 0, "")
    return f"{name}: {what}{hint}" if name else f"{what}{hint}"


def run_guarded(
    prog: str,
    fn: Callable[[], int],
    debug: bool = False,
    debug_hint: str = "rerun with --debug for the traceback",
    on_interrupt: str = "interrupted",
) -> int:
    """fn()'s exit code, or one line on stderr and a non-zero code for whatever it raised: the user's
    problem (EdgepipeError, exit_code), a file that cannot be read or written (1, naming it), a bug or an
    unexpected library failure (1, 'internal error', the traceback only with `debug`), Ctrl-C (130)."""
    try:
        return fn()
    except EdgepipeError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file the user named that cannot be read or written: say which
        if debug:
            raise
        print(f"{prog}: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"{prog}: internal error: {type(exc).__name__}: {first} ({debug_hint})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: {on_interrupt}", file=sys.stderr)
        return 130
