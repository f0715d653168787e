"""Static int8 quantization with onnxruntime (QDQ, per-channel weights, calibrated activations).

Deployable int8 is produced on the ONNX side: Paddle 3.3.1's own QAT/PTQ convert + jit.save
path is broken (wrong outputs, None zero-points).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.atomic import write_bytes_atomic


@dataclass(frozen=True)
class StaticInt8Options:
    format: str = "qdq"  # qdq | qoperator
    per_channel: bool = True
    calibration: str = "minmax"  # minmax | entropy | percentile
    activation_type: str = "uint8"  # uint8 | int8
    weight_type: str = "int8"  # int8 | uint8
    reduce_range: bool = False


class ArrayCalibrationReader:
    """onnxruntime CalibrationDataReader over an array, one batch per get_next()."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 32):
        self._batches: Iterator[dict] = iter(
            [{input_name: data[i : i + batch]} for i in range(0, len(data), batch)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def quantize_static_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray, opts: StaticInt8Options = StaticInt8Options()) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepipe.runtime.session import open_session

    fp32, out = Path(fp32), Path(out)
    if len(calibration) == 0:
        raise EdgepipeError("calibration data is empty; give the quantizer at least one sample")
    input_name = open_session(fp32).get_inputs()[0].name  # also validates the file
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    with tempfile.TemporaryDirectory(prefix="edgepipe-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(q), ArrayCalibrationReader(input_name, calibration),
            quant_format=formats[opts.format], per_channel=opts.per_channel,
            activation_type=types[opts.activation_type], weight_type=types[opts.weight_type],
            reduce_range=opts.reduce_range, calibrate_method=methods[opts.calibration],
        )
        write_bytes_atomic(out, q.read_bytes())
    return out
