"""The numpy arithmetic of low-rank factorisation (compress/lowrank.py builds the layers): truncated
SVD of a Linear weight, Tucker-2 by HOSVD on a conv's output and input channel modes, spatial SVD
of a conv's kernel reshaped to [I·kh, O·kw], and ranks from the share of squared singular values.
SVDs in float64; the factors come back as float32."""

from __future__ import annotations

import numpy as np


def rank_by_energy(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(s.astype(np.float64) ** 2)
    return int(np.searchsorted(e / e[-1], energy - 1e-12) + 1)


def energy_kept(s: np.ndarray, r: int) -> float:
    e = s.astype(np.float64) ** 2
    return float(e[:r].sum() / e.sum()) if e.sum() > 0 else 1.0


def svd(m: np.ndarray):
    u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
    return u, s, vt


def spatial_matrix(w: np.ndarray) -> np.ndarray:
    o, i, kh, kw = w.shape
    return w.transpose(1, 2, 0, 3).reshape(i * kh, o * kw)  # rows (i, y), columns (o, x)


def mode_svds(w: np.ndarray):
    o, i = w.shape[:2]
    u_o, s_o, _ = svd(w.reshape(o, -1))
    u_i, s_i, _ = svd(w.transpose(1, 0, 2, 3).reshape(i, -1))
    return (u_o, s_o), (u_i, s_i)


def factor_linear(w: np.ndarray, r: int):
    """W [in, out] -> (A [in, r], B [r, out]) with A·B the best rank-r approximation."""
    u, s, vt = svd(w)
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32)


def factor_tucker2(w: np.ndarray, ro: int, ri: int):
    """W [O, I, kh, kw] -> (first [R_in, I, 1, 1], core [R_out, R_in, kh, kw], last [O, R_out, 1, 1])."""
    (u_o, _), (u_i, _) = mode_svds(w)
    u_o, u_i = u_o[:, :ro], u_i[:, :ri]
    core = np.einsum(
        "oikl,or,is->rskl", w.astype(np.float64), u_o, u_i, optimize=True
    )  # two GEMMs, not one O·I·R·R loop
    return (
        u_i.T[:, :, None, None].astype(np.float32),
        core.astype(np.float32),
        u_o[:, :, None, None].astype(np.float32),
    )


def factor_spatial(w: np.ndarray, r: int):
    """W [O, I, kh, kw] -> (vertical [R, I, kh, 1], horizontal [O, R, 1, kw])."""
    o, i, kh, kw = w.shape
    u, s, vt = svd(spatial_matrix(w))
    root = np.sqrt(s[:r])
    v = (u[:, :r] * root).T.reshape(r, i, kh, 1)
    h = (root[:, None] * vt[:r]).reshape(r, o, kw).transpose(1, 0, 2)[:, :, None, :]
    return v.astype(np.float32), h.astype(np.float32)
