"""edgepipe.devices: facts about the machine a model runs on.

The bottom layer of edgepipe: it imports nothing else of ours and never imports
paddle, so it works on an edge device that has only onnxruntime, numpy and psutil.
Its foundation, `base/`, holds what every layer shares: the error type, the YAML config
loader, atomic writes, child processes, the cache directory and the telemetry switch.

Every edgepipe module imports this package first, and it imports `base` first, so it is where
edgepipe turns onnxruntime's telemetry off for its own processes (and the children they start,
which inherit the environment): onnxruntime 1.29 and later report session events to Microsoft
from Linux builds too, unless ORT_DISABLE_TELEMETRY is set before the library loads
(devices/base/telemetry.py). A user who sets it to 0 keeps that choice.
"""

from edgepipe.devices.base import EdgepipeError, os_error_line
from edgepipe.devices.host import HostInfo, detect_host

__all__ = ["EdgepipeError", "HostInfo", "detect_host", "os_error_line"]
