"""Layer (block) pruning: which blocks can become the identity, greedy removal by measured effect,
replay from the artifact, export of the shorter model."""

import copy

import numpy as np
import onnxruntime as ort
import paddle
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.export.paddle_onnx import export_layer
from edgepipe.pipeline.compress.blocks import BlockRule, bypass, removable_blocks, remove_blocks
from edgepipe.pipeline.core.artifact import apply_transforms, count_parameters
from edgepipe.pipeline.models.builtin import ModelSpec, build_model

SPEC = ModelSpec(family="resnet", conv=(8, 16), fc=(), blocks=2)


def tiny_resnet():
    paddle.seed(0)
    m = build_model(SPEC)
    m.eval()
    return m


def test_removable_blocks_are_the_shape_keeping_ones():
    assert removable_blocks(tiny_resnet(), SPEC.input_shape) == [
        "stage1.0",
        "stage1.1",
        "stage2.1",
    ]  # stage2.0 downsamples
    r18 = paddle.vision.models.resnet18(num_classes=10)
    assert removable_blocks(r18, (3, 32, 32)) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    mv2 = paddle.vision.models.mobilenet_v2(num_classes=10)
    blocks = removable_blocks(mv2, (3, 32, 32))
    assert blocks and all(type(dict(mv2.named_sublayers())[b]).__name__ == "InvertedResidual" for b in blocks)
    assert len(blocks) == 10  # the inverted residuals with a skip connection
    assert removable_blocks(build_model(ModelSpec()), (1, 28, 28)) == []  # the seed CNN: every conv changes the shape


def test_removal_picks_the_block_whose_bypass_changes_least():
    model = tiny_resnet()
    quiet = dict(model.named_sublayers())["stage1.1"]
    quiet.bn2.weight.set_value(np.zeros(8, "float32"))  # its residual branch adds nothing: relu(0 + x) = x
    quiet.bn2.bias.set_value(np.zeros(8, "float32"))
    x = np.random.default_rng(0).standard_normal((32, *SPEC.input_shape)).astype("float32")
    y = np.zeros(32, "int64")
    before = model(paddle.to_tensor(x)).numpy()
    model, rounds = remove_blocks(model, SPEC.input_shape, BlockRule(count=1, measure="output"), (x, y))
    assert rounds[0]["removed"] == "stage1.1"
    assert {c["block"] for c in rounds[0]["candidates"]} == {"stage1.0", "stage1.1", "stage2.1"}
    np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), before, atol=1e-5)


def test_removed_blocks_replay_export_and_run(tmp_path):
    model = tiny_resnet()
    x = np.random.default_rng(1).standard_normal((16, *SPEC.input_shape)).astype("float32")
    model, rounds = remove_blocks(model, SPEC.input_shape, BlockRule(count=2), (x, np.zeros(16, "int64")))
    removed = [r["removed"] for r in rounds]
    assert len(removed) == 2 and count_parameters(model) < count_parameters(tiny_resnet())
    rebuilt = apply_transforms(build_model(SPEC), [{"type": "remove_layers", "params": {"layers": removed}}])
    rebuilt.set_state_dict(model.state_dict())
    rebuilt.eval()
    ref = model(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(rebuilt(paddle.to_tensor(x)).numpy(), ref, atol=1e-5)
    full, short = (
        export_layer(tiny_resnet(), SPEC.input_shape, tmp_path / "full.onnx"),
        export_layer(model, SPEC.input_shape, tmp_path / "short.onnx"),
    )
    assert short.stat().st_size < full.stat().st_size
    sess = ort.InferenceSession(str(short), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_resnet18_blocks_bypassed_export(tmp_path):
    paddle.seed(0)
    r18 = paddle.vision.models.resnet18(num_classes=10)
    r18.eval()
    short = bypass(copy.deepcopy(r18), ["layer3.1", "layer4.1"])
    path = export_layer(short, (3, 32, 32), tmp_path / "r18.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("float32")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        sess.run(None, {sess.get_inputs()[0].name: x})[0], short(paddle.to_tensor(x)).numpy(), atol=1e-3
    )
    assert count_parameters(short) < count_parameters(r18) - 4_000_000


def test_block_rule_errors():
    x, y = np.zeros((4, 1, 28, 28), "float32"), np.zeros(4, "int64")
    with pytest.raises(EdgepipeError, match="no removable block"):
        remove_blocks(build_model(ModelSpec()), (1, 28, 28), BlockRule(), (x, y))
    with pytest.raises(EdgepipeError, match="only 3 blocks can be removed"):
        remove_blocks(tiny_resnet(), SPEC.input_shape, BlockRule(count=4), (x, y))
    with pytest.raises(EdgepipeError, match="count"):
        BlockRule(count=0)
