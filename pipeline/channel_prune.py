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

SCORERS = ("l1", "l2", "fpgm", "bn_scale")


@dataclass(frozen=True)
class LayerRatio:
    name: str  # a layer name or glob; the ratio applies to every group that layer belongs to
    ratio: float

    def __post_init__(self):
        require(0.0 <= self.ratio < 1.0, "ratio", "must be in [0, 1)")


@dataclass(frozen=True)
class ChannelRule:
    ratio: float = 0.5  # share of each group's channels removed
    layers: tuple[str, ...] = ("*",)  # groups that contain these layers (names or globs) are pruned
    skip: tuple[str, ...] = ()  # groups that contain these layers are left alone
    per_layer: tuple[LayerRatio, ...] = ()  # ratio overrides, first match wins
    criterion: Literal["l1", "l2", "fpgm", "bn_scale"] = "l1"
    round_to: int = 1  # kept channel counts rounded to a multiple of this (8 suits SIMD kernels)

    def __post_init__(self):
        require(0.0 < self.ratio < 1.0, "ratio", "must be in (0, 1)")
        require(self.round_to >= 1, "round_to", "must be at least 1")
        require(len(self.layers) >= 1, "layers", "name at least one layer (or '*')")


def _filters(layer, kind: str) -> np.ndarray:
    """The weights of each output channel as rows: [channels, fan-in]."""
    w = layer.weight.numpy()
    if kind == "linear":
        return w.T  # Paddle Linear weight is [in, out]
    return w.reshape(w.shape[0], -1)


def channel_scores(g: Graph, root: int, criterion: str) -> np.ndarray:
    """One score per channel of the group (higher = keep); each layer's contribution is scaled by its
    mean so that a wide layer does not drown a narrow one."""
    sp = g.spaces[root]
    total = np.zeros(sp.size)
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


def plan(g: Graph, rule: ChannelRule) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Kept channel indices per group root, and one report row per group."""
    kept, rows = {}, []
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
        ratio = next((o.ratio for o in rule.per_layer if any(fnmatch.fnmatchcase(n, o.name) for n in names)), rule.ratio)
        keep = sp.size - int(round(ratio * sp.size))
        if rule.round_to > 1:
            keep = min(sp.size, max(rule.round_to, int(round(keep / rule.round_to)) * rule.round_to))
        keep = max(1, keep)
        if keep >= sp.size:
            rows.append({**row, "kept": sp.size})
            continue
        scores = channel_scores(g, root, rule.criterion)
        kept[root] = np.sort(np.argsort(-scores, kind="stable")[:keep])
        rows.append({**row, "kept": keep})
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
    cut_layers(model, changes)
    return changes


def cut_layers(model, changes: dict[str, dict]):
    from edgepipe.pipeline.lowrank import replace_sublayer

    layers = dict(model.named_sublayers())
    for name, c in changes.items():
        layer = layers.get(name)
        if layer is None:
            raise EdgepipeError(f"prune_channels: no layer named '{name}' in this model")
        if "channels" in c:
            new = _cut_bn(layer, c["channels"])
        elif "depthwise" in c:
            new = _cut_conv(layer, c["depthwise"], c["depthwise"], depthwise=True)
        elif hasattr(layer, "_kernel_size"):
            new = _cut_conv(layer, c.get("in", np.arange(layer.weight.shape[1])), c.get("out", np.arange(layer.weight.shape[0])), False)
        else:
            new = _cut_linear(layer, c.get("in", np.arange(layer.weight.shape[0])), c.get("out", np.arange(layer.weight.shape[1])))
        if not layer.training:
            new.eval()
        replace_sublayer(model, name, new)
    return model


@register_transform("prune_channels")
def _replay(model, layers: dict):
    """Artifact replay: cut the recorded channels (weights load afterwards)."""
    return cut_layers(model, layers)


def prune_channels(model, input_shape: tuple[int, ...], rule: ChannelRule):
    """Trace, plan, cut. Returns (model, changes, report rows); the model is changed in place."""
    g = trace(model, input_shape)
    kept, rows = plan(g, rule)
    changes = apply(model, g, kept) if kept else {}
    return model, changes, rows
