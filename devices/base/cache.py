"""edgepipe's cache directory: $EDGEPIPE_CACHE where it is set (and not empty), else the user's
cache directory for edgepipe (platformdirs; on Linux $XDG_CACHE_HOME/edgepipe, by default
~/.cache/edgepipe). Roofline peaks, teacher logits and generated frames are kept there."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    if os.environ.get("EDGEPIPE_CACHE"):
        return Path(os.environ["EDGEPIPE_CACHE"])
    return Path(user_cache_dir("edgepipe"))
