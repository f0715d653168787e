"""The deployment config released Paddle inference folders carry (export/paddle_config.py): PaddleOCR's and
PaddleX's inference.yml, PaddleClas's inference.yml and PaddleDetection's infer_cfg.yml, written here in the
layouts their exporters dump (PaddleOCR tools/export_model.py dump_infer_config, PaddleClas
ppcls/utils/config.py dump_infer_config, PaddleDetection ppdet/engine/export_utils.py _dump_infer_config),
read into the input contract and the task that `edgepipe export` and `edgepipe optimize` write."""

import argparse
import json

import onnxruntime as ort
import pytest
from conftest import edgepipe, one_line_error

from edgepipe.devices import EdgepipeError
from edgepipe.export.paddle_config import config_contract, read_inference_config, write_config_task
from edgepipe.runtime.inputs.images import CONTRACT_KEY, contract_from_args
from edgepipe.runtime.tasks import TASK_KEY

OCR_REC = """\
Global:
  model_name: PP-OCRv4_mobile_rec
Hpi:
  backend_configs:
    paddle_infer:
      trt_dynamic_shapes:
        x: [[1, 3, 48, 160], [1, 3, 48, 320], [8, 3, 48, 3200]]
PreProcess:
  transform_ops:
  - DecodeImage:
      channel_first: false
      img_mode: BGR
  - MultiLabelEncode:
      gtc_encode: NRTRLabelEncode
  - RecResizeImg:
      image_shape: [3, 48, 320]
  - KeepKeys:
      keep_keys: [image, label_ctc, label_gtc, length, valid_ratio]
PostProcess:
  name: CTCLabelDecode
  character_dict: [a, b, c, d]
"""

OCR_DET = """\
Global:
  model_name: PP-OCRv4_mobile_det
PreProcess:
  transform_ops:
  - DecodeImage: {channel_first: false, img_mode: BGR}
  - DetLabelEncode: null
  - DetResizeForTest: {limit_side_len: 960, limit_type: max}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], order: hwc, scale: 1./255., std: [0.229, 0.224, 0.225]}
  - ToCHWImage: null
  - KeepKeys: {keep_keys: [image, shape, polys, ignore_tags]}
  - GridMask: {ratio: 0.5}
PostProcess: {name: DBPostProcess, thresh: 0.2, box_thresh: 0.5, max_candidates: 800, unclip_ratio: 2.0}
"""

CLAS = """\
Global: {model_name: PP-LCNet_x1_0}
PreProcess:
  transform_ops:
  - ResizeImage: {resize_short: 256}
  - CropImage: {size: 224}
  - NormalizeImage: {channel_num: 3, mean: [0.485, 0.456, 0.406], order: '', scale: 0.00392156862745098,
      std: [0.229, 0.224, 0.225]}
  - ToCHWImage: null
PostProcess:
  Topk:
    topk: 5
    label_list: [tench, goldfish, great white shark]
"""

DET = """\
mode: paddle
draw_threshold: 0.5
metric: COCO
use_dynamic_shape: false
arch: PicoDet
min_subgraph_size: 3
Preprocess:
- interp: 2
  keep_ratio: false
  target_size: [320, 416]
  type: Resize
- is_scale: true
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
  type: NormalizeImage
- type: Permute
label_list: [person, bicycle, car]
NMS: {keep_top_k: 100, name: MultiClassNMS, nms_threshold: 0.5, nms_top_k: 1000, score_threshold: 0.3}
fpn_stride: [8, 16, 32, 64]
"""


def folder_with(tmp_path, name: str, text: str, yml: str = "inference.yml"):
    d = tmp_path / name
    d.mkdir()
    (d / yml).write_text(text, encoding="utf-8")
    return d


def test_paddleocr_configs_give_the_recognizer_and_detector_contract_and_task(tmp_path):
    rec = read_inference_config(folder_with(tmp_path, "rec", OCR_REC) / "inference")  # a path prefix finds it too
    assert rec["task"] == "ocr-rec" and rec["character"] == ["a", "b", "c", "d"] and rec["model_name"]
    c = config_contract(rec, (None, 3, 48, None))
    assert c.size == (48, 320) and c.keep_ratio and c.pad and c.bgr and c.mean == c.std == (0.5,) * 3
    assert rec["notes"] == []  # label encoders, KeepKeys and Hpi are bookkeeping, not unknown ops

    det = read_inference_config(folder_with(tmp_path, "det", OCR_DET))
    assert det["task"] == "text-det"
    assert det["task_settings"] == {"threshold": 0.2, "box_threshold": 0.5, "max_candidates": 800, "unclip_ratio": 2.0}
    c = config_contract(det, (None, 3, None, None))
    assert (c.size, c.keep_ratio, c.pad, c.multiple, c.bgr) == ((960, 960), True, False, 32, True)
    assert c.mean == pytest.approx((0.485, 0.456, 0.406)) and c.std == pytest.approx((0.229, 0.224, 0.225))
    assert det["notes"] == [
        "DetResizeForTest limit_type max 960: every image fitted into 960×960",  # PaddleOCR only shrinks
        "GridMask: not an op edgepipe knows; ignored",
    ]
    assert read_inference_config(tmp_path) is None  # no config beside it: nothing read


def test_paddleclas_config_gives_resize_crop_normalisation_and_class_names(tmp_path):
    cfg = read_inference_config(folder_with(tmp_path, "clas", CLAS))
    assert cfg["format"] == "PaddleClas" and cfg["task"] == "classify"
    c = config_contract(cfg, (None, 3, 224, 224))
    assert (c.size, c.resize, c.keep_ratio, c.bgr) == ((224, 224), 256, False, False)  # RGB, as PaddleClas reads
    assert c.mean == pytest.approx((0.485, 0.456, 0.406)) and c.classes == ("tench", "goldfish", "great white shark")
    # scale as PaddleClas's own config writes it, 0..255 means, and the class names in a class_id_map_file
    text = """\
PreProcess:
  transform_ops:
  - DecodeImage: {to_rgb: true, channel_first: false}
  - ResizeImage: {resize_short: 256}
  - CropImage: {size: 224}
  - NormalizeImage: {scale: 1.0/255.0, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}
PostProcess:
  Topk: {topk: 5, class_id_map_file: ppcls/utils/map.txt}
"""
    d = folder_with(tmp_path, "clas2", text)
    (d / "map.txt").write_text("0 tench, Tinca tinca\n1 goldfish\n", encoding="utf-8")
    c = config_contract(read_inference_config(d), (None, 3, 224, 224))
    assert c.mean == pytest.approx((0.5,) * 3) and c.std == pytest.approx((0.5,) * 3)
    assert c.classes == ("tench, Tinca tinca", "goldfish")


def test_paddledetection_infer_cfg_gives_size_rgb_labels_and_nms(tmp_path):
    cfg = read_inference_config(folder_with(tmp_path, "det", DET, "infer_cfg.yml"))
    assert (
        cfg["format"] == "PaddleDetection"
        and cfg["task"] == "detect"
        and cfg["classes"] == ["person", "bicycle", "car"]
    )
    assert cfg["task_settings"] == {"nms_iou": 0.5, "keep_top": 100, "strides": [8, 16, 32, 64]}  # not the 0.3 cut
    c = config_contract(cfg, (None, 3, 320, 416))
    assert (c.size, c.keep_ratio, c.bgr, c.classes) == ((320, 416), False, False, ("person", "bicycle", "car"))
    # PP-YOLOE's NormalizeImage (norm_type none: pixels / 255) in PaddleX's inference.yml with its model name
    text = "Global: {model_name: PP-YOLOE_plus-S}\n" + DET.replace("is_scale: true", "norm_type: none")
    cfg = read_inference_config(folder_with(tmp_path, "ppyoloe", text))
    c = config_contract(cfg, (None, 3, 320, 416))
    assert cfg["model_name"] == "PP-YOLOE_plus-S" and c.mean == (0.0,) * 3 and c.std == (1.0,) * 3
    cfg = read_inference_config(folder_with(tmp_path, "pose", DET.replace("arch: PicoDet", "arch: HRNet")))
    assert cfg["task"] is None and "not a box detector" in cfg["notes"][0]


def test_contract_flags_override_the_config_field_by_field(tmp_path):
    from edgepipe.pipeline.cli.main import build_parser

    cfg = read_inference_config(folder_with(tmp_path, "rec", OCR_REC))
    base = config_contract(cfg, (None, 3, 48, None))
    args = build_parser().parse_args(["export", "m", "--mean", "0.4,0.4,0.4", "--size", "32x256"])
    c = contract_from_args(args, base, (None, 3, 48, None))
    assert c.mean == (0.4,) * 3 and c.size == (32, 256)  # the flags given
    assert c.std == (0.5,) * 3 and c.keep_ratio and c.bgr  # the config's, where no flag is given
    assert contract_from_args(build_parser().parse_args(["export", "m"]), base, (None, 3, 48, None)) == base


@pytest.mark.parametrize(
    "text, says",
    [
        ("PreProcess: [unclosed\n", "not readable YAML at line"),
        ("- a list\n- not a mapping\n", "not a deployment config"),
        (OCR_REC.replace("image_shape: [3, 48, 320]", "image_shape: [3, 48]"), "RecResizeImg image_shape"),
        (DET.replace("mean: [0.485, 0.456, 0.406]", "mean: dark"), "NormalizeImage mean is 'dark'"),
        ("PreProcess: {transform_ops: 3}\n", "transform_ops is not a list"),
    ],
)
def test_a_malformed_config_is_one_line_naming_the_file(tmp_path, text, says):
    d = folder_with(tmp_path, "m", text)
    with pytest.raises(EdgepipeError) as exc:
        read_inference_config(d)
    assert str(d / "inference.yml") in str(exc.value) and says in str(exc.value) and "\n" not in str(exc.value)


def test_export_refuses_a_malformed_config_before_converting(tmp_path):
    d = folder_with(tmp_path, "m", "PreProcess: [unclosed\n")
    (d / "inference.json").write_text("{}")
    (d / "inference.pdiparams").write_bytes(b"")
    line = one_line_error(edgepipe("export", d))
    assert "inference.yml: not readable YAML" in line and not (d / "inference.onnx").exists()


def tiny_recognizer(prefix, classes: int):
    """A CTC-shaped text-line model (N×T×classes softmax over a width the input leaves dynamic), saved with
    paddle.jit.save as PaddleOCR's recognizers are: x is 1×3×48×W."""
    import paddle
    from paddle.static import InputSpec

    class Rec(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 8, 3, stride=4, padding=1)
            self.fc = paddle.nn.Linear(8, classes)

        def forward(self, x):
            y = self.conv(x).mean(axis=2).transpose([0, 2, 1])  # N×T×8
            return paddle.nn.functional.softmax(self.fc(y), axis=-1)

    paddle.seed(0)
    net = Rec()
    net.eval()
    paddle.jit.save(net, str(prefix), input_spec=[InputSpec([None, 3, 48, None], "float32", "x")])


def test_export_writes_the_configs_contract_task_and_dictionary(tmp_path):
    d = folder_with(tmp_path, "rec", OCR_REC)
    tiny_recognizer(d / "inference", classes=5)  # blank + the 4 characters of the dictionary
    proc = edgepipe("export", d, "--parity-samples", "4")  # no --shape and no contract flags: the config's
    assert proc.returncode == 0, proc.stderr
    assert f"deployment config {d / 'inference.yml'} (PaddleOCR PP-OCRv4_mobile_rec): read the input contract" in (
        proc.stderr
    )
    assert "task ocr-rec, 4 characters" in proc.stderr and "input contract: 3×48×320 (keep ratio)" in proc.stderr
    out = d / "inference.onnx"
    meta = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    contract = json.loads(meta[CONTRACT_KEY])
    assert (
        contract["size"] == [48, 320] and contract["keep_ratio"] and contract["bgr"] and contract["mean"] == [0.5] * 3
    )
    assert json.loads(meta[TASK_KEY])["name"] == "ocr-rec" and meta["character"] == "a\nb\nc\nd"
    # a dictionary of another width than the model's output: the task is left out, with a note saying why
    cfg = read_inference_config(d) | {"character": ["a", "b"]}
    other = tmp_path / "other.onnx"
    other.write_bytes(out.read_bytes())
    assert write_config_task(cfg, other, argparse.Namespace()) == {}


def test_optimize_on_a_folder_with_its_config_needs_no_contract_or_task_flags(tmp_path):
    from test_optimize import FAST, brightness_classifier, grey_folders

    text = """\
PreProcess:
  transform_ops:
  - ResizeImage: {size: 16}
  - NormalizeImage: {mean: [0.0, 0.0, 0.0], std: [1.0, 1.0, 1.0], scale: 1.0/255.0, order: ''}
  - ToCHWImage: null
PostProcess:
  Topk: {topk: 1, label_list: [0dark, 1mid, 2bright]}
"""
    d = folder_with(tmp_path, "saved", text)
    brightness_classifier(d / "model")
    run = tmp_path / "run"
    proc = edgepipe(
        "optimize", d, "--images", grey_folders(tmp_path / "images"), "-o", run, "--quantizer", "edgepipe", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    assert "(PaddleClas): read the input contract (ResizeImage, NormalizeImage) and task classify" in proc.stderr
    o = json.loads((run / "manifest.json").read_text())["stages"]["optimize"]["metrics"]
    assert o["task"]["name"] == "classify"
    assert all(c["accuracy"] == pytest.approx(1.0) for c in o["candidates"] if c["name"] == "saved.onnx")
    meta = ort.InferenceSession(str(run / "input" / "saved.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta[CONTRACT_KEY])["classes"] == ["0dark", "1mid", "2bright"]
