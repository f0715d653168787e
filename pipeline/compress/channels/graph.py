"""Channel dependency graph of a Paddle model, for structured (channel) pruning.

The model is traced to its static program (`paddle.jit.to_static`, PIR), so every op is seen —
including residual `+`, `*` gates and concatenations that layer hooks cannot see. Each tensor's
channel axis (axis 1) is described as a list of segments `(space, block)`: a *space* is one set of
channels that must be pruned together (a conv's filters, and everything tied to them through
BatchNorm, activations, residual adds, depthwise convs, and grouped convs in whole groups); `block`
is how many consecutive entries
each channel occupies (1 in a feature map, H·W after flattening into a Linear layer).

Spaces tied by an add are merged (union-find). A concatenation lists its inputs' segments one
after another, so each keeps its own space (DenseNet, Inception, SqueezeNet), and a split along
channels hands each piece its share of them (ShuffleNet). A space is *frozen* — never pruned —
when it reaches the model's input or output, a grouped convolution, a layer called more than once,
a reshape to a hard-coded channel count, or an op this module does not understand (a channel
shuffle, say); `frozen` says why, so a caller can report it instead of producing a model that
breaks later. Tracing never fails on an op: whatever cannot be modelled freezes what it touches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgepipe.devices import EdgepipeError

UNARY = {"relu", "relu6", "sigmoid", "hardswish", "hardsigmoid", "swish", "silu", "gelu", "tanh", "leaky_relu",
         "elu", "pool2d", "dropout", "scale", "clip", "max_pool2d_with_index", "softplus", "mish", "cast", "assign"}
CALLS = {"conv2d", "depthwise_conv2d", "matmul", "batch_norm"}
BINARY = {"add", "subtract", "multiply", "divide", "maximum", "minimum"}


@dataclass
class Space:
    size: int
    frozen: str | None = None
    producers: list = field(default_factory=list)  # (layer name, "conv" | "linear") whose outputs are these channels
    followers: list = field(default_factory=list)  # (layer name, "bn" | "depthwise") indexed by these channels
    granule: int = 1  # channels go in aligned blocks of this many (a grouped conv's channels per group)


@dataclass
class Graph:
    spaces: list[Space]
    parent: list[int]
    consumers: list = field(default_factory=list)  # (layer name, kind, layout) reading a tensor on its input axis
    layers: dict = field(default_factory=dict)  # name -> layer

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        if self.spaces[ra].size != self.spaces[rb].size:
            raise EdgepipeError(f"channel spaces of sizes {self.spaces[ra].size} and {self.spaces[rb].size} are tied by an op")
        self.parent[rb] = ra
        sa, sb = self.spaces[ra], self.spaces[rb]
        sa.producers += sb.producers
        sa.followers += sb.followers
        sa.frozen = sa.frozen or sb.frozen
        sa.granule = math.lcm(sa.granule, sb.granule)

    def new(self, size: int, frozen: str | None = None) -> int:
        self.spaces.append(Space(size, frozen))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def freeze(self, layout, why: str) -> None:
        for s, _ in layout or []:
            sp = self.spaces[self.root(s)]
            sp.frozen = sp.frozen or why

    def groups(self) -> dict[int, Space]:
        """Root id -> space, for every distinct channel group."""
        return {r: self.spaces[r] for r in {self.root(i) for i in range(len(self.spaces))}}


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


def _param_owners(model) -> dict[str, tuple[str, object]]:
    owners = {}
    for name, layer in model.named_sublayers():
        for p in layer.parameters(include_sublayers=False):
            owners[p.name] = (name, layer)
        for b in getattr(layer, "_buffers", {}).values():
            if b is not None:
                owners[b.name] = (name, layer)
    return owners


def trace(model, input_shape: tuple[int, ...]) -> Graph:
    """Build the channel graph of `model` for inputs of shape (C, H, W) (batch 1 is traced)."""
    import paddle
    from paddle.static import InputSpec

    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():  # static tracing does not check shapes; one real forward does
            model(paddle.zeros([1, *input_shape]))
        static = paddle.jit.to_static(model.forward, input_spec=[InputSpec([1, *input_shape], "float32", "x")], full_graph=True)
        ops = static.concrete_program.main_program.global_block().ops
    except Exception as exc:  # a forward that cannot be traced cannot be pruned safely
        raise EdgepipeError(f"cannot trace the model for input shape {tuple(input_shape)} ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200]}); check the input shape") from None
    finally:
        if was_training:
            model.train()
    owners = _param_owners(model)
    g = Graph([], [])
    layout: dict[str, list] = {}  # value id -> segments
    combined: dict[str, list] = {}  # builtin.combine result -> its operand values
    calls: dict[str, int] = {}
    used: set[str] = set()

    def param_of(v):
        d = v.get_defining_op()
        if d is not None and d.name() == "builtin.parameter":
            return owners.get(d.attrs().get("parameter_name"))
        return None

    def new_out(op, frozen=None):
        for r in op.results():
            shape = _shape(r)
            if shape is not None and len(shape) >= 2:
                layout[r.id] = [(g.new(shape[1], frozen), 1)]

    def channel_slice(x, start: int, stop: int, why: str):
        """Segments of channels [start, stop) of a tensor laid out as x; a segment the range cuts
        through is frozen (its channels cannot be chosen independently of the other piece)."""
        out, offset = [], 0
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

    splits: dict = {}  # pd_op.split result (a vector of tensors) -> (input layout, axis)

    def freeze_around(operands, why: str) -> None:
        """Freeze every channel group an op reads: its tensors, a combine's parts, a split's input."""
        for v in operands:
            g.freeze(layout.get(v.id), why)
            for q in combined.get(v.id, []):
                g.freeze(layout.get(q.id), why)
            if v.id in splits:
                g.freeze(splits[v.id][0], why)

    def step(op):
        kind = op.name().split(".", 1)[-1].rstrip("_")
        operands = [v for v in op.operands_source() if v.initialized()]  # optional operands may be null
        for v in operands:
            used.add(v.id)
        if kind in ("parameter", "full", "full_int_array", "shadow_output", "fetch"):
            return
        if kind == "data":
            new_out(op, frozen="model input")
            return
        if kind == "combine":
            combined[op.result(0).id] = list(operands)
            return
        tensors = [v for v in operands if v.id in layout]
        params = [param_of(v) for v in operands if param_of(v) is not None]
        owner = params[0] if params else None
        if owner is not None:
            calls[owner[0]] = calls.get(owner[0], 0) + (kind in CALLS)  # a bias add or reshape is not a second call
            g.layers[owner[0]] = owner[1]
        x = layout.get(operands[0].id) if operands else None
        out = op.result(0) if op.num_results() else None
        if op.name() in ("pd_op.split", "pd_op.split_with_num"):  # a vector of pieces, unpacked by builtin.split
            axis = _const(operands[2] if kind == "split" else operands[1]) if len(operands) > 1 else None
            if kind == "split_with_num":
                axis = op.attrs().get("axis", axis) if axis is None else axis
            axis = axis[0] if isinstance(axis, list) else axis
            if x is None:
                x, axis = [(g.new(_shape(operands[0])[1], "split of an untracked tensor"), 1)], 1
            splits[out.id] = (x, None if axis is None else int(axis) % len(_shape(operands[0])))
            return
        if op.name() == "builtin.split" and operands and operands[0].id in splits:  # the pieces
            x, axis = splits[operands[0].id]
            offset = 0
            for r in op.results():
                width = _shape(r)[1]
                if axis == 1:
                    layout[r.id] = channel_slice(x, offset, offset + width, "split through a channel group")
                    offset += width
                elif axis is not None:
                    layout[r.id] = x
                else:
                    g.freeze(x, "split on an unknown axis")
                    layout[r.id] = [(g.new(width, "split on an unknown axis"), 1)]
            return
        if kind in ("conv2d", "depthwise_conv2d") and owner is not None and x is not None:
            name, layer = owner
            groups, cin, cout = layer._groups, layer.weight.shape[1] * layer._groups, layer.weight.shape[0]
            if groups == 1:
                g.consumers.append((name, "conv", x))
                s = g.new(cout)
                g.spaces[s].producers.append((name, "conv"))
                layout[out.id] = [(s, 1)]
            elif groups == cin == cout and len(x) == 1 and x[0][1] == 1:
                g.spaces[g.root(x[0][0])].followers.append((name, "depthwise"))
                layout[out.id] = x
            elif cin == cout and len(x) == 1 and x[0][1] == 1 and g.spaces[g.root(x[0][0])].size == cin:
                # grouped, one output channel block per input block (ResNeXt): whole groups go together
                sp = g.spaces[g.root(x[0][0])]
                sp.followers.append((name, "depthwise"))
                sp.granule = math.lcm(sp.granule, cin // groups)
                layout[out.id] = x
            else:
                g.freeze(x, f"grouped convolution {name} (groups={groups})")
                s = g.new(cout, frozen=f"grouped convolution {name} (groups={groups})")
                g.spaces[s].producers.append((name, "conv"))
                layout[out.id] = [(s, 1)]
        elif kind == "matmul" and owner is not None and x is not None:
            name, layer = owner
            g.consumers.append((name, "linear", x))
            s = g.new(layer.weight.shape[1])
            g.spaces[s].producers.append((name, "linear"))
            layout[out.id] = [(s, 1)]
        elif kind == "batch_norm" and owner is not None and x is not None:
            name = owner[0]
            if len(x) == 1 and x[0][1] == 1:
                g.spaces[g.root(x[0][0])].followers.append((name, "bn"))
            elif all(block == 1 for _, block in x):  # per channel, so it follows each segment (DenseNet)
                g.consumers.append((name, "bn", x))
            else:
                g.freeze(x, f"BatchNorm {name} on a flattened tensor")
            layout[out.id] = x
        elif kind in UNARY and x is not None:
            layout[out.id] = x
            for r in list(op.results())[1:]:  # e.g. pooling indices
                layout.pop(r.id, None)
        elif kind in BINARY and len(tensors) >= 1:
            a = layout[tensors[0].id]
            if len(tensors) == 2:
                b = layout[tensors[1].id]
                sa, sb = _shape(tensors[0]), _shape(tensors[1])
                if len(sa) >= 2 and len(sb) >= 2 and sa[1] == sb[1] and len(a) == len(b) and all(p[1] == q[1] for p, q in zip(a, b)):
                    for (s1, _), (s2, _) in zip(a, b):
                        g.union(s1, s2)
                else:
                    g.freeze(a, f"{kind} of tensors shaped {sa} and {sb}")
                    g.freeze(b, f"{kind} of tensors shaped {sa} and {sb}")
            layout[out.id] = a
        elif kind in ("squeeze", "unsqueeze") and x is not None:
            axes = _const(operands[1]) if len(operands) > 1 else None
            rank = len(_shape(operands[0]))
            axes = [int(a) % (rank + (kind == "unsqueeze")) for a in (axes if isinstance(axes, list) else [axes])] \
                if axes is not None else None
            if axes is not None and min(axes) >= 2:  # the batch and channel axes stay where they are
                layout[out.id] = x
            else:
                g.freeze(x, f"{kind} of the batch or channel axis")
                new_out(op, frozen=f"{kind} output")
        elif kind in ("flatten", "reshape") and x is not None:
            shape_in, shape_out = _shape(operands[0]), _shape(out)
            target = _const(operands[1]) if kind == "reshape" and len(operands) > 1 else None
            fixed = isinstance(target, list) and len(target) >= 2 and int(target[1]) > 0  # e.g. [-1, 2048]
            if fixed:
                g.freeze(x, f"reshape to the fixed shape {list(target)}")
                new_out(op, frozen=f"reshape to the fixed shape {list(target)}")
            elif len(shape_in) == 4 and len(shape_out) == 2 and shape_out[1] == int(np.prod(shape_in[1:])):
                hw = shape_in[2] * shape_in[3]
                layout[out.id] = [(s, b * hw) for s, b in x]
            elif shape_in[:2] == shape_out[:2]:
                layout[out.id] = x
            else:
                g.freeze(x, f"{kind} from {shape_in} to {shape_out}")
                new_out(op, frozen=f"{kind} output")
        elif kind == "concat" and operands and operands[0].id in combined:
            parts = combined[operands[0].id]
            axis = _const(operands[1]) if len(operands) > 1 else None
            axis = axis[0] if isinstance(axis, list) else axis
            shapes = [_shape(q) for q in parts]
            if all(q.id in layout for q in parts) and axis is not None and int(axis) % len(shapes[0]) == 1 and \
                    _shape(out)[1] == sum(sh[1] for sh in shapes) and all(sh[2:] == _shape(out)[2:] for sh in shapes):
                layout[out.id] = [seg for q in parts for seg in layout[q.id]]
            else:
                for q in parts:
                    g.freeze(layout.get(q.id), "concat not on the channel axis")
                new_out(op, frozen="concat output")
        elif not tensors and not any(v.id in combined or v.id in splits for v in operands):
            return  # computed from parameters and constants only (a conv bias reshaped for broadcasting)
        else:  # not understood: nothing it touches may change shape
            why = f"op {op.name()}" + (f" ({owner[0]})" if owner else "")
            freeze_around(operands, why)
            new_out(op, frozen=why)

    for op in ops:
        try:
            step(op)
        except Exception as exc:  # an op this module models wrongly must not stop the plan: freeze around it
            why = f"op {op.name()} could not be modelled ({type(exc).__name__})"
            freeze_around([v for v in op.operands_source() if v.initialized()], why)
            try:
                new_out(op, frozen=why)
            except Exception:
                pass

    for name, n in calls.items():
        if n > 1:
            for s, sp in enumerate(g.spaces):
                if any(p[0] == name for p in sp.producers + sp.followers):
                    g.freeze([(s, 1)], f"layer {name} is called more than once")
            for cname, _, lay in g.consumers:
                if cname == name:
                    g.freeze(lay, f"layer {name} is called more than once")
    for vid, segs in layout.items():
        if vid not in used:
            g.freeze(segs, "model output")
    for sp in g.groups().values():
        if not sp.producers and not sp.frozen:
            sp.frozen = "no layer produces these channels"
    return g


def expand(g: Graph, layout, kept: dict[int, np.ndarray]) -> np.ndarray:
    """Indices along a tensor's channel axis that survive, given kept channels per group root."""
    out, offset = [], 0
    for s, block in layout:
        sp = g.spaces[g.root(s)]
        idx = kept.get(g.root(s), np.arange(sp.size))
        out.append((offset + (idx[:, None] * block + np.arange(block)[None, :])).ravel())
        offset += sp.size * block
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
