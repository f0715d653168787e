"""edgepipe.devices: facts about the machine a model runs on.

The bottom layer of edgepipe: it imports nothing else of ours and never imports
paddle, so it works on an edge device that has only onnxruntime, numpy and psutil.

Every edgepipe module imports this package first, so it is where edgepipe turns onnxruntime's
telemetry off for its own processes (and the children they start, which inherit the environment):
onnxruntime 1.29 and later report session events to Microsoft from Linux builds too, unless
ORT_DISABLE_TELEMETRY is set before the library loads. A user who sets it to 0 keeps that choice.
"""
import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
from edgepipe.devices.errors import EdgepipeError, os_error_line  # noqa: E402
from edgepipe.devices.host import HostInfo, detect_host  # noqa: E402

__all__ = ["EdgepipeError", "HostInfo", "detect_host", "os_error_line"]
