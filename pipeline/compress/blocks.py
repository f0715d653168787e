"""Layer pruning: remove whole blocks by replacing them with the identity.

A block can be bypassed when its output has its input's shape — a residual block without a
downsampling shortcut, an inverted residual with its skip connection, any shape-keeping layer in a
Sequential. Its importance is measured, not guessed: the validation accuracy lost (or the relative
change of the logits) when that block alone is bypassed. Blocks are removed greedily, least
important first, re-measuring the rest after every removal; the removal is recorded as a
`remove_layers` transform so the artifact rebuilds the same architecture.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_transform


@dataclass(frozen=True)
class BlockRule:
    count: int = 1  # blocks removed
    layers: tuple[str, ...] = ("*",)  # candidate blocks by name or glob
    measure: Literal["accuracy", "output"] = "accuracy"  # accuracy lost on val, or relative change of the logits

    def __post_init__(self):
        require(self.count >= 1, "count", "must be at least 1")
        require(len(self.layers) >= 1, "layers", "name at least one layer (or '*')")


def removable_blocks(model, input_shape: tuple[int, ...], patterns: tuple[str, ...] = ("*",)) -> list[str]:
    """Sublayers that can become the identity: holding a Conv2D or Linear, called once on one tensor
    whose shape their output keeps, and either an element of the outermost Sequential / LayerList
    on their path (a residual block, not a layer inside one) or named exactly in `patterns`."""
    import paddle
    import paddle.nn as nn

    from edgepipe.pipeline.models.layers import probe_forward

    subs = dict(model.named_sublayers())
    seen: dict[str, list] = {}
    probe_forward(
        model,
        input_shape,
        {
            layer: lambda lay, inp, out, name=name: seen.setdefault(name, []).append(
                (
                    len([t for t in inp if isinstance(t, paddle.Tensor)]),
                    [list(t.shape) for t in inp if isinstance(t, paddle.Tensor)],
                    list(out.shape) if isinstance(out, paddle.Tensor) else None,
                )
            )
            for name, layer in subs.items()
        },
        batch=2,
    )

    def in_sequence(n: str) -> bool:
        parent = subs.get(n.rsplit(".", 1)[0]) if "." in n else model
        return isinstance(parent, (nn.Sequential, nn.LayerList))

    found = []
    for name, layer in subs.items():
        exact = name in patterns
        if not exact and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        parts = name.split(".")
        outer = [".".join(parts[:i]) for i in range(1, len(parts))]
        if not exact and (not in_sequence(name) or any(in_sequence(o) for o in outer)):
            continue  # only the outermost sequence's elements: blocks, not the layers inside them
        if not any(isinstance(m, (nn.Conv2D, nn.Linear)) for m in [layer, *layer.sublayers()]):
            continue
        calls = seen.get(name, [])
        if len(calls) == 1 and calls[0][0] == 1 and calls[0][1][0] == calls[0][2]:
            found.append(name)
    return found


def bypass(model, names: list[str]):
    """Replace each named sublayer by nn.Identity (in place); returns the model."""
    import paddle.nn as nn

    from edgepipe.pipeline.models.layers import replace_sublayer

    for name in names:
        replace_sublayer(model, name, nn.Identity())
    return model


@register_transform("remove_layers")
def _replay(model, layers: list):
    return bypass(model, list(layers))


def remove_blocks(model, input_shape, rule: BlockRule, val: tuple, progress=None) -> tuple[object, list[dict]]:
    """Remove `rule.count` blocks greedily (least important first, measured on `val` after each
    removal). Returns (model, one row per removal round with every candidate's measured effect)."""
    from edgepipe.pipeline.training import evaluate, predict_logits

    x, y = val
    if len(x) == 0:
        raise EdgepipeError("blocks: the validation split is empty; give the recipe's data a val: count")
    blocks = removable_blocks(model, input_shape, rule.layers)
    if not blocks:
        raise EdgepipeError(
            "prune: no removable block matches " + ", ".join(rule.layers) + " (a block must keep its "
            "input's shape and sit in a Sequential or LayerList, or be named exactly)"
        )
    if rule.count > len(blocks):
        raise EdgepipeError(
            f"blocks.count: {rule.count} asked, but only {len(blocks)} blocks can be removed ({', '.join(blocks)})"
        )
    rounds = []
    for step in range(rule.count):
        ref_acc = evaluate(model, x, y)
        ref_logits = predict_logits(model, x)
        effects = []
        for name in blocks:
            trial = bypass(copy.deepcopy(model), [name])
            if rule.measure == "accuracy":
                acc = evaluate(trial, x, y)
                effects.append({"block": name, "accuracy": acc, "drop": ref_acc - acc})
            else:
                out = predict_logits(trial, x)
                change = float(np.linalg.norm(out - ref_logits) / (np.linalg.norm(ref_logits) + 1e-12))
                effects.append({"block": name, "output_change": change})
            if progress:
                progress(step, name)
        key = "drop" if rule.measure == "accuracy" else "output_change"
        pick = min(effects, key=lambda e: (e[key], e["block"]))
        bypass(model, [pick["block"]])
        # a removed block takes its parts with it
        blocks = [b for b in blocks if b != pick["block"] and not b.startswith(pick["block"] + ".")]
        rounds.append({"removed": pick["block"], "accuracy_before": ref_acc, "candidates": effects})
        if step + 1 < rule.count and not blocks:
            raise EdgepipeError(f"blocks.count: only {step + 1} blocks could be removed before none was left")
    return model, rounds
