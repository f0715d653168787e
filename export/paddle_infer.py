"""Paddle Inference as the reference a saved model's export is checked against.

`paddle.inference` reads both formats Paddle's model zoos ship — the legacy ProgramDesc
(`inference.pdmodel`) and Paddle 3's PIR (`*.json`) — with their `.pdiparams`, at any input shape
the program allows, which `paddle.jit.load` (Paddle 3) does not: it cannot read released legacy
folders and refuses dynamic dimensions beyond the batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError


class PaddlePredictor:
    """A Paddle Inference predictor on the CPU; run(feed) -> the outputs in the program's order."""

    def __init__(self, graph: Path, params: Path, threads: int = 1):
        import paddle.inference as pi

        config = pi.Config(str(graph), str(params))
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(threads)
        try:
            self._p = pi.create_predictor(config)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            raise EdgepipeError(
                f"{graph}: Paddle Inference cannot load this model ({first[:200]}); is it a complete "
                "inference model (the .pdmodel/.json with its .pdiparams)?"
            ) from None
        self.input_names = list(self._p.get_input_names())
        self.output_names = list(self._p.get_output_names())
        self.graph = Path(graph)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise EdgepipeError(
                f"{self.graph}: Paddle's program takes inputs {self.input_names}; no value for {missing}"
            )
        for name in self.input_names:
            arr = np.ascontiguousarray(feed[name])
            handle = self._p.get_input_handle(name)
            handle.reshape(list(arr.shape))
            handle.copy_from_cpu(arr)
        try:
            self._p.run()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            shapes = {k: list(v.shape) for k, v in feed.items()}
            raise EdgepipeError(
                f"{self.graph}: Paddle Inference failed at input shapes {shapes} ({first[:200]}); "
                "give the sizes the model is used at with --shape NAME=1x3xHxW"
            ) from None
        return [self._p.get_output_handle(n).copy_to_cpu() for n in self.output_names]
