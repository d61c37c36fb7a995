"""Keypoints as points, masks as refinement, segment-everything: parity with Meta's SAM 2 tools."""

import numpy as np
import pytest
import torch

from sam_block.runtime.predictor import mask_prompt_logits
from tests.conftest import detections, load_example, mask_iou, run_workflow

BOX = np.array([35, 45, 190, 210], dtype=np.float32)


@pytest.fixture(scope="module")
def meta(meta_on_scene):
    return meta_on_scene


def meta_best(meta, **prompt):
    masks, scores, logits = meta.predict(multimask_output=True, return_logits=True, **prompt)
    best = int(scores.argmax())
    return masks[best] > 0, float(scores[best]), masks[best]


def keypoint_detections(boxes, keypoints, confidences, names):
    dets = detections(boxes, class_names=names, detection_ids=[f"k{i}" for i in range(len(boxes))])
    dets.data["keypoints_xy"] = np.array([np.asarray(k, dtype=float) for k in keypoints] + [None], dtype=object)[:-1]
    dets.data["keypoints_confidence"] = np.array(
        [np.asarray(c, dtype=float) for c in confidences] + [None], dtype=object
    )[:-1]
    return dets


def run_keypoints(scene, dets, keypoint_confidence=0.5):
    definition = load_example("d_keypoints_to_sam.json")
    return run_workflow(definition, image=scene, keypoints=[dets], keypoint_confidence=keypoint_confidence)[0][
        "predictions"
    ]


@pytest.fixture(scope="module")
def keypoint_run(meta, scene, checkpoint_dir):
    boxes = [BOX, [225, 45, 375, 195]]
    keypoints = [[[100, 120], [60, 70], [150, 180]], [[300, 120], [260, 80], [5, 5]]]
    confidences = [[0.9, 0.2, 0.8], [0.95, 0.7, 0.1]]  # two visible keypoints each
    return (
        run_keypoints(scene, keypoint_detections(boxes, keypoints, confidences, ["rect", "circle"])),
        boxes,
        keypoints,
        confidences,
    )


def test_visible_keypoints_and_box_match_meta(keypoint_run, meta):
    result, boxes, keypoints, confidences = keypoint_run
    for i, name in enumerate(["rect", "circle"]):
        visible = np.array(keypoints[i])[np.array(confidences[i]) >= 0.5]
        expected, score, _ = meta_best(
            meta, point_coords=visible, point_labels=np.ones(len(visible)), box=np.asarray(boxes[i])
        )
        ours = list(result["class_name"]).index(name)
        assert mask_iou(result.mask[ours], expected) >= 0.99
        assert abs(float(result.confidence[ours]) - score) <= 1e-3


def test_keypoints_change_the_mask_compared_to_the_box_alone(keypoint_run, meta):
    result, boxes, _, _ = keypoint_run
    box_only, box_score, _ = meta_best(meta, box=np.asarray(boxes[0]))
    ours = list(result["class_name"]).index("rect")
    assert mask_iou(result.mask[ours], box_only) < 1.0 or abs(float(result.confidence[ours]) - box_score) > 1e-3


def test_all_invisible_keypoints_fall_back_to_the_box(meta, scene, checkpoint_dir):
    dets = keypoint_detections([BOX], [[[100, 120], [60, 70]]], [[0.1, 0.3]], ["rect"])
    result = run_keypoints(scene, dets, keypoint_confidence=0.5)
    expected, score, _ = meta_best(meta, box=BOX)
    assert mask_iou(result.mask[0], expected) >= 0.99
    assert abs(float(result.confidence[0]) - score) <= 1e-3


def test_keypoint_confidence_cut_is_honoured(meta, scene, checkpoint_dir):
    dets = keypoint_detections([BOX], [[[100, 120], [60, 70]]], [[0.9, 0.3]], ["rect"])
    result = run_keypoints(scene, dets, keypoint_confidence=0.25)  # both visible now
    expected, score, _ = meta_best(
        meta, point_coords=np.array([[100, 120], [60, 70]]), point_labels=np.ones(2), box=BOX
    )
    assert mask_iou(result.mask[0], expected) >= 0.99
    assert abs(float(result.confidence[0]) - score) <= 1e-3


def test_mask_prompts_refine_the_way_meta_does(meta, scene, checkpoint_dir):
    upstream_mask = np.zeros(scene.shape[:2], dtype=bool)
    upstream_mask[60:190, 50:170] = True
    dets = detections([BOX], class_names=["rect"], detection_ids=["m0"])
    dets.mask = upstream_mask[None]
    definition = load_example("e_mask_refinement.json")
    refined = run_workflow(definition, image=scene, predictions=[dets], use_mask_prompts=True)[0]["predictions"]
    box_only = run_workflow(definition, image=scene, predictions=[dets], use_mask_prompts=False)[0]["predictions"]

    logits = mask_prompt_logits(upstream_mask[None], (256, 256))[:, 0].numpy()
    expected, score, _ = meta_best(meta, box=BOX, mask_input=logits)
    assert mask_iou(refined.mask[0], expected) >= 0.99
    assert abs(float(refined.confidence[0]) - score) <= 1e-3
    assert (
        mask_iou(refined.mask[0], box_only.mask[0]) < 1.0
        or abs(float(refined.confidence[0] - box_only.confidence[0])) > 1e-3
    )


def test_stability_score_is_meta_formula_on_the_returned_mask(keypoint_run, meta):
    from sam2.utils.amg import calculate_stability_score

    result, boxes, keypoints, confidences = keypoint_run
    visible = np.array(keypoints[0])[np.array(confidences[0]) >= 0.5]
    _, _, logits = meta_best(meta, point_coords=visible, point_labels=np.ones(len(visible)), box=np.asarray(boxes[0]))
    expected = float(calculate_stability_score(torch.from_numpy(logits)[None], 0.0, 1.0)[0])
    ours = list(result["class_name"]).index("rect")
    assert result["stability_score"][ours] == pytest.approx(expected, abs=1e-3)
    assert 0.0 < expected < 1.0


EVERYTHING = dict(points_per_side=6, points_per_batch=16, pred_iou_thresh=0.5, stability_score_thresh=0.4)


@pytest.fixture(scope="module")
def everything_run(meta_predictor, scene, checkpoint_dir):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(meta_predictor.model, box_nms_thresh=0.7, **EVERYTHING)
    theirs = generator.generate(scene[:, :, ::-1].copy())
    ours = run_workflow(load_example("f_segment_everything.json"), image=scene, **EVERYTHING)[0]["predictions"]
    return ours, theirs


def assert_same_masks(ours, theirs):
    assert abs(len(ours) - len(theirs)) <= int(0.05 * len(theirs))  # ± 5 %
    their_masks = [t["segmentation"] for t in theirs]
    for mask in ours:
        assert max(mask_iou(mask, m) for m in their_masks) >= 0.95


def test_segment_everything_step_matches_meta_mask_generator(everything_run):
    ours, theirs = everything_run
    assert len(theirs) >= 1
    assert_same_masks(ours.mask, theirs)


@pytest.mark.slow  # 78 s on the shared 2-core machine
def test_segment_everything_keeps_the_same_candidates_as_meta_before_deduplication(
    meta_predictor, scene, checkpoint_dir
):
    """Random-weight masks overlap heavily, so NMS leaves few; without NMS every
    candidate that passes the IoU and stability filters is compared."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from sam_block.runtime.everything import EverythingParams, segment_everything
    from sam_block.runtime.models import MODELS
    from sam_block.runtime.predictor import Sam2Predictor

    rgb = scene[:, :, ::-1].copy()
    theirs = SAM2AutomaticMaskGenerator(meta_predictor.model, box_nms_thresh=1.0, **EVERYTHING).generate(rgb)
    predictor = Sam2Predictor(MODELS.get("hiera_tiny", torch.device("cpu")))
    ours = segment_everything(predictor, predictor.encode(rgb), EverythingParams(box_nms_thresh=1.0, **EVERYTHING))
    assert len(theirs) >= 10
    assert_same_masks(ours.masks.to_dense(), theirs)
    assert sorted(np.round(ours.scores, 4)) == pytest.approx(
        sorted(np.round([t["predicted_iou"] for t in theirs], 4)), abs=1e-3
    )


def test_segment_everything_numbers_masks_by_area(everything_run, scene):
    ours, _ = everything_run
    areas = ours.mask.sum(axis=(1, 2))
    assert list(areas) == sorted(areas, reverse=True)
    assert list(ours.class_id) == list(range(len(ours)))
    assert list(ours["class_name"]) == [str(i) for i in range(len(ours))]
    assert np.all(ours["stability_score"] >= EVERYTHING["stability_score_thresh"])
    assert np.all(ours.confidence > EVERYTHING["pred_iou_thresh"])
    assert list(ours["parent_id"]) == ["image"] * len(ours)


def test_segment_everything_min_mask_area_drops_small_masks(everything_run, scene, checkpoint_dir):
    ours, _ = everything_run
    areas = np.sort(ours.mask.sum(axis=(1, 2)))
    cut = int(areas[len(areas) // 2]) + 1 if len(areas) > 1 else int(areas[0]) + 1
    smaller = run_workflow(load_example("f_segment_everything.json"), image=scene, min_mask_area=cut, **EVERYTHING)[0][
        "predictions"
    ]
    assert len(smaller) == int((areas >= cut).sum())
    assert np.all(smaller.mask.sum(axis=(1, 2)) >= cut)


def test_building_prompts_from_detections_needs_no_torch():
    """prompts.py and the PromptBatch it builds are numpy only: importing them loads no torch."""
    import os
    import subprocess
    import sys

    from tests.support import REPO

    code = "import sys, sam_block.prompts, sam_block.runtime.prompt_batch; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.strip() == "[]"
