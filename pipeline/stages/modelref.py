"""A stage's `model:` — the name of an earlier stage's artifact, or a source mapping (a built-in
family, a zoo model, the user's own factory, a saved inference model or an ONNX file; see
models/sources.py). One set of helpers gives every stage the same wiring: what it depends on,
which user files are hashed into its inputs, what its output is called, and the loaded Layer."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from edgepipe.pipeline.models.sources import (
    LAYER_SOURCES,
    InferenceModel,
    ModelSource,
    ModelSpec,
    OnnxModel,
    architecture,
    source_files,
)

ModelRef = Union[str, ModelSource]


def ref_inputs(key: str, ref) -> dict[str, str]:
    """{config key: artifact name} when `ref` names an artifact; a source depends on no stage."""
    return {key: ref} if isinstance(ref, str) else {}


def ref_files(key: str, ref, base: Path | None) -> dict[str, Path]:
    """The user files a source reads, keyed by their config path (hashed into the stage's inputs)."""
    if isinstance(ref, str):
        return {}
    return {f"{key}.{k}": p for k, p in source_files(ref, base).items()}


def ref_shapes(key: str, ref) -> dict[str, tuple]:
    """{config key: input shape} for a source that states its own (the built-in families), checked
    against the data's at recipe load."""
    return {key: ref.input_shape} if isinstance(ref, ModelSpec) else {}


def ref_name(ref) -> str:
    """The artifact name, or a source's own name (zoo function, callable, file stem)."""
    return ref if isinstance(ref, str) else ref.name


def is_layer(ref) -> bool:
    """Whether a stage can rebuild and change this model in Paddle (not a saved graph)."""
    return isinstance(ref, str) or isinstance(ref, LAYER_SOURCES)


def trained_less(ref) -> bool:
    """A source mapping that would build a model with random weights (no weights:, not pretrained)."""
    if ref is None or isinstance(ref, str) or not is_layer(ref):
        return False
    return not getattr(ref, "weights", None) and not getattr(ref, "pretrained", False)


def graph_kind(ref) -> str | None:
    """'inference' or 'onnx' for a saved-graph source, else None."""
    return "inference" if isinstance(ref, InferenceModel) else "onnx" if isinstance(ref, OnnxModel) else None


def record(ctx, source) -> dict:
    """What save_model needs of a source a stage built: {spec, input_shape, contract} (the data's
    shape for sources that do not state one; the input contract of the data it is trained on)."""
    shape = source.input_shape if isinstance(source, ModelSpec) else ctx.data.input_shape
    return {"spec": architecture(source, ctx.base), "input_shape": tuple(shape), "contract": ctx.data.contract_record}


def load_ref(ctx, ref, technique: str):
    """(layer, info, label) for a stage's `model:`: info holds `spec`, `transforms` and `input_shape`
    as a model folder's model.json does, so the stage saves its result the same way either way."""
    from edgepipe.pipeline.models.load import load_model, load_source

    if isinstance(ref, str):
        layer, info = load_model(ctx.path_of(ref))
        return layer, info, ctx.artifacts[ref].meta.get("label", ref)
    layer = load_source(ref, ctx.base, technique=technique)
    check_classes(ref, layer, ctx.data, technique)
    rec = record(ctx, ref)
    return layer, {"spec": rec["spec"], "transforms": [], "input_shape": list(rec["input_shape"])}, ref.name


def check_classes(source, layer, data, technique: str) -> None:
    """A model built from a source must take the data and give a logit per class: a built-in family
    by its num_classes, any other by one forward on zeros (models.load.check_fits)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.models.load import check_fits

    if isinstance(source, ModelSpec):
        if source.num_classes < data.classes:
            raise EdgepipeError(
                f"{technique}: family {source.family} has num_classes: {source.num_classes}, the data has "
                f"{data.classes} classes; set num_classes: {data.classes}"
            )
        return
    check_fits(layer, data.input_shape, data.classes, f"{technique}: {source.TAG}: {source.name}")


class TakesModels:
    """What a stage config that names models gets from its `model_refs()` ({config key: ref}): the
    user files to hash, the input shapes the built-in families state (checked at recipe load), and a
    preflight that builds each zoo / python model once on zeros of the data's shape before any
    stage runs, so a model that cannot take the data is one line naming its key."""

    def model_refs(self) -> dict:
        raise NotImplementedError

    def files(self, base):
        return {k: p for key, ref in self.model_refs().items() for k, p in ref_files(key, ref, base).items()}

    def input_shapes(self):
        return {k: v for key, ref in self.model_refs().items() for k, v in ref_shapes(key, ref).items()}

    def preflight(self, input_shape: tuple, base: Path | None) -> None:
        from edgepipe.devices import EdgepipeError
        from edgepipe.pipeline.models.load import check_fits
        from edgepipe.pipeline.models.sources import build

        for key, ref in self.model_refs().items():
            if isinstance(ref, str) or isinstance(ref, ModelSpec) or not is_layer(ref):
                continue
            try:
                check_fits(build(ref, base), tuple(input_shape), 0, f"{ref.TAG}: {ref.name}")
            except EdgepipeError as exc:
                raise EdgepipeError(f"{key}: {exc}") from None
