"""What every sam_block step shares with the engine: the metadata its model blocks attach,
what the step declares to deployment planners (operations, resources, restrictions), and
how errors the client caused become a 4xx instead of a 500.

Both steps' manifests derive from :class:`SamStepManifest`, which holds the declarations
they share (outputs, engine range, discovery hooks); their ``run`` methods use
:func:`client_errors_as_4xx` and :func:`check_output_format`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Type, TypeVar, Union

import numpy as np
import supervision as sv

from roboflow_workflows.core_steps.common.utils import attach_parents_coordinates_to_sv_detections
from roboflow_workflows.core_steps.common.workload_presets import STATEFUL_VIDEO_TEMPORAL_RESTRICTIONS
from roboflow_workflows.errors import ClientCausedStepExecutionError
from roboflow_workflows.execution_engine.constants import IMAGE_DIMENSIONS_KEY, PARENT_ID_KEY, PREDICTION_TYPE_KEY
from roboflow_workflows.execution_engine.entities.base import OutputDefinition, WorkflowImageData
from roboflow_workflows.execution_engine.entities.types import (
    INSTANCE_SEGMENTATION_PREDICTION_KIND,
    RLE_INSTANCE_SEGMENTATION_PREDICTION_KIND,
)
from roboflow_workflows.execution_engine.entities.workload import (
    Discovery,
    Runtime,
    RuntimeRestriction,
    Severity,
    WorkOperation,
)
from roboflow_workflows.prototypes.block import (
    DependentResource,
    WorkflowBlockManifest,
    actual_restrictions_of,
    is_workflow_selector,
    third_party_model,
)
from sam_block.errors import ClientInputError, InvalidParameterError
from sam_block.rle import OUTPUT_FORMATS
from sam_block.runtime.variants import get_variant

Number = TypeVar("Number", int, float)

# Who provides the checkpoint a step depends on: sam_block resolves it (SAM_BLOCK_CHECKPOINT_DIR,
# downloaded from Meta once, or bundled for `demo`), not Roboflow's model registry.
CHECKPOINT_PROVIDER = "sam_block"
CLIENT_ERROR_STATUS = 400

NOT_ON_HOSTED_SERVERLESS = RuntimeRestriction(
    code="third_party_plugin_not_installed",
    severity=Severity.HARD,
    note=(
        "sam_block is a third-party plugin loaded through WORKFLOWS_PLUGINS; Roboflow's hosted "
        "serverless API does not install it, so a workflow with this step cannot compile there."
    ),
    applies_to_runtimes=[Runtime.HOSTED_SERVERLESS],
)
# The video step keeps each video's tracks in its block instance, as inference's own SAM 2 video
# block does, so it declares inference's presets for that (same codes, same meaning): the state
# resets where requests do not reach one long-lived process (soft, video input), and a still
# image has no history to track (soft, image input).
STATEFUL_VIDEO_RESTRICTIONS = STATEFUL_VIDEO_TEMPORAL_RESTRICTIONS


def attach_engine_metadata(detections: sv.Detections, image: WorkflowImageData) -> sv.Detections:
    """Add what the engine's own model blocks attach: prediction type, image size, parent/root coordinates.

    ``parent_id`` stays the prompt's detection id (the engine's helper would overwrite it
    with the image's id).
    """
    parent_id = detections.data[PARENT_ID_KEY]
    height, width = image.numpy_image.shape[:2]
    detections[PREDICTION_TYPE_KEY] = np.array(["instance-segmentation"] * len(detections))
    detections[IMAGE_DIMENSIONS_KEY] = np.array([[height, width]] * len(detections)).reshape(-1, 2)
    if len(detections) == 0:
        detections.metadata[IMAGE_DIMENSIONS_KEY] = [height, width]
    detections = attach_parents_coordinates_to_sv_detections(detections, image)
    detections[PARENT_ID_KEY] = parent_id
    return detections


def checkpoint_file_of(version: str) -> str:
    """The checkpoint file name `version` runs on (raises ``UnknownVersionError`` for an unknown one).

    Example:
        >>> checkpoint_file_of("hiera_b_plus"), checkpoint_file_of("demo")
        ('sam2.1_hiera_base_plus.pt', 'sam2.1_demo.pt')
    """
    return get_variant(version).filename


def checkpoint_resources(version: str) -> List[DependentResource]:
    """The step's one dependent resource: the local SAM 2 checkpoint of `version`.

    Declared as a third-party model (provider ``sam_block``, model id = the checkpoint file
    name), never a Roboflow platform model, so the engine's model preloader leaves it alone.
    A selector is returned verbatim with a resolver that maps the value to the file name.

    Example:
        >>> [r.metadata.model_id for r in checkpoint_resources("hiera_tiny")]
        ['sam2.1_hiera_tiny.pt']
        >>> [resource] = checkpoint_resources("$inputs.version")
        >>> resource.metadata.model_id, resource.metadata.model_id_resolver("hiera_large")
        ('$inputs.version', 'sam2.1_hiera_large.pt')
    """
    if is_workflow_selector(version):
        return [third_party_model(provider=CHECKPOINT_PROVIDER, model_id=version, model_id_resolver=checkpoint_file_of)]
    return [third_party_model(provider=CHECKPOINT_PROVIDER, model_id=checkpoint_file_of(version))]


def model_work_operations() -> List[WorkOperation]:
    """A SAM step runs a model in this process; nothing else it does is a separate operation
    (the checkpoint download happens once, on first use, when the file is missing)."""
    return [WorkOperation.MODEL_INFERENCE]


def local_model_restrictions(
    node_name: Optional[str], ignore_environment_restrictions: bool, also: Sequence[RuntimeRestriction] = ()
) -> Discovery[RuntimeRestriction]:
    """Where a sam_block step cannot run: Roboflow's hosted serverless API (no third-party plugins),
    then the step's own caveats `also`.

    Anywhere else it runs in-process on CPU or CUDA, whatever the step execution mode.
    """
    return actual_restrictions_of(
        declared=[NOT_ON_HOSTED_SERVERLESS, *also],
        node_id=f"$steps.{node_name or ''}",
        ignore_environment_restrictions=ignore_environment_restrictions,
    )


@contextmanager
def client_errors_as_4xx(block_id: str) -> Iterator[None]:
    """Report errors the request caused (:class:`~sam_block.errors.ClientInputError`: unknown
    version, unusable image, bad parameter) as inference's ``ClientCausedStepExecutionError``
    — HTTP 400 with our message — instead of a 500. Other errors (a missing checkpoint is the
    server's problem) pass through unchanged.

    The engine does not tell a block its step name, so `block_id` is the block's type.
    """
    try:
        yield
    except ClientInputError as error:
        raise ClientCausedStepExecutionError(
            block_id=block_id,
            status_code=CLIENT_ERROR_STATUS,
            public_message=str(error),
            context="workflow_execution | step_execution | invalid_client_input",
            inner_error=error,
        ) from error


def check_output_format(output_format: str) -> None:
    """A literal `output_format` is checked by the manifest; one computed by another step
    reaches ``run`` unchecked and is checked here (a client error)."""
    if output_format not in OUTPUT_FORMATS:
        raise InvalidParameterError(f"output_format={output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}.")


def number(
    name: str,
    value,
    kind: Type[Number] = float,
    minimum: Optional[Union[int, float]] = None,
    maximum: Optional[Union[int, float]] = None,
) -> Number:
    """`value` of field `name` as `kind` (``int`` or ``float``) within ``minimum``…``maximum``.

    A literal is checked by the manifest; a value computed by another step reaches ``run``
    unchecked and is checked here: anything that is not a finite number (a bool, NaN, text
    that is no number), a fraction where a whole number is meant, or a value out of range is
    an :class:`~sam_block.errors.InvalidParameterError` (a client error) naming the field and
    the value.

    Example:
        >>> number("threshold", "0.5", float, 0, 1), number("lost_after", 15.0, int, 1)
        (0.5, 15)
        >>> number("points_per_side", 2.5, int, 1, 128)
        Traceback (most recent call last):
        ...
        sam_block.errors.InvalidParameterError: points_per_side=2.5: use a whole number from 1 to 128.
    """
    if minimum is not None and maximum is not None:
        bounds = f" from {minimum} to {maximum}"
    elif minimum is not None:
        bounds = f" ≥ {minimum}"
    else:
        bounds = "" if maximum is None else f" ≤ {maximum}"
    fix = f"use a {'whole number' if kind is int else 'number'}{bounds}."
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(value)
        as_float = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidParameterError(f"{name}={value!r} is not a number: {fix}") from None
    if not math.isfinite(as_float) or (kind is int and not as_float.is_integer()):
        raise InvalidParameterError(f"{name}={value!r}: {fix}")
    result = kind(as_float)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        raise InvalidParameterError(f"{name}={value!r}: {fix}")
    return result


class SamStepManifest(WorkflowBlockManifest):
    """What the image and the video step declare alike: batched `images` and `boxes`, one
    output `predictions` (RLE kind first), the engine range, and the discovery hooks (the
    local checkpoint of `version`, model inference, not on hosted serverless)."""

    @classmethod
    def get_parameters_accepting_batches(cls) -> List[str]:
        return ["images", "boxes"]

    @classmethod
    def describe_outputs(cls) -> List[OutputDefinition]:
        # RLE first: the engine serializes with the first kind that accepts the value, and
        # the RLE serializer refuses detections without data["rle_mask"] (output_format: polygons).
        return [
            OutputDefinition(
                name="predictions",
                kind=[RLE_INSTANCE_SEGMENTATION_PREDICTION_KIND, INSTANCE_SEGMENTATION_PREDICTION_KIND],
            )
        ]

    @classmethod
    def get_execution_engine_compatibility(cls) -> Optional[str]:
        return ">=1.3.0,<2.0.0"

    def discover_dependent_resources(self) -> List[DependentResource]:
        """The local SAM 2 checkpoint of `version` (a selector is returned verbatim)."""
        return checkpoint_resources(self.version)

    def discover_work_operations(self) -> List[WorkOperation]:
        return model_work_operations()

    def get_actual_restrictions(
        self, *, ignore_environment_restrictions: bool = False
    ) -> Discovery[RuntimeRestriction]:
        return local_model_restrictions(getattr(self, "name", None), ignore_environment_restrictions)
