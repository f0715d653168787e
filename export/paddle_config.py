"""The deployment config a released Paddle inference folder carries beside its graph, read into edgepipe's
terms: the input contract (runtime/inputs/images.py) and the task with its settings (runtime/tasks/).

Three layouts, as their exporters write them:
- PaddleOCR 2.x/3.x and PaddleX (`inference.yml`, tools/export_model.py `dump_infer_config`):
  `Global.model_name`, `PreProcess.transform_ops` (the Eval transforms: DecodeImage img_mode,
  DetResizeForTest, RecResizeImg / ClsResizeImg image_shape, NormalizeImage scale/mean/std...) and
  `PostProcess` with a `name` (CTCLabelDecode with `character_dict`, DBPostProcess thresh/box_thresh/
  unclip_ratio, ClsPostProcess label_list).
- PaddleClas (`inference.yml`, ppcls/utils/config.py `dump_infer_config`): the same transform_ops
  (ResizeImage resize_short, CropImage size, NormalizeImage) with `PostProcess: {Topk: {topk, label_list}}`.
- PaddleDetection and PaddleX's detectors (`infer_cfg.yml` or `inference.yml`, ppdet/engine/export_utils.py
  `_dump_infer_config`): `arch`, `Preprocess` (a list of {type: Resize/NormalizeImage/Permute/...}),
  `label_list`, `NMS` and `fpn_stride`.

Pixels are normalised there as (pixel · scale − mean) / std: the contract's mean and std (of pixels in
[0, 1]) are those over 255 · scale. What the contract only approximates (side limits, min/max targets,
padding to a stride) and unknown ops get a note; a file that is not such a config is one EdgepipeError
line naming it. A detector's NMS score threshold (a deployment cut) is not taken: mAP needs a low one.
"""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError

CONFIG_NAMES = ("inference.yml", "infer_cfg.yml", "inference.yaml")
SILENT = {"ToCHWImage", "KeepKeys", "Permute", "Decode", "DecodeImage"}  # layout and bookkeeping ops
NOT_DETECTION = {"HigherHRNet", "HRNet", "DeepSORT", "JDE", "FairMOT", "ByteTrack", "CenterTrack", "CLRNet"}
NOT_DETECTION |= {"S2ANet", "METRO_Body", "SOLOv2"}  # rotated boxes, meshes, masks only
OPS_OF_INPUT = {"DecodeImage", "NormalizeImage", "RecResizeImg", "ClsResizeImg", "SVTRRecResizeImg"}
OPS_OF_INPUT |= {"DetResizeForTest", "ResizeImage", "CropImage", "Resize", "PadStride"}
DB_KEYS = {"thresh": "threshold", "box_thresh": "box_threshold", "unclip_ratio": "unclip_ratio"}
DB_KEYS["max_candidates"] = "max_candidates"  # DBPostProcess's settings, as the text-det task names them


class _Malformed(ValueError):
    """A value of the config that cannot mean what its key says."""


def find_config(folder_or_prefix) -> Path | None:
    """The deployment config beside a Paddle inference model (its folder, its path prefix or its graph)."""
    p = Path(folder_or_prefix)
    folder = p if p.is_dir() else p.parent
    return next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)


def read_inference_config(folder_or_prefix) -> dict | None:
    """What the config beside the model says, in edgepipe's terms: {"contract": Contract fields (some or
    all), "task": name or None, "task_settings", "character" (ocr-rec's dictionary) or None, "classes",
    "source", "format", "model_name", "read" (what was taken), "notes"}; None where there is no config."""
    import yaml

    path = find_config(folder_or_prefix)
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise EdgepipeError(f"{path}: not readable YAML{at}; fix it or move it out of the model folder") from None
    if not isinstance(data, dict):
        raise EdgepipeError(f"{path}: not a deployment config (a mapping with PreProcess or Preprocess)")
    out = {"source": str(path), "contract": {}, "task": None, "task_settings": {}, "character": None}
    out |= {"classes": [], "read": [], "notes": [], "format": None}
    glob = data.get("Global")
    out["model_name"] = glob.get("model_name") if isinstance(glob, dict) else None
    try:
        if "Preprocess" in data:
            _read_detection(data, out)
        elif "PreProcess" in data or "PostProcess" in data:
            _read_transform_ops(data.get("PreProcess"), out)
            _read_postprocess(data.get("PostProcess"), out, path.parent)
        else:
            out["notes"].append("neither PreProcess nor Preprocess: nothing in it describes the input")
    except (_Malformed, TypeError, ValueError, AttributeError) as exc:
        raise EdgepipeError(f"{path}: malformed deployment config ({exc}); fix it or move it out of the folder")
    if out["classes"]:
        out["contract"]["classes"] = tuple(out["classes"])
    out["format"] = out["format"] or "PaddleOCR"
    return out


def _number(value, what: str) -> float:
    """A number as the exporters write them: 0.5, '0.5' or PaddleOCR's '1./255.'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            num, sep, den = value.partition("/")
            return float(num) / float(den) if sep else float(num)
        except (ValueError, ZeroDivisionError):
            pass
    raise _Malformed(f"{what} is {value!r}, not a number")


def _numbers(value, what: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _Malformed(f"{what} is {value!r}, not a list of numbers")
    return tuple(_number(v, what) for v in value)


def _side(value, what: str) -> int:
    n = _number(value, what)
    if n != int(n) or n < 1:
        raise _Malformed(f"{what} is {value!r}, not a positive whole number")
    return int(n)


def _hw(value, what: str, wh: bool = False) -> tuple[int, int]:
    """A size as [h, w] (or [w, h] where `wh`), or one number for a square."""
    if isinstance(value, (list, tuple)) and len(value) != 2:
        raise _Malformed(f"{what} is {value!r}, not two sides")
    a, b = (_side(v, what) for v in value) if isinstance(value, (list, tuple)) else (_side(value, what),) * 2
    return (b, a) if wh else (a, b)


def _args(op: dict, name: str) -> dict:
    args = op.get(name)
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise _Malformed(f"{name} has {args!r}, not a mapping of settings")
    return args


def _normalize(c: dict, mean, std, scale: float) -> None:
    """(pixel · scale − mean) / std as the contract's mean and std of pixels in [0, 1]."""
    k = 255.0 * scale
    c["mean"] = tuple(round(m / k, 9) for m in mean)
    c["std"] = tuple(round(s / k, 9) for s in std)


def _read_transform_ops(pre, out: dict) -> None:
    """PaddleOCR's, PaddleX's and PaddleClas's `PreProcess.transform_ops`: [{OpName: {settings} or null}]."""
    if pre is None:
        return
    ops = pre.get("transform_ops") if isinstance(pre, dict) else None
    if not isinstance(ops, list):
        raise _Malformed("PreProcess.transform_ops is not a list of ops")
    c, notes = out["contract"], out["notes"]
    unknown = False
    for op in ops:
        if not isinstance(op, dict) or len(op) != 1:
            raise _Malformed(f"transform op {op!r} is not one {{name: settings}}")
        name = next(iter(op))
        a = _args(op, name)
        if name == "DecodeImage":
            mode = str(a.get("img_mode", "BGR" if a.get("to_rgb") is False else "RGB")).upper()
            c["bgr"] = mode == "BGR"
            if mode == "GRAY":
                notes.append("DecodeImage img_mode GRAY: read as colour (PaddleOCR makes grey images 3-channel)")
        elif name == "NormalizeImage":
            mean = _numbers(a.get("mean", (0.485, 0.456, 0.406)), "NormalizeImage mean")
            std = _numbers(a.get("std", (0.229, 0.224, 0.225)), "NormalizeImage std")
            _normalize(c, mean, std, _number(a.get("scale", 1 / 255), "NormalizeImage scale"))
        elif name in ("RecResizeImg", "ClsResizeImg", "SVTRRecResizeImg"):
            _read_rec_resize(name, a, c)
        elif name == "DetResizeForTest":
            _read_det_resize(a, c, notes)
        elif name == "ResizeImage":
            if a.get("resize_short") is not None:
                c["resize"] = _side(a["resize_short"], "ResizeImage resize_short")
            else:
                c["size"] = _hw(a.get("size"), "ResizeImage size", wh=True)
        elif name == "CropImage":
            c["size"] = _hw(a.get("size", 224), "CropImage size", wh=True)
        elif name not in SILENT and not name.endswith(("LabelEncode", "Encode")):
            notes.append(f"{name}: not an op edgepipe knows; ignored")
            unknown = True
            continue
        out["read"].append(name)
    if c.get("resize") and "size" not in c:
        notes.append("ResizeImage resize_short without CropImage: the crop is the model input's own size")
    if "mean" not in c and c and not unknown:
        _normalize(c, (0.0,) * 3, (1.0,) * 3, 1.0)  # no NormalizeImage: pixels go in as 0..255
        notes.append("no NormalizeImage: pixels go in as 0..255")


def _read_rec_resize(name: str, a: dict, c: dict) -> None:
    """PaddleOCR's resize_norm_img: height to H keeping the ratio, width up to W, (pixel/255 − 0.5)/0.5,
    zeros padded right; with `padding: false` a plain resize to H×W."""
    shape = a.get("image_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise _Malformed(f"{name} image_shape is {shape!r}, not [C, H, W]")
    ch, h, w = (_side(v, f"{name} image_shape") for v in shape)
    c.update(channels=ch, size=(h, w))
    c.update(keep_ratio=a.get("padding", True) is not False, pad=True, resize=None)
    c["mean"], c["std"] = (0.5,) * ch, (0.5,) * ch  # a NormalizeImage after it replaces them


def _read_det_resize(a: dict, c: dict, notes: list) -> None:
    """PaddleOCR's DetResizeForTest: image_shape [H, W] (a plain resize), or a side limit (ratio kept, sides
    rounded to 32; PaddleOCR's default limit_side_len 736, limit_type min); what is approximated is noted."""
    if a.get("image_shape") is not None:
        c.update(size=_hw(a["image_shape"], "DetResizeForTest image_shape"), keep_ratio=False)
        return
    if a.get("resize_long") is not None:
        side = _side(a["resize_long"], "DetResizeForTest resize_long")
        notes.append(f"DetResizeForTest resize_long {side}: sides rounded to 32 (PaddleOCR rounds up to 128)")
    else:
        side = _side(a.get("limit_side_len", 736), "DetResizeForTest limit_side_len")
        if str(a.get("limit_type", "min")) == "min":
            notes.append(f"DetResizeForTest limit_type min (shorter side up to {side}): fitted into {side}×{side}")
        else:  # max: PaddleOCR only shrinks an image whose longer side exceeds it
            notes.append(f"DetResizeForTest limit_type max {side}: every image fitted into {side}×{side}")
    c.update(size=(side, side), keep_ratio=True, pad=False, multiple=32, resize=None)


def _read_postprocess(post, out: dict, folder: Path) -> None:
    """PaddleOCR's `PostProcess: {name: ..., settings}` or PaddleClas's `PostProcess: {Topk: {...}}`."""
    if post is None:
        return
    if not isinstance(post, dict):
        raise _Malformed("PostProcess is not a mapping")
    if "name" in post:
        out["format"] = out["format"] or "PaddleOCR"
        name, a = str(post["name"]), post
    else:
        out["format"] = out["format"] or "PaddleClas"
        name = next(iter(post), "")
        a = _args(post, name)
    out["read"].append(name)
    if name == "CTCLabelDecode":
        chars = a.get("character_dict")
        if chars is not None and (not isinstance(chars, list) or not all(isinstance(ch, str) for ch in chars)):
            raise _Malformed("CTCLabelDecode character_dict is not a list of characters")
        out["task"], out["character"] = "ocr-rec", chars
        if not chars:
            out["notes"].append("CTCLabelDecode without character_dict: give --task-opt dictionary=FILE")
    elif name == "DBPostProcess":
        st = {new: _number(a[old], f"DBPostProcess {old}") for old, new in DB_KEYS.items() if a.get(old) is not None}
        if "max_candidates" in st:
            st["max_candidates"] = int(st["max_candidates"])
        out["task"], out["task_settings"] = "text-det", st
        for key, plain in (("use_dilation", False), ("score_mode", "fast"), ("box_type", "quad")):
            if a.get(key, plain) != plain:
                out["notes"].append(f"DBPostProcess {key} {a[key]}: the text-det task decodes with {plain}")
    elif name in ("Topk", "ClsPostProcess"):
        out["task"] = "classify"
        out["classes"] = _labels(a, folder, out["notes"])
    else:
        what = "a feature extractor" if name == "NormalizeFeatures" else f"PostProcess {name}"
        out["notes"].append(f"{what}: no edgepipe task decodes it; it is compared by fidelity")
        out["read"].pop()


def _labels(a: dict, folder: Path, notes: list) -> list[str]:
    """A classifier's class names: `label_list`, or a `class_id_map_file` ("id name" lines) found beside."""
    labels = a.get("label_list")
    if labels is not None:
        if not isinstance(labels, list):
            raise _Malformed(f"label_list is {labels!r}, not a list")
        return [str(v) for v in labels]
    mapfile = a.get("class_id_map_file")
    if mapfile:
        local = folder / Path(str(mapfile)).name
        if local.is_file():
            lines = [ln.strip() for ln in local.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return [ln.split(" ", 1)[-1] for ln in lines]
        notes.append(f"class_id_map_file {mapfile}: not beside the model; classes left unnamed")
    return []


def _read_detection(data: dict, out: dict) -> None:
    """PaddleDetection's infer_cfg.yml (and PaddleX's detectors): images decoded as RGB, `Preprocess` ops."""
    out["format"] = "PaddleDetection"
    c, notes = out["contract"], out["notes"]
    ops = data["Preprocess"]
    if not isinstance(ops, list) or not all(isinstance(op, dict) and "type" in op for op in ops):
        raise _Malformed("Preprocess is not a list of {type: ...} ops")
    c["bgr"] = False  # deploy/python/preprocess.py decode_image converts OpenCV's BGR to RGB
    for op in ops:
        kind = str(op["type"])
        if kind == "Resize":
            c["size"] = _hw(op.get("target_size"), "Resize target_size")
            c["keep_ratio"] = bool(op.get("keep_ratio", True))
            if c["keep_ratio"]:
                c["pad"] = False
                notes.append("Resize keep_ratio: PaddleDetection's min/max target is approximated by fitting")
        elif kind == "NormalizeImage":
            mean = _numbers(op.get("mean", (0.485, 0.456, 0.406)), "NormalizeImage mean")
            std = _numbers(op.get("std", (0.229, 0.224, 0.225)), "NormalizeImage std")
            if str(op.get("norm_type", "mean_std")) == "none":
                mean, std = (0.0,) * len(mean), (1.0,) * len(std)
            _normalize(c, mean, std, 1 / 255 if op.get("is_scale", True) else 1.0)
        elif kind == "PadStride":
            stride = _side(op.get("stride", 32), "PadStride stride")
            if c.get("keep_ratio"):
                c["multiple"] = stride
                notes.append("PadStride: sides rounded to the stride rather than padded up to it")
            elif any(s % stride for s in c.get("size", ())):
                notes.append(f"PadStride {stride}: the fixed size is not padded to it")
        elif kind not in SILENT:
            notes.append(f"{kind}: not an op edgepipe knows; ignored")
            continue
        out["read"].append(kind)
    if "mean" not in c:  # a fused normalisation (export fuse_normalize) takes 0..255 pixels
        _normalize(c, (0.0,) * 3, (1.0,) * 3, 1.0)
    _read_detection_task(data, out)


def _read_detection_task(data: dict, out: dict) -> None:
    labels = data.get("label_list") or []
    if not isinstance(labels, list):
        raise _Malformed(f"label_list is {labels!r}, not a list")
    out["classes"] = [str(v) for v in labels]
    arch = str(data.get("arch", ""))
    if arch in NOT_DETECTION:
        out["notes"].append(f"arch {arch}: not a box detector; it is compared by fidelity")
        return
    out["task"], st = "detect", out["task_settings"]
    nms = data.get("NMS")
    if isinstance(nms, dict):
        if nms.get("nms_threshold") is not None:
            st["nms_iou"] = _number(nms["nms_threshold"], "NMS nms_threshold")
        if nms.get("keep_top_k") is not None and _number(nms["keep_top_k"], "NMS keep_top_k") > 0:
            st["keep_top"] = int(_number(nms["keep_top_k"], "NMS keep_top_k"))
    strides = data.get("fpn_stride")
    if strides is not None:
        st["strides"] = [_side(s, "fpn_stride") for s in (strides if isinstance(strides, list) else [strides])]
    if data.get("mask"):
        out["notes"].append("the model also outputs masks; the detect task scores its boxes")


def config_contract(cfg: dict, image_shape=None, shape=None):
    """The config's input contract completed for the exported model: channels and size from its image
    input (N×C×H×W with None where dynamic, or the --shape given for it) where the config gives none, and
    the default normalisation where it gives none. None where it says nothing of the input, or no size is known."""
    from edgepipe.runtime.inputs.images import Contract, default_normalisation

    f = dict(cfg["contract"])
    if not f:
        return None
    dims = tuple(shape or image_shape or ())
    channels = f.pop("channels", None) or (dims[1] if len(dims) == 4 and dims[1] in (1, 3) else 3)
    size = f.pop("size", None) or (tuple(dims[2:]) if len(dims) == 4 and all(dims[2:]) else None)
    if size is None:
        return None
    defaults = dict(zip(("mean", "std"), default_normalisation(channels)))
    try:
        values = {k: _per_channel(f.pop(k, d), channels, k) for k, d in defaults.items()}
        return Contract(size=tuple(size), channels=channels, **values, **f)
    except (EdgepipeError, _Malformed) as exc:
        raise EdgepipeError(f"{cfg['source']}: {exc}") from None


def _per_channel(values: tuple, channels: int, key: str) -> tuple[float, ...]:
    if len(values) == channels:
        return tuple(values)
    if len(values) == 1 or len(set(values)) == 1:
        return (values[0],) * channels
    raise _Malformed(f"NormalizeImage gives {len(values)} values of {key} for a {channels}-channel input")


def write_config_task(cfg: dict, onnx_path, args=None) -> dict[str, str]:
    """Write the config's task into the exported model's metadata, checked against its outputs (none where
    it does not fit, with a note), and print the line saying what was read from which file, then the notes.
    The contract flags of `args` override the config's contract field by field (saved_contract)."""
    import sys

    from edgepipe.export.metadata import write_metadata
    from edgepipe.runtime.inputs.images import CONTRACT_FLAGS
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks import get_task

    flags = [f"--{k.replace('_', '-')}" for k in CONTRACT_FLAGS if getattr(args, k, None) not in (None, False)]
    notes, props = list(cfg["notes"]), {}
    if cfg["task"]:
        settings = dict(cfg["task_settings"]) | ({"characters": list(cfg["character"])} if cfg["character"] else {})
        session = open_session(onnx_path)
        outputs = session.get_outputs()
        try:
            task = get_task(cfg["task"], settings)
            task.configure(outputs, [i.name for i in session.get_inputs()], {})
            props = task.metadata_props()
        except EdgepipeError as exc:
            notes.append(f"task {cfg['task']} not written: {exc}")
        width = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        if props and cfg["task"] == "classify" and isinstance(width, int) and 0 < len(cfg["classes"]) != width:
            notes.append(f"{len(cfg['classes'])} class names for a model of {width} outputs; check label_list")
    parts = []
    if cfg["contract"]:
        ops = ", ".join(dict.fromkeys(r for r in cfg["read"] if r in OPS_OF_INPUT)) or "class names"
        parts.append(f"the input contract ({ops})")
    if props:
        extra = f"{len(cfg['character'])} characters" if cfg["character"] else ""
        extra = extra or (f"{len(cfg['classes'])} class names" if cfg["classes"] else "")
        shown = ", ".join(f"{k} {v}" for k, v in cfg["task_settings"].items())
        parts.append(f"task {cfg['task']}" + "".join(f", {x}" for x in (extra, shown) if x))
    what = " and ".join(parts) or "nothing edgepipe uses"
    name = cfg["format"] + (f" {cfg['model_name']}" if cfg["model_name"] else "")
    over = f"; {', '.join(flags)} given override that part of it" if flags and cfg["contract"] else ""
    if props:
        write_metadata(onnx_path, props)
    lines = [f"deployment config {cfg['source']} ({name}): read {what}{over}"]
    print("\n".join(lines + [f"note: {Path(cfg['source']).name}: {n}" for n in notes]), file=sys.stderr)
    return props
