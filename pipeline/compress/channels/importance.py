"""Which channels to keep: one importance score per channel of a group, from the weights (l1, l2,
fpgm, bn_scale) or from data (taylor, apoz, activation statistics at the group's measure points)."""

from __future__ import annotations

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.graph import Graph

WEIGHT_SCORERS = ("l1", "l2", "fpgm", "bn_scale")
DATA_SCORERS = ("taylor", "apoz", "activation")  # need training samples (and labels, for taylor)
SCORERS = WEIGHT_SCORERS + DATA_SCORERS


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


def activation_stats(
    model, g: Graph, roots, x: np.ndarray, y: np.ndarray | None, criterion: str, batch: int = 64
) -> dict:
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
                output.register_hook(
                    lambda grad: sums.__setitem__(
                        name, sums[name] + per_channel(held[name].numpy() * grad.numpy(), lambda t: np.abs(t.mean(2)))
                    )
                )
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
            raise EdgepipeError(
                f"criterion bn_scale: channels made by {', '.join(n for n, _ in sp.producers)} "
                "have no BatchNorm; use l1"
            )
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
