"""Hostile input through the real engine: arbitrary boxes (NaN, inf, huge, negative, reversed,
zero-area) on images of odd shapes and dtypes. Every case either segments correctly — one
full-resolution mask per usable box at most, each tied to its box — or is rejected with a
clear sam_block error; never an unhandled exception.

Each run that has a usable box encodes an image (with the demo model: the input handling is the
same for every version), so only the mixed property is kept small; the properties that never
reach the encoder try many more cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from sam_block.errors import InvalidImageError, SamBlockError
from tests.conftest import load_example

WORKFLOW = load_example("a_boxes_input.json")
SLOW = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)

LAYOUTS = ["gray2d", "gray1", "bgr", "bgra"]
DTYPES = ["uint8", "uint16", "float32_unit", "float64_255", "bool"]


def make_image(height: int, width: int, layout: str, dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    channels = {"gray2d": None, "gray1": 1, "bgr": 3, "bgra": 4}[layout]
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == "uint16":
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    if dtype == "float32_unit":
        return rng.random(shape, dtype=np.float32)
    if dtype == "float64_255":
        return rng.random(shape) * 255.0
    return rng.random(shape) > 0.5


valid_images = st.builds(
    make_image,
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)


def make_invalid_image(kind: str, height: int, width: int) -> np.ndarray:
    if kind == "nan":
        image = np.zeros((height, width, 3), np.float32)
        image[height // 2, width // 2, 0] = np.nan
        return image
    if kind == "inf":
        return np.full((height, width), np.inf)
    if kind == "negative_int":
        return np.full((height, width, 3), -1, np.int16)
    if kind == "above_255_int":
        return np.full((height, width, 3), 256, np.int32)
    if kind == "float_out_of_range":
        return np.full((height, width, 3), 300.5, np.float64)
    if kind == "two_channels":
        return np.zeros((height, width, 2), np.uint8)
    if kind == "five_channels":
        return np.zeros((height, width, 5), np.uint8)
    if kind == "complex":
        return np.zeros((height, width, 3), np.complex64)
    if kind == "empty":
        return np.zeros((0, width, 3), np.uint8)
    raise AssertionError(kind)


INVALID_KINDS = [
    "nan",
    "inf",
    "negative_int",
    "above_255_int",
    "float_out_of_range",
    "two_channels",
    "five_channels",
    "complex",
    "empty",
]
invalid_images = st.builds(
    make_invalid_image, kind=st.sampled_from(INVALID_KINDS), height=st.integers(1, 32), width=st.integers(1, 32)
)


def coordinates(limit: float):
    inside = st.floats(min_value=0, max_value=limit)
    return st.one_of(
        inside,
        inside,  # twice: most boxes should be usable, or the encoder is rarely reached
        st.floats(min_value=-limit * 0.5, max_value=limit * 1.5),  # around and off the image
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 1e30, -1e30, 1e300, -1e300]),
        st.integers(-5, int(limit) + 5).map(float),
    )


@st.composite
def boxes_for(draw, height: int, width: int, max_boxes: int = 4) -> np.ndarray:
    count = draw(st.integers(0, max_boxes))
    rows = []
    for _ in range(count):
        x1, x2 = draw(coordinates(width)), draw(coordinates(width))
        y1, y2 = draw(coordinates(height)), draw(coordinates(height))
        shape = draw(st.sampled_from(["as drawn"] * 4 + ["zero width", "zero height"]))
        if shape == "zero width":
            x2 = x1
        elif shape == "zero height":
            y2 = y1
        rows.append([x1, y1, x2, y2])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def as_detections(xyxy: np.ndarray) -> sv.Detections:
    n = len(xyxy)
    return sv.Detections(
        xyxy=xyxy,
        class_id=np.arange(n),
        confidence=np.full(n, 0.5),
        data={
            "class_name": np.array([f"c{i}" for i in range(n)]),
            "detection_id": np.array([f"id{i}" for i in range(n)]),
        },
    )


def usable(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Finite boxes that overlap the image with positive area (judged in float32, as the model sees them)."""
    finite = np.isfinite(xyxy).all(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = np.where(finite[:, None], xyxy, 0).astype(np.float32).astype(np.float64)
    lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
    return (
        finite
        & (np.minimum(hi[:, 0], width) > np.maximum(lo[:, 0], 0))
        & (np.minimum(hi[:, 1], height) > np.maximum(lo[:, 1], 0))
    )


@pytest.fixture(scope="module")
def engine(checkpoint_dir):
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    return ExecutionEngine.init(workflow_definition=WORKFLOW, init_parameters={})


def segment(engine, image: np.ndarray, xyxy: np.ndarray) -> sv.Detections:
    # the demo model (256 px): the input handling under test is the same for every version
    runtime = {"image": image, "boxes": [as_detections(xyxy)], "version": "demo"}
    return engine.run(runtime_parameters=runtime)[0]["predictions"]


def assert_segmented_correctly(result: sv.Detections, image: np.ndarray, xyxy: np.ndarray) -> None:
    height, width = image.shape[:2]
    keep = usable(xyxy, height, width)
    assert isinstance(result, sv.Detections)
    assert result.mask is not None and result.mask.dtype == bool
    assert result.mask.shape == (len(result), height, width)
    assert len(result) <= int(keep.sum())  # one mask per usable box at most (empty masks are dropped)
    parents = list(result["parent_id"])
    assert len(set(parents)) == len(parents)
    assert set(parents) <= {f"id{i}" for i in np.flatnonzero(keep)}
    for parent, class_name, class_id in zip(parents, result["class_name"], result.class_id):
        assert (class_name, int(class_id)) == (f"c{parent[2:]}", int(parent[2:]))
    assert np.isfinite(result.xyxy).all()
    assert (
        (result.xyxy[:, :2] >= 0).all() and (result.xyxy[:, 2] <= width).all() and (result.xyxy[:, 3] <= height).all()
    )
    assert np.all(result.mask.any(axis=(1, 2)))


@pytest.mark.slow  # 64 s on the shared 2-core machine
@SLOW
@given(data=st.data(), image=valid_images)
@example(data=None, image=make_image(5, 7, "gray2d", "uint16", 1)).via("reversed corners on a 16-bit gray image")
def test_any_boxes_on_any_valid_image_segment_correctly(engine, data, image):
    height, width = image.shape[:2]
    if data is None:  # the explicit example: reversed and huge boxes
        xyxy = np.array([[6.0, 4.0, 1.0, 0.0], [-1e300, -5.0, 1e300, 3.0], [float("nan"), 0, 3, 3]])
    else:
        xyxy = data.draw(boxes_for(height, width))
    event(f"{image.dtype} {image.shape[2:] or 'gray 2-D'}, usable boxes: {int(usable(xyxy, height, width).sum())}")
    assert_segmented_correctly(segment(engine, image, xyxy), image, xyxy)


@FAST
@given(data=st.data(), image=valid_images)
def test_unusable_boxes_give_empty_results_with_the_right_shapes(engine, data, image):
    """Boxes that are all NaN / inf / zero-area / off-image never reach the encoder: cheap to try many."""
    height, width = image.shape[:2]
    xyxy = data.draw(boxes_for(height, width, max_boxes=5).filter(lambda b: not usable(b, height, width).any()))
    result = segment(engine, image, xyxy)
    assert_segmented_correctly(result, image, xyxy)
    assert len(result) == 0


@FAST
@given(data=st.data(), image=invalid_images)
def test_unusable_images_are_rejected_with_a_clear_error(engine, data, image):
    from roboflow_workflows.errors import ClientCausedStepExecutionError

    xyxy = data.draw(boxes_for(max(image.shape[0], 1), max(image.shape[1], 1)))
    with pytest.raises(ClientCausedStepExecutionError) as error:  # the caller's image: a 400 over HTTP
        segment(engine, image, xyxy)
    assert error.value.status_code == 400
    inner = error.value.inner_error
    assert isinstance(inner, InvalidImageError) and isinstance(inner, SamBlockError), repr(inner)
    message = str(inner)
    assert "Traceback" not in message
    assert any(word in message for word in ("NaN", "shape", "dtype", "values", "empty")), message
    assert message in str(error.value)  # the engine passes our message on to the caller
