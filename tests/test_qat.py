"""QAT: the fake quantizers reproduce onnxruntime's integer arithmetic, so a QAT-trained float model
quantized by onnxruntime with the learned ranges computes what training simulated."""

import numpy as np
import pytest

from edgepipe.devices import EdgepipeError


@pytest.fixture(scope="module")
def small_net():
    import paddle

    from edgepipe.pipeline.models.builtin import ModelSpec, build_model

    paddle.seed(0)
    return build_model(ModelSpec(conv=(4, 8), fc=(16,)))


def _x(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


def test_fake_quant_weights_use_onnxruntime_grids():
    import paddle

    from edgepipe.pipeline.compress.qat import fake_quant_weight

    w = paddle.to_tensor(np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32))
    for bits, levels in ((8, 255), (4, 16)):
        q = fake_quant_weight(w, bits, axis=0).numpy()
        for c in range(3):
            absmax = np.abs(w.numpy()[c]).max()
            scale = absmax / 127 if bits == 8 else absmax * 2 / 15
            ints = q[c] / scale
            np.testing.assert_allclose(ints, np.round(ints), atol=1e-3)  # on the grid
            assert len(np.unique(np.round(ints))) <= levels
    with pytest.raises(EdgepipeError, match="weight_bits: 3 is not supported"):
        fake_quant_weight(w, 3, axis=0)


@pytest.mark.parametrize("bits, weight_type", [(8, "s8"), (4, "s4")])
def test_onnxruntime_integer_model_matches_the_qat_simulation(small_net, tmp_path, bits, weight_type):
    import copy

    import paddle

    from edgepipe.export.guard import run_outputs
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.export.quantize import QuantOptions, quantize_static
    from edgepipe.pipeline.compress.qat import learned_ranges, onnx_overrides, unwrap, wrap
    from edgepipe.pipeline.training import predict_logits
    from edgepipe.runtime.judge.fidelity import sqnr_db

    net = copy.deepcopy(small_net)
    order = wrap(net, bits)
    net.train()
    with paddle.no_grad():
        for i in range(4):
            net(paddle.to_tensor(_x(32, seed=i)))
    x = _x(256, seed=9)
    simulated = predict_logits(net, x)  # eval mode: fake quantization with the learned ranges
    layers = learned_ranges(order, net)
    assert [entry["op"] for entry in layers] == ["conv", "conv", "linear", "linear"]
    unwrap(net)
    plain_float = predict_logits(net, x)
    fp32 = export_layer(net, (1, 28, 28), tmp_path / "f.onnx", name="qat-test")
    overrides = onnx_overrides(fp32, layers)
    assert len(overrides) == 4
    q = quantize_static(fp32, tmp_path / "q.onnx", _x(64, seed=5), QuantOptions(weight_type=weight_type), overrides)
    deployed = next(iter(run_outputs(q, x).values()))
    # Same integer grids for weights and layer inputs; onnxruntime also quantizes a few tensors QAT
    # does not simulate (e.g. the last layer's output), so the match is close, not exact.
    assert sqnr_db(simulated, deployed, per_channel=False) > 30
    if bits == 4:  # 4-bit weights change the function a lot: the deployed model follows QAT, not the float net
        assert sqnr_db(simulated, deployed, per_channel=False) > sqnr_db(simulated, plain_float, per_channel=False) + 15
    assert (deployed.argmax(1) == simulated.argmax(1)).mean() >= 0.95


def test_overrides_refuse_a_graph_that_does_not_match(small_net, tmp_path):
    from onnx_models import conv_mlp

    from edgepipe.pipeline.compress.qat import onnx_overrides

    layers = [{"layer": "conv1", "op": "conv", "weight_shape": [4, 1, 3, 3], "rmin": 0.0, "rmax": 1.0}]
    with pytest.raises(EdgepipeError, match="2 Conv/MatMul nodes but QAT trained 1 layers"):
        onnx_overrides(conv_mlp(tmp_path / "m.onnx"), layers)
    layers.append({"layer": "fc1", "op": "linear", "weight_shape": [99, 10], "rmin": 0.0, "rmax": 1.0})
    with pytest.raises(EdgepipeError, match="node 'fc' has weight \\[256, 10\\], QAT layer 'fc1' has \\[99, 10\\]"):
        onnx_overrides(tmp_path / "m.onnx", layers)
