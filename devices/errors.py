"""The one exception type the CLI turns into a single line and a non-zero exit."""


class EdgepipeError(Exception):
    """A problem the user can act on. The message names the file or key and what to do."""

    exit_code = 2
