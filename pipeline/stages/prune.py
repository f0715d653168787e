"""prune: parameter (unstructured) magnitude pruning of Conv2D / Linear weights (`threshold` or
`sparsity`), or structured pruning that removes whole channels (`channels`), then fine-tuning,
optionally distilling from the unpruned model (`teacher: previous`).

Unstructured (compress/sparsity.py): the architecture is unchanged, masks are held while
fine-tuning; the dense ONNX file is no smaller and no faster, only more compressible.
Structured (compress/channels/): filters and neurons are cut out of the weights together with
every layer tied to them; the artifact records the kept channels as a `prune_channels`
transform, and the exported ONNX is smaller and faster. Blocks (compress/blocks.py): whole
blocks replaced by the identity, recorded as a `remove_layers` transform.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

from edgepipe.pipeline.compress.blocks import BlockRule
from edgepipe.pipeline.compress.channels.prune import ChannelRule
from edgepipe.pipeline.compress.channels.sensitivity import Sensitivity
from edgepipe.pipeline.core import distributed
from edgepipe.pipeline.core.config import OPTIONAL, require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.finetune import check_fine_tune, finetune_refs, judged, teacher_inputs
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, ref_name


@dataclass(frozen=True)
class PruneConfig(TakesModels):
    model: ModelRef = "student"
    layers: tuple[str, ...] = ("*",)  # Conv2D / Linear layers by name or glob
    threshold: float | None = None  # |w| below it becomes zero (the seed's rule)
    sparsity: float | None = None  # or: this share of the weights with the smallest magnitude
    channels: ChannelRule | None = None  # or: remove this share of channels (structured)
    blocks: BlockRule | None = None  # or: remove whole blocks (the identity takes their place)
    sensitivity: Sensitivity | None = None  # structured: accuracy per group vs ratio -> sensitivity.json/.png
    scope: Literal["layer", "global"] = "layer"  # sparsity per layer, or one threshold over all layers
    schedule: Literal["oneshot", "gradual"] = "oneshot"  # gradual: Zhu & Gupta's cubic ramp while fine-tuning
    frequency: int = 10  # gradual: steps between mask updates
    epochs: int = 3  # fine-tuning with the masks held; 0 = none
    batch_size: int = 64
    lr: float = 0.0005
    augment_shift: int = 2
    teacher: ModelRef | None = None  # previous (the unpruned model) | an artifact name | null (labels only)
    temperature: float = 4.0
    alpha: float = 0.9
    output: str | None = None  # default: <model>_pruned
    speed_check: bool = field(default=True, metadata=OPTIONAL)  # channels: fp32 p50 before and after, interleaved

    uses_data = True
    trains = True  # every rank runs it under `edgepipe run --nproc` (core/distributed.py)

    def __post_init__(self):
        given = [k for k in ("threshold", "sparsity", "channels", "blocks") if getattr(self, k) is not None]
        require(
            len(given) == 1,
            "sparsity",
            "give exactly one of threshold (|w| below it is zeroed), sparsity (share of "
            "weights zeroed), channels (structured: share of channels removed) or blocks (whole blocks removed)"
            + (f", not {' and '.join(given)}" if given else ""),
        )
        structured = self.channels is not None or self.blocks is not None
        require(
            not structured or self.schedule == "oneshot",
            "schedule",
            "channel and block pruning are one-shot; remove schedule",
        )
        require(
            not structured or self.layers == ("*",),
            "layers",
            "for channel or block pruning, give layers inside channels: or blocks:",
        )
        require(
            self.sensitivity is None or self.channels is not None,
            "sensitivity",
            "the sensitivity analysis is for structured pruning; give channels: too",
        )
        require(self.threshold is None or self.threshold > 0, "threshold", "must be positive")
        require(self.sparsity is None or 0.0 < self.sparsity < 1.0, "sparsity", "must be in (0, 1)")
        require(
            self.scope == "layer" or self.sparsity is not None,
            "scope",
            "global scope ranks weights by sparsity; a threshold is already global",
        )
        require(
            self.schedule == "oneshot" or self.sparsity is not None,
            "schedule",
            "gradual pruning ramps up to a sparsity; give sparsity",
        )
        require(
            self.schedule == "oneshot" or self.epochs > 0,
            "schedule",
            "gradual pruning happens during fine-tuning; set epochs > 0",
        )
        require(self.frequency >= 1, "frequency", "must be at least 1")
        check_fine_tune(self)
        require(len(self.layers) >= 1, "layers", "name at least one layer (a name or a glob such as 'conv*')")

    @property
    def output_name(self) -> str:
        return self.output or f"{ref_name(self.model)}_pruned"

    def inputs(self, available) -> dict[str, str]:
        return teacher_inputs(self.model, self.teacher)

    def model_refs(self) -> dict:
        return finetune_refs(self.model, self.teacher)

    def outputs(self) -> dict[str, str]:
        return {self.output_name: "paddle"}


@register_stage("prune", PruneConfig)
def run_prune(cfg: PruneConfig, ctx) -> StageResult:
    """Magnitude masks, fine-tuning with the masks held, per-layer sparsity in the metrics."""
    from edgepipe.pipeline.compress.sparsity import (
        MagnitudeRule,
        apply_masks,
        gradual_sparsity,
        magnitude_masks,
        prunable_layers,
        sparsity_report,
    )
    from edgepipe.pipeline.stages.finetune import fine_tune, stage_saved, stage_start
    from edgepipe.pipeline.training import evaluate

    rng, layer, info, source_label, test, ref, acc_before = stage_start(ctx, cfg.model, "prune")
    if cfg.channels is not None:
        return _prune_channels(cfg, ctx, layer, info, source_label, test, acc_before, rng, ref)
    if cfg.blocks is not None:
        return _prune_blocks(cfg, ctx, layer, info, source_label, test, acc_before, rng, ref)
    targets = prunable_layers(layer, cfg.layers)
    rule = MagnitudeRule(threshold=cfg.threshold, sparsity=cfg.sparsity, scope=cfg.scope)
    masks = magnitude_masks(targets, rule, sparsity=0.0 if cfg.schedule == "gradual" else None)
    apply_masks(targets, masks)
    acc_pruned = evaluate(layer, *test) if cfg.schedule == "oneshot" else None

    def hold_masks(step: int, total: int) -> None:
        if cfg.schedule == "gradual" and (step % cfg.frequency == 0 or step == total):
            masks.update(magnitude_masks(targets, rule, sparsity=gradual_sparsity(step, total, cfg.sparsity)))
        apply_masks(targets, masks)

    history, teacher_label = fine_tune(cfg, ctx, layer, rng, "prune fine-tune", after_step=hold_masks)
    acc_after, fid = judged(layer, test, ref)
    per_layer = sparsity_report(targets)
    zeros, total = sum(r["zeros"] for r in per_layer), sum(r["weights"] for r in per_layer)
    label = source_label + f" pruned {100 * zeros / total:.0f}%"
    metrics = {
        "rule": {"threshold": cfg.threshold, "sparsity": cfg.sparsity, "scope": cfg.scope, "schedule": cfg.schedule},
        "layers": per_layer,
        "sparsity": zeros / total,
        "zeros": zeros,
        "weights": total,
        "test_acc_before": acc_before,
        "test_acc_pruned": acc_pruned,
        "test_acc_after": acc_after,
        "fidelity": fid,
        "teacher": teacher_label,
        "history": history,
    }
    meta = {"pruned": {"zeros": zeros, "weights": total}}
    return stage_saved(cfg, ctx, layer, info, [], label, meta, metrics, acc_after)


def _prune_channels(cfg: PruneConfig, ctx, layer, info, source_label, test, acc_before, rng, ref) -> StageResult:
    import copy

    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.compress.channels.importance import DATA_SCORERS
    from edgepipe.pipeline.compress.channels.prune import prune_channels, resolved
    from edgepipe.pipeline.compress.channels.speed import channel_multiple
    from edgepipe.pipeline.core.artifact import count_parameters
    from edgepipe.pipeline.stages.finetune import fine_tune, stage_saved
    from edgepipe.pipeline.training import evaluate

    shape = tuple(info["input_shape"])
    params_before = count_parameters(layer)
    rule = resolved(cfg.channels)
    round_source = "recipe" if cfg.channels.round_to is not None else distributed.on_rank0(channel_multiple)[1]
    parent = copy.deepcopy(layer) if cfg.speed_check else None
    train = ctx.data.split("train") if rule.criterion in DATA_SCORERS else None
    ratios, graph, stats, sens_metrics = _sensitivity(cfg, ctx, layer, shape, rule, train)
    layer, changes, groups = prune_channels(layer, shape, rule, train, ratios=ratios, graph=graph, stats=stats)
    if not changes:
        raise EdgepipeError(
            "prune: no channel group could be pruned ("
            + "; ".join(f"{', '.join(g['group'])}: {g.get('skip', 'nothing to remove at this ratio')}" for g in groups)
            + ")"
        )
    acc_pruned = evaluate(layer, *test)
    # data-parallel: rank 0 alone times it (the ranks would share the cores), every rank gets its figures
    speed = distributed.on_rank0(_speed_check, parent, layer, shape) if parent is not None else None
    history, teacher_label = fine_tune(cfg, ctx, layer, rng, "prune fine-tune")
    acc_after, fid = judged(layer, test, ref)
    params_after = count_parameters(layer)
    label = source_label + f" pruned {100 * (1 - params_after / params_before):.0f}% params"
    metrics = {
        "rule": {
            "channels": {
                "ratio": None if rule.target else rule.ratio,
                "criterion": rule.criterion,
                "round_to": rule.round_to,
                "round_to_from": round_source,
                "target": {rule.target.kind: rule.target.share} if rule.target else None,
            }
        },
        "sensitivity": sens_metrics,
        "groups": groups,
        "params_before": params_before,
        "params_after": params_after,
        "test_acc_before": acc_before,
        "test_acc_pruned": acc_pruned,
        "test_acc_after": acc_after,
        "fidelity": fid,
        "speed": speed,
        "teacher": teacher_label,
        "history": history,
    }
    transform = {"type": "prune_channels", "params": {"layers": changes}}
    meta = {"pruned_channels": groups}
    return stage_saved(cfg, ctx, layer, info, [transform], label, meta, metrics, acc_after, params=params_after)


def _prune_blocks(cfg: PruneConfig, ctx, layer, info, source_label, test, acc_before, rng, ref) -> StageResult:
    from edgepipe.pipeline.compress.blocks import remove_blocks
    from edgepipe.pipeline.core.artifact import count_parameters
    from edgepipe.pipeline.stages.finetune import fine_tune, stage_saved
    from edgepipe.pipeline.training import evaluate

    shape = tuple(info["input_shape"])
    params_before = count_parameters(layer)
    layer, rounds = remove_blocks(layer, shape, cfg.blocks, ctx.data.split("val"))
    acc_pruned = evaluate(layer, *test)
    history, teacher_label = fine_tune(cfg, ctx, layer, rng, "prune fine-tune")
    acc_after, fid = judged(layer, test, ref)
    params_after = count_parameters(layer)
    removed = [r["removed"] for r in rounds]
    label = source_label + f" −{len(removed)} block{'s' if len(removed) > 1 else ''}"
    metrics = {
        "rule": {"blocks": {"count": cfg.blocks.count, "measure": cfg.blocks.measure}},
        "removed": removed,
        "rounds": rounds,
        "params_before": params_before,
        "params_after": params_after,
        "test_acc_before": acc_before,
        "test_acc_pruned": acc_pruned,
        "test_acc_after": acc_after,
        "fidelity": fid,
        "teacher": teacher_label,
        "history": history,
    }
    transform = {"type": "remove_layers", "params": {"layers": removed}}
    meta = {"removed_blocks": removed}
    return stage_saved(cfg, ctx, layer, info, [transform], label, meta, metrics, acc_after, params=params_after)


def _sensitivity(cfg: PruneConfig, ctx, layer, shape, rule, train):
    """With a sensitivity study or a target: the per-group accuracy curves, the ratios the target gives,
    the traced graph and statistics (reused by the cut) and the study's metrics; else all None."""
    from edgepipe.pipeline.compress.channels.sensitivity import analyse, choose_ratios, write
    from edgepipe.pipeline.core.progress import progress_bar

    if cfg.sensitivity is None and rule.target is None:
        return None, None, None, None
    sens = cfg.sensitivity or Sensitivity(plot=False)
    doc, graph, aux = analyse(
        layer, shape, rule, sens, ctx.data.split("val"), train, progress=progress_bar("sensitivity")
    )
    ratios = choose_ratios(layer, shape, doc, graph, aux, rule) if rule.target is not None else None
    files = write(doc, ctx.out_dir, plot=cfg.sensitivity.plot) if cfg.sensitivity is not None else []
    groups = [
        {
            "group": g["group"],
            "channels": g["channels"],
            "accuracy": {str(p["ratio"]): p["accuracy"] for p in g["points"]},
        }
        for g in doc["groups"]
    ]
    metrics = {
        "files": [f.name for f in files],
        "baseline": doc["baseline"],
        "allocation": doc.get("allocation"),
        "groups": groups,
    }
    return ratios, graph, aux["stats"], metrics


def _speed_check(parent, layer, shape) -> dict:
    """The pruned model's fp32 latency against the unpruned one's, in interleaved rounds (said loudly when
    slower); {"error": ...} when it cannot run (the pruning itself stands)."""
    from edgepipe.pipeline.compress.channels.speed import compare

    try:
        speed = compare(parent, layer, shape)
    except Exception as exc:  # e.g. a model paddle2onnx cannot export
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        speed = {"error": f"{type(exc).__name__}: {first}"}
        print(f"  prune: the speed check could not run ({speed['error']})", file=sys.stderr)
        return speed
    lo, hi = speed["speedup_range"]
    print(
        f"  prune: fp32 p50 {speed['p50_before_ms']:.3f} -> {speed['p50_after_ms']:.3f} ms, "
        f"speed-up x{speed['speedup']:.2f} ({lo:.2f}-{hi:.2f} over {speed['rounds']} rounds)"
        + (" — SLOWER than the unpruned model in every round; try round_to: 8 or 16" if speed["slower"] else ""),
        file=sys.stderr,
    )
    return speed
