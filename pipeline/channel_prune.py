"""Structured pruning: remove whole channels (conv filters, Linear neurons) and cut every layer
that reads them, using the dependency graph of pipeline/depgraph.py.

Three concerns, kept apart: *which* channels (a scorer gives each channel of a group one score),
*what else* is cut (the group: producers, BatchNorms, depthwise convs and consumers tied through
the graph), and *how* one layer type is cut (`_cut_*`: a new, smaller layer with the surviving
slices of the weights). The result is an ordinary, smaller Paddle model; the kept indices are
returned as a transform so an artifact can be rebuilt.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.artifact import register_transform
from edgepipe.pipeline.config import require
from edgepipe.pipeline.depgraph import Graph, expand, trace

WEIGHT_SCORERS = ("l1", "l2", "fpgm", "bn_scale")
DATA_SCORERS = ("taylor", "apoz", "activation")  # need training samples (and labels, for taylor)
SCORERS = WEIGHT_SCORERS + DATA_SCORERS


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
        require(len(given) == 1, "target", "give exactly one of params, macs or latency (a share of the unpruned model, "
                "e.g. macs: 0.5)" + (f", not {' and '.join(given)}" if given else ""))
        require(0.0 < getattr(self, given[0]) < 1.0, given[0], "must be in (0, 1): the share of the unpruned model kept")

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
    round_to: int = 1  # kept channel counts rounded to a multiple of this (8 suits SIMD kernels)
    samples: int = 512  # training samples the data-driven criteria (taylor, apoz, activation) look at
    target: Target | None = None  # instead of one ratio: per-group ratios from the sensitivity analysis

    def __post_init__(self):
        require(0.0 < self.ratio < 1.0, "ratio", "must be in (0, 1)")
        require(self.round_to >= 1, "round_to", "must be at least 1")
        require(self.samples >= 1, "samples", "must be at least 1")
        require(len(self.layers) >= 1, "layers", "name at least one layer (or '*')")


def _filters(layer, kind: str) -> np.ndarray:
    """The weights of each output channel as rows: [channels, fan-in]."""
    w = layer.weight.numpy()
    if kind == "linear":
        return w.T  # Paddle Linear weight is [in, out]
    return w.reshape(w.shape[0], -1)


def measure_points(g: Graph, root: int) -> list[str]:
    """The layers whose outputs are a group's channels as the next layers see them: its BatchNorms
    when it has any (removing a filter removes the normalised channel), else its producers."""
    sp = g.spaces[root]
    return [n for n, k in sp.followers if k == "bn"] or [n for n, _ in sp.producers]


def activation_stats(model, g: Graph, roots, x: np.ndarray, y: np.ndarray | None, criterion: str, batch: int = 64) -> dict:
    """Per-channel statistics at each group's measure points over the samples `x`:
    taylor      |mean over positions of activation × gradient of the cross-entropy|, averaged over
                samples — first-order estimate of the loss change when the channel is removed
                (Molchanov et al., 2017);
    apoz        share of positive entries, i.e. 1 − APoZ (Hu et al., 2016), as if a ReLU followed;
    activation  mean of max(activation, 0)."""
    import paddle
    import paddle.nn.functional as F

    names = sorted({n for r in roots for n in measure_points(g, r)})
    if criterion == "taylor" and y is None:
        raise EdgepipeError("criterion taylor needs labelled samples")
    sums = {n: 0.0 for n in names}
    held: dict[str, object] = {}

    def per_channel(t: np.ndarray, reduce) -> np.ndarray:
        t = t.reshape(t.shape[0], t.shape[1], -1)
        return reduce(t).sum(0)

    def hook_for(name):
        def hook(layer, inputs, output):
            if criterion == "taylor":
                held[name] = output
                output.register_hook(lambda grad: sums.__setitem__(name, sums[name] + per_channel(
                    held[name].numpy() * grad.numpy(), lambda t: np.abs(t.mean(2)))))
            elif criterion == "apoz":
                sums[name] = sums[name] + per_channel(output.numpy(), lambda t: (t > 0).mean(2))
            else:
                sums[name] = sums[name] + per_channel(output.numpy(), lambda t: np.maximum(t, 0).mean(2))
        return hook

    was_training = model.training
    model.eval()
    hooks = [g.layers[n].register_forward_post_hook(hook_for(n)) for n in names]
    try:
        for i in range(0, len(x), batch):
            xb = paddle.to_tensor(x[i : i + batch])
            if criterion == "taylor":
                loss = F.cross_entropy(model(xb), paddle.to_tensor(y[i : i + batch].astype("int64")))
                loss.backward()
                model.clear_gradients()
            else:
                with paddle.no_grad():
                    model(xb)
    finally:
        for h in hooks:
            h.remove()
        held.clear()
        if was_training:
            model.train()
    return {n: np.asarray(v, dtype=np.float64) / len(x) for n, v in sums.items()}


def channel_scores(g: Graph, root: int, criterion: str, stats: dict | None = None) -> np.ndarray:
    """One score per channel of the group (higher = keep); each layer's contribution is scaled by its
    mean so that a wide layer does not drown a narrow one."""
    sp = g.spaces[root]
    total = np.zeros(sp.size)
    if criterion in DATA_SCORERS:
        if stats is None:
            raise EdgepipeError(f"criterion {criterion} needs training samples; pass data to prune_channels")
        for n in measure_points(g, root):
            s = stats[n]
            total += s / (s.mean() + 1e-12)
        return total
    members = [(n, k) for n, k in sp.producers] + [(n, k) for n, k in sp.followers if k == "depthwise"]
    if criterion == "bn_scale":
        members = [(n, k) for n, k in sp.followers if k == "bn"]
        if not members:
            raise EdgepipeError(f"criterion bn_scale: channels made by {', '.join(n for n, _ in sp.producers)} have no BatchNorm; use l1")
        for n, _ in members:
            s = np.abs(g.layers[n].weight.numpy())
            total += s / (s.mean() + 1e-12)
        return total
    for n, k in members:
        f = _filters(g.layers[n], "linear" if k == "linear" else "conv")
        if criterion == "l1":
            s = np.abs(f).sum(1)
        elif criterion == "l2":
            s = np.sqrt((f * f).sum(1))
        elif criterion == "fpgm":  # distance to the other filters: near the geometric median = replaceable
            s = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)).sum(1)
        else:
            raise EdgepipeError(f"criterion: unknown '{criterion}' (known: {', '.join(SCORERS)})")
        total += s / (s.mean() + 1e-12)
    return total


def _names(sp) -> list[str]:
    return [n for n, _ in sp.producers + sp.followers]


def candidates(g: Graph, rule: ChannelRule) -> tuple[list[int], list[dict]]:
    """Group roots the rule may prune, and one report row per group the rule names (with `skip`
    saying why a group is left alone)."""
    roots, rows = [], []
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
        roots.append(root)
        rows.append(row)
    return roots, rows


def keep_count(size: int, ratio: float, round_to: int) -> int:
    keep = size - int(round(ratio * size))
    if round_to > 1:
        keep = min(size, max(round_to, int(round(keep / round_to)) * round_to))
    return max(1, keep)


def group_ratio(g: Graph, root: int, rule: ChannelRule) -> float:
    names = _names(g.spaces[root])
    return next((o.ratio for o in rule.per_layer if any(fnmatch.fnmatchcase(n, o.name) for n in names)), rule.ratio)


def plan(g: Graph, rule: ChannelRule, stats: dict | None = None, ratios: dict[int, float] | None = None
         ) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Kept channel indices per group root, and one report row per group. `ratios` (group root ->
    ratio) overrides the rule's ratios, as a sensitivity-based allocation does."""
    kept = {}
    roots, rows = candidates(g, rule)
    by_root = dict(zip(roots, [r for r in rows if "skip" not in r]))
    for root in roots:
        ratio = ratios.get(root, 0.0) if ratios is not None else group_ratio(g, root, rule)
        keep = keep_count(g.spaces[root].size, ratio, rule.round_to) if ratio > 0 else g.spaces[root].size
        by_root[root]["kept"] = keep
        if keep < g.spaces[root].size:
            scores = channel_scores(g, root, rule.criterion, stats)
            kept[root] = np.sort(np.argsort(-scores, kind="stable")[:keep])
    return kept, rows


def _cut_conv(layer, in_idx, out_idx, depthwise: bool):
    import paddle.nn as nn

    w = layer.weight.numpy()
    groups = 1
    if depthwise:
        w, groups = w[out_idx], len(out_idx)
    else:
        w = w[out_idx][:, in_idx]
    new = nn.Conv2D(len(in_idx), len(out_idx), layer._kernel_size, stride=layer._stride, padding=layer._padding,
                    dilation=layer._dilation, groups=groups, padding_mode=layer._padding_mode,
                    bias_attr=False if layer.bias is None else None, data_format=layer._data_format)
    new.weight.set_value(w)
    if layer.bias is not None:
        new.bias.set_value(layer.bias.numpy()[out_idx])
    return new


def _cut_linear(layer, in_idx, out_idx):
    import paddle.nn as nn

    new = nn.Linear(len(in_idx), len(out_idx), bias_attr=False if layer.bias is None else None)
    new.weight.set_value(layer.weight.numpy()[in_idx][:, out_idx])
    if layer.bias is not None:
        new.bias.set_value(layer.bias.numpy()[out_idx])
    return new


def _cut_bn(layer, idx):
    new = type(layer)(len(idx), momentum=layer._momentum, epsilon=layer._epsilon, data_format=layer._data_format)
    for attr in ("weight", "bias", "_mean", "_variance"):
        getattr(new, attr).set_value(getattr(layer, attr).numpy()[idx])
    return new


def apply(model, g: Graph, kept: dict[int, np.ndarray]) -> dict[str, dict]:
    """Replace every affected layer by its cut copy; returns {layer: {role: kept indices}} — the
    transform that rebuilds the same shapes on load."""
    changes = changes_for(g, kept)
    cut_layers(model, changes)
    return changes


def changes_for(g: Graph, kept: dict[int, np.ndarray]) -> dict[str, dict]:
    """{layer: {role: kept indices}} for kept channels per group root, without touching a model."""
    changes: dict[str, dict] = {}
    roots = {g.root(i) for i in kept}

    def touch(name, key, idx):
        changes.setdefault(name, {})[key] = [int(i) for i in idx]

    for root in roots:
        for name, kind in g.spaces[root].producers:
            touch(name, "out", kept[root])
        for name, kind in g.spaces[root].followers:
            touch(name, "channels" if kind == "bn" else "depthwise", kept[root])
    for name, kind, layout in g.consumers:
        if any(g.root(s) in kept for s, _ in layout):
            touch(name, "in", expand(g, layout, kept))
    return changes


def cut_layers(model, changes: dict[str, dict]):
    import paddle

    from edgepipe.pipeline.lowrank import replace_sublayer

    layers = dict(model.named_sublayers())
    for name, c in changes.items():
        layer = layers.get(name)
        if layer is None:
            raise EdgepipeError(f"prune_channels: no layer named '{name}' in this model")
        # Parameter names of their own, from the layer's name: fresh global names could repeat one the
        # model already uses (in a new process the counter starts again), and export needs them unique.
        with paddle.utils.unique_name.guard(f"cut_{name.replace('.', '_')}_"):
            new = _cut_one(layer, c)
        if not layer.training:
            new.eval()
        replace_sublayer(model, name, new)
    return model


def _cut_one(layer, c: dict):
    if "channels" in c:
        return _cut_bn(layer, c["channels"])
    if "depthwise" in c:
        return _cut_conv(layer, c["depthwise"], c["depthwise"], depthwise=True)
    if hasattr(layer, "_kernel_size"):
        return _cut_conv(layer, c.get("in", np.arange(layer.weight.shape[1])), c.get("out", np.arange(layer.weight.shape[0])), False)
    return _cut_linear(layer, c.get("in", np.arange(layer.weight.shape[0])), c.get("out", np.arange(layer.weight.shape[1])))


@register_transform("prune_channels")
def _replay(model, layers: dict):
    """Artifact replay: cut the recorded channels (weights load afterwards)."""
    return cut_layers(model, layers)


def scorer_stats(model, g: Graph, rule: ChannelRule, data) -> dict | None:
    """The activation statistics a data-driven criterion needs (None for weight criteria)."""
    if rule.criterion not in DATA_SCORERS:
        return None
    if data is None:
        raise EdgepipeError(f"criterion {rule.criterion} needs training samples; pass data to prune_channels")
    x, y = data
    roots, _ = candidates(g, rule)
    return activation_stats(model, g, roots, x[: rule.samples], None if y is None else y[: rule.samples], rule.criterion)


def prune_channels(model, input_shape: tuple[int, ...], rule: ChannelRule, data=None, ratios: dict[int, float] | None = None,
                   graph: Graph | None = None, stats: dict | None = None):
    """Trace, plan, cut. Returns (model, changes, report rows); the model is changed in place.
    `data` = (x, y) training samples, needed by the taylor / apoz / activation criteria; `graph` and
    `stats` (from a sensitivity analysis of this model) spare tracing and scoring again."""
    g = graph or trace(model, input_shape)
    kept, rows = plan(g, rule, stats if stats is not None else scorer_stats(model, g, rule, data), ratios)
    changes = apply(model, g, kept) if kept else {}
    return model, changes, rows
