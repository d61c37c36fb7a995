"""The video step inside inference's own InferencePipeline, offline, on generated mp4 files.

Two videos go through one pipeline (one block instance serves both): a detector step (inference's
template matching, looking for a textured patch) feeds our tracker on every frame. Each video keeps
one identity for its one moving patch, the masks follow the patch, and the videos do not mix.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import supervision as sv

FRAMES = 10
SIZE = 32


def _patch() -> np.ndarray:
    """A non-periodic texture: template matching finds it at exactly one place."""
    rng = np.random.default_rng(42)
    return cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)


def _write_clip(path, patch, dx, dy):
    rng = np.random.default_rng(0)
    background = rng.normal(110, 20, (240, 320, 3)).clip(0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    truth = []
    for f in range(FRAMES):
        frame = background.copy()
        x, y = 40 + dx * f, 40 + dy * f
        frame[y : y + SIZE, x : x + SIZE] = patch
        cv2.circle(frame, (250, 180), 30, (40, 200, 60), -1)  # a distractor nothing prompts
        writer.write(frame)
        truth.append((x, y, x + SIZE, y + SIZE))
    writer.release()
    return truth


WORKFLOW = {
    "version": "1.0",
    "inputs": [{"type": "WorkflowImage", "name": "image"}, {"type": "WorkflowImage", "name": "template"}],
    "steps": [
        {"type": "roboflow_core/template_matching@v1", "name": "detector", "image": "$inputs.image",
         "template": "$inputs.template", "matching_threshold": 0.7},
        {"type": "sam_block/segment_anything_2_video@v1", "name": "tracker", "images": "$inputs.image",
         "boxes": "$steps.detector.predictions", "version": "demo", "prompt_mode": "every_frame"},
    ],
    "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.tracker.predictions"}],
}  # fmt: skip


@pytest.mark.slow
def test_inference_pipeline_tracks_one_patch_per_video_with_stable_ids(tmp_path):
    from inference import InferencePipeline

    patch = _patch()
    truths = [_write_clip(tmp_path / "a.mp4", patch, 8, 3), _write_clip(tmp_path / "b.mp4", patch, 2, 9)]
    got, lock = {}, threading.Lock()

    def sink(predictions, frames):
        if not isinstance(predictions, list):
            predictions, frames = [predictions], [frames]
        for prediction, frame in zip(predictions, frames):
            if prediction is not None:
                with lock:
                    got.setdefault(frame.source_id, []).append((frame.frame_id, prediction["predictions"]))

    pipeline = InferencePipeline.init_with_workflow(
        video_reference=[str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")],
        workflow_specification=WORKFLOW,
        on_prediction=sink,
        api_key=None,
        workflows_parameters={"template": patch},
    )
    pipeline.start()
    pipeline.join()

    assert sorted(got) == [0, 1]
    for source, truth in enumerate(truths):
        frames = got[source]
        assert [frame_id for frame_id, _ in frames] == list(range(1, FRAMES + 1))
        for (frame_id, detections), box in zip(frames, truth):
            assert isinstance(detections, sv.Detections)
            assert detections.tracker_id.tolist() == [1], (source, frame_id, detections.tracker_id)
            overlap = sv.box_iou_batch(detections.xyxy, np.array([box], dtype=float))[0, 0]
            assert overlap > 0.7, (source, frame_id, detections.xyxy, box)
            assert detections.mask.shape == (1, 240, 320)
            x1, y1, x2, y2 = box
            inside = detections.mask[0, y1:y2, x1:x2].sum()
            assert inside > 0.9 * detections.mask[0].sum(), (source, frame_id)  # the mask is on the patch
