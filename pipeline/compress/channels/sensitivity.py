"""Sensitivity analysis for structured pruning, and per-group ratios chosen from it.

For every channel group a rule may prune (channels/prune.py), the group alone is cut at
each ratio of a list and the cut copy is evaluated on the validation split — the curve says how
much accuracy that group costs to thin. `allocate` then walks greedily from the unpruned model,
each step thinning the group whose next ratio loses the least predicted accuracy per MAC (or
parameter) saved, until a target share of parameters, MACs or measured latency is met. The
predicted loss of a combination is the sum of its groups' losses measured alone (groups interact,
so fine-tuning afterwards still matters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import temp_dir
from edgepipe.pipeline.compress.channels.cut import changes_for, cut_copy
from edgepipe.pipeline.compress.channels.graph import Graph, trace
from edgepipe.pipeline.compress.channels.importance import channel_scores
from edgepipe.pipeline.compress.channels.prune import (
    ChannelRule,
    Target,
    candidates,
    keep_count,
    resolved,
    scorer_stats,
    step_of,
    top_channels,
)
from edgepipe.pipeline.core.config import require

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Sensitivity:
    ratios: tuple[float, ...] = DEFAULT_RATIOS  # ratios each group is cut at, alone
    samples: int = 0  # validation samples evaluated; 0 = the whole split
    plot: bool = True  # draw sensitivity.png beside sensitivity.json

    def __post_init__(self):
        require(len(self.ratios) >= 1, "ratios", "give at least one ratio")
        require(all(0.0 < r < 1.0 for r in self.ratios), "ratios", "each must be in (0, 1)")
        require(list(self.ratios) == sorted(set(self.ratios)), "ratios", "list them in increasing order, once each")
        require(self.samples >= 0, "samples", "must be 0 (the whole split) or more")


def geometry(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions (H·W, or 1 for Linear) of every Conv2D and Linear layer, from one forward."""
    import paddle.nn as nn

    from edgepipe.pipeline.models.layers import probe_forward

    hw: dict[str, int] = {}
    probe_forward(
        model,
        input_shape,
        {
            layer: lambda lay, inp, out, name=name: hw.__setitem__(
                name, int(np.prod(out.shape[2:])) if len(out.shape) == 4 else 1
            )
            for name, layer in model.named_sublayers()
            if isinstance(layer, (nn.Conv2D, nn.Linear))
        },
    )
    return hw


def estimate(model, hw: dict[str, int], changes: dict[str, dict]) -> tuple[int, int]:
    """(parameters, MACs of Conv2D and Linear layers) of `model` once `changes` are cut — counted
    from the shapes, without cutting anything."""
    import paddle.nn as nn

    params, macs = 0, 0
    for name, layer in model.named_sublayers(include_self=True):
        own = list(layer.parameters(include_sublayers=False))
        c = changes.get(name, {})
        if isinstance(layer, nn.Conv2D):
            out_c, in_g = layer.weight.shape[0], layer.weight.shape[1]
            k = int(np.prod(layer.weight.shape[2:]))
            if "depthwise" in c:  # depthwise or grouped: each output channel still reads weight.shape[1] inputs
                out_c = len(c["depthwise"])
            else:
                out_c = len(c["out"]) if "out" in c else out_c
                in_g = len(c["in"]) if "in" in c else in_g
            w = out_c * in_g * k
            params += w + (out_c if layer.bias is not None else 0)
            macs += w * hw.get(name, 0)
        elif isinstance(layer, nn.Linear):
            n_in = len(c["in"]) if "in" in c else layer.weight.shape[0]
            n_out = len(c["out"]) if "out" in c else layer.weight.shape[1]
            params += n_in * n_out + (n_out if layer.bias is not None else 0)
            macs += n_in * n_out
        elif "channels" in c:
            params += len(own) * len(c["channels"])  # BatchNorm: scale and shift per channel
        else:
            params += sum(int(p.size) for p in own)
    return params, macs


def _top(g: Graph, root: int, keep: int, scores: dict) -> np.ndarray:
    return top_channels(g, root, keep, scores[root])


def analyse(
    model, input_shape, rule: ChannelRule, sens: Sensitivity, val: tuple, train: tuple | None = None, progress=None
) -> tuple[dict, Graph, dict]:
    """Accuracy on `val` with each prunable group cut alone at each ratio. Returns (the result
    document, the graph, {"scores": per group root, "hw": layer geometry, "stats": the criterion's
    activation statistics or None})."""
    from edgepipe.pipeline.training import evaluate

    rule = resolved(rule)
    x, y = val
    if sens.samples:
        x, y = x[: sens.samples], y[: sens.samples]
    if len(x) == 0:
        raise EdgepipeError("sensitivity: the validation split is empty; give the recipe's data a val: count")
    g = trace(model, input_shape)
    roots, rows = candidates(g, rule)
    if not roots:
        raise EdgepipeError(
            "sensitivity: no channel group can be pruned ("
            + "; ".join(f"{', '.join(r['group'])}: {r['skip']}" for r in rows if "skip" in r)
            + ")"
        )
    stats = scorer_stats(model, g, rule, train)
    scores = {r: channel_scores(g, r, rule.criterion, stats) for r in roots}
    hw = geometry(model, input_shape)
    base_params, base_macs = estimate(model, hw, {})
    base_acc = evaluate(model, x, y)
    groups = []
    todo = [(root, ratio) for root in roots for ratio in sens.ratios]
    points: dict[int, list] = {root: [] for root in roots}
    for i, (root, ratio) in enumerate(todo):
        size = g.spaces[root].size
        keep = keep_count(size, ratio, step_of(g, root, rule.round_to))
        if keep < size:
            changes = changes_for(g, {root: _top(g, root, keep, scores)})
            cut = cut_copy(model, changes)
            acc = evaluate(cut, x, y)
            params, macs = estimate(model, hw, changes)
        else:
            acc, params, macs = base_acc, base_params, base_macs
        points[root].append({"ratio": ratio, "kept": keep, "accuracy": acc, "params": params, "macs": macs})
        if progress:
            progress(i + 1, len(todo))
    for root, row in zip(roots, [r for r in rows if "skip" not in r]):
        groups.append({**row, "root": root, "points": points[root]})
    doc = {
        "criterion": rule.criterion,
        "round_to": rule.round_to,
        "ratios": list(sens.ratios),
        "val_samples": len(x),
        "baseline": {"accuracy": base_acc, "params": base_params, "macs": base_macs},
        "groups": groups,
        "frozen": [r for r in rows if "skip" in r],
    }
    return doc, g, {"scores": scores, "hw": hw, "stats": stats}


def allocate(model, doc: dict, g: Graph, aux: dict, target: Target, rule: ChannelRule, measure=None) -> dict:
    """Per-group ratios (group root -> ratio) meeting `target` with the least predicted accuracy
    loss, found greedily along the sensitivity curves; `measure(ratios) -> p50 ms` is needed for a
    latency target. Returns {"ratios", "predicted_loss", "params", "macs", "steps", ...}."""
    base = doc["baseline"]
    curves = {grp["root"]: grp["points"] for grp in doc["groups"]}
    level = {root: -1 for root in curves}  # index into the ratio list; -1 = not pruned

    def loss(root, lvl):
        return 0.0 if lvl < 0 else max(0.0, base["accuracy"] - curves[root][lvl]["accuracy"])

    def cost(levels):
        kept = {
            r: _top(g, r, curves[r][lv]["kept"], aux["scores"])
            for r, lv in levels.items()
            if lv >= 0 and curves[r][lv]["kept"] < g.spaces[r].size
        }
        params, macs = estimate(model, aux["hw"], changes_for(g, kept))
        return {"params": params, "macs": macs}

    axis = "params" if target.kind == "params" else "macs"  # latency follows the MAC path, then is measured
    now = cost(level)
    path = [(dict(level), now)]
    while True:
        if target.kind != "latency" and now[axis] <= target.share * base[axis]:
            break
        best = None
        for root in curves:
            if level[root] + 1 >= len(curves[root]):
                continue
            trial = {**level, root: level[root] + 1}
            c = cost(trial)
            saved = now[axis] - c[axis]
            if saved <= 0:
                continue
            key = (loss(root, level[root] + 1) - loss(root, level[root])) / saved
            if best is None or key < best[0]:
                best = (key, trial, c)
        if best is None:
            break
        level, now = best[1], best[2]
        path.append((dict(level), now))
    ratios_of = lambda lv: {r: curves[r][i]["ratio"] for r, i in lv.items() if i >= 0}  # noqa: E731
    measured, steps = None, len(path) - 1
    if target.kind == "latency":
        if measure is None:
            raise EdgepipeError("target latency: no way to measure latency was given")
        base_ms = measure({})
        lo, hi = 0, len(path) - 1
        times = {}
        if (times.setdefault(hi, measure(ratios_of(path[hi][0])))) > target.share * base_ms:
            raise EdgepipeError(
                f"target latency {target.share}: pruning every group to its largest ratio gives "
                f"{times[hi] / base_ms:.2f}× the unpruned latency; lower the target or add ratios"
            )
        while hi - lo > 1:  # the first step along the path that is fast enough (latency falls along it)
            mid = (lo + hi) // 2
            if times.setdefault(mid, measure(ratios_of(path[mid][0]))) <= target.share * base_ms:
                hi = mid
            else:
                lo = mid
        level, now = path[hi]
        steps = hi
        measured = {"unpruned_ms": base_ms, "pruned_ms": times[hi], "probes": len(times) + 1}
    elif now[axis] > target.share * base[axis]:
        raise EdgepipeError(
            f"target {target.kind} {target.share}: pruning every group to its largest ratio keeps "
            f"{now[axis] / base[axis]:.2f} of the {target.kind}; lower the target, add larger ratios or "
            "allow more layers"
        )
    return {
        "target": {target.kind: target.share},
        "ratios": ratios_of(level),
        "predicted_loss": sum(loss(r, lv) for r, lv in level.items()),
        "params": now["params"],
        "macs": now["macs"],
        "steps": steps,
        "latency": measured,
    }


def choose_ratios(model, input_shape, doc: dict, g: Graph, aux: dict, rule: ChannelRule) -> dict[int, float]:
    """allocate() for `rule.target` (measuring exported probes for a latency target); records the
    allocation in `doc` with groups named by their first layer, returns ratios per group root."""
    rule = resolved(rule)
    measure = latency_probe(model, input_shape, g, aux, doc, rule) if rule.target.kind == "latency" else None
    alloc = allocate(model, doc, g, aux, rule.target, rule, measure)
    names = {grp["root"]: grp["group"][0] for grp in doc["groups"]}
    doc["allocation"] = {**alloc, "ratios": {names[r]: v for r, v in alloc["ratios"].items()}}
    return alloc["ratios"]


def latency_probe(model, input_shape, g: Graph, aux: dict, doc: dict, rule: ChannelRule):
    """measure(ratios) -> onnxruntime p50 (ms, batch 1) of the model with those groups cut."""
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.runtime.measure.bench import BenchOptions, benchmark

    opts = BenchOptions(warmup_iters=5, warmup_seconds=0.2, iters=50, min_seconds=0.5, max_seconds=5)
    sizes = {grp["root"]: g.spaces[grp["root"]].size for grp in doc["groups"]}

    def measure(ratios: dict[int, float]) -> float:
        kept = {}
        for root, ratio in ratios.items():
            keep = keep_count(sizes[root], ratio, step_of(g, root, rule.round_to))
            if keep < sizes[root]:
                kept[root] = _top(g, root, keep, aux["scores"])
        cut = cut_copy(model, changes_for(g, kept))
        with temp_dir("latency") as tmp:
            path = export_layer(cut, tuple(input_shape), Path(tmp) / "probe.onnx", name="probe")
            return float(benchmark(path, opts)["runs"][0]["latency"]["p50_ms"])

    return measure


def write(doc: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """sensitivity.json (and sensitivity.png) in `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "sensitivity.json"]
    paths[0].write_text(json.dumps(doc, indent=1) + "\n")
    if plot:
        paths.append(draw(doc, out_dir / "sensitivity.png"))
    return paths


def draw(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for grp in doc["groups"]:
        r = [0.0] + [p["ratio"] for p in grp["points"]]
        a = [100 * doc["baseline"]["accuracy"]] + [100 * p["accuracy"] for p in grp["points"]]
        label = ", ".join(grp["group"][:2]) + (f" +{len(grp['group']) - 2}" if len(grp["group"]) > 2 else "")
        ax.plot(r, a, marker="o", markersize=3, label=f"{label} ({grp['channels']} ch)")
    ax.set_xlabel("share of the group's channels removed")
    ax.set_ylabel(f"validation accuracy (%), {doc['val_samples']} samples")
    ax.set_title(f"pruning sensitivity per channel group ({doc['criterion']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(doc["groups"]) > 8 else 1)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
