"""Helpers on any paddle Layer: one observed forward with hooks, and replacing a named sublayer
(the surgery pruning and low-rank factorisation do)."""

from __future__ import annotations

from edgepipe.devices import EdgepipeError


def probe_forward(model, input_shape: tuple[int, ...], hooks: dict, batch: int = 1) -> None:
    """One forward of zeros (eval mode, no gradients) with forward-post hooks {layer: fn(layer,
    inputs, output)} attached, then removed — to observe shapes or calls."""
    import paddle

    handles = [layer.register_forward_post_hook(fn) for layer, fn in hooks.items()]
    try:
        with paddle.no_grad():
            model.eval()
            model(paddle.zeros([batch, *input_shape]))
    finally:
        for h in handles:
            h.remove()


def _parent(model, name: str):
    parts = name.split(".")
    parent = model
    for p in parts[:-1]:
        parent = parent._sub_layers[p]
    return parent, parts[-1]


def replace_sublayer(model, name: str, new) -> None:
    parent, leaf = _parent(model, name)
    if leaf not in parent._sub_layers:
        raise EdgepipeError(f"no layer named '{name}'")
    parent._sub_layers[leaf] = new


def input_shapes(model, input_shape: tuple[int, ...], names: list[str]) -> dict[str, tuple[int, ...]]:
    """The input shape (batch 1) each named sublayer sees in one forward pass of the model."""
    subs, shapes = dict(model.named_sublayers()), {}

    def record(n):
        def hook(layer, inputs, output):  # returns None: a post hook's return value would replace the output
            shapes.setdefault(n, tuple(int(d) for d in inputs[0].shape))

        return hook

    probe_forward(model, input_shape, {subs[n]: record(n) for n in names})
    return shapes
