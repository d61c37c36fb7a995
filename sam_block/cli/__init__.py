"""`sam-block`: run SAM 2 workflows on images and videos from the shell, offline.

One module per concern: ``inputs`` (boxes, images, workflows, frames), ``engine``
(the compiled workflow), ``drawing`` and ``coco`` (what is written), ``run`` (the
loop over frames), ``commands`` and ``demo`` (the sub-commands), ``app`` (parser
and :func:`main`).
"""

from sam_block.cli.app import build_parser, main
from sam_block.cli.coco import CocoWriter
from sam_block.cli.drawing import annotate, find_detections, find_images
from sam_block.cli.engine import image_inputs, init_engine
from sam_block.cli.errors import CliError, root_message
from sam_block.cli.inputs import (
    Frame,
    bundled_workflow,
    count_frames,
    expand_inputs,
    iter_frames,
    load_boxes,
    load_image,
    load_workflow,
    parse_params,
)
from sam_block.cli.run import RunSummary, run_frames
from sam_block.plugin import enable_plugin

__all__ = [
    "CliError",
    "CocoWriter",
    "Frame",
    "RunSummary",
    "annotate",
    "build_parser",
    "bundled_workflow",
    "count_frames",
    "enable_plugin",
    "expand_inputs",
    "find_detections",
    "find_images",
    "image_inputs",
    "init_engine",
    "iter_frames",
    "load_boxes",
    "load_image",
    "load_workflow",
    "main",
    "parse_params",
    "root_message",
    "run_frames",
]
