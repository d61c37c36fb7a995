"""Prompt conversion, image conversion and device selection, including hostile input."""

import numpy as np
import pytest
import supervision as sv
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sam_block.errors import DeviceError, InvalidImageError
from sam_block.images import to_rgb_uint8
from sam_block.prompts import detections_to_prompts, sanitize_boxes
from sam_block.runtime.device import resolve_device

coordinate = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-50, max_value=250),
    st.floats(min_value=-1e300, max_value=1e300),
)


@settings(max_examples=300, deadline=None)
@given(
    boxes=arrays(np.float64, st.tuples(st.integers(0, 8), st.just(4)), elements=coordinate),
    height=st.integers(1, 200),
    width=st.integers(1, 200),
)
def test_kept_boxes_are_finite_ordered_inside_and_non_empty(boxes, height, width):
    clipped, keep = sanitize_boxes(boxes, (height, width))
    assert clipped.shape == boxes.shape and keep.shape == (len(boxes),)
    kept = clipped[keep]
    assert np.isfinite(kept).all()
    assert (kept[:, 0] >= 0).all() and (kept[:, 1] >= 0).all()
    assert (kept[:, 2] <= width).all() and (kept[:, 3] <= height).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()
    # a finite box that overlaps the image with positive area (in float32, as the model
    # sees it) is never dropped
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(over="ignore"):
        boxes = boxes.astype(np.float32).astype(np.float64)
    lo = np.minimum(boxes[:, :2], boxes[:, 2:])
    hi = np.maximum(boxes[:, :2], boxes[:, 2:])
    overlaps = (
        finite
        & (np.minimum(hi[:, 0], width) > np.maximum(lo[:, 0], 0))
        & (np.minimum(hi[:, 1], height) > np.maximum(lo[:, 1], 0))
    )
    np.testing.assert_array_equal(keep, overlaps)


@settings(max_examples=100, deadline=None)
@given(boxes=arrays(np.float64, st.tuples(st.integers(0, 6), st.just(4)), elements=coordinate))
def test_provenance_rows_follow_kept_prompts(boxes):
    n = len(boxes)
    dets = sv.Detections(
        xyxy=boxes,
        class_id=np.arange(n),
        data={
            "class_name": np.array([f"c{i}" for i in range(n)]),
            "detection_id": np.array([f"id{i}" for i in range(n)]),
        },
    )
    prompts, provenance = detections_to_prompts(dets, (100, 150))
    assert len(prompts) == len(provenance)
    assert list(provenance.class_name) == [f"c{i}" for i in provenance.source_index]
    assert list(provenance.parent_id) == [f"id{i}" for i in provenance.source_index]
    assert list(provenance.class_id) == list(provenance.source_index)


def test_reversed_corners_are_put_in_order():
    clipped, keep = sanitize_boxes(np.array([[90, 80, 10, 20]]), (100, 100))
    assert keep.tolist() == [True]
    assert clipped.tolist() == [[10, 20, 90, 80]]


@pytest.mark.parametrize(
    "image, expected_first_pixel",
    [
        (np.array([[[1, 2, 3]]], np.uint8), [3, 2, 1]),  # BGR → RGB
        (np.array([[[1, 2, 3, 255]]], np.uint8), [3, 2, 1]),  # alpha dropped
        (np.array([[7]], np.uint8), [7, 7, 7]),  # gray
        (np.array([[[7]]], np.uint8), [7, 7, 7]),
        (np.array([[[0, 257 * 2, 65535]]], np.uint16), [255, 2, 0]),
        (np.array([[[0.0, 0.5, 1.0]]], np.float32), [255, 128, 0]),
        (np.array([[[0.0, 128.0, 255.0]]], np.float64), [255, 128, 0]),
        (np.array([[True]]), [255, 255, 255]),
    ],
)
def test_images_become_rgb_uint8(image, expected_first_pixel):
    rgb = to_rgb_uint8(image, channel_order="bgr")
    assert rgb.dtype == np.uint8 and rgb.shape == (*image.shape[:2], 3)
    assert rgb[0, 0].tolist() == expected_first_pixel


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), r"\(4, 4, 2\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"\(2, 4, 4, 3\)"),
        (np.full((2, 2, 3), np.nan, np.float32), "NaN"),
        (np.full((2, 2, 3), 300.0), "300"),
        (np.full((2, 2, 3), -1, np.int16), "-1"),
        (np.zeros((2, 2, 3), np.complex64), "complex64"),
    ],
)
def test_unusable_images_are_rejected_clearly(image, message):
    with pytest.raises(InvalidImageError, match=message):
        to_rgb_uint8(image)


def test_device_selection(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.delenv("SAM_BLOCK_DEVICE", raising=False)
    import torch

    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="'gpu0'.*'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_run_ray_and_track_name_repeated_stems_alike(tmp_path):
    """One de-duplication rule for output names: `run`'s frames, `run --ray`'s items and `track`'s videos."""
    import cv2

    from sam_block.cli.batch import plan_items
    from sam_block.cli.inputs import expand_inputs, iter_frames

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("x.png", "y.png"):
            cv2.imwrite(str(tmp_path / folder / name), np.zeros((4, 4, 3), np.uint8))
    inputs = expand_inputs([tmp_path / "a", tmp_path / "b", tmp_path / "a" / "x.png"])
    expected = ["x", "y", "x_2", "y_2", "x_3"]
    assert [frame.name for frame in iter_frames(inputs, 1)] == expected
    assert [item.name for item in plan_items(inputs)] == expected
