"""Our block's masks and scores equal Meta's SAM2ImagePredictor on the same checkpoint."""

import numpy as np
import pytest

from tests.conftest import detections, load_example, mask_iou, run_workflow

BOXES = np.array(
    [
        [35, 45, 190, 210],  # the rectangle
        [225, 45, 375, 195],  # the circle
        [310, 195, 450, 290],  # the ellipse
        [0, 0, 469, 299],  # everything
        [100.5, 80.25, 330.75, 260.5],  # sub-pixel corners across objects
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("multimask_output", [True, False])
def test_block_matches_meta_predictor_per_box(meta_on_scene, scene, checkpoint_dir, multimask_output):
    meta_masks, meta_scores, _ = meta_on_scene.predict(box=BOXES, multimask_output=multimask_output)
    best = meta_scores.argmax(axis=1)
    rows = np.arange(len(BOXES))
    expected_masks, expected_scores = meta_masks[rows, best] > 0, meta_scores[rows, best]
    assert all(m.any() and not m.all() for m in expected_masks), "random-weight masks must be non-trivial"

    ids = [f"box-{i}" for i in range(len(BOXES))]
    result = run_workflow(
        load_example("a_boxes_input.json"),
        image=scene,
        boxes=[detections(BOXES, class_names=[f"c{i}" for i in rows], class_ids=rows, detection_ids=ids)],
        multimask_output=multimask_output,
    )[0]["predictions"]

    assert len(result) == len(BOXES)
    assert result.mask.shape == (len(BOXES), *scene.shape[:2])
    by_parent = {pid: i for i, pid in enumerate(result["parent_id"])}
    for i, box_id in enumerate(ids):
        ours = by_parent[box_id]
        assert mask_iou(result.mask[ours], expected_masks[i]) >= 0.99
        assert abs(float(result.confidence[ours]) - float(expected_scores[i])) <= 1e-3


def test_masks_follow_the_image_not_a_square_resize(scene, checkpoint_dir):
    """A box on the left half gives a mask different from one on the right half,
    and both keep the image's own (non-square) shape."""
    result = run_workflow(
        load_example("a_boxes_input.json"),
        image=scene,
        boxes=[detections(BOXES[:3], class_names=["a", "b", "c"])],
    )[0]["predictions"]
    assert result.mask.shape[1:] == (300, 470)
    assert mask_iou(result.mask[0], result.mask[1]) < 0.99
