"""Shape specialisation: a copy of a model whose dynamic input dimensions are fixed to the one size the
device runs (a camera's frames, a fixed OCR line) and whose graph is then simplified by onnxslim (the
shape computations that became constants folded away). Runtimes plan static graphs once — OpenVINO's CPU
plugin in particular runs dynamic shapes through a slower path — so the copy can run faster; whether it
does is measured per backend by the caller, never assumed. Metadata (input contract, task) is kept."""

from __future__ import annotations

import sys
from pathlib import Path

from edgepipe.devices import EdgepipeError


def dynamic_dims(model_path: Path) -> dict[str, list]:
    """{input name: its shape with None for each dynamic dimension} of the inputs that have any."""
    import onnx

    g = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    out = {}
    for i in g.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        if None in dims:
            out[i.name] = dims
    return out


def fix_shapes(src: Path, out: Path, shapes: dict[str, tuple[int, ...]], slim: bool = True) -> dict:
    """Write `src` with each input of `shapes` fixed to it (and the graph slimmed) to `out`, atomically;
    returns {fixed: {input: shape}, nodes_before, nodes_after, slimmed}."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    from edgepipe.devices.base.atomic import write_bytes_atomic

    model = onnx.load(str(src))
    before = len(model.graph.node)
    for name, shape in shapes.items():
        try:
            make_input_shape_fixed(model.graph, name, list(shape))
        except ValueError as exc:
            raise EdgepipeError(f"{src}: input {name} cannot take the shape {list(shape)} ({exc})") from None
    fix_output_shapes(model)
    slimmed = False
    if slim:
        import onnxslim

        try:
            model, slimmed = onnxslim.slim(model), True
        except Exception as exc:  # onnxslim raises many kinds; the unslimmed fixed graph still stands
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            print(f"  note: onnxslim could not simplify {src.name} ({first}); kept as fixed", file=sys.stderr)
    write_bytes_atomic(out, model.SerializeToString())
    return {
        "fixed": {k: list(v) for k, v in shapes.items()},
        "nodes_before": before,
        "nodes_after": len(model.graph.node),
        "slimmed": slimmed,
    }
