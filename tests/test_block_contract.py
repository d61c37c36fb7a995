"""What the image and the video step declare to the engine (work operations, dependent
resources, restrictions), read through inference's own workload introspection, and how the
image step's errors are classified: the client's fault (400) or the server's (500). Over HTTP:
tests/test_http.py; the video step's errors: tests/test_video.py."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import detections, load_example, make_scene, run_workflow
from tests.support import passed_through_workflow, runtime_chosen_workflow

TYPE = "sam_block/segment_anything_2@v1"
VIDEO_TYPE = "sam_block/segment_anything_2_video@v1"


def workload(definition: dict, block_type: str = TYPE):
    from roboflow_workflows.execution_engine.introspection.workload import describe_workflow_workload

    introspection = describe_workflow_workload(definition, init_parameters={})
    [step] = [s for s in introspection.steps if s.block_type == block_type]
    return step, introspection


def restriction_rows(step) -> list:
    return [
        (r["code"], r["severity"], r["when"]["runtimes"], r["when"]["step_execution_modes"], r["when"]["input_modes"])
        for r in step.restrictions.model_dump(mode="json")["items"]
    ]


def with_version(version: str) -> dict:
    definition = copy.deepcopy(load_example("a_boxes_input.json"))
    definition["steps"][0]["version"] = version
    return definition


@pytest.mark.parametrize(
    "version, filename",
    [("hiera_tiny", "sam2.1_hiera_tiny.pt"), ("hiera_b_plus", "sam2.1_hiera_base_plus.pt"), ("demo", "sam2.1_demo.pt")],
)
def test_a_literal_version_declares_its_local_checkpoint(version, filename):
    step, introspection = workload(with_version(version))
    resources = step.resources.model_dump(mode="json")
    assert resources["complete"] is True and resources["unknown_reasons"] == []
    assert [(r["resource_type"], r["metadata"]["provider"], r["metadata"]["model_id"]) for r in resources["items"]] == [
        ("third_party_model", "sam_block", filename)
    ]
    assert step.operations.model_dump(mode="json")["items"] == ["model_inference"]
    assert step.operations.complete is True
    # the workflow's model inventory names it (a third-party model: the engine's preloader,
    # which registers Roboflow platform models only, leaves it to us)
    assert [(m.provider, m.model_id, m.used_by_steps) for m in introspection.summary.models.items] == [
        ("sam_block", filename, ["$steps.sam"])
    ]


def test_a_version_selector_is_returned_verbatim_with_a_resolver_to_the_file():
    step, _ = workload(load_example("a_boxes_input.json"))  # "version": "$inputs.version"
    assert step.resources.complete is False
    assert [p.code.value for p in step.resources.unknown_reasons] == ["unresolved_selector"]
    [resource] = step.resources.items
    assert resource.metadata.model_id == "$inputs.version"
    assert resource.metadata.model_id_resolver("hiera_large") == "sam2.1_hiera_large.pt"
    from sam_block.errors import UnknownVersionError

    with pytest.raises(UnknownVersionError):  # the resolver's contract: raising means the value is invalid
        resource.metadata.model_id_resolver("hiera_huge")


def test_restrictions_name_the_one_runtime_without_the_plugin():
    step, _ = workload(with_version("hiera_tiny"))
    assert step.restrictions.complete is True
    assert restriction_rows(step) == [("third_party_plugin_not_installed", "hard", ["hosted_serverless"], None, None)]


def test_attach_engine_metadata_lives_in_blocks_common_and_keeps_its_old_path():
    from sam_block.blocks import common
    from sam_block.blocks.segment_anything_2 import v1

    assert v1.attach_engine_metadata is common.attach_engine_metadata


# --------------------------------------------------------------------------- the video step


def video_workflow(version: str = "hiera_small") -> dict:
    definition = load_example("g_video_tracking.json")
    definition["steps"][0]["version"] = version
    return definition


def test_the_video_step_declares_tracking_its_checkpoint_and_that_it_keeps_state():
    step, introspection = workload(video_workflow(), VIDEO_TYPE)
    assert step.operations.model_dump(mode="json")["items"] == ["model_inference", "tracking"]
    assert step.operations.complete is True
    assert [(r.resource_type.value, r.metadata.provider, r.metadata.model_id) for r in step.resources.items] == [
        ("third_party_model", "sam_block", "sam2.1_hiera_small.pt")
    ]
    assert step.restrictions.complete is True
    assert restriction_rows(step) == [
        # each video's tracks live in the block instance: they reset where frames do not all reach it
        (
            "stateful_video_state_resets_on_stateless_http",
            "soft",
            ["dedicated_deployment", "hosted_serverless"],
            None,
            ["video"],
        ),
        ("temporal_block_no_benefit_on_still_image", "soft", None, None, ["image"]),
        ("third_party_plugin_not_installed", "hard", ["hosted_serverless"], None, None),
    ]
    assert [(m.provider, m.model_id, m.used_by_steps) for m in introspection.summary.models.items] == [
        ("sam_block", "sam2.1_hiera_small.pt", ["$steps.tracker"])
    ]


def test_the_video_step_declares_what_inference_own_sam2_video_block_declares_about_state():
    """Same operations and the same state / still-image restrictions (codes and conditions) as
    ``roboflow_core/segment_anything_2_video@v1`` — what a user swapping the type string keeps.
    Inference's block also declares a GPU and a no-remote-execution restriction: ours runs on
    CPU and in-process whatever the step execution mode, so it declares neither."""
    theirs = copy.deepcopy(video_workflow())
    theirs["steps"][0] = {"type": "roboflow_core/segment_anything_2_video@v1", "name": "tracker", "images": "$inputs.image",
                          "boxes": "$inputs.boxes", "prompt_mode": "every_n_frames"}  # fmt: skip
    inference_step, _ = workload(theirs, "roboflow_core/segment_anything_2_video@v1")
    our_step, _ = workload(video_workflow(), VIDEO_TYPE)
    assert our_step.operations.items == inference_step.operations.items
    about_state = {"stateful_video_state_resets_on_stateless_http", "temporal_block_no_benefit_on_still_image"}
    inference_rows = [row for row in restriction_rows(inference_step) if row[0] in about_state]
    assert len(inference_rows) == 2
    assert [row for row in restriction_rows(our_step) if row[0] in about_state] == inference_rows
    assert {row[0] for row in restriction_rows(inference_step)} - about_state == {
        "requires_gpu_for_local_execution",
        "remote_step_execution_not_supported",
    }


# --------------------------------------------------------------------------- client or server fault

RUNTIME_CHOSEN = runtime_chosen_workflow({"type": TYPE, "name": "sam"}, fmt="POLYGONS")


@pytest.mark.parametrize(
    "inputs, inner, words",
    [
        ({"model": "HIERA_HUGE"}, "UnknownVersionError", "Unknown SAM 2 version 'hiera_huge'. Use one of: hiera_tiny"),
        ({"fmt": "PNG"}, "InvalidParameterError", "output_format='png' is not one of rle, polygons"),
    ],
)
def test_bad_values_computed_at_run_time_are_client_caused_400s(inputs, inner, words):
    from roboflow_workflows.errors import ClientCausedStepExecutionError

    boxes = [detections([[30, 40, 190, 210]], ["thing"])]
    [result] = run_workflow(RUNTIME_CHOSEN, image=make_scene(), boxes=boxes)  # DEMO / POLYGONS: fine
    assert list(result["predictions"]["class_name"]) == ["thing"]
    with pytest.raises(ClientCausedStepExecutionError) as raised:
        run_workflow(RUNTIME_CHOSEN, image=make_scene(), boxes=boxes, **inputs)
    error = raised.value
    assert error.status_code == 400 and type(error.inner_error).__name__ == inner
    assert words in error.public_message and error.block_id == TYPE


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("threshold", "high", "threshold='high' is not a number: use a number from 0 to 1."),
        ("threshold", float("nan"), "threshold=nan: use a number from 0 to 1."),  # was: every mask silently dropped
        ("threshold", 1.5, "threshold=1.5: use a number from 0 to 1."),
        ("keypoint_confidence", True, "keypoint_confidence=True is not a number: use a number from 0 to 1."),
        ("points_per_side", 2.5, "points_per_side=2.5: use a whole number from 1 to 128."),
        ("points_per_batch", 0, "points_per_batch=0: use a whole number from 1 to 1024."),
        ("min_mask_area", -1, "min_mask_area=-1: use a whole number ≥ 0."),
        ("stability_score_thresh", float("inf"), "stability_score_thresh=inf: use a number from 0 to 1."),
    ],
)
def test_bad_numbers_from_other_steps_are_400s_naming_the_field_and_the_range(field, value, message):
    from roboflow_workflows.errors import ClientCausedStepExecutionError

    definition = passed_through_workflow({"type": TYPE, "name": "sam", "version": "demo"}, field)
    with pytest.raises(ClientCausedStepExecutionError) as raised:
        run_workflow(definition, image=make_scene(), boxes=[detections([[30, 40, 190, 210]])], value=value)
    assert raised.value.status_code == 400 and raised.value.public_message == message
    assert type(raised.value.inner_error).__name__ == "InvalidParameterError"


def test_good_numbers_from_other_steps_are_used_as_given():
    definition = passed_through_workflow({"type": TYPE, "name": "sam", "version": "demo"}, "threshold")
    boxes = [detections([[30, 40, 190, 210]])]
    [kept] = run_workflow(definition, image=make_scene(), boxes=boxes, value=0.0)
    [dropped] = run_workflow(definition, image=make_scene(), boxes=boxes, value=1.0)  # no mask scores above 1
    assert len(kept["predictions"]) == 1 and len(dropped["predictions"]) == 0


def test_an_unusable_image_is_the_clients_fault():
    import numpy as np

    from roboflow_workflows.errors import ClientCausedStepExecutionError

    nan_image = np.full((20, 30, 3), np.nan, dtype=np.float32)
    with pytest.raises(ClientCausedStepExecutionError, match="NaN or infinite pixel values") as raised:
        run_workflow(with_version("demo"), image=nan_image, boxes=[detections([[1, 1, 10, 10]])])
    assert raised.value.status_code == 400


def test_a_missing_checkpoint_stays_a_server_error(monkeypatch, tmp_path):
    from roboflow_workflows.errors import ClientCausedStepExecutionError, StepExecutionError

    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path))  # SAM_BLOCK_OFFLINE=1 (conftest)
    with pytest.raises(StepExecutionError) as raised:
        run_workflow(with_version("hiera_large"), image=make_scene(), boxes=[detections([[30, 40, 190, 210]])])
    assert not isinstance(raised.value, ClientCausedStepExecutionError)
    assert type(raised.value.inner_error).__name__ == "CheckpointMissingError"
