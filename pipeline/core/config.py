"""Recipe config loading: the typed loader lives in edgepipe.devices.base.config (the device side
loads profiles with it and must not import the pipeline); this module is the pipeline's name for it,
plus how a recipe's paths resolve."""

from pathlib import Path

from edgepipe.devices.base.config import (
    OPTIONAL,
    ConfigError,
    FieldError,
    config_sha,
    from_dict,
    read_yaml,
    require,
    to_dict,
)


def resolve_path(base: Path | None, p: str) -> Path:
    """A path from a recipe: `~` expanded; relative ones start at the recipe's folder (`base`)."""
    q = Path(p).expanduser()
    return q if q.is_absolute() or base is None else base / q


__all__ = [
    "resolve_path",
    "ConfigError",
    "FieldError",
    "OPTIONAL",
    "require",
    "from_dict",
    "to_dict",
    "config_sha",
    "read_yaml",
]
