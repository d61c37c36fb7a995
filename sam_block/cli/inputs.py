"""What the commands read: boxes, images, workflows, ``--param`` values, and the frames of images, folders and videos."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from sam_block.cli.errors import CliError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def load_boxes(path: Path):
    """Read boxes from inference's prediction JSON or a plain list of corner dicts."""
    import supervision as sv

    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"boxes file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise CliError(f"boxes file {path} is not valid JSON ({error})") from error
    try:
        if isinstance(payload, dict) and "predictions" in payload:
            detections = sv.Detections.from_inference(payload)
            ids = [p.get("detection_id") for p in payload["predictions"]]
            if all(ids):
                detections.data["detection_id"] = np.array(ids)
            return detections
        if isinstance(payload, list):
            if not payload:
                return sv.Detections.empty()
            xyxy = np.array([[float(b[k]) for k in ("x1", "y1", "x2", "y2")] for b in payload])
            names = [str(b.get("class_name", "foreground")) for b in payload]
            classes = {name: i for i, name in enumerate(dict.fromkeys(names))}
            return sv.Detections(
                xyxy=xyxy,
                class_id=np.array([int(b.get("class_id", classes[n])) for b, n in zip(payload, names)]),
                data={"class_name": np.array(names)},
            )
    except (KeyError, TypeError, ValueError) as error:
        raise CliError(f"boxes file {path}: a box is malformed ({type(error).__name__}: {error}); " f"see `sam-block segment --help`") from error
    raise CliError(f"boxes file {path} must hold a list of boxes or an object with 'predictions'; see `sam-block segment --help`")


def load_image(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise CliError(f"image {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CliError(f"{path} is not an image OpenCV can read")
    return image


def load_workflow(path: Path) -> dict:
    try:
        definition = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"workflow file {path} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"workflow file {path} is a directory; give the workflow's JSON file") from None
    except json.JSONDecodeError as error:
        raise CliError(f"workflow file {path} is not valid JSON ({error})") from error
    if not isinstance(definition, dict) or "steps" not in definition:
        raise CliError(f"workflow file {path} is not a workflow definition (no 'steps'); see `sam-block run --help`")
    return definition


def bundled_workflow(name: str) -> dict:
    return json.loads(resources.files("sam_block").joinpath(f"workflows/{name}").read_text())


def parse_params(pairs: List[str]) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}``: JSON when it parses, else the string."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--param {pair!r} is not NAME=VALUE (e.g. --param threshold=0.5)")
        if value.startswith("@"):  # @file.json: the file's JSON
            path = Path(value[1:])
            try:
                params[name] = json.loads(path.read_text())
            except OSError:
                raise CliError(f"--param {name}: file {path} cannot be read (does it exist?)") from None
            except json.JSONDecodeError as error:
                raise CliError(f"--param {name}: file {path} is not valid JSON ({error})") from error
            continue
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


class UniqueStems:
    """Output file stems, one per input: a stem as is the first time, then ``_2``, ``_3`` ...
    (``a/x.png``, ``b/x.png`` → ``x``, ``x_2``). The one rule of ``run``, ``run --ray`` and ``track``.

    Example:
        >>> stem = UniqueStems()
        >>> [stem("x"), stem("y"), stem("x"), stem("x")]
        ['x', 'y', 'x_2', 'x_3']
    """

    def __init__(self) -> None:
        self._used: Dict[str, int] = {}

    def __call__(self, stem: str) -> str:
        self._used[stem] = self._used.get(stem, 0) + 1
        return stem if self._used[stem] == 1 else f"{stem}_{self._used[stem]}"


@dataclass
class Frame:
    """One image to run the workflow on."""

    name: str  # output file stem
    source: str  # where it came from, as shown to the user and written to coco.json
    image: np.ndarray  # BGR uint8
    frame_index: Optional[int] = None


def expand_inputs(paths: List[Path]) -> List[Tuple[Path, str]]:
    """Files to read, in order: ``(path, "image" | "video")``; folders give their images and videos, sorted."""
    import supervision as sv

    suffixes = sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    found = []
    for path in paths:
        if path.is_dir():
            children = sorted(sv.list_files_with_extensions(path, extensions=suffixes))
            if not children:
                raise CliError(f"folder {path} holds no images or videos ({', '.join(suffixes)})")
            found.extend((p, _kind(p)) for p in children)
        elif path.is_file():
            found.append((path, _kind(path)))
        else:
            raise CliError(f"input {path} does not exist")
    return found


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def count_frames(inputs: List[Tuple[Path, str]], every: int) -> Optional[int]:
    """How many frames `iter_frames` will yield, or None when a video does not say how long it is."""
    import supervision as sv

    total = 0
    for path, kind in inputs:
        if kind == "image":
            total += 1
            continue
        try:
            frames = sv.VideoInfo.from_video_path(str(path)).total_frames or 0
        except Exception:  # not a video OpenCV opens: iter_frames says so
            return None
        if frames <= 0:
            return None
        total += (frames + every - 1) // every
    return total


def iter_frames(inputs: List[Tuple[Path, str]], every: int) -> Iterator[Frame]:
    """Images as they are; videos frame by frame, keeping every `every`-th frame."""
    import cv2
    import supervision as sv

    unique = UniqueStems()
    for path, kind in inputs:
        if kind == "image":
            yield Frame(unique(path.stem), str(path), load_image(path))
            continue
        capture = cv2.VideoCapture(str(path))
        readable = capture.isOpened()
        capture.release()
        if not readable:
            raise CliError(f"{path} is not a video OpenCV can read")
        stem, produced = unique(path.stem), 0
        for produced, image in enumerate(sv.get_video_frames_generator(str(path), stride=every), start=1):
            index = (produced - 1) * every
            yield Frame(f"{stem}_f{index:06d}", f"{path}#frame={index}", image, frame_index=index)
        if produced == 0:
            raise CliError(f"{path} is not a video OpenCV can read (no frames decoded)")
