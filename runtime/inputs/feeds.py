"""Model inputs of any signature: several named inputs, dynamic dimensions, a fixed batch of 1.

A model's inputs are handled as *feeds*: a list of {input name: array} dicts, each one batch whose
arrays share their first dimension. Samples of different shapes (text lines of several widths,
images under a keep-ratio contract) sit in different feeds; a model whose batch dimension is fixed
gets feeds of that many samples. Shapes are given as `NAME=1x3x48x320` (`--shape`, one flag name
for every command); a single-input model takes the shape without its name.

The inputs a Paddle detector derives from the preprocessing (`im_shape`, `scale_factor`) are
filled from the image input when a feed does not give them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from edgepipe.devices import EdgepipeError

Feed = dict[str, np.ndarray]

NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}
DERIVED = ("im_shape", "scale_factor")  # Paddle detectors: the resized image's H, W and its scale


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # ints, or None for a dynamic dimension
    dtype: type

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape and self.shape[0] is not None else None

    def accepts(self, shape: tuple) -> bool:
        return len(shape) == len(self.shape) and all(d is None or d == s for d, s in zip(self.shape, shape))

    def text(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)


def signature(session) -> list[InputSpec]:
    """The inputs of an onnxruntime session (or any object with get_inputs(): name, shape, type)."""
    out = []
    for i in session.get_inputs():
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
        dtype = NP_TYPES.get(i.type)
        if dtype is None:
            raise EdgepipeError(f"input '{i.name}' has type {i.type}, which edgepipe cannot feed")
        out.append(InputSpec(i.name, dims, dtype))
    return out


def image_input(spec: list[InputSpec]) -> InputSpec | None:
    """The image input: the one 4-D float input (N×C×H×W); None where there is not exactly one."""
    found = [s for s in spec if len(s.shape) == 4 and np.issubdtype(s.dtype, np.floating) and s.name not in DERIVED]
    return found[0] if len(found) == 1 else None


def parse_shapes(items: Iterable[str] | None, spec: list[InputSpec] | None = None) -> dict[str, tuple[int, ...]]:
    """`NAME=1x3x48x320` (repeatable) as {name: shape}; a bare `1x3x48x320` names a single-input model's
    input. Checked against the model's signature when given."""
    shapes = {}
    for item in items or ():
        name, sep, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise EdgepipeError(f"--shape {item}: write NAME=1x3x48x320 (positive sizes joined by x)")
        if not sep:
            if spec is not None and len(spec) != 1:
                raise EdgepipeError(
                    f"--shape {item}: the model has {len(spec)} inputs ({', '.join(s.name for s in spec)}); "
                    "name the one you mean, NAME=" + dims
                )
            name = spec[0].name if spec else ""
        shapes[name] = shape
    for name, shape in shapes.items():
        if spec is None:
            continue
        match = next((s for s in spec if s.name == name), None)
        if match is None:
            raise EdgepipeError(
                f"--shape {name}=…: the model has no input '{name}' (it has: {', '.join(s.name for s in spec)})"
            )
        if not match.accepts(shape):
            raise EdgepipeError(
                f"--shape {name}={'x'.join(map(str, shape))}: the model's input '{name}' is "
                f"{match.text()} (? = any size)"
            )
    return shapes


def derived_inputs(spec: list[InputSpec], image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> Feed:
    """`im_shape` ([H, W] of the image fed) and `scale_factor` ([sy, sx] of the resize that made it)
    for the inputs of `spec` that take them, one row per image."""
    if not any(s.name in DERIVED for s in spec):
        return {}
    n, (h, w) = len(image), image.shape[2:4]
    values = {"im_shape": (float(h), float(w)), "scale_factor": tuple(float(s) for s in scale)}
    return {s.name: np.tile(np.asarray(values[s.name], dtype=s.dtype), (n, 1)) for s in spec if s.name in DERIVED}


def random_feeds(
    spec: list[InputSpec],
    samples: int,
    shapes: dict[str, tuple[int, ...]] | None = None,
    batch: int = 8,
    seed: int = 0,
    what: str = "the model",
) -> list[Feed]:
    """`samples` random samples at the given or fixed shapes (standard normal floats; the derived
    detector inputs from the image's shape), in feeds of at most `batch` (or the model's fixed batch)."""
    shapes = shapes or {}
    rng = np.random.default_rng(seed)
    image = image_input(spec)
    concrete = {}
    for s in spec:
        if s.name in shapes:
            concrete[s.name] = shapes[s.name][1:]
        elif s.name in DERIVED and image is not None:
            continue
        elif all(d is not None for d in s.shape[1:]):
            concrete[s.name] = s.shape[1:]
        else:
            example = "x".join(str(d or (1 if k == 0 else 224)) for k, d in enumerate(s.shape))
            raise EdgepipeError(
                f"{what}: input '{s.name}' is {s.text()} (? = dynamic); give the size to use with "
                f"--shape {s.name}={example}"
            )
    per = min(batch_size(spec, batch), shapes.get(spec[0].name, (batch,))[0] if spec[0].name in shapes else batch)
    feeds, left = [], samples
    while left > 0:
        n = min(per, left)
        feed = {}
        for s in spec:
            if s.name not in concrete:
                continue
            shape = (n, *concrete[s.name])
            if np.issubdtype(s.dtype, np.floating):
                feed[s.name] = rng.standard_normal(shape).astype(s.dtype)
            elif s.dtype == np.bool_:
                feed[s.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                feed[s.name] = rng.integers(0, 2, shape).astype(s.dtype)
        if image is not None and image.name in feed:
            feed |= {k: v for k, v in derived_inputs(spec, feed[image.name]).items() if k not in feed}
        feeds.append(feed)
        left -= n
    return feeds


def batch_size(spec: list[InputSpec], wanted: int) -> int:
    """How many samples a feed may hold: the model's fixed batch where it has one, else `wanted`."""
    fixed = {s.fixed_batch for s in spec if s.fixed_batch is not None}
    if len(fixed) > 1:
        raise EdgepipeError(
            f"the model's inputs fix different batch sizes ({sorted(fixed)}); edgepipe feeds them together"
        )
    return fixed.pop() if fixed else wanted


def samples(feeds: Iterable[Feed]) -> Iterator[Feed]:
    """Each sample of the feeds on its own (first dimension 1)."""
    for feed in feeds:
        n = count([feed])
        for i in range(n):
            yield {k: v[i : i + 1] for k, v in feed.items()}


def count(feeds: Iterable[Feed]) -> int:
    return sum(len(next(iter(f.values()))) for f in feeds if f)


def regroup(feeds: Iterable[Feed], batch: int) -> list[Feed]:
    """The same samples, grouped by shape into feeds of at most `batch` (the order within a shape kept)."""
    return _grouped(list(samples(feeds)), None, batch)[0]


def first(feeds: list[Feed], n: int) -> list[Feed]:
    """The feeds holding the first `n` samples (the last one cut)."""
    out, left = [], n
    for f in feeds:
        if left <= 0:
            break
        k = min(left, count([f]))
        out.append({name: v[:k] for name, v in f.items()})
        left -= k
    return out


def spread(feeds: list[Feed], n: int) -> list[Feed]:
    """`n` samples taken evenly across all of the feeds (every size a folder holds is represented, not only
    the first group's), regrouped in feeds of at most the largest feed's size; all of them when fewer."""
    every = list(samples(feeds))
    if len(every) <= n:
        return feeds
    pick = sorted({int(i) for i in np.linspace(0, len(every) - 1, n).round()})
    return regroup([every[i] for i in pick], max(count([f]) for f in feeds))


def from_array(spec: list[InputSpec], x: np.ndarray, batch: int = 32) -> list[Feed]:
    """A single-image-input model's inputs from one N×C×H×W array (the derived detector inputs added)."""
    image = image_input(spec) if len(spec) > 1 else spec[0]
    if image is None:
        raise EdgepipeError(
            f"the model takes {len(spec)} inputs ({', '.join(s.name for s in spec)}); give an .npz "
            "with one array per input name"
        )
    per = batch_size(spec, batch)
    feeds = []
    for i in range(0, len(x), per):
        xb = x[i : i + per].astype(image.dtype, copy=False)
        feeds.append({image.name: xb} | derived_inputs(spec, xb))
    return feeds


def run(session, feeds: Iterable[Feed], names: list[str] | None = None) -> list[list[np.ndarray]]:
    """Each feed's outputs (all of them, or the named ones), in order."""
    return [session.run(names, feed) for feed in feeds]


def _grouped(per_sample: list[Feed], labels, batch: int):
    """Per-sample feeds grouped by shape into feeds of at most `batch`, with the labels (if any) put in
    the same order as the samples now are."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(per_sample):
        groups.setdefault(tuple((k, v.shape[1:]) for k, v in sorted(s.items())), []).append(i)
    feeds, order = [], []
    for idx in groups.values():
        for j in range(0, len(idx), batch):
            part = idx[j : j + batch]
            feeds.append({k: np.concatenate([per_sample[i][k] for i in part]) for k in per_sample[part[0]]})
            order += part
    return feeds, (None if labels is None else np.asarray(labels)[order]), order


def image_feeds(root, contract, spec: list[InputSpec], progress=None):
    """A folder of images as one feed per image, in file order, for the model's image input under
    `contract` (the derived detector inputs from each image's resize): (feeds, each image's resize scale
    (sy, sx), labels or None, files)."""
    from edgepipe.runtime.inputs.images import folder_samples

    image = image_input(spec)
    if image is None:
        raise EdgepipeError(
            f"{root}: the model has no single image input ({', '.join(s.name for s in spec)}); give an "
            ".npz with one array per input name"
        )
    others = [s.name for s in spec if s.name != image.name and s.name not in DERIVED]
    if others:
        raise EdgepipeError(
            f"{root}: images fill the input '{image.name}'; the model also takes {others}, which images "
            "cannot give: pass an .npz with one array per input name"
        )
    samples, labels, files = folder_samples(root, contract, progress)
    per, scales = [], []
    for (x, scale), f in zip(samples, files):
        if not image.accepts((1, *x.shape)):
            raise EdgepipeError(
                f"{f}: preprocessed to {list(x.shape)} by the input contract, the model's input "
                f"'{image.name}' is {image.text()}; give the contract's --size (and --keep-ratio) it was "
                "trained with"
            )
        xb = x[None].astype(image.dtype, copy=False)
        per.append({image.name: xb} | derived_inputs(spec, xb, scale))
        scales.append(tuple(scale))
    return per, scales, labels, files


def folder_feeds(root, contract, spec: list[InputSpec], batch: int = 32, progress=None):
    """A folder of images as feeds for the model's image input under `contract` (the derived detector
    inputs from each image's resize): (feeds, labels or None in feed order, files in feed order)."""
    per, _, labels, files = image_feeds(root, contract, spec, progress)
    feeds, labels, order = _grouped(per, labels, batch_size(spec, batch))
    return feeds, labels, [files[i] for i in order]


def npz_feeds(arrays: dict[str, np.ndarray], spec: list[InputSpec], source: str, batch: int = 32) -> list[Feed]:
    """Arrays named by the model's inputs ('x' stands for a single-input model's, or for the image input
    of a detector whose derived inputs are then computed) as feeds, checked against its signature."""
    names = [s.name for s in spec]
    image = image_input(spec)
    if "x" in arrays and "x" not in names:
        target = names[0] if len(names) == 1 else (image.name if image is not None else None)
        if target is None:
            raise EdgepipeError(f"{source}: the model takes {names}; name each array after the input it fills")
        arrays = {target: arrays["x"]} | {k: v for k, v in arrays.items() if k != "x"}
    image_name = image.name if image is not None else None
    missing = [n for n in names if n not in arrays and not (n in DERIVED and image_name in arrays)]
    if missing:
        raise EdgepipeError(f"{source}: no array for the model's input(s) {missing} (has: {', '.join(arrays)})")
    n = len(arrays[names[0] if names[0] in arrays else image_name])
    for s in spec:
        if s.name in arrays:
            a = arrays[s.name]
            if len(a) != n or not s.accepts((1, *a.shape[1:])):
                raise EdgepipeError(
                    f"{source}: '{s.name}' has shape {list(a.shape)}, the model's input is {s.text()} "
                    f"(? = any size; {n} samples)"
                )
    per = batch_size(spec, batch)
    feeds = []
    for i in range(0, n, per):
        f = {s.name: arrays[s.name][i : i + per].astype(s.dtype, copy=False) for s in spec if s.name in arrays}
        if image_name in f:
            f |= {k: v for k, v in derived_inputs(spec, f[image_name]).items() if k not in f}
        feeds.append(f)
    return feeds


def model_contract(session, args=None, shape: tuple | None = None, note=None):
    """The contract images are decoded by for a session's model: its own, with the contract flags of
    `args` (if any) laid over it (images.contract_from_args; `shape` is a --shape given for its image input)."""
    from edgepipe.runtime.inputs.images import contract_from_args, contract_of

    own = contract_of(session)
    if args is None:
        return own
    image = image_input(signature(session))
    return contract_from_args(args, own, image.shape if image else None, shape, note)
