"""Feeds: samples of any signature grouped by shape, and a subset taken across every group."""

import numpy as np

from edgepipe.runtime.inputs import feeds as fd


def sized(h, w, n, start):
    return {"x": np.stack([np.full((1, h, w), start + i, np.float32) for i in range(n)])}


def test_regroup_keeps_the_samples_and_their_order_within_a_shape():
    feeds = [sized(8, 8, 3, 0), sized(8, 16, 2, 10), sized(8, 8, 2, 3)]
    out = fd.regroup(feeds, 4)
    assert [f["x"].shape[0] for f in out] == [4, 1, 2] and fd.count(out) == 7
    firsts = [f["x"][:, 0, 0, 0].tolist() for f in out]
    assert firsts == [[0, 1, 2, 3], [4], [10, 11]]


def test_spread_takes_samples_from_every_size_not_only_the_first_group():
    feeds = fd.regroup([sized(8, 8, 6, 0), sized(8, 16, 6, 10)], 6)
    assert {f["x"].shape[-1] for f in fd.first(feeds, 4)} == {8}  # the first 4: one size only
    picked = fd.spread(feeds, 4)
    assert fd.count(picked) == 4 and {f["x"].shape[-1] for f in picked} == {8, 16}
    assert fd.spread(feeds, 50) is feeds  # fewer than asked: all of them
