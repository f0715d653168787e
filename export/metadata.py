"""Metadata an exported ONNX file carries for the device (metadata_props): the input contract the
model was trained with (runtime/inputs/images.py), kept through every quantization."""

from __future__ import annotations

from pathlib import Path

PREFIX = "edgepipe."


def merge(model, props: dict[str, str]) -> None:
    """Add or replace metadata_props entries of a loaded ModelProto."""
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def edgepipe_metadata(path: str | Path) -> dict[str, str]:
    """The edgepipe.* metadata_props of an ONNX file."""
    import onnx

    return {
        p.key: p.value
        for p in onnx.load(str(path), load_external_data=False).metadata_props
        if p.key.startswith(PREFIX)
    }


def write_metadata(path: str | Path, props: dict[str, str]) -> None:
    """Add or replace metadata_props entries of an ONNX file, atomically."""
    import onnx

    from edgepipe.devices.base.atomic import write_bytes_atomic

    model = onnx.load(str(path))
    merge(model, props)
    write_bytes_atomic(path, model.SerializeToString())
