"""The runner's camera mode: frames from a folder or a video, the camera's clock with dropped frames,
events raised and cleared on a known run of one class (and of a detector's boxes in a zone), and bad
sources as one line."""

import http.server
import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import one_line_error

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (make test installs the [camera] extra)")

from edgepipe.runtime.inputs.images import CONTRACT_KEY, Contract  # noqa: E402
from edgepipe.runtime.judge.verdict import judge_stream  # noqa: E402
from edgepipe.runtime.model.backends import open_model  # noqa: E402
from edgepipe.runtime.model.modelfile import check_model_file  # noqa: E402
from edgepipe.runtime.model.session import softmax  # noqa: E402
from edgepipe.runtime.stream import preprocess  # noqa: E402


def runner(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True, timeout=300
    )


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
    probs = np.stack(
        [softmax(s.run(None, {s.get_inputs()[0].name: preprocess(cv2, f, contract)})[0][0]) for f in frames]
    )
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


def test_folder_and_video_streams_count_every_frame(material, tmp_path):
    model, root, _, _ = material
    for src, kind in ((root / "frames", "folder"), (root / "seq.avi", "video")):
        proc = runner(model, "--stream", src, "--profile", "none", "--json", tmp_path / "r.json")
        assert proc.returncode == 0, proc.stderr
        r = json.loads((tmp_path / "r.json").read_text())
        assert r["schema"] == "edgepipe-stream/1" and r["source"]["kind"] == kind
        assert r["frames_processed"] == 15 and r["frames_dropped"] == 0
        assert sum(r["predicted"].values()) == 15 and abs(sum(r["share"].values()) - 1) < 1e-9
        assert 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"] and r["memory"]["peak_rss_mb"] > 10
        assert "fps sustained" in proc.stdout and "decode" in proc.stdout
    proc = runner(
        model, "--stream", root / "frames", "--frames", "4", "--profile", "none", "--json", tmp_path / "r.json"
    )
    assert proc.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["frames_processed"] == 4


def test_a_camera_clock_faster_than_the_model_drops_frames(material, tmp_path):
    model, root, _, _ = material
    proc = runner(
        model,
        "--stream",
        root / "seq.avi",
        "--fps",
        "100000",
        "--profile",
        "none",
        "--threads",
        "1",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["frames_dropped"] > 0 and r["frames_processed"] + r["frames_dropped"] <= 15
    proc = runner(
        model,
        "--stream",
        root / "seq.avi",
        "--fps",
        "30",
        "--threads",
        "2",
        "--profile",
        "none",
        "--json",
        tmp_path / "r.json",
    )
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["frames_dropped"] == 0 and r["frames_processed"] == 15 and r["seconds"] >= 14 / 30  # on the clock
    # paced by the clock, onnxruntime's second worker sleeps between frames instead of spinning (which
    # kept ~80% of a core busy at 15 fps for ~1 ms of work per frame)
    assert r["cpu_utilisation"] < 0.5, r["cpu_utilisation"]


class _Hook(http.server.BaseHTTPRequestHandler):
    """A webhook that refuses the first POST (HTTP 503) and takes every later one."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.tries += 1
        ok = self.server.tries > 1
        if ok:
            self.server.received.append(json.loads(body))
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def webhook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.tries, server.received = 0, []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_watch_raises_and_clears_on_the_known_run(material, tmp_path, webhook):
    model, root, cls, threshold = material
    events = tmp_path / "ev.jsonl"
    url = f"http://127.0.0.1:{webhook.server_port}/hook"
    # the lossless PNG frames: the threshold was set from their scores (the video is MJPEG)
    proc = runner(
        model,
        "--stream",
        root / "frames",
        "--fps",
        "30",
        "--watch",
        cls,
        "--threshold",
        threshold,
        "--consecutive",
        "3",
        "--events",
        events,
        "--notify",
        url,
        "--profile",
        "x86-avx2",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e["frame"]) for e in ev] == [("raised", 7), ("cleared", 10)]  # frames 5-9 show the class
    t = float(threshold)
    assert ev[0]["class"] == cls and ev[0]["score"] > t and ev[1]["score"] <= t and ev[0]["latency_ms"] > 0
    # the webhook refused the first POST: retried after the back-off, then both events arrived, in order
    assert webhook.received == ev and webhook.tries == 3
    assert proc.stderr.count("notify: POST") == 1 and "HTTP 503" in proc.stderr and "retrying in" in proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["notify"] == {"url": url, "events": 2, "sent": 2, "failed_posts": 1, "lost": 0}
    # energy per frame from the profile's meters over the whole stream, and the fps budget judged
    e = r["energy"]["primary"]
    assert e["frames"] == r["frames_processed"] == 15 and e["mj_per_frame"] > 0 and e["seconds"] >= 14 / 30
    fps = next(c for c in r["verdict"]["checks"] if c["budget"] == "fps")
    assert fps["limit"] == 30 and fps["value"] == 30 and fps["status"] == "pass", fps  # no frame dropped
    assert "mJ/frame" in proc.stdout and "verdict" in proc.stdout


def test_a_failing_webhook_never_stops_the_loop():
    import socket

    from edgepipe.runtime.notify import Notifier

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = io.StringIO()
    n = Notifier(f"http://127.0.0.1:{port}/", retries=2, backoff=0.01, timeout=1, log=log)
    t0 = time.perf_counter()
    for i in range(3):
        n.send({"event": "raised", "frame": i})
    assert time.perf_counter() - t0 < 0.05  # sending queues; it never waits on the network
    assert n.close(wait=10) == {
        "url": f"http://127.0.0.1:{port}/",
        "events": 3,
        "sent": 0,
        "failed_posts": 9,
        "lost": 3,
    }
    lines = log.getvalue().splitlines()
    assert len(lines) == 9 and sum("giving up" in line for line in lines) == 3


def test_stream_verdict_judges_the_frames_kept_up_with():
    prof = {"name": "cam", "budgets": {"fps": 15, "peak_rss_mb": 128}}

    def res(asked, done, dropped, p90=10.0):
        return {
            "fps_asked": asked,
            "frames_processed": done,
            "frames_dropped": dropped,
            "latency": {"p90_ms": p90},
            "sustained_fps": asked * done / (done + dropped) if asked else 1e3 / 8,
            "memory": {"peak_rss_mb": 100},
        }

    def fps(r):
        return next(c for c in judge_stream(r, prof)["checks"] if c["budget"] == "fps")

    assert fps(res(15, 100, 0))["status"] == "pass"
    assert fps(res(30, 40, 60))["status"] == "fail"  # 12 of 30 fps kept up with
    below = fps(res(5, 50, 0))
    assert below["status"] == "not measured" and "--fps 15" in below["where"]
    assert fps(res(None, 100, 0))["status"] == "pass"  # 125 fps, p90 frames at 100 fps
    assert fps(res(None, 100, 0, p90=80.0))["status"] == "marginal"  # p90 frames would run at 12.5 fps
    assert judge_stream(res(15, 100, 0), prof)["overall"] == "pass"


def test_bad_sources_and_options_are_one_line(material, tmp_path):
    model, root, _, _ = material
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.avi").write_text("not a video")
    for args, words in (
        ((tmp_path / "none.avi",), "no such file, folder or camera"),
        ((tmp_path / "junk.avi",), "OpenCV cannot open it as a video"),
        ((tmp_path / "empty",), "the folder holds no images"),
        ((root / "frames", "--watch", "cat"), "--watch cat: not a class of this model"),
        ((root / "frames", "--fps", "0"), "--fps 0"),
        ((root / "frames", "--threshold", "0.5"), "go with --watch"),
        ((root / "frames", "--notify", "http://127.0.0.1:1/"), "go with --watch"),
        ((root / "frames", "--watch", "0", "--zone", "0,0 9,0 9,9"), "--zone: a region for a detector's boxes"),
        ((root / "frames", "--watch", "0", "--notify", "ftp://host/x"), "--notify ftp://host/x: give a webhook"),
        ((tmp_path / "none.avi", "--watch", "0", "--events", tmp_path / "ev.jsonl"), "no such file"),
    ):
        assert words in one_line_error(runner(model, "--stream", *args, "--profile", "none"))
    assert not (tmp_path / "ev.jsonl").exists()  # no events file from a stream that did not run


def test_a_detector_raises_when_a_watched_box_enters_the_zone_and_clears_when_it_leaves(tmp_path):
    """A square walks left to right across 64×64 frames, through a zone on the right half: the event is raised
    on the second frame with its box's centre inside (--consecutive 2), carries that box in frame pixels, and
    clears on the first frame without it."""
    from conftest import edgepipe
    from onnx_models import square_detector

    model = square_detector(tmp_path / "det.onnx")
    proc = edgepipe("contract", model, "--size", "64", "--mean", "0,0,0", "--std", "1,1,1", "--classes", "square,x",
                    "--task", "detect")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frames = tmp_path / "walk"
    frames.mkdir()
    for k, j in enumerate([None, 1, 2, 4, 5, 6, None, 2]):  # the square's column on the stride-8 grid
        img = np.zeros((64, 64, 3), np.uint8)
        if j is not None:
            img[28:44, 8 * j - 4 : 8 * j + 12] = 255  # centred on cell (4, j): centre x = 8j + 4
        cv2.imwrite(str(frames / f"{k:03d}.png"), img)
    events, r = tmp_path / "ev.jsonl", tmp_path / "r.json"
    zone = "32,0 64,0 64,64 32,64"
    args = ("--stream", frames, "--watch", "square", "--consecutive", "2", "--profile", "none")
    shots = tmp_path / "shots"
    proc = runner(model, *args, "--zone", zone, "--events", events, "--json", r, "--snapshot", shots)
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e["frame"]) for e in ev] == [("raised", 4), ("cleared", 6)]  # centres 36, 44 inside
    assert ev[0]["class"] == "square" and ev[0]["zone"][0] == [32.0, 0.0] and ev[1]["boxes"] == []
    (box,) = ev[0]["boxes"]
    assert box["box"] == pytest.approx([36, 28, 52, 44], abs=0.5) and box["score"] > 0.9
    # the raising frame as a JPEG, named by its event (a clear has none): the box drawn in red on its edge,
    # the zone's edge in yellow, the square's inside untouched
    assert ev[0]["snapshot"] == str(shots / "event-000004.jpg") and "snapshot" not in ev[1]
    assert sorted(p.name for p in shots.iterdir()) == ["event-000004.jpg"] and "snapshots  1 in" in proc.stdout
    shot = cv2.imread(ev[0]["snapshot"]).astype(int)
    b, g, red = shot[28, 44]  # the box's top edge
    assert red > 150 and b < 100 and g < 100, shot[28, 44]
    assert shot[62, 32, 1] > 200 and shot[62, 32, 2] > 200 and shot[62, 30].max() < 30  # the zone's left edge, x 32
    assert (shot[33:40, 40:48] > 200).all()  # inside the box: the white square, as it was
    assert json.loads(r.read_text())["predicted"] == {"0": 6}  # a square found on the 6 frames that hold one
    proc = runner(model, *args, "--events", tmp_path / "all.jsonl")  # no zone: the first two frames with it
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [(e["event"], e["frame"]) for e in ev] == [("raised", 2), ("cleared", 6)]  # frame 7's square is alone

    # frames of twice the model's size: resized to its input, the boxes come back in the frames' pixels
    big = tmp_path / "walk128"
    big.mkdir()
    for f in sorted(frames.glob("*.png")):
        cv2.imwrite(str(big / f.name), cv2.resize(cv2.imread(str(f)), (128, 128), interpolation=cv2.INTER_NEAREST))
    proc = runner(model, "--stream", big, *args[2:], "--zone", "64,0 128,0 128,128 64,128", "--events", events)
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e["frame"]) for e in ev] == [("raised", 4), ("cleared", 6)]
    assert ev[0]["boxes"][0]["box"] == pytest.approx([72, 56, 104, 88], abs=1)

    assert "--zone" in one_line_error(runner(model, *args, "--zone", "1,2 3"))
    line = one_line_error(runner(model, "--stream", frames, "--snapshot", shots, "--profile", "none"))
    assert "--snapshot and --notify go with --watch CLASS" in line, line
    assert "not a class of this detector" in one_line_error(runner(model, *args[:3], "cat", "--profile", "none"))
