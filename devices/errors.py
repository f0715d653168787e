"""The one exception type the CLI turns into a single line and a non-zero exit."""


class EdgepipeError(Exception):
    """A problem the user can act on. The message names the file or key and what to do."""

    exit_code = 2


class FieldError(EdgepipeError, ValueError):
    """A bad value in a config object; the recipe loader prefixes its path in the recipe."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message
