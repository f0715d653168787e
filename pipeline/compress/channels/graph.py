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
How each op kind acts on channels is in `ops`, one handler per kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.channels.ops import Tracer, step


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
            raise EdgepipeError(
                f"channel spaces of sizes {self.spaces[ra].size} and {self.spaces[rb].size} are tied by an op"
            )
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


def _param_owners(model) -> dict[str, tuple[str, object]]:
    owners = {}
    for name, layer in model.named_sublayers():
        for p in layer.parameters(include_sublayers=False):
            owners[p.name] = (name, layer)
        for b in getattr(layer, "_buffers", {}).values():
            if b is not None:
                owners[b.name] = (name, layer)
    return owners


def _program_ops(model, input_shape: tuple[int, ...]) -> tuple[object, list]:
    """`model`'s static function for one input of shape (C, H, W) and its program's ops, in order.
    The ops live only as long as the function: a caller keeps both."""
    import paddle
    from paddle.static import InputSpec

    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():  # static tracing does not check shapes; one real forward does
            model(paddle.zeros([1, *input_shape]))
        static = paddle.jit.to_static(
            model.forward, input_spec=[InputSpec([1, *input_shape], "float32", "x")], full_graph=True
        )
        return static, static.concrete_program.main_program.global_block().ops
    except Exception as exc:  # a forward that cannot be traced cannot be pruned safely
        raise EdgepipeError(
            f"cannot trace the model for input shape {tuple(input_shape)} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200]}); check the input shape"
        ) from None
    finally:
        if was_training:
            model.train()


def _freeze_unprunable(t: Tracer) -> None:
    """After the last op: layers called twice, the model's outputs and channels no layer makes stay."""
    g = t.g
    for name, n in t.calls.items():
        if n > 1:
            for s, sp in enumerate(g.spaces):
                if any(p[0] == name for p in sp.producers + sp.followers):
                    g.freeze([(s, 1)], f"layer {name} is called more than once")
            for cname, _, lay in g.consumers:
                if cname == name:
                    g.freeze(lay, f"layer {name} is called more than once")
    for vid, segs in t.layout.items():
        if vid not in t.used:
            g.freeze(segs, "model output")
    for sp in g.groups().values():
        if not sp.producers and not sp.frozen:
            sp.frozen = "no layer produces these channels"


def trace(model, input_shape: tuple[int, ...]) -> Graph:
    """Build the channel graph of `model` for inputs of shape (C, H, W) (batch 1 is traced).

    Each op goes to its kind's handler (`ops.HANDLERS`); one that fails freezes what it touches."""
    static, ops = _program_ops(model, input_shape)  # `static` owns the program the ops belong to
    t = Tracer(Graph([], []), _param_owners(model))
    for op in ops:
        try:
            step(t, op)
        except Exception as exc:  # an op this module models wrongly must not stop the plan: freeze around it
            why = f"op {op.name()} could not be modelled ({type(exc).__name__})"
            t.freeze_around([v for v in op.operands_source() if v.initialized()], why)
            try:
                t.new_out(op, frozen=why)
            except Exception:
                pass
    _freeze_unprunable(t)
    return t.g


def expand(g: Graph, layout, kept: dict[int, np.ndarray]) -> np.ndarray:
    """Indices along a tensor's channel axis that survive, given kept channels per group root."""
    out, offset = [], 0
    for s, block in layout:
        sp = g.spaces[g.root(s)]
        idx = kept.get(g.root(s), np.arange(sp.size))
        out.append((offset + (idx[:, None] * block + np.arange(block)[None, :])).ravel())
        offset += sp.size * block
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
