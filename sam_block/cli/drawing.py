"""What a run draws: every ``sv.Detections`` of the outputs, with supervision's annotators."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import numpy as np


def find_detections(value: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """Every ``sv.Detections`` inside an output value (also inside lists and dicts)."""
    import supervision as sv

    if isinstance(value, sv.Detections):
        yield prefix, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from find_detections(inner, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from find_detections(inner, f"{prefix}[{index}]")


def find_images(value: Any, prefix: str) -> Iterator[Tuple[str, np.ndarray]]:
    from roboflow_workflows.execution_engine.entities.base import WorkflowImageData

    if isinstance(value, WorkflowImageData):
        yield prefix, value.numpy_image
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from find_images(inner, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from find_images(inner, f"{prefix}[{index}]")


def draw_masks(scene: np.ndarray, detections, color_lookup, opacity: float = 0.5) -> np.ndarray:
    """Each mask filled in its palette colour, then outlined white on black: the outline reads on
    any background, also where the fill has the colour of the object it covers."""
    import supervision as sv

    scene = sv.MaskAnnotator(opacity=opacity, color_lookup=color_lookup).annotate(scene, detections)
    scene = sv.PolygonAnnotator(color=sv.Color.BLACK, thickness=4, color_lookup=color_lookup).annotate(
        scene, detections
    )
    return sv.PolygonAnnotator(color=sv.Color.WHITE, thickness=2, color_lookup=color_lookup).annotate(scene, detections)


def label_annotator(color_lookup):
    """supervision's label annotator with ``smart_position``: labels stay inside the image and
    off each other (a label of a box at the right edge is not cut off)."""
    import supervision as sv

    return sv.LabelAnnotator(text_scale=0.5, color_lookup=color_lookup, smart_position=True)


def annotate(image: np.ndarray, detections) -> np.ndarray:
    """Masks, boxes and labels drawn with supervision's annotators (BGR in, BGR out)."""
    import supervision as sv

    if len(detections) == 0:
        return image.copy()
    names = detections.data.get("class_name")
    if names is None:
        names = [
            "" if c is None else str(c)
            for c in (detections.class_id if detections.class_id is not None else [None] * len(detections))
        ]
    scores = detections.confidence if detections.confidence is not None else [None] * len(detections)
    labels = [f"{name} {score:.2f}".strip() if score is not None else str(name) for name, score in zip(names, scores)]
    color_lookup = sv.ColorLookup.CLASS if detections.class_id is not None else sv.ColorLookup.INDEX
    scene = image.copy()
    if detections.mask is not None:
        scene = draw_masks(scene, detections, color_lookup)
    scene = sv.BoxAnnotator(thickness=2, color_lookup=color_lookup).annotate(scene, detections)
    return label_annotator(color_lookup).annotate(scene, detections, labels=labels)
