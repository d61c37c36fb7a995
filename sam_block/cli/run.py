"""Run a compiled workflow on frames and write what it returns: PNGs, JSON, coco.json."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from sam_block.cli.coco import COCO_FILE, CocoWriter
from sam_block.cli.drawing import annotate, find_detections, find_images
from sam_block.cli.errors import CliError, root_message
from sam_block.cli.inputs import Frame


@dataclass
class RunSummary:
    frames: int = 0
    detections: int = 0
    masks: int = 0
    written: List[Path] = field(default_factory=list)
    coco: Optional[Path] = None


def run_frames(
    engine,
    image_input: str,
    frames: Iterator[Frame],
    out: Path,
    params: Dict[str, Any],
    total: Optional[int] = None,
    annotated_suffix: str = "",
    progress: Optional[bool] = None,
    json_output: Optional[str] = None,
) -> RunSummary:
    """Run `engine` on every frame; write NAME{annotated_suffix}.png, NAME.json, image outputs, coco.json.

    NAME.json holds every output by name, or only the output `json_output` when given.
    """
    import cv2
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    coco, summary = CocoWriter(), RunSummary()
    with tqdm(total=total, unit="image", desc="sam-block", disable=None if progress is None else not progress, file=sys.stderr) as bar:
        for frame in frames:
            try:
                result = engine.run(runtime_parameters={**params, image_input: frame.image})[0]
            except CliError:
                raise
            except Exception as error:  # the engine wraps our errors; show the root cause in one line
                raise CliError(f"{frame.source}: the workflow failed: {root_message(error)}") from error
            found = [d for name, value in result.items() for d in find_detections(value, name)]
            scene = frame.image
            for _, detections in found:
                if _same_size(detections, frame.image):
                    scene = annotate(scene, detections)
            png, js = out / f"{frame.name}{annotated_suffix}.png", out / f"{frame.name}.json"
            cv2.imwrite(str(png), scene)
            serialized = serialize_output(result[json_output]) if json_output else {name: serialize_output(value) for name, value in result.items()}
            js.write_text(json.dumps(serialized, indent=2, default=json_default))
            summary.written += [png, js]
            for name, image in (i for key, value in result.items() for i in find_images(value, key)):
                path = out / f"{frame.name}.{_safe(name)}.png"
                cv2.imwrite(str(path), image)
                summary.written.append(path)
            coco.add(frame, [(n, d) for n, d in found if _same_size(d, frame.image)])
            count = sum(len(d) for _, d in found)
            masks = sum(len(d) for _, d in found if d.mask is not None)
            summary.frames += 1
            summary.detections += count
            summary.masks += masks
            what = f"{masks} mask(s)" if masks == count else f"{count} detection(s), {masks} mask(s)"
            bar.write(f"{frame.source}: {what} → {png}, {js}", file=sys.stdout)
            bar.update(1)
    summary.coco = out / COCO_FILE
    coco.write(summary.coco)
    summary.written.append(summary.coco)
    return summary


def serialize_output(value: Any) -> Any:
    """The engine's JSON for an output, except that masks stay exact: every ``sv.Detections``
    with masks (also inside lists and dicts) carries COCO RLE in ``rle_mask``, not a polygon."""
    import supervision as sv

    from roboflow_workflows.core_steps.common.serializers import serialize_wildcard_kind

    from sam_block.rle import serialise_exact

    if isinstance(value, sv.Detections):
        return serialise_exact(value)
    if isinstance(value, dict):
        return {key: serialize_output(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [serialize_output(inner) for inner in value]
    return serialize_wildcard_kind(value)


def json_default(value: Any) -> Any:
    """What the engine's serializers leave as Python objects: timestamps (ISO 8601), numpy scalars."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _same_size(detections, image: np.ndarray) -> bool:
    """Detections drawn on the input image must be in its coordinates (not a crop's)."""
    if detections.mask is not None:
        return detections.mask.shape[1:] == image.shape[:2]
    dims = detections.data.get("image_dimensions")
    return dims is None or len(dims) == 0 or tuple(int(v) for v in dims[0]) == tuple(image.shape[:2])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
