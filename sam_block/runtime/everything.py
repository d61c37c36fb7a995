"""Segment everything: prompt SAM 2 with a regular point grid, keep good distinct masks.

Same algorithm and parameters as Meta's ``SAM2AutomaticMaskGenerator`` (single crop),
reordered for speed and memory: proposals are filtered by predicted IoU *before*
any upsampling, only survivors are upsampled — and only where they can be
non-empty (see ``masks.py``) — to compute their stability score and box, and
every mask stays a crop of its box until the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch
from sam2.utils.amg import build_point_grid
from torchvision.ops import batched_nms

from sam_block.runtime.masks import CroppedMasks, upsample_to_crops
from sam_block.runtime.predictor import STABILITY_OFFSET, ImageEmbedding, PromptBatch, Sam2Predictor


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

    masks: CroppedMasks
    scores: np.ndarray  # (N,) predicted IoU
    stability_scores: np.ndarray  # (N,)


@torch.inference_mode()
def segment_everything(
    predictor: Sam2Predictor, embedding: ImageEmbedding, params: EverythingParams = EverythingParams()
) -> EverythingResult:
    """All distinct objects SAM 2 finds from a point grid over the image."""
    height, width = embedding.original_size
    # Meta's grid: cell centres in [0, 1], scaled to pixels, the same points SAM2AutomaticMaskGenerator prompts
    points = build_point_grid(params.points_per_side) * np.array([width, height], dtype=np.float64)
    found: List[CroppedMasks] = []
    scores: List[np.ndarray] = []
    stabilities: List[np.ndarray] = []
    for start in range(0, len(points), params.points_per_batch):
        batch = points[start : start + params.points_per_batch]
        prompts = PromptBatch(
            point_coords=batch[:, None, :].astype(np.float32), point_labels=np.ones((len(batch), 1), dtype=np.int32)
        )
        low_res, iou = predictor.decode(embedding, prompts, multimask_output=True)
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        confident = iou > params.pred_iou_thresh
        masks, stability = upsample_to_crops(
            low_res[confident], (height, width), predictor.mask_threshold, STABILITY_OFFSET
        )
        stable = stability >= params.stability_score_thresh
        found.append(masks.select(stable))
        scores.append(iou[confident].cpu().numpy()[stable])
        stabilities.append(stability[stable])
    masks = CroppedMasks.concatenate((height, width), found)
    score = np.concatenate(scores).astype(np.float32)
    stability = np.concatenate(stabilities).astype(np.float32)
    if len(masks):
        kept = batched_nms(
            torch.as_tensor(masks.boxes, dtype=torch.float32),
            torch.as_tensor(score),
            torch.zeros(len(masks)),
            iou_threshold=params.box_nms_thresh,
        ).numpy()
    else:
        kept = np.zeros(0, dtype=np.int64)
    area = masks.areas
    kept = kept[area[kept] >= max(1, params.min_mask_area)]
    kept = kept[np.argsort(-area[kept], kind="stable")]
    return EverythingResult(masks=masks.select(kept), scores=score[kept], stability_scores=stability[kept])
