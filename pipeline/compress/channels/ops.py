"""How each op of a traced static program acts on channels: one small handler per op kind.

`step` reads one op into an `OpView` and hands it to `HANDLERS[kind]` (the kind is the op's name
without its dialect and a trailing `_`: `pd_op.relu_` is `relu`). A handler records the layout of
the op's result — its segments `(space, block)`, see `graph` — in the `Tracer`, tying, following or
freezing channel spaces of the `Graph` on the way. An op no handler models, or one whose operands a
handler cannot read (a conv without a known layer, say), goes to `other`, which freezes every channel
group it touches. Ops that only name values (parameters, constants, outputs) go to `SOURCES` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

UNARY = {
    "relu",
    "relu6",
    "sigmoid",
    "hardswish",
    "hardsigmoid",
    "swish",
    "silu",
    "gelu",
    "tanh",
    "leaky_relu",
    "elu",
    "pool2d",
    "dropout",
    "scale",
    "clip",
    "max_pool2d_with_index",
    "softplus",
    "mish",
    "cast",
    "assign",
}
CALLS = {"conv2d", "depthwise_conv2d", "matmul", "batch_norm"}
BINARY = {"add", "subtract", "multiply", "divide", "maximum", "minimum"}


def _shape(v) -> list | None:
    """A value's static shape, or None for what has none (a vector of tensors, say)."""
    try:
        return [int(d) for d in v.shape]
    except Exception:
        return None


def _const(v):
    """The constant a value was made from (full / full_int_array), else None."""
    d = v.get_defining_op() if v is not None else None
    if d is not None and d.name() in ("pd_op.full", "pd_op.full_int_array"):
        return d.attrs().get("value")
    return None


@dataclass
class Tracer:
    """The state of one trace: the graph being built and what is known of the program's values."""

    g: object  # graph.Graph
    owners: dict  # parameter name -> (layer name, layer)
    layout: dict = field(default_factory=dict)  # value id -> segments
    combined: dict = field(default_factory=dict)  # builtin.combine result -> its operand values
    splits: dict = field(default_factory=dict)  # pd_op.split result (a vector of tensors) -> (input layout, axis)
    calls: dict = field(default_factory=dict)  # layer name -> how many times it is called
    used: set = field(default_factory=set)  # value ids some op reads

    def param_of(self, v):
        d = v.get_defining_op()
        if d is not None and d.name() == "builtin.parameter":
            return self.owners.get(d.attrs().get("parameter_name"))
        return None

    def new_out(self, op, frozen=None):
        for r in op.results():
            shape = _shape(r)
            if shape is not None and len(shape) >= 2:
                self.layout[r.id] = [(self.g.new(shape[1], frozen), 1)]

    def channel_slice(self, x, start: int, stop: int, why: str):
        """Segments of channels [start, stop) of a tensor laid out as x; a segment the range cuts
        through is frozen (its channels cannot be chosen independently of the other piece)."""
        g, out, offset = self.g, [], 0
        for sid, block in x:
            width = g.spaces[g.root(sid)].size * block
            lo, hi = max(start, offset), min(stop, offset + width)
            if lo < hi:
                if lo == offset and hi == offset + width:
                    out.append((sid, block))
                else:
                    g.freeze([(sid, block)], why)
                    out.append((g.new(hi - lo, why), 1))
            offset += width
        return out

    def freeze_around(self, operands, why: str) -> None:
        """Freeze every channel group an op reads: its tensors, a combine's parts, a split's input."""
        for v in operands:
            self.g.freeze(self.layout.get(v.id), why)
            for q in self.combined.get(v.id, []):
                self.g.freeze(self.layout.get(q.id), why)
            if v.id in self.splits:
                self.g.freeze(self.splits[v.id][0], why)


@dataclass
class OpView:
    """What a handler reads of one op."""

    op: object
    kind: str
    operands: list  # its initialized operand values
    tensors: list  # those whose channel layout is known
    owner: tuple | None  # (layer name, layer) of the first parameter it reads
    x: list | None  # the first operand's layout
    out: object  # its first result


# -- ops that only name values -------------------------------------------------------------------


def _skip(t: Tracer, op, operands) -> None:
    return None


def _data(t: Tracer, op, operands) -> None:
    t.new_out(op, frozen="model input")


def _combine(t: Tracer, op, operands) -> None:
    t.combined[op.result(0).id] = list(operands)


SOURCES = {
    "parameter": _skip,
    "full": _skip,
    "full_int_array": _skip,
    "shadow_output": _skip,
    "fetch": _skip,
    "data": _data,
    "combine": _combine,
}


# -- layers --------------------------------------------------------------------------------------


def _conv(t: Tracer, o: OpView) -> None:
    if o.owner is None or o.x is None:
        return other(t, o)
    g, x, (name, layer) = t.g, o.x, o.owner
    groups, cin, cout = layer._groups, layer.weight.shape[1] * layer._groups, layer.weight.shape[0]
    plain = len(x) == 1 and x[0][1] == 1
    if groups == 1:
        g.consumers.append((name, "conv", x))
        s = g.new(cout)
        g.spaces[s].producers.append((name, "conv"))
        t.layout[o.out.id] = [(s, 1)]
    elif groups == cin == cout and plain:
        g.spaces[g.root(x[0][0])].followers.append((name, "depthwise"))
        t.layout[o.out.id] = x
    elif cin == cout and plain and g.spaces[g.root(x[0][0])].size == cin:
        # grouped, one output channel block per input block (ResNeXt): whole groups go together
        sp = g.spaces[g.root(x[0][0])]
        sp.followers.append((name, "depthwise"))
        sp.granule = math.lcm(sp.granule, cin // groups)
        t.layout[o.out.id] = x
    else:
        why = f"grouped convolution {name} (groups={groups})"
        g.freeze(x, why)
        s = g.new(cout, frozen=why)
        g.spaces[s].producers.append((name, "conv"))
        t.layout[o.out.id] = [(s, 1)]


def _linear(t: Tracer, o: OpView) -> None:
    if o.owner is None or o.x is None:
        return other(t, o)
    name, layer = o.owner
    t.g.consumers.append((name, "linear", o.x))
    s = t.g.new(layer.weight.shape[1])
    t.g.spaces[s].producers.append((name, "linear"))
    t.layout[o.out.id] = [(s, 1)]


def _batch_norm(t: Tracer, o: OpView) -> None:
    if o.owner is None or o.x is None:
        return other(t, o)
    g, x, name = t.g, o.x, o.owner[0]
    if len(x) == 1 and x[0][1] == 1:
        g.spaces[g.root(x[0][0])].followers.append((name, "bn"))
    elif all(block == 1 for _, block in x):  # per channel, so it follows each segment (DenseNet)
        g.consumers.append((name, "bn", x))
    else:
        g.freeze(x, f"BatchNorm {name} on a flattened tensor")
    t.layout[o.out.id] = x


# -- element-wise ops ----------------------------------------------------------------------------


def _unary(t: Tracer, o: OpView) -> None:
    if o.x is None:
        return other(t, o)
    t.layout[o.out.id] = o.x
    for r in list(o.op.results())[1:]:  # e.g. pooling indices
        t.layout.pop(r.id, None)


def _binary(t: Tracer, o: OpView) -> None:
    """Tensors of the same channels tie their spaces (a residual add, a gate); anything else freezes both."""
    if not o.tensors:
        return other(t, o)
    a = t.layout[o.tensors[0].id]
    if len(o.tensors) == 2:
        b = t.layout[o.tensors[1].id]
        sa, sb = _shape(o.tensors[0]), _shape(o.tensors[1])
        if (
            len(sa) >= 2
            and len(sb) >= 2
            and sa[1] == sb[1]
            and len(a) == len(b)
            and all(p[1] == q[1] for p, q in zip(a, b))
        ):
            for (s1, _), (s2, _) in zip(a, b):
                t.g.union(s1, s2)
        else:
            t.g.freeze(a, f"{o.kind} of tensors shaped {sa} and {sb}")
            t.g.freeze(b, f"{o.kind} of tensors shaped {sa} and {sb}")
    t.layout[o.out.id] = a


# -- shape ops -----------------------------------------------------------------------------------


def _squeeze(t: Tracer, o: OpView) -> None:
    if o.x is None:
        return other(t, o)
    axes = _const(o.operands[1]) if len(o.operands) > 1 else None
    rank = len(_shape(o.operands[0]))
    axes = (
        [int(a) % (rank + (o.kind == "unsqueeze")) for a in (axes if isinstance(axes, list) else [axes])]
        if axes is not None
        else None
    )
    if axes is not None and min(axes) >= 2:  # the batch and channel axes stay where they are
        t.layout[o.out.id] = o.x
    else:
        t.g.freeze(o.x, f"{o.kind} of the batch or channel axis")
        t.new_out(o.op, frozen=f"{o.kind} output")


def _reshape(t: Tracer, o: OpView) -> None:
    """flatten / reshape: kept channels, channels flattened with H·W (into a Linear), or frozen."""
    if o.x is None:
        return other(t, o)
    x, shape_in, shape_out = o.x, _shape(o.operands[0]), _shape(o.out)
    target = _const(o.operands[1]) if o.kind == "reshape" and len(o.operands) > 1 else None
    if isinstance(target, list) and len(target) >= 2 and int(target[1]) > 0:  # a fixed channel count: [-1, 2048]
        t.g.freeze(x, f"reshape to the fixed shape {list(target)}")
        t.new_out(o.op, frozen=f"reshape to the fixed shape {list(target)}")
    elif len(shape_in) == 4 and len(shape_out) == 2 and shape_out[1] == int(np.prod(shape_in[1:])):
        hw = shape_in[2] * shape_in[3]
        t.layout[o.out.id] = [(s, b * hw) for s, b in x]
    elif shape_in[:2] == shape_out[:2]:
        t.layout[o.out.id] = x
    else:
        t.g.freeze(x, f"{o.kind} from {shape_in} to {shape_out}")
        t.new_out(o.op, frozen=f"{o.kind} output")


def _concat(t: Tracer, o: OpView) -> None:
    """On the channel axis the inputs' segments follow one another, each keeping its own space."""
    if not o.operands or o.operands[0].id not in t.combined:
        return other(t, o)
    parts = t.combined[o.operands[0].id]
    axis = _const(o.operands[1]) if len(o.operands) > 1 else None
    axis = axis[0] if isinstance(axis, list) else axis
    shapes, shape_out = [_shape(q) for q in parts], _shape(o.out)
    if (
        all(q.id in t.layout for q in parts)
        and axis is not None
        and int(axis) % len(shapes[0]) == 1
        and shape_out[1] == sum(sh[1] for sh in shapes)
        and all(sh[2:] == shape_out[2:] for sh in shapes)
    ):
        t.layout[o.out.id] = [seg for q in parts for seg in t.layout[q.id]]
    else:
        for q in parts:
            t.g.freeze(t.layout.get(q.id), "concat not on the channel axis")
        t.new_out(o.op, frozen="concat output")


def _split(t: Tracer, o: OpView) -> None:
    """pd_op.split makes a vector of pieces; builtin.split unpacks it (kind `split` names both)."""
    if o.op.name() in ("pd_op.split", "pd_op.split_with_num"):
        return _split_vector(t, o)
    if o.op.name() == "builtin.split" and o.operands and o.operands[0].id in t.splits:
        return _split_pieces(t, o)
    return other(t, o)


def _split_vector(t: Tracer, o: OpView) -> None:
    x, operands = o.x, o.operands
    axis = _const(operands[2] if o.kind == "split" else operands[1]) if len(operands) > 1 else None
    if o.kind == "split_with_num":
        axis = o.op.attrs().get("axis", axis) if axis is None else axis
    axis = axis[0] if isinstance(axis, list) else axis
    if x is None:
        x, axis = [(t.g.new(_shape(operands[0])[1], "split of an untracked tensor"), 1)], 1
    t.splits[o.out.id] = (x, None if axis is None else int(axis) % len(_shape(operands[0])))


def _split_pieces(t: Tracer, o: OpView) -> None:
    """Each piece of a split along channels gets its share of the input's segments."""
    x, axis = t.splits[o.operands[0].id]
    offset = 0
    for r in o.op.results():
        width = _shape(r)[1]
        if axis == 1:
            t.layout[r.id] = t.channel_slice(x, offset, offset + width, "split through a channel group")
            offset += width
        elif axis is not None:
            t.layout[r.id] = x
        else:
            t.g.freeze(x, "split on an unknown axis")
            t.layout[r.id] = [(t.g.new(width, "split on an unknown axis"), 1)]


# -- everything else -----------------------------------------------------------------------------


def other(t: Tracer, o: OpView) -> None:
    """An op not modelled: nothing it touches may change shape (unless it reads no channels at all)."""
    if not o.tensors and not any(v.id in t.combined or v.id in t.splits for v in o.operands):
        return  # computed from parameters and constants only (a conv bias reshaped for broadcasting)
    why = f"op {o.op.name()}" + (f" ({o.owner[0]})" if o.owner else "")
    t.freeze_around(o.operands, why)
    t.new_out(o.op, frozen=why)


HANDLERS = {
    "conv2d": _conv,
    "depthwise_conv2d": _conv,
    "matmul": _linear,
    "batch_norm": _batch_norm,
    **{kind: _unary for kind in UNARY},
    **{kind: _binary for kind in BINARY},
    "squeeze": _squeeze,
    "unsqueeze": _squeeze,
    "flatten": _reshape,
    "reshape": _reshape,
    "concat": _concat,
    "split": _split,
    "split_with_num": _split,
}


def step(t: Tracer, op) -> None:
    """Model one op: note the values it reads and the layer it calls, then dispatch on its kind."""
    kind = op.name().split(".", 1)[-1].rstrip("_")
    operands = [v for v in op.operands_source() if v.initialized()]  # optional operands may be null
    for v in operands:
        t.used.add(v.id)
    if kind in SOURCES:
        return SOURCES[kind](t, op, operands)
    params = [t.param_of(v) for v in operands if t.param_of(v) is not None]
    owner = params[0] if params else None
    if owner is not None:
        t.calls[owner[0]] = t.calls.get(owner[0], 0) + (kind in CALLS)  # a bias add or reshape is not a second call
        t.g.layers[owner[0]] = owner[1]
    x = t.layout.get(operands[0].id) if operands else None
    out = op.result(0) if op.num_results() else None
    view = OpView(op, kind, operands, [v for v in operands if v.id in t.layout], owner, x, out)
    HANDLERS.get(kind, other)(t, view)
