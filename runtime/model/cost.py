"""What an ONNX file costs: parameters and multiply-accumulates per inference (batch 1).

Works for float graphs and for QDQ int8 graphs (Conv/Gemm/MatMul fed by DequantizeLinear),
and for QOperator graphs (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "MatMulNBits"}
# Inputs that hold quantization scales / zero points rather than parameters.
_QPARAM_INPUTS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
    "MatMulNBits": (2, 3),
}
# Operand positions of the data tensors for each op (input, weight).
_OPERANDS = {"QLinearConv": (0, 3), "QLinearMatMul": (0, 3)}


def load_onnx(path: str | Path):
    import onnx

    from edgepipe.runtime.model.modelfile import check_model_file

    path = check_model_file(path).path  # external data only from regular files inside its folder
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise EdgepipeError(f"{path}: not a readable ONNX model ({type(exc).__name__}); re-export it") from None


def count_params(model) -> int:
    qparams, packed = set(), {}
    for node in model.graph.node:
        for i in _QPARAM_INPUTS.get(node.op_type, ()):
            if i < len(node.input):
                qparams.add(node.input[i])
        if node.op_type == "MatMulNBits":  # weights packed into bytes: count K x N, not bytes
            attrs = {at.name: at.i for at in node.attribute}
            packed[node.input[1]] = attrs["K"] * attrs["N"]
    import onnx

    index_types = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL}  # shapes, axes (int32 = quantized biases)
    return int(
        sum(
            packed.get(t.name, int(np.prod(t.dims)))
            for t in model.graph.initializer
            if t.name not in qparams and t.data_type not in index_types
        )
    )


def _shapes(model, inputs: dict | None = None) -> dict[str, list[int]]:
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Exporters store symbolic batch dims in value_info; drop them and pin batch to 1 (and the
    # dynamic dimensions of `inputs` to the sizes given there).
    fixed.graph.ClearField("value_info")
    for vi in list(fixed.graph.input) + list(fixed.graph.output):
        dims = vi.type.tensor_type.shape.dim
        given = (inputs or {}).get(vi.name)
        if given is not None and len(given) == len(dims):
            for d, v in zip(dims, (1, *given[1:])):
                d.dim_value = int(v)
        elif len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def probe_session(model, names: list[str] | None = None):
    """An onnxruntime session returning the model's outputs (or the named intermediate tensors), with
    graph optimisation off so every tensor exists as written. Returns (session, input name, names)."""
    import onnx
    import onnxruntime as ort

    m = load_onnx(model) if isinstance(model, (str, Path)) else model
    if names:
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        m = probe
    else:
        names = [o.name for o in m.graph.output]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return s, s.get_inputs()[0].name, list(names)


def _runtime_shapes(model, names: list[str], inputs: dict | None = None) -> dict[str, list[int]]:
    """Shapes of `names` observed by running the model once at batch 1 with onnxruntime.

    The fallback where static inference stops (e.g. a flatten written as Shape/Slice/Concat/
    Reshape over initializers, which ONNX's data propagation does not follow).
    """
    from edgepipe.runtime.inputs.feeds import random_feeds, signature

    sess, _, names = probe_session(model, names)
    outs = sess.run(names, random_feeds(signature(sess), 1, inputs, what="counting MACs")[0])
    return {n: list(o.shape) for n, o in zip(names, outs)}


def macs_by_op(model, inputs: dict | None = None) -> dict[str, int]:
    """MACs per inference at batch 1, by op type (Conv, MatMul, QLinearConv, ...); `inputs` ({name: shape})
    gives the sizes of dimensions the model leaves dynamic."""
    shapes = _shapes(model, inputs)
    nodes = [n for n in model.graph.node if n.op_type in _CONV or n.op_type in _MATMUL]
    # input, weight and output of each node: a weight behind a contrib DequantizeLinear (4/16-bit)
    # has no shape until onnxruntime computes it
    operands = lambda n: (
        n.input[_OPERANDS.get(n.op_type, (0, 1))[0]],
        n.input[_OPERANDS.get(n.op_type, (0, 1))[1]],
        n.output[0],
    )
    unknown = sorted(
        {
            t
            for n in nodes
            for t in (operands(n) if n.op_type != "MatMulNBits" else n.output[:1])
            if not shapes.get(t) or 0 in shapes[t]
        }
    )
    if unknown:
        shapes.update(_runtime_shapes(model, unknown, inputs))
    total: dict[str, int] = {}
    for node in model.graph.node:
        op = node.op_type
        if op not in _CONV and op not in _MATMUL:
            continue
        if op == "MatMulNBits":  # packed 4-bit weight: K and N are attributes
            attrs = {at.name: at.i for at in node.attribute}
            out = shapes.get(node.output[0])
            if not out:
                raise EdgepipeError(f"cannot infer shapes around {op} node '{node.name}' to count MACs")
            total[op] = total.get(op, 0) + int(np.prod(out)) * attrs["K"]
            continue
        a_idx, b_idx = _OPERANDS.get(op, (0, 1))
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[b_idx])
        a = shapes.get(node.input[a_idx])
        if not out or not w or 0 in out or 0 in w:
            raise EdgepipeError(f"cannot infer shapes around {op} node '{node.name}' to count MACs")
        if op in _CONV:
            total[op] = total.get(op, 0) + int(np.prod(out)) * int(np.prod(w[1:]))  # N*Cout*H*W * (Cin/g)*kh*kw
        else:
            trans_b = any(at.name == "transB" and at.i == 1 for at in node.attribute)
            k = (a[-1] if a else w[0]) if not trans_b else w[-1]
            total[op] = total.get(op, 0) + int(np.prod(out)) * int(k)
    return total


def count_macs(model, inputs: dict | None = None) -> int:
    return sum(macs_by_op(model, inputs).values())


def describe(path: str | Path, inputs: dict | None = None) -> dict:
    """Parameters, MACs (at batch 1; at `inputs`' shapes where the model's are dynamic, and None where
    those are not given), bytes and deflated bytes of an ONNX file."""
    model = load_onnx(path)
    raw = Path(path).read_bytes()
    try:
        macs = count_macs(model, inputs)
        shape = {k: list(v[1:]) for k, v in (inputs or {}).items()}
    except EdgepipeError as exc:
        if "dynamic" not in str(exc):
            raise
        macs, shape = None, None
    # deflated_bytes: what the file costs zipped (zeros from unstructured pruning compress; dense bytes do not change)
    return {
        "params": count_params(model),
        "macs": macs,
        "bytes": len(raw),
        "deflated_bytes": len(zlib.compress(raw, 6)),
        **({"macs_at": shape} if shape else {}),
    }
