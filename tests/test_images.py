"""A user's images: an image folder (and an .npz of pixels) under a declared input contract, through
train -> prune -> export -> quantize -> bench -> report with the real CLI, the contract carried in
the ONNX metadata, and the on-device runner decoding the same folder by it."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import edgepipe, one_line_error, run_recipe

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.recipe import DataConfig, parse_recipe
from edgepipe.pipeline.data.augment import augment_images, shift_augment
from edgepipe.pipeline.data.frames import make_frames
from edgepipe.pipeline.data.load import load_dataset
from edgepipe.runtime.inputs.images import CONTRACT_KEY, Contract, load_image

RGB_NET = """\
import paddle
import paddle.nn as nn


def build(num_classes=10, width=8, channels=3):
    return nn.Sequential(nn.Conv2D(channels, width, 3, padding=1), nn.BatchNorm2D(width), nn.ReLU(), nn.MaxPool2D(2),
                         nn.Conv2D(width, 2 * width, 3, padding=1), nn.BatchNorm2D(2 * width), nn.ReLU(),
                         nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
"""
DATA = "{source: imagefolder, path: frames, size: [32, 32], channels: 3, test: 0.2, val: 0.2, calibration: 0.1}"
QUICK_BENCH = (
    "{iters: 10, min_seconds: 0.05, warmup_iters: 2, warmup_seconds: 0.01, energy_seconds: 0, idle_seconds: 0}"
)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("camera")
    make_frames(root / "frames", size=40, per_class=20, seed=0)  # 40×40 frames; the recipes ask for 32×32
    (root / "nets.py").write_text(RGB_NET)
    return root


def test_image_folder_through_the_whole_pipeline_and_the_runner(frames):
    recipe = f"""\
name: cam
data: {DATA}
stages:
  - train: {{model: {{python: "nets:build"}}, epochs: 2, augment_shift: 0}}
  - prune: {{model: teacher, channels: {{ratio: 0.3}}, epochs: 0}}
  - export: {{models: [teacher, teacher_pruned], parity_samples: 16}}
  - quantize: {{model: teacher_pruned.onnx, calibration_samples: 20, max_accuracy_drop: null}}
  - bench: {QUICK_BENCH}
  - report: {{}}
"""
    _, run_dir, s = run_recipe(frames, recipe, "cam")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    contract = manifest["data"]["contract"]
    assert (
        contract["size"] == [32, 32]
        and contract["channels"] == 3
        and contract["classes"] == [str(d) for d in range(10)]
    )
    assert manifest["data"]["counts"] == {"test": 40, "val": 40, "calibration": 20, "train": 100}
    ds = load_dataset(
        DataConfig(
            source="imagefolder",
            path=str(frames / "frames"),
            size=(32, 32),
            channels=3,
            test=0.2,
            val=0.2,
            calibration=0.1,
        )
    )
    assert np.bincount(ds.labels[ds.splits["test"]]).tolist() == [4] * 10  # stratified
    assert ds.fingerprint() == manifest["data"]["sha256"]
    assert json.loads((run_dir / "train" / "teacher" / "model.json").read_text())["contract"] == contract
    assert s["export"]["metrics"]["teacher_pruned"]["params"] < s["export"]["metrics"]["teacher"]["params"]
    int8 = run_dir / "quantize" / "teacher_pruned.int8.onnx"
    for model in (
        run_dir / "export" / "teacher.onnx",
        int8,
    ):  # the contract rides in the metadata, through quantization
        meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        assert json.loads(meta[CONTRACT_KEY]) == contract
    # the device decodes the folder by the model's own contract: the same inputs the pipeline made
    out = frames / "pred.csv"
    proc = edgepipe(
        "bench",
        int8,
        "--images",
        frames / "frames",
        "--predictions",
        out,
        "--iters",
        "5",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
        "--json",
        frames / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((frames / "r.json").read_text())
    x, y = ds.contract.normalize(ds.images), ds.labels
    sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    expected = float((sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1) == y).mean())
    assert r["accuracy_samples"] == 200 and r["accuracy"] == pytest.approx(expected)
    rows = out.read_text().splitlines()
    assert rows[0] == "input,class,score,label" and len(rows) == 201 and rows[1].startswith("0/0000.png,")


def test_a_model_of_another_input_is_refused_before_any_stage(frames):
    for model, message in [
        (
            "{conv: [8]}",
            "stages[0].train.model: the model takes inputs of shape [1, 28, 28] (channels, height, "
            "width), the data gives [3, 32, 32]",
        ),
        (
            '{python: "nets:build", kwargs: {channels: 1}}',
            "stages[0].train.model: python: build: the model cannot take the data's inputs of shape [3, 32, 32]",
        ),
    ]:
        (frames / "m.yaml").write_text(f"name: m\ndata: {DATA}\nstages:\n  - train: {{model: {model}, epochs: 1}}\n")
        assert message in one_line_error(edgepipe("run", frames / "m.yaml", "--runs-dir", frames / "mruns"))
        assert not (frames / "mruns").exists()
    (frames / "m.yaml").write_text(
        f"name: m\ndata: {DATA}\nstages:\n  - distill: {{teacher: {{python: 'nets:build'}}, "
        "student: {python: 'nets:build'}, epochs: 1, baseline: null}\n"
    )
    assert "stages[0].distill.teacher: a teacher given as a source needs its trained weights" in one_line_error(
        edgepipe("run", frames / "m.yaml", "--runs-dir", frames / "mruns")
    )
    (frames / "m.yaml").write_text(
        f"name: m\ndata: {DATA}\nstages:\n  - train: {{model: {{in_channels: 3, input_size: 32, "
        "conv: [8], num_classes: 5}, epochs: 1}\n"
    )
    assert "train: family convnet has num_classes: 5, the data has 10 classes; set num_classes: 10" in one_line_error(
        edgepipe("run", frames / "m.yaml", "--runs-dir", frames / "mruns")
    )


def test_npz_pixels_calibration_folders_and_bad_images(frames, tmp_path):
    contract = Contract(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    files = sorted((frames / "frames").rglob("*.png"))
    pixels = np.stack([load_image(f, contract) for f in files])  # N×H×W×C uint8
    labels = np.array([int(f.parent.name) for f in files])
    np.savez(tmp_path / "px.npz", x=pixels.transpose(0, 3, 1, 2), y=labels)  # written NCHW
    base = {
        "source": "npz",
        "path": str(tmp_path / "px.npz"),
        "size": (32, 32),
        "channels": 3,
        "mean": (0.5,) * 3,
        "std": (0.25,) * 3,
        "test": 0.2,
        "val": 0.2,
        "calibration": 0.1,
    }
    with pytest.raises(EdgepipeError, match="state how x is laid out with data.layout"):
        load_dataset(DataConfig(**base))
    ds = load_dataset(DataConfig(**base, layout="nchw"))
    assert ds.input_shape == (3, 32, 32) and np.array_equal(ds.images, pixels)
    x, _ = ds.split("test")
    assert np.allclose(x, (pixels[ds.splits["test"]].transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.25, atol=1e-6)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3, 32, 40), np.uint8), y=np.zeros(4, int))
    with pytest.raises(EdgepipeError, match=r"images are \[32, 40, 3\].*say \[32, 32, 3\]"):
        load_dataset(DataConfig(**{**base, "path": str(tmp_path / "wrong.npz")}, layout="nchw"))
    # calibration given as a folder of unlabeled images replaces the calibration split
    calib = tmp_path / "calib"
    calib.mkdir()
    for f in files[:7]:
        (calib / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    with_calib = load_dataset(DataConfig(**{**base, "calibration": str(calib)}, layout="nchw"))
    cx, cy = with_calib.split("calibration")
    assert cx.shape == (7, 3, 32, 32) and cy is None and with_calib.counts()["calibration"] == 7
    assert with_calib.fingerprint() != ds.fingerprint()
    (calib / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EdgepipeError, match="broken.png: not a readable image"):
        load_dataset(DataConfig(**{**base, "calibration": str(calib)}, layout="nchw"))
    with pytest.raises(EdgepipeError, match="not found"):
        parse_recipe(
            {
                "name": "x",
                "data": {"source": "imagefolder", "path": "nowhere", "size": [32, 32]},
                "stages": [{"train": {}}],
            },
            tmp_path,
        )


def test_quantize_and_runner_commands_take_image_folders(frames, tmp_path):
    recipe = (
        f"name: q\ndata: {DATA}\nstages:\n  - train: {{model: {{python: 'nets:build'}}, epochs: 1, augment_shift: 0}}\n"
        "  - export: {models: [teacher], parity_samples: 8}\n"
    )
    _, run_dir, _ = run_recipe(frames, recipe, "q")
    fp32 = run_dir / "export" / "teacher.onnx"
    assert "calibration data needed for a model taking x ?x3x32x32" in one_line_error(
        edgepipe("quantize", fp32, "-o", tmp_path / "a.onnx")
    )
    assert not (tmp_path / "a.onnx").exists()
    proc = edgepipe("quantize", fp32, "--calibration", frames / "frames", "--samples", "50", "-o", tmp_path / "b.onnx")
    assert proc.returncode == 0 and (tmp_path / "b.onnx").is_file(), proc.stderr
    # a model without a contract cannot decode images: one line, and the .npz route still works
    import onnx

    bare = onnx.load(str(fp32))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    line = one_line_error(
        edgepipe("bench", tmp_path / "bare.onnx", "--images", frames / "frames", "--energy-seconds", "0")
    )
    assert "carries no input contract" in line


def test_augmentation_is_seeded_and_does_what_it_says():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    a = augment_images(x, np.random.default_rng(1), None, True)
    flipped = [np.array_equal(a[i], x[i, :, :, ::-1]) for i in range(6)]
    kept = [np.array_equal(a[i], x[i]) for i in range(6)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    b1, b2 = (augment_images(x, np.random.default_rng(2), (0.5, 0.8), False) for _ in range(2))
    assert b1.shape == x.shape and np.array_equal(b1, b2) and not np.array_equal(b1, x)
    s = shift_augment(np.full((6, 3, 16, 16), 5.0, np.float32), np.random.default_rng(3), 3, fill=[-1.0, -2.0, -3.0])
    for c, fill in enumerate([-1.0, -2.0, -3.0]):  # pixels shifted in from outside carry their channel's fill
        assert set(np.unique(s[:, c]).tolist()) == {fill, 5.0}


def test_a_saved_graph_gets_its_contract_at_export_and_runs_on_images(frames, tmp_path, monkeypatch):
    import importlib

    import paddle
    from paddle.static import InputSpec

    monkeypatch.syspath_prepend(str(frames))
    net = importlib.import_module("nets").build()
    net.eval()
    paddle.jit.save(net, str(tmp_path / "saved" / "model"), input_spec=[InputSpec([None, 3, 32, 32], "float32", "x")])
    proc = edgepipe(
        "export", tmp_path / "saved", "--classes", frames / "frames", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"
    )
    assert proc.returncode == 0 and "input contract: 3×32×32, mean [0.5, 0.5, 0.5]" in proc.stderr, proc.stderr
    fp32 = tmp_path / "saved" / "model.onnx"
    meta = json.loads(
        ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
        .get_modelmeta()
        .custom_metadata_map[CONTRACT_KEY]
    )
    assert meta["classes"] == [str(d) for d in range(10)] and meta["std"] == [0.25] * 3 and meta["size"] == [32, 32]
    assert edgepipe("quantize", fp32, "--calibration", frames / "frames", "--samples", "40").returncode == 0
    proc = edgepipe(
        "bench",
        tmp_path / "saved" / "model.int8.onnx",
        "--images",
        frames / "frames",
        "--iters",
        "5",
        "--min-seconds",
        "0",
        "--energy-seconds",
        "0",
    )
    assert proc.returncode == 0 and "on 200 labelled inputs" in proc.stdout, proc.stderr


def test_frames_source_is_made_once_as_an_image_folder_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "cache"))
    from edgepipe.pipeline.core.dataspec import Frames

    cfg = DataConfig(
        source="frames", size=(24, 24), frames=Frames(per_class=8, seed=3), test=0.25, val=0.25, calibration=0.125
    )
    ds = load_dataset(cfg)
    folder = tmp_path / "cache" / "frames" / "24-8-3"
    pngs = sorted(folder.rglob("*.png"))
    assert len(pngs) == 80 and sorted({p.parent.name for p in pngs}) == [str(d) for d in range(10)]
    assert ds.input_shape == (3, 24, 24) and ds.counts() == {"test": 20, "val": 20, "calibration": 10, "train": 30}
    assert "stand-in for a camera's classes" in ds.source
    first = pngs[0].stat().st_mtime_ns
    again = load_dataset(cfg)  # the folder is reused, not made again, and reads back identically
    assert pngs[0].stat().st_mtime_ns == first and again.fingerprint() == ds.fingerprint()
    with pytest.raises(EdgepipeError, match="frames are square RGB images"):
        parse_recipe({"name": "f", "data": {"source": "frames", "size": [24, 32]}, "stages": [{"train": {}}]})


def test_folder_quirks_mixed_pixel_types_and_small_shares(frames, tmp_path):
    import shutil

    root = tmp_path / "imgs"
    shutil.copytree(frames / "frames", root)
    shutil.copytree(root / "3", root / ".ipynb_checkpoints")  # a tool's folder is not a class
    shutil.copytree(root / "4", root / "__MACOSX")
    cfg = dict(source="imagefolder", path=str(root), size=(32, 32), channels=3)
    assert load_dataset(DataConfig(**cfg)).contract.classes == tuple(str(d) for d in range(10))
    (root / "stray.png").write_bytes((root / "3" / "0000.png").read_bytes())
    with pytest.raises(EdgepipeError, match="1 image.s. lie beside the class folders"):
        load_dataset(DataConfig(**cfg))
    # a share never rounds a split away: 10 images, val 0.01 -> 1
    tiny = tmp_path / "tiny"
    for d in range(2):
        (tiny / str(d)).mkdir(parents=True)
        for f in sorted((frames / "frames" / str(d)).glob("*.png"))[:5]:
            shutil.copy(f, tiny / str(d) / f.name)
    counts = load_dataset(
        DataConfig(source="imagefolder", path=str(tiny), size=(32, 32), val=0.01, test=0.2, calibration=0.01)
    ).counts()
    assert counts == {"test": 2, "val": 1, "calibration": 1, "train": 6}
    # test pixels as floats in [0, 1] beside uint8 training pixels: both on one scale
    contract = Contract(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    px = np.stack([load_image(f, contract) for f in sorted((frames / "frames").rglob("*.png"))])
    y = np.repeat(np.arange(10), 20)
    np.savez(tmp_path / "train.npz", x=px, y=y)
    np.savez(tmp_path / "test.npz", x=px[:20].astype(np.float32) / 255.0, y=y[:20])
    ds = load_dataset(
        DataConfig(
            source="npz",
            path=str(tmp_path / "train.npz"),
            test=str(tmp_path / "test.npz"),
            layout="nhwc",
            size=(32, 32),
            channels=3,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )
    )
    x_test, _ = ds.split("test")
    x_same, _ = ds.split("train")
    assert np.allclose(x_test, contract.normalize(px[:20]), atol=1e-5)  # the float copy reads as the uint8 one
    assert np.abs(x_same).max() < 3  # no 0..255 values slipped through as "already in [0, 1]"


def test_mnist_with_a_calibration_folder(tmp_path):
    from PIL import Image

    from edgepipe.pipeline.data.mnist import load_bundled

    images, _ = load_bundled()
    (tmp_path / "calib").mkdir()
    for i in range(12):
        Image.fromarray(images[i]).save(tmp_path / "calib" / f"{i:02d}.png")
    ds = load_dataset(DataConfig(calibration=str(tmp_path / "calib")))
    x, y = ds.split("calibration")
    assert x.shape == (12, 1, 28, 28) and y is None and ds.counts()["calibration"] == 12
    assert np.allclose(x, ds.contract.normalize(images[:12]))  # decoded exactly as the bundled digits are


def test_decoded_images_are_kept_and_a_changed_image_is_decoded_again(tmp_path, monkeypatch, capfd):
    """An image folder is decoded once into $EDGEPIPE_CACHE/decoded and read back (the same pixels); an image
    whose bytes change gets a new entry."""
    from PIL import Image

    from edgepipe.pipeline.data.images import decoded_images

    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    files = []
    for k in range(3):
        f = tmp_path / "imgs" / "a" / f"{k}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(f)
        files.append(f)
    contract = Contract(size=(16, 16), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, resize=16, classes=("a",))
    first = decoded_images(files, contract)
    assert "decoding 3 images" in capfd.readouterr().err
    again = decoded_images(files, contract)
    assert "read decoded from" in capfd.readouterr().err and np.array_equal(first, again)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 1
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(files[1])
    changed = decoded_images(files, contract)
    assert "decoding 3 images" in capfd.readouterr().err and not np.array_equal(first[1], changed[1])
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 2
