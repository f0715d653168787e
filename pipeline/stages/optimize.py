"""optimize: from a trained float model and a folder of the user's images to the fastest deployment that
keeps the task's metric, measured on this machine. The candidates:

- the user's own float file, on every backend × precision this host offers (so nothing slower than what
  the user brought can be chosen);
- edgepipe's int8 for onnxruntime (the profile's preset under the accuracy guard, judged by the task's
  metric on the images; left out, saying why, when the guard cannot meet the budget);
- NNCF's int8 for OpenVINO (export/nncf_int8.py; with the `[openvino]` extra).

Each is scored by the task's metric on the images (against their labels, or without labels against the
float model's predictions) and timed side by side in interleaved rounds; the deploy stage's rule
chooses (pipeline/stages/choice.py). The stage's folder holds deploy.json and the chosen file, its
candidates/ the quantized files."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, graph_kind, ref_inputs, ref_name

QUANTIZERS = ("edgepipe", "nncf")


@dataclass(frozen=True)
class OptimizeConfig(TakesModels):
    model: ModelRef = "student.onnx"  # an ONNX artifact of the run, or onnx: PATH (the user's float model)
    images: str = ""  # the user's images: scored by the task (labels file, class folders, or none) and calibrated on
    task: str | None = None  # null: the one the model's metadata names, else classify or fidelity
    max_accuracy_drop: float = 1.0  # points of the task's metric below the float model
    quantizers: tuple[str, ...] = QUANTIZERS  # edgepipe: int8 for onnxruntime; nncf: int8 for OpenVINO
    calibration_samples: int = 100
    specialise: bool = True  # also a copy with the dynamic input sizes fixed to the contract's (and slimmed)
    profile: str | None = None  # whose budgets, threads, backends and int8 preset; null = the detected one
    threads: int | None = None  # null = the profile's (capped to this host's CPUs)
    backends: tuple[str, ...] | None = None  # null = the profile's backends that are installed here
    rounds: int = 5
    seconds: float = 0.3  # per candidate per round
    budget_p90_ms: float | None = None  # a latency budget the choice must meet (none by default: the fastest wins)
    budget_bytes: int | None = None  # a model-size budget
    # seconds the quantizers may take: none starts past it, and the guard starts no step or trial past it
    time_limit: float | None = None

    def __post_init__(self):
        require(bool(self.images), "images", "give a folder of the user's images")
        require(
            isinstance(self.model, str) or graph_kind(self.model) == "onnx",
            "model",
            "optimize takes an ONNX model: an ONNX artifact or onnx: PATH (`edgepipe optimize` exports a "
            "Paddle inference folder first)",
        )
        require(self.max_accuracy_drop >= 0, "max_accuracy_drop", "must be non-negative")
        require(set(self.quantizers) <= set(QUANTIZERS), "quantizers", f"choose from {', '.join(QUANTIZERS)}")
        require(self.calibration_samples >= 1, "calibration_samples", "must be at least 1")
        for key in ("budget_p90_ms", "budget_bytes", "time_limit"):
            require(getattr(self, key) is None or getattr(self, key) > 0, key, "must be positive (or null: none)")
        self.deploy_config()  # rounds, seconds, threads, backends and budgets checked now, not after the quantizers
        if self.task is not None:
            from edgepipe.runtime.tasks.base import task_names

            require(self.task in task_names(), "task", f"choose one of {', '.join(task_names())}")

    def inputs(self, available) -> dict[str, str]:
        return ref_inputs("model", self.model)

    def model_refs(self) -> dict:
        return {"model": self.model}

    def files(self, base) -> dict:
        from edgepipe.pipeline.core.config import resolve_path

        path = resolve_path(base, self.images)
        if not path.is_dir():
            raise EdgepipeError(f"images: {path} is not a folder of images")
        return super().files(base) | {"images": path}

    def outputs(self) -> dict[str, str]:
        """The quantized candidates (each only where it was made) and deploy.json."""
        stem = ref_name(self.model).removesuffix(".onnx")
        made = {"edgepipe": f"{stem}.int8.onnx", "nncf": f"{stem}.nncf.onnx"}
        static = {f"{stem}.static.onnx": "onnx"} if self.specialise else {}
        return {made[q]: "onnx" for q in self.quantizers} | static | {"deployment": "file"}

    def deploy_config(self):
        from edgepipe.pipeline.stages.deploy import DeployConfig

        return DeployConfig(
            backends=self.backends,
            profile=self.profile,
            threads=self.threads,
            max_accuracy_drop=self.max_accuracy_drop,
            rounds=self.rounds,
            seconds=self.seconds,
            budgets={
                k: v
                for k, v in (("latency_p90_ms", self.budget_p90_ms), ("model_bytes", self.budget_bytes))
                if v is not None
            },
        )


@dataclass
class _Source:
    """The float model and what every candidate is judged on: its input signature, contract and task, the
    images decoded once for the task (runtime/tasks/evaluate.ImageSet) and the calibration feeds from them."""

    path: Path
    spec: list
    contract: object
    task: object
    images: object  # ImageSet
    calibration: list  # feeds


def _source(cfg: OptimizeConfig, ctx) -> _Source:
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.pipeline.models.sources import resolve
    from edgepipe.runtime.inputs import feeds as fd
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks.base import task_of
    from edgepipe.runtime.tasks.evaluate import ImageSet

    path = ctx.path_of(cfg.model) if isinstance(cfg.model, str) else resolve(ctx.base, cfg.model.onnx)
    folder = cfg.files(ctx.base)["images"]
    session = open_session(path)
    contract = fd.model_contract(session)
    if contract is None:
        raise EdgepipeError(
            f"{path}: carries no input contract, so the images cannot be brought to its input: give it "
            "(edgepipe optimize --size HxW --mean … --std …, or `edgepipe contract` once)"
        )
    task, spec = task_of(session, cfg.task), fd.signature(session)
    images = ImageSet.read(task, folder, contract, spec, progress=progress_bar("images"))
    if not images.feeds:
        raise EdgepipeError(f"{folder}: no images")
    batches = fd.regroup(images.feeds, fd.batch_size(spec, 32))  # as folder_feeds groups them
    return _Source(path, spec, contract, task, images, fd.spread(batches, cfg.calibration_samples))


def edgepipe_int8(cfg: OptimizeConfig, src: _Source, out: Path, deadline: float | None = None):
    """edgepipe's int8 (the profile's preset) under the guard judged by the task's metric on the images:
    (its path, or None when the guard cannot meet the budget; its record)."""
    from edgepipe.export.guard import guarded_quantize
    from edgepipe.export.metadata import write_metadata
    from edgepipe.pipeline.stages.export import contract_metadata
    from edgepipe.pipeline.stages.quantize import QuantizeConfig, resolve_options
    from edgepipe.runtime.inputs import feeds as fd
    from edgepipe.runtime.tasks.evaluate import FolderJudge

    opts, preset = resolve_options(QuantizeConfig(model=src.path.name, profile=cfg.profile))
    judged = src.task.name != "fidelity"
    judge = FolderJudge(src.task, src.images.folder, src.contract, src.path, images=src.images) if judged else None
    g = guarded_quantize(
        src.path,
        out,
        src.calibration,
        opts,
        fd.spread(src.calibration, 64),
        None,
        cfg.max_accuracy_drop if judged else None,
        judge=judge,
        deadline=deadline,
    )
    record = {
        "quantizer": "edgepipe",
        "preset": preset,
        "format": opts.format,
        "met": g["met"],
        "drop_points": g["drop_points"],
        "kept_float": g["kept_float"],
        "op_types": g.get("op_types"),
        **({"time_limit_reached": True} if g.get("time_limit_reached") else {}),
    }
    if not g["met"]:
        out.unlink(missing_ok=True)
        return None, record
    write_metadata(out, contract_metadata(src.contract.to_dict()) | src.task.metadata_props())
    return out, record


def static_copy(src: _Source, out: Path) -> tuple[Path | None, dict | None]:
    """The user's model with its image input's dynamic sizes fixed to the contract's one size (batch 1) and
    the graph slimmed (export/specialise.py), when it has dynamic sizes and every image comes out at one
    size; else (None, None)."""
    from edgepipe.export.specialise import dynamic_dims, fix_shapes
    from edgepipe.runtime.inputs import feeds as fd

    dyn = dynamic_dims(src.path)
    image = fd.image_input(src.spec)
    if image is None or image.name not in dyn or set(dyn) - {image.name} or not src.contract.fixed_size:
        return None, None
    print("  optimize: a static-shape copy of your model", file=sys.stderr)
    rec = fix_shapes(src.path, out, {image.name: (1, *src.contract.input_shape)})
    return out, {"quantizer": "static shapes", **rec}


def _candidates(cfg: OptimizeConfig, src: _Source, folder: Path) -> tuple[dict, list[dict], list[str]]:
    """({name: path} of every candidate file, the quantizers' records, notes on what was left out)."""
    from edgepipe.export.nncf_int8 import nncf_available, nncf_quantize

    folder.mkdir(parents=True, exist_ok=True)
    stem = ref_name(cfg.model).removesuffix(".onnx")
    models, records, notes = {src.path.name: src.path}, [], []
    deadline = None if cfg.time_limit is None else time.monotonic() + cfg.time_limit

    def late(what: str) -> bool:
        if deadline is not None and time.monotonic() > deadline:
            notes.append(f"{what} left out: the {cfg.time_limit:g} s time limit was spent before it could start")
            return True
        return False

    if "edgepipe" in cfg.quantizers and not late("edgepipe's int8"):
        print("  optimize: edgepipe int8 for onnxruntime, under the guard", file=sys.stderr)
        path, rec = edgepipe_int8(cfg, src, folder / f"{stem}.int8.onnx", deadline)
        records.append(rec)
        if path is None:
            notes.append(
                f"edgepipe's int8 left out: {rec['drop_points']:.2f} points of {src.task.metric} lost, over the "
                f"{cfg.max_accuracy_drop:g}-point budget even with {len(rec['kept_float'])} node(s) in float"
                + (" (the time limit stopped the guard)" if rec.get("time_limit_reached") else "")
            )
        else:
            models[path.name] = path
    if cfg.specialise:
        path, rec = static_copy(src, folder / f"{stem}.static.onnx")
        if path is not None:
            models[path.name] = path
            records.append(rec)
    if "nncf" in cfg.quantizers and not late("NNCF's int8"):
        ok, why = nncf_available()
        if not ok:
            notes.append(f"NNCF's int8 left out: {why}")
        else:
            print("  optimize: NNCF int8 for OpenVINO", file=sys.stderr)
            path = folder / f"{stem}.nncf.onnx"
            try:
                records.append(nncf_quantize(src.path, path, src.calibration))
                models[path.name] = path
            except EdgepipeError as exc:  # one quantizer failing leaves the others' candidates standing
                path.unlink(missing_ok=True)
                notes.append(f"NNCF's int8 left out: {exc}")
                print(f"  note: NNCF's int8 left out: {exc}", file=sys.stderr)
    return models, records, notes


def _final_paths(d: dict, ctx) -> None:
    """deploy.json names the candidates made here by where they will be once the stage's folder is swapped
    in (the run writes into a partial folder first), and is written again with them."""
    from edgepipe.devices.base.atomic import write_json_atomic

    partial, final = str(ctx.out_dir), str(ctx.run_dir / ctx.name)
    for rec in (d, *d["candidates"]):
        for key in ("model", "source"):
            if isinstance(rec.get(key), str) and rec[key].startswith(partial):
                rec[key] = final + rec[key][len(partial) :]
    write_json_atomic(ctx.out_dir / "deploy.json", d)


@register_stage("optimize", OptimizeConfig)
def run_optimize(cfg: OptimizeConfig, ctx) -> StageResult:
    """The fastest of the user's model, edgepipe's int8 and NNCF's int8 that keeps the task's metric, measured here."""
    from edgepipe.pipeline.stages.deploy import chosen_record, deploy, task_spec

    src = _source(cfg, ctx)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    models, records, notes = _candidates(cfg, src, ctx.out_dir / "candidates")
    task = task_spec(src.images.folder, src.contract, src.task.name)
    d = deploy(models, None, None, cfg.deploy_config(), ctx.out_dir, task, notes=notes, own={src.path.name})
    _final_paths(d, ctx)
    best = next(c for c in d["candidates"] if c["chosen"])
    own = [c for c in d["candidates"] if c["name"] == src.path.name]
    own = min(own, key=lambda c: c["time_vs_reference"]) if own else None  # the user's model at its fastest
    metrics = {
        "chosen": chosen_record(best),
        "source": str(src.path),
        "task": d.get("task"),
        "quantizers": records,
        "speedup_vs_source": None if own is None else own["time_vs_reference"] / best["time_vs_reference"],
        "threads": d["threads"],
        "profile": d["profile"],
        "candidates": d["candidates"],
        "notes": d["notes"],
    }
    artifacts = [
        ctx.artifact(
            p.name,
            "onnx",
            f"candidates/{p.name}",
            precision="fp32" if p.name.endswith(".static.onnx") else "int8",
            float_source=str(src.path),
        )
        for n, p in models.items()
        if n != src.path.name
    ]
    artifacts.append(ctx.artifact("deployment", "file", "deploy.json", model=best["name"], backend=best["backend"]))
    return StageResult(metrics=metrics, artifacts=artifacts)
