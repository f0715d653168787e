"""The runner's command line, in a module that imports nothing heavy, so `edgepipe bench`
(which takes the same arguments) keeps `edgepipe --help` instant."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _number(kind, least: float, what: str):
    """An argparse type: a finite `kind` of at least `least` (so --macs -5 or --threads 0 is refused at once)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < least:
            raise argparse.ArgumentTypeError(f"{text} must be {what}")
        return value

    return parse


positive_int = _number(int, 1, "at least 1")
count = _number(int, 0, "0 or more")
seconds = _number(float, 0, "a finite number of seconds, 0 or more")


def add_contract_args(p: argparse.ArgumentParser) -> None:
    """The input contract of a model that does not carry one (or parts of it to override): how images
    are brought to the model's input. Shared by export, quantize, bench/edgepipe-runner, deploy and contract."""
    g = p.add_argument_group("input contract (for models that carry none; given, it overrides the model's own)")
    g.add_argument(
        "--size",
        metavar="HxW",
        help="the image size the model takes (one number: square); with --keep-ratio the box images are fitted into",
    )
    g.add_argument("--channels", type=int, choices=[1, 3], help="1 grey, 3 colour (default: the model's input)")
    g.add_argument(
        "--resize",
        type=positive_int,
        help="shorter side before a center crop to --size (default: images scaled to --size)",
    )
    g.add_argument(
        "--keep-ratio",
        action="store_true",
        help="scale into --size keeping the aspect ratio, then pad right and "
        "bottom with zeros (OCR recognizers, letterboxing detectors)",
    )
    g.add_argument(
        "--no-pad",
        action="store_true",
        help="with --keep-ratio: no padding, each image at its own size (models with dynamic height/width)",
    )
    g.add_argument(
        "--multiple", type=positive_int, help="with --keep-ratio --no-pad: round each side to a multiple of this"
    )
    g.add_argument(
        "--mean",
        help="per-channel mean of pixels in [0, 1], comma-separated (default: ImageNet's for colour, 0.5 for grey)",
    )
    g.add_argument("--std", help="per-channel std, as --mean")
    g.add_argument(
        "--bgr",
        action="store_true",
        help="colour channels in BGR order, as OpenCV decodes (many Paddle models were trained so)",
    )
    g.add_argument("--layout", choices=["nchw", "nhwc"], help="the model's input layout (default nchw)")
    g.add_argument(
        "--classes",
        help="class names in output order: comma-separated, or an image folder whose class folders name them",
    )


def add_task_args(p: argparse.ArgumentParser, reference: bool = True) -> None:
    """What the model is for, and its decoder's settings: how its outputs are scored (runtime/tasks/)."""
    g = p.add_argument_group("task (what the model is for; default: the model's own, else classify or fidelity)")
    g.add_argument(
        "--task",
        choices=["classify", "detect", "ocr-rec", "text-det", "fidelity"],
        help="decode and score the outputs as this task (stored in the model's metadata by contract/quantize)",
    )
    g.add_argument(
        "--task-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task setting, repeatable (e.g. score_threshold=0.3, strides=[8,16,32,64], dictionary=keys.txt)",
    )
    if not reference:
        return
    g.add_argument(
        "--reference",
        type=Path,
        metavar="MODEL.onnx",
        help="with --images and no labels: score the model's predictions against this (float) model's on the "
        "same images (mAP, hmean, word or top-1 agreement)",
    )


def add_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=1x3xHxW",
        help="the shape of an input whose dimensions the model leaves dynamic (repeatable; a single-input "
        "model's without NAME=)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The model to run: an .onnx file or a deployment, and the device profile."""
    p.add_argument("model", type=Path, nargs="?", help="the .onnx model (or give --deployment)")
    p.add_argument(
        "--deployment",
        type=Path,
        help="a deploy.json written by edgepipe's deploy stage: run its model on its "
        "backend, precision, threads and profile (flags given here override them)",
    )
    p.add_argument(
        "--profile",
        help="device profile: a preset name (see `edgepipe devices`) or a YAML file; "
        "default: the preset detected for this host; 'none' for no profile",
    )


def _add_input_args(p: argparse.ArgumentParser) -> None:
    """What is fed to the model, its dynamic dimensions, and where predictions go."""
    p.add_argument(
        "--inputs",
        type=Path,
        help=".npz with one array per model input (or 'x'), and optional labels 'y'; "
        "or a folder of images (as --images)",
    )
    p.add_argument(
        "--images",
        type=Path,
        help="a folder of images (root/<class>/*.png for accuracy, or images alone), decoded "
        "and preprocessed by the model's input contract (needs Pillow: edgepipe[images])",
    )
    p.add_argument("--predictions", type=Path, help="write each input's predicted class and score here (.csv or .json)")
    p.add_argument(
        "--dim", action="append", default=[], metavar="NAME=VALUE", help="value of a named dynamic input dimension"
    )
    add_shape_arg(p)


def _add_session_args(p: argparse.ArgumentParser) -> None:
    """Threads, batch sizes and graph optimisation of the session."""
    p.add_argument("--threads", type=positive_int, help="intra-op threads (default: the profile's, else 1)")
    p.add_argument("--inter-threads", type=positive_int, default=1, help="inter-op threads (default 1)")
    p.add_argument("--batch", type=positive_int, action="append", help="batch size; repeat for a sweep (default 1)")
    p.add_argument(
        "--optimization",
        choices=["disable", "basic", "extended", "all"],
        default="all",
        help="graph optimisation level",
    )


def _add_timing_args(p: argparse.ArgumentParser) -> None:
    """How long to warm up and to measure."""
    p.add_argument("--warmup", type=count, default=10, help="warm-up iterations, at least (default 10)")
    p.add_argument("--warmup-seconds", type=seconds, default=0.2, help="warm up for at least this long (default 0.2)")
    p.add_argument("--iters", type=positive_int, default=100, help="measured iterations, at least (default 100)")
    p.add_argument("--min-seconds", type=seconds, default=1.0, help="measure for at least this long (default 1)")
    p.add_argument("--max-seconds", type=seconds, default=30.0, help="stop measuring after this long (default 30)")


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    """The runtime backend, its precision, device and execution providers."""
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "openvino"],
        help="runtime: onnxruntime or OpenVINO (needs edgepipe[openvino]), the same ONNX file; default: the "
        "profile's first installed backend, else onnxruntime",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "f32", "bf16", "f16"],
        help="OpenVINO's inference precision (auto: its default, bf16 on AMX hosts); onnxruntime runs the file's",
    )
    p.add_argument("--device", help="OpenVINO device: CPU (default), GPU, NPU where present")
    p.add_argument(
        "--provider",
        action="append",
        help="execution provider, in order; each must exist (default: the profile's, "
        "those missing from this build reported and skipped)",
    )


def _add_energy_args(p: argparse.ArgumentParser) -> None:
    """The energy phase and its idle baseline."""
    p.add_argument(
        "--energy-seconds",
        type=seconds,
        default=1.0,
        help="length of the energy phase (0: no energy; with --stream the meters run over the whole stream, "
        "0 turns them off)",
    )
    p.add_argument(
        "--idle-seconds", type=seconds, default=0.5, help="idle baseline before it, for sensors (default 0.5)"
    )


def _add_loadgen_args(p: argparse.ArgumentParser) -> None:
    """MLPerf LoadGen's SingleStream scenario."""
    p.add_argument(
        "--loadgen",
        action="store_true",
        help="also run MLPerf LoadGen's SingleStream scenario on the session "
        "(edgepipe[loadgen]); its logs go beside --json, in NAME.loadgen/",
    )
    p.add_argument(
        "--loadgen-seconds",
        type=seconds,
        default=10.0,
        help="--loadgen: minimum duration (default 10; at least 1,024 queries as well)",
    )


def _add_extra_args(p: argparse.ArgumentParser) -> None:
    """The roofline, the MAC count, and saving the model's outputs."""
    p.add_argument("--no-roofline", action="store_true", help="skip MAC/s against the host's GEMM peak")
    p.add_argument(
        "--macs",
        type=positive_int,
        help="MACs per inference at batch 1 (counted from the graph when onnx is installed)",
    )
    p.add_argument("--save-outputs", type=Path, help="write the model's outputs for --inputs to this .npz")


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    """Camera mode (--stream) and its watch events."""
    p.add_argument(
        "--stream",
        help="camera mode: a folder of frames, a video file, or a camera (/dev/video0 or 0), read "
        "with OpenCV (edgepipe[camera]); each frame is preprocessed by the model's contract",
    )
    p.add_argument(
        "--fps",
        type=float,
        help="--stream: the camera's frame rate; frames arriving while one is processed are dropped",
    )
    p.add_argument("--frames", type=positive_int, help="--stream: stop after this many processed frames")
    p.add_argument("--seconds", type=seconds, help="--stream: stop after this long")
    p.add_argument("--watch", help="--stream: raise an event when this class (name or index) scores above --threshold")
    p.add_argument(
        "--threshold", type=float, help="--watch: a classifier's softmax score to exceed, a detector's box score (0.5)"
    )
    p.add_argument("--consecutive", type=positive_int, help="--watch: on this many frames in a row (default 1)")
    p.add_argument(
        "--notify",
        metavar="URL",
        help="--watch: also POST each event as JSON to this webhook (retried with "
        "back-off on failure; the stream never waits on it)",
    )
    p.add_argument("--events", type=Path, help="--watch: write the events here as JSON lines (default stdout)")
    p.add_argument(
        "--snapshot",
        type=Path,
        metavar="DIR",
        help="--watch: write each frame that raises an event here as a JPEG, the watched boxes and zone drawn; "
        "the event (and the webhook's POST) names it",
    )
    p.add_argument(
        "--zone",
        metavar='"X,Y X,Y X,Y …"',
        help="--watch on a detector: count only boxes whose centre lies in this polygon (frame pixels)",
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """Where the result is written, and how much is printed."""
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--csv", type=Path, help="write one row per batch size here")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def build_parser(prog: str = "edgepipe-runner", add_help: bool = True) -> argparse.ArgumentParser:
    """The runner's (and `edgepipe bench`'s) argument parser."""
    p = argparse.ArgumentParser(
        prog=prog, add_help=add_help, description="Run and measure an ONNX model on this device (no paddle needed)."
    )
    _add_model_args(p)
    _add_input_args(p)
    _add_session_args(p)
    _add_timing_args(p)
    _add_backend_args(p)
    _add_energy_args(p)
    _add_loadgen_args(p)
    _add_extra_args(p)
    _add_stream_args(p)
    add_contract_args(p)
    add_task_args(p)
    _add_output_args(p)
    return p
