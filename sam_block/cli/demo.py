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
    """IoU of each ground-truth shape with its best mask in coco.json (decoded from the RLEs)."""
    import supervision as sv
    from pycocotools import mask as mask_utils

    annotations = json.loads(summary.coco.read_text())["annotations"]
    if not annotations:
        return [0.0] * len(truth)
    predicted = np.stack([mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).astype(bool) for a in annotations])
    return [float(v) for v in sv.mask_iou_batch(truth.astype(bool), predicted).max(axis=1)]
