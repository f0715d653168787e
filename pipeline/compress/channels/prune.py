"""Structured pruning: remove whole channels (conv filters, Linear neurons) and cut every layer
that reads them. The rule (ratio, criterion, target), the plan (which groups, how many channels
each keeps) and `prune_channels`, which traces, plans and cuts.

Three concerns, kept apart as in Torch-Pruning: *which* channels (importance.py gives each channel
of a group one score), *what else* is cut (graph.py: the group of producers, BatchNorms, depthwise
convs and consumers tied through the traced program), and *how* one layer type is cut (cut.py: a
new, smaller layer with the surviving slices of the weights). The result is an ordinary, smaller
Paddle model; the kept indices are returned as a transform so an artifact can be rebuilt.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.cut import changes_for, cut_layers, restore
from edgepipe.pipeline.compress.channels.graph import Graph, trace
from edgepipe.pipeline.compress.channels.importance import DATA_SCORERS, activation_stats, channel_scores
from edgepipe.pipeline.core.config import require


@dataclass(frozen=True)
class LayerRatio:
    name: str  # a layer name or glob; the ratio applies to every group that layer belongs to
    ratio: float

    def __post_init__(self):
        require(0.0 <= self.ratio < 1.0, "ratio", "must be in [0, 1)")


@dataclass(frozen=True)
class Target:
    """What the pruned model may keep, as a share of the unpruned one (exactly one)."""

    params: float | None = None
    macs: float | None = None
    latency: float | None = None  # onnxruntime p50 at batch 1 on this machine, measured

    def __post_init__(self):
        given = [k for k in ("params", "macs", "latency") if getattr(self, k) is not None]
        require(
            len(given) == 1,
            "target",
            "give exactly one of params, macs or latency (a share of the unpruned model, "
            "e.g. macs: 0.5)" + (f", not {' and '.join(given)}" if given else ""),
        )
        require(
            0.0 < getattr(self, given[0]) < 1.0, given[0], "must be in (0, 1): the share of the unpruned model kept"
        )

    @property
    def kind(self) -> str:
        return next(k for k in ("params", "macs", "latency") if getattr(self, k) is not None)

    @property
    def share(self) -> float:
        return getattr(self, self.kind)


@dataclass(frozen=True)
class ChannelRule:
    ratio: float = 0.5  # share of each group's channels removed
    layers: tuple[str, ...] = ("*",)  # groups that contain these layers (names or globs) are pruned
    skip: tuple[str, ...] = ()  # groups that contain these layers are left alone
    per_layer: tuple[LayerRatio, ...] = ()  # ratio overrides, first match wins
    criterion: Literal["l1", "l2", "fpgm", "bn_scale", "taylor", "apoz", "activation"] = "l1"
    round_to: int | None = None  # kept channel counts rounded to a multiple of this; null: the device profile's
    samples: int = 512  # training samples the data-driven criteria (taylor, apoz, activation) look at
    target: Target | None = None  # instead of one ratio: per-group ratios from the sensitivity analysis

    def __post_init__(self):
        require(0.0 < self.ratio < 1.0, "ratio", "must be in (0, 1)")
        require(
            self.round_to is None or self.round_to >= 1,
            "round_to",
            "must be at least 1 (or null: the device profile's)",
        )
        require(self.samples >= 1, "samples", "must be at least 1")
        require(len(self.layers) >= 1, "layers", "name at least one layer (or '*')")


def _names(sp) -> list[str]:
    return [n for n, _ in sp.producers + sp.followers]


def candidates(g: Graph, rule: ChannelRule) -> tuple[list[int], list[dict]]:
    """Group roots the rule may prune, and one report row per group the rule names (with `skip`
    saying why a group is left alone)."""
    roots, rows = [], []
    after_concat = {g.root(sid) for _, kind, lay in g.consumers if kind == "bn" for sid, _ in lay}  # BN of a concat
    for root, sp in sorted(g.groups().items(), key=lambda kv: _names(kv[1])[:1]):
        names = _names(sp)
        if not sp.producers:
            continue
        row = {"group": [n for n, _ in sp.producers], "tied": [n for n, _ in sp.followers], "channels": sp.size}
        if sp.frozen:
            rows.append({**row, "skip": sp.frozen})
            continue
        if not any(fnmatch.fnmatchcase(n, p) for n in names for p in rule.layers):
            continue
        hit = [p for p in rule.skip if any(fnmatch.fnmatchcase(n, p) for n in names)]
        if hit:
            rows.append({**row, "skip": f"skip: {hit[0]}"})
            continue
        if rule.criterion == "bn_scale" and not any(k == "bn" for _, k in sp.followers) and root in after_concat:
            rows.append(
                {
                    **row,
                    "skip": "criterion bn_scale: no BatchNorm of its own to score by (its channels are "
                    "normalised only after a concatenation)",
                }
            )
            continue
        roots.append(root)
        rows.append(row)
    return roots, rows


def resolved(rule: ChannelRule) -> ChannelRule:
    """The rule with round_to filled in from the detected device profile when it was left out."""
    if rule.round_to is not None:
        return rule
    from dataclasses import replace

    from edgepipe.pipeline.compress.channels.speed import channel_multiple
    from edgepipe.pipeline.core import distributed

    return replace(rule, round_to=distributed.on_rank0(channel_multiple)[0])  # data-parallel: rank 0's host


def step_of(g: Graph, root: int, round_to: int | None) -> int:
    """What a group's kept channel count must be a multiple of: round_to, and whole groups of a
    grouped conv the channels feed."""
    return math.lcm(round_to or 1, g.spaces[root].granule)


def top_channels(g: Graph, root: int, keep: int, scores: np.ndarray) -> np.ndarray:
    """The `keep` best channels of a group, sorted; in whole aligned blocks where it has a granule."""
    granule = g.spaces[root].granule
    if granule == 1:
        return np.sort(np.argsort(-scores, kind="stable")[:keep])
    blocks = np.sort(np.argsort(-scores.reshape(-1, granule).sum(1), kind="stable")[: keep // granule])
    return (blocks[:, None] * granule + np.arange(granule)[None, :]).ravel()


def keep_count(size: int, ratio: float, round_to: int | None) -> int:
    round_to = round_to or 1
    keep = size - int(round(ratio * size))
    if round_to > 1:
        keep = min(size, max(round_to, int(round(keep / round_to)) * round_to))
    return max(1, keep)


def group_ratio(g: Graph, root: int, rule: ChannelRule) -> float:
    names = _names(g.spaces[root])
    return next((o.ratio for o in rule.per_layer if any(fnmatch.fnmatchcase(n, o.name) for n in names)), rule.ratio)


def plan(
    g: Graph, rule: ChannelRule, stats: dict | None = None, ratios: dict[int, float] | None = None
) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Kept channel indices per group root, and one report row per group. `ratios` (group root ->
    ratio) overrides the rule's ratios, as a sensitivity-based allocation does."""
    kept = {}
    roots, rows = candidates(g, rule)
    by_root = dict(zip(roots, [r for r in rows if "skip" not in r]))
    for root in roots:
        ratio = ratios.get(root, 0.0) if ratios is not None else group_ratio(g, root, rule)
        keep = (
            keep_count(g.spaces[root].size, ratio, step_of(g, root, rule.round_to))
            if ratio > 0
            else g.spaces[root].size
        )
        by_root[root]["kept"] = keep
        if keep < g.spaces[root].size:
            kept[root] = top_channels(g, root, keep, channel_scores(g, root, rule.criterion, stats))
    return kept, rows


def scorer_stats(model, g: Graph, rule: ChannelRule, data) -> dict | None:
    """The activation statistics a data-driven criterion needs (None for weight criteria)."""
    if rule.criterion not in DATA_SCORERS:
        return None
    if data is None:
        raise EdgepipeError(f"criterion {rule.criterion} needs training samples; pass data to prune_channels")
    x, y = data
    roots, _ = candidates(g, rule)
    return activation_stats(
        model, g, roots, x[: rule.samples], None if y is None else y[: rule.samples], rule.criterion
    )


def prune_channels(
    model,
    input_shape: tuple[int, ...],
    rule: ChannelRule,
    data=None,
    ratios: dict[int, float] | None = None,
    graph: Graph | None = None,
    stats: dict | None = None,
):
    """Trace, plan, cut. Returns (model, changes, report rows); the model is changed in place.
    `data` = (x, y) training samples, needed by the taylor / apoz / activation criteria; `graph` and
    `stats` (from a sensitivity analysis of this model) spare tracing and scoring again."""
    import paddle

    if type(model).__name__ in ("TranslatedLayer", "PirTranslatedLayer"):  # what paddle.jit.load returns (2.x / 3.x)
        raise EdgepipeError(
            "a paddle.jit.load'ed model is a fixed program: its layers cannot be re-shaped, so channel "
            "pruning cannot apply; give the model's python: or zoo: source (and weights:) instead"
        )
    rule = resolved(rule)
    g = graph or trace(model, input_shape)
    kept, rows = plan(g, rule, stats if stats is not None else scorer_stats(model, g, rule, data), ratios)
    if not kept:
        return model, {}, rows
    changes = changes_for(g, kept)
    originals = cut_layers(model, changes)  # all or nothing: builds every cut layer before swapping any in
    was_training = model.training
    try:  # the plan came from the traced graph; one forward proves the cut model still runs
        with paddle.no_grad():
            model.eval()
            model(paddle.zeros([1, *input_shape]))
    except Exception as exc:
        restore(model, originals)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgepipeError(
            f"channel pruning produced a model that does not run ({type(exc).__name__}: {first}); "
            "the model is unchanged — an op the planner does not model ties these channels; "
            "exclude its layers with layers: / per_layer:, or report the architecture"
        ) from None
    finally:
        if was_training:
            model.train()
    return model, changes, rows
