"""Cycle-consistency (Aytar et al. 2018, section 4): how well an embedding aligns two videos one-to-one.

For sequences V, W of embeddings, ``v_i`` is **2-cycle consistent** when its nearest neighbour ``w_j`` in W
(Euclidean distance) has ``v_k`` as nearest neighbour in V with ``|i - k| <= tolerance`` (tolerance 1 as in the
paper). **3-cycle**: ``v_i`` must come back (within the tolerance) along both V -> W -> U -> V and
V -> U -> W -> V. The score is the percentage of V that is consistent.

Ties (the paper does not say): identical embeddings, such as a still scene or frames a lower frame rate repeats,
are equally near. ``ties="first"`` (default, the tables in ``benchmarks/RESULTS.md``) takes the first index as the
nearest neighbour, as numpy's argmin does, so in a run of identical frames of V only the first two can come back
within the tolerance. ``ties="any"`` counts ``v_i`` consistent when any of the tied nearest neighbours on the way
back to V is within the tolerance of ``i``.

Example:
    >>> import numpy as np
    >>> from dreamarcade.reward_models.cycle import cycle_consistency
    >>> v = np.random.default_rng(0).normal(size=(50, 8))
    >>> cycle_consistency(v, v)
    100.0
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest", "cycle_consistency", "three_cycle_consistency", "pixel_features"]


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index in ``b`` of the Euclidean nearest neighbour of every row of ``a`` (the first one on ties)."""
    return _distances(a, b).argmin(1)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b))."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # NaN distances still gave an argmin, and a score
        raise ValueError("the embeddings hold NaN or inf values: the embedding has diverged; retrain it")
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]


def _back_within(x: np.ndarray, v: np.ndarray, tolerance: int, ties: str) -> np.ndarray:
    """Whether row i of ``x`` (the end of a cycle that started at v_i) has its nearest neighbour in ``v`` within
    ``tolerance`` of i: the first one (``ties="first"``) or any of the tied ones (``"any"``)."""
    i = np.arange(len(v))
    if ties == "first":
        return np.abs(i - nearest(x, v)) <= tolerance
    d = _distances(x, v)
    tied = d == d.min(1, keepdims=True)
    return (tied & (np.abs(i[:, None] - i[None]) <= tolerance)).any(1)


def _check_ties(ties: str) -> None:
    if ties not in ("first", "any"):
        raise ValueError(f"ties must be 'first' or 'any', got {ties!r}")


def cycle_consistency(v: np.ndarray, w: np.ndarray, tolerance: int = 1, ties: str = "first") -> float:
    """Percentage of ``v`` that is 2-cycle consistent through ``w`` (``|i - k| <= tolerance``; ``ties``: see the
    module docstring)."""
    _check_ties(ties)
    v, w = np.asarray(v), np.asarray(w)  # lists too: w[j] below indexes with an array
    if len(v) == 0 or len(w) == 0:
        raise ValueError("cycle-consistency needs two non-empty sequences")
    return float(100.0 * np.mean(_back_within(w[nearest(v, w)], v, tolerance, ties)))


def three_cycle_consistency(
    v: np.ndarray, w: np.ndarray, u: np.ndarray, tolerance: int = 1, ties: str = "first"
) -> float:
    """Percentage of ``v`` consistent along both V -> W -> U -> V and V -> U -> W -> V (``ties``: see the module
    docstring)."""
    _check_ties(ties)
    v, w, u = np.asarray(v), np.asarray(w), np.asarray(u)
    if len(v) == 0 or len(w) == 0 or len(u) == 0:
        raise ValueError("3-cycle consistency needs three non-empty sequences")
    ok1 = _back_within(u[nearest(w[nearest(v, w)], u)], v, tolerance, ties)
    ok2 = _back_within(w[nearest(u[nearest(v, u)], w)], v, tolerance, ties)
    return float(100.0 * (ok1 & ok2).mean())


def pixel_features(frames: np.ndarray, size: int | None = None) -> np.ndarray:
    """The raw-pixel L2 baseline: frames (T, H, W, 3) flattened in [0, 1], optionally downsampled to ``size``.

    With ``size=None`` the features are exactly the pixels an embedding sees (the processed frames).
    """
    import cv2

    if size is None:
        return frames.reshape(len(frames), -1).astype(np.float32) / 255.0
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0 for f in frames])
