"""Quantization-aware training in Paddle, deployed through onnxruntime.

Paddle 3.3.1's own QAT convert + jit.save path produces wrong models, so edgepipe trains with its
own fake quantization and deploys the *float* model: export it to ONNX, then let onnxruntime
quantize it with the activation ranges QAT learned (`TensorQuantOverrides`). The fake
quantizers reproduce onnxruntime's own arithmetic, so the integers onnxruntime computes from the
trained weights are the ones training saw:

- weights: per output channel, symmetric; 8-bit scale = max|w| / 127 over [-127, 127]
  (onnxruntime's symmetric int8 range), 4-bit scale = 2·max|w| / 15 over [-8, 7] (its int4 range);
- activations (the input of every Conv2D and Linear): asymmetric 8-bit over an exponential moving
  average of the batch min/max, the range always containing 0, as onnxruntime's u8 activations;
- gradients pass straight through inside the range and stop outside it (clipped STE).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from edgepipe.devices import EdgepipeError


def fake_quant_weight(w, bits: int, axis: int):
    dims = [d for d in range(w.ndim) if d != axis]
    absmax = paddle.clip(paddle.max(paddle.abs(w), axis=dims, keepdim=True), min=1e-8)
    if bits == 8:
        scale, qmin, qmax = absmax / 127.0, -127.0, 127.0
    elif bits == 4:
        scale, qmin, qmax = absmax * 2.0 / 15.0, -8.0, 7.0
    else:
        raise EdgepipeError(f"qat.weight_bits: {bits} is not supported; use 8 or 4")
    deq = paddle.clip(paddle.round(w / scale), qmin, qmax) * scale
    return w + (deq - w).detach()


class ActivationQuant(nn.Layer):
    """Asymmetric fake quantization with an EMA range, updated in training mode only."""

    def __init__(self, bits: int = 8, momentum: float = 0.9):
        super().__init__()
        self.bits, self.momentum = bits, momentum
        self.rmin: float | None = None
        self.rmax: float | None = None

    def forward(self, x):
        if self.training:
            lo, hi = float(x.min()), float(x.max())
            if self.rmin is None:
                self.rmin, self.rmax = lo, hi
            else:
                m = self.momentum
                self.rmin, self.rmax = m * self.rmin + (1 - m) * lo, m * self.rmax + (1 - m) * hi
        if self.rmin is None:
            return x  # not calibrated yet
        lo, hi = min(self.rmin, 0.0), max(self.rmax, 0.0)
        levels = 2**self.bits - 1
        scale = max(hi - lo, 1e-8) / levels
        zp = round(-lo / scale)
        xc = paddle.clip(x, lo, hi)
        deq = (paddle.clip(paddle.round(xc / scale) + zp, 0, levels) - zp) * scale
        return xc + (deq - xc).detach()


class _Quantized(nn.Layer):
    """Wraps a Conv2D or Linear: fake-quantized input and weights, the wrapped layer's own parameters."""

    def __init__(self, inner, weight_bits: int, order: list):
        super().__init__()
        if isinstance(inner, nn.Conv2D) and getattr(inner, "_padding_mode", "zeros") != "zeros":
            raise EdgepipeError(f"qat: Conv2D with padding_mode '{inner._padding_mode}' is not supported")
        self.inner, self.weight_bits, self._order = inner, weight_bits, order
        self.act = ActivationQuant(8)

    def forward(self, x):
        if self not in self._order:
            self._order.append(self)  # forward order = the order of Conv/MatMul nodes in the export
        x = self.act(x)
        c = self.inner
        if isinstance(c, nn.Conv2D):
            w = fake_quant_weight(c.weight, self.weight_bits, axis=0)
            return F.conv2d(x, w, c.bias, c._stride, c._padding, c._dilation, c._groups, c._data_format)
        return F.linear(x, fake_quant_weight(c.weight, self.weight_bits, axis=1), c.bias)


def wrap(model, weight_bits: int) -> list:
    """Put fake quantizers on every Conv2D and Linear of `model` in place; returns the list that the
    wrappers fill in forward order."""
    order: list = []
    for parent in [model, *model.sublayers()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.Conv2D, nn.Linear)):
                parent._sub_layers[name] = _Quantized(child, weight_bits, order)
    return order


def unwrap(model) -> None:
    """Put the original (now trained) layers back, leaving a plain float model."""
    for parent in [model, *model.sublayers()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, _Quantized):
                parent._sub_layers[name] = child.inner


def learned_ranges(order: list, model) -> list[dict]:
    names = {id(sub): n for n, sub in model.named_sublayers()}
    out = []
    for q in order:
        c = q.inner
        out.append(
            {
                "layer": names.get(id(q), "?"),
                "op": "conv" if isinstance(c, nn.Conv2D) else "linear",
                "weight_shape": list(c.weight.shape),
                "rmin": q.act.rmin,
                "rmax": q.act.rmax,
            }
        )
    return out


def onnx_overrides(onnx_path, layers: list[dict]) -> dict[str, tuple[float, float]]:
    """Map QAT's per-layer input ranges onto the exported graph: the i-th Conv/MatMul/Gemm with a
    constant weight is the i-th quantized layer in forward order, checked by weight shape."""
    from edgepipe.runtime.model.cost import load_onnx

    m = load_onnx(onnx_path)
    shapes = {t.name: list(t.dims) for t in m.graph.initializer}
    nodes = [
        n for n in m.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in shapes
    ]
    if len(nodes) != len(layers):
        raise EdgepipeError(
            f"{onnx_path}: {len(nodes)} Conv/MatMul nodes but QAT trained {len(layers)} layers; "
            "export the QAT model itself (its .onnx) before quantizing with its ranges"
        )
    out = {}
    for node, layer in zip(nodes, layers):
        if shapes[node.input[1]] != layer["weight_shape"]:
            raise EdgepipeError(
                f"{onnx_path}: node '{node.name}' has weight {shapes[node.input[1]]}, QAT layer "
                f"'{layer['layer']}' has {layer['weight_shape']}; the graph does not follow the model's order"
            )
        if layer["rmin"] is None:
            raise EdgepipeError(f"QAT layer '{layer['layer']}' never ran, so it has no learned range")
        out[node.input[0]] = (min(layer["rmin"], 0.0), max(layer["rmax"], 0.0))
    return out
