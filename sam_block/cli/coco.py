"""One COCO instance-segmentation file for a run's masks.

Ours rather than ``sv.DetectionDataset.as_coco``: it streams image by image (no
dataset held in memory), keeps the score, the output name and video frame indices,
and encodes masks as RLE through pycocotools.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from sam_block.cli.inputs import Frame

COCO_FILE = "coco.json"


class CocoWriter:
    """Collects instance masks of a run into one COCO instance-segmentation file."""

    def __init__(self) -> None:
        self.images: List[dict] = []
        self.annotations: List[dict] = []
        self.categories: Dict[str, int] = {}

    def add(self, frame: Frame, detections: List[Tuple[str, Any]]) -> None:
        from pycocotools import mask as mask_utils

        from sam_block.rle import detections_rles

        height, width = frame.image.shape[:2]
        image_id = len(self.images) + 1
        entry = {"id": image_id, "file_name": frame.source, "width": int(width), "height": int(height)}
        if frame.frame_index is not None:
            entry["frame_index"] = frame.frame_index
        self.images.append(entry)
        for output, dets in detections:
            if dets.mask is None:
                continue
            names = dets.data.get("class_name")
            rles = detections_rles(dets)  # exact, from crops when the masks are compact: one implementation
            for i in range(len(dets)):
                name = (
                    str(names[i])
                    if names is not None
                    else str(dets.class_id[i] if dets.class_id is not None else "object")
                )
                category = self.categories.setdefault(name, len(self.categories) + 1)
                rle = rles[i]
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotation = {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                    "output": output,
                }
                if dets.confidence is not None:
                    annotation["score"] = float(dets.confidence[i])
                self.annotations.append(annotation)

    def write(self, path: Path) -> None:
        payload = {
            "info": {"description": "sam-block instance masks", "version": "1.0"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in self.categories.items()],
        }
        path.write_text(json.dumps(payload))
