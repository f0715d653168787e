"""Quantization: options from device profiles, 16/8/4-bit static, the accuracy guard rescuing a
model with an outlier activation, explain on a graph with one unfusable op, and QAT whose fake
quantization reproduces the integers onnxruntime computes."""

import numpy as np
import pytest
from onnx_models import conv_mlp, outlier_mlp

from edgepipe.devices import EdgepipeError
from edgepipe.devices.profiles import load_profile
from edgepipe.export.guard import guarded_quantize, node_errors, run_outputs
from edgepipe.export.quantize import QuantOptions, conv_mac_share, quantize_dynamic, quantize_static
from edgepipe.runtime.judge.fidelity import fidelity, sqnr_db
from edgepipe.runtime.model.cost import load_onnx


def test_options_come_from_the_profile_then_overrides():
    avx2 = QuantOptions.from_profile(load_profile("x86-avx2"))
    assert avx2.reduce_range and (avx2.activation_type, avx2.weight_type) == ("u8", "s8")
    assert QuantOptions.from_profile(load_profile("rpi5")).activation_type == "s8"
    assert QuantOptions.from_profile(load_profile("x86-avx2"), reduce_range=False).reduce_range is False
    with pytest.raises(EdgepipeError, match="format: 16-bit activations and 4-bit weights need format: qdq"):
        QuantOptions(format="qoperator", weight_type="s4")


@pytest.mark.parametrize(
    "opts, weight_dtype",
    [
        (QuantOptions(), np.int8),
        (QuantOptions(weight_type="s4"), None),  # int4 weights: stored packed, read back as int8 by onnx
        (QuantOptions(activation_type="u16"), np.int8),
        (QuantOptions(calibration="percentile", percentile=99.9), np.int8),
        (QuantOptions(calibration="entropy"), np.int8),
        (QuantOptions(format="qoperator", per_channel=False), np.int8),
    ],
)
def test_static_variants_run_and_stay_close(tmp_path, opts, weight_dtype):
    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    q = quantize_static(model, tmp_path / "q.onnx", x[:32], opts)
    ref, out = run_outputs(model, x[32:])["y"], run_outputs(q, x[32:])["y"]
    assert sqnr_db(ref, out, per_channel=False) > (8 if opts.weight_type == "s4" else 20)
    if opts.weight_type == "s4":
        m = load_onnx(q)
        assert any(t.data_type == 22 for t in m.graph.initializer)  # TensorProto.INT4


def test_dynamic_warns_only_for_conv_dominated_models(tmp_path):
    mlp = outlier_mlp(tmp_path / "mlp.onnx")
    assert conv_mac_share(mlp) == 0.0
    assert quantize_dynamic(mlp, tmp_path / "d.onnx") == []
    share = conv_mac_share(conv_mlp(tmp_path / "c.onnx"))
    assert share == pytest.approx((4 * 64 * 9) / (4 * 64 * 9 + 256 * 10))  # conv 2,304 of 4,864 MACs: no warning
    assert quantize_dynamic(tmp_path / "c.onnx", tmp_path / "cd.onnx") == []


def test_guard_keeps_the_outlier_layer_in_float_and_meets_the_budget(tmp_path):
    model = outlier_mlp(tmp_path / "o.onnx")
    x = np.random.default_rng(1).standard_normal((600, 16)).astype(np.float32)
    calib, held_out = x[:100], x[100:]
    # without the guard, per-tensor int8 of h wipes out 31 of its 32 channels
    plain = guarded_quantize(model, tmp_path / "plain.onnx", calib, QuantOptions(), held_out, None, max_drop=None)
    assert plain["drop_points"] > 50 and plain["kept_float"] == []
    worst = node_errors(model, tmp_path / "plain.onnx", held_out[:64])[0]
    # fc2 is where the damage shows, and it comes from the Q/DQ pair on its input h, which fc1 makes
    assert worst["node"] == "fc2" and worst["out_sqnr_db"] < 5 and worst["in_sqnr_db"] > 30
    assert worst["input_producers"] == ["fc1"]  # h's own Q/DQ pair flattens 31 of its 32 channels
    g = guarded_quantize(model, tmp_path / "g.onnx", calib, QuantOptions(), held_out, None, max_drop=3.0)
    assert g["met"] and g["drop_points"] <= 3.0 and g["kept_float"] == ["fc2", "fc1"]
    assert g["steps"][0]["worst_node"]["node"] == "fc2" and "p50_ms" in g["steps"][-1]
    weights = {n.name: n.input[1] for n in load_onnx(tmp_path / "g.onnx").graph.node if n.op_type == "MatMul"}
    assert weights["fc0"].endswith("DequantizeLinear_Output") and weights["fc3"].endswith(
        "DequantizeLinear_Output"
    )  # int8
    assert (weights["fc1"], weights["fc2"]) == ("w1", "w2")  # float weights
    inputs = {n.name: n.input[0] for n in load_onnx(tmp_path / "g.onnx").graph.node if n.op_type == "MatMul"}
    assert inputs["fc2"] == "h"  # h is never quantized


def test_guard_gives_up_at_its_limit_and_says_so(tmp_path):
    model = outlier_mlp(tmp_path / "o.onnx")
    x = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    g = guarded_quantize(
        model, tmp_path / "g.onnx", x[:100], QuantOptions(), x[100:], None, max_drop=0.0, max_float_layers=0
    )
    assert not g["met"] and len(g["steps"]) == 1


def test_explain_lists_the_op_that_could_not_be_fused(tmp_path):
    """16-bit activations into the Conv (no 16-bit QLinearConv on CPU) while the MatMul stays 8-bit."""
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    from edgepipe.export.explain import explain
    from edgepipe.export.quantize import ArrayCalibrationReader, quiet_ort_logging

    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    with quiet_ort_logging():
        ort_quantize_static(
            str(model),
            str(tmp_path / "mixed.onnx"),
            ArrayCalibrationReader("x", x),
            quant_format=QuantFormat.QDQ,
            extra_options={"TensorQuantOverrides": {"x": [{"quant_type": QuantType.QUInt16}]}},
        )
    r = explain(tmp_path / "mixed.onnx", seconds=0.05, min_runs=5)
    assert [k["node"] for k in r["integer_kernels"]] and {k["op"] for k in r["integer_kernels"]} == {"QLinearMatMul"}
    assert [f["node"] for f in r["float_compute"]] == ["conv"]
    into_conv = [u for u in r["unfused_qdq"] if u["feeds"] == "Conv 'conv'"]
    assert {u["kind"] for u in into_conv} == {"activation", "weight"} and all(
        u["consumer_runs_in_float"] for u in into_conv
    )
    assert abs(sum(r["time_by_kind"].values()) - 1.0) < 1e-6
    r8 = explain(quantize_static(model, tmp_path / "q8.onnx", x), seconds=0.05, min_runs=5)
    ops = {k["op"] for k in r8["integer_kernels"]}
    assert r8["float_compute"] == [] and "QLinearConv" in ops and ops & {"QGemm", "QLinearMatMul"}


def test_fidelity_against_the_float_model_on_known_outputs():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    assert fidelity(ref, ref) == {"top1_agreement": 1.0, "cosine": 1.0, "sqnr_db": 100.0, "samples": 3}
    swapped = fidelity(ref, ref[:, ::-1])
    assert swapped["top1_agreement"] == 0.0 and swapped["cosine"] == pytest.approx((0 + 0 + 6 / 10) / 3)
    noisy = fidelity(ref, ref + 0.1)  # signal 15, noise 6 × 0.01
    assert noisy["sqnr_db"] == pytest.approx(10 * np.log10(15 / 0.06)) and noisy["top1_agreement"] == 1.0
    assert fidelity(np.zeros((2, 3)), np.zeros((2, 3)))["cosine"] == 1.0  # two silent outputs agree
    assert fidelity(ref[:, :1], ref[:, :1] * 2)["top1_agreement"] is None  # one output: not a classifier


def test_compact_names_keeps_the_graph_and_its_outputs_in_fewer_bytes(tmp_path):
    """Short internal names: the same operators and initializers, bitwise the same outputs,
    fewer bytes; the graph's input and output names (what the device feeds and reads) stay."""
    import subprocess
    import sys

    from edgepipe.export.compact import compact_in_place

    model = conv_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
    q = quantize_static(model, tmp_path / "q.onnx", x[:32], QuantOptions())
    before = load_onnx(q)
    size = q.stat().st_size
    facts = compact_in_place(q, x[32:])
    after = load_onnx(q)
    assert facts["bytes_before"] == size and facts["bytes_after"] == q.stat().st_size < size
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    from onnx import numpy_helper

    def arrays(m):
        return sorted((a.dtype.str, a.shape, a.tobytes()) for a in map(numpy_helper.to_array, m.graph.initializer))

    assert arrays(after) == arrays(before)
    assert all(len(t.name) <= 4 for t in after.graph.initializer) and not after.graph.value_info
    # the CLI flag: the same compaction, reported
    out = tmp_path / "cli.onnx"
    np.savez(tmp_path / "calib.npz", x=x)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.pipeline",
            "quantize",
            str(model),
            "-o",
            str(out),
            "--calibration",
            str(tmp_path / "calib.npz"),
            "--compact-names",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "outputs checked identical" in proc.stdout and out.stat().st_size < size


def test_compact_names_never_reuses_a_name_the_graph_keeps(tmp_path):
    """A graph whose input is called t0: the short names must not collide with it (a collision would
    rewire Add(t0, W) into Add(t0, t0) and still pass the checker)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepipe.export.compact import compact_names
    from edgepipe.runtime.model.session import open_session

    w = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("Add", ["t0", "W"], ["n0"], name="add"), helper.make_node("Relu", ["n0"], ["y"])],
        "g",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    compact_names(tmp_path / "m.onnx", tmp_path / "c.onnx", keep_nodes=("add",))
    c = onnx.load(tmp_path / "c.onnx")
    assert c.graph.node[0].name == "add" and c.graph.initializer[0].name not in ("t0", "n0", "y")
    x = np.array([[-1.5, 1.0]], np.float32)
    assert open_session(tmp_path / "c.onnx").run(None, {"t0": x})[0].tolist() == [[0.0, 3.0]]
