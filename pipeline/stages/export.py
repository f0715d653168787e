"""export: Paddle models -> ONNX, each checked against Paddle on held-out inputs, then
measured with onnxruntime on the test split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult


@dataclass(frozen=True)
class ExportConfig:
    models: tuple[str, ...] = ("teacher", "student_scratch", "student")
    opset: int = 13
    parity_samples: int = 256  # held-out (val) inputs compared against Paddle
    atol: float = 1e-4
    rtol: float = 1e-3

    uses_data = True

    def __post_init__(self):
        require(len(self.models) >= 1, "models", "list at least one model artifact")
        require(7 <= self.opset <= 21, "opset", "must be between 7 and 21")
        require(self.parity_samples >= 1, "parity_samples", "must be at least 1")

    def inputs(self, available) -> dict[str, str]:
        return {f"models[{i}]": m for i, m in enumerate(self.models)}

    def outputs(self) -> dict[str, str]:
        return {f"{m}.onnx": "onnx" for m in self.models}


def export_checked(model_dir, out, x, *, opset: int, atol: float, rtol: float, name: str) -> dict:
    """Export an artifact folder to `out` and check it against Paddle on `x`; returns cost + parity.

    A file that fails the check is deleted: nothing unvalidated is left behind.
    """
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.paddle_onnx import check_parity, export_layer
    from edgepipe.pipeline.models.load import load_model
    from edgepipe.pipeline.training import predict_logits
    from edgepipe.runtime.cost import describe

    layer, info = load_model(model_dir)
    export_layer(layer, tuple(info["input_shape"]), out, opset=opset, name=name)
    try:
        parity = check_parity(out, predict_logits(layer, x), x, atol=atol, rtol=rtol, name=name)
    except EdgepipeError:
        Path(out).unlink(missing_ok=True)
        raise
    return {**describe(out), "parity": parity}


@register_stage("export", ExportConfig)
def run_export(cfg: ExportConfig, ctx) -> StageResult:
    """Paddle -> ONNX (paddle2onnx in a child process), parity-checked, accuracy via onnxruntime."""
    from edgepipe.runtime.session import accuracy, open_session

    metrics, arts = {}, []
    for m in cfg.models:
        rel = f"{m}.onnx"
        x_val = ctx.data.split("val")[0][: cfg.parity_samples]  # held out from training
        facts = export_checked(ctx.path_of(m), ctx.out(rel), x_val, opset=cfg.opset, atol=cfg.atol, rtol=cfg.rtol, name=m)
        facts["accuracy"] = accuracy(open_session(ctx.out(rel)), *ctx.data.split("test"))
        label = ctx.artifacts[m].meta.get("label", m)
        metrics[m] = facts
        arts.append(ctx.artifact(rel, "onnx", rel, label=label, precision="fp32", source=m, **facts))
    return StageResult(metrics=metrics, artifacts=arts)
