"""Low-rank decomposition of Linear and Conv2D layers into chains of ordinary layers.

- Linear (Paddle weight W is [in, out]): truncated SVD W ≈ A·B, A = U_r·√S_r [in, r],
  B = √S_r·Vᵀ_r [r, out] -> Linear(in, r, no bias) then Linear(r, out, bias). Saves storage.
- Conv, Tucker-2 (HOSVD on the output- and input-channel modes): 1×1 conv I→R_in, the k×k core
  R_in→R_out (the original stride, padding, dilation), 1×1 conv R_out→O with the bias.
- Conv, spatial SVD (Jaderberg et al., scheme 2): W[o,i,y,x] ≈ Σ_r V[r,i,y]·H[o,r,x] -> a k×1
  conv I→R then a 1×k conv R→O.

Both conv forms make inference cheaper, not just smaller. At full rank each reproduces the
original layer exactly (to float rounding). Ranks come from an explicit value, from the share of
squared singular values kept (`energy`), or from a cost budget (`ratio` of the original MACs);
a layer whose factorised form would cost as much as the original is left alone, with the reason.
With `target: latency` the layer and its factorisations are timed on this machine
(compress/layer_timing.py): `ratio` then bounds the measured time (the largest rank within it
wins), and under any rule a factorisation that is not faster than the layer is left out, with the
measured times in the report.
The result is a `lowrank` transform per layer (core/artifact.py replays it when a model is loaded).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.factor import factor_linear, factor_spatial, factor_tucker2
from edgepipe.pipeline.compress.lowrank_plan import _conv_geometry, plan_layer
from edgepipe.pipeline.core.config import require
from edgepipe.pipeline.core.registry import register_transform
from edgepipe.pipeline.models.layers import input_shapes, replace_sublayer

Method = Literal["auto", "svd", "tucker2", "spatial"]


@dataclass(frozen=True)
class LayerRank:
    """Which layers (a name or a glob such as `layer*.conv1`) and how to choose their rank."""

    name: str
    method: Method = "auto"
    rank: int | None = None  # svd / spatial: the rank; tucker2: both channel ranks
    ranks: tuple[int, ...] | None = None  # tucker2: (R_out, R_in)
    energy: float | None = None  # keep this share of the squared singular values (per mode for tucker2)
    ratio: float | None = None  # or: the largest rank whose MACs stay within ratio × the original's
    target: Literal["macs", "latency"] = "macs"  # latency: ratio bounds the measured time; a layer not faster stays

    def __post_init__(self):
        given = [k for k in ("rank", "ranks", "energy", "ratio") if getattr(self, k) is not None]
        require(len(given) <= 1, "rank", f"give one of rank, ranks, energy or ratio, not {', '.join(given)}")
        require(self.rank is None or self.rank >= 1, "rank", "must be at least 1")
        require(
            self.ranks is None or (len(self.ranks) == 2 and min(self.ranks) >= 1),
            "ranks",
            "tucker2 takes two positive ranks: [R_out, R_in]",
        )
        require(self.ranks is None or self.method in ("tucker2", "auto"), "ranks", "only tucker2 takes two ranks")
        require(self.energy is None or 0.0 < self.energy <= 1.0, "energy", "must be in (0, 1]")
        require(self.ratio is None or 0.0 < self.ratio < 1.0, "ratio", "must be in (0, 1)")

    @property
    def rule(self) -> dict:
        for k in ("rank", "ranks", "energy", "ratio"):
            if getattr(self, k) is not None:
                v = getattr(self, k)
                return {k: list(v) if isinstance(v, tuple) else v}
        return {"energy": 0.9}


# ---------------------------------------------------------------- building the replacement layers


def build_factored(layer, method: str, ranks: list[int], prefix: str):
    """The empty replacement chain for `layer` (shapes only; weights are set by the caller or loaded)."""
    import paddle
    import paddle.nn as nn

    with paddle.utils.unique_name.guard(prefix):  # own parameter names: optimizer state is keyed by them
        if method == "svd":
            n_in, n_out = layer.weight.shape
            return nn.Sequential(
                nn.Linear(n_in, ranks[0], bias_attr=False),
                nn.Linear(ranks[0], n_out, bias_attr=None if layer.bias is not None else False),
            )
        g = _conv_geometry(layer)
        bias = None if layer.bias is not None else False
        (sh, sw), (ph, pw), (dh, dw), (kh, kw) = g["stride"], g["padding"], g["dilation"], g["kernel"]
        if method == "tucker2":
            ro, ri = ranks
            return nn.Sequential(
                nn.Conv2D(g["in"], ri, 1, bias_attr=False),
                nn.Conv2D(ri, ro, (kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), bias_attr=False),
                nn.Conv2D(ro, g["out"], 1, bias_attr=bias),
            )
        if method == "spatial":
            (r,) = ranks
            return nn.Sequential(
                nn.Conv2D(g["in"], r, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), bias_attr=False),
                nn.Conv2D(r, g["out"], (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias_attr=bias),
            )
    raise EdgepipeError(f"unknown low-rank method '{method}' (svd, tucker2, spatial)")


def fill_factored(chain, layer, method: str, ranks: list[int]) -> None:
    import paddle

    w = layer.weight.numpy()
    if method == "svd":
        parts = factor_linear(w, ranks[0])
    elif method == "tucker2":
        parts = factor_tucker2(w, *ranks)
    else:
        parts = factor_spatial(w, ranks[0])
    subs = list(chain.children())
    for sub, arr in zip(subs, parts):
        sub.weight.set_value(paddle.to_tensor(arr))
    if layer.bias is not None:
        subs[-1].bias.set_value(layer.bias)


def _prefix(name: str) -> str:
    return "lowrank_" + name.replace(".", "_") + "_"


@register_transform("lowrank")
def _replay(model, layer: str, method: str, ranks: list[int]):
    """Artifact replay: swap `layer` for an empty chain of the recorded ranks (weights load after)."""
    target = dict(model.named_sublayers()).get(layer)
    if target is None:
        raise EdgepipeError(f"lowrank transform: the model has no layer named '{layer}'")
    replace_sublayer(model, layer, build_factored(target, method, list(ranks), _prefix(layer)))
    return model


def select_layers(model, rules: tuple[LayerRank, ...]) -> list[tuple[str, object, LayerRank]]:
    """(name, layer, rule) for every leaf layer a rule names; the first matching rule wins."""
    import paddle.nn as nn

    leaves = [(n, l) for n, l in model.named_sublayers() if isinstance(l, (nn.Linear, nn.Conv2D))]
    chosen, seen = [], set()
    for k, rule in enumerate(rules):
        hits = [(n, l) for n, l in leaves if fnmatch.fnmatchcase(n, rule.name)]
        if not hits:
            names = ", ".join(n for n, _ in leaves[:12]) + (" …" if len(leaves) > 12 else "")
            raise EdgepipeError(f"layers[{k}].name: '{rule.name}' matches no Linear or Conv2D layer (layers: {names})")
        for n, l in hits:
            if n not in seen:
                seen.add(n)
                chosen.append((n, l, rule))
    return chosen


def _latency_plan(layer, rule: LayerRank, plan: dict, x_shape: tuple[int, ...]) -> dict:
    """target: latency: time the layer and its candidate factorisations here; the largest rank
    within `ratio` × the layer's time (any faster one under the other rules) wins, else it stays."""
    import paddle.nn as nn

    from edgepipe.pipeline.compress.layer_timing import time_candidates

    cands, limit = ([] if "skip" in plan else [plan]), 1.0
    if rule.ratio is not None:  # candidates along the MACs budget; the measured time decides
        limit, cands = (
            rule.ratio,
            [
                plan_layer(layer, LayerRank(rule.name, method=rule.method, ratio=q))
                for q in (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
            ],
        )
        cands = [
            c for k, c in enumerate(cands) if "skip" not in c and c["ranks"] not in [d["ranks"] for d in cands[:k]]
        ]
    if not cands:
        return plan
    linear = isinstance(layer, nn.Linear)
    geo = {"in": layer.weight.shape[0], "out": layer.weight.shape[1]} if linear else _conv_geometry(layer)
    from edgepipe.pipeline.core import distributed

    measured = distributed.on_rank0(  # data-parallel: rank 0 times, every rank chooses by its timings
        time_candidates, "linear" if linear else "conv", {**geo, "bias": layer.bias is not None}, x_shape, cands, limit
    )

    def fits(m):  # within ratio × the layer's time; "faster" alone (limit 1) must hold in every round, not by noise
        if limit < 1.0:
            return m["p50_ms"] < limit * measured["layer_ms"]
        return all(a < b for a, b in zip(m["rounds_ms"], measured["layer_rounds_ms"]))

    ok = [c for c, m in zip(cands, measured["candidates"]) if fits(m)]
    if not ok:
        f = min(measured["candidates"], key=lambda c: c["p50_ms"])
        return {
            **cands[0],
            "latency": measured,
            "skip": f"no factorisation runs within {limit:g}× the layer's measured {measured['layer_ms']:.4f} ms here "
            f"(fastest: {f['method']} at ranks {f['ranks']}, {f['p50_ms']:.4f} ms)",
        }
    best = max(ok, key=lambda c: c["macs_after"])
    ms = measured["candidates"][cands.index(best)]["p50_ms"]
    return {**best, "latency": {**measured, "chosen_ms": ms, "speedup": measured["layer_ms"] / ms}}


def factorize(
    model, rules: tuple[LayerRank, ...], input_shape: tuple[int, ...] | None = None
) -> tuple[object, list[dict], list[dict]]:
    """Factorise the layers the rules name, in place. Returns (model, transforms, per-layer report).
    `input_shape` (without the batch) is needed by rules with `target: latency`.
    The SVDs run on one BLAS thread: the matrices are small, and a BLAS pool sized to the host's
    cores, spinning beside paddle's own threads, made MobileNetV3's factorisation take minutes."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _factorize(model, rules, input_shape)


def _factorize(model, rules: tuple[LayerRank, ...], input_shape) -> tuple[object, list[dict], list[dict]]:
    transforms, report = [], []
    selected = select_layers(model, rules)
    timed = [n for n, _, rule in selected if rule.target == "latency"]
    if timed and input_shape is None:
        raise EdgepipeError("lowrank target: latency needs the model's input shape")
    shapes = input_shapes(model, tuple(input_shape), timed) if timed else {}  # what each timed layer sees
    for name, layer, rule in selected:
        try:
            plan = plan_layer(layer, rule)
            if rule.target == "latency" and name not in shapes:
                plan = {
                    **plan,
                    "skip": "target: latency, but one forward pass of the model never reached this layer to time it",
                }
            elif rule.target == "latency":
                plan = _latency_plan(layer, rule, plan, shapes[name])
        except EdgepipeError as exc:
            raise EdgepipeError(f"layer '{name}': {exc}") from None
        entry = {"layer": name, "rule": rule.rule, **plan}
        report.append(entry)
        if "skip" in plan:
            continue
        chain = build_factored(layer, plan["method"], plan["ranks"], _prefix(name))
        fill_factored(chain, layer, plan["method"], plan["ranks"])
        replace_sublayer(model, name, chain)
        transforms.append(
            {"type": "lowrank", "params": {"layer": name, "method": plan["method"], "ranks": plan["ranks"]}}
        )
    return model, transforms, report
