"""Repairs of known paddle2onnx mis-conversions, applied to its output before anything else reads it.

Each repair is a small graph rewrite that keeps the computation and says what it changed; the
export's parity check against Paddle then proves the result. A new converter bug is one more function.
"""

from __future__ import annotations


def _ranks(model) -> dict[str, int]:
    """The rank of every tensor that ONNX shape inference can tell (non-strict: a broken node elsewhere
    leaves its own outputs unknown, not the whole graph)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    ranks = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    for init in g.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def scalar_concat_inputs(model) -> list[str]:
    """Concat of 1-D shape pieces where some pieces are scalars (rank 0).

    paddle2onnx 2.1 translates a legacy program to PIR, and a reshape whose target shape combines a
    sliced dimension (a scalar after its `decrease_axis`) with constants becomes a Concat of a rank-0
    and rank-1 tensors, which onnxruntime refuses ("All inputs to Concat must have same rank").
    Each scalar input gets an Unsqueeze to shape [1]."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    ranks = _ranks(model)
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    fixed, new_nodes = [], []
    axes_name = None
    for node in g.node:
        if node.op_type == "Concat":
            ins = [ranks.get(i) for i in node.input]
            if 0 in ins and any(r == 1 for r in ins) and all(r in (0, 1) for r in ins):
                if axes_name is None and opset >= 13:  # Unsqueeze takes its axes as an input from opset 13
                    axes_name = "edgepipe.repair.unsqueeze_axes0"
                    g.initializer.append(numpy_helper.from_array(np.array([0], dtype=np.int64), axes_name))
                for k, (name, r) in enumerate(zip(list(node.input), ins)):
                    if r == 0:
                        out = f"{name}.edgepipe_1d.{node.name or len(fixed)}"
                        new_nodes.append(
                            helper.make_node("Unsqueeze", [name, axes_name], [out], name=f"{node.name}.unsqueeze{k}")
                            if opset >= 13
                            else helper.make_node(
                                "Unsqueeze", [name], [out], name=f"{node.name}.unsqueeze{k}", axes=[0]
                            )
                        )
                        node.input[k] = out
                fixed.append(node.name or node.output[0])
        new_nodes.append(node)
    if fixed:
        del g.node[:]
        g.node.extend(new_nodes)
        onnx.checker.check_model(model)
    return fixed


REPAIRS = (scalar_concat_inputs,)


def repair(model) -> list[str]:
    """Apply every repair in place; one line per repair that changed something."""
    notes = []
    for fn in REPAIRS:
        changed = fn(model)
        if changed:
            notes.append(
                f"{fn.__name__}: {len(changed)} node(s) ({', '.join(changed[:3])}{', …' if len(changed) > 3 else ''})"
            )
    return notes
