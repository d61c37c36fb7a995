"""Every example workflow compiles and (where it needs no API key) runs through the real engine."""

import json

import cv2
import numpy as np
import pytest

from tests.conftest import EXAMPLES, detections, load_example, make_scene, mask_iou, run_workflow

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.json"))


def test_examples_exist():
    assert {
        "a_boxes_input.json",
        "b_template_matching_to_mask_visualization.json",
        "c_roboflow_detector_to_sam.json",
    } <= set(ALL_EXAMPLES)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_example_compiles(name, checkpoint_dir):
    from inference.core.managers.base import ModelManager
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.core.workflows.errors import ReferenceTypeError
    from inference.core.workflows.execution_engine.core import ExecutionEngine
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    # A real model manager: Roboflow model blocks need one to compile; nothing is fetched until run.
    manager = ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES))
    init_parameters = {"workflows_core.model_manager": manager, "workflows_core.api_key": None}
    definition = load_example(name)
    ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters)

    # Compilation really checks our step: wiring an image into `boxes` is refused, naming step and field.
    [sam_step] = [s for s in definition["steps"] if s["type"].startswith("sam_block/segment_anything_2")]
    sam_step["boxes"] = "$inputs.image"
    refused = (
        rf"step: \$steps\.{sam_step['name']} regarding property: boxes with value: \$inputs\.image\. Allowed kinds"
    )
    with pytest.raises(ReferenceTypeError, match=refused):
        ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_example_takes_the_version_as_an_input(name):
    """`--param version=demo` runs any example offline (README, "Command line"): the SAM step reads
    `version` (and `threshold`) from inputs whose defaults are the step's own."""
    definition = load_example(name)
    defaults = {i["name"]: i.get("default_value") for i in definition["inputs"]}
    [sam_step] = [s for s in definition["steps"] if s["type"].startswith("sam_block/segment_anything_2")]
    assert sam_step["version"] == "$inputs.version" and defaults["version"] == "hiera_tiny"
    assert sam_step["threshold"] == "$inputs.threshold" and defaults["threshold"] == 0.0
    if sam_step["type"] == "sam_block/segment_anything_2@v1" and "boxes" in sam_step:  # the image step's box prompts
        assert sam_step["multimask_output"] == "$inputs.multimask_output" and defaults["multimask_output"] is True


def test_example_a_runs(checkpoint_dir, scene):
    result = run_workflow(
        load_example("a_boxes_input.json"), image=scene, boxes=[detections([[35, 45, 190, 210]], class_names=["rect"])]
    )
    assert list(result[0]["predictions"]["class_name"]) == ["rect"]


@pytest.fixture(scope="module")
def template_matching_run(checkpoint_dir):
    image = make_scene(seed=3)
    x1, y1, x2, y2 = 220, 40, 290, 110
    template = image[y1:y2, x1:x2].copy()
    outputs = run_workflow(
        load_example("b_template_matching_to_mask_visualization.json"), image=image, template=template
    )[0]
    return image, (x1, y1, x2, y2), outputs


def test_example_b_segments_the_template_match(template_matching_run):
    image, box, outputs = template_matching_run
    matches, predictions = outputs["matches"], outputs["predictions"]
    assert len(matches) == 1
    np.testing.assert_allclose(matches.xyxy[0], box, atol=1)
    assert len(predictions) == 1
    assert predictions["parent_id"][0] == matches["detection_id"][0]
    assert predictions["class_name"][0] == "template_match"


def test_example_b_mask_visualization_paints_exactly_the_mask(template_matching_run):
    image, _, outputs = template_matching_run
    mask = outputs["predictions"].mask[0]
    painted = outputs["visualization"].numpy_image
    assert painted.shape == image.shape
    changed = (painted != image).any(axis=2)
    assert not changed[~mask].any()
    assert changed[mask].mean() > 0.9


def test_output_survives_the_engines_json_serialization(template_matching_run):
    from inference.core.workflows.core_steps.common.serializers import serialize_wildcard_kind

    _, _, outputs = template_matching_run
    detections_ = outputs["predictions"]
    payload = json.loads(json.dumps(serialize_wildcard_kind(detections_)))
    height, width = payload["image"]["height"], payload["image"]["width"]
    assert (height, width) == detections_.mask.shape[1:]
    [prediction] = payload["predictions"]
    assert prediction["class"] == "template_match"
    assert prediction["detection_id"] == detections_["detection_id"][0]
    assert prediction["parent_id"] == detections_["parent_id"][0]
    assert prediction["confidence"] == pytest.approx(float(detections_.confidence[0]))
    polygon = np.array([[p["x"], p["y"]] for p in prediction["points"]], dtype=np.int32)
    redrawn = cv2.fillPoly(np.zeros((height, width), np.uint8), [polygon], 1).astype(bool)
    assert mask_iou(redrawn, detections_.mask[0]) > 0.8
