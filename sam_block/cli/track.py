"""`sam-block track`: objects followed through videos by the video step, written as mp4, JSON lines and MOT.

Frames go through the real Workflows engine one at a time, in order, each with its video's
metadata (`video_identifier` = the video's path, `frame_number` = its index in the file),
so the step keeps one tracking session per video. The engine rather than inference's
`InferencePipeline`: on files the pipeline buys nothing (no live source to keep up with)
but threads and its own frame numbering, and a run must be reproducible frame for frame.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from sam_block.cli.errors import CliError, root_message
from sam_block.cli.inputs import VIDEO_SUFFIXES, UniqueStems, iter_frames, load_boxes, load_workflow, workflow_params
from sam_block.runtime.variants import versions_help

VIDEO_STEP = "sam_block/segment_anything_2_video@v1"
PROMPT_MODES = ("first_frame", "every_n_frames", "every_frame")


@dataclass
class TrackSummary:
    videos: int = 0
    frames: int = 0
    tracks: int = 0
    written: List[Path] = field(default_factory=list)


def load_frame_boxes(path: Path) -> Tuple[Dict[int, Any], bool]:
    """``({frame: sv.Detections}, per_frame)`` from a boxes file.

    A JSON document (inference's prediction format or a list of corner dicts, as for
    `segment`) holds the boxes of the first frame; JSON lines ``{"frame": N, "predictions":
    [...]}`` hold boxes per frame (frames not listed: the detector saw nothing).
    """
    import supervision as sv

    if not path.is_file():
        raise CliError(f"boxes file {path} does not exist")
    text = path.read_text()
    try:
        json.loads(text)
        return {0: load_boxes(path)}, False
    except json.JSONDecodeError:
        pass
    per_frame: Dict[int, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            frame = int(record["frame"])
            predictions = record["predictions"]
            if frame < 0:
                raise ValueError(f"frame {frame} is negative")
            boxes_only = [{k: v for k, v in p.items() if k != "points"} for p in predictions]  # boxes prompt
            payload = {"image": record.get("image") or {"width": 1, "height": 1}, "predictions": boxes_only}
            detections = sv.Detections.from_inference(payload) if predictions else sv.Detections.empty()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise CliError(
                f'boxes file {path}, line {number}: not a JSON line {{"frame": N, "predictions": [...]}} '
                f"({type(error).__name__}: {error}); see `sam-block track --help`"
            ) from error
        if frame in per_frame:
            raise CliError(f"boxes file {path}, line {number}: frame {frame} is listed twice")
        ids = [p.get("detection_id") for p in predictions]
        if predictions and all(ids):
            detections.data["detection_id"] = np.array(ids)
        per_frame[frame] = detections
    if not per_frame:
        raise CliError(f"boxes file {path} holds no boxes")
    return per_frame, True


def boxes_workflow(version: str, prompt_mode: str, prompt_interval: int) -> dict:
    """The workflow `--boxes` runs: boxes as an input, the video step, its predictions out."""
    return {
        "version": "1.0",
        "inputs": [
            {"type": "WorkflowImage", "name": "image"},
            {"type": "WorkflowBatchInput", "name": "boxes", "kind": ["object_detection_prediction"]},
        ],
        "steps": [
            {"type": VIDEO_STEP, "name": "tracker", "images": "$inputs.image", "boxes": "$inputs.boxes",
             "version": version, "prompt_mode": prompt_mode, "prompt_interval": prompt_interval},
        ],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.tracker.predictions"}],
    }  # fmt: skip


def tracked_detections(result: Dict[str, Any]):
    """The first output holding detections with tracker ids (the video step's)."""
    from sam_block.cli.drawing import find_detections

    for name, value in result.items():
        for _, detections in find_detections(value, name):
            if detections.tracker_id is not None:
                return detections
    return None


def mot_rows(frame_index: int, detections) -> List[str]:
    """MOTChallenge rows ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frames counted from 1)."""
    rows = []
    if detections is None:
        return rows
    confidence = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    for (x1, y1, x2, y2), track_id, score in zip(detections.xyxy, detections.tracker_id, confidence):
        rows.append(
            f"{frame_index + 1},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{float(score):.4f},-1,-1,-1"
        )
    return rows


class TrackDrawer:
    """Masks (filled at 0.6 opacity, outlined white on black), `#id class` labels kept inside the
    frame, and traces, coloured by track: readable at a glance in a playing video."""

    def __init__(self) -> None:
        import supervision as sv

        from sam_block.cli.drawing import label_annotator

        self.labels = label_annotator(sv.ColorLookup.TRACK)
        self.traces = sv.TraceAnnotator(color_lookup=sv.ColorLookup.TRACK, trace_length=60, thickness=3)

    def draw(self, image: np.ndarray, detections) -> np.ndarray:
        if detections is None or len(detections) == 0:
            return image.copy()
        names = detections.data.get("class_name", [""] * len(detections))
        labels = [f"#{int(t)} {name}".strip() for t, name in zip(detections.tracker_id, names)]
        import supervision as sv

        from sam_block.cli.drawing import draw_masks

        scene = (
            draw_masks(image.copy(), detections, sv.ColorLookup.TRACK, opacity=0.6)
            if detections.mask is not None
            else image.copy()
        )
        scene = self.traces.annotate(scene, detections)
        return self.labels.annotate(scene, detections, labels=labels)


def track_videos(
    engine,
    image_input: str,
    videos: List[Path],
    out: Path,
    params: Dict[str, Any],
    boxes: Optional[Dict[int, Any]] = None,
    every: int = 1,
    progress: Optional[bool] = None,
) -> TrackSummary:
    """Run `engine` on every `every`-th frame of each video; write NAME.mp4, NAME.jsonl, NAME.mot.txt.

    `boxes` (frame index → detections) feeds the workflow input ``boxes``; frames without
    an entry get no detections.
    """
    import supervision as sv
    from tqdm.auto import tqdm

    from roboflow_workflows.execution_engine.entities.base import VideoMetadata
    from sam_block.cli.run import json_default, serialize_output

    out.mkdir(parents=True, exist_ok=True)
    summary = TrackSummary()
    unique = UniqueStems()
    for path in videos:
        try:
            info = sv.VideoInfo.from_video_path(str(path))
        except Exception as error:  # supervision raises a bare Exception for what OpenCV cannot open
            raise CliError(f"{path} is not a video OpenCV can read") from error
        stem = unique(path.stem)
        mp4, jsonl, mot = out / f"{stem}.mp4", out / f"{stem}.jsonl", out / f"{stem}.mot.txt"
        fps = max(1, round((info.fps or 25) / every))
        target = sv.VideoInfo(width=info.width, height=info.height, fps=fps)
        total = (info.total_frames + every - 1) // every if info.total_frames else None
        drawer, ids = TrackDrawer(), set()
        with (
            sv.VideoSink(str(mp4), target) as sink,
            jsonl.open("w") as lines,
            mot.open("w") as mot_file,
            tqdm(
                total=total,
                unit="frame",
                desc=path.name,
                disable=None if progress is None else not progress,
                file=sys.stderr,
            ) as bar,
        ):
            for frame in iter_frames([(path, "video")], every):
                index, image = frame.frame_index, frame.image
                metadata = VideoMetadata(
                    video_identifier=str(path.resolve()),
                    frame_number=index,
                    frame_timestamp=datetime.now(timezone.utc),
                    fps=info.fps,
                )
                runtime = {**params, image_input: {"type": "numpy_object", "value": image, "video_metadata": metadata}}
                if boxes is not None:
                    runtime["boxes"] = [boxes.get(index, sv.Detections.empty())]
                try:
                    result = engine.run(runtime_parameters=runtime)[0]
                except Exception as error:  # the engine wraps our errors; show the root cause in one line
                    raise CliError(f"{path} frame {index}: the workflow failed: {root_message(error)}") from error
                tracked = tracked_detections(result)
                sink.write_frame(drawer.draw(image, tracked))
                serialized = {name: serialize_output(value) for name, value in result.items()}
                lines.write(json.dumps({"frame": index, **serialized}, default=json_default) + "\n")
                rows = mot_rows(index, tracked)
                mot_file.write("".join(row + "\n" for row in rows))
                if tracked is not None:
                    ids.update(int(t) for t in tracked.tracker_id)
                summary.frames += 1
                bar.update(1)
        summary.videos += 1
        summary.tracks += len(ids)
        summary.written += [mp4, jsonl, mot]
        print(f"{path}: {len(ids)} track(s) → {mp4}, {jsonl}, {mot}")
    return summary


TRACK_EXAMPLES = """examples:
  sam-block track clip.mp4 --boxes first_frame_boxes.json --out out/
  sam-block track clip.mp4 other.mp4 --boxes per_frame.jsonl --prompt-mode every_n_frames --prompt-interval 10 --out out/
  sam-block track clip.mp4 --workflow example_workflows/g_video_tracking.json --param boxes=@boxes.json --out out/
  sam-block track clip.mp4 --boxes boxes.json --model demo --every 2 --out out/
  sam-block track clip.mp4 --workflow example_workflows/h_template_matching_to_video_tracking.json --param template=patch.png --param version=demo --out out/

--boxes FILE: the first frame's boxes (as for `sam-block segment`: inference's prediction
JSON or a list of {"x1", "y1", "x2", "y2", "class_name"}), tracked with --prompt-mode
first_frame; or JSON lines {"frame": N, "predictions": [...]}, one per frame that has
boxes (inference's prediction format; default --prompt-mode every_frame).
--workflow FILE: any workflow with a sam_block/segment_anything_2_video@v1 step (e.g. a
detector feeding it); its first WorkflowImage input receives the frames.

Per video it writes NAME.mp4 (masks, `#id class` labels, traces), NAME.jsonl (per frame:
{"frame": N, OUTPUT: the engine's JSON with exact masks as COCO RLE in `rle_mask`}) and
NAME.mot.txt (MOTChallenge rows frame,id,x,y,w,h,conf,-1,-1,-1; frames counted from 1)."""


def add_track_parser(commands, formatter, progress_flags, add_model_flags):
    track = commands.add_parser(
        "track",
        help="follow objects through videos with the video step (mp4, JSON lines, MOT)",
        description="Track the objects of --boxes (or of a workflow's detector) through every frame of each VIDEO "
        "with sam_block/segment_anything_2_video@v1.",
        epilog=TRACK_EXAMPLES,
        formatter_class=formatter,
    )
    track.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video file(s)")
    source = track.add_mutually_exclusive_group(required=True)
    source.add_argument("--boxes", type=Path, help="boxes of the first frame (JSON) or per frame (JSON lines)")
    source.add_argument("--workflow", type=Path, metavar="WORKFLOW.json", help="a workflow with the video step")
    track.add_argument("--out", type=Path, required=True, help="output directory")
    add_model_flags(track, f"with --boxes: the SAM 2 version, {versions_help()}")
    track.add_argument(
        "--prompt-mode",
        choices=PROMPT_MODES,
        default=None,
        help="with --boxes: when boxes prompt the tracker (default first_frame for a JSON file, every_frame for JSON lines)",
    )
    track.add_argument(
        "--prompt-interval",
        type=int,
        default=30,
        metavar="N",
        help="with --prompt-mode every_n_frames: every N frames (default 30)",
    )
    track.add_argument("--every", type=int, default=1, metavar="N", help="track every N-th frame (default 1)")
    track.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="with --workflow: a workflow input; repeatable"
    )
    track.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,
        help="Roboflow API key for inference's model blocks, e.g. a Roboflow detector (default: $ROBOFLOW_API_KEY)",
    )
    progress_flags(track)
    track.set_defaults(handler=cmd_track)
    return track


def cmd_track(args) -> int:
    from sam_block.cli.engine import image_inputs, init_engine

    if args.every < 1:
        raise CliError(f"--every must be 1 or more (got {args.every})")
    if args.prompt_interval < 1:
        raise CliError(f"--prompt-interval must be 1 or more (got {args.prompt_interval})")
    videos = []
    for path in args.videos:
        if not path.is_file():
            raise CliError(f"video {path} does not exist")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise CliError(f"{path} is not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
        videos.append(path)
    boxes = None
    if args.workflow is not None:
        if args.model is not None or args.prompt_mode is not None:
            raise CliError(
                "--model and --prompt-mode go with --boxes; with --workflow set the version and prompt_mode in the workflow's step"
            )
        definition = load_workflow(args.workflow)
        steps = [s for s in definition.get("steps", []) if isinstance(s, dict) and s.get("type") == VIDEO_STEP]
        if not steps:
            raise CliError(f"workflow {args.workflow} has no {VIDEO_STEP} step to track with")
        names = image_inputs(definition)
        if not names:
            raise CliError(f"workflow {args.workflow} has no WorkflowImage input to give the frames to")
        image_input = names[0]
        params = workflow_params(definition, args.param or [], names, "the frames")
    else:
        boxes, per_frame = load_frame_boxes(args.boxes)
        mode = args.prompt_mode or ("every_frame" if per_frame else "first_frame")
        if not per_frame and mode != "first_frame":
            raise CliError(
                f"--prompt-mode {mode} needs boxes for many frames: give JSON lines "
                '{"frame": N, "predictions": [...]} per frame, or use --prompt-mode first_frame'
            )
        if args.param:
            raise CliError("--param goes with --workflow; with --boxes there are no other inputs")
        params = {}
        from sam_block.runtime.variants import DEFAULT_VERSION

        definition = boxes_workflow(args.model or DEFAULT_VERSION, mode, args.prompt_interval)
        image_input = "image"
    summary = track_videos(
        init_engine(definition, api_key=args.api_key),
        image_input,
        videos,
        args.out,
        params,
        boxes,
        args.every,
        args.progress,
    )
    print(f"{summary.videos} video(s), {summary.frames} frame(s), {summary.tracks} track(s)")
    return 0
