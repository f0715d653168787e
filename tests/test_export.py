import numpy as np
import onnx
import pytest
from onnx_models import CONV_MLP_MACS, CONV_MLP_PARAMS, conv_mlp

from edgepipe.devices import EdgepipeError
from edgepipe.export.paddle_onnx import ParityError, _run_paddle2onnx, check_parity, export_layer
from edgepipe.export.quantize import QuantOptions, quantize_static
from edgepipe.pipeline.models.builtin import ModelSpec, build_model
from edgepipe.pipeline.training import predict_logits
from edgepipe.runtime.model.cost import describe
from edgepipe.runtime.model.session import open_session, predict

SPEC = ModelSpec(conv=(4, 8), fc=(16,))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import paddle

    paddle.seed(0)
    layer = build_model(SPEC)
    path = export_layer(layer, SPEC.input_shape, tmp_path_factory.mktemp("exp") / "m.onnx", name="tiny")
    return layer, path


def test_export_matches_paddle_and_is_clean(exported):
    layer, path = exported
    x = np.random.default_rng(1).standard_normal((16, 1, 28, 28)).astype(np.float32)
    parity = check_parity(path, predict_logits(layer, x), x)
    assert parity["max_abs_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert "Constant" not in ops and "Identity" not in ops  # weights are initializers, graph folded
    assert predict(open_session(path), x[:3]).shape == (3, 10)  # dynamic batch


def test_cost_of_exported_model_is_counted_exactly(exported):
    _, path = exported
    d = describe(path)
    # conv1 4@28² ×9, conv2 8@14² ×36, fc1 392×16, fc2 16×10
    assert d["macs"] == 4 * 784 * 9 + 8 * 196 * 36 + 392 * 16 + 16 * 10
    assert d["params"] == 40 + 296 + 392 * 16 + 16 + 170
    d = describe(conv_mlp(path.parent / "hand.onnx"))
    assert (d["macs"], d["params"]) == (CONV_MLP_MACS, CONV_MLP_PARAMS)


def test_parity_failure_names_output_and_size(exported, tmp_path):
    layer, path = exported
    model = onnx.load(str(path))
    w = model.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr += 0.5
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    x = np.random.default_rng(2).standard_normal((8, 1, 28, 28)).astype(np.float32)
    with pytest.raises(ParityError, match=r"tiny: ONNX output 0 differs from Paddle by up to [0-9.e+-]+ \(tolerance"):
        check_parity(bad, predict_logits(layer, x), x, name="tiny")


def test_paddle2onnx_failure_is_one_clear_error(tmp_path):
    (tmp_path / "m.json").write_text("{broken")
    (tmp_path / "m.pdiparams").write_bytes(b"")
    with pytest.raises(EdgepipeError, match="paddle2onnx (failed|crashed) converting broken-model") as exc:
        _run_paddle2onnx(tmp_path / "m.json", tmp_path / "m.pdiparams", tmp_path / "o.onnx", 13, "broken-model")
    assert "\n" not in str(exc.value) and not (tmp_path / "o.onnx").exists()


def test_static_int8_is_smaller_and_close(tmp_path):
    """With the int8 preset edgepipe picks for this host: plain u8×s8 (no reduce_range) saturates on
    x86 CPUs without VNNI, where this model's top-1 agreement falls to 0.84 (0.99 in reference math)."""
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile

    profile = detect_profile(detect_host())
    path = conv_mlp(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    out = quantize_static(
        path, tmp_path / "m.int8.onnx", calib, QuantOptions.from_profile(profile) if profile else QuantOptions()
    )
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    d32, d8 = describe(path), describe(out)
    assert d8["bytes"] < 0.5 * d32["bytes"] and d8["params"] == d32["params"] and d8["macs"] == d32["macs"]
    x = rng.standard_normal((200, 1, 8, 8)).astype(np.float32)
    a, b = predict(open_session(path), x), predict(open_session(out), x)
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.9
    with pytest.raises(EdgepipeError, match="calibration data is empty"):
        quantize_static(path, tmp_path / "e.onnx", calib[:0])


@pytest.mark.parametrize("grid,side", [(3, 1), (3, 5)])  # 1 -> 3 (VGG's 1×1 map into AdaptiveAvgPool2D(7)), 5 -> 3
def test_adaptive_pool_that_does_not_divide_its_input_exports_as_an_equivalent_graph(tmp_path, grid, side):
    """paddle2onnx turns these into an AveragePool onnxruntime rejects (zero strides) or cannot express;
    the export rewrites them as matrix products and the parity check holds against the original layer."""
    import paddle
    import paddle.nn as nn

    from edgepipe.export.paddle_fix import averaging_matrix, uneven_adaptive_pools

    paddle.seed(0)
    layer = nn.Sequential(
        nn.Conv2D(3, 4, 3, padding=1),
        nn.AdaptiveMaxPool2D(side),
        nn.AdaptiveAvgPool2D(grid),
        nn.Flatten(),
        nn.Linear(4 * grid * grid, 5),
    )
    layer.eval()
    x = np.random.default_rng(0).standard_normal((6, 3, 10, 10)).astype(np.float32)
    fixed, replaced = uneven_adaptive_pools(layer, (3, 10, 10))
    assert (
        replaced == ["2"] and fixed is not layer and isinstance(layer[2], nn.AdaptiveAvgPool2D)
    )  # the original untouched
    path = export_layer(layer, (3, 10, 10), tmp_path / "p.onnx", name="pool")
    parity = check_parity(path, predict_logits(layer, x), x)
    assert parity["max_abs_diff"] < 1e-4
    assert "AveragePool" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    a = averaging_matrix(5, 3)  # windows [0,2), [1,4), [3,5) as Paddle's adaptive pooling takes them
    assert np.allclose(a.sum(1), 1) and np.allclose(a[1], [0, 1 / 3, 1 / 3, 1 / 3, 0])
