"""distill: knowledge distillation into a student, in one of three modes, over one or more seeds.

- offline: a trained teacher's soft targets (T²·KL + α-mixed CE), optional feature hints
  (named teacher layer ← named student layer through a learned adapter), teacher logits
  optionally cached on disk (keyed by the teacher's hash);
- online: deep mutual learning — `peers` copies of the student trained together, each taught by
  the others' softened predictions, no pre-trained teacher; `keep` picks the one saved;
- self: born-again networks — generation 0 is the student trained on labels alone, generation g
  is a fresh student distilled from generation g−1; the last generation is saved.

With `seeds: [0, 1, 2]` every mode (and the from-scratch baseline) is trained once per seed;
metrics carry each seed's test accuracy and mean ± std, the saved models are the first seed's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgepipe.pipeline.core.artifact import count_parameters, save_model
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.models.sources import LAYER_SOURCES, ModelSource, ModelSpec
from edgepipe.pipeline.stages.finetune import check_teacher
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, load_ref, record, ref_inputs
from edgepipe.pipeline.stages.train import train_model

MODE_LABELS = {
    "offline": "offline KD",
    "online": "online KD (deep mutual learning)",
    "self": "self-distillation (born-again)",
}


@dataclass(frozen=True)
class FeatureHintConfig:
    teacher_layer: str = "fc1"
    student_layer: str = "fc1"
    weight: float = 0.1

    def __post_init__(self):
        require(self.weight >= 0, "weight", "must be non-negative")


@dataclass(frozen=True)
class DistillConfig(TakesModels):
    mode: Literal["offline", "online", "self"] = "offline"
    teacher: ModelRef | None = None  # offline: the artifact (or model source) to distil from
    student: ModelSource = field(default_factory=lambda: ModelSpec(conv=(16, 32), fc=(128,)))
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target term; 1 - alpha goes to hard-label CE
    features: tuple[FeatureHintConfig, ...] = ()  # offline: feature (hint) pairs
    cache_teacher_logits: bool = False  # offline: precompute the teacher's logits once (needs augment_shift 0)
    peers: int = 2  # online: networks trained together
    keep: int | Literal["best"] = "best"  # online: which peer is saved (best = highest val accuracy)
    generations: int = 2  # self: born-again generations after generation 0
    seeds: tuple[int, ...] = ()  # default: the recipe's seed
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.002
    augment_shift: int = 2
    output: str = "student"
    label: str | None = None  # default: "student (<mode>)"
    baseline: str | None = "student_scratch"  # also train the student without a teacher; null to skip

    uses_data = True
    trains = True  # every rank runs it under `edgepipe run --nproc` (core/distributed.py)

    def __post_init__(self):
        require(self.temperature > 0, "temperature", "must be positive")
        require(0.0 <= self.alpha <= 1.0, "alpha", "must be between 0 and 1")
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(self.baseline != self.output, "baseline", "must differ from output")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat")
        if self.mode == "offline":
            require(
                self.teacher is not None, "teacher", "mode offline needs teacher: the trained artifact to distil from"
            )
        else:
            require(
                self.teacher is None,
                "teacher",
                f"mode {self.mode} trains without a pre-trained teacher; remove teacher:",
            )
            require(not self.features, "features", "feature hints need a teacher (mode offline)")
            require(not self.cache_teacher_logits, "cache_teacher_logits", "only mode offline has a teacher to cache")
        require(
            not self.cache_teacher_logits or self.augment_shift == 0,
            "cache_teacher_logits",
            "cached logits are for the unshifted images; set augment_shift: 0",
        )
        require(self.peers >= 2, "peers", "mutual learning needs at least 2 peers")
        require(
            self.keep == "best" or 0 <= self.keep < self.peers,
            "keep",
            f"must be 'best' or a peer index below {self.peers}",
        )
        require(self.generations >= 1, "generations", "must be at least 1")
        require(
            isinstance(self.student, LAYER_SOURCES),
            "student",
            "a saved graph (inference:, onnx:) cannot be trained; give its family:, zoo: or python: source",
        )
        check_teacher(self.teacher)

    def inputs(self, available) -> dict[str, str]:
        return ref_inputs("teacher", self.teacher) if self.teacher else {}

    def model_refs(self) -> dict:
        return {"student": self.student, **({"teacher": self.teacher} if self.teacher else {})}

    def outputs(self) -> dict[str, str]:
        out = {self.output: "paddle"}
        if self.baseline:
            out[self.baseline] = "paddle"
        return out


def source_fingerprint(source, files: dict) -> str:
    """What identifies a teacher given as a source: its whole mapping (pretrained: included) and the
    sha256 of the files it reads (weights, its module)."""
    import hashlib
    import json

    from edgepipe.pipeline.core.config import to_dict
    from edgepipe.pipeline.core.manifest import tree_sha

    blob = json.dumps(to_dict(source), sort_keys=True) + "".join(
        tree_sha(p) for k, p in sorted(files.items()) if k.startswith("teacher")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _stats(values: list[float]) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {
        "per_seed": [float(v) for v in a],
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
    }


@dataclass
class _Shared:
    """What every seed of one distill stage shares, and how it trains a student."""

    cfg: DistillConfig
    ctx: object
    extra: dict = field(default_factory=dict)  # stage metrics a strategy adds (teacher_cache, feature_hints)
    teacher: object = None  # offline: the frozen teacher
    cached: object = None  # offline: its logits on the training split, when cached
    teacher_label: str | None = None

    def train(self, seed: int, desc: str, **loss):
        cfg = self.cfg
        return train_model(
            cfg.student,
            self.ctx.data,
            base=self.ctx.base,
            seed=seed,
            desc=desc,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            augment_shift=cfg.augment_shift,
            **loss,
        )


def _load_teacher(s: _Shared) -> None:
    """Offline: the teacher, frozen, and its cached logits on the training split when asked for."""
    from edgepipe.pipeline.compress.distill import cached_teacher_logits, freeze

    cfg, ctx = s.cfg, s.ctx
    layer, info, s.teacher_label = load_ref(ctx, cfg.teacher, "distill")
    s.teacher = freeze(layer)
    if cfg.cache_teacher_logits:
        ident = (
            ctx.path_of(cfg.teacher)
            if isinstance(cfg.teacher, str)
            else source_fingerprint(cfg.teacher, cfg.files(ctx.base))
        )
        s.cached, s.extra["teacher_cache"] = cached_teacher_logits(
            s.teacher, ident, ctx.data.split("train")[0], ctx.data.fingerprint()
        )


def _offline(s: _Shared, seed: int, base) -> tuple:
    """Soft targets of the teacher (T²·KL + α-mixed CE), plus the feature hints' losses."""
    import paddle

    from edgepipe.pipeline.compress.distill import FeatureHint, soft_target_loss

    cfg, teacher, cached, hints = s.cfg, s.teacher, s.cached, []

    def make_loss(student):
        soft = soft_target_loss(teacher, cfg.temperature, cfg.alpha, cached)
        probe = paddle.to_tensor(s.ctx.data.split("val")[0][:2])
        hints[:] = [
            FeatureHint(teacher, student, f.teacher_layer, f.student_layer, probe, index=k)
            for k, f in enumerate(cfg.features)
        ]
        s.extra["feature_hints"] = [h.shapes for h in hints]

        def loss(logits, xb, yb, idx):
            value = soft(logits, xb, yb, idx)
            if hints:
                if cached is not None:  # the hooks need the teacher's forward pass on this batch
                    with paddle.no_grad():
                        teacher(xb)
                value = value + sum(f.weight * h.loss() for f, h in zip(cfg.features, hints))
            return value

        return loss, [p for h in hints for p in h.adapter.parameters()] or None

    model, hist, acc = s.train(seed, f"{cfg.output} seed {seed}", make_loss=make_loss)
    for h in hints:  # the teacher is shared by every seed
        h.remove()
    return model, hist, acc, {}


def _online(s: _Shared, seed: int, base) -> tuple:
    """Deep mutual learning: `peers` students trained together; `keep` picks the one returned."""
    from edgepipe.pipeline.compress.distill import build_cohort, mutual_loss
    from edgepipe.pipeline.models.load import load_source
    from edgepipe.pipeline.training import evaluate, fit, seed_everything

    cfg, data = s.cfg, s.ctx.data
    rng = seed_everything(seed)
    peers = [
        load_source(cfg.student, s.ctx.base, technique="distill", name_prefix=f"peer{k}_") for k in range(cfg.peers)
    ]
    cohort = build_cohort(peers, keep=0 if cfg.keep == "best" else cfg.keep)
    x, y = data.split("train")
    hist = fit(
        cohort,
        x,
        y,
        rng=rng,
        loss_fn=mutual_loss(cohort, cfg.temperature, cfg.alpha),
        desc=f"{cfg.output} dml seed {seed}",
        val=data.split("val"),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        augment=data.augmenter(cfg.augment_shift),
    )
    val = [evaluate(p, *data.split("val")) for p in peers]
    test = [evaluate(p, *data.split("test")) for p in peers]
    k = max(range(cfg.peers), key=lambda i: val[i]) if cfg.keep == "best" else cfg.keep
    return peers[k], hist, test[k], {"peers_test_acc": test, "peers_val_acc": val, "kept": k}


def _self(s: _Shared, seed: int, base) -> tuple:
    """Born-again networks: generation g is a fresh student distilled from generation g−1. Generation 0
    is exactly the baseline's recipe (labels only, this seed), so the baseline is reused when there is one."""
    from edgepipe.pipeline.compress.distill import freeze, soft_target_loss

    cfg = s.cfg
    prev, hist, acc = base if base is not None else s.train(seed, f"{cfg.output} gen 0 seed {seed}")
    accs = [acc]
    for g in range(1, cfg.generations + 1):
        soft = soft_target_loss(freeze(prev), cfg.temperature, cfg.alpha)
        # a fresh initialisation per generation: seed + 1000·g
        prev, hist, acc = s.train(seed + 1000 * g, f"{cfg.output} gen {g} seed {seed}", loss_fn=soft)
        accs.append(acc)
    return prev, hist, acc, {"generations_test_acc": accs}


# mode -> strategy(shared, seed, the baseline trained for this seed or None) -> (model, history, test acc, metrics)
STRATEGIES = {"offline": _offline, "online": _online, "self": _self}


@register_stage("distill", DistillConfig)
def run_distill(cfg: DistillConfig, ctx) -> StageResult:
    """Offline KD (soft targets, feature hints, cached logits), online DML or born-again self-distillation."""
    s = _Shared(cfg, ctx)
    seeds = list(cfg.seeds) or [ctx.recipe.seed]
    label = (
        cfg.label
        or {"offline": "student (distilled)", "online": "student (DML)", "self": "student (born-again)"}[cfg.mode]
    )
    if cfg.mode == "offline":
        _load_teacher(s)
    results, baselines = [], []
    for seed in seeds:
        base = None
        if cfg.baseline:
            base = s.train(seed, f"{cfg.baseline} seed {seed}")
            baselines.append(base)
        results.append(STRATEGIES[cfg.mode](s, seed, base))

    model, hist, acc, _ = results[0]
    params = count_parameters(model)
    meta = {"label": label, "mode": cfg.mode}
    if cfg.teacher:
        meta["teacher"] = s.teacher_label
    save_model(ctx.out(cfg.output), model, meta=meta, **record(ctx, cfg.student))
    student = {
        "test_acc": acc,
        "val_acc": hist[-1]["val_acc"],
        "params": params,
        "history": hist,
        **_stats([r[2] for r in results]),
    }
    for key in {k for r in results for k in r[3]}:
        student[key] = [r[3][key] for r in results]
    fid = {}
    if s.teacher is not None:  # the student's outputs against its teacher's, on the test split
        from edgepipe.pipeline.training import predict_logits
        from edgepipe.runtime.judge.fidelity import fidelity

        x_test = ctx.data.split("test")[0]
        student["fidelity"] = fid["fidelity"] = fidelity(
            predict_logits(s.teacher, x_test), predict_logits(model, x_test)
        )
    metrics = {"mode": cfg.mode, "seeds": seeds, "student": student, **s.extra}
    arts = [ctx.artifact(cfg.output, "paddle", cfg.output, label=label, paddle_test_acc=acc, params=params, **fid)]
    if cfg.baseline:
        bmodel, bhist, bacc = baselines[0]
        save_model(ctx.out(cfg.baseline), bmodel, meta={"label": "student (from scratch)"}, **record(ctx, cfg.student))
        metrics["baseline"] = {
            "test_acc": bacc,
            "val_acc": bhist[-1]["val_acc"],
            "params": params,
            "history": bhist,
            **_stats([b[2] for b in baselines]),
        }
        arts.append(
            ctx.artifact(
                cfg.baseline,
                "paddle",
                cfg.baseline,
                label="student (from scratch)",
                paddle_test_acc=bacc,
                params=params,
            )
        )
    return StageResult(metrics=metrics, artifacts=arts)
