"""Choosing how to factorise one layer: its geometry, the parameters and MACs of each form, and the
method and ranks a rule (rank, energy or cost ratio) gives (compress/lowrank.py builds the layers)."""

from __future__ import annotations

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.factor import energy_kept, mode_svds, rank_by_energy, spatial_matrix, svd

# ---------------------------------------------------------------- layer geometry and costs


def _conv_geometry(conv) -> dict:
    """kernel, stride, symmetric padding, dilation of a Conv2D; raises ValueError if unsupported."""

    def pair(v, what):
        v = [v, v] if isinstance(v, int) else list(v)
        if len(v) == 4 and v[0] == v[1] and v[2] == v[3]:  # [top, bottom, left, right], symmetric
            v = [v[0], v[2]]
        if len(v) != 2 or not all(isinstance(a, int) for a in v):
            raise ValueError(f"{what} {v} is not supported (need symmetric integer {what})")
        return v

    if getattr(conv, "_groups", 1) != 1:
        raise ValueError(f"grouped/depthwise conv (groups={conv._groups}) has no channel mode to factorise")
    if getattr(conv, "_data_format", "NCHW") != "NCHW" or getattr(conv, "_padding_mode", "zeros") != "zeros":
        raise ValueError("only NCHW convs with zero padding are supported")
    if isinstance(conv._padding, str):
        raise ValueError(f"padding '{conv._padding}' is not supported (need integer padding)")
    o, i, kh, kw = conv.weight.shape
    return {
        "out": o,
        "in": i,
        "kernel": [kh, kw],
        "stride": pair(conv._stride, "stride"),
        "padding": pair(conv._padding, "padding"),
        "dilation": pair(conv._dilation, "dilation"),
    }


def _macs_per_out_pixel(g: dict, method: str, ranks) -> int:
    """MACs per output position (×H_out·W_out for the layer's total; the same for every method)."""
    o, i, (kh, kw), (sh, sw) = g["out"], g["in"], g["kernel"], g["stride"]
    if method == "dense":
        return o * i * kh * kw
    if method == "tucker2":  # the first 1×1 runs at the input resolution
        ro, ri = ranks
        return i * ri * sh * sw + ri * ro * kh * kw + ro * o
    if method == "spatial":  # the k×1 conv keeps every input column
        (r,) = ranks
        return r * i * kh * sw + o * r * kw
    raise AssertionError(method)


def _params(g: dict, method: str, ranks) -> int:
    o, i, (kh, kw) = g["out"], g["in"], g["kernel"]
    if method == "dense":
        return o * i * kh * kw
    if method == "tucker2":
        ro, ri = ranks
        return i * ri + ri * ro * kh * kw + ro * o
    (r,) = ranks
    return r * i * kh + o * r * kw


# ---------------------------------------------------------------- choosing a method and ranks


def plan_layer(layer, rule) -> dict:  # rule: a compress.lowrank.LayerRank
    """Decide method and ranks for one layer; {'skip': reason} when factorising would not pay."""
    import paddle.nn as nn

    if isinstance(layer, nn.Linear):
        return _plan_linear(layer.weight.numpy(), rule)
    if isinstance(layer, nn.Conv2D):
        try:
            g = _conv_geometry(layer)
        except ValueError as exc:
            return {"skip": str(exc)}
        return _plan_conv(layer.weight.numpy(), g, rule)
    return {"skip": f"{type(layer).__name__} has no low-rank form (Linear and Conv2D only)"}


def _plan_linear(w: np.ndarray, rule) -> dict:
    """A Linear layer's SVD rank from the rule (rank, energy or ratio of the dense cost)."""
    if rule.method not in ("auto", "svd"):
        return {"skip": f"method {rule.method} applies to Conv2D layers; Linear layers take svd"}
    r_rule = rule.rule
    n_in, n_out = w.shape
    full = min(n_in, n_out)
    s = svd(w)[1]
    dense = n_in * n_out
    if "rank" in r_rule:
        r = r_rule["rank"]
    elif "energy" in r_rule:
        r = rank_by_energy(s, r_rule["energy"])
    elif "ratio" in r_rule:
        r = int(r_rule["ratio"] * dense // (n_in + n_out))
    else:
        return {"skip": "ranks (two values) are for tucker2 convs"}
    if r > full:
        raise EdgepipeError(f"rank {r} exceeds the layer's full rank {full} ({n_in}×{n_out})")
    cost = max(r, 1) * (n_in + n_out)
    plan = {"method": "svd", "ranks": [max(r, 1)], "energy_kept": energy_kept(s, max(r, 1))}
    plan |= {"params_before": dense, "params_after": cost, "macs_before": dense, "macs_after": cost}
    if cost >= dense:
        return {**plan, "skip": f"rank {r} costs {cost:,} MACs, not less than the dense {dense:,}"}
    return plan


def _plan_conv(w: np.ndarray, g: dict, rule) -> dict:
    """A Conv2D layer's cheapest factorisation among the methods the rule allows (Tucker-2 over the
    channel modes, or the spatial split), each at the ranks the rule gives."""
    r_rule = rule.rule
    methods = {"auto": ["tucker2", "spatial"], "tucker2": ["tucker2"], "spatial": ["spatial"], "svd": []}
    methods = methods[rule.method]
    if not methods:
        return {"skip": "svd applies to Linear layers; Conv2D layers take tucker2 or spatial"}
    kh, kw = g["kernel"]
    if kh * kw == 1:
        methods = [m for m in methods if m == "tucker2"]
    if "ranks" in r_rule:
        methods = ["tucker2"]
    dense = _macs_per_out_pixel(g, "dense", None)
    candidates = []
    for m in methods:
        ranks, kept = _tucker2_ranks(w, g, r_rule, dense) if m == "tucker2" else _spatial_rank(w, g, r_rule, dense)
        candidates.append(
            {
                "method": m,
                "ranks": ranks,
                "energy_kept": kept,
                "params_before": _params(g, "dense", None),
                "params_after": _params(g, m, ranks),
                "macs_before": dense,
                "macs_after": _macs_per_out_pixel(g, m, ranks),
            }
        )
    best = min(candidates, key=lambda c: c["macs_after"])
    if best["macs_after"] >= dense:
        return {
            **best,
            "skip": f"{best['method']} at ranks {best['ranks']} costs {best['macs_after']:,} "
            f"MACs per output pixel, not less than the original {dense:,}",
        }
    return best


def _tucker2_ranks(w: np.ndarray, g: dict, r_rule: dict, dense: int) -> tuple[list[int], float]:
    """Tucker-2 ranks [out, in] and the share of energy kept (the mean of the two modes')."""
    o, i = g["out"], g["in"]
    (u_o, s_o), (u_i, s_i) = mode_svds(w)
    if "ranks" in r_rule:
        ranks = list(r_rule["ranks"])
    elif "rank" in r_rule:
        ranks = [r_rule["rank"], r_rule["rank"]]
    elif "energy" in r_rule:
        ranks = [rank_by_energy(s_o, r_rule["energy"]), rank_by_energy(s_i, r_rule["energy"])]
    else:  # ratio: scale both channel counts by the same factor until the cost fits
        ranks = [1, 1]
        for f in np.linspace(1.0, 0.01, 100):
            cand = [max(1, round(f * o)), max(1, round(f * i))]
            if _macs_per_out_pixel(g, "tucker2", cand) <= r_rule["ratio"] * dense:
                ranks = cand
                break
    if ranks[0] > o or ranks[1] > i:
        raise EdgepipeError(f"tucker2 ranks {ranks} exceed the layer's channels [{o}, {i}]")
    return ranks, (energy_kept(s_o, ranks[0]) + energy_kept(s_i, ranks[1])) / 2


def _spatial_rank(w: np.ndarray, g: dict, r_rule: dict, dense: int) -> tuple[list[int], float]:
    """The spatial split's rank (a k×1 conv to r channels, then 1×k) and the share of energy kept."""
    o, i, (kh, kw) = g["out"], g["in"], g["kernel"]
    s_sp = svd(spatial_matrix(w))[1]
    full = min(i * kh, o * kw)
    if "rank" in r_rule:
        r = r_rule["rank"]
    elif "energy" in r_rule:
        r = rank_by_energy(s_sp, r_rule["energy"])
    else:
        per_rank = i * kh * g["stride"][1] + o * kw
        r = max(1, int(r_rule["ratio"] * dense // per_rank))
    if r > full:
        raise EdgepipeError(f"spatial rank {r} exceeds the layer's full rank {full}")
    return [r], energy_kept(s_sp, r)
