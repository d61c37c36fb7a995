"""Upstream detections → SAM 2 prompts, plus where each prompt came from.

Bad boxes never reach the model: non-finite, zero-area and fully-outside boxes are
skipped with a logged warning; boxes partly outside the image are clipped to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import supervision as sv

from sam_block.runtime.prompt_batch import NOT_A_POINT_LABEL, PromptBatch

logger = logging.getLogger(__name__)

DEFAULT_CLASS_ID = 0
DEFAULT_CLASS_NAME = "foreground"
CLASS_NAME_KEY = "class_name"
DETECTION_ID_KEY = "detection_id"
KEYPOINTS_XY_KEY = "keypoints_xy"
KEYPOINTS_CONFIDENCE_KEY = "keypoints_confidence"


@dataclass
class Provenance:
    """Where each prompt came from; row ``i`` describes prompt ``i``.

    Attributes:
        source_index: index of the prompt's detection in the upstream ``sv.Detections``.
        class_id: class id carried onto the mask.
        class_name: class name carried onto the mask.
        parent_id: upstream ``detection_id`` (``None`` where the prompt had none).
    """

    source_index: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray
    parent_id: np.ndarray

    def __len__(self) -> int:
        return len(self.source_index)


def _column(detections: sv.Detections, key: str) -> Optional[np.ndarray]:
    value = detections.data.get(key) if detections.data else None
    if value is None or len(value) != len(detections):
        return None
    return np.asarray(value)


def sanitize_boxes(xyxy: np.ndarray, image_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image and find the usable ones.

    Returns the clipped ``(N, 4)`` float32 boxes and a boolean ``(N,)`` keep mask.
    Reversed corners are put in order; non-finite, zero-area and fully-outside
    boxes are marked unusable with a logged warning.

    Example:
        >>> boxes, keep = sanitize_boxes(np.array([[-5, 2, 8, 9], [0, 0, 0, 5]]), (10, 10))
        >>> boxes[0].tolist(), keep.tolist()
        ([0.0, 2.0, 8.0, 9.0], [True, False])
    """
    height, width = image_size
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    keep = np.isfinite(boxes).all(axis=1)
    for index in np.flatnonzero(~keep):
        logger.warning("Skipping box %d %s: it has NaN or infinite coordinates.", index, boxes[index].tolist())
    safe = np.where(keep[:, None], boxes, 0.0)
    ordered = np.concatenate([np.minimum(safe[:, :2], safe[:, 2:]), np.maximum(safe[:, :2], safe[:, 2:])], axis=1)
    with np.errstate(over="ignore"):  # |x| > 3.4e38 becomes ±inf, then clipped to the image
        ordered = ordered.astype(np.float32).astype(np.float64)  # judge boxes as the model will see them
    for index in np.flatnonzero(keep & (safe[:, :2] > safe[:, 2:]).any(axis=1)):
        logger.warning(
            "Box %d %s has reversed corners; using %s.", index, boxes[index].tolist(), ordered[index].tolist()
        )
    zero_area = keep & ((ordered[:, 2] <= ordered[:, 0]) | (ordered[:, 3] <= ordered[:, 1]))
    for index in np.flatnonzero(zero_area):
        logger.warning("Skipping box %d %s: it has zero area.", index, boxes[index].tolist())
    keep &= ~zero_area
    clipped = np.clip(ordered, 0.0, [width, height, width, height])
    outside = keep & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    for index in np.flatnonzero(outside):
        logger.warning(
            "Skipping box %d %s: it lies fully outside the %dx%d image.", index, boxes[index].tolist(), width, height
        )
    keep &= ~outside
    return clipped.astype(np.float32), keep


def detections_to_prompts(
    detections: sv.Detections,
    image_size: Tuple[int, int],
    keypoint_confidence: float = 0.5,
    use_mask_prompts: bool = False,
) -> Tuple[PromptBatch, Provenance]:
    """One prompt per usable detection, with the class and id it carries.

    Every prompt has the detection's box. Keypoint detections add their visible
    keypoints (confidence ≥ `keypoint_confidence`, inside the image) as positive
    points; rows with fewer points are padded with SAM's not-a-point label. With
    `use_mask_prompts`, an upstream mask of the image's size is passed as SAM's
    mask prompt so SAM refines it. Missing ``class_id`` becomes 0 and missing
    ``class_name`` ``"foreground"``.
    """
    boxes, keep = sanitize_boxes(detections.xyxy, image_size)
    count = len(detections)
    class_id = detections.class_id if detections.class_id is not None else np.full(count, DEFAULT_CLASS_ID)
    class_name = _column(detections, CLASS_NAME_KEY)
    if class_name is None:
        class_name = np.full(count, DEFAULT_CLASS_NAME, dtype=object)
    parent_id = _column(detections, DETECTION_ID_KEY)
    if parent_id is None:
        parent_id = np.full(count, None, dtype=object)
    index = np.flatnonzero(keep)
    provenance = Provenance(
        source_index=index,
        class_id=np.asarray(class_id)[index].astype(int),
        class_name=np.asarray([str(name) for name in np.asarray(class_name)[index]], dtype=object),
        parent_id=np.asarray(parent_id, dtype=object)[index],
    )
    prompts = PromptBatch(boxes=boxes[index])
    points = keypoint_prompts(detections, index, image_size, keypoint_confidence)
    if points is not None:
        prompts.point_coords, prompts.point_labels = points
    if use_mask_prompts and detections.mask is not None and len(index):
        prompts.mask_inputs, prompts.mask_valid = mask_prompts(detections, index, image_size)
    return prompts, provenance


def keypoint_prompts(
    detections: sv.Detections, index: np.ndarray, image_size: Tuple[int, int], min_confidence: float
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Visible keypoints of the detections at `index` as padded ``(N, P, 2)`` points and ``(N, P)`` labels.

    ``None`` when the detections carry no keypoints. Rows without visible keypoints are
    all padding (the prompt is then the box alone).
    """
    xy_column = _column(detections, KEYPOINTS_XY_KEY)
    if xy_column is None or not len(index):
        return None
    confidence_column = _column(detections, KEYPOINTS_CONFIDENCE_KEY)
    height, width = image_size
    visible: List[np.ndarray] = []
    for row in index:
        xy = np.asarray(xy_column[row], dtype=np.float64).reshape(-1, 2)
        if confidence_column is not None:
            confidence = np.asarray(confidence_column[row], dtype=np.float64).reshape(-1)
            if len(confidence) != len(xy):
                logger.warning(
                    "Detection %d has %d keypoints but %d confidences; ignoring its keypoints.",
                    row,
                    len(xy),
                    len(confidence),
                )
                visible.append(np.zeros((0, 2)))
                continue
            xy = xy[confidence >= min_confidence]
        inside = (
            np.isfinite(xy).all(axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        )
        visible.append(xy[inside])
    most = max(len(v) for v in visible)
    if most == 0:
        return None
    coords = np.zeros((len(index), most, 2), dtype=np.float32)
    labels = np.full((len(index), most), NOT_A_POINT_LABEL, dtype=np.int32)
    for row, xy in enumerate(visible):
        coords[row, : len(xy)] = xy
        labels[row, : len(xy)] = 1
    return coords, labels


def mask_prompts(
    detections: sv.Detections, index: np.ndarray, image_size: Tuple[int, int]
) -> Tuple[np.ndarray, np.ndarray]:
    """Upstream masks of the detections at `index` (``(N, H, W)`` bool) and which rows are usable."""
    height, width = image_size
    masks = np.zeros((len(index), height, width), dtype=bool)
    valid = np.zeros(len(index), dtype=bool)
    for row, source in enumerate(index):
        mask = np.asarray(detections.mask[source])
        if mask.shape != (height, width):
            logger.warning(
                "Ignoring the mask of detection %d: its shape %s is not the image's (%d, %d); using its box alone.",
                source,
                mask.shape,
                height,
                width,
            )
            continue
        masks[row] = mask.astype(bool)
        valid[row] = masks[row].any()
    return masks, valid
