"""Regenerate the two GEMM graphs the roofline microbenchmark runs (needs the `onnx` package;
the runner itself only loads the .onnx files, so a device needs no onnx).

    python runtime/kernels/make_kernels.py      # rewrites gemm_fp32.onnx and gemm_int8.onnx
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


KERNELS = {
    "gemm_fp32.onnx": lambda: gemm(TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"),
    "gemm_int8.onnx": lambda: gemm(TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, "MatMulInteger"),
}

if __name__ == "__main__":
    for name, make in KERNELS.items():
        (HERE / name).write_bytes(make().SerializeToString())
        print("wrote", HERE / name)
