"""Parameter (unstructured) pruning: magnitude masks on the weights of Conv2D and Linear layers.

The seed's rule — weights whose magnitude is below a threshold become zero — and its usual
refinements:

- `threshold`: |w| < threshold → 0, or `sparsity`: the smallest-magnitude share of the weights;
- `scope: layer` (each layer reaches the sparsity) or `global` (one threshold over all the named
  layers' weights, so layers with many small weights lose more);
- `schedule: oneshot` (prune once, then fine-tune) or `gradual` (Zhu & Gupta 2017: the target
  rises along s_t = s_f · (1 − (1 − t/T)³) over the fine-tuning steps, masks recomputed every
  `frequency` steps).

Masks stay applied while fine-tuning (weights are multiplied by their mask after every optimizer
step), so a pruned weight is zero in the saved model. Biases and BatchNorm are not pruned.

What it buys, honestly: the dense ONNX file keeps every zero, so its bytes and its latency on
dense kernels are unchanged; the file compresses better (see `deflated_bytes` in the artifact
facts) and a sparse encoding would be smaller. Structured pruning is what makes models faster.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from edgepipe.devices import EdgepipeError


@dataclass(frozen=True)
class MagnitudeRule:
    threshold: float | None = None
    sparsity: float | None = None
    scope: str = "layer"  # layer | global (sparsity only)


def prunable_layers(model, patterns: tuple[str, ...]) -> dict:
    """{name: layer} of the Conv2D / Linear layers matching any pattern; an error names a pattern
    that matches nothing prunable."""
    import paddle.nn as nn

    found = {}
    for pat in patterns:
        hit = {n: m for n, m in model.named_sublayers() if fnmatch.fnmatchcase(n, pat)}
        ok = {n: m for n, m in hit.items() if isinstance(m, (nn.Conv2D, nn.Linear))}
        if not ok:
            what = f"matches {', '.join(sorted(hit)[:5])}, none of them Conv2D or Linear" if hit else "matches no layer"
            names = ", ".join(n for n, m in model.named_sublayers() if isinstance(m, (nn.Conv2D, nn.Linear)))
            raise EdgepipeError(f"layers: '{pat}' {what}; prunable layers: {names}")
        found.update(ok)
    return found


def magnitude_masks(layers: dict, rule: MagnitudeRule, sparsity: float | None = None) -> dict[str, np.ndarray]:
    """{name: 0/1 float32 mask of the layer's weight}. `sparsity` overrides the rule's (gradual schedule)."""
    weights = {n: np.abs(m.weight.numpy()) for n, m in layers.items()}
    target = rule.sparsity if sparsity is None else sparsity
    if rule.threshold is not None and sparsity is None:
        return {n: (w >= rule.threshold).astype(np.float32) for n, w in weights.items()}
    if rule.scope == "global":
        allw = np.concatenate([w.ravel() for w in weights.values()])
        k = int(round(target * allw.size))
        cut = np.partition(allw, k - 1)[k - 1] if k > 0 else -1.0
        # ties at the cut are all pruned; the report gives the sparsity actually reached
        return {n: (w > cut).astype(np.float32) for n, w in weights.items()}
    out = {}
    for n, w in weights.items():
        k = int(round(target * w.size))
        out[n] = np.ones_like(w, dtype=np.float32) if k == 0 else _smallest_k_zeroed(w, k)
    return out


def _smallest_k_zeroed(w: np.ndarray, k: int) -> np.ndarray:
    """Exactly k zeros at the k smallest magnitudes (ties broken by position, so the count is exact)."""
    mask = np.ones(w.size, dtype=np.float32)
    mask[np.argsort(w.ravel(), kind="stable")[:k]] = 0.0
    return mask.reshape(w.shape)


def apply_masks(layers: dict, masks: dict[str, np.ndarray]) -> None:
    import paddle

    with paddle.no_grad():
        for n, m in layers.items():
            m.weight.set_value(m.weight.numpy() * masks[n])


def gradual_sparsity(step: int, total: int, final: float, initial: float = 0.0, end_fraction: float = 0.75) -> float:
    """Zhu & Gupta's polynomial schedule: from `initial` at step 0 to `final` at end_fraction·total,
    then held (the last quarter of fine-tuning recovers at the final sparsity)."""
    end = max(1, int(end_fraction * total))
    t = min(step, end) / end
    return final + (initial - final) * (1.0 - t) ** 3


def sparsity_report(layers: dict) -> list[dict]:
    rows = []
    for n, m in layers.items():
        w = m.weight.numpy()
        zeros = int((w == 0).sum())
        rows.append({"layer": n, "weights": int(w.size), "zeros": zeros, "sparsity": zeros / w.size})
    return rows
