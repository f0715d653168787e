"""Short names for a model bound for a device: the same graph, the same outputs, fewer bytes.

A quantized QDQ file of a small model is largely names: every weight, scale, zero point and
intermediate tensor carries the exporter's and the quantizer's long names (`..._quantized`,
`..._DequantizeLinear_Output`), written once where it is made and again where it is read — in
the seed's compressed student (mnist_max.yaml), names and shape annotations were 8.2 of its
21.6 kB. `compact_names` renames every tensor but the graph's inputs and outputs to short
names (t…) and every node to n… (except nodes a report names, which keep theirs), and drops
value_info and doc strings (onnxruntime infers shapes itself). Operators, attributes,
initializers and metadata are untouched; compact_in_place keeps the result only if every output
is exactly what the file gave before.
"""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError


def compact_names(src: str | Path, dst: str | Path, keep_nodes: tuple[str, ...] = ()) -> dict:
    """Write `src` with short internal names to `dst` (atomically); the nodes named in `keep_nodes`
    (e.g. those a report names) keep theirs. Returns {bytes_before, bytes_after, tensors_renamed}."""
    import onnx

    from edgepipe.devices.base.atomic import write_bytes_atomic

    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise EdgepipeError(
            f"{src}: compact_names does not handle subgraphs (If/Loop/Scan); leave it off for this model"
        )
    if (
        len(g.sparse_initializer)
        or len(model.functions)
        or any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer)
    ):
        raise EdgepipeError(
            f"{src}: compact_names handles self-contained graphs only (no external data, sparse "
            "initializers or local functions); leave it off for this model"
        )
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    used = set(keep) | {n.name for n in g.node if n.name in keep_nodes}
    names: dict[str, str] = {}

    def fresh(prefix: str) -> str:  # never a name the graph keeps: t0 must not collide with an input called t0
        k = len(used)
        while f"{prefix}{k}" in used:
            k += 1
        used.add(f"{prefix}{k}")
        return f"{prefix}{k}"

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = fresh("t")
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
        t.doc_string = ""
    for n in g.node:
        if n.name not in keep_nodes:
            n.name = fresh("n")
        n.doc_string = ""
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    del g.value_info[:]
    g.doc_string = ""
    model.doc_string = ""
    onnx.checker.check_model(model)
    before, data = Path(src).stat().st_size, model.SerializeToString()
    write_bytes_atomic(Path(dst), data)
    return {"bytes_before": before, "bytes_after": len(data), "tensors_renamed": len(names)}


def compact_in_place(path: Path, x=None, input_shape: tuple | None = None, keep_nodes: tuple[str, ...] = ()) -> dict:
    """compact_names on `path` itself, kept only if the compacted graph gives exactly the same
    outputs, every one of them, on the inputs `x` (or, without them, on 8 random inputs of
    `input_shape`, C×H×W)."""
    import numpy as np

    from edgepipe.export.guard import run_outputs

    if x is None:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in input_shape]  # a named dim: 1
        x = np.random.default_rng(0).standard_normal((8, *dims)).astype(np.float32)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.compact")
    try:
        facts = compact_names(path, tmp, keep_nodes)
        before, after = run_outputs(path, x), run_outputs(tmp, x)  # every graph output, by its (kept) name
        if before.keys() != after.keys() or not all(np.array_equal(before[k], after[k]) for k in before):
            raise EdgepipeError(f"{path.name}: the compacted graph gives other outputs; leave compact_names off")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return facts
