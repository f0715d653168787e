"""How each layer type is cut: a new, smaller Conv2D / Linear / BatchNorm holding the surviving
slices of the weights, the {layer: {role: kept indices}} changes that a plan implies, and the
`prune_channels` transform that replays them when an artifact is loaded."""

from __future__ import annotations

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.graph import Graph, expand
from edgepipe.pipeline.core.registry import register_transform
from edgepipe.pipeline.models.layers import replace_sublayer


def _cut_conv(layer, in_idx, out_idx, depthwise: bool):
    import paddle.nn as nn

    w = layer.weight.numpy()
    groups = 1
    if depthwise:  # depthwise (1 input channel per group) or grouped with whole groups kept
        w, groups = w[out_idx], len(out_idx) // w.shape[1]
    else:
        w = w[out_idx][:, in_idx]
    new = nn.Conv2D(
        len(in_idx),
        len(out_idx),
        layer._kernel_size,
        stride=layer._stride,
        padding=layer._padding,
        dilation=layer._dilation,
        groups=groups,
        padding_mode=layer._padding_mode,
        bias_attr=False if layer.bias is None else None,
        data_format=layer._data_format,
    )
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
    import paddle.nn as nn

    if isinstance(layer, nn.BatchNorm):  # the older API (DenseNet, Inception): its own constructor and attributes
        new = nn.BatchNorm(
            len(idx),
            act=layer._act,
            momentum=layer._momentum,
            epsilon=layer._epsilon,
            data_layout=layer._data_layout,
            use_global_stats=layer._use_global_stats,
            trainable_statistics=layer._trainable_statistics,
        )
    else:
        kwargs = (
            {"use_global_stats": layer._use_global_stats}
            if getattr(layer, "_use_global_stats", None) is not None
            else {}
        )
        new = type(layer)(
            len(idx), momentum=layer._momentum, epsilon=layer._epsilon, data_format=layer._data_format, **kwargs
        )
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
            touch(name, "channels" if kind == "bn" else "in", expand(g, layout, kept))
    return changes


def cut_layers(model, changes: dict[str, dict]) -> dict:
    """Replace each changed layer by its cut copy, all or nothing: every copy is built first (a
    failure leaves the model untouched), then swapped in. Returns {name: original layer}, what
    `restore` puts back."""
    import paddle

    layers = dict(model.named_sublayers())
    missing = [n for n in changes if n not in layers]
    if missing:
        raise EdgepipeError(f"prune_channels: no layer named '{missing[0]}' in this model")
    built = {}
    for name, c in changes.items():
        layer = layers[name]
        # Parameter names of their own, from the layer's name: fresh global names could repeat one the
        # model already uses (in a new process the counter starts again), and export needs them unique.
        try:
            with paddle.utils.unique_name.guard(f"cut_{name.replace('.', '_')}_"):
                new = _cut_one(layer, c)
        except Exception as exc:
            raise EdgepipeError(
                f"prune_channels: cannot cut {name} ({type(layer).__name__}: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); the model is "
                "unchanged"
            ) from None
        if not layer.training:
            new.eval()
        built[name] = new
    for name, new in built.items():
        replace_sublayer(model, name, new)
    return {name: layers[name] for name in built}


def cut_copy(model, changes: dict[str, dict]):
    """A cut deep copy of `model` (the model itself untouched), e.g. to try one plan."""
    import copy

    cut = copy.deepcopy(model)
    cut_layers(cut, changes)
    return cut


def restore(model, originals: dict) -> None:
    """Put back the layers cut_layers replaced."""
    for name, layer in originals.items():
        replace_sublayer(model, name, layer)


def _cut_one(layer, c: dict):
    if "channels" in c:
        return _cut_bn(layer, c["channels"])
    if "depthwise" in c:
        return _cut_conv(layer, c["depthwise"], c["depthwise"], depthwise=True)
    if hasattr(layer, "_kernel_size"):
        return _cut_conv(
            layer, c.get("in", np.arange(layer.weight.shape[1])), c.get("out", np.arange(layer.weight.shape[0])), False
        )
    return _cut_linear(
        layer, c.get("in", np.arange(layer.weight.shape[0])), c.get("out", np.arange(layer.weight.shape[1]))
    )


@register_transform("prune_channels")
def _replay(model, layers: dict):
    """Artifact replay: cut the recorded channels (weights load afterwards)."""
    cut_layers(model, layers)
    return model
