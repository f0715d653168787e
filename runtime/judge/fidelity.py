"""How closely a compressed or quantized model's outputs follow its float model's on the same
inputs — judged without labels, so it holds for any model, classifier or not: top-1 agreement,
cosine similarity and SQNR (signal-to-quantization-noise ratio, dB)."""

from __future__ import annotations

import numpy as np


def channel_sums(ref: np.ndarray, test: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(signal power, error power), per channel (axis 1) or over the whole tensor. Squares are taken in
    the tensors' own float type and summed in float64 (no float64 copies of large activations)."""
    if ref.dtype.kind != "f" or ref.dtype.itemsize < 4:
        ref, test = ref.astype(np.float32), test.astype(np.float32)
    diff = np.subtract(ref, test, dtype=ref.dtype)
    if per_channel and ref.ndim >= 2:
        axes = tuple(i for i in range(ref.ndim) if i != 1)
        return np.square(ref).sum(axis=axes, dtype=np.float64), np.square(diff).sum(axis=axes, dtype=np.float64)
    return np.array([np.square(ref).sum(dtype=np.float64)]), np.array([np.square(diff).sum(dtype=np.float64)])


def sqnr_from_sums(sig: np.ndarray, err: np.ndarray) -> float:
    keep = sig > 0
    if not keep.any():
        return 100.0
    with np.errstate(divide="ignore"):
        db = np.minimum(10 * np.log10(sig[keep] / np.maximum(err[keep], 1e-30)), 100.0)
    return float(db.mean())


def sqnr_db(ref: np.ndarray, test: np.ndarray, per_channel: bool = True) -> float:
    """Signal-to-quantization-noise ratio in dB; per channel (axis 1) then averaged, capped at 100."""
    return sqnr_from_sums(*channel_sums(ref, test, per_channel))


def fidelity(reference: np.ndarray, outputs: np.ndarray) -> dict:
    """top1_agreement (the argmax over axis 1, per sample and position; None for a single output
    channel), mean per-sample cosine similarity, and SQNR in dB of `outputs` against `reference`."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"outputs of shape {list(outputs.shape)} against a reference of shape {list(reference.shape)}")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(
        norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), (np.abs(ref - out).sum(axis=1) == 0) * 1.0
    )
    classifier = reference.ndim >= 2 and reference.shape[1] > 1
    return {
        "top1_agreement": float((reference.argmax(1) == outputs.argmax(1)).mean()) if classifier else None,
        "cosine": float(cos.mean()),
        "sqnr_db": sqnr_db(reference, outputs, per_channel=False),
        "samples": int(len(ref)),
    }
