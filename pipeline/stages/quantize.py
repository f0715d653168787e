"""quantize: onnxruntime quantization of an exported model, defaults from the target device profile.

mode static: QDQ or QOperator, per-channel or per-tensor weights, MinMax / Entropy / Percentile
calibration on the calibration split, u8/s8/u16/s16 activations and s8/u8/s4/u4 weights; ranges
learned by a `qat` stage are used automatically. The accuracy guard measures the drop on the
validation split and, past `max_accuracy_drop`, keeps the layers that hurt most in float (one at a
time) until the budget holds; the final accuracy is measured on the test split.
mode dynamic: int8 weights, activations quantized at run time (warns on conv-dominated models).
mode fp16: half-precision weights and compute, fp32 inputs/outputs.
mode matmul4: 4-bit block-wise MatMul weights (MatMulNBits); convolutions stay float.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, graph_kind, ref_inputs, ref_name

_SUFFIX = {"dynamic": "dyn8", "fp16": "fp16", "matmul4": "mm4"}


@dataclass(frozen=True)
class QuantizeConfig(TakesModels):
    model: ModelRef = "student.onnx"  # an ONNX artifact, or onnx: PATH
    mode: Literal["static", "dynamic", "fp16", "matmul4"] = "static"
    profile: str | None = None  # device profile whose int8 preset gives the defaults; null = this host's
    format: Literal["qdq", "qoperator"] | None = None
    per_channel: bool | None = None
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = 99.999
    calibration_samples: int = 200
    activation_type: Literal["u8", "s8", "u16", "s16"] | None = None
    weight_type: Literal["s8", "u8", "s4", "u4"] | None = None
    reduce_range: bool | None = None
    use_qat_ranges: bool = True  # when the model came from a `qat` stage
    max_accuracy_drop: float | None = 1.0  # points; null accepts any drop
    guard: bool = True  # keep the worst layers in float while the drop is over budget
    guard_max_float_layers: int = 4
    output: str | None = None  # default: <model>.<int8|int4|a16w8|dyn8|fp16|mm4>.onnx
    compact_names: bool = False  # short internal tensor/node names (export/compact.py): same graph, fewer bytes

    uses_data = True

    def __post_init__(self):
        require(self.calibration_samples >= 1, "calibration_samples", "must be at least 1")
        require(
            self.max_accuracy_drop is None or self.max_accuracy_drop >= 0, "max_accuracy_drop", "must be non-negative"
        )
        require(self.guard_max_float_layers >= 0, "guard_max_float_layers", "must be non-negative")
        require(self.output is None or self.output.endswith(".onnx"), "output", "must end in .onnx")
        require(
            isinstance(self.model, str) or graph_kind(self.model) == "onnx",
            "model",
            "quantize takes an ONNX model: an ONNX artifact (e.g. student.onnx) or onnx: PATH; export the others first",
        )

    def inputs(self, available) -> dict[str, str]:
        return ref_inputs("model", self.model)

    def model_refs(self) -> dict:
        return {"model": self.model}

    def outputs(self) -> dict[str, str]:
        return {self.output_name: "onnx"}

    @property
    def output_name(self) -> str:
        if self.output:
            return self.output
        if self.mode != "static":
            tag = _SUFFIX[self.mode]
        else:
            a, w = self.activation_type or "u8", self.weight_type or "s8"
            tag = "int4" if w in ("s4", "u4") else "a16w8" if a in ("u16", "s16") else "int8"
        return f"{ref_name(self.model).removesuffix('.onnx')}.{tag}.onnx"


def resolve_options(cfg: QuantizeConfig):
    """QuantOptions from the profile's preset (named, or detected for this host), then the recipe's values."""
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile, load_profile
    from edgepipe.export.quantize import QuantOptions

    profile = load_profile(cfg.profile) if cfg.profile else detect_profile(detect_host())
    overrides = dict(
        format=cfg.format,
        per_channel=cfg.per_channel,
        activation_type=cfg.activation_type,
        weight_type=cfg.weight_type,
        reduce_range=cfg.reduce_range,
    )
    common = dict(calibration=cfg.calibration, percentile=cfg.percentile)
    opts = (
        QuantOptions.from_profile(profile, **overrides, **common)
        if profile
        else QuantOptions(**common, **{k: v for k, v in overrides.items() if v is not None})
    )
    source = {
        "profile": profile.name if profile else None,
        "reason": profile.quantization.reason if profile else None,
        "from_recipe": sorted(k for k, v in overrides.items() if v is not None),
    }
    return opts, source


@register_stage("quantize", QuantizeConfig)
def run_quantize(cfg: QuantizeConfig, ctx) -> StageResult:
    """onnxruntime quantization (static with an accuracy guard, dynamic, fp16 or 4-bit MatMul)."""
    from edgepipe.export.quantize import convert_fp16, quantize_dynamic, quantize_matmul_4bit
    from edgepipe.runtime.judge.fidelity import fidelity
    from edgepipe.runtime.model.cost import describe
    from edgepipe.runtime.model.session import open_session, predict

    xt, yt = ctx.data.split("test")
    fp32_path, src_meta, fp32_logits = _float_source(cfg, ctx, xt, yt)
    out = ctx.out(cfg.output_name)
    facts: dict = {"mode": cfg.mode}
    warnings: list[str] = []
    precision = {"dynamic": "int8 dynamic", "fp16": "fp16", "matmul4": "4-bit MatMul"}.get(cfg.mode)
    if cfg.mode == "static":
        static, precision = _quantize_static(cfg, ctx, fp32_path, src_meta, out)
        facts |= static
    elif cfg.mode == "dynamic":
        warnings = quantize_dynamic(fp32_path, out)
    elif cfg.mode == "fp16":
        warnings = convert_fp16(fp32_path, out)
    else:
        facts["matmuls_converted"] = quantize_matmul_4bit(fp32_path, out)
        if facts["matmuls_converted"] == 0:
            warnings.append("no MatMul with a constant weight: nothing was converted to 4 bits")
    for w in warnings:
        print(f"  warning: {w}", file=sys.stderr)
    if cfg.compact_names:
        from edgepipe.export.compact import compact_in_place

        # the nodes the report names keep theirs
        named = tuple(facts.get("guard", {}).get("kept_float", ())) + tuple(
            facts.get("options", {}).get("nodes_to_exclude", ())
        )
        facts["compact_names"] = compact_in_place(out, xt[:64], keep_nodes=named)
    facts |= describe(out)
    facts["warnings"] = warnings
    q_logits = predict(open_session(out), xt)
    if ctx.data.task == "detect":  # the test split's mAP through the task, against the float file's
        test = detection_judge(ctx.data, "test", fp32_path)(out)
        facts |= {"task": "detect", "accuracy": test["value"], "metric": test["metric"], "map50": test.get("map50")}
        facts["accuracy_drop_points"] = test["drop_points"]
    else:
        facts["accuracy"] = float((q_logits.argmax(1) == yt).mean())
        facts["accuracy_drop_points"] = 100.0 * (src_meta["accuracy"] - facts["accuracy"])
    facts["fidelity"] = fidelity(fp32_logits, q_logits)  # against the float model
    facts["bytes_ratio_vs_fp32"] = facts["bytes"] / src_meta["bytes"]
    _check_drop(cfg, facts, out)
    label = src_meta.get("label", ref_name(cfg.model))
    art = ctx.artifact(
        cfg.output_name,
        "onnx",
        cfg.output_name,
        label=label,
        precision=precision,
        source=src_meta.get("source"),
        float_source=src_meta.get("float_source"),
        **facts,
    )
    return StageResult(metrics=facts, artifacts=[art])


def _float_source(cfg: QuantizeConfig, ctx, xt, yt):
    """The float model to quantize: (its path, what its artifact records, its outputs on the test split).
    An artifact of the run, or a float ONNX file of the user's (then recorded as an export stage would)."""
    from edgepipe.runtime.model.session import open_session, predict

    if isinstance(cfg.model, str):
        fp32_path, src_meta = ctx.path_of(cfg.model), ctx.artifacts[cfg.model].meta
        return fp32_path, src_meta, predict(open_session(fp32_path), xt)
    from edgepipe.pipeline.models.sources import resolve
    from edgepipe.runtime.inputs.feeds import signature

    fp32_path = resolve(ctx.base, cfg.model.onnx)
    session = open_session(fp32_path)
    spec = signature(session)
    if len(spec) != 1 or not spec[0].accepts((1, *ctx.data.input_shape)):
        raise EdgepipeError(
            f"quantize.model: {fp32_path} takes {', '.join(f'{s.name} {s.text()}' for s in spec)} "
            f"(? = any size), the data gives {list(ctx.data.input_shape)}; use data of the model's input "
            "size (a model of several inputs: edgepipe quantize with an .npz naming each)"
        )
    fp32_logits = predict(session, xt)
    src_meta = {
        "label": cfg.model.name,
        "bytes": fp32_path.stat().st_size,
        "accuracy": float((fp32_logits.argmax(1) == yt).mean()),
        "float_source": str(fp32_path),  # the user's own file: a deploy candidate too
    }
    return fp32_path, src_meta, fp32_logits


def _quantize_static(cfg: QuantizeConfig, ctx, fp32_path: Path, src_meta: dict, out: Path) -> tuple[dict, str]:
    """Static int8 (or a16/w8, int4 weights) under the accuracy guard, with a QAT stage's ranges where the
    source was trained by one: (facts, the precision's description)."""
    from edgepipe.export.guard import guarded_quantize

    opts, source = resolve_options(cfg)
    overrides = None
    origin = ctx.artifacts.get(src_meta.get("source", ""))
    qat = (origin.meta if origin else src_meta).get("qat") if cfg.use_qat_ranges else None
    if qat:
        from dataclasses import replace

        from edgepipe.pipeline.compress.qat import onnx_overrides

        want = "s4" if qat["weight_bits"] == 4 else "s8"
        if opts.weight_type != want:
            raise EdgepipeError(
                f"quantize.weight_type: {cfg.model} was trained by QAT for {qat['weight_bits']}-bit "
                f"signed weights; use weight_type: {want}"
            )
        if opts.reduce_range:  # QAT trained on the full grid; a 7-bit grid would undo it
            opts = replace(opts, reduce_range=False)
            source["note"] = "reduce_range off: QAT trained the weights on the full grid"
        overrides = onnx_overrides(fp32_path, qat["layers"])
        source["qat_ranges"] = len(overrides)
    calib = ctx.data.split("calibration")[0][: cfg.calibration_samples]
    xv, yv = ctx.data.split("val")
    budget = cfg.max_accuracy_drop if cfg.guard else None
    judge = detection_judge(ctx.data, "val", fp32_path) if ctx.data.task == "detect" else None
    if judge is not None:
        yv = None  # the rows' numbers, not classes: the judge scores mAP against the boxes
    guard = guarded_quantize(
        fp32_path, out, calib, opts, xv, yv, budget, cfg.guard_max_float_layers, overrides, judge=judge
    )
    facts = {"options": asdict(opts), "options_source": source, "guard": guard, "calibration_samples": int(len(calib))}
    if opts.weight_type in ("s4", "u4"):
        precision = "int4 weights"
    else:
        precision = "a16/w8" if opts.activation_type in ("u16", "s16") else "int8"
    precision += f" ({'QAT ranges' if overrides else opts.calibration})"
    if guard["kept_float"]:
        precision += f" ({len(guard['kept_float'])} float)"
        print(
            f"  guard: kept {len(guard['kept_float'])} node(s) in float: {', '.join(guard['kept_float'])}",
            file=sys.stderr,
        )
    return facts, precision


def detection_judge(data, split: str, fp32_path: Path):
    """A FolderJudge (the task's metric of a model file, and its drop from the float file's) on a split of
    detection data, scored against its boxes by the detect task the file names."""
    from edgepipe.pipeline.data.detframes import split_image_set
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks.base import task_of
    from edgepipe.runtime.tasks.evaluate import FolderJudge

    session = open_session(fp32_path)
    images = split_image_set(data, split, session.get_inputs()[0].name)
    return FolderJudge(task_of(session), images.folder, data.contract, fp32_path, images=images)


def _check_drop(cfg: QuantizeConfig, facts: dict, out: Path) -> None:
    """The quantized file is removed, and the run stops, when it lost more than the budget."""
    if cfg.max_accuracy_drop is None or facts["accuracy_drop_points"] <= cfg.max_accuracy_drop:
        return
    out.unlink(missing_ok=True)
    kept = facts.get("guard", {}).get("kept_float")
    raise EdgepipeError(
        f"quantize.max_accuracy_drop: {cfg.output_name} {facts.get('metric', 'accuracy')} "
        f"{100 * facts['accuracy']:.2f}% is "
        f"{facts['accuracy_drop_points']:.2f} points below fp32 (budget {cfg.max_accuracy_drop})"
        + (f" even with {len(kept)} node(s) kept in float" if kept else "")
        + "; try calibration: entropy or percentile, more calibration_samples, a qat stage, or a larger "
        "guard_max_float_layers"
    )
