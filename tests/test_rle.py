"""Exact masks over JSON: COCO RLE built crop by crop (``sam_block.rle``) and the step's
``output_format`` — in process, over inference's HTTP API and through inference's own
``process-images-directory`` CLI. Real engine, real server, real SAM 2.1 architecture.

The random-weight test model returns ragged masks (many parts, many holes): each test
asserts that the masks it checks really have a hole and several parts before it checks
that they survive the trip bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from copy import deepcopy

import cv2
import numpy as np
import pytest
import requests
import supervision as sv
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from supervision.detection.compact_mask import CompactMask

from sam_block.detections import masks_to_detections
from sam_block.rle import apply_output_format, crop_to_rle, decode_rle, detections_rles, serialise_exact
from sam_block.runtime.masks import CroppedMasks
from tests.conftest import REPO, detections, load_example, make_scene, run_workflow
from tests.http_server import image_input, polygon_mask, server_env

REQUEST_TIMEOUT_S = 300
BOXES = [[40, 50, 180, 200], [230, 50, 370, 190], [20, 20, 450, 280]]


def reference_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def has_hole(mask: np.ndarray) -> bool:
    """A background region (4-connected) that does not touch the image border."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    return bool(set(range(1, count)) - border)


def parts(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def ring_and_pair(image_size=(60, 80)) -> np.ndarray:
    """Two masks: a ring (one hole) and two separate squares."""
    height, width = image_size
    ring = np.zeros(image_size, bool)
    cv2.circle(ring.view(np.uint8), (25, 30), 15, 1, -1)
    cv2.circle(ring.view(np.uint8), (25, 30), 6, 0, -1)
    pair = np.zeros(image_size, bool)
    pair[5:15, 50:60] = True
    pair[40:55, 65:79] = True
    return np.stack([ring, pair])


def cropped(dense: np.ndarray) -> CroppedMasks:
    boxes, crops = [], []
    for mask in dense:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        crops.append(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return CroppedMasks(dense.shape[1:], np.array(boxes), crops)


# --- the encoder ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 14),
    width=st.integers(1, 14),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**31),
)
def test_crop_rle_is_byte_identical_to_pycocotools_of_the_dense_mask(height, width, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < density
    if seed % 5 == 0:  # whole columns of ones: runs that continue into the next column
        mask[:, rng.integers(0, width) :] = True
    # any crop that contains the mask, tight or not
    y1, x1 = rng.integers(0, height), rng.integers(0, width)
    mask[:y1] = False
    mask[:, :x1] = False
    y2, x2 = rng.integers(y1, height), rng.integers(x1, width)
    mask[y2 + 1 :] = False
    mask[:, x2 + 1 :] = False
    crop = mask[y1 : y2 + 1, x1 : x2 + 1]
    assert crop_to_rle(crop, int(x1), int(y1), (height, width)) == reference_rle(mask)


def test_empty_and_full_masks_and_a_crop_outside_the_image():
    assert crop_to_rle(np.zeros((0, 0), bool), 0, 0, (3, 4)) == reference_rle(np.zeros((3, 4), bool))
    assert crop_to_rle(np.ones((3, 4), bool), 0, 0, (3, 4)) == reference_rle(np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="does not fit in a 3x4 image"):
        crop_to_rle(np.ones((2, 2), bool), 3, 0, (3, 4))


def test_a_ring_and_two_parts_round_trip_through_inference_serializer():
    """Constructed masks with a hole and with two parts, through the same path the step uses."""
    from inference.core.workflows.core_steps.common.serializers import serialise_rle_sv_detections

    dense = ring_and_pair()
    assert has_hole(dense[0]) and parts(dense[0]) == 1 and parts(dense[1]) == 2 and not has_hole(dense[1])
    masks = cropped(dense)
    dets = masks_to_detections(
        masks, np.array([0.9, 0.8]), np.array([0, 1]), ["ring", "pair"], ["a", "b"], output_format="rle"
    )
    assert isinstance(dets.mask, np.ndarray) and (dets.mask == dense).all()  # masks stay for downstream blocks
    wire = json.loads(json.dumps(serialise_rle_sv_detections(dets)))
    decoded = [decode_rle(p["rle_mask"]) for p in wire["predictions"]]
    assert all((d == m).all() for d, m in zip(decoded, dense))
    assert [p["class"] for p in wire["predictions"]] == ["ring", "pair"]
    assert all("points" not in p for p in wire["predictions"])
    # the polygon path (output_format: polygons) keeps one outline: hole and second part are lost
    polygons = masks_to_detections(masks, np.array([0.9, 0.8]), np.array([0, 1]), ["ring", "pair"], ["a", "b"])
    assert "rle_mask" not in polygons.data
    from inference.core.workflows.core_steps.common.serializers import serialise_sv_detections

    outlines = serialise_sv_detections(polygons)["predictions"]
    rasterised = [polygon_mask(p["points"], *dense.shape[1:]) for p in outlines]
    assert rasterised[0][30, 25] and not dense[0][30, 25]  # the hole is filled
    assert parts(rasterised[1]) == 1  # one of the two squares is gone


def test_rle_from_dense_compact_and_cropped_masks_agree():
    dense = ring_and_pair()
    masks = cropped(dense)
    xyxy = masks.boxes.astype(float)
    expected = [reference_rle(m) for m in dense]
    from_dense = detections_rles(sv.Detections(xyxy=xyxy, mask=dense))
    from_compact = detections_rles(sv.Detections(xyxy=xyxy, mask=CompactMask.from_dense(dense, xyxy, dense.shape[1:])))
    from_crops = apply_output_format(sv.Detections(xyxy=xyxy, mask=dense), "rle", masks).data["rle_mask"].tolist()
    assert from_dense == from_compact == from_crops == expected
    with pytest.raises(ValueError, match="output_format='masks': use one of rle, polygons"):
        apply_output_format(sv.Detections(xyxy=xyxy, mask=dense), "masks")


def test_serialise_exact_gives_rle_for_masks_and_boxes_without():
    dense = ring_and_pair()
    xyxy = cropped(dense).boxes.astype(float)
    dets = sv.Detections(xyxy=xyxy, mask=dense, confidence=np.array([0.9, 0.8]), class_id=np.array([0, 1]))
    dets.data.update(class_name=np.array(["ring", "pair"]), detection_id=np.array(["1", "2"]))
    wire = json.loads(json.dumps(serialise_exact(dets)))
    assert [decode_rle(p["rle_mask"]).tolist() for p in wire["predictions"]] == dense.tolist()
    assert "rle_mask" not in dets.data  # the caller's detections are left as they were
    boxes = serialise_exact(
        sv.Detections(xyxy=xyxy, confidence=dets.confidence, class_id=dets.class_id, data=dict(dets.data))
    )
    assert [p["x"] for p in boxes["predictions"]] == [p["x"] for p in wire["predictions"]]
    assert all("rle_mask" not in p for p in boxes["predictions"])


# --- the step in the engine -------------------------------------------------------------


def format_workflow(extra_steps=(), extra_outputs=()) -> dict:
    workflow = deepcopy(load_example("a_boxes_input.json"))
    workflow["inputs"].append({"type": "WorkflowParameter", "name": "output_format", "default_value": "polygons"})
    workflow["steps"][0]["output_format"] = "$inputs.output_format"
    workflow["steps"] += list(extra_steps)
    workflow["outputs"] += list(extra_outputs)
    return workflow


def prompt_boxes() -> sv.Detections:
    return detections(BOXES, ["red", "yellow", "all"], [0, 1, 2], ["d0", "d1", "d2"])


@pytest.fixture(scope="module")
def in_process(checkpoint_dir):
    """The step's masks and visualizations in this process, with output_format rle and polygons."""
    steps = [
        {"type": "roboflow_core/detections_filter@v1", "name": "filter", "predictions": "$steps.sam.predictions",
         "operations": [{"type": "DetectionsFilter", "filter_operation": {"type": "StatementGroup", "statements": [
             {"type": "BinaryStatement", "left_operand": {"type": "DynamicOperand", "operations": [
                 {"type": "ExtractDetectionProperty", "property_name": "class_name"}]},
              "comparator": {"type": "in (Sequence)"},
              "right_operand": {"type": "StaticOperand", "value": ["yellow", "all"]}}]}}]},
        {"type": "roboflow_core/mask_visualization@v1", "name": "masks", "image": "$inputs.image",
         "predictions": "$steps.filter.predictions"},
        {"type": "roboflow_core/polygon_visualization@v1", "name": "outlines", "image": "$inputs.image",
         "predictions": "$steps.sam.predictions"},
    ]  # fmt: skip
    outputs = [
        {"type": "JsonField", "name": "filtered", "selector": "$steps.filter.predictions"},
        {"type": "JsonField", "name": "masks", "selector": "$steps.masks.image"},
        {"type": "JsonField", "name": "outlines", "selector": "$steps.outlines.image"},
    ]
    workflow = format_workflow(steps, outputs)
    image = make_scene()
    return {
        fmt: run_workflow(workflow, image=image, boxes=[prompt_boxes()], output_format=fmt)[0]
        for fmt in ("rle", "polygons")
    }


def test_rle_step_output_decodes_to_its_masks_with_holes_and_parts(in_process):
    predictions = in_process["rle"]["predictions"]
    assert len(predictions) == 3
    dense = np.asarray(predictions.mask)
    assert any(has_hole(m) for m in dense) and all(parts(m) >= 2 for m in dense)  # ragged random-weight masks
    decoded = [decode_rle(rle) for rle in predictions.data["rle_mask"]]
    assert all((d == m).all() for d, m in zip(decoded, dense))
    # the same masks as with polygons: only the JSON form changes
    assert (np.asarray(in_process["polygons"]["predictions"].mask) == dense).all()
    assert "rle_mask" not in in_process["polygons"]["predictions"].data


def test_filter_and_visualizations_work_on_rle_output(in_process):
    rle, polygons = in_process["rle"], in_process["polygons"]
    filtered = rle["filtered"]
    assert filtered["class_name"].tolist() == ["yellow", "all"]
    # the filter keeps data["rle_mask"] aligned with the masks it keeps
    assert [decode_rle(r).tolist() for r in filtered.data["rle_mask"]] == np.asarray(filtered.mask).tolist()
    for name in ("masks", "outlines"):
        assert (rle[name].numpy_image == polygons[name].numpy_image).all(), name
        assert (rle[name].numpy_image != make_scene()).any(), name  # something was drawn


def test_manifest_declares_both_kinds_and_the_field():
    manifest = json.loads((REPO / "manifests" / "sam_block.segment_anything_2.v1.json").read_text())
    text = json.dumps(manifest)
    assert "rle_instance_segmentation_prediction" in text and '"output_format"' in text
    from sam_block.blocks.segment_anything_2.v1 import BlockManifest

    [output] = BlockManifest.describe_outputs()
    assert [k.name for k in output.kind] == ["rle_instance_segmentation_prediction", "instance_segmentation_prediction"]
    assert BlockManifest.model_fields["output_format"].default == "polygons"


# --- over HTTP and through inference's own CLI ------------------------------------------


@pytest.mark.slow
def test_rle_over_http_equals_the_in_process_masks_bit_for_bit(default_server, in_process):
    image = make_scene()
    boxes_json = {
        "image": {"width": image.shape[1], "height": image.shape[0]},
        "predictions": [
            {"x": (b[0] + b[2]) / 2, "y": (b[1] + b[3]) / 2, "width": b[2] - b[0], "height": b[3] - b[1],
             "class": name, "class_id": i, "confidence": 0.9, "detection_id": f"d{i}"}
            for i, (b, name) in enumerate(zip(BOXES, ["red", "yellow", "all"]))
        ],
    }  # fmt: skip
    workflow = format_workflow()
    served = {}
    for fmt in ("rle", "polygons"):
        payload = {
            "specification": workflow,
            "inputs": {"image": image_input(image), "boxes": boxes_json, "output_format": fmt},
        }
        response = requests.post(default_server.url + "/workflows/run", json=payload, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text[:2000]
        served[fmt] = response.json()["outputs"][0]["predictions"]["predictions"]
    expected = np.asarray(in_process["rle"]["predictions"].mask)
    assert any(has_hole(m) for m in expected) and all(parts(m) >= 2 for m in expected)
    decoded = np.stack([decode_rle(p["rle_mask"]) for p in served["rle"]])
    assert decoded.shape == expected.shape and (decoded == expected).all()
    assert [p["class"] for p in served["rle"]] == ["red", "yellow", "all"]
    assert [p["parent_id"] for p in served["rle"]] == ["d0", "d1", "d2"]
    # polygons: today's behaviour — one outline per mask in `points`, no RLE, and it is lossy
    assert all("rle_mask" not in p and len(p["points"]) > 2 for p in served["polygons"])
    outlines = [polygon_mask(p["points"], *image.shape[:2]) for p in served["polygons"]]
    assert any((o != m).any() for o, m in zip(outlines, expected))
    serialized = run_workflow_serialized(workflow, image, "polygons")
    assert [p["points"] for p in served["polygons"]] == [p["points"] for p in serialized]


def run_workflow_serialized(workflow, image, output_format):
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    engine = ExecutionEngine.init(workflow_definition=workflow, init_parameters={})
    runtime = {"image": image, "boxes": [prompt_boxes()], "output_format": output_format}
    [result] = engine.run(runtime_parameters=runtime, serialize_results=True)
    return result["predictions"]["predictions"]


@pytest.mark.slow
def test_inference_process_images_directory_writes_masks_that_decode_exactly(checkpoint_dir, tmp_path):
    """inference's own CLI, in-package processing, with the plugin: results.json holds exact RLE."""
    image = make_scene(200, 260, seed=3)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "scene.png"), image)
    workflow = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [{"type": "sam_block/segment_anything_2@v1", "name": "sam", "images": "$inputs.image",
                   "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                   "output_format": "rle"}],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.sam.predictions"}],
    }  # fmt: skip
    spec = tmp_path / "workflow.json"
    spec.write_text(json.dumps(workflow))
    cli = os.path.join(os.path.dirname(sys.executable), "inference")
    command = [cli, "workflows", "process-images-directory", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "-ws", str(spec), "-pt", "inference_package", "--no_aggregate"]  # fmt: skip
    done = subprocess.run(command, env=server_env(checkpoint_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = list((tmp_path / "out").rglob("results.json"))
    served = json.loads(results.read_text())["predictions"]["predictions"]

    [expected] = run_workflow(workflow, image=image)
    masks = np.asarray(expected["predictions"].mask)
    # random weights: segment-everything's NMS keeps one ragged mask (holes and many parts)
    assert len(masks) >= 1 and any(has_hole(m) for m in masks) and any(parts(m) >= 2 for m in masks)
    decoded = np.stack([decode_rle(p["rle_mask"]) for p in served])
    assert decoded.shape == masks.shape and (decoded == masks).all()
