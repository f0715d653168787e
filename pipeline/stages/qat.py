"""qat: quantization-aware fine-tuning of a trained model (8- or 4-bit weights, 8-bit activations).

The output is a float Paddle model (export it like any other) whose meta carries the activation
ranges QAT learned; the quantize stage hands those to onnxruntime as TensorQuantOverrides, so the
int8/int4 ONNX uses what training learned. See compress/qat.py for the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.finetune import check_fine_tune, finetune_refs, judged, teacher_inputs
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, ref_name


@dataclass(frozen=True)
class QatConfig(TakesModels):
    model: ModelRef = "student"
    weight_bits: int = 8
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.0005
    augment_shift: int = 2
    observer_batches: int = 8  # calibration batches that set the activation ranges before training
    output: str | None = None  # default: <model>_qat<bits>
    teacher: ModelRef | None = None  # previous (the float model) | an artifact name | null (labels only)
    temperature: float = 4.0
    alpha: float = 0.9

    uses_data = True
    trains = True  # every rank runs it under `edgepipe run --nproc` (core/distributed.py)

    def __post_init__(self):
        require(self.weight_bits in (8, 4), "weight_bits", "must be 8 or 4")
        require(self.epochs >= 1, "epochs", "must be at least 1")
        check_fine_tune(self)
        require(self.observer_batches >= 1, "observer_batches", "must be at least 1")

    @property
    def output_name(self) -> str:
        return self.output or f"{ref_name(self.model)}_qat{self.weight_bits}"

    def inputs(self, available) -> dict[str, str]:
        return teacher_inputs(self.model, self.teacher)

    def model_refs(self) -> dict:
        return finetune_refs(self.model, self.teacher)

    def outputs(self) -> dict[str, str]:
        return {self.output_name: "paddle"}


@register_stage("qat", QatConfig)
def run_qat(cfg: QatConfig, ctx) -> StageResult:
    """Fake-quantized fine-tuning (clipped STE), then the float model and its learned ranges."""
    import paddle

    from edgepipe.pipeline.compress.qat import learned_ranges, unwrap, wrap
    from edgepipe.pipeline.stages.finetune import fine_tune, stage_saved, stage_start
    from edgepipe.pipeline.training import evaluate

    rng, layer, info, source_label, test, ref, float_before = stage_start(ctx, cfg.model, "qat")
    order = wrap(layer, cfg.weight_bits)
    calib = ctx.data.split("calibration")[0]
    layer.train()
    with paddle.no_grad():  # observers see real data before the first gradient step
        for i in range(0, min(len(calib), cfg.observer_batches * cfg.batch_size), cfg.batch_size):
            layer(paddle.to_tensor(calib[i : i + cfg.batch_size]))
    history, teacher_label = fine_tune(cfg, ctx, layer, rng, f"qat w{cfg.weight_bits}")
    simulated = evaluate(layer, *test)  # with fake quantization: what the integer model should reach
    ranges = learned_ranges(order, layer)
    unwrap(layer)
    float_after, fid = judged(layer, test, ref)
    label = source_label + f" QAT w{cfg.weight_bits}"
    qat = {"weight_bits": cfg.weight_bits, "activation_bits": 8, "layers": ranges}
    metrics = {
        "test_acc_before": float_before,
        "test_acc_simulated": simulated,
        "test_acc_float_after": float_after,
        "fidelity": fid,
        "history": history,
        "layers": ranges,
        "teacher": teacher_label,
    }
    return stage_saved(
        cfg, ctx, layer, info, [], label, {"qat": qat}, metrics, float_after, qat=qat, simulated_test_acc=simulated
    )
