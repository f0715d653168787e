"""lowrank: factorise named Linear / Conv2D layers (SVD, Tucker-2, spatial SVD), then fine-tune,
optionally distilling from the unfactorised model (`teacher: previous`).

The output artifact records one `lowrank` transform per factorised layer (method and ranks), so
it reloads and exports like any other model. See compress/lowrank.py for the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepipe.pipeline.compress.lowrank import LayerRank
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.finetune import check_fine_tune, finetune_refs, judged, teacher_inputs
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, ref_name


@dataclass(frozen=True)
class LowRankConfig(TakesModels):
    model: ModelRef = "student"
    layers: tuple[LayerRank, ...] = field(default_factory=lambda: (LayerRank("fc1", rank=16),))
    epochs: int = 3  # fine-tuning after factorising; 0 = none
    batch_size: int = 64
    lr: float = 0.0005
    augment_shift: int = 2
    teacher: ModelRef | None = None  # previous (the unfactorised model) | an artifact name | null (labels only)
    temperature: float = 4.0
    alpha: float = 0.9
    output: str | None = None  # default: <model>_lowrank

    uses_data = True
    trains = True  # every rank runs it under `edgepipe run --nproc` (core/distributed.py)

    def __post_init__(self):
        require(len(self.layers) >= 1, "layers", "name at least one layer (a name or a glob such as 'fc*')")
        check_fine_tune(self)

    @property
    def output_name(self) -> str:
        return self.output or f"{ref_name(self.model)}_lowrank"

    def inputs(self, available) -> dict[str, str]:
        return teacher_inputs(self.model, self.teacher)

    def model_refs(self) -> dict:
        return finetune_refs(self.model, self.teacher)

    def outputs(self) -> dict[str, str]:
        return {self.output_name: "paddle"}


@register_stage("lowrank", LowRankConfig)
def run_lowrank(cfg: LowRankConfig, ctx) -> StageResult:
    """Low-rank factorisation of named layers, then fine-tuning (optionally KD from the original)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.compress.lowrank import factorize
    from edgepipe.pipeline.core.artifact import count_parameters
    from edgepipe.pipeline.stages.finetune import fine_tune, stage_saved, stage_start
    from edgepipe.pipeline.training import evaluate

    rng, layer, info, source_label, test, ref, acc_before = stage_start(ctx, cfg.model, "lowrank")
    params_before = count_parameters(layer)
    layer, transforms, per_layer = factorize(layer, cfg.layers, info["input_shape"])
    if not transforms:
        raise EdgepipeError(
            "lowrank: no layer was factorised ("
            + "; ".join(f"{r['layer']}: {r['skip']}" for r in per_layer)
            + "); lower the rank or name other layers"
        )
    acc_factored = evaluate(layer, *test)
    history, teacher_label = fine_tune(cfg, ctx, layer, rng, "lowrank fine-tune")
    acc_after, fid = judged(layer, test, ref)
    params_after = count_parameters(layer)
    label = source_label + " low-rank"
    metrics = {
        "layers": per_layer,
        "params_before": params_before,
        "params_after": params_after,
        "test_acc_before": acc_before,
        "test_acc_factored": acc_factored,
        "test_acc_after": acc_after,
        "fidelity": fid,
        "teacher": teacher_label,
        "history": history,
    }
    return stage_saved(
        cfg, ctx, layer, info, transforms, label, {"lowrank": per_layer}, metrics, acc_after, params=params_after
    )
