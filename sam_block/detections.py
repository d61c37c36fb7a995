"""Masks + scores + provenance → ``sv.Detections``, the currency between workflow steps."""

from __future__ import annotations

import os
import uuid
from typing import Dict, Optional, Sequence, Union

import numpy as np
import supervision as sv
from supervision.detection.compact_mask import CompactMask

from sam_block.rle import DEFAULT_OUTPUT_FORMAT, apply_output_format
from sam_block.runtime.masks import CroppedMasks

COMPACT_MASKS_ENV = "SAM_BLOCK_COMPACT_MASKS"
# `auto` keeps dense masks (what every block expects) until they would take more than
# this many bytes, then switches to CompactMask (see benchmarks/RESULTS.md).
AUTO_COMPACT_BYTES = 256 << 20


def use_compact_masks(count: int, image_size, setting: Optional[str] = None) -> bool:
    """Whether `count` masks of `image_size` are returned as ``CompactMask``.

    ``SAM_BLOCK_COMPACT_MASKS``: ``1`` always, ``0`` never, ``auto`` (default) when
    dense masks would exceed 256 MiB.

    Example:
        >>> use_compact_masks(300, (2160, 3840), "auto"), use_compact_masks(10, (1080, 1920), "auto")
        (True, False)
    """
    value = (setting if setting is not None else os.environ.get(COMPACT_MASKS_ENV, "auto")).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    if value != "auto":
        raise ValueError(f"{COMPACT_MASKS_ENV}={value!r}: use 1, 0 or auto.")
    return count * int(image_size[0]) * int(image_size[1]) > AUTO_COMPACT_BYTES


def to_supervision_masks(masks: CroppedMasks, compact: bool) -> Union[np.ndarray, CompactMask]:
    """Dense ``(N, H, W)`` bool, or a ``CompactMask`` built from the crops without a dense copy."""
    if not compact:
        return masks.to_dense()
    if len(masks) == 0:
        return CompactMask.from_dense(np.zeros((0, *masks.image_size), dtype=bool), np.zeros((0, 4)), masks.image_size)
    parts = []
    for index, (x1, y1, _, _) in enumerate(masks.boxes):
        crop = masks.crop(index)
        h, w = crop.shape
        local = CompactMask.from_dense(crop[None], np.array([[0, 0, w - 1, h - 1]]), (h, w))
        parts.append(local.with_offset(int(x1), int(y1), masks.image_size))
    return CompactMask.merge(parts)


def masks_to_detections(
    masks: CroppedMasks,
    scores: np.ndarray,
    class_id: np.ndarray,
    class_name: Sequence[str],
    parent_id: Sequence[str],
    threshold: float = 0.0,
    stability_score: Optional[np.ndarray] = None,
    compact: Optional[bool] = None,
    tracker_id: Optional[np.ndarray] = None,
    extra_data: Optional[Dict[str, np.ndarray]] = None,
    output_format: str = DEFAULT_OUTPUT_FORMAT,
) -> sv.Detections:
    """Build detections from one mask per prompt.

    A mask is dropped when its score is below `threshold` or when it is empty.
    ``xyxy`` is the tight box of each mask, ``confidence`` its score; ``class_id``,
    ``data["class_name"]`` and ``data["parent_id"]`` are copied from the prompt, and
    every detection gets a new unique ``data["detection_id"]``; `stability_score`, when
    given, lands in ``data["stability_score"]``; `tracker_id` and the per-row columns of
    `extra_data` are kept for the same rows. `compact` (default: the
    ``SAM_BLOCK_COMPACT_MASKS`` policy) returns ``mask`` as supervision's ``CompactMask``.
    `output_format` ``"rle"`` adds each mask's exact COCO RLE as ``data["rle_mask"]``
    (built from the crops; ``mask`` stays), ``"polygons"`` adds nothing.

    Example:
        >>> crop = np.ones((2, 2), bool)
        >>> masks = CroppedMasks((4, 5), np.array([[2, 1, 3, 2]]), [crop])
        >>> masks_to_detections(masks, np.array([0.9]), np.array([3]), ["cat"], ["p1"]).xyxy.tolist()
        [[2.0, 1.0, 3.0, 2.0]]
    """
    scores = np.asarray(scores, dtype=np.float32)
    keep = (scores >= threshold) & (masks.areas > 0) if len(masks) else np.zeros(0, dtype=bool)
    if stability_score is None:
        stability_score = np.zeros(len(keep), dtype=np.float32)
    masks = masks.select(keep)
    count = len(masks)
    if compact is None:
        compact = use_compact_masks(count, masks.image_size)
    data = {key: np.asarray(value)[keep] for key, value in (extra_data or {}).items()}
    detections = sv.Detections(
        xyxy=masks.boxes.astype(np.float32).reshape(-1, 4),
        mask=to_supervision_masks(masks, compact),
        confidence=scores[keep],
        class_id=np.asarray(class_id, dtype=int)[keep],
        data={
            "class_name": np.asarray(class_name, dtype=str)[keep] if count else np.zeros(0, dtype=str),
            "detection_id": np.array([str(uuid.uuid4()) for _ in range(count)], dtype=str)
            if count
            else np.zeros(0, dtype=str),
            "parent_id": np.asarray(parent_id, dtype=object)[keep].astype(str) if count else np.zeros(0, dtype=str),
            "stability_score": np.asarray(stability_score, dtype=np.float32)[keep],
            **data,
        },
        tracker_id=None if tracker_id is None else np.asarray(tracker_id, dtype=int)[keep],
    )
    return apply_output_format(detections, output_format, masks)
