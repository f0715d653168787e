"""The runner's camera mode: frames from a folder or a video, the camera's clock with dropped frames,
events raised and cleared on a known run of one class, and bad sources as one line."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import one_line_error

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (make test installs the [camera] extra)")

from edgepipe.runtime.backends import open_model  # noqa: E402
from edgepipe.runtime.images import CONTRACT_KEY, Contract  # noqa: E402
from edgepipe.runtime.modelfile import check_model_file  # noqa: E402
from edgepipe.runtime.stream import preprocess  # noqa: E402


def runner(*args):
    return subprocess.run([sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def material(short_run, tmp_path_factory):
    """The short run's teacher (2 epochs: weak, so the threshold is set from its own scores), and its
    test digits as 112×112 frames: 5 digits with the lowest scores for CLS (its most frequent top
    class), the 5 with the highest, 5 more low ones; the watch threshold lies between the two sets."""
    run_dir, _ = short_run
    model = run_dir / "export" / "teacher.onnx"
    contract = Contract.from_json(check_model_file(model).metadata[CONTRACT_KEY])
    z = np.load(run_dir / "bench" / "test_split.npz")
    px = np.clip((z["x"][:, 0] * contract.std[0] + contract.mean[0]) * 255, 0, 255).round().astype(np.uint8)
    frames = [cv2.cvtColor(cv2.resize(p, (112, 112), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR) for p in px]
    s = open_model(model)
    probs = np.stack([_softmax(s.run(None, {s.get_inputs()[0].name: preprocess(cv2, f, contract)})[0][0]) for f in frames])
    top = probs.argmax(1)
    cls = int(np.bincount(top, minlength=probs.shape[1]).argmax())
    ranked = np.argsort(probs[:, cls])
    no, yes = [int(i) for i in ranked[:10]], [int(i) for i in ranked[-5:]]
    lo, hi = probs[no, cls].max(), probs[yes, cls].min()
    assert hi > lo + 0.02, "the short run's teacher separates nothing"
    threshold = f"{(lo + hi) / 2:.4f}"
    order = no[:5] + yes + no[5:]
    root = tmp_path_factory.mktemp("stream")
    (root / "frames").mkdir()
    for k, i in enumerate(order):
        cv2.imwrite(str(root / "frames" / f"{k:03d}.png"), frames[i])
    video = cv2.VideoWriter(str(root / "seq.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, (112, 112))
    for i in order:
        video.write(frames[i])
    video.release()
    return model, root, str(cls), threshold


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_folder_and_video_streams_count_every_frame(material, tmp_path):
    model, root, _, _ = material
    for src, kind in ((root / "frames", "folder"), (root / "seq.avi", "video")):
        proc = runner(model, "--stream", src, "--profile", "none", "--json", tmp_path / "r.json")
        assert proc.returncode == 0, proc.stderr
        r = json.loads((tmp_path / "r.json").read_text())
        assert r["schema"] == "edgepipe-stream/1" and r["source"]["kind"] == kind
        assert r["frames_processed"] == 15 and r["frames_dropped"] == 0
        assert sum(r["predicted"].values()) == 15 and abs(sum(r["share"].values()) - 1) < 1e-9
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] and r["memory"]["peak_rss_mb"] > 10
        assert "fps sustained" in proc.stdout and "decode" in proc.stdout
    proc = runner(model, "--stream", root / "frames", "--frames", "4", "--profile", "none", "--json", tmp_path / "r.json")
    assert proc.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["frames_processed"] == 4


def test_a_camera_clock_faster_than_the_model_drops_frames(material, tmp_path):
    model, root, _, _ = material
    proc = runner(model, "--stream", root / "seq.avi", "--fps", "100000", "--profile", "none", "--threads", "1",
                  "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["frames_dropped"] > 0 and r["frames_processed"] + r["frames_dropped"] <= 15
    proc = runner(model, "--stream", root / "seq.avi", "--fps", "30", "--threads", "2", "--profile", "none",
                  "--json", tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["frames_dropped"] == 0 and r["frames_processed"] == 15 and r["seconds"] >= 14 / 30  # on the clock
    # paced by the clock, onnxruntime's second worker sleeps between frames instead of spinning (which
    # kept ~80% of a core busy at 15 fps for ~1 ms of work per frame)
    assert r["cpu_utilisation"] < 0.5, r["cpu_utilisation"]


def test_watch_raises_and_clears_on_the_known_run(material, tmp_path):
    model, root, cls, threshold = material
    events = tmp_path / "ev.jsonl"
    # the lossless PNG frames: the threshold was set from their scores (the video is MJPEG)
    proc = runner(model, "--stream", root / "frames", "--fps", "30", "--watch", cls, "--threshold", threshold, "--consecutive", "3",
                  "--events", events, "--profile", "none")
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e["frame"]) for e in ev] == [("raised", 7), ("cleared", 10)]  # frames 5-9 show the class
    t = float(threshold)
    assert ev[0]["class"] == cls and ev[0]["score"] > t and ev[1]["score"] <= t and ev[0]["latency_ms"] > 0


def test_bad_sources_and_options_are_one_line(material, tmp_path):
    model, root, _, _ = material
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.avi").write_text("not a video")
    for args, words in (((tmp_path / "none.avi",), "no such file, folder or camera"),
                        ((tmp_path / "junk.avi",), "OpenCV cannot open it as a video"),
                        ((tmp_path / "empty",), "the folder holds no images"),
                        ((root / "frames", "--watch", "cat"), "--watch cat: not a class of this model"),
                        ((root / "frames", "--fps", "0"), "--fps 0"),
                        ((root / "frames", "--threshold", "0.5"), "go with --watch")):
        assert words in one_line_error(runner(model, "--stream", *args, "--profile", "none"))
