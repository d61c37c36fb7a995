"""`sam-block demo`: a generated scene segmented by the bundled toy model, scored against its truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np

from sam_block.cli.engine import init_engine
from sam_block.cli.errors import CliError
from sam_block.cli.inputs import Frame, bundled_workflow
from sam_block.cli.run import RunSummary, run_frames


def cmd_demo(args) -> int:
    if args.video:
        return cmd_demo_video(args)
    args.seed = DEFAULT_SCENE if args.seed is None else args.seed
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
        data={
            "class_name": np.array(scene.kinds),
            "detection_id": np.array([f"shape-{i}" for i in range(len(scene.kinds))]),
        },
    )
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "demo_scene.png"
    cv2.imwrite(str(source), image)
    engine = init_engine(bundled_workflow("boxes_to_masks.json"))
    params = {"boxes": [boxes], "version": "demo", "threshold": 0.0, "multimask_output": True}
    frame = Frame("demo_scene", str(source), image)
    summary = run_frames(
        engine,
        "image",
        iter([frame]),
        args.out,
        params,
        total=1,
        annotated_suffix=".annotated",
        progress=False,
        json_output="predictions",
    )
    predictions = json.loads((args.out / "demo_scene.json").read_text())["predictions"]
    ious = _match_ious(truth, summary, args.out)
    print(
        f"segmented {len(predictions)} shape(s) of a generated scene with the toy `demo` model "
        f"(mean IoU vs ground truth {np.mean(ious):.3f}) on this one scene; the README's 0.91 is the mean over 30 held-out scenes"
    )
    print(f"input:     {source}")
    print(f"annotated: {args.out / 'demo_scene.annotated.png'}")
    print(f"json:      {args.out / 'demo_scene.json'}")
    print(f"coco:      {summary.coco}")
    return 0


def _match_ious(truth: np.ndarray, summary: RunSummary, out: Path) -> List[float]:
    """IoU of each ground-truth shape with its best mask in coco.json (decoded from the RLEs)."""
    import supervision as sv
    from pycocotools import mask as mask_utils

    annotations = json.loads(summary.coco.read_text())["annotations"]
    if not annotations:
        return [0.0] * len(truth)
    predicted = np.stack(
        [
            mask_utils.decode(
                {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
            ).astype(bool)
            for a in annotations
        ]
    )
    return [float(v) for v in sv.mask_iou_batch(truth.astype(bool), predicted).max(axis=1)]


DEFAULT_SCENE = 0
DEFAULT_CLIP = 10  # three shapes, one of them leaving the picture
STRIP_FRAMES = 6
VIDEO_SCALE = 2  # the clip is generated at the toy model's 256 px and shown twice as large


def cmd_demo_video(args) -> int:
    """A generated clip tracked from its first frame's boxes: annotated mp4, a PNG strip, IoU vs the truth."""
    import cv2
    import supervision as sv

    from sam_block.cli.track import boxes_workflow, track_videos
    from sam_block.demo.train_video import held_out_clip

    if args.frames < 2:
        raise CliError(f"--frames must be 2 or more (got {args.frames})")
    seed = DEFAULT_CLIP if args.seed is None else args.seed
    clip = held_out_clip(seed, frames=args.frames)
    objects = clip.prompted(0)
    if not len(objects):
        raise CliError(f"clip {seed} shows no shape on its first frame; try another --seed")
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "input" / "demo_clip.mp4"
    source.parent.mkdir(exist_ok=True)
    size = clip.frames.shape[1] * VIDEO_SCALE
    with sv.VideoSink(str(source), sv.VideoInfo(width=size, height=size, fps=15)) as sink:
        for frame in clip.frames:
            sink.write_frame(
                cv2.resize(np.ascontiguousarray(frame[..., ::-1]), (size, size), interpolation=cv2.INTER_CUBIC)
            )
    first = clip.boxes(0)[objects] * VIDEO_SCALE
    kinds = [clip.kinds[k] for k in objects]
    boxes = sv.Detections(
        xyxy=first.astype(float),
        class_id=np.arange(len(objects)),
        confidence=np.ones(len(objects)),
        data={"class_name": np.array(kinds)},
    )
    boxes_file = args.out / "demo_clip_boxes.json"  # the same boxes, for `sam-block track --boxes`
    boxes_file.write_text(json.dumps([
        {"x1": round(float(x1), 2), "y1": round(float(y1), 2), "x2": round(float(x2), 2), "y2": round(float(y2), 2), "class_name": kind}
        for (x1, y1, x2, y2), kind in zip(first, kinds)
    ], indent=2) + "\n")  # fmt: skip
    engine = init_engine(boxes_workflow("demo", "first_frame", 30))
    track_videos(engine, "image", [source], args.out, {}, {0: boxes}, progress=None)
    j, copy_first = _video_scores(args.out / "demo_clip.jsonl", clip, objects)
    strip = _strip(args.out / "demo_clip.mp4", args.out / "demo_strip.png", len(clip.frames))
    print(
        f"tracked {len(objects)} shape(s) through {len(clip.frames)} frames of a generated clip with the toy `demo` model, "
        f"prompted only by the first frame's boxes: mean IoU vs ground truth {j:.3f} "
        f"(copying the first frame's masks: {copy_first:.3f})"
    )
    print(f"input:     {source}")
    print(f"annotated: {args.out / 'demo_clip.mp4'}")
    print(f"strip:     {strip}")
    print(f"json:      {args.out / 'demo_clip.jsonl'}")
    print(f"mot:       {args.out / 'demo_clip.mot.txt'}")
    print(
        f"boxes:     {boxes_file} (the first frame's boxes; try: sam-block track {source} --boxes {boxes_file} --model demo --out track-out/)"
    )
    return 0


def _video_scores(jsonl: Path, clip, objects: np.ndarray):
    """Mean IoU (J) of the tracked masks and of the copied first-frame masks vs the clip's truth,
    scored as the held-out evaluation scores (``train_video.score_clip``) at the video's scale.

    A track is the object it overlaps most on the first frame.
    """
    import dataclasses

    from sam_block.demo.train_video import mask_iou, score_clip
    from sam_block.rle import decode_rle

    truth = np.repeat(np.repeat(clip.masks, VIDEO_SCALE, axis=2), VIDEO_SCALE, axis=3)
    tracks = []
    for line in jsonl.read_text().splitlines():
        predictions = json.loads(line)["predictions"]["predictions"]
        tracks.append({int(p["tracker_id"]): decode_rle(p["rle_mask"]) for p in predictions})
    owner = {i: int(objects[np.argmax([mask_iou(m, truth[0, k]) for k in objects])]) for i, m in tracks[0].items()}
    reported = [{owner[i]: mask for i, mask in frame.items() if i in owner} for frame in tracks]
    score = score_clip(dataclasses.replace(clip, masks=truth), objects, reported)
    return score.j, score.copy_first


def _strip(video: Path, png: Path, frames: int) -> Path:
    """STRIP_FRAMES evenly spaced frames of the annotated video side by side, numbered."""
    import cv2
    import supervision as sv

    wanted = set(np.linspace(0, frames - 1, STRIP_FRAMES).round().astype(int).tolist())
    tiles = []
    for index, frame in enumerate(sv.get_video_frames_generator(str(video))):
        if index in wanted:
            tile = cv2.resize(frame, None, fx=1 / VIDEO_SCALE, fy=1 / VIDEO_SCALE, interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"frame {index}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, f"frame {index}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    cv2.imwrite(str(png), np.hstack(row))
    return png
