"""The `sam-block` parser and entry point: errors are one line, ``--debug`` adds the traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from sam_block import __version__
from sam_block.arguments import OneLineErrorParser, add_precision_argument, apply_precision
from sam_block.cli.commands import cmd_describe, cmd_download, cmd_run, cmd_segment
from sam_block.cli.demo import cmd_demo
from sam_block.cli.errors import CliError, root_message
from sam_block.cli.models import cmd_models
from sam_block.cli.track import add_track_parser
from sam_block.runtime.variants import versions_help

DESCRIPTION = """`sam-block`: run SAM 2 workflows on images and videos from the shell, offline.

Every command goes through inference's real Workflows engine with the sam_block
plugin enabled; the model runs in this process."""

EXAMPLES = """examples:
  sam-block demo
  sam-block segment photo.jpg --boxes boxes.json --out out/
  sam-block run example_workflows/f_segment_everything.json photos/ --out out/ --param points_per_side=16
  sam-block track clip.mp4 --boxes first_frame_boxes.json --model demo --out out/
  sam-block download hiera_tiny
  sam-block describe > manifest.json
  sam-block serve --port 9001"""

BOXES_HELP = """boxes.json holds inference's prediction format ({"predictions": [{"x", "y", "width", "height", "class", ...}]})
or a plain list: [{"x1": 10, "y1": 20, "x2": 110, "y2": 90, "class_name": "cat"}, ...]"""

SEGMENT_EXAMPLES = f"""examples:
  sam-block segment photo.jpg --boxes boxes.json --out out/
  sam-block segment example_workflows/data/scene.jpg --boxes example_workflows/data/scene_boxes.json --out out/ --model hiera_small
{BOXES_HELP}"""

RUN_EXAMPLES = """examples:
  sam-block run example_workflows/f_segment_everything.json example_workflows/data/scene.jpg --out out/
  sam-block run example_workflows/f_segment_everything.json photos/ clip.mp4 --every 10 --out out/ --param threshold=0.5
  sam-block run example_workflows/b_template_matching_to_mask_visualization.json scene.jpg --param template=patch.png --out out/
  sam-block run example_workflows/a_boxes_input.json example_workflows/data/scene.jpg --param boxes=@example_workflows/data/scene_boxes.json --param version=demo --out out/
  sam-block run example_workflows/a_boxes_input.json example_workflows/data/ --per-image example_workflows/data/per_image_boxes.json --param version=demo --out out/
  sam-block run example_workflows/f_segment_everything.json photos/ --out out/ --param version=demo --ray --workers 2

The first WorkflowImage input of the workflow receives each image (or video frame).
--param values are parsed as JSON when they can be (0.5, true, ["a"]), else kept as
strings; @FILE reads the JSON of FILE; a --param naming another image input may be
an image file path.
Inference's model blocks (e.g. a Roboflow detector step) get a model manager and the
API key (--api-key KEY, else $ROBOFLOW_API_KEY); their models need network access.
Per image it writes NAME.png (every detection output drawn: masks, boxes, labels),
NAME.json (the outputs as the engine serializes them, except that masks are exact:
COCO RLE in `rle_mask` instead of a polygon) and, for image outputs,
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

  sam-block demo --video
  sam-block demo --video --out /tmp/demo --seed 3 --frames 90

--video generates a clip of shapes moving, turning, passing each other and leaving,
gives the first frame's boxes to the video step (sam_block/segment_anything_2_video@v1,
version `demo`) and writes input/demo_clip.mp4 (the input), demo_clip.mp4 (masks,
`#id class` labels, traces), demo_strip.png (six frames side by side), demo_clip.jsonl
and demo_clip.mot.txt, and prints the mean mask IoU against the clip's ground truth.
Needs no network and no download."""


SERVE_EXAMPLES = """examples:
  sam-block serve
  sam-block serve --port 9001 --save-dir annotations/
  sam-block serve --host 0.0.0.0 --token --allow-host my-desktop.lan

Prints the address, each security decision and the click-to-segment page's URL, then
serves until Ctrl-C. Needs inference's HTTP packages: pip install "sam_block[serve]"."""


def known_version(value: str) -> str:
    """``--model`` checked while parsing: an unknown version fails in a second, before
    inference is even imported."""
    from sam_block.errors import SamBlockError
    from sam_block.runtime.variants import get_variant

    try:
        get_variant(value)
    except SamBlockError as error:  # unknown, or the registry file is broken
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    return value


def add_model_flags(command: argparse.ArgumentParser, help: str) -> None:
    """``--model NAME``: the SAM 2 version. ``--version NAME``, its old spelling, still works
    with a deprecation warning (see :func:`resolve_model_flag`); hidden from ``--help`` because
    ``sam-block --version`` is the package's version."""
    command.add_argument("--model", default=None, type=known_version, metavar="NAME", help=help)
    command.add_argument(
        "--version", dest="deprecated_version", default=None, type=known_version, metavar="NAME", help=argparse.SUPPRESS
    )


def resolve_model_flag(args: argparse.Namespace) -> None:
    """The old ``COMMAND --version NAME`` becomes ``--model NAME``, saying so on stderr."""
    old = getattr(args, "deprecated_version", None)
    if old is None:
        return
    if args.model is not None and args.model != old:
        raise CliError(
            f"--model {args.model} and --version {old} disagree; give only --model (--version is its deprecated spelling)"
        )
    print(
        f"sam-block: warning: `{args.command} --version {old}` is deprecated and will be removed: use `--model {old}` "
        "(`sam-block --version` prints the package version)",
        file=sys.stderr,
    )
    args.model = old


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = OneLineErrorParser(prog="sam-block", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"sam-block {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show the engine's own logs and warnings")
    parser.add_argument("--debug", action="store_true", help="on an error, also print the full traceback")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def progress_flags(command):
        group = command.add_mutually_exclusive_group()
        group.add_argument(
            "--progress", dest="progress", action="store_true", default=None, help="always show the progress bar"
        )
        group.add_argument(
            "--no-progress",
            dest="progress",
            action="store_false",
            help="never show the progress bar (default: only on a terminal)",
        )

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
    run.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,
        help="Roboflow API key for inference's model blocks, e.g. a Roboflow detector (default: $ROBOFLOW_API_KEY)",
    )
    add_precision_argument(run)
    progress_flags(run)
    from sam_block.cli.batch import add_ray_arguments  # here: cli/batch.py imports the cli's other modules

    add_ray_arguments(run)
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
    add_model_flags(segment, versions_help())
    segment.add_argument("--threshold", type=float, default=0.0, help="drop masks scored below this (0–1)")
    segment.add_argument("--single-mask", action="store_true", help="use SAM's single-mask output")
    add_precision_argument(segment)
    progress_flags(segment)
    segment.set_defaults(handler=cmd_segment)

    download = commands.add_parser(
        "download",
        help="fetch official SAM 2.1 checkpoints into the checkpoint directory",
        description="Download the official checkpoint of each VERSION (default hiera_tiny), atomically; a progress bar shows when stderr is a terminal (--progress, --no-progress force it).",
        epilog=DOWNLOAD_EXAMPLES,
        formatter_class=formatter,
    )
    download.add_argument(
        "versions", nargs="*", metavar="VERSION", help="hiera_tiny, hiera_small, hiera_b_plus, hiera_large"
    )
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

    add_precision_argument(add_track_parser(commands, formatter, progress_flags, add_model_flags))

    models = commands.add_parser(
        "models",
        help="list every SAM 2 version: config, file, where it comes from, present or not",
        description="List the versions a workflow may name (built in, and registered in $SAM_BLOCK_MODELS) with "
        "their config, where their checkpoint comes from (bundled, checkpoint dir, HF cache, registry), its file "
        "and whether it is on this machine. Reads no network.",
        formatter_class=formatter,
    )
    models.add_argument("--json", action="store_true", help="print the rows as JSON")
    models.set_defaults(handler=cmd_models)

    demo = commands.add_parser(
        "demo",
        help="segment a generated scene with the bundled toy model (offline)",
        description="Run the offline demo: a generated scene, its shapes' boxes, SAM 2 (toy `demo` model) → pictures and JSON.",
        epilog=DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.add_argument(
        "--out", type=Path, default=Path("sam-block-demo"), help="output directory (default ./sam-block-demo)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        help="which scene (default 0) or clip (default 10: three shapes, one leaving) to draw",
    )
    demo.add_argument(
        "--video", action="store_true", help="track the shapes of a generated clip instead (mp4, PNG strip, IoU)"
    )
    demo.add_argument("--frames", type=int, default=60, help="with --video: clip length (default 60)")
    add_precision_argument(demo)
    demo.set_defaults(handler=cmd_demo)

    from sam_block.server.app import add_serve_arguments  # the options of `python -m sam_block.serve`

    serve = commands.add_parser(
        "serve",
        help="serve inference's HTTP API with the plugin, the SAM 2 routes and the click-to-segment page",
        description="Start inference's own HTTP API (the app of its Docker images) with sam_block enabled, our "
        "/sam2/* routes and the click-to-segment page, on 127.0.0.1 unless --host says otherwise; the same "
        "server, options and safe defaults as `python -m sam_block.serve` (see the README's Security section).",
        epilog=SERVE_EXAMPLES,
        formatter_class=formatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from sam_block.server.app import serve

    return serve(args, name="sam-block serve")


def _quiet_dependencies() -> None:
    """Keep the terminal for our messages: inference's import-time warnings and the
    engine's tracebacks are noise to a CLI user (``--verbose`` shows them)."""
    import warnings

    warnings.filterwarnings("ignore")
    # transformers (imported with inference's model registry, for detector workflows) logs its
    # deprecation notes through its own handler, at the level it reads from here on first import
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import inference.core.logger  # noqa: F401  (configures the loggers we then quieten)

    for name in ("inference", "roboflow_workflows"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # bitsandbytes (also imported with the model registry) warns on CPU-only machines that an
    # optional kernel package is missing; it changes nothing for SAM or for the detector blocks
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    apply_precision(args)
    if args.command == "serve":  # logs, errors and exit codes exactly as `python -m sam_block.serve`
        return args.handler(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_dependencies()
    from sam_block.errors import SamBlockError

    try:
        resolve_model_flag(args)
        return args.handler(args)
    except (CliError, SamBlockError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"sam-block: error: {root_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam-block: interrupted", file=sys.stderr)
        return 130
