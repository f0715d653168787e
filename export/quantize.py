"""Quantization with onnxruntime: static (QDQ / QOperator; 16, 8 and 4-bit), dynamic, fp16, and
4-bit MatMul weights (MatMulNBits).

Deployable integer models are produced on the ONNX side: Paddle 3.3.1's own QAT/PTQ convert +
jit.save path is broken (wrong outputs, None zero-points). Defaults come from a device profile's
quantization preset (see `QuantOptions.from_profile`), so an AVX2 box without VNNI gets
reduce_range and a Pi 5 gets s8s8, each with its reason.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import temp_dir, write_bytes_atomic
from edgepipe.devices.base.errors import FieldError

ActType = Literal["u8", "s8", "u16", "s16"]
WeightType = Literal["s8", "u8", "s4", "u4"]


@dataclass(frozen=True)
class QuantOptions:
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = 99.999  # for calibration: percentile
    activation_type: ActType = "u8"
    weight_type: WeightType = "s8"
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on AVX2 without VNNI
    nodes_to_exclude: tuple[str, ...] = ()  # ONNX node names kept in float
    op_types: tuple[str, ...] = ()  # only these op types quantized (empty: every type the quantizer knows)

    def __post_init__(self):
        if not 50.0 < self.percentile <= 100.0:
            raise FieldError("percentile", "must be in (50, 100]")
        narrow = self.activation_type in ("u16", "s16") or self.weight_type in ("s4", "u4")
        if narrow and self.format != "qdq":
            raise FieldError("format", "16-bit activations and 4-bit weights need format: qdq")

    @classmethod
    def from_profile(cls, profile, **overrides) -> "QuantOptions":
        """The profile's preset (format, per-channel, reduce_range, u8/s8), then any overrides."""
        q = profile.quantization
        base = cls(
            format=q.format,
            per_channel=q.per_channel,
            reduce_range=q.reduce_range,
            activation_type=q.activation_type,
            weight_type=q.weight_type,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def bits(self) -> str:
        return f"a{self.activation_type}/w{self.weight_type}"


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {
        "u8": QuantType.QUInt8,
        "s8": QuantType.QInt8,
        "u16": QuantType.QUInt16,
        "s16": QuantType.QInt16,
        "s4": QuantType.QInt4,
        "u4": QuantType.QUInt4,
    }[name]


class ArrayCalibrationReader:
    """onnxruntime CalibrationDataReader over an array, one batch per get_next()."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 32):
        self._batches: Iterator[dict] = iter([{input_name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


class FeedsCalibrationReader:
    """onnxruntime CalibrationDataReader over feeds (runtime/inputs/feeds.py), one feed per get_next()."""

    def __init__(self, feeds: list[dict]):
        self._feeds: Iterator[dict] = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


MIN_OPSET = 13  # per-channel DequantizeLinear (an axis) needs opset 13; onnxruntime refuses it in older files


def upgraded(model):
    """The model at opset 13 at least (onnx's version converter), so per-channel weights load; None when
    it is there already. An opset-11/12 file quantized per channel as it is fails to load in onnxruntime."""
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return None
    try:
        up = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(up)
    except Exception as exc:
        raise EdgepipeError(
            f"the model is opset {opset}; per-channel int8 needs opset {MIN_OPSET} and onnx's converter "
            f"failed ({str(exc).splitlines()[0][:160]}); quantize with --per-tensor"
        ) from None
    used = {n.name for n in up.graph.node}
    for i, node in enumerate(up.graph.node):  # the converter's new nodes have none; the guard excludes by name
        if not node.name:
            node.name = next(
                f"{node.op_type}.opset{MIN_OPSET}.{i}.{k}"
                for k in range(len(used) + 1)
                if f"{node.op_type}.opset{MIN_OPSET}.{i}.{k}" not in used
            )
            used.add(node.name)
    return up


def as_feeds(model: Path, data, batch: int = 32) -> list[dict]:
    """Calibration or evaluation data as feeds: an N×C×H×W array (a single-image-input model's) or feeds already."""
    if not isinstance(data, np.ndarray):
        return list(data)
    from edgepipe.runtime.inputs.feeds import from_array, signature
    from edgepipe.runtime.model.session import open_session

    return from_array(signature(open_session(model)), data, batch)


@contextlib.contextmanager
def quiet_ort_logging():
    """onnxruntime.quantization logs advice through the root logger; keep the user's terminal clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _save(out: Path, model, source: Path) -> None:
    """Write a quantized model (a ModelProto or a file) atomically, carrying the source's edgepipe
    metadata (its input contract) over."""
    import onnx

    from edgepipe.export.metadata import edgepipe_metadata, merge

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    merge(model, edgepipe_metadata(source))
    write_bytes_atomic(out, model.SerializeToString())


def _input_name(model: Path) -> str:
    from edgepipe.runtime.model.session import open_session

    return open_session(model).get_inputs()[0].name  # also validates the file


def quantize_static(
    fp32: str | Path,
    out: str | Path,
    calibration,
    opts: QuantOptions = QuantOptions(),
    tensor_overrides: dict | None = None,
) -> Path:
    """Static quantization calibrated on `calibration` (an N×C×H×W array, or feeds of any signature:
    several inputs, samples of several sizes). `tensor_overrides` (tensor name -> rmin/rmax) replaces
    calibrated ranges, e.g. with the ranges quantization-aware training learned. An opset-11/12 model
    is upgraded to opset 13 first, so that its per-channel weights load; dynamic axes stay dynamic."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepipe.runtime.inputs.feeds import batch_size, count, regroup, signature
    from edgepipe.runtime.model.session import open_session

    fp32, out = Path(fp32), Path(out)
    spec = signature(open_session(fp32))
    # histogram calibrators stack per-batch arrays, so their batches must all be one size; a model with a
    # fixed batch takes that many samples at a time
    feeds = regroup(as_feeds(fp32, calibration), batch_size(spec, 32 if opts.calibration == "minmax" else 1))
    if count(feeds) == 0:
        raise EdgepipeError("calibration data is empty; give the quantizer at least one sample")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    extra = {"CalibPercentile": opts.percentile}
    if tensor_overrides:
        extra["TensorQuantOverrides"] = {
            k: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for k, (lo, hi) in tensor_overrides.items()
        }
    with temp_dir("quant") as tmp, quiet_ort_logging():
        src = fp32
        up = upgraded(onnx.load(str(fp32))) if opts.per_channel else None
        if up is not None:
            src = Path(tmp) / "opset13.onnx"
            onnx.save(up, str(src))
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "q.onnx"
        ort_quantize_static(
            str(pre),
            str(q),
            FeedsCalibrationReader(feeds),
            quant_format=QuantFormat.QDQ if opts.format == "qdq" else QuantFormat.QOperator,
            per_channel=opts.per_channel,
            activation_type=_qtype(opts.activation_type),
            weight_type=_qtype(opts.weight_type),
            reduce_range=opts.reduce_range,
            calibrate_method=methods[opts.calibration],
            nodes_to_exclude=list(opts.nodes_to_exclude),
            op_types_to_quantize=list(opts.op_types) or None,
            extra_options=extra,
        )
        _save(out, q, fp32)
    return out


def conv_mac_share(model: str | Path) -> float:
    """Fraction of the model's MACs in convolutions."""
    from edgepipe.runtime.model.cost import _CONV, load_onnx, macs_by_op

    by_op = macs_by_op(load_onnx(model))
    total = sum(by_op.values())
    return sum(v for k, v in by_op.items() if k in _CONV) / total if total else 0.0


DYNAMIC_CONV_WARNING = (
    "dynamic quantization turns Conv into ConvInteger, which onnxruntime runs several times "
    "slower than fp32 on CPU; this model is {share:.0%} convolution by MACs, so use static int8"
)


def quantize_dynamic(
    fp32: str | Path, out: str | Path, weight_type: Literal["s8", "u8"] = "s8", per_channel: bool = False
) -> list[str]:
    """Dynamic int8 (weights ahead of time, activations at run time): for MatMul/Gemm-heavy models.
    Returns warnings, e.g. when the model is conv-dominated."""
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    fp32, out = Path(fp32), Path(out)
    _input_name(fp32)
    warnings = []
    share = conv_mac_share(fp32)
    if share > 0.5:
        warnings.append(DYNAMIC_CONV_WARNING.format(share=share))
    with temp_dir("quant") as tmp, quiet_ort_logging():
        q = Path(tmp) / "q.onnx"
        ort_quantize_dynamic(str(fp32), str(q), weight_type=_qtype(weight_type), per_channel=per_channel)
        _save(out, q, fp32)
    return warnings


def convert_fp16(fp32: str | Path, out: str | Path) -> list[str]:
    """fp16 weights and compute with fp32 inputs and outputs kept (keep_io_types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from edgepipe.runtime.model.cost import load_onnx

    model = OnnxModel(convert_float_to_float16(load_onnx(fp32), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts after their consumers
    onnx.checker.check_model(model.model)
    _save(out, model.model, fp32)
    return [
        "fp16 halves the file; onnxruntime's CPU provider has few fp16 kernels and inserts casts, "
        "so expect no speed-up on CPU (GPUs and some NPUs gain)"
    ]


def quantize_matmul_4bit(fp32: str | Path, out: str | Path, block_size: int = 32, symmetric: bool = True) -> int:
    """4-bit block-wise MatMul weights (MatMulNBits); Conv layers stay float. Returns how many
    MatMuls were converted (0 means the model has no MatMul with a constant weight)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from edgepipe.runtime.model.cost import load_onnx

    model = load_onnx(fp32)
    with quiet_ort_logging():
        q = MatMulNBitsQuantizer(
            model, algo_config=DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric)
        )
        q.process()
    result = q.model.model
    converted = sum(n.op_type == "MatMulNBits" for n in result.graph.node)
    _save(out, result, fp32)
    return converted
