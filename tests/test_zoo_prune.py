"""Channel pruning is total on paddle.vision's classifiers: each traces, plans and cuts at ratio 0.3
without an exception, has fewer MACs, exports, and its ONNX matches Paddle in onnxruntime; and a cut
that fails midway leaves the model exactly as it was.

Random weights (no download here): what is checked is structure, not accuracy. The large networks
(hundreds of MB of fp32 weights, or 224×224 inputs), and four smaller ones covered elsewhere, are marked `zoo`
and run by `make test-zoo`.
"""

import numpy as np
import pytest

from edgepipe.devices import EdgepipeError


def _zoo(name):
    import paddle.vision.models as M

    return {
        "lenet": (lambda: M.LeNet(num_classes=10), (1, 28, 28)),
        "resnet18": (lambda: M.resnet18(num_classes=10), (3, 64, 64)),
        "mobilenet_v1": (lambda: M.mobilenet_v1(num_classes=10, scale=0.25), (3, 64, 64)),
        "mobilenet_v2": (lambda: M.mobilenet_v2(num_classes=10, scale=0.25), (3, 64, 64)),
        "mobilenet_v3_small": (lambda: M.mobilenet_v3_small(num_classes=10, scale=0.5), (3, 64, 64)),
        "mobilenet_v3_large": (lambda: M.mobilenet_v3_large(num_classes=10, scale=0.35), (3, 64, 64)),
        "shufflenet_v2": (lambda: M.shufflenet_v2_x0_25(num_classes=10), (3, 64, 64)),
        "squeezenet": (lambda: M.squeezenet1_1(num_classes=10), (3, 64, 64)),
        "densenet121": (lambda: M.densenet121(num_classes=10), (3, 64, 64)),
        "resnext50_32x4d": (lambda: M.resnext50_32x4d(num_classes=10), (3, 64, 64)),
        "wide_resnet50_2": (lambda: M.wide_resnet50_2(num_classes=10), (3, 64, 64)),
        "vgg11": (
            lambda: M.vgg11(num_classes=10),
            (3, 224, 224),
        ),  # paddle2onnx: adaptive pool 2x2 -> 7x7 has no ONNX form
        "alexnet": (lambda: M.alexnet(num_classes=10), (3, 224, 224)),  # fixed-size pooling: its own input size
        "googlenet": (lambda: M.googlenet(num_classes=10), (3, 224, 224)),
        "inception_v3": (lambda: M.inception_v3(num_classes=10), (3, 96, 96)),
    }[name]


LARGE = {"resnext50_32x4d", "wide_resnet50_2", "vgg11", "alexnet", "googlenet", "inception_v3"}
NAMES = [
    "lenet",
    "resnet18",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2",
    "squeezenet",
    "densenet121",
    *sorted(LARGE),
]


# resnet18 and densenet121 are covered in the default run by their own tests (test_channel_prune.py, the
# densenet tests below), mobilenet_v1/v3_large by their siblings v2/v3_small: their sweep runs with the zoo
IN_ZOO_RUN = LARGE | {"resnet18", "densenet121", "mobilenet_v1", "mobilenet_v3_large"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.zoo) if n in IN_ZOO_RUN else n for n in NAMES])
def test_every_classifier_prunes_exports_and_matches_paddle(tmp_path, name):
    import paddle

    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels
    from edgepipe.runtime.model.cost import describe
    from edgepipe.runtime.model.session import open_session, predict

    make, shape = _zoo(name)
    paddle.seed(0)
    model = make()
    model.eval()
    base = describe(export_layer(model, shape, tmp_path / "base.onnx"))
    model, changes, rows = prune_channels(model, shape, ChannelRule(ratio=0.3))
    assert changes, f"{name}: nothing pruned"
    assert all("skip" in r or r.get("kept") for r in rows)  # each group pruned, or left alone with its reason
    out = export_layer(model, shape, tmp_path / "pruned.onnx")
    pruned = describe(out)
    assert pruned["macs"] < base["macs"] and pruned["params"] < base["params"]
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    got = predict(open_session(out), x)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_densenet_prunes_nearly_every_group():
    import paddle

    from edgepipe.pipeline.compress.channels.graph import trace

    make, shape = _zoo("densenet121")
    paddle.seed(0)
    groups = trace(make(), shape).groups().values()
    prunable = [s for s in groups if not s.frozen]
    assert len(prunable) >= 0.9 * len(groups), [s.frozen for s in groups if s.frozen][:5]


def test_shufflenet_prunes_its_branch_convs_and_leaves_the_shuffle_alone():
    import paddle

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels

    make, shape = _zoo("shufflenet_v2")
    paddle.seed(0)
    _, changes, rows = prune_channels(make(), shape, ChannelRule(ratio=0.3))
    assert any("branch" in n or "conv1" in n for n in changes)
    reasons = {r["skip"] for r in rows if "skip" in r}
    assert any("transpose" in r or "reshape to the fixed shape" in r for r in reasons)


def test_a_cut_that_fails_midway_leaves_the_model_unchanged(monkeypatch):
    import paddle

    from edgepipe.pipeline.compress.channels import cut as cut_mod
    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels

    make, shape = _zoo("mobilenet_v2")
    paddle.seed(0)
    model = make()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    real, calls = cut_mod._cut_one, []

    def failing(layer, c):
        calls.append(layer)
        if len(calls) == 20:
            raise RuntimeError("injected failure")
        return real(layer, c)

    monkeypatch.setattr(cut_mod, "_cut_one", failing)
    with pytest.raises(EdgepipeError, match="cannot cut .*injected failure.*the model is unchanged"):
        prune_channels(model, shape, ChannelRule(ratio=0.3))
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k].numpy(), v, err_msg=k)


def test_a_cut_model_that_does_not_run_is_rolled_back(monkeypatch):
    import paddle

    from edgepipe.pipeline.compress.channels import cut as cut_mod
    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels

    make, shape = _zoo("resnet18")
    paddle.seed(0)
    model = make()
    before = {k: list(v.shape) for k, v in model.state_dict().items()}
    real = cut_mod.changes_for

    def wrong(g, kept):  # a plan that forgets a consumer: the cut model's shapes no longer fit
        changes = real(g, kept)
        changes.pop(next(n for n, c in changes.items() if "in" in c))
        return changes

    monkeypatch.setattr("edgepipe.pipeline.compress.channels.prune.changes_for", wrong)
    with pytest.raises(EdgepipeError, match="does not run .*the model is unchanged"):
        prune_channels(model, shape, ChannelRule(ratio=0.3))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == before
    model(paddle.zeros([1, *shape]))


def test_a_jit_loaded_model_is_refused_in_one_line(tmp_path):
    import paddle
    from paddle.static import InputSpec

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels

    make, shape = _zoo("lenet")
    paddle.jit.save(make(), str(tmp_path / "m"), input_spec=[InputSpec([None, *shape], "float32", "x")])
    loaded = paddle.jit.load(str(tmp_path / "m"))
    with pytest.raises(EdgepipeError, match="paddle.jit.load'ed model .* give the model's python: or zoo: source"):
        prune_channels(loaded, shape, ChannelRule(ratio=0.3))


def test_round_to_defaults_to_the_profiles_channel_multiple():
    import paddle

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels, resolved
    from edgepipe.pipeline.compress.channels.speed import channel_multiple

    multiple, why = channel_multiple()
    assert multiple >= 1 and why
    assert resolved(ChannelRule()).round_to == multiple and resolved(ChannelRule(round_to=1)).round_to == 1
    make, shape = _zoo("mobilenet_v3_small")
    paddle.seed(0)
    _, _, rows = prune_channels(make(), shape, ChannelRule(ratio=0.3))
    kept = [r["kept"] for r in rows if "kept" in r and r["kept"] < r["channels"]]
    assert kept and all(k % multiple == 0 for k in kept)


def test_speed_compare_measures_both_models_in_interleaved_rounds():
    import copy

    import paddle

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels
    from edgepipe.pipeline.compress.channels.speed import compare

    make, shape = _zoo("resnet18")
    paddle.seed(0)
    model = make()
    parent = copy.deepcopy(model)
    prune_channels(model, shape, ChannelRule(ratio=0.5))
    r = compare(parent, model, shape, rounds=3, seconds=0.05)
    assert r["rounds"] == 3 and r["p50_before_ms"] > 0 and r["p50_after_ms"] > 0
    lo, hi = r["speedup_range"]  # no speed asserted here: timings belong in benchmarks, not unit tests
    assert 0 < lo <= hi and r["slower"] == (hi < 1.0)
    assert abs(r["speedup"] - r["p50_before_ms"] / r["p50_after_ms"]) < 1e-9


def _users_net():
    """A user's own nn.Layer with a channel split, a concat, grouped convs and a squeeze-excite gate."""
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F

    class Net(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem, self.bn = nn.Conv2D(3, 32, 3, padding=1), nn.BatchNorm2D(32)
            self.a, self.b = nn.Conv2D(16, 16, 3, padding=1), nn.Conv2D(16, 16, 3, padding=1)
            self.g1 = nn.Conv2D(32, 64, 1)
            self.g2 = nn.Conv2D(64, 64, 3, padding=1, groups=8)
            self.g2bn = nn.BatchNorm2D(64)
            self.g3 = nn.Conv2D(64, 32, 1)
            self.se1, self.se2 = nn.Conv2D(32, 8, 1), nn.Conv2D(8, 32, 1)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.bn(self.stem(x)))
            p, q = paddle.split(x, 2, axis=1)
            x = paddle.concat([F.relu(self.a(p)), F.relu(self.b(q))], axis=1)
            y = self.g3(F.relu(self.g2bn(self.g2(F.relu(self.g1(x))))))
            s = F.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
            return self.head(paddle.flatten(F.adaptive_avg_pool2d(y * s + x, 1), 1))

    return Net()


def test_a_users_model_with_split_concat_se_and_grouped_convs_prunes(tmp_path):
    import paddle

    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels
    from edgepipe.runtime.model.cost import describe
    from edgepipe.runtime.model.session import open_session, predict

    shape = (3, 16, 16)
    paddle.seed(0)
    model = _users_net()
    model.eval()
    base = describe(export_layer(model, shape, tmp_path / "base.onnx"))
    model, changes, rows = prune_channels(model, shape, ChannelRule(ratio=0.5, round_to=1))
    # the grouped conv loses whole groups (64 channels in groups of 8 -> 4 of them kept), its producer and
    # consumer follow
    assert (
        len(changes["g2"]["depthwise"]) == 32 and model.g2._groups == 4 and list(model.g2.weight.shape) == [32, 8, 3, 3]
    )
    assert len(changes["g1"]["out"]) == 32 and len(changes["g3"]["in"]) == 32 and len(changes["se1"]["out"]) == 4
    assert any("split through a channel group" in r.get("skip", "") for r in rows)  # the stem the split cuts in half
    out = export_layer(model, shape, tmp_path / "pruned.onnx")
    assert describe(out)["macs"] < base["macs"]
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(predict(open_session(out), x), ref, rtol=1e-3, atol=1e-4)


def test_bn_scale_on_densenet_leaves_the_groups_normalised_after_a_concat_alone():
    import paddle

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels

    make, shape = _zoo("densenet121")
    paddle.seed(0)
    _, changes, rows = prune_channels(make(), shape, ChannelRule(ratio=0.3, criterion="bn_scale"))
    assert changes and any("criterion bn_scale: no BatchNorm of its own" in r.get("skip", "") for r in rows)
