import numpy as np
import paddle
import paddle.nn as nn
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.graph import trace
from edgepipe.pipeline.compress.channels.prune import ChannelRule, LayerRatio, prune_channels
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


class ResidualNet(nn.Layer):
    """stem conv -> BN -> relu, then x + bn(conv(x)): the block's conv and the stem are tied by the add."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2D(3, 16, 3, padding=1), nn.BatchNorm2D(16)
        self.conv, self.bn = nn.Conv2D(16, 16, 3, padding=1), nn.BatchNorm2D(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.stem_bn(self.stem(x)))
        x = paddle.nn.functional.relu(x + self.bn(self.conv(x)))
        return self.head(paddle.flatten(paddle.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ConcatNet(nn.Layer):
    """two branches concatenated on channels, then a conv and a Linear over the flattened map."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2D(3, 8, 3, padding=1), nn.Conv2D(3, 6, 1)
        self.mix = nn.Conv2D(14, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 8 * 8, 4)

    def forward(self, x):
        x = paddle.nn.functional.relu(paddle.concat([self.a(x), self.b(x)], axis=1))
        x = paddle.nn.functional.relu(self.mix(x))
        return self.fc(paddle.flatten(x, 1))


MODELS = {
    "seed-cnn": (lambda: build_model(ModelSpec(conv=(16, 32), fc=(64,))), (1, 28, 28)),
    "resnet-spec": (lambda: build_model(ModelSpec(family="resnet", conv=(8, 16), fc=(12,))), (1, 28, 28)),
    "residual": (ResidualNet, (3, 8, 8)),
    "concat": (ConcatNet, (3, 8, 8)),
    "resnet18": (lambda: paddle.vision.models.resnet18(num_classes=10), (3, 32, 32)),
    "mobilenet_v2": (lambda: paddle.vision.models.mobilenet_v2(num_classes=10), (3, 32, 32)),
}


def make(name):
    paddle.seed(0)
    model = MODELS[name][0]()
    model.eval()
    return model, MODELS[name][1]


def kill_half_of_every_group(model, shape):
    """Zero the second half of every prunable group's channels in all its producers, depthwise convs and
    BatchNorms (weights, biases, BN scale and shift), so those channels carry exactly zero everywhere."""
    g = trace(model, shape)
    for root, sp in g.groups().items():
        if sp.frozen or not sp.producers:
            continue
        dead = np.arange(sp.size // 2, sp.size)
        for name, kind in sp.producers + sp.followers:
            layer = g.layers[name]
            w = layer.weight.numpy()
            if kind == "linear":
                w[:, dead] = 0
            elif kind in ("conv", "depthwise", "bn"):
                w[dead] = 0
            layer.weight.set_value(w)
            if layer.bias is not None:
                b = layer.bias.numpy()
                b[dead] = 0
                layer.bias.set_value(b)


@pytest.mark.parametrize("name", list(MODELS))
def test_removing_dead_channels_leaves_the_outputs_unchanged(name):
    model, shape = make(name)
    kill_half_of_every_group(model, shape)
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, *shape)).astype("float32"))
    before = model(x).numpy()
    params_before = sum(int(np.prod(p.shape)) for p in model.parameters())
    model, changes, rows = prune_channels(model, shape, ChannelRule(round_to=1, ratio=0.5, criterion="l1"))
    model.eval()
    after = model(x).numpy()
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) < 0.6 * params_before
    assert any("kept" in r and r["kept"] < r["channels"] for r in rows)


def test_residual_add_cuts_both_sides_when_one_branch_is_named():
    model, shape = make("residual")
    model, changes, rows = prune_channels(model, shape, ChannelRule(round_to=1, ratio=0.5, layers=("conv",)))
    group = next(r for r in rows if "conv" in r["group"])
    assert sorted(group["group"]) == ["conv", "stem"] and group["kept"] == 8
    assert model.stem.weight.shape[0] == 8 and model.conv.weight.shape == [8, 8, 3, 3]
    assert model.stem_bn.weight.shape == [8] and model.bn.weight.shape == [8] and model.head.weight.shape == [8, 4]
    assert not model.bn.training  # the cut layers keep the model's mode
    assert model(paddle.randn([1, *shape])).shape == [1, 4]


def test_frozen_channels_say_why_and_are_left_alone():
    class Grouped(nn.Layer):
        def __init__(self):
            super().__init__()
            # a grouped conv that widens (8 -> 16 in 2 groups) has no whole groups to drop: left alone
            # (one with as many outputs as inputs loses whole groups: tests/test_zoo_prune.py)
            self.c1, self.c2 = nn.Conv2D(3, 8, 1), nn.Conv2D(8, 16, 3, padding=1, groups=2)
            self.c3 = nn.Conv2D(16, 6, 1)

        def forward(self, x):
            x = self.c3(self.c2(self.c1(x)))
            return paddle.transpose(x, [0, 2, 3, 1])  # an op the graph does not model

    paddle.seed(0)
    model = Grouped()
    model, changes, rows = prune_channels(model, (3, 8, 8), ChannelRule(round_to=1, ratio=0.5))
    why = {r["group"][0]: r.get("skip") for r in rows}
    assert "grouped convolution c2" in why["c1"] and "grouped convolution c2" in why["c2"]
    assert "pd_op.transpose" in why["c3"]
    assert changes == {} and model.c1.weight.shape == [8, 3, 1, 1]


def test_every_op_kind_has_a_handler_and_one_that_fails_freezes_what_it_reads(monkeypatch):
    from edgepipe.pipeline.compress.channels import ops

    assert {"conv2d", "matmul", "batch_norm", "add", "relu", "concat", "split", "reshape", "flatten"} <= set(
        ops.HANDLERS
    )
    model, shape = make("residual")
    stem = next(sp for sp in trace(model, shape).groups().values() if ("stem", "conv") in sp.producers)
    assert stem.frozen is None and ("conv", "conv") in stem.producers  # tied through the residual add

    def broken(t, o):
        raise RuntimeError("injected")

    monkeypatch.setitem(ops.HANDLERS, "relu", broken)
    groups = trace(model, shape).groups().values()
    stem = next(sp for sp in groups if ("stem", "conv") in sp.producers)
    assert stem.frozen == "op pd_op.relu could not be modelled (RuntimeError)"
    assert all(sp.frozen for sp in groups)  # nothing downstream of the unmodelled relus is pruned either


def test_round_to_and_skip_and_per_layer_ratios():
    model, shape = make("resnet18")
    model, changes, rows = prune_channels(
        model,
        shape,
        ChannelRule(ratio=0.5, round_to=8, skip=("layer4.*",), per_layer=(LayerRatio("layer1.0.conv1", 0.25),)),
    )
    kept = {r["group"][0]: r for r in rows}
    assert kept["layer1.0.conv1"]["kept"] == 48
    assert all(r["kept"] % 8 == 0 for r in rows if "kept" in r)
    assert all("skip" in r for r in rows if any(n.startswith("layer4.") for n in r["group"] + r["tied"]))
    assert model.layer4[1].conv1.weight.shape[0] == 512


def test_unknown_criterion_missing_batchnorm_and_wrong_shape_are_clear_errors():
    model, shape = make("seed-cnn")
    with pytest.raises(EdgepipeError, match=r"cannot trace the model for input shape \(3, 28, 28\)"):
        prune_channels(model, (3, 28, 28), ChannelRule(round_to=1))
    with pytest.raises(EdgepipeError, match="criterion: unknown 'l3'"):
        prune_channels(model, shape, ChannelRule(round_to=1, criterion="l3"))
    with pytest.raises(EdgepipeError, match="no BatchNorm; use l1"):
        prune_channels(model, shape, ChannelRule(round_to=1, criterion="bn_scale"))


@pytest.mark.parametrize("name", ["seed-cnn", "resnet18", "mobilenet_v2"])
def test_pruned_model_exports_smaller_onnx_that_runs(name, tmp_path):
    from edgepipe.export.guard import run_outputs
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.runtime.model.cost import describe

    model, shape = make(name)
    export_layer(model, shape, tmp_path / "dense.onnx", name=name)
    model, _, _ = prune_channels(
        model, shape, ChannelRule(round_to=1, ratio=0.5, criterion="fpgm" if name == "resnet18" else "l2")
    )
    model.eval()
    export_layer(model, shape, tmp_path / "pruned.onnx", name=name)
    dense, pruned = describe(tmp_path / "dense.onnx"), describe(tmp_path / "pruned.onnx")
    assert pruned["bytes"] < 0.6 * dense["bytes"] and pruned["macs"] < 0.6 * dense["macs"]
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype("float32")
    out = next(iter(run_outputs(tmp_path / "pruned.onnx", x, batch=2).values()))
    np.testing.assert_allclose(out, model(paddle.to_tensor(x)).numpy(), atol=1e-3, rtol=1e-3)
