"""Data-driven channel scorers (taylor, apoz, activation), the sensitivity analysis, and the
per-group ratios chosen from it to meet a target."""

import copy

import numpy as np
import paddle
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.cut import changes_for, cut_copy
from edgepipe.pipeline.compress.channels.graph import trace
from edgepipe.pipeline.compress.channels.prune import ChannelRule, Target, candidates, prune_channels
from edgepipe.pipeline.compress.channels.sensitivity import Sensitivity, allocate, analyse, estimate, geometry, write
from edgepipe.pipeline.core.artifact import count_parameters
from edgepipe.pipeline.models.builtin import ModelSpec, build_model

SHAPE = (1, 28, 28)


def seed_cnn():
    paddle.seed(0)
    m = build_model(ModelSpec(conv=(8, 16), fc=(32,)))
    m.eval()
    return m


def samples(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *SHAPE)).astype("float32"), rng.integers(0, 10, n).astype("int64")


def silence(model, conv: str, channels, consumer: str | None = None):
    """Make `channels` of `conv` useless: zero filters and a negative bias (never positive, so a
    following ReLU outputs 0), and optionally zero what `consumer` reads from them."""
    layer = dict(model.named_sublayers())[conv]
    w, b = layer.weight.numpy(), layer.bias.numpy()
    w[channels], b[channels] = 0, -1.0
    layer.weight.set_value(w)
    layer.bias.set_value(b)
    if consumer:
        nxt = dict(model.named_sublayers())[consumer]
        v = nxt.weight.numpy()
        v[:, channels] = 0
        nxt.weight.set_value(v)


@pytest.mark.parametrize("criterion", ["taylor", "apoz", "activation"])
def test_data_scorers_remove_the_channels_that_carry_nothing(criterion):
    model = seed_cnn()
    dead = [0, 2, 4, 6]
    silence(model, "conv1", dead, consumer="conv2" if criterion == "taylor" else None)
    x, y = samples()
    before = model(paddle.to_tensor(x)).numpy()
    model, changes, rows = prune_channels(
        model, SHAPE, ChannelRule(round_to=1, ratio=0.5, layers=("conv1",), criterion=criterion), (x, y)
    )
    assert changes["conv1"]["out"] == [1, 3, 5, 7]  # the silenced half went, the live half stayed
    after = model(paddle.to_tensor(x)).numpy()
    if criterion == "taylor":  # nothing downstream read the removed channels: same function
        np.testing.assert_allclose(after, before, atol=1e-4)


def test_data_scorers_need_data_and_taylor_needs_labels():
    with pytest.raises(EdgepipeError, match="needs training samples"):
        prune_channels(seed_cnn(), SHAPE, ChannelRule(round_to=1, criterion="apoz"))
    x, _ = samples()
    with pytest.raises(EdgepipeError, match="taylor needs labelled samples"):
        prune_channels(seed_cnn(), SHAPE, ChannelRule(round_to=1, criterion="taylor"), (x, None))


def test_scoring_leaves_no_gradients_or_hooks_behind():
    model = seed_cnn()
    x, y = samples()
    ref = model(paddle.to_tensor(x)).numpy()
    prune_channels(copy.deepcopy(model), SHAPE, ChannelRule(round_to=1, criterion="taylor"), (x, y))
    g = trace(model, SHAPE)
    from edgepipe.pipeline.compress.channels.importance import activation_stats

    activation_stats(model, g, candidates(g, ChannelRule(round_to=1))[0], x, y, "taylor")
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.parameters())
    np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), ref, atol=1e-6)
    assert not model.training


@pytest.mark.parametrize("name", ["seed-cnn", "resnet-spec"])
def test_estimate_counts_what_the_cut_model_has(name):
    model = seed_cnn() if name == "seed-cnn" else build_model(ModelSpec(family="resnet", conv=(8, 16), fc=()))
    model.eval()
    g = trace(model, SHAPE)
    hw = geometry(model, SHAPE)
    assert estimate(model, hw, {})[0] == count_parameters(model)
    roots, _ = candidates(g, ChannelRule(round_to=1))
    rng = np.random.default_rng(0)
    for _ in range(3):
        kept = {r: np.sort(rng.choice(g.spaces[r].size, max(1, g.spaces[r].size // 3), replace=False)) for r in roots}
        changes = changes_for(g, kept)
        params, macs = estimate(model, hw, changes)
        cut = cut_copy(model, changes)
        assert params == count_parameters(cut)
        assert macs == estimate(cut, geometry(cut, SHAPE), {})[1]  # shapes of the real cut model agree


def test_sensitivity_writes_json_and_png(tmp_path):
    model = seed_cnn()
    val = samples(100, seed=1)
    doc, g, aux = analyse(model, SHAPE, ChannelRule(round_to=1), Sensitivity(ratios=(0.25, 0.5, 0.75)), val)
    assert {tuple(grp["group"]) for grp in doc["groups"]} == {("conv1",), ("conv2",), ("fc1",)}
    for grp in doc["groups"]:
        assert [p["ratio"] for p in grp["points"]] == [0.25, 0.5, 0.75]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in grp["points"])
        assert grp["points"][0]["params"] > grp["points"][-1]["params"]
    # each point is the cut model's real accuracy on val
    p = doc["groups"][0]["points"][1]
    model2, _, _ = prune_channels(
        copy.deepcopy(model), SHAPE, ChannelRule(round_to=1, ratio=0.5, layers=tuple(doc["groups"][0]["group"]))
    )
    from edgepipe.pipeline.training import evaluate

    assert evaluate(model2, *val) == pytest.approx(p["accuracy"])
    files = write(doc, tmp_path)
    assert [f.name for f in files] == ["sensitivity.json", "sensitivity.png"]
    assert files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files[1].stat().st_size > 5000
    assert not list(tmp_path.glob("*.tmp*"))


def test_allocation_thins_the_insensitive_group_first():
    model = seed_cnn()
    doc, g, aux = analyse(
        model, SHAPE, ChannelRule(round_to=1), Sensitivity(ratios=(0.25, 0.5, 0.75)), samples(50, seed=2)
    )
    base = doc["baseline"]["accuracy"]
    for grp in doc["groups"]:  # fc1 costs nothing to thin, the convs cost a lot
        for p in grp["points"]:
            p["accuracy"] = base if grp["group"] == ["fc1"] else base - 0.5 * p["ratio"]
    alloc = allocate(model, doc, g, aux, Target(params=0.5), ChannelRule(round_to=1))
    names = {grp["root"]: grp["group"][0] for grp in doc["groups"]}
    assert {names[r] for r in alloc["ratios"]} == {"fc1"} and alloc["predicted_loss"] == 0.0
    assert alloc["params"] <= 0.5 * doc["baseline"]["params"]
    pruned, _, _ = prune_channels(copy.deepcopy(model), SHAPE, ChannelRule(round_to=1), ratios=alloc["ratios"])
    assert count_parameters(pruned) == alloc["params"]
    with pytest.raises(EdgepipeError, match="target macs 0.01"):
        allocate(model, doc, g, aux, Target(macs=0.01), ChannelRule(round_to=1))


def test_target_and_sensitivity_settings_are_checked():
    for bad, match in [
        ({}, "exactly one"),
        ({"macs": 0.5, "params": 0.5}, "not params and macs"),
        ({"macs": 1.5}, "macs"),
    ]:
        with pytest.raises(EdgepipeError, match=match):
            Target(**bad)
    with pytest.raises(EdgepipeError, match="increasing"):
        Sensitivity(ratios=(0.5, 0.2))
    with pytest.raises(EdgepipeError, match="in \\(0, 1\\)"):
        Sensitivity(ratios=(0.5, 1.0))


def test_latency_target_bisects_the_greedy_path_with_measured_times():
    model = seed_cnn()
    doc, g, aux = analyse(
        model, SHAPE, ChannelRule(round_to=1), Sensitivity(ratios=(0.25, 0.5, 0.75)), samples(50, seed=2)
    )
    from edgepipe.pipeline.compress.channels.sensitivity import latency_probe

    probe = latency_probe(model, SHAPE, g, aux, doc, ChannelRule(round_to=1))
    assert probe({}) > 0  # a real export and onnxruntime measurement

    calls = []

    def fake_ms(ratios):  # a stand-in clock: time proportional to the estimated MACs, so the answer is known
        from edgepipe.pipeline.compress.channels.prune import keep_count

        kept = {r: np.arange(keep_count(g.spaces[r].size, v, 1)) for r, v in ratios.items()}
        calls.append(ratios)
        return estimate(model, aux["hw"], changes_for(g, kept))[1] / 1e6

    alloc = allocate(model, doc, g, aux, Target(latency=0.5), ChannelRule(round_to=1), fake_ms)
    assert alloc["latency"]["pruned_ms"] <= 0.5 * alloc["latency"]["unpruned_ms"]
    by_macs = allocate(model, doc, g, aux, Target(macs=0.5), ChannelRule(round_to=1))
    assert alloc["ratios"] == by_macs["ratios"]  # the first step of the same path under half
    assert alloc["steps"] == by_macs["steps"]
    # the path has at most 9 steps (3 groups × 3 ratios): unpruned + last + bisection = at most 2 + 4 probes
    assert len(calls) == alloc["latency"]["probes"] <= 6
    with pytest.raises(EdgepipeError, match="target latency 0.01"):
        allocate(model, doc, g, aux, Target(latency=0.01), ChannelRule(round_to=1), fake_ms)
