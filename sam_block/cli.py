"""`sam-block`: run SAM 2 workflows on images and videos from the shell, offline.

Every command goes through inference's real Workflows engine with the sam_block
plugin enabled; the model runs in this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_INPUT_TYPES = {"WorkflowImage", "InferenceImage"}
COCO_FILE = "coco.json"

EXAMPLES = """examples:
  sam-block demo
  sam-block segment photo.jpg --boxes boxes.json --out out/
  sam-block run example_workflows/f_segment_everything.json photos/ --out out/ --param points_per_side=16
  sam-block download hiera_tiny
  sam-block describe > manifest.json"""

BOXES_HELP = """boxes.json holds inference's prediction format ({"predictions": [{"x", "y", "width", "height", "class", ...}]})
or a plain list: [{"x1": 10, "y1": 20, "x2": 110, "y2": 90, "class_name": "cat"}, ...]"""

SEGMENT_EXAMPLES = f"""examples:
  sam-block segment photo.jpg --boxes boxes.json --out out/
  sam-block segment example_workflows/data/scene.jpg --boxes example_workflows/data/scene_boxes.json --out out/ --version hiera_small
{BOXES_HELP}"""

RUN_EXAMPLES = """examples:
  sam-block run example_workflows/f_segment_everything.json example_workflows/data/scene.jpg --out out/
  sam-block run my_workflow.json photos/ clip.mp4 --every 10 --out out/ --param threshold=0.5 --param classes='["cat"]'
  sam-block run example_workflows/b_template_matching_to_mask_visualization.json scene.jpg --param template=patch.png --out out/
  sam-block run example_workflows/a_boxes_input.json scene.jpg --param boxes=@boxes_per_image.json --param version=demo --out out/

The first WorkflowImage input of the workflow receives each image (or video frame).
--param values are parsed as JSON when they can be (0.5, true, ["a"]), else kept as
strings; @FILE reads the JSON of FILE; a --param naming another image input may be
an image file path.
Per image it writes NAME.png (every detection output drawn: masks, boxes, labels),
NAME.json (the outputs as the engine serializes them) and, for image outputs,
NAME.OUTPUT.png; once per run coco.json (instance masks as RLE, COCO format)."""

DOWNLOAD_EXAMPLES = """examples:
  sam-block download                  # the default, hiera_tiny
  sam-block download hiera_small hiera_large
  SAM_BLOCK_CHECKPOINT_DIR=/models sam-block download --all

Files go to $SAM_BLOCK_CHECKPOINT_DIR (default ~/.cache/sam_block), are fetched from
Meta (or $SAM_BLOCK_CHECKPOINT_BASE_URL, a mirror with the same file names) into a
temporary file and renamed into place only when complete."""

DESCRIBE_EXAMPLES = """examples:
  sam-block describe
  sam-block describe > sam_block_manifest.json"""

DEMO_EXAMPLES = """examples:
  sam-block demo
  sam-block demo --out /tmp/demo --seed 3

Draws a scene of shapes, gives the boxes of its shapes (standing in for a detector)
and the scene to the bundled workflow with SAM 2 version `demo` (a toy model shipped
with sam_block, trained on such scenes), and writes demo_scene.png (the input),
demo_scene.annotated.png (masks, boxes, labels), demo_scene.json and coco.json.
Needs no network and no download."""


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


# --------------------------------------------------------------------------- inputs


def load_boxes(path: Path):
    """Read boxes from inference's prediction JSON or a plain list of corner dicts."""
    import supervision as sv

    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"boxes file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise CliError(f"boxes file {path} is not valid JSON ({error})") from None
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
        raise CliError(f"boxes file {path}: a box is malformed ({type(error).__name__}: {error}); " f"see `sam-block segment --help`") from None
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
        raise CliError(f"workflow file {path} is not valid JSON ({error})") from None
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
                raise CliError(f"--param {name}: file {path} is not valid JSON ({error})") from None
            continue
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


@dataclass
class Frame:
    """One image to run the workflow on."""

    name: str  # output file stem
    source: str  # where it came from, as shown to the user and written to coco.json
    image: np.ndarray  # BGR uint8
    frame_index: Optional[int] = None


def expand_inputs(paths: List[Path]) -> List[Tuple[Path, str]]:
    """Files to read, in order: ``(path, "image" | "video")``; folders give their images and videos, sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            children = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not children:
                raise CliError(f"folder {path} holds no images or videos ({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
            found.extend((p, "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image") for p in children)
        elif path.is_file():
            found.append((path, "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"))
        else:
            raise CliError(f"input {path} does not exist")
    return found


def count_frames(inputs: List[Tuple[Path, str]], every: int) -> Optional[int]:
    import cv2

    total = 0
    for path, kind in inputs:
        if kind == "image":
            total += 1
            continue
        capture = cv2.VideoCapture(str(path))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        capture.release()
        if frames <= 0:
            return None
        total += (frames + every - 1) // every
    return total


def iter_frames(inputs: List[Tuple[Path, str]], every: int) -> Iterator[Frame]:
    """Images as they are; videos frame by frame, keeping every `every`-th frame."""
    import cv2

    used: Dict[str, int] = {}

    def unique(stem: str) -> str:
        used[stem] = used.get(stem, 0) + 1
        return stem if used[stem] == 1 else f"{stem}_{used[stem]}"

    for path, kind in inputs:
        if kind == "image":
            yield Frame(unique(path.stem), str(path), load_image(path))
            continue
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise CliError(f"{path} is not a video OpenCV can read")
        stem, index, produced = unique(path.stem), 0, 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    produced += 1
                    yield Frame(f"{stem}_f{index:06d}", f"{path}#frame={index}", image, frame_index=index)
                index += 1
        finally:
            capture.release()
        if produced == 0:
            raise CliError(f"{path} is not a video OpenCV can read (no frames decoded)")


# --------------------------------------------------------------------------- engine


def enable_plugin() -> None:
    plugins = [p for p in os.environ.get("WORKFLOWS_PLUGINS", "").split(",") if p]
    os.environ["WORKFLOWS_PLUGINS"] = ",".join(dict.fromkeys([*plugins, "sam_block"]))


def init_engine(definition: dict, init_parameters: Optional[dict] = None):
    enable_plugin()
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    try:
        return ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters or {})
    except Exception as error:
        raise CliError(f"the workflow does not compile: {_root_message(error)}") from None


def image_inputs(definition: dict) -> List[str]:
    return [i["name"] for i in definition.get("inputs", []) if isinstance(i, dict) and i.get("type") in IMAGE_INPUT_TYPES]


def _root_message(error: BaseException) -> str:
    while True:
        inner = getattr(error, "inner_error", None) or error.__cause__
        if inner is None or inner is error:
            message = " ".join(str(error).split())
            return message or type(error).__name__
        error = inner


# --------------------------------------------------------------------------- outputs


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
    from inference.core.workflows.execution_engine.entities.base import WorkflowImageData

    if isinstance(value, WorkflowImageData):
        yield prefix, value.numpy_image
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from find_images(inner, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from find_images(inner, f"{prefix}[{index}]")


def annotate(image: np.ndarray, detections) -> np.ndarray:
    """Masks, boxes and labels drawn with supervision's annotators (BGR in, BGR out)."""
    import supervision as sv

    if len(detections) == 0:
        return image.copy()
    names = detections.data.get("class_name")
    if names is None:
        names = ["" if c is None else str(c) for c in (detections.class_id if detections.class_id is not None else [None] * len(detections))]
    scores = detections.confidence if detections.confidence is not None else [None] * len(detections)
    labels = [f"{name} {score:.2f}".strip() if score is not None else str(name) for name, score in zip(names, scores)]
    color_lookup = sv.ColorLookup.CLASS if detections.class_id is not None else sv.ColorLookup.INDEX
    scene = image.copy()
    if detections.mask is not None:
        scene = sv.MaskAnnotator(opacity=0.45, color_lookup=color_lookup).annotate(scene, detections)
    scene = sv.BoxAnnotator(thickness=2, color_lookup=color_lookup).annotate(scene, detections)
    return sv.LabelAnnotator(text_scale=0.5, color_lookup=color_lookup).annotate(scene, detections, labels=labels)


class CocoWriter:
    """Collects instance masks of a run into one COCO instance-segmentation file."""

    def __init__(self) -> None:
        self.images: List[dict] = []
        self.annotations: List[dict] = []
        self.categories: Dict[str, int] = {}

    def add(self, frame: Frame, detections: List[Tuple[str, Any]]) -> None:
        from pycocotools import mask as mask_utils

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
            for i in range(len(dets)):
                name = str(names[i]) if names is not None else str(dets.class_id[i] if dets.class_id is not None else "object")
                category = self.categories.setdefault(name, len(self.categories) + 1)
                rle = mask_utils.encode(np.asfortranarray(dets.mask[i].astype(np.uint8)))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotation = {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
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

    from inference.core.workflows.core_steps.common.serializers import serialize_wildcard_kind

    out.mkdir(parents=True, exist_ok=True)
    coco, summary = CocoWriter(), RunSummary()
    with tqdm(total=total, unit="image", desc="sam-block", disable=None if progress is None else not progress, file=sys.stderr) as bar:
        for frame in frames:
            try:
                result = engine.run(runtime_parameters={**params, image_input: frame.image})[0]
            except CliError:
                raise
            except Exception as error:  # the engine wraps our errors; show the root cause in one line
                raise CliError(f"{frame.source}: the workflow failed: {_root_message(error)}") from None
            found = [d for name, value in result.items() for d in find_detections(value, name)]
            scene = frame.image
            for _, detections in found:
                if _same_size(detections, frame.image):
                    scene = annotate(scene, detections)
            png, js = out / f"{frame.name}{annotated_suffix}.png", out / f"{frame.name}.json"
            cv2.imwrite(str(png), scene)
            serialized = serialize_wildcard_kind(result[json_output]) if json_output else {name: serialize_wildcard_kind(value) for name, value in result.items()}
            js.write_text(json.dumps(serialized, indent=2, default=_json_default))
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


def _json_default(value: Any) -> Any:
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


# --------------------------------------------------------------------------- commands


def cmd_run(args) -> int:
    if args.every < 1:
        raise CliError(f"--every must be 1 or more (got {args.every})")
    definition = load_workflow(args.workflow)
    names = image_inputs(definition)
    if not names:
        raise CliError(f"workflow {args.workflow} has no WorkflowImage input to give the images to")
    params = parse_params(args.param or [])
    if names[0] in params:
        raise CliError(f"--param {names[0]} names the image input, which receives INPUT; remove it")
    for name in names[1:]:  # other image inputs: an image file path is read
        if isinstance(params.get(name), str) and Path(params[name]).is_file():
            params[name] = load_image(Path(params[name]))
    inputs = expand_inputs(args.inputs)
    engine = init_engine(definition)
    summary = run_frames(engine, names[0], iter_frames(inputs, args.every), args.out, params, total=count_frames(inputs, args.every), progress=args.progress)
    print(f"{summary.frames} image(s), {summary.masks} mask(s); COCO file: {summary.coco}")
    return 0


def cmd_segment(args) -> int:
    boxes = load_boxes(args.boxes)
    inputs = expand_inputs(args.images)
    engine = init_engine(bundled_workflow("boxes_to_masks.json"))
    params = {"boxes": [boxes], "version": args.version, "threshold": args.threshold, "multimask_output": not args.single_mask}
    summary = run_frames(engine, "image", iter_frames(inputs, 1), args.out, params, total=count_frames(inputs, 1), progress=args.progress, json_output="predictions")
    print(f"{summary.frames} image(s), {summary.masks} mask(s); COCO file: {summary.coco}")
    return 0


def cmd_download(args) -> int:
    from sam_block.errors import SamBlockError
    from sam_block.runtime.checkpoints import checkpoint_path, resolve_checkpoint
    from sam_block.runtime.variants import DEFAULT_VERSION, OFFICIAL_VERSIONS, get_variant

    versions = list(OFFICIAL_VERSIONS) if args.all else (args.versions or [DEFAULT_VERSION])
    variants = [get_variant(v) for v in versions]  # unknown names fail before any download
    for variant in variants:
        path = checkpoint_path(variant)
        if variant.bundled:
            if not path.is_file():
                raise CliError(f"the {variant.name!r} checkpoint should ship with sam_block at {path} but is missing; reinstall sam_block")
            print(f"{variant.name}: bundled with sam_block at {path}, nothing to download")
            continue
        if path.is_file():
            print(f"{variant.name}: already present at {path}")
            continue
        try:
            resolve_checkpoint(variant, progress=args.progress is not False)
        except SamBlockError as error:
            raise CliError(str(error)) from None
        print(f"{variant.name}: downloaded to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_describe(args) -> int:
    from sam_block.manifests import describe_blocks

    print(json.dumps(describe_blocks(), indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def cmd_demo(args) -> int:
    import cv2
    import supervision as sv

    from sam_block.demo.scenes import make_scene

    scene = make_scene(args.seed)
    if not len(scene.masks):
        raise CliError(f"scene {args.seed} has no shapes to segment; try another --seed")
    # the toy model sees 256 x 256; the picture is shown twice as large
    image = cv2.resize(np.ascontiguousarray(scene.image[..., ::-1]), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    truth = np.repeat(np.repeat(scene.masks, 2, axis=1), 2, axis=2)
    kinds = sorted(set(scene.kinds))
    boxes = sv.Detections(
        xyxy=scene.boxes.astype(float) * 2,
        class_id=np.array([kinds.index(k) for k in scene.kinds]),
        confidence=np.ones(len(scene.kinds)),
        data={"class_name": np.array(scene.kinds), "detection_id": np.array([f"shape-{i}" for i in range(len(scene.kinds))])},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "demo_scene.png"
    cv2.imwrite(str(source), image)
    engine = init_engine(bundled_workflow("boxes_to_masks.json"))
    params = {"boxes": [boxes], "version": "demo", "threshold": 0.0, "multimask_output": True}
    frame = Frame("demo_scene", str(source), image)
    summary = run_frames(engine, "image", iter([frame]), args.out, params, total=1, annotated_suffix=".annotated", progress=False, json_output="predictions")
    predictions = json.loads((args.out / "demo_scene.json").read_text())["predictions"]
    ious = _match_ious(truth, summary, args.out)
    print(f"segmented {len(predictions)} shape(s) of a generated scene with the toy `demo` model (mean IoU vs ground truth {np.mean(ious):.3f})")
    print(f"input:     {source}")
    print(f"annotated: {args.out / 'demo_scene.annotated.png'}")
    print(f"json:      {args.out / 'demo_scene.json'}")
    print(f"coco:      {summary.coco}")
    return 0


def _match_ious(truth: np.ndarray, summary: RunSummary, out: Path) -> List[float]:
    """IoU of each ground-truth shape with its mask in coco.json (matched through the RLEs)."""
    from pycocotools import mask as mask_utils

    annotations = json.loads(summary.coco.read_text())["annotations"]
    predicted = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).astype(bool) for a in annotations]
    ious = []
    for gt in truth:
        best = max(((gt & p).sum() / max(1, (gt | p).sum()) for p in predicted), default=0.0)
        ious.append(float(best))
    return ious


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="sam-block", description=__doc__, epilog=EXAMPLES, formatter_class=formatter)
    parser.add_argument("--verbose", action="store_true", help="show the engine's own logs and warnings")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def progress_flags(command):
        group = command.add_mutually_exclusive_group()
        group.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show the progress bar")
        group.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar (default: only on a terminal)")

    run = commands.add_parser(
        "run",
        help="run any workflow definition on images, folders and videos",
        description="Run WORKFLOW.json through the Workflows engine (sam_block enabled) on every image, "
        "every image and video of a folder, and every N-th frame of a video.",
        epilog=RUN_EXAMPLES,
        formatter_class=formatter,
    )
    run.add_argument("workflow", type=Path, metavar="WORKFLOW.json")
    run.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image, video or folder")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--param", action="append", metavar="NAME=VALUE", help="a workflow input; repeatable")
    run.add_argument("--every", type=int, default=1, metavar="N", help="videos: run on every N-th frame (default 1)")
    progress_flags(run)
    run.set_defaults(handler=cmd_run)

    segment = commands.add_parser(
        "segment",
        help="turn boxes into masks on one or more images",
        description="Segment each box of BOXES.json on every image; writes an annotated PNG and the JSON predictions "
        "per image, and coco.json for the run.",
        epilog=SEGMENT_EXAMPLES,
        formatter_class=formatter,
    )
    segment.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image, video or folder")
    segment.add_argument("--boxes", type=Path, required=True, help="JSON file of boxes (see below)")
    segment.add_argument("--out", type=Path, required=True, help="output directory")
    segment.add_argument("--version", default="hiera_tiny", help="hiera_tiny (default), hiera_small, hiera_b_plus, hiera_large, or the toy demo")
    segment.add_argument("--threshold", type=float, default=0.0, help="drop masks scored below this (0–1)")
    segment.add_argument("--single-mask", action="store_true", help="use SAM's single-mask output")
    progress_flags(segment)
    segment.set_defaults(handler=cmd_segment)

    download = commands.add_parser(
        "download",
        help="fetch official SAM 2.1 checkpoints into the checkpoint directory",
        description="Download the official checkpoint of each VERSION (default hiera_tiny), atomically, with a progress bar.",
        epilog=DOWNLOAD_EXAMPLES,
        formatter_class=formatter,
    )
    download.add_argument("versions", nargs="*", metavar="VERSION", help="hiera_tiny, hiera_small, hiera_b_plus, hiera_large")
    download.add_argument("--all", action="store_true", help="all four official checkpoints")
    progress_flags(download)
    download.set_defaults(handler=cmd_download)

    describe = commands.add_parser(
        "describe",
        help="print the block manifest JSON (what no-code builders see)",
        description="Print {manifest file name: block description} as the engine's /workflows/blocks/describe serves it.",
        epilog=DESCRIBE_EXAMPLES,
        formatter_class=formatter,
    )
    describe.set_defaults(handler=cmd_describe)

    demo = commands.add_parser(
        "demo",
        help="segment a generated scene with the bundled toy model (offline)",
        description="Run the offline demo: a generated scene, its shapes' boxes, SAM 2 (toy `demo` model) → pictures and JSON.",
        epilog=DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.add_argument("--out", type=Path, default=Path("sam-block-demo"), help="output directory (default ./sam-block-demo)")
    demo.add_argument("--seed", type=int, default=0, help="which scene to draw (default 0)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _quiet_dependencies() -> None:
    """Keep the terminal for our messages: inference's import-time warnings and the
    engine's tracebacks are noise to a CLI user (``--verbose`` shows them)."""
    import warnings

    warnings.filterwarnings("ignore")
    import inference.core.logger  # noqa: F401  (configures the loggers we then quieten)

    for name in ("inference", "roboflow_workflows"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_dependencies()
    from sam_block.errors import SamBlockError

    try:
        return args.handler(args)
    except (CliError, SamBlockError) as error:
        print(f"sam-block: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam-block: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
