"""Run a compiled workflow on frames and write what it returns: PNGs, JSON, coco.json."""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from sam_block.cli.coco import COCO_FILE, CocoWriter
from sam_block.cli.drawing import annotate, find_detections, find_images
from sam_block.cli.errors import CliError, SetupError, root_message
from sam_block.cli.inputs import Frame

FAILED_FILE = "failed.jsonl"  # one JSON line {"name", "source", "reason"} per input that failed


@dataclass
class RunSummary:
    """What a run did: ``frames`` images in ``coco.json``; ``failed`` lists ``{"name", "source",
    "reason"}`` of the inputs that could not be read or on which the workflow failed (also in
    ``failed_file``, failed.jsonl)."""

    frames: int = 0
    detections: int = 0
    masks: int = 0
    written: List[Path] = field(default_factory=list)
    coco: Optional[Path] = None
    failed: List[Dict[str, str]] = field(default_factory=list)
    failed_file: Optional[Path] = None


def is_setup_error(error: BaseException) -> bool:
    """True when `error` (or its cause, through the engine's wrapping) would fail every image alike:
    a missing or corrupt checkpoint, an unusable device, an unknown version, a runtime input the
    engine refuses. A run stops on it (exit 2) instead of listing every image as failed."""
    from roboflow_workflows.errors import RuntimeInputError
    from sam_block.errors import CheckpointCorruptError, CheckpointMissingError, DeviceError, UnknownVersionError

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(
            error,
            (
                SetupError,
                CheckpointMissingError,
                CheckpointCorruptError,
                DeviceError,
                UnknownVersionError,
                RuntimeInputError,
            ),
        ):
            return True
        error = getattr(error, "inner_error", None) or error.__cause__
    return False


def write_failed(out: Path, failed: List[Dict[str, str]]) -> Optional[Path]:
    """failed.jsonl: one JSON line per input of this run that failed; no file when none did."""
    path = out / FAILED_FILE
    if not failed:
        path.unlink(missing_ok=True)
        return None
    return atomic_write(path, "".join(json.dumps(f) + "\n" for f in failed).encode())


def atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


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
    keep_going: bool = False,
    frame_params: Optional[Callable[[Frame], Dict[str, Any]]] = None,
) -> RunSummary:
    """Run `engine` on every frame; write NAME{annotated_suffix}.png, NAME.json, image outputs, coco.json.

    NAME.json holds every output by name, or only the output `json_output` when given.
    `frame_params(frame)`: the frame's own inputs, added to `params`. With `keep_going`, a frame
    that could not be read (``frame.error``) or on which the workflow fails is named on stderr and
    listed in ``summary.failed`` and failed.jsonl, and the run goes on; an error that would fail
    every frame alike (:func:`is_setup_error`) still stops it. Without, the first one raises.
    """
    import cv2
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    coco, summary = CocoWriter(), RunSummary()
    with tqdm(
        total=total, unit="image", desc="sam-block", disable=None if progress is None else not progress, file=sys.stderr
    ) as bar:

        def fail(frame: Frame, reason: str) -> None:
            summary.failed.append({"name": frame.name, "source": frame.source, "reason": reason})
            write_failed(out, summary.failed)  # at once: an interrupted run still says what failed
            bar.write(f"{frame.source}: failed: {reason}", file=sys.stderr)
            bar.update(1)

        for frame in frames:
            if frame.error is not None:
                if not keep_going:
                    raise CliError(frame.error)
                fail(frame, frame.error)
                continue
            try:
                own = frame_params(frame) if frame_params is not None else {}
                result = engine.run(runtime_parameters={**params, **own, image_input: frame.image})[0]
            except Exception as error:  # the engine wraps our errors; show the root cause in one line
                if isinstance(error, SetupError) or (isinstance(error, CliError) and not keep_going):
                    raise
                message = (
                    root_message(error)
                    if isinstance(error, CliError)
                    else f"the workflow failed: {root_message(error)}"
                )
                if not keep_going or is_setup_error(error):
                    raise CliError(f"{frame.source}: {message}") from error
                fail(frame, message)
                continue
            found = [d for name, value in result.items() for d in find_detections(value, name)]
            scene = frame.image
            for _, detections in found:
                if _same_size(detections, frame.image):
                    scene = annotate(scene, detections)
            png, js = out / f"{frame.name}{annotated_suffix}.png", out / f"{frame.name}.json"
            cv2.imwrite(str(png), scene)
            serialized = (
                serialize_output(result[json_output])
                if json_output
                else {name: serialize_output(value) for name, value in result.items()}
            )
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
    if keep_going:
        summary.failed_file = write_failed(out, summary.failed)
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
