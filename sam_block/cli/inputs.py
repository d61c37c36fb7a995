"""What the commands read: boxes, images, workflows, ``--param`` values, and the frames of images, folders and videos."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from sam_block.cli.errors import CliError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


BOX_SHAPES = (
    'inference\'s predictions {"predictions": [{"x": 60, "y": 50, "width": 100, "height": 80, "class": "cat"}]} '
    '(centre, size; "image": {"width", "height"} optional) or a plain list [{"x1": 10, "y1": 10, "x2": 110, "y2": 90, "class_name": "cat"}]'
)
DETECTION_KINDS = {"object_detection_prediction", "instance_segmentation_prediction", "keypoint_detection_prediction"}
BATCH_INPUT_TYPES = {"WorkflowImage", "InferenceImage", "WorkflowBatchInput", "WorkflowVideoMetadata"}


def load_boxes(path: Path):
    """Read one image's boxes (``sv.Detections``) from a JSON file in any format of :data:`BOX_SHAPES`."""
    import supervision as sv

    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"boxes file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise CliError(f"boxes file {path} is not valid JSON ({error})") from error
    detections = parse_boxes(payload, f"boxes file {path}")
    if isinstance(detections, dict):  # inference's full format: supervision reads it (polygons too)
        detections = _from_full_inference_format(detections, f"boxes file {path}")
    assert isinstance(detections, sv.Detections)
    return detections


def parse_boxes(payload: Any, where: str):
    """One image's boxes from JSON: ``sv.Detections``, or `payload` itself when it is already inference's
    complete format (``{"image": {"width", "height"}, "predictions": [{"x", "y", "width", "height",
    "class", "class_id", "confidence", ...}]}``, which the engine reads as is).

    `where` starts the error message (``"--param boxes"``, ``"boxes file b.json"``): a wrong shape names
    the missing keys and shows the expected shapes.

    Example:
        >>> parse_boxes([{"x1": 10, "y1": 20, "x2": 50, "y2": 60, "class_name": "cat"}], "boxes").xyxy.tolist()
        [[10.0, 20.0, 50.0, 60.0]]
        >>> parse_boxes({"predictions": [{"x": 30, "y": 40, "width": 40, "height": 40}]}, "boxes").xyxy.tolist()
        [[10.0, 20.0, 50.0, 60.0]]
        >>> parse_boxes([{"x1": 10, "y1": 20}], "--param boxes")
        Traceback (most recent call last):
        ...
        sam_block.cli.errors.CliError: --param boxes: box 0 misses 'x2', 'y2'; expected inference's predictions ...
    """
    import supervision as sv

    if isinstance(payload, sv.Detections):
        return payload
    if isinstance(payload, dict):
        if "predictions" not in payload:
            raise CliError(
                f"{where}: an object of boxes needs 'predictions' (found {', '.join(map(repr, payload)) or 'no keys'}); expected {BOX_SHAPES}"
            )
        predictions = payload["predictions"]
        if not isinstance(predictions, list):
            raise CliError(
                f"{where}: 'predictions' must be a list of boxes (found {type(predictions).__name__}); expected {BOX_SHAPES}"
            )
        for index, box in enumerate(predictions):
            _require_keys(box, ("x", "y", "width", "height"), where, index)
        image = payload.get("image")
        if (
            isinstance(image, dict)
            and {"width", "height"} <= set(image)
            and all({"class", "class_id", "confidence"} <= set(b) for b in predictions)
        ):
            return payload  # complete: the engine's own deserializer reads it (polygons, keypoints too)
        rows = [
            (
                float(b["x"]) - float(b["width"]) / 2,
                float(b["y"]) - float(b["height"]) / 2,
                float(b["x"]) + float(b["width"]) / 2,
                float(b["y"]) + float(b["height"]) / 2,
            )
            for b in _numbers(predictions, where)
        ]
        return _detections(rows, predictions, "class", where)
    if isinstance(payload, list):
        if payload and all(isinstance(b, dict) and "predictions" in b for b in payload):
            raise CliError(
                f"{where}: a list of {len(payload)} prediction objects is a batch; one image's boxes are one object (or use --per-image for boxes per image)"
            )
        for index, box in enumerate(payload):
            _require_keys(box, ("x1", "y1", "x2", "y2"), where, index)
        rows = [tuple(float(b[k]) for k in ("x1", "y1", "x2", "y2")) for b in _numbers(payload, where)]
        return _detections(rows, payload, "class_name", where)
    raise CliError(
        f"{where}: boxes must be a list or an object with 'predictions' (found {type(payload).__name__}); expected {BOX_SHAPES}"
    )


def _require_keys(box: Any, keys, where: str, index: int) -> None:
    if not isinstance(box, dict):
        raise CliError(f"{where}: box {index} is {type(box).__name__}, not an object; expected {BOX_SHAPES}")
    missing = [k for k in keys if k not in box]
    if missing:
        raise CliError(f"{where}: box {index} misses {', '.join(map(repr, missing))}; expected {BOX_SHAPES}")


def _numbers(boxes: List[dict], where: str) -> List[dict]:
    """`boxes`, checked: every coordinate a number (NaN and infinities are the block's to skip)."""
    for index, box in enumerate(boxes):
        for key in ("x", "y", "width", "height", "x1", "y1", "x2", "y2"):
            value = box.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise CliError(
                        f"{where}: box {index}: {key} is {value!r}, not a number; expected {BOX_SHAPES}"
                    ) from None
    return boxes


def _detections(rows, boxes: List[dict], class_key: str, where: str):
    import supervision as sv

    if not rows:
        return sv.Detections.empty()
    names = [str(b.get(class_key, b.get("class", "foreground"))) for b in boxes]
    classes = {name: i for i, name in enumerate(dict.fromkeys(names))}
    try:
        detections = sv.Detections(
            xyxy=np.array(rows, dtype=float),
            class_id=np.array([int(b.get("class_id", classes[n])) for b, n in zip(boxes, names)]),
            confidence=np.array([float(b["confidence"]) for b in boxes])
            if all("confidence" in b for b in boxes)
            else None,
            data={"class_name": np.array(names)},
        )
    except (TypeError, ValueError) as error:
        raise CliError(f"{where}: a box is malformed ({error}); expected {BOX_SHAPES}") from error
    ids = [b.get("detection_id") for b in boxes]
    if all(ids):
        detections.data["detection_id"] = np.array(ids)
    return detections


def _from_full_inference_format(payload: dict, where: str):
    import supervision as sv

    try:
        detections = sv.Detections.from_inference(payload)
    except (KeyError, TypeError, ValueError) as error:
        raise CliError(
            f"{where}: a box is malformed ({type(error).__name__}: {error}); expected {BOX_SHAPES}"
        ) from error
    ids = [p.get("detection_id") for p in payload["predictions"]]
    if ids and all(ids):
        detections.data["detection_id"] = np.array(ids)
    return detections


def workflow_inputs(definition: dict) -> List[dict]:
    """The workflow's declared inputs (dicts with a name), in order."""
    return [i for i in definition.get("inputs", []) if isinstance(i, dict) and isinstance(i.get("name"), str)]


def _kinds(declared: dict) -> set:
    return {k.get("name") if isinstance(k, dict) else k for k in declared.get("kind", []) or []}


def describe_inputs(definition: dict) -> str:
    """``"image (the images), boxes (required), version (default 'hiera_tiny')"``: for error messages."""
    parts = []
    for index, declared in enumerate(workflow_inputs(definition)):
        name = declared["name"]
        if index == 0 and declared.get("type") in {"WorkflowImage", "InferenceImage"}:
            parts.append(f"{name} (the images)")
        elif declared.get("type") in BATCH_INPUT_TYPES:
            parts.append(f"{name} (required)")
        elif "default_value" in declared:
            parts.append(f"{name} (default {json.dumps(declared['default_value'])})")
        else:
            parts.append(name)
    return ", ".join(parts) or "none"


def check_param_names(definition: dict, names, where: str = "--param") -> None:
    """Every name must be an input of the workflow: one line naming the first that is not, and the inputs."""
    declared = {i["name"] for i in workflow_inputs(definition)}
    for name in names:
        if name not in declared:
            raise CliError(
                f"{where} {name}: the workflow has no input {name!r}; its inputs: {describe_inputs(definition)}"
            )


def missing_inputs(definition: dict, image_input: str, given) -> List[str]:
    """Required inputs (batch inputs: images, boxes, ...) other than `image_input` that `given` lacks."""
    return [
        i["name"]
        for i in workflow_inputs(definition)
        if i.get("type") in BATCH_INPUT_TYPES and i["name"] != image_input and i["name"] not in given
    ]


def require_inputs(definition: dict, image_input: str, given, image: str) -> None:
    """One image's inputs must include every required one: else a one-line :class:`CliError`
    naming the image, the input and how to give it (the run records it as that image's failure)."""
    missing = missing_inputs(definition, image_input, given)
    if missing:
        raise CliError(
            f"no {missing[0]!r} for {image}: --per-image has no {missing[0]!r} for it and no --param gives one"
        )


def how_to_pass(definition: dict, name: str) -> str:
    """How a user gives input `name` on the command line."""
    declared = next((i for i in workflow_inputs(definition) if i["name"] == name), {})
    if declared.get("type") in {"WorkflowImage", "InferenceImage"}:
        return f"--param {name}=IMAGE_FILE"
    if _kinds(declared) & DETECTION_KINDS:
        return f"--param {name}=@FILE (the same boxes on every image) or --per-image FILE (boxes per image); see `sam-block run --help`"
    return f"--param {name}=VALUE or --param {name}=@FILE"


def prepare_inputs(definition: dict, values: Dict[str, Any], where: str) -> Dict[str, Any]:
    """`values` with every box input (a detection kind) in a form the engine takes: any shape of
    :data:`BOX_SHAPES` (or a one-image batch of it, ``[...]``, as the engine's API takes it) becomes
    a batch of one image's boxes. Wrong shapes are one line naming the input, the keys, the shape."""
    prepared = dict(values)
    for declared in workflow_inputs(definition):
        name = declared["name"]
        if name not in values or not _kinds(declared) & DETECTION_KINDS:
            continue
        value = values[name]
        batch = declared.get("type") in BATCH_INPUT_TYPES
        if (
            batch
            and isinstance(value, list)
            and value
            and all(isinstance(v, (dict, list)) and not _is_corner_box(v) for v in value)
        ):
            if len(value) != 1:
                raise CliError(
                    f"{where} {name}: {len(value)} entries, but it holds one image's boxes; for boxes per image use --per-image FILE; expected {BOX_SHAPES}"
                )
            value = value[0]
        parsed = parse_boxes(value, f"{where} {name}")
        prepared[name] = [parsed] if batch else parsed
    return prepared


def workflow_params(definition: dict, pairs: List[str], image_names: List[str], receives: str) -> Dict[str, Any]:
    """The workflow's inputs from ``--param NAME=VALUE`` pairs, ready for the engine: every name checked
    against the workflow's inputs, another image input given as a file path read, box inputs in the
    engine's shape (:func:`prepare_inputs`). ``image_names[0]`` receives each image or frame (`receives`
    says which), so a ``--param`` cannot name it."""
    params = parse_params(pairs)
    if image_names[0] in params:
        raise CliError(f"--param {image_names[0]} names the image input, which receives {receives}; remove it")
    check_param_names(definition, params)
    for name in image_names[1:]:
        if isinstance(params.get(name), str) and Path(params[name]).is_file():
            params[name] = load_image(Path(params[name]))
    return prepare_inputs(definition, params, "--param")


def _is_corner_box(value: Any) -> bool:
    return isinstance(value, dict) and "predictions" not in value


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
    image: Optional[np.ndarray]  # BGR uint8; None when it could not be read (then `error` says why)
    frame_index: Optional[int] = None
    error: Optional[str] = None
    input_name: Optional[str] = None  # the output stem of the file it came from (a video's, for its frames)


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


def iter_frames(inputs: List[Tuple[Path, str]], every: int, keep_going: bool = False) -> Iterator[Frame]:
    """Images as they are; videos frame by frame, keeping every `every`-th frame.

    A file OpenCV cannot read raises :class:`CliError`; with `keep_going` it is yielded as a
    ``Frame`` without image whose ``error`` says why, and the files after it are still read.
    """
    import cv2
    import supervision as sv

    unique = UniqueStems()
    for path, kind in inputs:
        stem = unique(path.stem)
        try:
            if kind == "image":
                yield Frame(stem, str(path), load_image(path), input_name=stem)
                continue
            capture = cv2.VideoCapture(str(path))
            readable = capture.isOpened()
            capture.release()
            if not readable:
                raise CliError(f"{path} is not a video OpenCV can read")
            produced = 0
            for produced, image in enumerate(sv.get_video_frames_generator(str(path), stride=every), start=1):
                index = (produced - 1) * every
                yield Frame(f"{stem}_f{index:06d}", f"{path}#frame={index}", image, frame_index=index, input_name=stem)
            if produced == 0:
                raise CliError(f"{path} is not a video OpenCV can read (no frames decoded)")
        except CliError as error:
            if not keep_going:
                raise
            yield Frame(stem, str(path), None, error=str(error), input_name=stem)


def load_per_image(per_image: Any, image_input: str) -> Dict[str, Dict[str, Any]]:
    """The ``--per-image`` mapping ``{IMAGE: {INPUT: VALUE}}`` (IMAGE: file name or output stem),
    read from its JSON file (or given as a dict) and checked."""
    if not isinstance(per_image, dict):
        try:
            per_image = json.loads(Path(per_image).read_text())
        except OSError:
            raise CliError(f"--per-image file {per_image} cannot be read (does it exist?)") from None
        except ValueError as error:
            raise CliError(f"--per-image file {per_image} is not valid JSON ({error})") from None
    if not isinstance(per_image, dict) or not all(isinstance(v, dict) for v in per_image.values()):
        raise CliError('--per-image must map image names to their inputs: {"a.jpg": {"boxes": [...]}}')
    for key, own in per_image.items():
        if image_input in own:
            raise CliError(
                f"--per-image {key}: {image_input!r} is the image input, which receives the image itself; remove it"
            )
    return per_image


def match_per_image(per_image: Dict[str, Dict[str, Any]], files: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
    """Each file's own inputs: `files` are ``(file name, output stem)``; an entry keyed by the file
    name wins over one keyed by the stem; files without one get ``{}``. Names of `per_image` that
    match no file are logged (once, with an example)."""
    matched, found = set(), []
    for file_name, stem in files:
        key = file_name if file_name in per_image else stem if stem in per_image else None
        matched.add(key)
        found.append(per_image.get(key, {}) if key is not None else {})
    unknown = sorted(set(per_image) - matched)
    if unknown:
        logging.getLogger(__name__).warning(
            "--per-image: %d name(s) match no input image, e.g. %r", len(unknown), unknown[0]
        )
    return found
