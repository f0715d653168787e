"""The accuracy guard's second phase: a search over windows of the compute nodes still quantized.

The first phase (guard.py) keeps in float, one step at a time, the node whose quantization adds the
most noise. That finds a layer that stands out; it cannot find damage that is spread over a few layers,
or that the task's metric sees where per-node noise does not (a recognizer that misreads 3 lines of 200).
When the first phase ends over budget, and the drop is judged by labels or a task's metric, this phase
asks that judge directly. With the still-quantized compute nodes in graph order, n of them:

1. the shortest prefix kept in float that brings the drop within budget (a binary search on where it
   ends; the whole list is judged too where no shorter prefix did it: if even that misses the budget,
   nothing among these nodes can help and the search stops);
2. then, keeping that end, the latest start that still meets the budget (a binary search on where the
   window starts) — so one layer that does the damage is found as a window of one.

That is at most 2·⌈log2 n⌉ + 1 trials, each a quantized and judged model, and never more than `limit`.
It assumes that keeping more nodes in float does not make the drop worse, which holds roughly — where
it does not, a trial misleads the search but the result is still a judged model: the smallest window
judged within budget, else the trial that came closest.

Here too are the graph queries on compute nodes that the guard and `quantize --float-box-head` use
(COMPUTE, compute_nodes, producers_of).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the guard's coarse fallback quantizes only these


def within(drop: float, max_drop: float | None) -> bool:
    """Whether a drop in points is within the budget (none: always), up to rounding: 2 lines of 200 lost
    are a drop of 1.0000000000000009 points, within a budget of 1."""
    return max_drop is None or drop <= max_drop + 1e-9


def compute_nodes(model: str | Path, op_types: tuple[str, ...], excluded: list[str]) -> list[str]:
    """The named nodes of `model` whose op is one of `op_types` (COMPUTE where none are given), in
    graph order (the order ONNX requires: every node after the nodes it reads), less the `excluded`."""
    from edgepipe.runtime.model.cost import load_onnx

    ops, skip = set(op_types or COMPUTE), set(excluded)
    return [n.name for n in load_onnx(model).graph.node if n.op_type in ops and n.name and n.name not in skip]


def producers_of(model: str | Path, outputs: list[str]) -> list[str]:
    """The last compute nodes (Conv, MatMul, Gemm) on the way to `outputs`, walking back through the ops
    that only move, reshape or squash values: a head's final layers, to keep in float."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    made_by = {o: n for n in graph.node for o in n.output}
    found, seen, todo = [], set(), list(outputs)
    while todo:
        node = made_by.get(todo.pop(0))  # breadth first: in the order of the outputs
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in COMPUTE:
            found.append(node.name)
        else:
            todo += list(node.input)
    return [n for n in found if n]


class _Spent(Exception):
    """The search has used all its trials."""


class _Windows:
    """Windows nodes[lo:hi] kept in float, each judged once by `trial(nodes, k)` -> (step, path)."""

    def __init__(self, trial: Callable, nodes: list[str], max_drop: float, limit: int, deadline: float | None = None):
        self.trial, self.nodes, self.max_drop, self.limit, self.deadline = trial, nodes, max_drop, limit, deadline
        self.judged: dict[tuple[int, int], tuple[dict, Path]] = {}

    def ok(self, lo: int, hi: int) -> bool:
        """Whether keeping nodes[lo:hi] in float meets the budget (judged the first time it is asked)."""
        if (lo, hi) not in self.judged:
            if len(self.judged) >= self.limit or (self.deadline is not None and time.monotonic() > self.deadline):
                raise _Spent
            self.judged[(lo, hi)] = self.trial(self.nodes[lo:hi], len(self.judged))
        return within(self.judged[(lo, hi)][0]["drop_points"], self.max_drop)

    def search(self) -> None:
        """The shortest prefix within budget, then the latest start that keeps it so."""
        a, b = 0, len(self.nodes)  # nodes[:a] in float misses the budget (none: the step searched from)
        while b - a > 1:
            m = (a + b) // 2
            a, b = (a, m) if self.ok(0, m) else (m, b)
        if not self.ok(0, b):  # the whole list, where no shorter prefix did it
            return
        end, a, b = b, 0, b  # nodes[a:end] in float meets the budget, nodes[b:end] (none) misses it
        while b - a > 1:
            m = (a + b) // 2
            a, b = (m, b) if self.ok(m, end) else (a, m)

    def result(self) -> tuple[dict, Path, tuple[int, int]] | None:
        """The smallest window judged within budget (the first such of that size), else the closest."""
        if not self.judged:
            return None
        met = [w for w in self.judged if self.ok(*w)]
        w = (
            min(met, key=lambda w: w[1] - w[0])
            if met
            else min(self.judged, key=lambda w: self.judged[w][0]["drop_points"])
        )
        return (*self.judged[w], w)


def _name(nodes: list[str]) -> str:
    return nodes[0] if len(nodes) == 1 else f"{nodes[0]}..{nodes[-1]} ({len(nodes)} nodes)" if nodes else "(none)"


def search_window(
    trial: Callable[[list[str], int], tuple[dict, Path]],
    nodes: list[str],
    max_drop: float,
    limit: int = 12,
    deadline: float | None = None,
) -> tuple[dict, Path, dict] | None:
    """Phase two of the guard (the module's docstring): `trial(float_nodes, k)` quantizes with
    `float_nodes` (a window of `nodes`, graph order) kept in float besides what the step searched from
    kept, judges it and returns (its step record, its file); `k` counts the trials from 0. Returns the
    smallest window judged within `max_drop`, else the trial that came closest, as (step, file, record),
    the record saying what was searched and each trial's window, drop and p50; None when `nodes` is
    empty or `limit` is 0. No trial starts after `deadline` (time.monotonic())."""
    w = _Windows(trial, nodes, max_drop, limit, deadline)
    if nodes:
        try:
            w.search()
        except _Spent:
            pass
    found = w.result()
    if found is None:
        return None
    step, path, (lo, hi) = found
    record = {
        "candidates": len(nodes),
        "window": [lo, hi],
        "met": within(step["drop_points"], max_drop),
        "trials": [
            {"kept_float": _name(nodes[a:b]), "drop_points": s["drop_points"], "p50_ms": s["p50_ms"]}
            for (a, b), (s, _) in w.judged.items()
        ],
    }
    return step, path, record


def outcome(steps: list[dict], chosen: int, max_drop: float | None, deadline: float | None) -> dict:
    """guarded_quantize's record: every step, the one written and what it keeps, costs and scores."""
    final = steps[chosen]
    return {
        "steps": steps,
        "chosen_step": chosen,
        "kept_float": final["kept_float"],
        "met": within(final["drop_points"], max_drop),
        "max_drop": max_drop,
        "drop_points": final["drop_points"],
        "agreement": final["agreement"],
        "latency_cost_ms": final["p50_ms"] - steps[0]["p50_ms"],
        **({"task_metric": final["task_metric"]} if "task_metric" in final else {}),
        **({"time_limit_reached": True} if deadline is not None and time.monotonic() > deadline else {}),
    }
