"""export: Paddle models -> ONNX, each checked against Paddle on held-out inputs, then
measured with onnxruntime on the test split. A model is an earlier stage's artifact or a source
(`model:` mapping), a saved paddle.jit.save graph included."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, graph_kind, ref_inputs, ref_name


@dataclass(frozen=True)
class ExportConfig(TakesModels):
    models: tuple[ModelRef, ...] = ("teacher", "student_scratch", "student")
    opset: int = 13
    parity_samples: int = 256  # held-out (val) inputs compared against Paddle
    atol: float = 1e-4
    rtol: float = 1e-3

    uses_data = True

    def __post_init__(self):
        require(len(self.models) >= 1, "models", "list at least one model artifact")
        require(7 <= self.opset <= 21, "opset", "must be between 7 and 21")
        require(self.parity_samples >= 1, "parity_samples", "must be at least 1")
        require(
            not any(graph_kind(m) == "onnx" for m in self.models),
            "models",
            "an onnx: model is ONNX already; give it to quantize or bench",
        )
        names = [ref_name(m) for m in self.models]
        require(
            len(set(names)) == len(names),
            "models",
            f"two models would both be written as one file ({names}); export them in two stages or rename one",
        )

    def inputs(self, available) -> dict[str, str]:
        return {k: v for i, m in enumerate(self.models) for k, v in ref_inputs(f"models[{i}]", m).items()}

    def model_refs(self) -> dict:
        return {f"models[{i}]": m for i, m in enumerate(self.models)}

    def outputs(self) -> dict[str, str]:
        return {f"{ref_name(m)}.onnx": "onnx" for m in self.models}


def checked(out: Path, reference, x, *, atol: float, rtol: float, name: str) -> dict:
    """Cost and parity of a freshly exported `out` against Paddle's `reference` outputs on `x`.
    A file that fails the check (or cannot be measured) is deleted: nothing unvalidated is left behind."""
    from edgepipe.export.paddle_onnx import check_parity
    from edgepipe.runtime.model.cost import describe

    try:
        parity = check_parity(out, reference, x, atol=atol, rtol=rtol, name=name)
        return {**describe(out), "parity": parity}
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise


def contract_metadata(contract: dict | None) -> dict[str, str]:
    """The ONNX metadata_props entry that carries a model's input contract to the device."""
    import json

    from edgepipe.runtime.inputs.images import CONTRACT_KEY

    return {CONTRACT_KEY: json.dumps(contract, sort_keys=True)} if contract else {}


def export_checked(model_dir, out, x, *, opset: int, atol: float, rtol: float, name: str) -> dict:
    """Export an artifact folder to `out` (with the input contract its model.json records) and check
    it against Paddle on `x`; returns cost + parity."""
    from edgepipe.pipeline.models.load import load_model

    layer, info = load_model(model_dir)
    return export_layer_checked(
        layer,
        tuple(info["input_shape"]),
        out,
        x,
        opset=opset,
        atol=atol,
        rtol=rtol,
        name=name,
        contract=info.get("contract"),
    )


def export_layer_checked(
    layer,
    input_shape,
    out,
    x,
    *,
    opset: int,
    atol: float,
    rtol: float,
    name: str,
    contract: dict | None = None,
    task: dict | None = None,
) -> dict:
    """Export a Paddle layer with its contract (and task: {name, settings}) in the metadata, parity-checked
    on x: every output for a model of several (a detector's levels), else the one."""
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.pipeline.training import predict_logits

    metadata = contract_metadata(contract)
    if task:
        from edgepipe.runtime.tasks.base import get_task

        metadata |= get_task(task["name"], task.get("settings")).metadata_props()
    export_layer(layer, tuple(input_shape), out, opset=opset, name=name, metadata=metadata)
    if task and task["name"] == "detect":
        return _checked_outputs(layer, out, x, atol=atol, rtol=rtol, name=name)
    return checked(out, predict_logits(layer, x), x, atol=atol, rtol=rtol, name=name)


def _checked_outputs(layer, out: Path, x, *, atol: float, rtol: float, name: str) -> dict:
    """checked() for a model of several outputs: each against Paddle's, batch by batch."""
    import paddle

    from edgepipe.export.paddle_onnx import check_parity_feeds
    from edgepipe.runtime.model.cost import describe
    from edgepipe.runtime.model.session import open_session

    try:
        image = open_session(out).get_inputs()[0].name
        feeds = [{image: x[i : i + 16]} for i in range(0, len(x), 16)]
        layer.eval()
        with paddle.no_grad():
            reference = [[o.numpy() for o in layer(paddle.to_tensor(f[image]))] for f in feeds]
        return {**describe(out), "parity": check_parity_feeds(out, reference, feeds, atol=atol, rtol=rtol, name=name)}
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise


def export_saved_checked(
    graph: Path,
    params: Path,
    out,
    *,
    opset: int,
    atol: float,
    rtol: float,
    name: str,
    x=None,
    shapes: dict | None = None,
    samples: int = 64,
    contract: dict | None = None,
    default_hw: tuple[int, int] | None = None,
) -> dict:
    """A Paddle inference model (the legacy .pdmodel or Paddle 3's .json, with its .pdiparams) to ONNX
    through paddle2onnx's own loader, checked output by output against Paddle Inference on the same
    inputs: `x` (held-out data for the model's image input) or `samples` random inputs at `shapes`
    ({input: shape}, for dimensions the model leaves dynamic; `default_hw` the image input's height and
    width where `shapes` does not give them). Dynamic dimensions stay dynamic in the file."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.paddle_infer import PaddlePredictor
    from edgepipe.export.paddle_onnx import check_parity_feeds, export_saved
    from edgepipe.runtime.inputs import feeds as fd
    from edgepipe.runtime.model.cost import describe
    from edgepipe.runtime.model.session import open_session

    out = Path(out)
    export_saved(graph, params, out, opset=opset, name=name, metadata=contract_metadata(contract))
    try:
        spec = fd.signature(open_session(out))
        if x is not None:
            image = fd.image_input(spec)
            if image is None or not image.accepts((1, *x.shape[1:])):
                raise EdgepipeError(
                    f"{graph}: the model takes {', '.join(f'{s.name} {s.text()}' for s in spec)}; the data "
                    f"gives images of {list(x.shape[1:])}; use data of the model's input size"
                )
            feeds = fd.from_array(spec, x, batch=8)
        else:
            shapes = fd.parse_shapes(shapes, spec) if isinstance(shapes, list) else dict(shapes or {})
            image = fd.image_input(spec)
            if default_hw and image is not None and image.name not in shapes and None in image.shape[1:]:
                shapes[image.name] = (8, image.shape[1] or 3, *[d or v for d, v in zip(image.shape[2:], default_hw)])
            feeds = fd.random_feeds(spec, samples, shapes, what=str(graph))
        predictor = PaddlePredictor(graph, params)
        reference = [predictor.run(f) for f in feeds]
        parity = check_parity_feeds(out, reference, feeds, atol=atol, rtol=rtol, name=name)
        at = {k: v.shape for k, v in feeds[0].items()} if any(None in s.shape[1:] for s in spec) else None
        return {
            **describe(out, at),
            "parity": parity,
            "inputs": [{"name": s.name, "shape": list(s.shape)} for s in spec],
        }
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _detection_figures(path: Path, data) -> dict:
    """The exported detector's mAP@[.5:.95] and mAP@.5 on the test split, through onnxruntime and the task
    its metadata names (decoded as the device decodes it)."""
    from edgepipe.pipeline.data.detframes import split_image_set
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks.base import task_of
    from edgepipe.runtime.tasks.evaluate import predict, scored

    session = open_session(path)
    task, images = task_of(session), split_image_set(data, "test", session.get_inputs()[0].name)
    s = scored(task, predict(session, task, images.feeds, images.metas), images.labels)
    # "accuracy" holds the task's metric, named by "metric", for the tables that compare every model
    return {"task": "detect", "accuracy": s["value"], "metric": s["metric"], "map": s["value"], "map50": s.get("map50")}


@register_stage("export", ExportConfig)
def run_export(cfg: ExportConfig, ctx) -> StageResult:
    """Paddle -> ONNX (paddle2onnx in a child process), parity-checked, accuracy via onnxruntime."""
    from edgepipe.pipeline.models.sources import inference_files, resolve
    from edgepipe.pipeline.stages.modelref import load_ref
    from edgepipe.runtime.model.session import accuracy, open_session

    metrics, arts = {}, []
    x_val = ctx.data.split("val")[0][: cfg.parity_samples]  # held out from training
    common = dict(opset=cfg.opset, atol=cfg.atol, rtol=cfg.rtol)
    for m in cfg.models:
        name = ref_name(m)
        rel = f"{name}.onnx"
        if graph_kind(m) == "inference":
            graph, params = inference_files(resolve(ctx.base, m.inference))
            facts = export_saved_checked(
                graph, params, ctx.out(rel), x=x_val, name=name, contract=ctx.data.contract_record, **common
            )
            label = name
        else:
            layer, info, label = load_ref(ctx, m, "export")
            task = info.get("meta", {}).get("task")
            facts = export_layer_checked(
                layer,
                info["input_shape"],
                ctx.out(rel),
                x_val,
                name=name,
                contract=info.get("contract") or ctx.data.contract_record,
                task=task,
                **common,
            )
        if ctx.data.task == "detect":
            facts |= _detection_figures(ctx.out(rel), ctx.data)
        else:
            facts["accuracy"] = accuracy(open_session(ctx.out(rel)), *ctx.data.split("test"))
        if isinstance(m, str) and "fidelity" in ctx.artifacts[m].meta:  # a compressed model, against its float parent
            facts["fidelity"] = ctx.artifacts[m].meta["fidelity"]
        metrics[name] = facts
        arts.append(ctx.artifact(rel, "onnx", rel, label=label, precision="fp32", source=name, **facts))
    return StageResult(metrics=metrics, artifacts=arts)
