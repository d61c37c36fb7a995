"""Behaviour of the block inside the real engine: provenance, threshold, bad boxes, metadata."""

import logging
import re

import numpy as np
import pytest
import supervision as sv

from tests.conftest import detections, load_example, mask_iou, run_workflow

WORKFLOW = load_example("a_boxes_input.json")


def segment(image, boxes, **params):
    return run_workflow(WORKFLOW, image=image, boxes=[boxes], **params)[0]["predictions"]


@pytest.fixture(scope="module")
def two_boxes_result(checkpoint_dir, scene):
    boxes = detections(
        [[35, 45, 190, 210], [225, 45, 375, 195]],
        class_names=["car", "dog"],
        class_ids=[7, 3],
        detection_ids=["up-1", "up-2"],
    )
    return segment(scene, boxes)


def test_class_names_ids_and_parent_ids_are_carried(two_boxes_result):
    result = two_boxes_result
    assert sorted(zip(result["parent_id"], result["class_name"], result.class_id)) == [
        ("up-1", "car", 7),
        ("up-2", "dog", 3),
    ]
    assert len(set(result["detection_id"])) == 2
    assert not set(result["detection_id"]) & {"up-1", "up-2"}


def test_boxes_are_tight_around_masks_and_confidence_is_sam_score(two_boxes_result, meta_on_scene):
    result = two_boxes_result
    np.testing.assert_array_equal(result.xyxy, sv.mask_to_xyxy(result.mask))
    assert result.mask.dtype == bool
    # confidence is SAM's predicted IoU of the kept (best of three) mask: Meta's, for the same boxes
    _, meta_scores, _ = meta_on_scene.predict(
        box=np.array([[35, 45, 190, 210], [225, 45, 375, 195]], np.float32), multimask_output=True
    )
    order = np.argsort(result["parent_id"])  # up-1, up-2
    np.testing.assert_allclose(result.confidence[order], meta_scores.max(axis=1), atol=1e-3)


def test_engine_metadata_matches_core_model_blocks(two_boxes_result, scene):
    result = two_boxes_result
    height, width = scene.shape[:2]
    assert list(result["prediction_type"]) == ["instance-segmentation"] * 2
    np.testing.assert_array_equal(result["image_dimensions"], [[height, width]] * 2)
    for key in ("parent_coordinates", "root_parent_coordinates"):
        np.testing.assert_array_equal(result[key], [[0, 0]] * 2)
    for key in ("parent_dimensions", "root_parent_dimensions"):
        np.testing.assert_array_equal(result[key], [[height, width]] * 2)
    assert list(result["root_parent_id"]) == ["image"] * 2


def test_missing_class_and_id_default_to_foreground(checkpoint_dir, scene):
    bare = sv.Detections(xyxy=np.array([[35.0, 45, 190, 210]]))
    result = segment(scene, bare)
    assert list(result.class_id) == [0]
    assert list(result["class_name"]) == ["foreground"]
    assert list(result["parent_id"]) == ["image"]  # no upstream id: the image it was predicted on


def test_threshold_drops_low_scoring_masks(checkpoint_dir, scene, two_boxes_result):
    scores = sorted(two_boxes_result.confidence)
    cut = float(np.mean(scores))
    boxes = detections(
        [[35, 45, 190, 210], [225, 45, 375, 195]], class_names=["car", "dog"], detection_ids=["up-1", "up-2"]
    )
    result = segment(scene, boxes, threshold=cut)
    kept = two_boxes_result.confidence >= cut
    assert len(result) == int(kept.sum()) == 1
    assert set(result["parent_id"]) == set(two_boxes_result["parent_id"][kept])
    assert np.all(result.confidence >= cut)


def test_bad_boxes_are_skipped_with_a_warning_and_partial_boxes_clipped(checkpoint_dir, scene, caplog):
    height, width = scene.shape[:2]
    boxes = detections(
        [
            [np.nan, 10, 50, 50],
            [10, 10, np.inf, 50],
            [60, 60, 60, 120],  # zero width
            [width + 10, 10, width + 90, 90],  # fully outside
            [-40, -30, 190, 210],  # partly outside → clipped to [0, 0, 190, 210]
            [0, 0, 190, 210],  # the clipped box itself
        ],
        class_names=list("abcdef"),
        detection_ids=[f"b{i}" for i in range(6)],
    )
    with caplog.at_level(logging.WARNING, logger="sam_block"):
        result = segment(scene, boxes)
    assert sorted(result["parent_id"]) == ["b4", "b5"]
    clipped, reference = (result.mask[list(result["parent_id"]).index(k)] for k in ("b4", "b5"))
    assert mask_iou(clipped, reference) == 1.0
    text = caplog.text
    assert "NaN or infinite" in text and "zero area" in text and "fully outside" in text
    assert text.count("Skipping box") == 4


def test_no_boxes_gives_empty_detections_with_correct_shapes(checkpoint_dir, scene):
    result = segment(scene, sv.Detections.empty())
    height, width = scene.shape[:2]
    assert len(result) == 0
    assert result.xyxy.shape == (0, 4)
    assert result.mask.shape == (0, height, width)
    assert result.confidence.shape == (0,) and result.class_id.shape == (0,)
    assert result["class_name"].shape == (0,)
    assert result.metadata["image_dimensions"] == [height, width]


def test_several_images_in_one_batch_keep_their_own_boxes(checkpoint_dir, scene):
    small = scene[:200, :320].copy()
    results = run_workflow(
        WORKFLOW,
        image=[scene, small],
        boxes=[
            detections([[35, 45, 190, 210]], class_names=["big"]),
            detections([[10, 10, 100, 90], [150, 20, 300, 180]], class_names=["x", "y"]),
        ],
    )
    assert [len(r["predictions"]) for r in results] == [1, 2]
    assert results[1]["predictions"].mask.shape == (2, 200, 320)
    assert list(results[0]["predictions"]["class_name"]) == ["big"]


def test_unknown_version_is_rejected_by_the_engine_naming_the_field(checkpoint_dir, scene):
    from pydantic import ValidationError

    from roboflow_workflows.errors import RuntimeInputError

    with pytest.raises(
        RuntimeInputError, match="regarding property version provided in input parameter named version"
    ) as error_info:
        segment(scene, detections([[1, 1, 20, 20]]), version="hiera_huge")
    inner = error_info.value.inner_error
    assert isinstance(inner, ValidationError)
    assert re.search(r"Unknown SAM 2 version 'hiera_huge'\. Use one of: hiera_tiny, hiera_small", str(inner))


def test_unknown_version_from_a_step_output_fails_with_the_choices():
    from sam_block.errors import UnknownVersionError
    from sam_block.runtime.device import resolve_device
    from sam_block.runtime.models import MODELS

    with pytest.raises(UnknownVersionError, match="'hiera_huge'.*hiera_tiny, hiera_small, hiera_b_plus, hiera_large"):
        MODELS.get("hiera_huge", resolve_device("cpu"))
