"""inference's SAM 2 prompt set → the runtime's prompt batches.

A prompt (inference's ``Sam2Prompt``) is a box (centre ``x``, ``y``, ``width``,
``height``), points (``x``, ``y``, ``positive``), or both; SAM sees the box as its two
corners followed by the points, as in Meta's ``SAM2ImagePredictor``. Prompts with the same
structure (box or not, number of points) are decoded together in one batch; each prompt
gets exactly the mask it would get alone (no padding points, unlike inference's
``pad_points``).

Bad coordinates are the client's: non-finite values are refused naming the field; boxes
partly outside the image are clipped, points outside it dropped, and a prompt left with
nothing usable gets an empty prediction (so predictions stay aligned with prompts) — each
with a logged warning giving the reason.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sam_block.errors import InvalidParameterError
from sam_block.prompts import sanitize_boxes
from sam_block.runtime.logits_cache import PromptKey
from sam_block.runtime.predictor import PromptBatch

logger = logging.getLogger(__name__)


@dataclass
class PromptGroup:
    """Prompts of one structure, decoded in one batch: ``indices[i]`` is row ``i``'s prompt."""

    indices: List[int]
    batch: PromptBatch


@dataclass
class ParsedPrompts:
    """A request's prompts, ready for the runtime."""

    count: int
    keys: List[PromptKey]  # per prompt, as the logits cache compares them
    groups: List[PromptGroup] = field(default_factory=list)
    skipped: Dict[int, str] = field(default_factory=dict)  # prompt index → why it got an empty prediction

    @property
    def usable(self) -> List[int]:
        return [i for i in range(self.count) if i not in self.skipped]


def _finite(values: Sequence[float], where: str) -> None:
    for name, value in values:
        if not math.isfinite(value):
            raise InvalidParameterError(f"{where}.{name} is {value!r}: coordinates must be finite numbers (pixels).")


def parse_prompts(prompts: Optional[Sequence], image_size: Tuple[int, int]) -> ParsedPrompts:
    """Turn inference's ``Sam2Prompt`` list into batches for `image_size` ``(H, W)``.

    Example:
        >>> from inference.core.entities.requests.sam2 import Sam2Prompt
        >>> parsed = parse_prompts([Sam2Prompt(box={"x": 50, "y": 40, "width": 20, "height": 10}),
        ...                         Sam2Prompt(points=[{"x": 5, "y": 5, "positive": True}])], (100, 100))
        >>> [(g.indices, g.batch.boxes is not None) for g in parsed.groups]
        [([0], True), ([1], False)]
    """
    height, width = image_size
    prompts = list(prompts or [])
    keys: List[PromptKey] = []
    shaped: Dict[Tuple[bool, int], List[Tuple[int, Optional[np.ndarray], List[Tuple[float, float, int]]]]] = {}
    skipped: Dict[int, str] = {}
    for index, prompt in enumerate(prompts):
        where = f"prompts[{index}]"
        box, points = prompt.box, list(prompt.points or [])
        if box is None and not points:
            raise InvalidParameterError(f"{where} has neither a box nor points: give a box, points, or both.")
        if box is not None:
            _finite([("x", box.x), ("y", box.y), ("width", box.width), ("height", box.height)], f"{where}.box")
        for p, point in enumerate(points):
            _finite([("x", point.x), ("y", point.y)], f"{where}.points[{p}]")
        keys.append(
            PromptKey.of(
                None if box is None else (box.x, box.y, box.width, box.height),
                [(point.x, point.y, point.positive) for point in points],
            )
        )
        xyxy = None
        if box is not None:
            corners = np.array(
                [[box.x - box.width / 2, box.y - box.height / 2, box.x + box.width / 2, box.y + box.height / 2]]
            )
            clipped, keep = sanitize_boxes(corners, image_size)
            if not keep[0]:
                skipped[index] = (
                    f"{where}.box {corners[0].tolist()} has zero area or lies outside the {width}x{height} image"
                )
                continue
            xyxy = clipped[0]
        inside = []
        for p, point in enumerate(points):
            if 0 <= point.x <= width and 0 <= point.y <= height:
                inside.append((float(point.x), float(point.y), int(bool(point.positive))))
            else:
                logger.warning(
                    "Dropping %s.points[%d] (%g, %g): outside the %dx%d image.",
                    where,
                    p,
                    point.x,
                    point.y,
                    width,
                    height,
                )
        if xyxy is None and not inside:
            skipped[index] = f"{where} has no point inside the {width}x{height} image"
            continue
        shaped.setdefault((xyxy is not None, len(inside)), []).append((index, xyxy, inside))
    for index, reason in skipped.items():
        logger.warning("Prompt %d gets an empty mask: %s.", index, reason)
    groups = []
    for (has_box, point_count), rows in shaped.items():
        batch = PromptBatch()
        if has_box:
            batch.boxes = np.stack([xyxy for _, xyxy, _ in rows]).astype(np.float32)
        if point_count:
            batch.point_coords = np.array([[(x, y) for x, y, _ in inside] for _, _, inside in rows], dtype=np.float32)
            batch.point_labels = np.array([[label for _, _, label in inside] for _, _, inside in rows], dtype=np.int32)
        groups.append(PromptGroup([index for index, _, _ in rows], batch))
    return ParsedPrompts(count=len(prompts), keys=keys, groups=groups, skipped=skipped)


def attach_mask_logits(parsed: ParsedPrompts, logits: Optional[List[Optional[np.ndarray]]]) -> int:
    """Give each prompt its prior low-resolution logits (from the logits cache) as SAM's mask
    prompt; returns how many prompts got one."""
    if logits is None:
        return 0
    given = 0
    for group in parsed.groups:
        rows = [logits[i] for i in group.indices]
        if all(row is None for row in rows):
            continue
        shape = next(row.shape for row in rows if row is not None)
        group.batch.mask_logits = np.stack([np.zeros(shape, np.float32) if row is None else row for row in rows])
        group.batch.mask_valid = np.array([row is not None for row in rows])
        given += int(group.batch.mask_valid.sum())
    return given
