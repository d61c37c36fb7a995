"""Masks → the ``format`` a ``/sam2/segment_image`` client asked for, in inference's response schema.

- ``json``: every outer contour of each mask as a polygon of integer pixel corners (all
  parts of the mask, as inference's ``masks2multipoly``; holes are not represented);
- ``rle``: COCO RLE, exact, from the masks' crops (:mod:`sam_block.rle`);
- ``binary``: an ``.npz`` with ``masks`` — ``(N, H, W)`` float32 logits, SAM's low-resolution
  logits upsampled bilinearly to the image (Meta's postprocessing; ``> 0`` is the mask) —
  and ``low_res_masks`` — ``(N, h, w)`` float32, the decoder's own logits — as inference writes it.
"""

from __future__ import annotations

import io
from typing import List, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sam_block.errors import InvalidParameterError
from sam_block.rle import crop_to_rle
from sam_block.runtime.masks import CroppedMasks

FORMATS = ("json", "rle", "binary")


def check_format(value) -> str:
    """Example:
    >>> check_format("rle")
    'rle'
    """
    if value not in FORMATS:
        raise InvalidParameterError(f"format={value!r} is not supported: use one of {', '.join(FORMATS)}.")
    return value


def mask_polygons(masks: CroppedMasks, index: int) -> List[List[List[int]]]:
    """The outer contours of mask `index` as ``[[[x, y], ...], ...]`` (``[[]]`` when empty).

    Example:
        >>> m = CroppedMasks((10, 10), [[2, 2, 4, 3]], crops=[np.ones((2, 3), bool)])
        >>> mask_polygons(m, 0)
        [[[2, 2], [2, 3], [4, 3], [4, 2]]]
    """
    if masks.areas[index] == 0:
        return [[]]
    x1, y1 = int(masks.boxes[index][0]), int(masks.boxes[index][1])
    crop = np.ascontiguousarray(masks.crop(index), dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x1, y1))
    return [contour.reshape(-1, 2).tolist() for contour in contours] or [[]]


def predictions(masks: CroppedMasks, scores: np.ndarray, fmt: str) -> list:
    """inference's ``Sam2SegmentationPrediction`` of every mask, for ``json`` or ``rle``."""
    from inference.core.entities.responses.sam2 import Sam2SegmentationPrediction

    out = []
    for i in range(len(masks)):
        if fmt == "rle":
            box = masks.boxes[i]
            rle = crop_to_rle(masks.crop(i), int(box[0]), int(box[1]), masks.image_size)
            out.append(Sam2SegmentationPrediction(masks=rle, confidence=float(scores[i]), format="rle"))
        else:
            out.append(
                Sam2SegmentationPrediction(masks=mask_polygons(masks, i), confidence=float(scores[i]), format="polygon")
            )
    return out


def binary_npz(low_res_logits: np.ndarray, image_size: Tuple[int, int]) -> bytes:
    """inference's ``binary`` payload: ``np.savez_compressed(masks=..., low_res_masks=...)``."""
    low_res = torch.as_tensor(np.asarray(low_res_logits, dtype=np.float32))
    if len(low_res):
        full = F.interpolate(low_res[:, None], size=tuple(image_size), mode="bilinear", align_corners=False)[
            :, 0
        ].numpy()
    else:
        full = np.zeros((0, *image_size), np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, masks=full, low_res_masks=low_res.numpy())
    return buffer.getvalue()
