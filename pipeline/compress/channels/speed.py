"""Is the pruned model faster? Both models exported to ONNX and timed by onnxruntime (fp32, batch 1,
one thread) in interleaved rounds in this process, so a noisy neighbour slows both alike; the
ratio of their medians is the speed-up and the spread of the per-round ratios says how sure it is.

Fewer MACs do not make a model faster by themselves: channel counts that are not a multiple of the
kernels' vector width (8 for AVX2's fp32 lanes) run through padded or scalar tails, which is why
`round_to` defaults to the device profile's `channel_multiple`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices.base.atomic import temp_dir


def channel_multiple() -> tuple[int, str]:
    """round_to when a recipe leaves it out: the detected device profile's channel multiple."""
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile

    profile = detect_profile(detect_host())
    if profile is None:
        return 8, "no device profile matches this host; 8 suits most SIMD kernels"
    return profile.channel_multiple, f"device profile {profile.name}"


def compare(
    before, after, input_shape: tuple[int, ...], rounds: int = 5, seconds: float = 0.2, iters: int = 20
) -> dict:
    """p50 latency of `before` and `after` (Paddle layers), measured in alternating rounds (each at
    least `iters` runs and `seconds` long)."""
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.pipeline.compress.layer_timing import time_graphs

    with temp_dir("speed") as tmp:
        t = time_graphs(
            {
                k: export_layer(m, tuple(input_shape), Path(tmp) / f"{k}.onnx", name=k)
                for k, m in (("before", before), ("after", after))
            },
            rounds=rounds,
            seconds=seconds,
            iters=iters,
            warmup_seconds=0.1,
        )
    p50 = [t["before"]["rounds_ms"], t["after"]["rounds_ms"]]
    ratios = np.asarray(p50[0]) / np.asarray(p50[1])
    speedup = float(np.median(p50[0]) / np.median(p50[1]))
    return {
        "p50_before_ms": float(np.median(p50[0])),
        "p50_after_ms": float(np.median(p50[1])),
        "speedup": speedup,
        "speedup_range": [float(ratios.min()), float(ratios.max())],
        "rounds": rounds,
        "slower": bool(ratios.max() < 1.0),
        "how": "onnxruntime fp32, batch 1, 1 thread, interleaved rounds",
    }
