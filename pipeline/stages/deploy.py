"""deploy: the measured choice of what to ship. Every ONNX model of the run × every backend this
host has (onnxruntime; OpenVINO with the [openvino] extra) × each precision the backend offers is
timed side by side (one process, interleaved rounds) and scored on the test split through its own
session; the fastest candidate within `max_accuracy_drop` of the best fp32 model (a bf16/fp16 run
must also keep its own fp32 run's predictions) and inside the profile's latency and bytes budgets is
chosen. deploy/ then holds the chosen file and deploy.json
(model, backend, precision, threads, input contract, the whole candidate table), which
`edgepipe-runner --deployment deploy/deploy.json` runs as chosen."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.choice import choose, metric_name, not_at_chance, resolution_note


@dataclass(frozen=True)
class DeployConfig:
    models: tuple[str, ...] | None = None  # ONNX artifacts to choose from; null = all of them
    backends: tuple[str, ...] | None = None  # null = the profile's backends that are installed here
    profile: str | None = None  # whose budgets and threads; null = the detected one
    threads: int | None = None  # null = the run's bench stage's, else the profile's (capped to this host's CPUs)
    max_accuracy_drop: float = 1.0  # points below the best fp32 candidate (or of agreement, without labels)
    rounds: int = 5
    seconds: float = 0.3  # per candidate per round
    images: str | None = None  # images scored by the models' task (with a labels file, or none); null: test split
    task: str | None = None  # with images: the task (default: the one the model's metadata names)
    float_sources: bool = True  # the float ONNX files the run quantized from are candidates too
    budgets: dict | None = None  # {latency_p90_ms, model_bytes} instead of the profile's; {} = none

    uses_data = True

    def __post_init__(self):
        require(self.max_accuracy_drop >= 0, "max_accuracy_drop", "must be non-negative")
        require(self.rounds >= 1, "rounds", "must be at least 1")
        require(self.seconds > 0, "seconds", "must be positive")
        require(self.threads is None or self.threads >= 1, "threads", "must be at least 1")
        require(
            self.budgets is None or set(self.budgets) <= {"latency_p90_ms", "model_bytes"},
            "budgets",
            f"unknown key(s) {sorted(set(self.budgets or {}) - {'latency_p90_ms', 'model_bytes'})}; "
            "give latency_p90_ms and/or model_bytes",
        )
        for k, v in (self.budgets or {}).items():
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            require(ok, f"budgets.{k}", f"must be a positive number (ms for latency_p90_ms, bytes), not {v!r}")
        require(self.task is None or self.images is not None, "task", "give images: a folder to score the task on")
        if self.task is not None:
            from edgepipe.runtime.tasks.base import task_names

            require(self.task in task_names(), "task", f"choose one of {', '.join(task_names())}")
        require(
            self.backends is None or set(self.backends) <= {"onnxruntime", "openvino"},
            "backends",
            "choose from onnxruntime, openvino",
        )

    def files(self, base) -> dict:
        """The images folder (hashed into the stage's inputs, so edited labels rerun it)."""
        from edgepipe.pipeline.core.config import resolve_path

        if self.images is None:
            return {}
        path = resolve_path(base, self.images)
        if not path.is_dir():
            raise EdgepipeError(f"images: {path} is not a folder")
        return {"images": path}

    def names(self, available) -> list[str]:
        return list(self.models) if self.models is not None else [n for n, k in available.items() if k == "onnx"]

    def inputs(self, available) -> dict[str, str]:
        return {f"models[{i}]": n for i, n in enumerate(self.names(available))}

    def outputs(self) -> dict[str, str]:
        return {"deployment": "file"}


def backend_precisions(backends: tuple[str, ...] | None, profile=None) -> tuple[list[tuple[str, str]], list[str]]:
    """[(backend, precision)] to try — the backends named, else the profile's, else both — and a note
    per listed backend that cannot run here (a named one that cannot is an error)."""
    from edgepipe.runtime.model.backends import available

    out, notes = [], []
    listed = backends or (tuple(b.name for b in profile.backends) if profile else ("onnxruntime", "openvino"))
    for b in listed:
        ok, why = available(b)
        if not ok:
            if backends:
                raise EdgepipeError(f"deploy: backend {b}: {why}")
            notes.append(f"{b} not measured: {why}")
            continue
        if b == "onnxruntime":
            out.append((b, "auto"))
            continue
        from edgepipe.runtime.model.backends.openvino import load_openvino

        caps = load_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        out += [(b, "f32")] + [(b, p) for p, cap in (("bf16", "BF16"), ("f16", "FP16")) if cap in caps]
    return out, notes


def deploy(
    models: dict, x: np.ndarray | None, y: np.ndarray | None, cfg: DeployConfig, out_dir, task=None, notes=(), own=()
) -> dict:
    """Measure every candidate of `models` ({name: ONNX path}), choose, and write the chosen file and
    deploy.json into out_dir; returns deploy.json's content. Candidates are scored by top-1 on x (and
    labels y), or with `task` ({"name", "settings", "images", "contract"}) by the task's metric on a
    folder of images (runtime/tasks/evaluate.CandidateScores). `own` names the user's own models, which win
    a tie against the run's after a smaller file (choice.break_tie)."""
    from edgepipe.devices import detect_host
    from edgepipe.devices.base.atomic import write_json_atomic
    from edgepipe.devices.profiles import detect_profile, load_profile

    profile = load_profile(cfg.profile) if cfg.profile else detect_profile(detect_host())
    threads = min(cfg.threads or (profile.threads if profile else 1), os.cpu_count() or 1)
    if not models:
        raise EdgepipeError("deploy: the run has no ONNX model to choose from; export one first")
    pairs, left_out = backend_precisions(cfg.backends, profile)
    notes = [*notes, *left_out]
    cands = [
        {"id": f"{n}|{b}|{p}", "name": n, "model": str(path), "backend": b, "precision": p, "own": n in own}
        for n, path in models.items()
        for b, p in pairs
    ]
    print(
        f"  deploy: {len(cands)} candidates ({len(models)} models × {len(pairs)} backend/precision), "
        f"{cfg.rounds} interleaved rounds of {cfg.seconds:g} s each, {threads} thread(s)",
        file=sys.stderr,
    )
    measured = measure_candidates(cands, x, y, threads, cfg, task)
    not_at_chance(measured, y, task)
    budgets = cfg.budgets if cfg.budgets is not None else profile.to_dict()["budgets"] if profile else {}
    best, table = choose(measured, cfg.max_accuracy_drop, budgets)
    if task is None and y is None and all(c.get("predictions") is None for c in table):
        notes.append(
            "no labels, and the outputs are not one row of class scores per input: neither accuracy nor "
            "fidelity was checked, only speed and the budgets; give --inputs with labels y to check accuracy"
        )
    for c in table:
        c.pop("predictions", None)  # used for agreement; not part of the record
    if best is None:
        raise EdgepipeError(
            "deploy: no candidate keeps the accuracy and the budgets: "
            + "; ".join(f"{c['name']} on {c['backend']}: {', '.join(c['why_not'])}" for c in table[:4])
        )
    deployment = _shipped(models, best, table, cfg, Path(out_dir), notes) | {
        "threads": threads,
        "profile": profile.name if profile else None,
    }
    write_json_atomic(out_dir / "deploy.json", deployment)
    print(
        f"  deploy: chose {best['name']} on {best['backend']} ({best['ran']['precision']}), p50 {best['p50_ms']:.3f} ms"
        + (f", {metric_name(best)} {100 * best['accuracy']:.2f}%" if best["accuracy"] is not None else ""),
        file=sys.stderr,
    )
    return deployment


def _shipped(models: dict, best: dict, table: list[dict], cfg: DeployConfig, out_dir, notes: list[str]) -> dict:
    """The chosen file copied into out_dir (single-file models only) and deploy.json's record of it."""
    from edgepipe.runtime.deployment import SCHEMA
    from edgepipe.runtime.inputs.images import CONTRACT_KEY
    from edgepipe.runtime.model.modelfile import check_model_file

    src = Path(models[best["name"]])
    gate = check_model_file(src)
    if gate.external:
        raise EdgepipeError(f"deploy: {best['name']} keeps external data; deploy copies single-file models only")
    note = resolution_note(best, next((c for c in table if c["reference"]), None), cfg.max_accuracy_drop)
    if note:
        notes.append(note)
        print(f"  deploy: note: {note}", file=sys.stderr)
    shutil.copyfile(src, out_dir / best["name"])
    return {
        "schema": SCHEMA,
        "model": best["name"],
        "source": str(src),
        "backend": best["backend"],
        "precision": best["precision"],
        "ran": best["ran"],
        "input_contract": gate.metadata.get(CONTRACT_KEY),
        "accuracy": best["accuracy"],
        "metric": metric_name(best),
        **({"task": _task_record(best)} if best.get("task") else {}),
        "p50_ms": best["p50_ms"],
        "max_accuracy_drop": cfg.max_accuracy_drop,
        "candidates": table,
        "notes": notes,
    }


def _task_record(c: dict) -> dict:
    """The task deploy scored by, for deploy.json (the chosen candidate's own figures are in its row)."""
    t = c["task"]
    return {"name": t["task"], "metric": t["metric"], "against": t.get("against"), "samples": t.get("samples")}


def measure_candidates(cands: list[dict], x, y, threads: int, cfg: DeployConfig, task: dict | None = None):
    """Every candidate timed in interleaved rounds in one clean child process (runtime/measure/compare.py),
    on the inputs x (and labels y) written to a temporary .npz, or scored by `task` on its images."""
    from pathlib import Path

    from edgepipe.devices.base.atomic import temp_dir
    from edgepipe.devices.base.child import run_child

    with temp_dir("deploy") as tmp:
        if x is not None:
            np.savez(f"{tmp}/test.npz", x=x, **({"y": y} if y is not None else {}))
        spec = {
            "candidates": cands,
            "inputs": f"{tmp}/test.npz" if x is not None else None,
            "task": task,
            "threads": threads,
            "rounds": cfg.rounds,
            "seconds": cfg.seconds,
        }
        Path(f"{tmp}/spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "edgepipe.runtime.measure.compare", f"{tmp}/spec.json", f"{tmp}/out.json"]
        proc = run_child(cmd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgepipeError(f"deploy: measuring the candidates failed: {last}")
        return json.loads(Path(f"{tmp}/out.json").read_text())["candidates"]


def run_models(run_dir) -> tuple[dict, set]:
    """A finished run's ONNX artifacts and the user's float files they were quantized from, {name: path},
    and the names of the latter (the user's own models, as the deploy stage counts them)."""
    from edgepipe.pipeline.report.tables import load

    run_dir = Path(run_dir)
    arts = {n: a for s in load(run_dir)["stages"].values() for n, a in s.get("artifacts", {}).items()}
    models = {n: run_dir / a["path"] for n, a in arts.items() if a["kind"] == "onnx"}
    own = float_sources({n: arts[n].get("meta", {}) for n in models}, models)
    return models | own, set(own)


def deploy_to(models: dict, inputs, out, cfg: DeployConfig, task: dict | None = None, own=()) -> dict:
    """`edgepipe deploy`: the choice among `models` ({name: ONNX path}), scored on labelled inputs (an
    .npz of x, y; a run's saved test split) or by `task` on its folder of images, written to `out` all at
    once (a failure leaves no folder)."""
    from pathlib import Path

    from edgepipe.pipeline.core.run import swap_in
    from edgepipe.runtime.inputs.npzfile import load_npz

    out, x, y = Path(out), None, None
    if task is None:
        inputs = Path(inputs)
        if not inputs.is_file():
            raise EdgepipeError(
                f"{inputs}: test inputs not found; run the bench stage, give --inputs FILE.npz (x, y), "
                "or --images DIR to score by the task's metric"
            )
        arrays, y = load_npz(inputs)  # the runner's reader: numeric, finite, labels one integer per input
        if "x" not in arrays:
            raise EdgepipeError(f"{inputs}: not an .npz with an array x (and labels y)")
        x = arrays["x"]
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        d = deploy(models, x, y, cfg, tmp, task, own=own)
        swap_in(out.parent, tmp, out.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def with_run_threads(cfg: DeployConfig, ctx) -> DeployConfig:
    """One thread setting in a run: deploy without `threads` of its own times its candidates with the bench
    stage's (the same run's figures then compare), else with the profile's."""
    from dataclasses import replace

    if cfg.threads is not None:
        return cfg
    bench = [s.config for s in ctx.recipe.stages if s.kind == "bench"]
    return replace(cfg, threads=bench[0].threads) if bench else cfg


def float_sources(metas: dict, models: dict) -> dict:
    """{file name: path} of the user's float ONNX files the run's models were quantized from (their
    artifacts' `float_source`), so that what the user brought is always a candidate and nothing slower
    than it can be chosen."""
    from pathlib import Path

    out = {}
    for meta in metas.values():
        src = meta.get("float_source")
        if src and Path(src).is_file() and Path(src).name not in models and Path(src) not in out.values():
            out[Path(src).name] = Path(src)
    return out


def task_spec(images, contract, name: str | None = None, settings: dict | None = None) -> dict:
    """What deploy() scores candidates by on a folder of images: the task (None: the one the first model's
    metadata names), its settings, the folder, and the input contract its images are brought by."""
    return {
        "name": name,
        "settings": settings or {},
        "images": str(images),
        "contract": contract.to_json() if contract is not None else None,
    }


def chosen_record(best: dict) -> dict:
    """The chosen candidate as the deploy and optimize stages record it in their metrics."""
    keys = ("name", "backend", "precision", "p50_ms", "p90_ms", "accuracy", "bytes")
    return {k: best[k] for k in keys} | {"metric": metric_name(best), "ran_precision": best["ran"]["precision"]}


@register_stage("deploy", DeployConfig)
def run_deploy(cfg: DeployConfig, ctx) -> StageResult:
    """The fastest model × backend × precision that keeps the accuracy and the budgets, measured here."""
    names = cfg.names({n: a.kind for n, a in ctx.artifacts.items()})
    models = {n: ctx.path_of(n) for n in names}
    cfg = with_run_threads(cfg, ctx)
    own = float_sources({n: ctx.artifacts[n].meta for n in names}, models) if cfg.float_sources else {}
    models |= own
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.images is not None:
        from edgepipe.runtime.inputs.feeds import model_contract
        from edgepipe.runtime.model.session import open_session

        contract = model_contract(open_session(next(iter(models.values()))))
        task = task_spec(cfg.files(ctx.base)["images"], contract, cfg.task)
        d = deploy(models, None, None, cfg, ctx.out_dir, task, own=set(own))
    elif ctx.data.task == "detect":  # the test split as a folder the detect task reads, kept with the run
        from edgepipe.pipeline.data.detframes import write_split
        from edgepipe.runtime.inputs.feeds import model_contract
        from edgepipe.runtime.model.session import open_session

        folder = write_split(ctx.data, "test", ctx.out("test_frames"))
        contract = model_contract(open_session(next(iter(models.values()))))
        task = task_spec(folder, contract, "detect") | {"what": "the test split"}
        d = deploy(models, None, None, cfg, ctx.out_dir, task, own=set(own))
    else:
        x, y = ctx.data.split("test")
        d = deploy(models, x, y, cfg, ctx.out_dir, own=set(own))
    best = next(c for c in d["candidates"] if c["chosen"])
    return StageResult(
        metrics={
            "chosen": chosen_record(best),
            "threads": d["threads"],
            "profile": d["profile"],
            "candidates": d["candidates"],
            "notes": d["notes"],
        },
        artifacts=[
            ctx.artifact(
                "deployment",
                "file",
                "deploy.json",
                model=best["name"],
                backend=best["backend"],
                precision=best["ran"]["precision"],
            )
        ],
    )
