"""The runner's camera mode: `edgepipe-runner MODEL --stream SOURCE` watches a stream of frames — a
folder of images, a video file or a V4L2 camera — read with OpenCV (the `[camera]` extra).

Each frame is decoded, preprocessed by the model's input contract, run and post-processed
(softmax, top class), timed part by part. `--fps F` puts the frames on the camera's clock: frame i
arrives at i/F seconds, and a frame that arrives while an earlier one is still being processed is
dropped and counted (the camera does not wait; a dropped file frame is skipped undecoded). Without
--fps, frames are taken as fast as they can be processed. `--watch CLASS --threshold P
--consecutive K` raises an event when CLASS scores above P on K frames in a row and clears it when
it falls below, one JSON line each (stdout or --events FILE), and POSTed to `--notify URL`
(notify.py; the loop never waits on it). Energy per frame comes from the runner's meters running
over the whole stream — on a camera's clock that includes the idle time between frames, which is
what a frame costs there — and the verdict judges the profile's `fps` budget (verdict.judge_stream).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.images import SUFFIXES, Contract
from edgepipe.runtime.measure.bench import latency_stats
from edgepipe.runtime.model.session import GPU_PROVIDERS

PARTS = ("decode", "preprocess", "inference", "postprocess")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise EdgepipeError(
            "--stream reads frames with OpenCV: pip install 'edgepipe[camera]' (opencv-python-headless)"
        ) from None
    return cv2


class Source:
    """Frames from a folder (sorted by name), a video file or a camera: `skip(n)` passes frames
    by without decoding them, `read()` decodes the next (None at the end)."""

    def __init__(self, spec: str):
        cv2 = _cv2()
        self.cv2, self.spec, self.files, self.cap = cv2, spec, None, None
        path = Path(spec)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not self.files:
                raise EdgepipeError(f"--stream {spec}: the folder holds no images ({', '.join(sorted(SUFFIXES))})")
            self.kind, self.i = "folder", 0
            return
        camera = spec.isdigit() or spec.startswith("/dev/video")
        if not camera and not path.exists():
            raise EdgepipeError(f"--stream {spec}: no such file, folder or camera")
        self.cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self.cap.isOpened():
            raise EdgepipeError(
                f"--stream {spec}: "
                + (
                    "the camera cannot be opened (is it connected, and may this user read it?)"
                    if camera
                    else "OpenCV cannot open it as a video"
                )
            )
        self.kind = "camera" if camera else "video"

    def skip(self, n: int) -> int:
        """Pass up to n frames by without decoding them; returns how many there were."""
        if self.files is not None:
            k = max(0, min(n, len(self.files) - self.i))
            self.i += k
            return k
        k = 0
        while k < n and self.cap.grab():
            k += 1
        return k

    def read(self):
        if self.files is not None:
            if self.i >= len(self.files):
                return None
            f = self.files[self.i]
            self.i += 1
            frame = self.cv2.imread(str(f), self.cv2.IMREAD_COLOR)
            if frame is None:
                raise EdgepipeError(f"{f}: OpenCV cannot decode this image; remove or replace it")
            return frame
        ok, frame = self.cap.read()
        return frame if ok else None

    def close(self):
        if self.cap is not None:
            self.cap.release()


def preprocess(cv2, frame: np.ndarray, contract: Contract) -> np.ndarray:
    """A BGR frame to the model's 1×C×H×W input, as images.load_image does for files."""
    return preprocess_scaled(cv2, frame, contract)[0]


def preprocess_scaled(cv2, frame: np.ndarray, contract: Contract) -> tuple[np.ndarray, tuple[float, float]]:
    """A BGR frame to the model's 1×C×H×W input, as images.load_image and Contract.prepare do for files
    (channels and order, keep-ratio fit and padding, shorter-side resize and center crop, or a plain
    resize), and its resize's scale (sy, sx), which a detector's boxes are divided by."""
    img = frame if contract.channels == 3 and contract.bgr else None
    if img is None:
        img = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if contract.channels == 1 else cv2.COLOR_BGR2RGB)
    h0, w0 = img.shape[:2]
    h, w = contract.size
    if contract.keep_ratio:
        fh, fw = contract.fitted_size(h0, w0)
        if (fh, fw) != (h0, w0):
            img = cv2.resize(img, (fw, fh), interpolation=cv2.INTER_LINEAR)
    elif contract.resize:
        scale = contract.resize / min(img.shape[:2])
        img = cv2.resize(
            img,
            (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale))),
            interpolation=cv2.INTER_LINEAR,
        )
        top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        img = img[top : top + h, left : left + w]
    elif img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    scale = (img.shape[0] / h0, img.shape[1] / w0)
    return contract.prepare(img if img.ndim == 3 else img[..., None])[None], scale


def _pace(src: Source, fps: float, index: int, now: float) -> tuple[int, bool]:
    """On the camera's clock: wait for frame `index`, or drop all but the newest frame that arrived meanwhile."""
    due = index / fps
    if due > now:
        time.sleep(due - now)
        return 0, False
    behind = max(int(now * fps) - index, 0)  # they arrived while the last one was processed: gone
    skipped = src.skip(behind)
    return skipped, skipped < behind


def _run_frame(src: Source, session, feed_of, contract: Contract, post):
    """Decode, preprocess, run and post-process the next frame: (what `post` makes of the outputs: class
    scores or detections; the top class or None; 5 time stamps; the frame), None at the end."""
    a = time.perf_counter()
    frame = src.read()
    if frame is None:
        return None
    b = time.perf_counter()
    x, scale = preprocess_scaled(src.cv2, frame, contract)
    c = time.perf_counter()
    outputs = session.run(None, feed_of(x, scale))
    d = time.perf_counter()
    result, top = post(outputs, scale)
    e = time.perf_counter()
    return result, top, (a, b, c, d, e), frame


def _feeder(session, contract: Contract):
    """feed_of(x, scale): the model's feed for one preprocessed frame — its image input, and a Paddle
    detector's im_shape/scale_factor from the frame's resize scale (sy, sx)."""
    from edgepipe.runtime.inputs.feeds import derived_inputs, image_input, signature

    spec = signature(session)
    image = image_input(spec) or spec[0]

    def feed_of(x, scale):
        return {image.name: x, **derived_inputs(spec, x, scale)}

    return feed_of


def stream(
    session,
    contract: Contract,
    spec: str,
    fps: float | None = None,
    frames: int | None = None,
    seconds: float | None = None,
    watch=None,  # a stream_watch.Watch or DetectWatch
    meters: tuple | None = None,
    idle_seconds: float = 0.0,
    post=None,
) -> dict:
    """Run the loop until the source ends, `frames` have been processed or `seconds` have passed;
    `meters` (what energy.probe_meters returns) run over the whole loop, after an idle baseline for the sensors;
    `post` makes each frame's outputs into class scores (classify_post) or detections (stream_detect)."""
    from edgepipe.runtime.measure.energy import energy_summary, idle_baseline, readings_of
    from edgepipe.runtime.stream_watch import classify_post

    post = post or classify_post
    src = Source(spec)
    feed_of = _feeder(session, contract)
    times = {p: [] for p in PARTS}
    dropped, done, index, predicted = 0, 0, 0, {}
    meters, failed = (list(meters[0]), list(meters[1])) if meters else ([], [])
    idle_w = idle_baseline(meters, idle_seconds) if meters else {}
    for m in meters:
        m.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        while True:
            now = time.perf_counter() - t0
            if seconds is not None and now >= seconds or frames is not None and done >= frames:
                break
            if fps:
                skipped, ended = _pace(src, fps, index, now)
                dropped, index = dropped + skipped, index + skipped
                if ended:  # the source ended among the frames passed by
                    break
            step = _run_frame(src, session, feed_of, contract, post)
            if step is None:
                break
            probs, top, (a, b, c, d, e), frame = step
            for part, (s, f) in zip(PARTS, ((a, b), (b, c), (c, d), (d, e))):
                times[part].append((f - s) * 1e3)
            if watch is not None:
                watch.see(index, e - t0, probs, (e - a) * 1e3, frame)  # a snapshot is written after the timing
            if top is not None:
                predicted[top] = predicted.get(top, 0) + 1
            done += 1
            index += 1
    finally:
        src.close()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if done == 0:
        raise EdgepipeError(f"--stream {spec}: no frame could be read from it")
    energy = energy_summary(readings_of(meters, wall, done, idle_w, failed, unit="frame"), failed) if meters else None
    return _result(src, fps, done, dropped, wall, cpu, times, predicted, watch, energy)


def _result(
    src: Source, fps, done: int, dropped: int, wall: float, cpu: float, times: dict, predicted: dict, watch, energy
) -> dict:
    """The stream's figures: frames and rates, latency per frame and per part, CPU, classes, events and energy."""
    total = np.sum([times[p] for p in PARTS], axis=0)
    sums = {p: float(np.sum(times[p])) for p in PARTS}
    return {
        "source": {"spec": src.spec, "kind": src.kind},
        "fps_asked": fps,
        "frames_processed": done,
        "frames_dropped": dropped,
        "seconds": wall,
        "throughput_fps": done / wall,
        # the frames kept up with: on the camera's clock its rate × the share not dropped, else the throughput
        "sustained_fps": fps * done / (done + dropped) if fps else done / wall,
        "latency": latency_stats(total * 1e6),  # per frame: decode + preprocess + inference + postprocess
        "share": {p: sums[p] / max(sum(sums.values()), 1e-12) for p in PARTS},
        "part_p50_ms": {p: float(np.median(times[p])) for p in PARTS},
        "cpu_utilisation": cpu / wall,  # this process, all its threads
        "predicted": {str(k): v for k, v in sorted(predicted.items())},
        "events": watch.events if watch else [],
        "energy": energy,
    }


def summary(r: dict) -> str:
    lat = r["latency"]
    paced = f" ({r['throughput_fps']:.1f} fps processed)" if r["fps_asked"] else ""
    lines = [
        f"stream     {r['source']['spec']} ({r['source']['kind']}), "
        + (f"camera clock {r['fps_asked']:g} fps" if r["fps_asked"] else "as fast as it goes"),
        f"frames     {r['frames_processed']} processed, {r['frames_dropped']} dropped, in {r['seconds']:.2f} s: "
        f"{r['sustained_fps']:.1f} fps sustained{paced}; CPU {100 * r['cpu_utilisation']:.0f}% of one core",
        f"per frame  p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  "
        "(decode + preprocess + inference + post-processing)",
        "share      " + ", ".join(f"{p} {100 * r['share'][p]:.0f}%" for p in PARTS),
        f"memory     peak RSS {r['memory']['peak_rss_mb']:.1f} MB",
    ]
    if r.get("energy"):
        from edgepipe.runtime.measure.energy import energy_lines

        lines += energy_lines(r["energy"], unit="frame")
    if r["events"]:
        lines.append(
            f"events     {len(r['events'])}: "
            + ", ".join(f"{e['event']} at frame {e['frame']}" for e in r["events"][:6])
        )
    shots = [e["snapshot"] for e in r["events"] if e.get("snapshot")]
    if shots:
        lines.append(f"snapshots  {len(shots)} in {Path(shots[0]).parent}")
    if r.get("notify"):
        n = r["notify"]
        lines.append(
            f"notify     {n['sent']} of {n['events']} events POSTed to {n['url']}"
            + (f" ({n['failed_posts']} failed tries, {n['lost']} lost)" if n["failed_posts"] else "")
        )
    if r.get("verdict"):
        from edgepipe.runtime.judge.verdict import verdict_lines

        lines += verdict_lines(r["verdict"])
    return "\n".join(lines)


def _check_stream_args(args) -> float:
    """The stream flags checked together (one line for any wrong one); the event threshold."""
    from edgepipe.runtime.notify import check_url

    if args.fps is not None and args.fps <= 0:
        raise EdgepipeError(f"--fps {args.fps}: give the camera's frame rate, a positive number")
    if args.watch is None and (
        args.threshold is not None
        or args.consecutive is not None
        or args.notify
        or getattr(args, "zone", None)
        or getattr(args, "snapshot", None)
    ):
        raise EdgepipeError("--threshold, --consecutive, --zone, --snapshot and --notify go with --watch CLASS")
    threshold = 0.5 if args.threshold is None else args.threshold
    if not 0 <= threshold < 1:
        raise EdgepipeError(f"--threshold {threshold}: a score in [0, 1) (a class's softmax, or a detection's)")
    if args.notify:
        check_url(args.notify)
    return threshold


def run_stream(args, threads: int, backend: str, precision: str, device: str, notes: list[str], profile=None) -> dict:
    """The runner's --stream: open the model, read its contract, watch the source, return the result
    (judged against `profile`'s budgets where one is given)."""
    from edgepipe.runtime.inputs.images import contract_of
    from edgepipe.runtime.measure.energy import probe_meters
    from edgepipe.runtime.measure.memory import peak_rss
    from edgepipe.runtime.model.backends import describe, open_model
    from edgepipe.runtime.notify import Notifier
    from edgepipe.runtime.stream_watch import frame_post, make_watch

    threshold = _check_stream_args(args)
    # paced by a camera, the worker threads would otherwise spin between frames: a core busy for nothing
    session = open_model(
        args.model, backend, threads=threads, precision=precision, device=device, spin=args.fps is None
    )
    contract = contract_of(session)
    if contract is None:
        raise EdgepipeError(
            f"{args.model}: carries no input contract, so frames cannot be preprocessed for it; "
            "export it with edgepipe (which records one)"
        )
    meters = None
    if args.energy_seconds > 0:
        gpu = any(p in GPU_PROVIDERS for p in getattr(session, "get_providers", list)())
        meters = probe_meters(profile.power if profile else None, profile.name if profile else "", gpu=gpu)
    out, watch, notifier, ok = None, None, None, False
    try:
        post = frame_post(args, session, contract)
        if args.watch is not None:
            out = open(args.events, "w") if args.events else sys.stdout
            notifier = Notifier(args.notify) if args.notify else None
            watch = make_watch(args, contract, post, threshold, out, notifier)
        r = stream(
            session,
            contract,
            str(args.stream),
            fps=args.fps,
            frames=args.frames,
            seconds=args.seconds,
            watch=watch,
            meters=meters,
            idle_seconds=args.idle_seconds,
            post=post,
        )
        ok = True
    finally:
        sent = notifier.close() if notifier is not None else None
        if out is not None and out is not sys.stdout:
            out.close()
            if not ok:  # no events file from a stream that did not run
                Path(args.events).unlink(missing_ok=True)
    rss, how = peak_rss()
    r = {
        "schema": "edgepipe-stream/1",
        "model": str(args.model),
        "backend": describe(session, args.model),
        "threads": threads,
        "model_bytes": Path(args.model).stat().st_size,
        **r,
        "notify": sent,
        "memory": {"peak_rss_mb": rss, "peak_rss_source": how},
        "notes": notes,
    }
    if profile is not None:
        from edgepipe.runtime.judge.verdict import judge_stream

        r["verdict"] = judge_stream(r, profile.to_dict())
    return r
