"""Regenerate the graphs the roofline's peak is measured with (needs the `onnx` package; the runner
itself only loads the .onnx files, so a device needs no onnx): GEMMs (MatMul fp32, MatMulInteger
u8×s8) and 3×3 convolutions (Conv fp32, QLinearConv u8×s8) at two shapes, the kernels conv and
matmul layers end up in. A convolution's weights come from ConstantOfShape, which onnxruntime folds
into a constant (so its kernels pre-pack them as a model's), keeping each file a few hundred bytes.

    python runtime/measure/kernels/make_kernels.py      # rewrites every *.onnx here
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).parent


def gemm(a_type: int, b_type: int, y_type: int, op: str) -> onnx.ModelProto:
    a = helper.make_tensor_value_info("A", a_type, ["M", "K"])
    b = helper.make_tensor_value_info("B", b_type, ["K", "N"])
    y = helper.make_tensor_value_info("Y", y_type, ["M", "N"])
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], f"edgepipe_{op.lower()}_peak", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepipe")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv(cin: int, cout: int, hw: int, quantized: bool) -> onnx.ModelProto:
    """A 3×3 convolution, cin -> cout channels on hw×hw (same padding), weights a constant fill."""
    w_type, value = (TensorProto.INT8, 1) if quantized else (TensorProto.FLOAT, 0.01)
    inits = [helper.make_tensor("wshape", TensorProto.INT64, [4], [cout, cin, 3, 3])]
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", w_type, [1], [value]))
    ]
    if quantized:
        inits += [
            helper.make_tensor("xs", TensorProto.FLOAT, [], [0.02]),
            helper.make_tensor("xz", TensorProto.UINT8, [], [128]),
            helper.make_tensor("ws", TensorProto.FLOAT, [], [0.01]),
            helper.make_tensor("wz", TensorProto.INT8, [], [0]),
            helper.make_tensor("ys", TensorProto.FLOAT, [], [0.5]),
            helper.make_tensor("yz", TensorProto.UINT8, [], [128]),
        ]
        nodes.append(
            helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
        )
        io = TensorProto.UINT8
    else:
        nodes.append(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]))
        io = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        f"edgepipe_conv{cin}x{hw}_peak",
        [helper.make_tensor_value_info("x", io, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("y", io, [1, cout, hw, hw])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepipe")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


KERNELS = {
    "gemm_fp32.onnx": lambda: gemm(TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"),
    "gemm_int8.onnx": lambda: gemm(TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, "MatMulInteger"),
    "conv_fp32_64x56.onnx": lambda: conv(64, 64, 56, quantized=False),
    "conv_fp32_256x14.onnx": lambda: conv(256, 256, 14, quantized=False),
    "conv_int8_64x56.onnx": lambda: conv(64, 64, 56, quantized=True),
    "conv_int8_256x14.onnx": lambda: conv(256, 256, 14, quantized=True),
}

if __name__ == "__main__":
    for name, make in KERNELS.items():
        (HERE / name).write_bytes(make().SerializeToString())
        print("wrote", HERE / name)
