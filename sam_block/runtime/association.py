"""Detections ↔ live tracks, one-to-one, by overlap."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` ``(N, 4)`` with every box of `b` ``(M, 4)`` (``x1, y1, x2, y2``).

    Example:
        >>> box_iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10]])).round(3).tolist()
        [[1.0, 0.333]]
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(similarity: np.ndarray, min_similarity: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """One-to-one assignment maximising total similarity (Hungarian), pairs below the cut dropped.

    Args:
        similarity: ``(detections, tracks)`` overlaps in ``[0, 1]``.
        min_similarity: a pair needs at least this overlap.

    Returns:
        ``(pairs, unmatched_detections, unmatched_tracks)``; pairs are ``(detection, track)``.

    Example:
        >>> match(np.array([[0.9, 0.8], [0.85, 0.1]]), 0.3)
        ([(0, 1), (1, 0)], [], [])
    """
    from scipy.optimize import linear_sum_assignment

    similarity = np.asarray(similarity, dtype=np.float64)
    n_det, n_trk = similarity.shape
    if n_det == 0 or n_trk == 0:
        return [], list(range(n_det)), list(range(n_trk))
    rows, cols = linear_sum_assignment(-similarity)
    pairs = sorted((int(r), int(c)) for r, c in zip(rows, cols) if similarity[r, c] >= min_similarity)
    matched_det = {r for r, _ in pairs}
    matched_trk = {c for _, c in pairs}
    return (
        pairs,
        [d for d in range(n_det) if d not in matched_det],
        [t for t in range(n_trk) if t not in matched_trk],
    )
