"""The accuracy guard's second phase (export/guard_search.py): the window of compute nodes whose keeping in
float meets the budget, found in a bounded number of judged trials — on a made-up judge, where the answer
is known, and through guarded_quantize on a model whose first phase is given no steps."""

import numpy as np
import pytest
from onnx_models import outlier_mlp

from edgepipe.export.guard import guarded_quantize, run_outputs
from edgepipe.export.guard_search import compute_nodes, search_window
from edgepipe.export.quantize import QuantOptions

NODES = [f"n{i}" for i in range(51)]  # as many as PP-OCRv4 rec's Conv and MatMul nodes


def judge_needing(culprits: set[str], drop: float = 3.0):
    """A trial function whose drop is 0 where every culprit is kept in float, else `drop`; it logs its windows."""
    log = []

    def trial(window: list[str], k: int):
        log.append(list(window))
        return {"drop_points": 0.0 if culprits <= set(window) else drop, "p50_ms": 10.0 - 0.1 * len(window)}, k

    return trial, log


@pytest.mark.parametrize(
    "culprits, window", [({"n40"}, ["n40"]), ({"n0"}, ["n0"]), ({"n50"}, ["n50"]), ({"n10", "n30"}, NODES[10:31])]
)
def test_the_search_finds_the_smallest_window_within_its_trials(culprits, window):
    trial, log = judge_needing(culprits)
    step, k, record = search_window(trial, NODES, max_drop=1.0, limit=13)
    assert log[k] == window and step["drop_points"] == 0.0 and record["met"]
    assert len(log) == len(record["trials"]) <= 2 * 6 + 1  # 2·⌈log2 51⌉ + 1
    assert record["window"] == [NODES.index(window[0]), NODES.index(window[-1]) + 1]
    named = window[0] if len(window) == 1 else f"{window[0]}..{window[-1]} ({len(window)} nodes)"
    assert record["candidates"] == 51 and record["trials"][k]["kept_float"] == named


def test_the_search_stops_where_nothing_helps_and_at_its_limit():
    trial, log = judge_needing({"absent"})
    step, k, record = search_window(trial, NODES, max_drop=1.0)
    assert not record["met"] and log[-1] == NODES and len(log) == 7  # the prefixes, then the whole list once
    trial, log = judge_needing({"n40"})
    step, k, record = search_window(trial, NODES, max_drop=1.0, limit=8)
    assert len(log) == 8 and record["met"] and len(log[k]) < 51  # the smallest window met so far
    assert search_window(trial, [], max_drop=1.0) is None and search_window(trial, NODES, 1.0, limit=0) is None


def test_the_guard_searches_when_its_first_phase_cannot_help(tmp_path):
    model = outlier_mlp(tmp_path / "o.onnx")
    x = np.random.default_rng(1).standard_normal((400, 16)).astype(np.float32)
    calib, held_out = x[:100], x[100:]
    y = run_outputs(model, held_out)["y"].argmax(1)  # labels: the float model is right on every sample
    assert compute_nodes(model, (), ["fc0"]) == ["fc1", "fc2", "fc3"]
    # no first-phase steps (max_float_layers=0): the search alone keeps fc1 and fc2 (h, the outlier) in float
    g = guarded_quantize(model, tmp_path / "g.onnx", calib, QuantOptions(), held_out, y, 3.0, max_float_layers=0)
    assert g["met"] and g["kept_float"] == ["fc1", "fc2"] and g["chosen_step"] == 1
    search = g["steps"][1]["search"]
    assert search["from_step"] == 0 and search["candidates"] == 4 and search["window"] == [1, 3]
    assert len(search["trials"]) <= 5 and "cost_ms" in search
    # without labels or a task's judge the drop is agreement with fp32: no search
    plain = guarded_quantize(model, tmp_path / "p.onnx", calib, QuantOptions(), held_out, None, 3.0, max_float_layers=0)
    assert not plain["met"] and len(plain["steps"]) == 1
