"""Detection frames made from the bundled digits (`edgepipe frames OUT --objects MAX`): COCO annotations
whose boxes lie in the frames, splits that hold digits out by source, the same bytes for the same seed,
and annotations the detect task reads and scores (its own boxes: mAP 1.0)."""

import json

import numpy as np
import pytest
from conftest import edgepipe, one_line_error

from edgepipe.pipeline.data.detframes import make_detection_frames


def test_detection_frames_annotate_held_out_digits_the_detect_task_reads(tmp_path):
    from PIL import Image

    r = make_detection_frames(tmp_path / "a", size=96, counts={"train": 12, "val": 4, "test": 6}, max_objects=4)
    docs = {s: json.loads((tmp_path / "a" / s / f"instances_{s}.json").read_text()) for s in ("train", "val", "test")}
    assert {s: len(d["images"]) for s, d in docs.items()} == {"train": 12, "val": 4, "test": 6}
    assert r["splits"]["test"]["objects"] == len(docs["test"]["annotations"]) >= 6  # at least one per frame
    for split, doc in docs.items():
        for a in doc["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w >= 2 and h >= 2 and a["area"] == w * h
            assert 1 <= a["category_id"] <= 10
    sources = {s: {a["source_digit"] for a in d["annotations"]} for s, d in docs.items()}
    assert not sources["train"] & (sources["val"] | sources["test"]) and not sources["val"] & sources["test"]
    assert np.asarray(Image.open(tmp_path / "a" / "test" / "0000.png")).shape == (96, 96, 3)  # RGB frames
    # the same seed makes the same bytes
    make_detection_frames(tmp_path / "b", size=96, counts={"train": 12, "val": 4, "test": 6}, max_objects=4)
    assert (tmp_path / "a/test/0003.png").read_bytes() == (tmp_path / "b/test/0003.png").read_bytes()

    pytest.importorskip("pycocotools")
    from edgepipe.runtime.tasks import get_task

    task = get_task("detect")
    folder = tmp_path / "a" / "test"
    files = sorted(folder.glob("*.png"))
    gt = task.read_labels(folder, files)
    by_image = {i["file_name"]: i["id"] for i in docs["test"]["images"]}
    preds = []
    for f in files:
        rows = [a for a in docs["test"]["annotations"] if a["image_id"] == by_image[f.name]]
        preds.append(
            np.array(
                [[x, y, x + w, y + h, 0.9, a["category_id"] - 1] for a in rows for x, y, w, h in [a["bbox"]]],
                np.float32,
            ).reshape(-1, 6)
        )
    s = task.score(preds, gt)
    assert s.value == pytest.approx(1.0) and s.figures["map50"] == pytest.approx(1.0)


def test_the_frames_command_writes_detection_frames_or_says_what_is_wrong(tmp_path):
    proc = edgepipe("frames", tmp_path / "d", "--objects", "2", "--splits", "3", "1", "1", "--size", "64")
    assert proc.returncode == 0, proc.stderr
    assert "train 3 frames" in proc.stdout and (tmp_path / "d" / "val" / "instances_val.json").is_file()
    assert "not empty" in one_line_error(edgepipe("frames", tmp_path / "d", "--objects", "2"))
    assert "1 to 20 objects" in one_line_error(edgepipe("frames", tmp_path / "e", "--objects", "0"))
    assert "--objects uses --splits" in one_line_error(edgepipe("frames", tmp_path / "e", "--objects", "2",
                                                                "--held-out", "5", "5"))  # fmt: skip
    assert not (tmp_path / "e").exists()
