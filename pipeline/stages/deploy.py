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
import math
import os
import shutil
import sys
from dataclasses import dataclass

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult

FLOAT = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class DeployConfig:
    models: tuple[str, ...] | None = None  # ONNX artifacts to choose from; null = all of them
    backends: tuple[str, ...] | None = None  # null = the profile's backends that are installed here
    profile: str | None = None  # whose budgets and threads; null = the detected one
    threads: int | None = None  # null = the profile's (capped to this host's CPUs)
    max_accuracy_drop: float = 1.0  # points below the best fp32 candidate (or of agreement, without labels)
    rounds: int = 5
    seconds: float = 0.3  # per candidate per round

    uses_data = True

    def __post_init__(self):
        require(self.max_accuracy_drop >= 0, "max_accuracy_drop", "must be non-negative")
        require(self.rounds >= 1, "rounds", "must be at least 1")
        require(self.seconds > 0, "seconds", "must be positive")
        require(self.threads is None or self.threads >= 1, "threads", "must be at least 1")
        require(
            self.backends is None or set(self.backends) <= {"onnxruntime", "openvino"},
            "backends",
            "choose from onnxruntime, openvino",
        )

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


def _agreement(a: dict, b: dict) -> float | None:
    pa, pb = a.get("predictions"), b.get("predictions")
    return None if pa is None or pb is None or len(pa) != len(pb) else float(np.mean(np.asarray(pa) == np.asarray(pb)))


def _fidelity(c: dict, base: dict, max_drop: float) -> tuple[float | None, str | None]:
    """c's top-1 agreement with base and what is wrong with it: "missing" (base has predictions, c
    none to compare), "changed" (too_many_flips), or None."""
    agree = _agreement(c, base)
    if base.get("predictions") is None:
        return agree, None
    if agree is None:
        return None, "missing"
    return agree, "changed" if too_many_flips(agree, len(base["predictions"]), max_drop) else None


def too_many_flips(agreement: float, n: int, max_drop: float) -> bool:
    """Whether a run changed significantly more than max_drop % of n top-1 predictions: a one-sided
    binomial test at 5% (P(X ≥ k) with k the changed ones, X ~ Binomial(n, max_drop / 100)). So on
    128 inputs with a 1-point margin 4 changes fail and 3 pass; on 1,000, 16 fail."""
    k, p = round((1 - agreement) * n), max_drop / 100
    if k == 0:
        return False
    if p <= 0:
        return True
    logs = (
        [
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
            for i in range(k, n + 1)
        ]
        if p < 1
        else [0.0]
    )
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs)) < math.log(0.05)


def reference(cands: list[dict]) -> dict | None:
    """What the accuracy floor is measured from: the most accurate candidate that ran in fp32 (bf16 and
    fp16 runs approximate a float model, so a lucky one must not raise the bar; only when no candidate
    ran in fp32, the most accurate float one, then the most accurate of all); without labels, the
    first of those (the run's first model), whose predictions the others must keep."""
    for pool in (
        [c for c in cands if c["ran"]["precision"] == "fp32"],
        [c for c in cands if c["ran"]["precision"] in FLOAT],
        cands,
    ):
        if pool:
            scored = [c for c in pool if c["accuracy"] is not None]
            return max(scored, key=lambda c: c["accuracy"]) if scored else pool[0]
    return None


def choose(cands: list[dict], max_drop: float, budgets: dict) -> tuple[dict | None, list[dict]]:
    """Mark each candidate with why it lost (or that it won) and return the winner: the accuracy floor
    (the reference's accuracy − max_drop; without labels, top-1 agreement with the reference), a
    bf16/fp16 run that changes its own fp32 run's predictions (the same backend's, else any), each
    judged by too_many_flips; the latency (p90) and bytes budgets; then the fastest, by each
    candidate's p50 over the reference's in the same rounds (paired, so drift that slows a round
    cancels)."""
    ref = reference(cands)
    floor = None if ref is None or ref["accuracy"] is None else ref["accuracy"] - max_drop / 100
    what = "" if ref is None else f"{ref['name']} on {ref['backend']} ({ref['ran']['precision']})"
    own_fp32 = {}
    for c in cands:
        if c["ran"]["precision"] == "fp32":
            own_fp32.setdefault((c["name"], c["backend"]), c)
            own_fp32.setdefault(c["name"], c)
    for c in cands:
        why = []
        agree = c["agreement_with_reference"] = None if ref is None else _agreement(c, ref)
        if floor is not None and c["accuracy"] is None:
            why.append("no accuracy was measured for it")
        elif floor is not None and c["accuracy"] < floor - 1e-9:
            why.append(f"accuracy {100 * c['accuracy']:.2f}% is below {100 * floor:.2f}% ({what} − {max_drop:g} pt)")
        if floor is None and ref is not None and c is not ref:
            _, problem = _fidelity(c, ref, max_drop)
            if problem == "missing":
                why.append("no predictions to compare with the reference's (no labels: fidelity is the floor)")
            elif problem == "changed":
                why.append(
                    f"agrees with {what} on {100 * agree:.1f}% of the inputs: more changes than {max_drop:g}% "
                    "allows (no labels: fidelity is the floor)"
                )
        base = own_fp32.get((c["name"], c["backend"])) or own_fp32.get(c["name"])
        if base is not None and c["ran"]["precision"] in ("bf16", "fp16"):
            own, problem = _fidelity(c, base, max_drop)
            if problem == "missing":
                why.append("no predictions to compare with this file's fp32 run's")
            elif problem == "changed":
                why.append(
                    f"{c['ran']['precision']} changes the predictions: agrees with this file's fp32 run on "
                    f"{base['backend']} on {100 * own:.1f}% of the inputs, more changes than {max_drop:g}% allows"
                )
        if budgets.get("latency_p90_ms") and c["p90_ms"] > budgets["latency_p90_ms"]:
            why.append(f"p90 {c['p90_ms']:.3f} ms over the {budgets['latency_p90_ms']:g} ms budget")
        if budgets.get("model_bytes") and c["bytes"] > budgets["model_bytes"]:
            why.append(f"{c['bytes']:,} bytes over the {budgets['model_bytes']:,} budget")
        c["eligible"], c["why_not"] = not why, why
    for c in cands:
        c["time_vs_reference"] = None if ref is None else time_ratio(c, ref)
    ok = sorted((c for c in cands if c["eligible"]), key=lambda c: (c["time_vs_reference"], c["bytes"]))
    best = ok[0] if ok else None
    for c in cands:
        c["chosen"], c["reference"] = c is best, c is ref
        if best is not None and c["eligible"] and c is not best:  # the ranking's own figures, so the two always agree
            c["why_not"] = [f"slower: p50 ×{c['time_vs_reference'] / best['time_vs_reference']:.2f} of the chosen one"]
    return best, cands


def time_ratio(a: dict, b: dict) -> float:
    """a's p50 over b's, paired round by round when both were timed in the same rounds (runtime/measure/compare.py)."""
    from edgepipe.runtime.measure.compare import paired_ratio

    ra, rb = a.get("p50_rounds_ms"), b.get("p50_rounds_ms")
    return paired_ratio(ra, rb) if ra and rb and len(ra) == len(rb) else a["p50_ms"] / b["p50_ms"]


def resolution_note(best: dict, ref: dict | None, max_drop: float) -> str | None:
    """A note when the test inputs are too few to hold the budget for the chosen candidate: the
    standard error of its paired accuracy difference from the reference is at most sqrt(d / n), with
    d the fraction of inputs on which the two disagree."""
    n, agree = best.get("accuracy_samples"), best.get("agreement_with_reference")
    if ref is None or best is ref or not n or agree is None or best["accuracy"] is None:
        return None
    se = 100 * float(np.sqrt((1 - agree) / n))
    if 2 * se <= max_drop:
        return None
    diff = 100 * (best["accuracy"] - ref["accuracy"])
    return (
        f"the chosen model's accuracy {'gain' if diff > 0 else 'drop'} against {ref['name']} "
        f"({diff:+.2f} pt) is measured "
        f"on {n} inputs, on {round((1 - agree) * n)} of which the two disagree: known to about ±{2 * se:.1f} pt, wider "
        f"than the {max_drop:g} pt budget; more test inputs would resolve it"
    )


def deploy(models: dict, x: np.ndarray, y: np.ndarray | None, cfg: DeployConfig, out_dir) -> dict:
    """Measure every candidate of `models` ({name: ONNX path}), choose, and write the chosen file and
    deploy.json into out_dir; returns deploy.json's content."""
    from pathlib import Path

    from edgepipe.devices import detect_host
    from edgepipe.devices.base.atomic import write_json_atomic
    from edgepipe.devices.profiles import detect_profile, load_profile
    from edgepipe.runtime.deployment import SCHEMA
    from edgepipe.runtime.inputs.images import CONTRACT_KEY
    from edgepipe.runtime.model.modelfile import check_model_file

    profile = load_profile(cfg.profile) if cfg.profile else detect_profile(detect_host())
    threads = min(cfg.threads or (profile.threads if profile else 1), os.cpu_count() or 1)
    if not models:
        raise EdgepipeError("deploy: the run has no ONNX model to choose from; export one first")
    pairs, notes = backend_precisions(cfg.backends, profile)
    cands = [
        {"id": f"{n}|{b}|{p}", "name": n, "model": str(path), "backend": b, "precision": p}
        for n, path in models.items()
        for b, p in pairs
    ]
    print(
        f"  deploy: {len(cands)} candidates ({len(models)} models × {len(pairs)} backend/precision), "
        f"{cfg.rounds} interleaved rounds of {cfg.seconds:g} s each, {threads} thread(s)",
        file=sys.stderr,
    )
    measured = measure_candidates(cands, x, y, threads, cfg)
    budgets = profile.to_dict()["budgets"] if profile else {}
    best, table = choose(measured, cfg.max_accuracy_drop, budgets)
    if y is None and all(c.get("predictions") is None for c in table):
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
    src = Path(models[best["name"]])
    gate = check_model_file(src)
    if gate.external:
        raise EdgepipeError(f"deploy: {best['name']} keeps external data; deploy copies single-file models only")
    note = resolution_note(best, next((c for c in table if c["reference"]), None), cfg.max_accuracy_drop)
    if note:
        notes.append(note)
        print(f"  deploy: note: {note}", file=sys.stderr)
    out_dir = Path(out_dir)
    shutil.copyfile(src, out_dir / best["name"])
    deployment = {
        "schema": SCHEMA,
        "model": best["name"],
        "source": str(src),
        "backend": best["backend"],
        "precision": best["precision"],
        "ran": best["ran"],
        "threads": threads,
        "profile": profile.name if profile else None,
        "input_contract": gate.metadata.get(CONTRACT_KEY),
        "accuracy": best["accuracy"],
        "p50_ms": best["p50_ms"],
        "max_accuracy_drop": cfg.max_accuracy_drop,
        "candidates": table,
        "notes": notes,
    }
    write_json_atomic(out_dir / "deploy.json", deployment)
    print(
        f"  deploy: chose {best['name']} on {best['backend']} ({best['ran']['precision']}), p50 {best['p50_ms']:.3f} ms"
        + (f", accuracy {100 * best['accuracy']:.2f}%" if best["accuracy"] is not None else ""),
        file=sys.stderr,
    )
    return deployment


def measure_candidates(cands: list[dict], x: np.ndarray, y: np.ndarray | None, threads: int, cfg: DeployConfig):
    """Every candidate timed in interleaved rounds in one clean child process (runtime/measure/compare.py),
    on the inputs x (and labels y) written to a temporary .npz."""
    from pathlib import Path

    from edgepipe.devices.base.atomic import temp_dir
    from edgepipe.devices.base.child import run_child

    with temp_dir("deploy") as tmp:
        np.savez(f"{tmp}/test.npz", x=x, **({"y": y} if y is not None else {}))
        spec = {
            "candidates": cands,
            "inputs": f"{tmp}/test.npz",
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


def deploy_finished_run(run_dir, inputs, out, cfg: DeployConfig) -> dict:
    """`edgepipe deploy RUN_DIR`: the same choice among a finished run's ONNX files, on its saved test
    split (or the inputs given), written to `out` all at once (a failure leaves no folder)."""
    from pathlib import Path

    from edgepipe.pipeline.core.run import swap_in
    from edgepipe.pipeline.report.tables import load
    from edgepipe.runtime.inputs.npzfile import load_npz

    run_dir, inputs, out = Path(run_dir), Path(inputs), Path(out)
    models = {
        n: run_dir / a["path"]
        for s in load(run_dir)["stages"].values()
        for n, a in s.get("artifacts", {}).items()
        if a["kind"] == "onnx"
    }
    if not inputs.is_file():
        raise EdgepipeError(f"{inputs}: test inputs not found; run the bench stage or give --inputs FILE.npz (x, y)")
    arrays, y = load_npz(inputs)  # the runner's reader: numeric, finite, labels one integer per input
    if "x" not in arrays:
        raise EdgepipeError(f"{inputs}: not an .npz with an array x (and labels y)")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        d = deploy(models, arrays["x"], y, cfg, tmp)
        swap_in(out.parent, tmp, out.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


@register_stage("deploy", DeployConfig)
def run_deploy(cfg: DeployConfig, ctx) -> StageResult:
    """The fastest model × backend × precision that keeps the accuracy and the budgets, measured here."""
    names = cfg.names({n: a.kind for n, a in ctx.artifacts.items()})
    x, y = ctx.data.split("test")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    d = deploy({n: ctx.path_of(n) for n in names}, x, y, cfg, ctx.out_dir)
    best = next(c for c in d["candidates"] if c["chosen"])
    return StageResult(
        metrics={
            "chosen": {k: best[k] for k in ("name", "backend", "precision", "p50_ms", "p90_ms", "accuracy", "bytes")}
            | {"ran_precision": best["ran"]["precision"]},
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
