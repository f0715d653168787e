"""The telemetry switch: onnxruntime 1.29 and later report session events to Microsoft from Linux
builds too, unless ORT_DISABLE_TELEMETRY is set before the library loads. Importing this module sets
it for this process (and the children it starts, which inherit the environment); a user who sets it
to 0 keeps that choice.

Every edgepipe module imports edgepipe.devices first, whose package imports this one first, so the
variable is set before anything of ours can load onnxruntime.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
