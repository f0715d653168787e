"""Tiny ONNX graphs built in the tests themselves (no paddle needed)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_mlp(path, batch_dim="N", seed=0):
    """x[N,1,8,8] -> Conv(4,3x3,pad 1) -> Relu -> Flatten -> MatMul(256x10) -> Add -> y[N,10]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    m = numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32) * 0.1, "m")
    c = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "c")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 10])],
        [w, b, m, c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# Hand count: conv 4*8*8 outputs × 1*3*3 + matmul 256×10; params 36+4+2560+10.
CONV_MLP_MACS = 4 * 8 * 8 * 9 + 256 * 10
CONV_MLP_PARAMS = 36 + 4 + 2560 + 10
