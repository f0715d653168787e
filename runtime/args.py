"""The runner's command line, in a module that imports nothing heavy, so `edgepipe bench`
(which takes the same arguments) keeps `edgepipe --help` instant."""
from __future__ import annotations

import argparse
from pathlib import Path


def build_parser(prog: str = "edgepipe-runner", add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=add_help,
                                description="Run and measure an ONNX model on this device (no paddle needed).")
    p.add_argument("model", type=Path, help="the .onnx model")
    p.add_argument("--profile", help="device profile: a preset name (see `edgepipe devices`) or a YAML file; "
                                     "default: the preset detected for this host; 'none' for no profile")
    p.add_argument("--inputs", type=Path, help=".npz with one array per model input (or 'x'), and optional labels 'y'; "
                                                "or a folder of images (as --images)")
    p.add_argument("--images", type=Path, help="a folder of images (root/<class>/*.png for accuracy, or images alone), decoded "
                                                "and preprocessed by the model's input contract (needs Pillow: edgepipe[images])")
    p.add_argument("--predictions", type=Path, help="write each input's predicted class and score here (.csv or .json)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE", help="value of a named dynamic input dimension")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the profile's, else 1)")
    p.add_argument("--inter-threads", type=int, default=1, help="inter-op threads (default 1)")
    p.add_argument("--batch", type=int, action="append", help="batch size; repeat for a sweep (default 1)")
    p.add_argument("--optimization", choices=["disable", "basic", "extended", "all"], default="all", help="graph optimisation level")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations, at least (default 10)")
    p.add_argument("--warmup-seconds", type=float, default=0.2, help="warm up for at least this long (default 0.2)")
    p.add_argument("--iters", type=int, default=100, help="measured iterations, at least (default 100)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="measure for at least this long (default 1)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop measuring after this long (default 30)")
    p.add_argument("--provider", action="append", help="execution provider, in order; each must exist (default: the profile's, "
                                                       "those missing from this build reported and skipped)")
    p.add_argument("--energy-seconds", type=float, default=1.0, help="length of the energy phase (0: no energy)")
    p.add_argument("--idle-seconds", type=float, default=0.5, help="idle baseline before it, for sensors (default 0.5)")
    p.add_argument("--no-roofline", action="store_true", help="skip MAC/s against the host's GEMM peak")
    p.add_argument("--macs", type=int, help="MACs per inference at batch 1 (counted from the graph when onnx is installed)")
    p.add_argument("--save-outputs", type=Path, help="write the model's outputs for --inputs to this .npz")
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--csv", type=Path, help="write one row per batch size here")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p
