"""Short names for a model bound for a device: the same graph, the same outputs, fewer bytes.

A quantized QDQ file of a small model is largely names: every weight, scale, zero point and
intermediate tensor carries the exporter's and the quantizer's long names (`..._quantized`,
`..._DequantizeLinear_Output`), written once where it is made and again where it is read — in
the seed's compressed student (mnist_max.yaml), names and shape annotations were 8.2 of its
21.6 kB. `compact_names` renames every tensor but the graph's inputs and outputs to t0, t1, …
and every node to n0, n1, …, and drops value_info and doc strings (onnxruntime infers shapes
itself). Operators, attributes, initializers and metadata are untouched; compact_in_place keeps
the result only if it gives exactly the outputs of the file before.
"""
from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError


def compact_names(src: str | Path, dst: str | Path) -> dict:
    """Write `src` with short internal names to `dst` (atomically); returns {bytes_before, bytes_after}."""
    import onnx

    from edgepipe.runtime.atomic import write_bytes_atomic

    model = onnx.load(str(src))
    g = model.graph
    if any(a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS for n in g.node for a in n.attribute):
        raise EdgepipeError(f"{src}: compact_names does not handle subgraphs (If/Loop/Scan); leave it off for this model")
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
        t.doc_string = ""
    for i, n in enumerate(g.node):
        n.name, n.doc_string = f"n{i}", ""
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    del g.value_info[:]
    g.doc_string = ""
    model.doc_string = ""
    onnx.checker.check_model(model)
    before, data = Path(src).stat().st_size, model.SerializeToString()
    write_bytes_atomic(Path(dst), data)
    return {"bytes_before": before, "bytes_after": len(data), "tensors_renamed": len(names)}


def compact_in_place(path: Path, x=None, input_shape: tuple | None = None) -> dict:
    """compact_names on `path` itself, kept only if the compacted graph gives exactly the same
    outputs on the inputs `x` (or, without them, on 8 random inputs of `input_shape`, C×H×W)."""
    import numpy as np

    from edgepipe.runtime.session import open_session, predict

    if x is None:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in input_shape]  # a named dim: 1
        x = np.random.default_rng(0).standard_normal((8, *dims)).astype(np.float32)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.compact")
    try:
        facts = compact_names(path, tmp)
        if not np.array_equal(predict(open_session(path), x), predict(open_session(tmp), x)):
            raise EdgepipeError(f"{path.name}: the compacted graph gives other outputs; leave compact_names off")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return facts
