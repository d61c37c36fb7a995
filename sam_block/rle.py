"""Exact masks as COCO RLE, built crop by crop: the lossless form masks take over JSON.

COCO RLE (pycocotools) runs column-major over the whole ``H × W`` frame, starting with
a run of zeros. Outside a mask's tight box every pixel is zero, so each run boundary
lies inside the crop: a 1-run starts at frame index ``x·H + y`` where the crop column
rises and ends where it falls. We find those boundaries in the crop alone, merge a run
that ends at the bottom of one column with one that starts at the top of the next (as
pycocotools' own encoder does), and hand the run lengths to pycocotools to compress.
The result is byte-identical to ``pycocotools.mask.encode`` of the dense mask (tested),
without ever allocating an ``H × W`` array per mask.

One implementation for every consumer: the blocks' ``output_format: rle``
(``data["rle_mask"]``, serialized by inference's ``serialise_rle_sv_detections``), the
CLI's JSON (:func:`serialise_exact`) and its COCO file (:func:`detections_rles`).
"""

from __future__ import annotations

from copy import copy
from typing import List, Literal, Optional, Tuple

import numpy as np
import supervision as sv
from pycocotools import mask as mask_utils
from supervision.detection.compact_mask import CompactMask

from sam_block.runtime.masks import CroppedMasks

RLE_KEY = "rle_mask"  # inference's RLE_MASK_KEY_IN_SV_DETECTIONS / _IN_INFERENCE_RESPONSE

OutputFormat = Literal["rle", "polygons"]
OUTPUT_FORMATS = ("rle", "polygons")
# `polygons` is what every existing workflow and JSON client of this step already reads
# (`points`); `rle` is opt-in, as the README explains.
DEFAULT_OUTPUT_FORMAT: OutputFormat = "polygons"
OUTPUT_FORMAT_DESCRIPTION = (
    "How masks leave the workflow as JSON. 'polygons' (default): one outline per mask in "
    "`points`, as every instance-segmentation model returns them — holes and extra parts of a "
    "mask are lost. 'rle': the exact mask as COCO run-length encoding in `rle_mask` (decode with "
    "pycocotools), bit for bit what SAM predicted. Inside the workflow both keep full masks."
)


def crop_to_rle(crop: np.ndarray, x1: int, y1: int, image_size: Tuple[int, int]) -> dict:
    """COCO RLE of a full-frame mask that is `crop` placed at ``(x1, y1)`` and zero elsewhere.

    Args:
        crop: ``(h, w)`` bool mask crop (may be empty).
        x1, y1: position of the crop's top-left pixel in the frame.
        image_size: ``(H, W)`` of the frame.

    Returns:
        ``{"size": [H, W], "counts": str}``, equal to ``pycocotools.mask.encode`` of the
        dense mask (``counts`` decoded to text, as inference serializes it).

    Example:
        >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
        >>> rle = crop_to_rle(ring, 1, 1, (5, 5))
        >>> bool((mask_utils.decode(rle)[1:4, 1:4] == ring).all()), int(mask_utils.area(rle))
        (True, 8)
    """
    height, width = int(image_size[0]), int(image_size[1])
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    if crop.size and (x1 < 0 or y1 < 0 or x1 + w > width or y1 + h > height):
        raise ValueError(f"crop of {h}x{w} at x={x1}, y={y1} does not fit in a {height}x{width} image")
    columns = np.zeros((w, h + 2), dtype=np.int8)  # one column of the crop per row, zero-padded
    columns[:, 1:-1] = crop.T
    change = np.diff(columns, axis=1)  # +1 where a run of ones starts, -1 one past where it ends
    start_col, start_row = np.nonzero(change == 1)
    end_col, end_row = np.nonzero(change == -1)
    starts = (x1 + start_col).astype(np.int64) * height + y1 + start_row
    ends = (x1 + end_col).astype(np.int64) * height + y1 + end_row
    if len(starts) > 1:  # a run reaching the bottom of the frame continues at the top of the next column
        joined = ends[:-1] == starts[1:]
        keep_start = np.concatenate([[True], ~joined])
        keep_end = np.concatenate([~joined, [True]])
        starts, ends = starts[keep_start], ends[keep_end]
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:  # pycocotools ends on the last run of ones
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def cropped_masks_to_rles(masks: CroppedMasks) -> List[dict]:
    """COCO RLE of every mask in `masks`, one crop unpacked at a time."""
    return [
        crop_to_rle(masks.crop(i), int(masks.boxes[i][0]), int(masks.boxes[i][1]), masks.image_size)
        for i in range(len(masks))
    ]


def detections_rles(detections: sv.Detections) -> List[dict]:
    """COCO RLE of every mask of `detections`, whatever holds them.

    Reads ``data["rle_mask"]`` when present, else the crops of a ``CompactMask``, else
    encodes the dense masks. Raises ``ValueError`` when `detections` carry no masks.
    """
    existing = detections.data.get(RLE_KEY)
    if existing is not None:
        return [_text_counts(rle) for rle in existing]
    if detections.mask is None:
        raise ValueError("these detections carry no masks (mask is None and there is no data['rle_mask'])")
    if isinstance(detections.mask, CompactMask):
        size = detections.mask.image_shape
        return [
            crop_to_rle(detections.mask.crop(i), int(x), int(y), size)
            for i, (x, y) in enumerate(detections.mask.offsets)
        ]
    return [_text_counts(mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))) for m in detections.mask]


def attach_rles(detections: sv.Detections, masks: Optional[CroppedMasks] = None) -> sv.Detections:
    """Add each mask's COCO RLE as ``data["rle_mask"]`` (what ``output_format: rle`` returns).

    `masks`, when given, must be the masks of `detections` row for row (faster: read
    from the crops); otherwise the RLE is built from ``detections.mask``. ``mask`` stays,
    so every downstream block keeps working in process.
    """
    rles = cropped_masks_to_rles(masks) if masks is not None else detections_rles(detections)
    if len(rles) != len(detections):
        raise ValueError(f"{len(rles)} masks for {len(detections)} detections")
    column = np.empty(len(rles), dtype=object)
    column[:] = rles
    detections.data[RLE_KEY] = column
    return detections


def apply_output_format(
    detections: sv.Detections, output_format: str, masks: Optional[CroppedMasks] = None
) -> sv.Detections:
    """The one line a block calls: add RLE for ``rle``, leave ``polygons`` as it is.

    Example:
        >>> crop = np.ones((2, 2), bool)
        >>> dets = sv.Detections(xyxy=np.array([[1.0, 1, 2, 2]]), mask=np.pad(crop, 1)[None])
        >>> apply_output_format(dets, "rle").data["rle_mask"][0]["size"]
        [4, 4]
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format={output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}.")
    return attach_rles(detections, masks) if output_format == "rle" else detections


def serialise_exact(detections: sv.Detections) -> dict:
    """inference's JSON for `detections`, with the exact mask of each as ``rle_mask``.

    Same fields as inference's own serializers (``serialise_rle_sv_detections``): boxes,
    classes, ids, ``image``, and ``rle_mask`` instead of the lossy polygon ``points``;
    detections without masks serialize as inference's boxes. For the CLI's JSON output.
    """
    from roboflow_workflows.core_steps.common.serializers import (
        serialise_rle_sv_detections,
        serialise_sv_detections,
    )

    if detections.mask is None and detections.data.get(RLE_KEY) is None:
        return serialise_sv_detections(detections)
    with_rle = copy(detections)
    with_rle.data = dict(detections.data)
    attach_rles(with_rle)
    return serialise_rle_sv_detections(with_rle)


def decode_rle(rle: dict) -> np.ndarray:
    """The ``(H, W)`` bool mask of one COCO RLE (``counts`` as text or bytes)."""
    counts = rle["counts"]
    return mask_utils.decode(
        {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    ).astype(bool)


def _text_counts(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
