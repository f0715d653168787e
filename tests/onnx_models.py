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
        helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["f", "m"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "c"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_mlp",
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


def outlier_mlp(path, seed=0):
    """x[N,16] -> fc0 (16x16) -> Relu -> fc1 (16x32) -> Relu -> h -> fc2 (32x16) -> Relu -> fc3 (16x10) -> y.
    Channel 0 of h is ~1000x larger than the other 31 (fc2 scales it back down): per-tensor int8 of h
    spends its whole range on that channel and flattens the rest, so int8 outputs go wrong there,
    while fc0 and fc3 quantize well."""
    rng = np.random.default_rng(seed)
    w = {
        "w0": rng.standard_normal((16, 16)),
        "w1": rng.standard_normal((16, 32)),
        "w2": rng.standard_normal((32, 16)),
        "w3": rng.standard_normal((16, 10)),
    }
    w = {k: (v / np.sqrt(v.shape[0])).astype(np.float32) for k, v in w.items()}
    w["w1"][:, 0] = np.abs(w["w1"][:, 0]) * 1000.0
    w["w2"][0, :] *= 0.001
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a0"], name="fc0"),
        helper.make_node("Relu", ["a0"], ["h0"], name="relu0"),
        helper.make_node("MatMul", ["h0", "w1"], ["a1"], name="fc1"),
        helper.make_node("Relu", ["a1"], ["h"], name="relu1"),
        helper.make_node("MatMul", ["h", "w2"], ["a2"], name="fc2"),
        helper.make_node("Relu", ["a2"], ["h2"], name="relu2"),
        helper.make_node("MatMul", ["h2", "w3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mnist_linear(path, seed=0):
    """x[N,1,28,28] -> Flatten -> MatMul(784x10) -> y[N,10]: the bundled digits' input shape."""
    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((784, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def nms_detector(path, seed=0):
    """A detector ending in NonMaxSuppression, as PaddleDetection exports them with NMS: image[1,3,32,32] and
    scale_factor[1,2] in; boxes[k,4] (scaled back by scale_factor) and scores[k] out, k varying with the image."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 3, 4, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 5, 64], np.int64), "flat"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array([5], np.int64), "five"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([3], np.int64), "three"),
        numpy_helper.from_array(np.array([10], np.int64), "keep"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
        numpy_helper.from_array(np.array([0.5], np.float32), "thr"),
        numpy_helper.from_array(np.array([32.0], np.float32), "px"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["feat"], strides=[4, 4], name="head"),
        helper.make_node("Reshape", ["feat", "flat"], ["f3"]),  # [1, 5, 64]
        helper.make_node("Slice", ["f3", "zero", "four", "one"], ["raw"]),  # axis 1: [1, 4, 64]
        helper.make_node("Sigmoid", ["raw"], ["unit"]),
        helper.make_node("Mul", ["unit", "px"], ["coords"]),
        helper.make_node("Transpose", ["coords"], ["boxes"], perm=[0, 2, 1]),  # [1, 64, 4]
        helper.make_node("Slice", ["f3", "four", "five", "one"], ["logit"]),  # [1, 1, 64]
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("NonMaxSuppression", ["boxes", "score", "keep", "iou", "thr"], ["sel"]),  # [k, 3]
        helper.make_node("Slice", ["sel", "two", "three", "one"], ["idx2"]),  # [k, 1]
        helper.make_node("Flatten", ["idx2"], ["idxf"], axis=0),  # [1, k]
        helper.make_node("Squeeze", ["idxf", "zero"], ["idx"]),  # [k]
        helper.make_node("Squeeze", ["boxes", "zero"], ["boxes0"]),  # [64, 4]
        helper.make_node("Gather", ["boxes0", "idx"], ["picked"], axis=0),  # [k, 4]
        helper.make_node("Concat", ["scale_factor", "scale_factor"], ["sf4"], axis=1),  # [1, 4]
        helper.make_node("Div", ["picked", "sf4"], ["det_boxes"]),
        helper.make_node("Squeeze", ["score", "zero"], ["s1"]),
        helper.make_node("Squeeze", ["s1", "zero"], ["s0"]),  # [64]
        helper.make_node("Gather", ["s0", "idx"], ["det_scores"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "nms_detector",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32]),
            helper.make_tensor_value_info("scale_factor", TensorProto.FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["k", 4]),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["k"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def square_detector(path, size=64):
    """A PicoDet-shaped head without post-processing, made by hand: image[1,3,S,S] in; per stride level
    (8 and 16) class scores [1, cells, 2] and GFL box distributions [1, cells, 32] (reg_max 7) out, in
    PaddleDetection's order (scores, then boxes). Class 0's score at stride 8 is a matched filter for a bright
    16×16 square centred on the cell (a 16×16 mean, sharpened by a sigmoid); every box is one stride from
    the cell's centre on each side. So an image of such squares has known boxes to find."""
    inits = [
        numpy_helper.from_array(np.array([1, -1, 1], np.int64), "flat"),  # [1, cells, 1]
        numpy_helper.from_array(np.array([20.0], np.float32), "gain"),
        numpy_helper.from_array(np.array([-15.0], np.float32), "bias"),
    ]
    dist = np.full((8,), -20.0, np.float32)
    dist[1] = 20.0  # one stride
    nodes = [helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1)]
    scores, boxes = [], []
    for stride in (8, 16):
        n = (size // stride) ** 2
        s = f"s{stride}"
        nodes += [
            helper.make_node(
                "AveragePool",
                ["grey"],
                [f"{s}_avg"],
                kernel_shape=[2 * stride] * 2,
                strides=[stride] * 2,
                pads=[stride // 2] * 2 + [stride + stride // 2 - stride] * 2,
                count_include_pad=1,
            ),
            helper.make_node("Reshape", [f"{s}_avg", "flat"], [f"{s}_cells"]),  # [1, cells, 1]
            helper.make_node("Mul", [f"{s}_cells", "gain"], [f"{s}_g"]),
            helper.make_node("Add", [f"{s}_g", "bias"], [f"{s}_b"]),
        ]
        # class 0: the square's filter at stride 8 (at 16 the mean never reaches the threshold), class 1: never
        inits.append(numpy_helper.from_array(np.array([0.0 if stride == 8 else -40.0, -40.0], np.float32), f"{s}_off"))
        nodes += [
            helper.make_node("Add", [f"{s}_b", f"{s}_off"], [f"{s}_logit"]),  # [1, cells, 2]
            helper.make_node("Sigmoid", [f"{s}_logit"], [f"score_{stride}"]),
        ]
        # the box branch: a 1×1 conv (zero weights, the distribution as its bias) on the level's map, then
        # [1, 32, cells] -> [1, cells, 32] as PicoDet's export lays it out
        inits += [
            numpy_helper.from_array(np.zeros((32, 1, 1, 1), np.float32), f"{s}_bw"),
            numpy_helper.from_array(np.tile(dist, 4), f"{s}_bb"),
            numpy_helper.from_array(np.array([1, 32, -1], np.int64), f"{s}_bshape"),
        ]
        nodes += [
            helper.make_node("Conv", [f"{s}_avg", f"{s}_bw", f"{s}_bb"], [f"{s}_bconv"], name=f"box_conv_{stride}"),
            helper.make_node("Reshape", [f"{s}_bconv", f"{s}_bshape"], [f"{s}_b3"]),
            helper.make_node("Transpose", [f"{s}_b3"], [f"box_{stride}"], perm=[0, 2, 1]),
        ]
        scores.append(helper.make_tensor_value_info(f"score_{stride}", TensorProto.FLOAT, [1, n, 2]))
        boxes.append(helper.make_tensor_value_info(f"box_{stride}", TensorProto.FLOAT, [1, n, 32]))
    outs = scores + boxes
    graph = helper.make_graph(
        nodes,
        "square_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        outs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
