"""Masks + scores + provenance → ``sv.Detections``, the currency between workflow steps."""

from __future__ import annotations

import uuid
from typing import Optional, Sequence

import numpy as np
import supervision as sv


def masks_to_detections(
    masks: np.ndarray,
    scores: np.ndarray,
    class_id: np.ndarray,
    class_name: Sequence[str],
    parent_id: Sequence[str],
    threshold: float = 0.0,
    stability_score: Optional[np.ndarray] = None,
) -> sv.Detections:
    """Build detections from one mask per prompt.

    A mask is dropped when its score is below `threshold` or when it is empty.
    ``xyxy`` is the tight box of each mask, ``confidence`` its score; ``class_id``,
    ``data["class_name"]`` and ``data["parent_id"]`` are copied from the prompt, and
    every detection gets a new unique ``data["detection_id"]``; `stability_score`, when
    given, lands in ``data["stability_score"]``.

    Example:
        >>> masks = np.zeros((1, 4, 5), bool); masks[0, 1:3, 2:4] = True
        >>> masks_to_detections(masks, np.array([0.9]), np.array([3]), ["cat"], ["p1"]).xyxy.tolist()
        [[2.0, 1.0, 3.0, 2.0]]
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    keep = (scores >= threshold) & masks.any(axis=(1, 2))
    masks = masks[keep]
    count = len(masks)
    if stability_score is None:
        stability_score = np.zeros(len(keep), dtype=np.float32)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32) if count else np.zeros((0, 4), dtype=np.float32),
        mask=masks,
        confidence=scores[keep],
        class_id=np.asarray(class_id, dtype=int)[keep],
        data={
            "class_name": np.asarray(class_name, dtype=str)[keep] if count else np.zeros(0, dtype=str),
            "detection_id": np.array([str(uuid.uuid4()) for _ in range(count)], dtype=str)
            if count
            else np.zeros(0, dtype=str),
            "parent_id": np.asarray(parent_id, dtype=object)[keep].astype(str) if count else np.zeros(0, dtype=str),
            "stability_score": np.asarray(stability_score, dtype=np.float32)[keep],
        },
    )
