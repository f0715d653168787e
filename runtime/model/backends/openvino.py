"""OpenVINO as a runtime backend: the same ONNX files (fp32, fp16, QDQ int8) compiled for a device
(CPU on x86 and ARM; GPU or NPU where the plugin finds one), behind the subset of the onnxruntime
session interface the runner uses, so the harness, cold start, memory, energy, verdicts and input
handling are shared. The precision that really ran is read back from the compiled model: on hosts
with AMX or AVX512-BF16 OpenVINO's CPU plugin runs float models in bf16 unless told f32.

`import openvino` sends a Google Analytics event ("general_import") unless a consent file says no:
its package imports the model converter, whose telemetry counts a missing consent file as consent
(measured with strace: a DNS lookup of www.google-analytics.com from a forked process). The
converter falls back to its own no-op stub when `openvino_telemetry` cannot be imported, so that
import is blocked, in this process only, before openvino is first imported here."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError

_ORT_TYPES = {
    "f32": "tensor(float)",
    "f16": "tensor(float16)",
    "f64": "tensor(double)",
    "i64": "tensor(int64)",
    "i32": "tensor(int32)",
    "u8": "tensor(uint8)",
    "i8": "tensor(int8)",
}
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # INFERENCE_PRECISION_HINT (= --precision) -> reported
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def load_openvino():
    """The openvino module, imported with its import-time telemetry off (see the module's doc)."""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # ImportError on import: ovc uses telemetry_stub
    import openvino

    return openvino


def available() -> tuple[bool, str]:
    try:
        load_openvino()
    except ImportError:
        return False, "the openvino package is not installed (pip install 'edgepipe[openvino]')"
    return True, ""


@dataclass(frozen=True)
class Port:
    """An input or output as onnxruntime's NodeArg shows it: name, shape (None where dynamic), type."""

    name: str
    shape: list
    type: str


class _Meta:
    def __init__(self, props: dict[str, str]):
        self.custom_metadata_map = props


class OpenVINOSession:
    """A compiled OpenVINO model with one synchronous infer request (batch-1 latency, one stream)."""

    def __init__(
        self, path: Path, metadata: dict[str, str], threads: int, device: str = "CPU", precision: str = "auto"
    ):
        ov = load_openvino()

        self.core = ov.Core()
        devices = self.core.available_devices
        if device.split(".")[0] not in {d.split(".")[0] for d in devices}:
            raise EdgepipeError(
                f"OpenVINO device {device} is not present here (available: {', '.join(devices)}); use --device CPU"
            )
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = threads
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            model = self.core.read_model(str(path))
            self.compiled = self.core.compile_model(model, device, config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgepipeError(
                f"{path}: OpenVINO cannot compile this model for {device} ({first[:200]}); "
                "run it with --backend onnxruntime"
            ) from None
        self.device, self.precision_asked, self.threads = device, precision, threads
        self.request = self.compiled.create_infer_request()
        self._inputs = [self._port(p) for p in self.compiled.inputs]
        self._outputs = [self._port(p) for p in self.compiled.outputs]
        self._meta = _Meta(metadata)
        self._out_index = {o.name: i for i, o in enumerate(self._outputs)}
        self._tensor = ov.Tensor

    @staticmethod
    def _port(p) -> Port:
        shape = [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
        return Port(p.get_any_name(), shape, _ORT_TYPES.get(p.get_element_type().get_type_name(), "tensor(unknown)"))

    def get_inputs(self) -> list[Port]:
        return self._inputs

    def get_outputs(self) -> list[Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:{d}" for d in self.compiled.get_property("EXECUTION_DEVICES")]

    def get_modelmeta(self) -> _Meta:
        return self._meta

    def run(self, names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Inputs bound as tensors sharing the arrays' memory, then one synchronous inference: the
        lightest path through the Python API (infer(dict) builds a result dict on every call)."""
        for i, port in enumerate(self._inputs):
            self.request.set_input_tensor(i, self._tensor(np.ascontiguousarray(feed[port.name]), shared_memory=True))
        self.request.infer()
        idx = [self._out_index[n] for n in names] if names else range(len(self._outputs))
        return [self.request.get_output_tensor(i).data.copy() for i in idx]

    def describe(self) -> dict:
        """What really ran: the inference precision, the devices, and each compute layer's precision."""
        ov = load_openvino()

        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        runtime = self.compiled.get_runtime_model()
        layers = Counter()
        for op in runtime.get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in COMPUTE_LAYERS:
                layers[info["runtimePrecision"].astype(str)] += 1
        name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return {
            "name": "openvino",
            "version": ov.__version__.split("-")[0],
            "device": self.device,
            "execution_devices": list(self.compiled.get_property("EXECUTION_DEVICES")),
            "precision": _precision_name(name, layers),
            "inference_precision": PRECISION_NAMES.get(name, name),
            "precision_asked": self.precision_asked,
            "compute_layer_precisions": dict(layers),
            "threads": self.threads,
            "device_name": self.core.get_property(self.device.split(".")[0], "FULL_DEVICE_NAME"),
        }


def _precision_name(hint: str, layers: Counter) -> str:
    """int8 when the convolutions and matmuls run on integers, else the float precision they ran in."""
    if layers and sum(v for k, v in layers.items() if k in ("u8", "i8")) * 2 > sum(layers.values()):
        return "int8"
    return PRECISION_NAMES.get(hint, hint)
