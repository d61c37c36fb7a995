"""The video step over inference's own HTTP server: a request is a one-frame video, and bad
values known only at run time are the client's fault (400), as for the image step."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_scene
from tests.http_server import box_prediction, boxes_input, image_input
from tests.support import runtime_chosen_workflow

TYPE = "sam_block/segment_anything_2_video@v1"
SCENE = make_scene(120, 160, seed=3)
BOXES = boxes_input(160, 120, [box_prediction(10, 10, 90, 80, "thing", 1, "good")])

WORKFLOW = runtime_chosen_workflow({"type": TYPE, "name": "tracker", "prompt_mode": "every_frame"}, fmt="RLE")


@pytest.fixture(scope="module")
def server(default_server):
    return default_server  # shared by the session: no options, the session's checkpoint dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "inputs, status, inner, words",
    [
        ({}, 200, None, []),
        ({"model": "HIERA_HUGE"}, 400, "UnknownVersionError", ["Unknown SAM 2 version 'hiera_huge'"]),
        ({"fmt": "PNG"}, 400, "InvalidParameterError", ["output_format='png'", "rle, polygons"]),
    ],
    ids=["valid", "unknown-version", "bad-output-format"],
)
def test_video_step_over_http(server, inputs, status, inner, words):
    payload = {"specification": WORKFLOW, "inputs": {"image": image_input(SCENE), "boxes": BOXES, **inputs}}
    response = requests.post(server.url + "/workflows/run", json=payload, timeout=300)
    assert response.status_code == status, response.text[:2000]
    body = response.json()
    if status == 200:
        [row] = body["outputs"][0]["predictions"]["predictions"]
        assert (row["class"], row["parent_id"], row["tracker_id"]) == ("thing", "good", 1)
        assert "rle_mask" in row
        return
    assert body["error_type"] == "ClientCausedStepExecutionError" and body["inner_error_type"] == inner
    assert [e["block_id"] for e in body["blocks_errors"]] == [TYPE]
    for word in words:
        assert word in body["message"], body["message"]
