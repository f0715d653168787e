"""The tasks' decoders and metrics on cases worked out by hand: CTC decoding and edit distance, polygon
IoU and hmean, NMS, stride inference, GFL box decoding, and COCO mAP through pycocotools' COCOeval."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.tasks import get_task, task_names
from edgepipe.runtime.tasks.detect import classwise_nms, distribution_boxes, level_strides, nms
from edgepipe.runtime.tasks.ocr_rec import edit_similarity
from edgepipe.runtime.tasks.text_det import match, polygon_iou


def out(name, shape):
    return SimpleNamespace(name=name, shape=list(shape))


def test_every_task_is_registered_and_an_unknown_one_is_one_line():
    assert {"classify", "detect", "ocr-rec", "text-det", "fidelity"} <= set(task_names())
    with pytest.raises(EdgepipeError, match="unknown; choose one of"):
        get_task("segment")
    with pytest.raises(EdgepipeError, match="unknown setting"):
        get_task("detect", {"stride": 8})


def test_classify_scores_top1_and_agreement():
    t = get_task("classify")
    t.configure([out("p", ["N", 3])], ["x"], {})
    preds = [t.decode({"p": np.array([[0.1, 0.7, 0.2]])}, {}), t.decode({"p": np.array([[3.0, 1.0, 2.0]])}, {})]
    assert preds == [1, 0]
    s = t.score(preds, [1, 2])
    assert s.value == 0.5 and s.per_sample.tolist() == [1.0, 0.0]
    assert t.against(preds, [1, 0]).value == 1.0


def ctc(indices, classes):
    probs = np.full((len(indices), classes), 0.01, np.float32)
    probs[np.arange(len(indices)), indices] = 0.9
    return probs[None]


def test_ctc_greedy_decoding_collapses_repeats_and_drops_blanks():
    t = get_task("ocr-rec", {"characters": ["a", "b", "c"]})
    t.configure([out("softmax", ["N", "T", 5])], ["x"], {})  # blank + 3 + a space
    p = t.decode({"softmax": ctc([0, 1, 1, 0, 1, 2, 2, 4, 3, 0], 5)}, {})
    assert p["text"] == "aab c" and p["confidence"] == pytest.approx(0.9)


def test_the_dictionary_comes_from_the_metadata_and_must_fit_the_output():
    t = get_task("ocr-rec")
    t.configure([out("softmax", ["N", "T", 4])], ["x"], {"character": "a\nb\nc"})
    assert t.decode({"softmax": ctc([3, 3, 2], 4)}, {})["text"] == "cb"
    with pytest.raises(EdgepipeError, match="3 characters, the model's output is 9 wide"):
        get_task("ocr-rec").configure([out("softmax", ["N", "T", 9])], ["x"], {"character": "a\nb\nc"})
    with pytest.raises(EdgepipeError, match="dictionary=FILE"):
        get_task("ocr-rec").configure([out("softmax", ["N", "T", 9])], ["x"], {})


def test_word_accuracy_and_edit_similarity_by_hand():
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)  # three edits, the longer is 7
    assert edit_similarity("", "") == 1.0
    t = get_task("ocr-rec", {"characters": ["a"]})
    s = t.score([{"text": "kitten"}, {"text": " a bc"}], ["sitting", "abc"])  # spaces ignored, as PaddleOCR's metric
    assert s.value == 0.5 and s.figures["edit_similarity"] == pytest.approx((1 - 3 / 7 + 1) / 2)
    strict = get_task("ocr-rec", {"characters": ["a"], "ignore_space": False})
    assert strict.score([{"text": " a bc"}], ["abc"]).value == 0.0


def test_ocr_labels_are_read_from_a_tsv_beside_the_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "rec_gt.txt").write_text("train/a.png\thello\nb.png\tworld 42\n")
    t = get_task("ocr-rec", {"characters": ["a"]})
    assert t.read_labels(tmp_path, [tmp_path / "a.png", tmp_path / "b.png"]) == ["hello", "world 42"]
    (tmp_path / "c.png").write_bytes(b"")
    with pytest.raises(EdgepipeError, match="rec_gt.txt: has no line for the image c.png"):
        t.read_labels(tmp_path, [tmp_path / "c.png"])


def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_polygon_iou_and_one_to_one_matching_by_hand():
    assert polygon_iou(square(0, 0, 2, 2), square(1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert polygon_iou(square(0, 0, 2, 2), square(0, 0, 2, 2)) == pytest.approx(1.0)
    gts = [square(0, 0, 10, 10), square(20, 0, 30, 10)]
    dets = [square(0, 0, 10, 9), square(1, 0, 10, 10), square(50, 50, 60, 60)]  # two on the first, one stray
    assert match(dets, gts, []) == (1, 3, 2)
    assert match(dets, gts, [square(50, 50, 60, 60)]) == (1, 2, 2)  # the stray lies on an ignored region


def test_text_det_hmean_and_db_decoding_of_a_probability_map():
    t = get_task("text-det")
    t.configure([out("map", ["N", 1, "H", "W"])], ["x"], {})
    prob = np.zeros((1, 1, 64, 96), np.float32)
    prob[0, 0, 12:18, 12:58] = 0.95  # DB predicts the text's shrunk kernel; unclip grows it back
    prob[0, 0, 42:48, 32:78] = 0.9
    p = t.decode({"map": prob}, {"scale": (0.5, 0.5)})  # the image was resized to half: boxes double
    assert len(p["boxes"]) == 2
    truth = [square(20, 20, 120, 40), square(60, 80, 160, 100)]
    s = t.score([p], [{"boxes": truth}])
    assert (s.value, s.figures["precision"], s.figures["recall"]) == (1.0, 1.0, 1.0)
    s = t.score([{"boxes": p["boxes"][:1]}], [{"boxes": truth}])  # one of two found: P 1, R 0.5
    assert s.value == pytest.approx(2 * 0.5 / 1.5)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]  # IoU(0, 1) = 81/100
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]], np.float32)  # box 1 is another class: kept
    det = classwise_nms(boxes, scores, 0.05, 0.5, 10)
    assert det[:, 5].tolist() == [0, 1, 0] and det[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_strides_follow_from_the_levels_sizes():
    assert level_strides([1600, 400, 100, 25], (320, 320)) == [8, 16, 32, 64]
    assert level_strides([2125], (320, 320)) == [8, 16, 32, 64]  # the levels joined into one output
    assert level_strides([1000], (320, 320)) is None


def test_gfl_distribution_decodes_to_the_expected_sides():
    bins = 8
    logits = np.full((1, 4, bins), -30.0, np.float32)
    logits[0, :, 2] = 30.0  # every side 2 strides from the centre
    boxes = distribution_boxes(logits.reshape(1, -1), [8], [1], (8, 8), 0.5)
    np.testing.assert_allclose(boxes, [[4 - 16, 4 - 16, 4 + 16, 4 + 16]], atol=1e-6)


def test_a_picodet_head_is_recognised_from_its_output_shapes():
    t = get_task("detect")
    shapes = [("s0", [1, 1600, 80]), ("s1", [1, 400, 80]), ("b0", [1, 1600, 32]), ("b1", [1, 400, 32])]
    t.configure([out(n, s) for n, s in shapes], ["image"], {})
    assert t.settings["head"] == "distribution" and t.settings["reg_max"] == 7
    assert t.box_outputs == ["b0", "b1"] and t.score_outputs == ["s0", "s1"]
    amb = get_task("detect")
    with pytest.raises(EdgepipeError, match="reg_max=N"):
        amb.configure([out("a", [1, 100, 32]), out("b", [1, 100, 68])], ["image"], {})  # reg_max 7 or 16


def coco(boxes, cats=(1,)):
    images = [{"id": i + 1, "file_name": f"{i}.png"} for i in range(len(boxes))]
    anns = [
        {
            "id": k + 1,
            "image_id": i + 1,
            "category_id": c,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "iscrowd": 0,
            "area": (x1 - x0) * (y1 - y0),
        }
        for k, (i, (x0, y0, x1, y1, c)) in enumerate((i, b) for i, bs in enumerate(boxes) for b in bs)
    ]
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}


def test_map_by_cocoeval_on_boxes_of_known_iou(tmp_path):
    pytest.importorskip("pycocotools")
    t = get_task("detect", {"head": "nms"})
    t.configure([out("bbox", ["k", 6])], ["image"], {})
    (tmp_path / "annotations.json").write_text(json.dumps(coco([[(0, 0, 100, 100, 1)]])))
    labels = t.read_labels(tmp_path, [tmp_path / "0.png"])
    exact = [np.array([[0, 0, 100, 100, 0.9, 0]], np.float32)]
    assert t.score(exact, labels).value == pytest.approx(1.0)
    # IoU 0.62 (a box shifted by 23.5 px): a hit at the thresholds .50, .55 and .60 of the ten
    shifted = [np.array([[23.5, 0, 123.5, 100, 0.9, 0]], np.float32)]
    s = t.score(shifted, labels)
    assert s.figures["map50"] == pytest.approx(1.0) and s.value == pytest.approx(0.3)
    with pytest.raises(EdgepipeError, match="lists no image 1.png"):
        t.read_labels(tmp_path, [tmp_path / "1.png"])


def test_detections_against_the_float_models_are_map_without_labels():
    pytest.importorskip("pycocotools")
    t = get_task("detect", {"head": "nms"})
    ref = [np.array([[0, 0, 50, 50, 0.9, 1], [60, 60, 90, 90, 0.1, 0]], np.float32)]  # the second below 0.3
    assert t.against(ref, ref).value == pytest.approx(1.0)
    assert t.against([np.zeros((0, 6), np.float32)], ref).value == 0.0


def test_the_task_and_its_settings_travel_in_the_metadata():
    from edgepipe.runtime.tasks import task_of
    from edgepipe.runtime.tasks.base import TASK_KEY

    class Session:
        def __init__(self, meta, outs):
            self.meta, self.outs = meta, outs

        def get_modelmeta(self):
            return SimpleNamespace(custom_metadata_map=self.meta)

        def get_outputs(self):
            return self.outs

        def get_inputs(self):
            return [SimpleNamespace(name="image")]

    t = get_task("detect", {"score_threshold": 0.5, "head": "nms"})
    s = Session({TASK_KEY: t.to_metadata()}, [out("bbox", ["k", 6])])
    got = task_of(s)
    assert got.name == "detect" and got.settings["score_threshold"] == 0.5
    assert task_of(Session({}, [out("p", ["N", 10])])).name == "classify"
    assert task_of(Session({}, [out("map", ["N", 1, "H", "W"])])).name == "fidelity"
    assert task_of(s, "fidelity").name == "fidelity"


def squares_folder(root, n=6, seed=0):
    """Black 64×64 images with 1–3 white 16×16 squares on the stride-8 grid, and their COCO annotations. The
    squares lie 3 cells apart, so no window of the detector's filter between two of them is lit whole."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir()
    images, anns = [], []
    for k in range(n):
        arr = np.zeros((64, 64, 3), np.uint8)
        cells = rng.choice(4, int(rng.integers(1, 4)), replace=False)
        for c in cells:
            i, j = 1 + 3 * (int(c) // 2), 1 + 3 * (int(c) % 2)
            x0, y0 = 8 * j - 4, 8 * i - 4
            arr[y0 : y0 + 16, x0 : x0 + 16] = 255
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": 1,
                    "bbox": [x0, y0, 16, 16],
                    "area": 256,
                    "iscrowd": 0,
                }
            )
        Image.fromarray(arr).save(root / f"{k:03d}.png")
        images.append({"id": k + 1, "file_name": f"{k:03d}.png", "width": 64, "height": 64})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "x"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def test_a_picodet_shaped_detector_is_scored_by_map_in_fp32_and_int8(tmp_path):
    """No decoder flags: head, reg_max and strides come from the output shapes; mAP by COCOeval against
    annotations, and against the float model's detections where there are none."""
    pytest.importorskip("pycocotools")
    from conftest import edgepipe
    from onnx_models import square_detector

    model = square_detector(tmp_path / "det.onnx")
    images = squares_folder(tmp_path / "squares")
    proc = edgepipe("contract", model, "--size", "64x64", "--mean", "0,0,0", "--std", "1,1,1", "--task", "detect")
    assert proc.returncode == 0, proc.stderr
    assert "task: detect (mAP@[.5:.95]); head distribution" in proc.stdout and "strides" not in proc.stdout

    def bench(m, name):
        r, p = tmp_path / f"{name}.json", tmp_path / f"{name}.pred.json"
        proc = edgepipe(
            "bench",
            m,
            "--images",
            images,
            "--iters",
            "3",
            "--min-seconds",
            "0",
            "--energy-seconds",
            "0",
            "--json",
            r,
            "--predictions",
            p,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(r.read_text()), json.loads(p.read_text()), proc.stdout

    r, preds, out = bench(model, "fp32")
    assert r["task"]["value"] == pytest.approx(1.0) and r["task"]["map50"] == pytest.approx(1.0)
    assert r["task"]["settings"]["strides"] == [8, 16] and r["task"]["settings"]["reg_max"] == 7
    assert "task       detect: mAP@[.5:.95] 100.00%" in out
    first = preds[0]["detections"][0]
    assert first["class"] == 0 and first["score"] > 0.9 and first["box"][2] - first["box"][0] == pytest.approx(16)

    int8 = tmp_path / "det.int8.onnx"
    proc = edgepipe("quantize", model, "-o", int8, "--calibration", images, "--samples", "6", "--max-drop", "5")
    assert proc.returncode == 0, proc.stderr
    assert "task detect: mAP@[.5:.95]" in proc.stdout and "against the labels" in proc.stdout
    q, _, _ = bench(int8, "int8")
    assert q["task"]["value"] >= 0.95, q["task"]

    proc = edgepipe(
        "quantize", model, "-o", tmp_path / "head.onnx", "--calibration", images, "--samples", "6", "--float-box-head"
    )
    assert proc.returncode == 0, proc.stderr
    assert "box head kept in float: box_conv_8, box_conv_16 (before box_8, box_16)" in proc.stdout
    kinds = {n.name: n.op_type for n in __import__("onnx").load(str(tmp_path / "head.onnx")).graph.node}
    assert "box_conv_8" in kinds and "box_conv_8_quant" not in kinds and not any("bw_Dequant" in k for k in kinds)

    (images / "annotations.json").unlink()  # no labels: the int8 file against its float model's detections
    proc = edgepipe("quantize", model, "-o", tmp_path / "again.onnx", "--calibration", images, "--samples", "6")
    assert proc.returncode == 0, proc.stderr
    assert "mAP against the float model" in proc.stdout and "against the float model" in proc.stdout
    r = tmp_path / "vs_float.json"
    proc = edgepipe(
        "bench",
        int8,
        "--images",
        images,
        "--reference",
        model,
        "--iters",
        "3",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
        "--json",
        r,
    )
    assert proc.returncode == 0, proc.stderr
    t = json.loads(r.read_text())["task"]
    assert t["metric"] == "mAP against the float model" and t["against"] == "float model" and t["value"] >= 0.95


def test_bad_task_input_is_one_line_naming_the_setting_or_file(tmp_path):
    from conftest import edgepipe, one_line_error
    from onnx_models import square_detector

    model = square_detector(tmp_path / "det.onnx")
    images = squares_folder(tmp_path / "squares", n=2)
    common = [
        "--images",
        images,
        "--size",
        "64x64",
        "--mean",
        "0,0,0",
        "--std",
        "1,1,1",
        "--iters",
        "2",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
    ]
    line = one_line_error(edgepipe("bench", model, *common, "--task", "detect", "--task-opt", "strides=[8]"))
    assert "task detect strides" in line and "--task-opt strides=" in line
    line = one_line_error(edgepipe("bench", model, *common, "--task", "detect", "--task-opt", "iou=0.5"))
    assert "unknown setting(s) ['iou']" in line
    line = one_line_error(edgepipe("bench", model, *common, "--task", "ocr-rec"))
    assert "task ocr-rec" in line
    (images / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    line = one_line_error(edgepipe("bench", model, *common, "--task", "detect"))
    assert "annotations.json: lists no image 000.png" in line


def test_deploy_chooses_among_onnx_files_by_the_tasks_metric(tmp_path):
    """`edgepipe deploy A.onnx B.onnx --images DIR`: every candidate scored by mAP against the folder's
    annotations (and, without them, against the first fp32 candidate's detections); the table and
    deploy.json name the metric."""
    pytest.importorskip("pycocotools")
    from conftest import edgepipe, one_line_error
    from onnx_models import square_detector

    model = square_detector(tmp_path / "det.onnx")
    images = squares_folder(tmp_path / "squares")
    proc = edgepipe("contract", model, "--size", "64", "--mean", "0,0,0", "--std", "1,1,1", "--task", "detect")
    assert proc.returncode == 0, proc.stderr
    int8 = tmp_path / "det.int8.onnx"
    proc = edgepipe("quantize", model, "-o", int8, "--calibration", images, "--samples", "6", "--max-drop", "5")
    assert proc.returncode == 0, proc.stderr
    fast = ("--backend", "onnxruntime", "--rounds", "2", "--seconds", "0.05")

    def deploy(out, *extra):
        proc = edgepipe("deploy", model, int8, "--images", images, "-o", tmp_path / out, *fast, *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / out / "deploy.json").read_text())

    d = deploy("labelled")  # the task the models' metadata names
    assert d["metric"] == "mAP@[.5:.95]" and d["task"]["against"] == "labels" and d["task"]["samples"] == 6
    rows = {c["name"]: c for c in d["candidates"]}
    assert rows["det.onnx"]["accuracy"] == pytest.approx(1.0) and rows["det.int8.onnx"]["task"]["map50"] >= 0.95
    assert sum(c["chosen"] for c in d["candidates"]) == 1 and (tmp_path / "labelled" / d["model"]).is_file()

    (images / "annotations.json").unlink()
    d = deploy("unlabelled", "--task", "detect", "--max-drop", "0")
    rows = {c["name"]: c for c in d["candidates"]}
    assert d["task"]["against"] == "float model" and rows["det.onnx"]["task"]["vs_reference"] == 1.0
    q = rows["det.int8.onnx"]
    assert q["accuracy"] is None and q["reference"] is False
    assert q["task"]["vs_reference"] >= 0.95, q  # int8 keeps the float model's boxes (mAP against them)
    if q["task"]["vs_reference"] < 1.0:  # a zero budget: any changed box loses, and the row says by how much
        assert not q["eligible"] and "% mAP against det.onnx on onnxruntime" in " ".join(q["why_not"])

    assert "give --images DIR" in one_line_error(edgepipe("deploy", model, *fast))
    assert "--task go with --images" in one_line_error(edgepipe("deploy", model, "--task", "detect", *fast))
    line = one_line_error(edgepipe("deploy", model, tmp_path / "nonesuch.onnx", "--images", images, *fast))
    assert "nonesuch.onnx: not found" in line
    assert not (tmp_path / "deployment").exists()
