"""The one gate every command and stage passes an ONNX file through before anything reads it.

An ONNX file may keep tensors in *external data* files named by a `location` inside the model.
Read naively, a location of `/etc/passwd`, `../../secret` or a symlink to either copies that file's
bytes into whatever edgepipe writes next (a quantized model, say). The gate parses the model's
structure — every tensor of every graph, subgraph and function — and admits external data only as
a regular file inside the model's own folder: a relative path, no `..`, no symlink anywhere on
the way. It runs before onnxruntime, onnx or a quantizer opens the file, and needs only protobuf
(onnxruntime's own dependency), so the paddle-free runner on a device applies the same rules.

The schema below is the subset of onnx.proto (field numbers from the ONNX IR spec) that locates
tensors; every other field is skipped by protobuf as unknown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from edgepipe.devices import EdgepipeError

# (message, [(field, number, type, label, message type)]); label 1 = optional, 3 = repeated
_SCHEMA = [
    ("Entry", [("key", 1, "string", 1, None), ("value", 2, "string", 1, None)]),
    (
        "Tensor",
        [
            ("data_type", 2, "int32", 1, None),
            ("name", 8, "string", 1, None),
            ("external_data", 13, "message", 3, "Entry"),
            ("data_location", 14, "int32", 1, None),
        ],
    ),
    ("Sparse", [("values", 1, "message", 1, "Tensor"), ("indices", 2, "message", 1, "Tensor")]),
    (
        "Attribute",
        [
            ("t", 5, "message", 1, "Tensor"),
            ("g", 6, "message", 1, "Graph"),
            ("tensors", 10, "message", 3, "Tensor"),
            ("graphs", 11, "message", 3, "Graph"),
            ("sparse_tensor", 22, "message", 1, "Sparse"),
            ("sparse_tensors", 23, "message", 3, "Sparse"),
        ],
    ),
    ("Node", [("attribute", 5, "message", 3, "Attribute")]),
    (
        "Graph",
        [
            ("node", 1, "message", 3, "Node"),
            ("initializer", 5, "message", 3, "Tensor"),
            ("sparse_initializer", 15, "message", 3, "Sparse"),
        ],
    ),
    ("Function", [("node", 7, "message", 3, "Node")]),
    (
        "Model",
        [
            ("ir_version", 1, "int64", 1, None),
            ("graph", 7, "message", 1, "Graph"),
            ("metadata_props", 14, "message", 3, "Entry"),
            ("functions", 25, "message", 3, "Function"),
        ],
    ),
]
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
INT8_OPS = (b"QLinearConv", b"QLinearMatMul", b"MatMulInteger", b"ConvInteger", b"DequantizeLinear")
FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}  # TensorProto.DataType
_PLAIN = re.compile(r"[A-Za-z0-9._/-]+")


@lru_cache(maxsize=1)
def _model_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    types = {"string": 9, "int32": 5, "int64": 3, "message": 11}
    fdp = descriptor_pb2.FileDescriptorProto(name="edgepipe_onnx_gate.proto", package="edgepipe_gate", syntax="proto3")
    for name, fields in _SCHEMA:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label, mtype in fields:
            f = msg.field.add(name=fname, number=number, type=types[ftype], label=label)
            if mtype:
                f.type_name = f".edgepipe_gate.{mtype}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgepipe_gate.Model"))


@dataclass(frozen=True)
class ModelFile:
    """A model file that passed the gate: its path, size, the external data files it uses, its
    metadata properties, and how many of its initializers are stored in each float type."""

    path: Path
    size: int
    external: tuple[Path, ...]
    metadata: dict = field(default_factory=dict)
    float_weights: dict = field(default_factory=dict)

    @property
    def float_precision(self) -> str:
        """The float type most of its stored weights have (fp32 when it stores none)."""
        return max(self.float_weights, key=self.float_weights.get) if self.float_weights else "fp32"


def _tensors(graph):
    for t in graph.initializer:
        yield t
    for s in graph.sparse_initializer:
        yield s.values
        yield s.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node):
    for a in node.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
            yield s.values
            yield s.indices
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            yield from _tensors(g)


def _check_location(model: Path, tensor, location: str) -> Path:
    where = f"{model}: tensor {tensor.name[:80]!r} keeps its data in {location!r}"
    parts = Path(location).parts
    if not _PLAIN.fullmatch(location or "-"):  # also refuses onnxruntime's "*/_ORT_MEM_ADDR_/*" in-memory marker
        raise EdgepipeError(
            f"{where}; external data must be a plain relative file name (letters, digits, '.', '_', "
            "'-', '/'); re-save the model with onnx.save(..., location='NAME.data')"
        )
    if not location or os.path.isabs(location) or "\\" in location or ".." in parts or "\0" in location:
        raise EdgepipeError(
            f"{where}, outside the model's folder; external data must be a relative path inside "
            "it (re-save the model with onnx.save(..., location='NAME.data'))"
        )
    folder = model.parent
    step = folder
    for part in parts:
        step = step / part
        if step.is_symlink():
            raise EdgepipeError(
                f"{where}, and {step} is a symbolic link; external data must be a regular file in "
                "the model's folder, not a link (copy the data there)"
            )
    if not step.is_file():
        raise EdgepipeError(
            f"{where}, which is {'not a regular file' if step.exists() else 'missing'}; copy that "
            "file beside the model, or re-export it"
        )
    try:
        step.resolve().relative_to(folder.resolve())
    except ValueError:
        raise EdgepipeError(
            f"{where}, which resolves outside the model's folder; copy the data beside the model"
        ) from None
    return step


def check_model_file(path: str | Path) -> ModelFile:
    """Admit an ONNX file — it exists, is a non-empty regular file that parses as a model, and every
    external data location is a regular file inside its folder — or raise one line saying why."""
    path = Path(path)
    if path.is_dir():
        raise EdgepipeError(f"{path}: is a folder; pass the path of an .onnx file")
    if not path.exists():
        raise EdgepipeError(f"{path}: model file not found; pass the path of an .onnx file")
    if not path.is_file():
        raise EdgepipeError(f"{path}: not a regular file; pass the path of an .onnx file")
    size = path.stat().st_size
    if size == 0:
        raise EdgepipeError(f"{path}: the file is empty; re-export the model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgepipeError(f"{path}: cannot read it ({exc.strerror})") from None
    model = _model_class()()
    try:
        model.ParseFromString(data)
    except Exception:  # google.protobuf.message.DecodeError, or RecursionError on a crafted nesting
        raise EdgepipeError(
            f"{path}: not an ONNX model (it does not parse); the file is truncated or of another format, re-export it"
        ) from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise EdgepipeError(f"{path}: not an ONNX model (no graph or IR version); re-export it")
    external = []
    try:
        tensors = list(_tensors(model.graph))
        for f in model.functions:
            for node in f.node:
                tensors.extend(_node_tensors(node))
    except RecursionError:
        raise EdgepipeError(f"{path}: its subgraphs nest too deeply to be a real model; re-export it") from None
    for t in tensors:
        if t.data_location != EXTERNAL:
            continue
        keys = [e.key for e in t.external_data]
        if len(keys) != len(set(keys)):  # readers disagree on which of two entries wins
            raise EdgepipeError(
                f"{path}: tensor {t.name[:80]!r} names its external data twice ({', '.join(keys)}); "
                "re-save the model with onnx"
            )
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        external.append(_check_location(path, t, loc))
    floats: dict[str, int] = {}
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES:
            floats[FLOAT_TYPES[t.data_type]] = floats.get(FLOAT_TYPES[t.data_type], 0) + 1
    return ModelFile(path, size, tuple(dict.fromkeys(external)), {e.key: e.value for e in model.metadata_props}, floats)


def file_precision(model: Path) -> str:
    """What onnxruntime runs a file in: int8 when it holds integer kernels or Q/DQ pairs, else the
    float type of most of its stored weights."""
    if any(op in model.read_bytes() for op in INT8_OPS):
        return "int8"
    return check_model_file(model).float_precision
