"""Recipe config loading: the typed loader lives in edgepipe.devices.config (the device side
loads profiles with it and must not import the pipeline); this module is the pipeline's name for it."""
from edgepipe.devices.config import (
    OPTIONAL,
    ConfigError,
    FieldError,
    config_sha,
    from_dict,
    read_yaml,
    require,
    to_dict,
)

__all__ = ["ConfigError", "FieldError", "OPTIONAL", "require", "from_dict", "to_dict", "config_sha", "read_yaml"]
