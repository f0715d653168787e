"""Where a runner's inputs come from: an .npz of model inputs (streamed, never whole) or a folder of
images preprocessed by the model's input contract, and what holding them costs in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.npzfile import SCAN_BYTES, ArrayInputs, NpzInputs, ShapeGroups, chunk_rows

CHUNK_BYTES = 16 << 20  # input rows held at a time by the accuracy / predictions / --save-outputs pass


@dataclass
class Source:
    """The inputs of a run: rows (NpzInputs, ArrayInputs or ShapeGroups), their labels, and for images
    the file names, class names and folder."""

    rows: object = None
    files: list | None = None
    classes: tuple = ()
    origin: Path | None = None
    contract: object = None  # the images' input contract
    notes: list = field(default_factory=list)

    @property
    def labels(self):
        return self.rows.labels if self.rows is not None else None


def npz_source(inputs: Path | None) -> Source:
    """The rows of an .npz of model inputs (its headers and labels read, never the whole file)."""
    if inputs is None or inputs.is_dir():
        return Source()
    rows = NpzInputs(inputs)
    notes = [
        f"{inputs}: '{k}' is float64; converted to the model's float type"
        for k, d in rows.dtypes.items()
        if d == np.float64
    ]
    if rows.labels is not None and len(rows.labels) != rows.n:
        raise EdgepipeError(f"{inputs}: {len(rows.labels)} labels for {rows.n} inputs")
    return Source(rows=rows, origin=inputs, notes=notes)


def image_source(model: Path, session, images: Path, contract_args) -> Source:
    """A folder of images, preprocessed by the model's input contract (or the contract flags): one array
    when the contract fixes the size, else one group per size."""
    from edgepipe.runtime.inputs.feeds import folder_feeds, model_contract, signature
    from edgepipe.runtime.inputs.images import folder_inputs

    notes = []
    contract = model_contract(session, contract_args, note=notes.append)
    if contract is None:
        raise EdgepipeError(
            f"{model}: carries no input contract (exported by another tool, or by edgepipe before it "
            "wrote one), so its images cannot be preprocessed here: give it with --size HxW (and "
            "--mean/--std/--keep-ratio/--bgr), write it once with `edgepipe contract`, or pass "
            "--inputs FILE.npz of model inputs"
        )
    if contract.fixed_size:
        x, labels, files = folder_inputs(images, contract)
        rows = ArrayInputs({"x": x}, labels)
    else:  # each image at its own size
        groups, labels, files = folder_feeds(images, contract, signature(session), batch=1 << 30)
        rows = ShapeGroups(groups, labels)
    return Source(rows=rows, files=files, classes=contract.classes, origin=images, notes=notes, contract=contract)


def inputs_memory(src, rows_held: int) -> dict:
    """Beside the memory figures: the inputs file's size, the most of the inputs held in memory at once
    until memory was read (those figures include it), and how the inputs were read."""
    if src.file_bytes is None:  # decoded images
        return {"inputs_held_mb": src.n * src.row_bytes / 2**20, "inputs_read": "decoded whole into memory"}
    return {
        "inputs_file_mb": src.file_bytes / 2**20,
        "inputs_held_mb": rows_held * src.row_bytes / 2**20,
        "inputs_read": f"streamed from the .npz, never whole: every row checked {SCAN_BYTES >> 20} MB at a "
        f"time, its first {rows_held} rows held while measuring, then "
        f"{chunk_rows(src.row_bytes, CHUNK_BYTES)} rows at a time for accuracy, predictions or "
        "outputs (after memory was read)",
    }
