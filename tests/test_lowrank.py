import numpy as np
import paddle
import paddle.nn as nn
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.lowrank import (
    LayerRank,
    build_factored,
    factor_linear,
    factorize,
    fill_factored,
    plan_layer,
)
from edgepipe.pipeline.core.artifact import save_model
from edgepipe.pipeline.models.builtin import ModelSpec, build_model
from edgepipe.pipeline.models.layers import replace_sublayer
from edgepipe.pipeline.models.load import load_model


def factored_copy(layer, method, ranks):
    chain = build_factored(layer, method, ranks, "t_")
    fill_factored(chain, layer, method, ranks)
    chain.eval()
    return chain


def test_svd_linear_at_full_rank_reproduces_the_layer():
    paddle.seed(1)
    fc = nn.Linear(40, 24)
    x = paddle.randn([8, 40])
    chain = factored_copy(fc, "svd", [24])
    assert [tuple(p.shape) for p in chain.parameters()] == [(40, 24), (24, 24), (24,)]
    np.testing.assert_allclose(chain(x).numpy(), fc(x).numpy(), atol=1e-4, rtol=0)


def test_truncated_svd_error_is_the_discarded_singular_values():
    """Eckart–Young: the rank-r factors leave exactly the energy of the dropped singular values."""
    w = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    a, b = factor_linear(w, 7)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    assert a.shape == (30, 7) and b.shape == (7, 20)
    assert np.linalg.norm(w - a @ b) ** 2 == pytest.approx((s[7:] ** 2).sum(), rel=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=2, padding=(1, 2)),
    dict(kernel_size=3, stride=(2, 1), padding=2, dilation=2),
])
@pytest.mark.parametrize("method", ["tucker2", "spatial"])
def test_conv_decompositions_at_full_rank_reproduce_the_layer(method, kwargs):
    paddle.seed(2)
    conv = nn.Conv2D(6, 10, **kwargs)
    x = paddle.randn([2, 6, 11, 13])
    kh, kw = conv.weight.shape[2:]
    ranks = [10, 6] if method == "tucker2" else [min(6 * kh, 10 * kw)]
    chain = factored_copy(conv, method, ranks)
    want = conv(x).numpy()
    got = chain(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_rank_rules_pick_what_they_promise():
    paddle.seed(3)
    fc = nn.Linear(64, 32)
    s = np.linalg.svd(fc.weight.numpy().astype(np.float64), compute_uv=False)
    plan = plan_layer(fc, LayerRank("fc", energy=0.5))
    r = plan["ranks"][0]
    share = np.cumsum(s ** 2) / (s ** 2).sum()
    assert share[r - 1] >= 0.5 > share[r - 2]  # the smallest rank that keeps half the energy
    assert plan["energy_kept"] == pytest.approx(share[r - 1])

    conv = nn.Conv2D(32, 64, 3, padding=1)
    for ratio in (0.2, 0.5):
        p = plan_layer(conv, LayerRank("c", ratio=ratio))
        assert p["macs_after"] <= ratio * p["macs_before"]
        assert p["method"] in ("tucker2", "spatial")
    t = plan_layer(conv, LayerRank("c", method="tucker2", ranks=(16, 8)))
    assert t["ranks"] == [16, 8] and t["params_after"] == 32 * 8 + 8 * 16 * 9 + 16 * 64


def test_layers_that_would_not_get_cheaper_or_cannot_be_factorised_are_left_alone():
    paddle.seed(4)
    assert "not less than the dense" in plan_layer(nn.Linear(16, 8), LayerRank("fc", rank=8))["skip"]
    assert "depthwise" in plan_layer(nn.Conv2D(8, 8, 3, groups=8), LayerRank("dw"))["skip"]
    assert "Linear and Conv2D only" in plan_layer(nn.BatchNorm2D(4), LayerRank("bn"))["skip"]
    assert "Conv2D layers take" in plan_layer(nn.Conv2D(8, 8, 3), LayerRank("c", method="svd"))["skip"]


def test_bad_layer_names_and_ranks_are_clear_errors():
    model = build_model(ModelSpec(conv=(4, 8), fc=(16,)))
    with pytest.raises(EdgepipeError, match=r"layers\[0\].name: 'fcx' matches no Linear or Conv2D layer \(layers: conv1, conv2, fc1, fc2\)"):
        factorize(model, (LayerRank("fcx", rank=2),))
    with pytest.raises(EdgepipeError, match="layer 'fc1': rank 99 exceeds the layer's full rank 16"):
        factorize(model, (LayerRank("fc1", rank=99),))


def test_factorised_artifact_reloads_by_replaying_its_transforms(tmp_path):
    paddle.seed(5)
    spec = ModelSpec(conv=(8, 16), fc=(64,))
    model = build_model(spec)
    model.eval()
    x = paddle.randn([4, 1, 28, 28])
    before = model(x).numpy()
    model, transforms, report = factorize(model, (LayerRank("fc1", rank=8), LayerRank("conv2", method="tucker2", ranks=(8, 4))))
    assert [t["params"]["layer"] for t in transforms] == ["fc1", "conv2"]
    assert report[0]["params_before"] == 16 * 7 * 7 * 64 and report[0]["params_after"] == 8 * (16 * 7 * 7 + 64)
    names = [p.name for p in model.parameters()]
    assert len(names) == len(set(names))  # the optimizer keys its state by these
    after = model(x).numpy()
    assert after.shape == before.shape and not np.allclose(after, before)  # truncated: an approximation
    save_model(tmp_path / "m", model, spec, transforms)
    loaded, info = load_model(tmp_path / "m")
    assert info["transforms"] == transforms
    np.testing.assert_array_equal(loaded(x).numpy(), after)


def test_factorised_model_exports_smaller_and_matches_paddle(tmp_path):
    from edgepipe.export.paddle_onnx import check_parity, export_layer
    from edgepipe.runtime.cost import describe

    paddle.seed(6)
    spec = ModelSpec(conv=(8, 16), fc=(64,))
    model = build_model(spec)
    model.eval()
    export_layer(model, spec.input_shape, tmp_path / "dense.onnx", name="dense")
    model, _, _ = factorize(model, (LayerRank("fc1", rank=4),))
    model.eval()
    export_layer(model, spec.input_shape, tmp_path / "lr.onnx", name="lr")
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    check_parity(tmp_path / "lr.onnx", model(paddle.to_tensor(x)).numpy(), x, atol=1e-4, rtol=1e-3, name="lr")
    dense, lr = describe(tmp_path / "dense.onnx"), describe(tmp_path / "lr.onnx")
    assert lr["params"] < dense["params"] - 40_000 and lr["bytes"] < dense["bytes"] - 160_000
    assert lr["macs"] < dense["macs"]


def test_replace_sublayer_rejects_unknown_names():
    model = build_model(ModelSpec(conv=(4,), fc=()))
    with pytest.raises(EdgepipeError, match="no layer named 'fc9'"):
        replace_sublayer(model, "fc9", nn.Linear(2, 2))
