"""Rewrites of a Paddle Layer, before it is traced for export, where paddle2onnx would convert a layer
into something onnxruntime cannot run. The rewritten layer computes the same; the export's parity
check compares the ONNX file with the original layer.

- An adaptive average pool whose input size is not a multiple of its output size (VGG's
  AdaptiveAvgPool2D(7) behind a 1×1 feature map at small inputs): paddle2onnx writes an AveragePool
  with zero strides, which onnxruntime rejects. It becomes two MatMuls with the averaging matrices
  Paddle's adaptive pooling uses (window i spans floor(i·in/out) … ceil((i+1)·in/out)).
"""

from __future__ import annotations

import math

import numpy as np


def averaging_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out × size_in): row i averages the inputs of adaptive pooling's window i."""
    a = np.zeros((size_out, size_in), dtype=np.float32)
    for i in range(size_out):
        lo, hi = (i * size_in) // size_out, math.ceil((i + 1) * size_in / size_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _matmul_pool(h: int, w: int, oh: int, ow: int):
    import paddle
    import paddle.nn as nn

    class AdaptiveAvgPoolMatMul(nn.Layer):
        def __init__(self):
            super().__init__()
            self.register_buffer("rows", paddle.to_tensor(averaging_matrix(h, oh)))
            self.register_buffer("cols", paddle.to_tensor(averaging_matrix(w, ow).T.copy()))

        def forward(self, x):
            return paddle.matmul(paddle.matmul(self.rows, x), self.cols)

    return AdaptiveAvgPoolMatMul()


def uneven_adaptive_pools(layer, input_shape: tuple[int, ...]):
    """A copy of `layer` with every AdaptiveAvgPool2D whose input (seen on one forward at `input_shape`)
    is not a multiple of its output replaced by matrix products; (layer, names replaced). The layer
    itself is returned, untouched, when there is none."""
    import copy

    import paddle
    import paddle.nn as nn

    seen, hooks = {}, []

    def record(name):
        def hook(_, inputs):  # a pre-hook that returns something replaces the inputs: return None
            seen[name] = tuple(inputs[0].shape[2:])

        return hook

    subs = dict(layer.named_sublayers())
    for name, sub in subs.items():
        if isinstance(sub, nn.AdaptiveAvgPool2D) and getattr(sub, "_data_format", "NCHW") == "NCHW":
            hooks.append(sub.register_forward_pre_hook(record(name)))
    if not hooks:
        return layer, []
    try:
        with paddle.no_grad():
            layer(paddle.zeros([1, *input_shape]))
    except Exception:
        return layer, []  # the export itself says what is wrong with the model
    finally:
        for h in hooks:
            h.remove()
    uneven = {}
    for name, (h, w) in seen.items():
        size = subs[name]._output_size
        oh, ow = (size, size) if isinstance(size, int) else tuple(size)
        oh, ow = oh or h, ow or w  # None keeps that side
        if h % oh or w % ow:
            uneven[name] = (h, w, oh, ow)
    if not uneven:
        return layer, []
    fixed = copy.deepcopy(layer)
    for name, dims in uneven.items():
        parent_name, _, child = name.rpartition(".")
        parent = dict(fixed.named_sublayers())[parent_name] if parent_name else fixed
        setattr(parent, child, _matmul_pool(*dims))
    return fixed, sorted(uneven)
