"""The prompts of one image as plain arrays: what :mod:`sam_block.prompts` builds from
detections and what the predictor decodes. numpy only, so building prompts needs no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

NOT_A_POINT_LABEL = -1  # SAM's label for a padding point


@dataclass
class PromptBatch:
    """Prompts for one image; row ``i`` of every array belongs to prompt ``i``.

    Attributes:
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels, or ``None``.
        point_coords: ``(N, P, 2)`` float32 pixels, or ``None``.
        point_labels: ``(N, P)`` int32: 1 foreground, 0 background, -1 padding.
        mask_inputs: ``(N, h, w)`` binary masks (any resolution, usually the image's) that
            SAM refines, or ``None``; rows where `mask_valid` is False carry no mask.
        mask_valid: ``(N,)`` bool, which rows of `mask_inputs` (or `mask_logits`) are real prompts.
        mask_logits: ``(N, h, w)`` float32 low-resolution logits that SAM itself returned
            (``MaskPrediction.low_res_logits``) given back as the mask prompt as they are, for
            click refinement (Meta's ``predict(mask_input=...)``), or ``None``. Used instead of
            `mask_inputs` when both are set.

    Example:
        >>> batch = PromptBatch(boxes=np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32))
        >>> len(batch), batch.subset(slice(1, 2)).boxes.tolist()
        (2, [[5.0, 5.0, 20.0, 20.0]])
    """

    boxes: Optional[np.ndarray] = None
    point_coords: Optional[np.ndarray] = None
    point_labels: Optional[np.ndarray] = None
    mask_inputs: Optional[np.ndarray] = None
    mask_valid: Optional[np.ndarray] = None
    mask_logits: Optional[np.ndarray] = None

    def __len__(self) -> int:
        for array in (self.boxes, self.point_coords, self.mask_inputs, self.mask_logits):
            if array is not None:
                return len(array)
        return 0

    def subset(self, rows: slice) -> "PromptBatch":
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return PromptBatch(
            pick(self.boxes),
            pick(self.point_coords),
            pick(self.point_labels),
            pick(self.mask_inputs),
            pick(self.mask_valid),
            pick(self.mask_logits),
        )
