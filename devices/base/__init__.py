"""edgepipe.devices.base: the foundation every layer stands on, importing nothing else of ours (and
never paddle or onnxruntime).

  telemetry  ORT_DISABLE_TELEMETRY set before anything loads onnxruntime (imported first, here)
  errors     EdgepipeError (one line and a non-zero exit), FieldError, os_error_line
  config     YAML (recipes, device profiles) -> typed, frozen config objects, validated on load
  atomic     atomic file writes and edgepipe's scratch folders
  child      child processes that die with their parent
  cache      the cache directory ($EDGEPIPE_CACHE, else the user's cache directory)
"""

from edgepipe.devices.base import telemetry  # noqa: F401  (first: before anything can load onnxruntime)
from edgepipe.devices.base.errors import EdgepipeError, FieldError, os_error_line

__all__ = ["EdgepipeError", "FieldError", "os_error_line"]
