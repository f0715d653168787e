"""quantize: onnxruntime static int8 (QDQ, per-channel weights) calibrated on the
calibration split; accuracy measured with onnxruntime on the test split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.config import require
from edgepipe.pipeline.registry import register_stage
from edgepipe.pipeline.run import StageResult


@dataclass(frozen=True)
class QuantizeConfig:
    model: str = "student.onnx"
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = 200
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False
    max_accuracy_drop: float | None = 1.0  # points of test accuracy; null to accept any drop

    uses_data = True

    def __post_init__(self):
        require(self.calibration_samples >= 1, "calibration_samples", "must be at least 1")
        require(self.max_accuracy_drop is None or self.max_accuracy_drop >= 0, "max_accuracy_drop", "must be non-negative")

    def inputs(self, available) -> dict[str, str]:
        return {"model": self.model}

    def outputs(self) -> dict[str, str]:
        return {self.output_name: "onnx"}

    @property
    def output_name(self) -> str:
        return self.model.removesuffix(".onnx") + ".int8.onnx"


@register_stage("quantize", QuantizeConfig)
def run_quantize(cfg: QuantizeConfig, ctx) -> StageResult:
    """Static int8 with onnxruntime, calibrated on the calibration split; fails past the accuracy budget."""
    from edgepipe.export.analysis import describe
    from edgepipe.export.quantize import StaticInt8Options, quantize_static_int8
    from edgepipe.runtime.session import accuracy, open_session

    src = ctx.artifacts[cfg.model]
    calib = ctx.data.split("calibration")[0][: cfg.calibration_samples]
    opts = StaticInt8Options(format=cfg.format, per_channel=cfg.per_channel, calibration=cfg.calibration,
                             activation_type=cfg.activation_type, weight_type=cfg.weight_type, reduce_range=cfg.reduce_range)
    out = ctx.out(cfg.output_name)
    quantize_static_int8(ctx.path_of(cfg.model), out, calib, opts)
    facts = describe(out)
    facts["accuracy"] = accuracy(open_session(out), *ctx.data.split("test"))
    fp32_acc = src.meta["accuracy"]
    facts["accuracy_drop_points"] = 100.0 * (fp32_acc - facts["accuracy"])
    facts["bytes_ratio_vs_fp32"] = facts["bytes"] / src.meta["bytes"]
    facts["calibration_samples"] = int(len(calib))
    if cfg.max_accuracy_drop is not None and facts["accuracy_drop_points"] > cfg.max_accuracy_drop:
        raise EdgepipeError(
            f"quantize.max_accuracy_drop: int8 accuracy {100 * facts['accuracy']:.2f}% is "
            f"{facts['accuracy_drop_points']:.2f} points below fp32 (budget {cfg.max_accuracy_drop}); "
            "try calibration: entropy or percentile, more calibration_samples, or reduce_range: true"
        )
    label = src.meta.get("label", cfg.model)
    art = ctx.artifact(cfg.output_name, "onnx", cfg.output_name, label=label, precision="int8", source=src.meta.get("source"),
                       options=vars(opts), **facts)
    return StageResult(metrics=facts, artifacts=[art])
