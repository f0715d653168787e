"""The one exception type the CLI turns into a single line and a non-zero exit."""


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
    hint = {13: "; check its permissions, or write somewhere else", 30: "; the file system is read-only, write somewhere else",
            28: "; the disk is full, free space or write somewhere else", 2: "; check the path"}.get(exc.errno or 0, "")
    return f"{name}: {what}{hint}" if name else f"{what}{hint}"
