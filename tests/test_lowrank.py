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


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 5), stride=2, padding=(1, 2)),
        dict(kernel_size=3, stride=(2, 1), padding=2, dilation=2),
    ],
)
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
    share = np.cumsum(s**2) / (s**2).sum()
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
    with pytest.raises(
        EdgepipeError,
        match=r"layers\[0\].name: 'fcx' matches no Linear or Conv2D layer \(layers: conv1, conv2, fc1, fc2\)",
    ):
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
    model, transforms, report = factorize(
        model, (LayerRank("fc1", rank=8), LayerRank("conv2", method="tucker2", ranks=(8, 4)))
    )
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
    from edgepipe.runtime.model.cost import describe

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


def test_layer_graphs_compute_what_the_paddle_layers_compute():
    """The timing graphs are the layers' own ops: with the layer's weights copied in, onnxruntime
    on the graph gives the Paddle layer's output (so a timed graph is the layer that will run)."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgepipe.pipeline.compress.layer_timing import layer_graph
    from edgepipe.pipeline.compress.lowrank import _conv_geometry

    paddle.seed(7)
    conv = nn.Conv2D(6, 10, (3, 5), stride=2, padding=(1, 2))
    fc = nn.Linear(12, 7)
    for layer in (conv, fc):
        layer.bias.set_value(paddle.randn(layer.bias.shape))  # a misplaced bias must show
    rng = np.random.default_rng(1)
    cases = [
        (conv, "conv", {**_conv_geometry(conv), "bias": True}, rng.standard_normal((1, 6, 11, 13)), "spatial", [4]),
        (conv, "conv", {**_conv_geometry(conv), "bias": True}, rng.standard_normal((1, 6, 11, 13)), "tucker2", [5, 3]),
        (fc, "linear", {"in": 12, "out": 7, "bias": True}, rng.standard_normal((1, 12)), "svd", [4]),
    ]
    for layer, kind, geo, x, method, ranks in cases:
        x = x.astype(np.float32)
        chain = factored_copy(layer, method, ranks)
        g = layer_graph(kind, x.shape, geo, method, ranks)
        weights = [p.numpy() for p in chain.parameters()]  # the factors in order, then the bias
        assert len(g.graph.initializer) == len(weights), method
        for init, w in zip(g.graph.initializer, weights):
            assert tuple(init.dims) == w.shape, method
            init.CopyFrom(numpy_helper.from_array(w, init.name))
        sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(
            sess.run(None, {"x": x})[0], chain(paddle.to_tensor(x)).numpy(), atol=1e-4, rtol=1e-4
        )


def test_target_latency_keeps_a_factorisation_only_where_it_measures_faster():
    """Measured for real: a 1024×1024 Linear at rank 16 (32× fewer MACs, a margin no noise closes)
    is faster and is factorised, with its input shape and both times recorded."""
    paddle.seed(8)
    big = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    _, transforms, report = factorize(big, (LayerRank("0", rank=16, target="latency"),), (1024,))
    t = report[0]["latency"]
    assert transforms and t["input_shape"] == [1, 1024] and t["chosen_ms"] < t["layer_ms"] and t["speedup"] > 1


def test_target_latency_ratio_picks_the_largest_rank_within_the_measured_budget(monkeypatch):
    """The decision, with the timer replaced by known times: the ratio bounds the measured time, the
    largest rank within it wins, and with none within it the layer is left alone."""
    from edgepipe.pipeline.compress import layer_timing

    def fake(times):  # times(name, graph) -> the three rounds' p50s
        def time_graphs(graphs, **kw):
            return {n: {"p50_ms": float(np.median(times(n, g))), "rounds_ms": times(n, g)} for n, g in graphs.items()}

        return time_graphs

    def ms_by_rank(n, g):  # the layer: 1.0 ms; a factorisation: proportional to its first weight's rank
        return [1.0] * 3 if n == "layer" else [g.graph.initializer[0].dims[1] / 60] * 3

    paddle.seed(9)
    model = nn.Sequential(nn.Linear(200, 100))
    monkeypatch.setattr(layer_timing, "time_graphs", fake(ms_by_rank))
    _, transforms, report = factorize(model, (LayerRank("0", ratio=0.5, target="latency"),), (200,))
    r = report[0]
    assert "skip" not in r and r["latency"]["chosen_ms"] < 0.5
    fitting = [c["ranks"][0] for c in r["latency"]["candidates"] if c["p50_ms"] < 0.5]
    assert r["ranks"] == [max(fitting)] and len(r["latency"]["candidates"]) > 3
    monkeypatch.setattr(layer_timing, "time_graphs", fake(lambda n, g: [1.0] * 3 if n == "layer" else [2.0] * 3))
    model = nn.Sequential(nn.Linear(200, 100))
    _, transforms, report = factorize(model, (LayerRank("0", rank=8, target="latency"),), (200,))
    assert not transforms and "no factorisation runs within 1×" in report[0]["skip"]
    assert report[0]["latency"]["candidates"][0]["p50_ms"] == 2.0
    # faster in the median but not in every round: noise, so the layer stays
    monkeypatch.setattr(layer_timing, "time_graphs", fake(lambda n, g: [1.0] * 3 if n == "layer" else [0.8, 0.9, 1.1]))
    _, transforms, report = factorize(
        nn.Sequential(nn.Linear(200, 100)), (LayerRank("0", rank=8, target="latency"),), (200,)
    )
    assert not transforms and "skip" in report[0]
