"""edgepipe.devices: facts about the machine a model runs on.

The bottom layer of edgepipe: it imports nothing else of ours and never imports
paddle, so it works on an edge device that has only onnxruntime, numpy and psutil.
"""
from edgepipe.devices.errors import EdgepipeError
from edgepipe.devices.host import HostInfo, detect_host

__all__ = ["EdgepipeError", "HostInfo", "detect_host"]
