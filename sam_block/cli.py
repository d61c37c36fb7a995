"""`sam-block`: segment images with SAM 2 through the real workflow engine, from the shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import List, Optional

import numpy as np

EXAMPLES = """examples:
  sam-block segment photo.jpg --boxes boxes.json --out out/
  sam-block segment example_workflows/data/scene.jpg --boxes example_workflows/data/scene_boxes.json --out out/
boxes.json holds inference's prediction format ({"predictions": [{"x", "y", "width", "height", "class", ...}]})
or a plain list: [{"x1": 10, "y1": 20, "x2": 110, "y2": 90, "class_name": "cat"}, ...]"""


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


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


def annotate(image: np.ndarray, detections) -> np.ndarray:
    """Masks, boxes and labels drawn with supervision's annotators (BGR in, BGR out)."""
    import supervision as sv

    labels = [f"{name} {conf:.2f}" for name, conf in zip(detections["class_name"], detections.confidence)] if len(detections) else []
    scene = sv.MaskAnnotator(opacity=0.45).annotate(image.copy(), detections)
    scene = sv.BoxAnnotator(thickness=2).annotate(scene, detections)
    return sv.LabelAnnotator(text_scale=0.5).annotate(scene, detections, labels=labels)


def cmd_segment(args) -> int:
    import cv2

    from inference.core.workflows.core_steps.common.serializers import serialize_wildcard_kind
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    os.environ["WORKFLOWS_PLUGINS"] = ",".join(dict.fromkeys([*filter(None, os.environ.get("WORKFLOWS_PLUGINS", "").split(",")), "sam_block"]))
    boxes = load_boxes(args.boxes)
    definition = json.loads(resources.files("sam_block").joinpath("workflows/boxes_to_masks.json").read_text())
    engine = ExecutionEngine.init(workflow_definition=definition, init_parameters={})
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = load_image(path)
        try:
            result = engine.run(
                runtime_parameters={
                    "image": image,
                    "boxes": [boxes],
                    "version": args.version,
                    "threshold": args.threshold,
                    "multimask_output": not args.single_mask,
                }
            )[0]["predictions"]
        except Exception as error:  # the engine wraps our errors; show the root cause in one line
            raise CliError(_root_message(error)) from None
        png, js = args.out / f"{path.stem}.png", args.out / f"{path.stem}.json"
        cv2.imwrite(str(png), annotate(image, result))
        js.write_text(json.dumps(serialize_wildcard_kind(result), indent=2))
        print(f"{path}: {len(result)} mask(s) → {png}, {js}")
    return 0


def _root_message(error: BaseException) -> str:
    while True:
        inner = getattr(error, "inner_error", None) or error.__cause__
        if inner is None or inner is error:
            return str(error)
        error = inner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam-block", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="show the engine's own logs and warnings")
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser(
        "segment",
        help="turn boxes into masks on one or more images",
        description="Segment each box of BOXES.json on every image; writes an annotated PNG and the JSON predictions per image.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    segment.add_argument("--boxes", type=Path, required=True, help="JSON file of boxes (see below)")
    segment.add_argument("--out", type=Path, required=True, help="output directory")
    segment.add_argument("--version", default="hiera_tiny", help="hiera_tiny (default), hiera_small, hiera_b_plus, hiera_large")
    segment.add_argument("--threshold", type=float, default=0.0, help="drop masks scored below this (0–1)")
    segment.add_argument("--single-mask", action="store_true", help="use SAM's single-mask output")
    segment.set_defaults(handler=cmd_segment)
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
    try:
        return args.handler(args)
    except CliError as error:
        print(f"sam-block: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
