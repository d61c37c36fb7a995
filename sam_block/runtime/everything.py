"""Segment everything: prompt SAM 2 with a regular point grid, keep good distinct masks.

Same algorithm and parameters as Meta's ``SAM2AutomaticMaskGenerator`` (single crop),
reordered for speed and memory: proposals are filtered by predicted IoU *before*
any upsampling, only survivors are upsampled (a few at a time) to compute their
stability score and box, and each survivor is kept as a crop of its box until
non-maximum suppression has picked the final masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from torchvision.ops import batched_nms

from sam_block.runtime.predictor import STABILITY_OFFSET, ImageEmbedding, PromptBatch, Sam2Predictor, stability_score


@dataclass(frozen=True)
class EverythingParams:
    """Knobs of segment-everything (defaults are Meta's)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_area: int = 0


@dataclass
class EverythingResult:
    """Masks sorted by area, largest first."""

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) predicted IoU
    stability_scores: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 (inclusive pixel indices, as mask_to_xyxy)


def point_grid(points_per_side: int) -> np.ndarray:
    """``n × n`` points at the centres of a regular grid over ``[0, 1]²``, as ``(n², 2)`` x, y.

    Example:
        >>> point_grid(2).tolist()
        [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    """
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def _box_and_crop(mask: torch.Tensor) -> Tuple[List[int], np.ndarray]:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        return [0, 0, 0, 0], np.zeros((0, 0), dtype=bool)
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return [x1, y1, x2, y2], mask[y1 : y2 + 1, x1 : x2 + 1].cpu().numpy()


@torch.inference_mode()
def segment_everything(predictor: Sam2Predictor, embedding: ImageEmbedding, params: EverythingParams = EverythingParams()) -> EverythingResult:
    """All distinct objects SAM 2 finds from a point grid over the image."""
    height, width = embedding.original_size
    points = point_grid(params.points_per_side) * np.array([width, height], dtype=np.float64)
    boxes: List[List[int]] = []
    crops: List[np.ndarray] = []
    scores: List[float] = []
    stabilities: List[float] = []
    for start in range(0, len(points), params.points_per_batch):
        batch = points[start : start + params.points_per_batch]
        prompts = PromptBatch(point_coords=batch[:, None, :].astype(np.float32), point_labels=np.ones((len(batch), 1), dtype=np.int32))
        low_res, iou = predictor.decode(embedding, prompts, multimask_output=True)
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        keep = iou > params.pred_iou_thresh
        low_res, iou = low_res[keep], iou[keep]
        for offset, logits in predictor.iter_upsampled(low_res, (height, width)):
            stability = stability_score(logits, predictor.mask_threshold, STABILITY_OFFSET)
            for i in torch.nonzero(stability >= params.stability_score_thresh).flatten().tolist():
                box, crop = _box_and_crop(logits[i] > predictor.mask_threshold)
                boxes.append(box)
                crops.append(crop)
                scores.append(float(iou[offset + i]))
                stabilities.append(float(stability[i]))
    if not boxes:
        return EverythingResult(
            masks=np.zeros((0, height, width), dtype=bool),
            scores=np.zeros(0, dtype=np.float32),
            stability_scores=np.zeros(0, dtype=np.float32),
            boxes=np.zeros((0, 4), dtype=np.float32),
        )
    box_t = torch.tensor(boxes, dtype=torch.float32)
    score_t = torch.tensor(scores, dtype=torch.float32)
    kept = batched_nms(box_t, score_t, torch.zeros(len(boxes)), iou_threshold=params.box_nms_thresh).tolist()
    area = {i: int(crops[i].sum()) for i in kept}
    kept = sorted((i for i in kept if area[i] >= max(1, params.min_mask_area)), key=lambda i: -area[i])
    masks = np.zeros((len(kept), height, width), dtype=bool)
    for row, i in enumerate(kept):
        x1, y1, x2, y2 = boxes[i]
        masks[row, y1 : y2 + 1, x1 : x2 + 1] = crops[i]
    return EverythingResult(
        masks=masks,
        scores=np.array([scores[i] for i in kept], dtype=np.float32),
        stability_scores=np.array([stabilities[i] for i in kept], dtype=np.float32),
        boxes=np.array([boxes[i] for i in kept], dtype=np.float32).reshape(-1, 4),
    )
