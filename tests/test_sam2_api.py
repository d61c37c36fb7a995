"""inference's SAM 2 HTTP API (``/sam2/embed_image``, ``/sam2/segment_image``) answered by our runtime.

One real server (``python -m sam_block.serve`` under uvicorn on loopback, module-scoped: each
start costs tens of seconds here), spoken to by inference_sdk's own ``InferenceHTTPClient`` and
by plain HTTP. Masks are compared with Meta's ``SAM2ImagePredictor`` on the same weights: the
bundled ``demo`` model (Meta's predictor with ``_bb_feat_sizes`` set from ``model.image_size``)
and random-weight ``hiera_tiny``. Our masks are upsampled by our own gathers for small regions
(see ``runtime/masks.py``): equal to Meta's bilinear upsampling up to float rounding, so masks
are compared by IoU ≥ 0.995 (they are bit-identical in practice) and scores to 1e-4.
"""

from __future__ import annotations

import base64
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests
import torch

from sam_block.rle import decode_rle
from tests.http_server import polygon_mask
from tests.support import make_scene, mask_iou, meta_sam2

pytestmark = pytest.mark.slow  # one server start (~30-60 s on the shared machine) and hiera_tiny encodes

TIMEOUT_S = 300
SCENE = make_scene(300, 470, seed=0)  # BGR, non-square
RECT = {"x": 110, "y": 125, "width": 140, "height": 150}  # the red rectangle's box, centre form
CIRCLE_CLICKS = [{"x": 300, "y": 120, "positive": True}, {"x": 380, "y": 240, "positive": False}]
PROMPTS = [  # a box; points with a negative one; a box with a point
    {"box": RECT},
    {"points": CIRCLE_CLICKS},
    {"box": {"x": 380, "y": 240, "width": 130, "height": 90}, "points": [{"x": 380, "y": 240, "positive": True}]},
]


def png_b64(bgr: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    return base64.b64encode(encoded.tobytes()).decode("ascii")


SCENE_B64 = png_b64(SCENE)


@pytest.fixture(scope="module")
def server(default_server):
    """The session's server with no options (tests/conftest.py): the routes run under the defaults."""
    return default_server


def post(server, path, payload, timeout=TIMEOUT_S) -> requests.Response:
    # json.dumps, not requests' json=: it must be able to send NaN as Python writes it
    return requests.post(
        server.url + path, data=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=timeout
    )


def segment(server, version="demo", image_b64=SCENE_B64, **fields) -> requests.Response:
    return post(
        server,
        "/sam2/segment_image",
        {"image": {"type": "base64", "value": image_b64}, "sam2_version_id": version, **fields},
    )


def rle_masks(response: requests.Response):
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    assert all(p["format"] == "rle" for p in predictions)
    return [decode_rle(p["masks"]) for p in predictions], np.array([p["confidence"] for p in predictions])


# --- Meta's predictor on the same weights -------------------------------------------------------


def meta_image_predictor(model):
    """Meta's SAM2ImagePredictor on `model`, its hard-coded 1024-px feature sizes set from model.image_size."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    side = int(model.image_size)
    predictor._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]
    return predictor


@pytest.fixture(scope="module")
def meta(tiny_checkpoint):
    """Meta's predictor per version, each with the scene set (Meta takes RGB)."""
    from sam_block.runtime.models import MODELS

    predictors = {
        "demo": meta_image_predictor(MODELS.get("demo", torch.device("cpu"))),
        "hiera_tiny": meta_image_predictor(meta_sam2(tiny_checkpoint)),
    }
    for predictor in predictors.values():
        predictor.set_image(SCENE[:, :, ::-1].copy())
    return predictors


def meta_args(prompt: dict) -> dict:
    """Meta's predict() arguments for one prompt of inference's schema."""
    args = {}
    if "box" in prompt:
        b = prompt["box"]
        args["box"] = np.array(
            [b["x"] - b["width"] / 2, b["y"] - b["height"] / 2, b["x"] + b["width"] / 2, b["y"] + b["height"] / 2]
        )
    if "points" in prompt:
        args["point_coords"] = np.array([[p["x"], p["y"]] for p in prompt["points"]], dtype=np.float32)
        args["point_labels"] = np.array([int(p["positive"]) for p in prompt["points"]])
    return args


def meta_best(predictor, prompt: dict, mask_input=None, multimask_output=True):
    """Meta's best mask (by predicted IoU, as inference picks), its score and low-res logits."""
    masks, scores, low_res = predictor.predict(
        **meta_args(prompt), mask_input=mask_input, multimask_output=multimask_output
    )
    best = int(np.argmax(scores))
    return masks[best] > 0, float(scores[best]), low_res[best]


def assert_same(ours_mask, ours_score, meta_mask, meta_score):
    assert meta_mask.any() and not meta_mask.all(), "the reference mask must be non-trivial"
    assert mask_iou(ours_mask, meta_mask) >= 0.995
    assert abs(ours_score - meta_score) <= 1e-4


# --- tests ----------------------------------------------------------------------------------------


def test_inference_sdk_segments_in_json_rle_and_binary(server, meta, tmp_path):
    """inference_sdk's own client: json polygons (every part), exact RLE, and the binary npz."""
    from inference_sdk import InferenceHTTPClient
    from inference_sdk.http.errors import HTTPCallErrorError

    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), SCENE)
    client = InferenceHTTPClient(api_url=server.url)
    prompts = PROMPTS[:2]

    as_rle = client.sam2_segment_image(str(path), prompts=prompts, sam2_version_id="demo", mask_input_format="rle")
    assert [p["format"] for p in as_rle["predictions"]] == ["rle", "rle"]
    rles = [decode_rle(p["masks"]) for p in as_rle["predictions"]]
    for prompt, mask, p in zip(prompts, rles, as_rle["predictions"]):
        assert mask.shape == SCENE.shape[:2]
        assert_same(mask, p["confidence"], *meta_best(meta["demo"], prompt)[:2])

    as_json = client.sam2_segment_image(str(path), prompts=prompts, sam2_version_id="demo", mask_input_format="json")
    for p, exact in zip(as_json["predictions"], rles):
        assert p["format"] == "polygon"
        polygons = p["masks"]
        assert all(
            isinstance(xy, list) and len(xy) == 2 and all(isinstance(v, int) for v in xy)
            for poly in polygons
            for xy in poly
        )
        drawn = np.zeros(SCENE.shape[:2], bool)
        for polygon in polygons:
            drawn |= polygon_mask([{"x": x, "y": y} for x, y in polygon], *SCENE.shape[:2])
        assert mask_iou(drawn, exact) >= 0.9  # outer contours: holes and boundary pixels aside
        parts, _ = cv2.findContours(exact.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        assert len(polygons) == len(parts)  # every part of the mask, not only the largest

    # The SDK parses every answer as JSON, so it cannot read inference's binary (npz) format, from
    # inference's own server either; over plain HTTP the npz holds what inference's holds.
    with pytest.raises((ValueError, HTTPCallErrorError)):
        client.sam2_segment_image(str(path), prompts=prompts, sam2_version_id="demo", mask_input_format="binary")
    response = segment(server, prompts=prompts, format="binary")
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    npz = np.load(io.BytesIO(response.content))
    assert npz["masks"].shape == (2, *SCENE.shape[:2]) and npz["masks"].dtype == np.float32
    side = meta["demo"].model.sam_prompt_encoder.mask_input_size
    assert npz["low_res_masks"].shape == (2, *side)
    for logits, exact in zip(npz["masks"], rles):
        assert mask_iou(logits > 0, exact) >= 0.995


@pytest.mark.parametrize("version", ["demo", "hiera_tiny"])
def test_embed_then_segment_by_image_id_equals_meta(server, meta, version):
    embedded = post(
        server,
        "/sam2/embed_image",
        {"image": {"type": "base64", "value": SCENE_B64}, "image_id": f"scene-{version}", "sam2_version_id": version},
    )
    assert embedded.status_code == 200, embedded.text[:2000]
    assert embedded.json()["image_id"] == f"scene-{version}"
    # the three prompt kinds in one request (decoded per structure, each as if alone), then the
    # nested, flat and single-prompt shapes inference's validator accepts
    masks, scores = rle_masks(
        segment(server, version, image_id=f"scene-{version}", prompts={"prompts": PROMPTS}, format="rle")
    )
    assert len(masks) == len(PROMPTS)
    for prompt, mask, score in zip(PROMPTS, masks, scores):
        assert_same(mask, score, *meta_best(meta[version], prompt)[:2])
    flat, _ = rle_masks(segment(server, version, image_id=f"scene-{version}", prompts=PROMPTS, format="rle"))
    single, _ = rle_masks(segment(server, version, image_id=f"scene-{version}", prompts=PROMPTS[1], format="rle"))
    assert all((a == b).all() for a, b in zip(flat, masks)) and (single[0] == masks[1]).all()
    # multimask_output=False: Meta's single-mask head (with its stability fallback)
    [mask], [score] = rle_masks(
        segment(
            server, version, image_id=f"scene-{version}", prompts=[PROMPTS[0]], format="rle", multimask_output=False
        )
    )
    assert_same(mask, score, *meta_best(meta[version], PROMPTS[0], multimask_output=False)[:2])


def test_two_clicks_with_the_logits_cache_equal_meta_refinement(server, meta):
    first, second = [CIRCLE_CLICKS[0]], CIRCLE_CLICKS  # a click, then a negative click added
    common = {"image_id": "clicks", "format": "rle", "save_logits_to_cache": True, "load_logits_from_cache": True}
    [mask1], [score1] = rle_masks(segment(server, prompts=[{"points": first}], **common))
    [mask2], [score2] = rle_masks(segment(server, prompts=[{"points": second}], **common))

    meta_mask1, meta_score1, meta_logits1 = meta_best(meta["demo"], {"points": first})
    assert_same(mask1, score1, meta_mask1, meta_score1)
    refined = meta_best(meta["demo"], {"points": second}, mask_input=meta_logits1[None])
    plain = meta_best(meta["demo"], {"points": second})
    assert_same(mask2, score2, *refined[:2])
    assert abs(refined[1] - plain[1]) > 1e-3, "the previous logits must change SAM's answer (else this proves nothing)"

    # a cache miss (no earlier prompt set on this image id's content extends into this one) still answers, unrefined
    [miss], [miss_score] = rle_masks(
        segment(
            server,
            image_id="clicks",
            prompts=[{"points": [CIRCLE_CLICKS[1]]}],
            format="rle",
            load_logits_from_cache=True,
        )
    )
    assert_same(miss, miss_score, *meta_best(meta["demo"], {"points": [CIRCLE_CLICKS[1]]})[:2])


def test_no_prompts_segments_everything_as_the_workflow_step_does(server):
    from tests.support import run_workflow

    response = segment(server, format="rle")
    served, scores = rle_masks(response)
    step = {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}],
            "steps": [{"type": "sam_block/segment_anything_2@v1", "name": "sam", "images": "$inputs.image", "version": "demo"}],
            "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.sam.predictions"}]}  # fmt: skip
    expected = run_workflow(step, image=SCENE)[0]["predictions"]
    assert len(served) == len(expected) >= 2
    for mask, score, exp_mask, exp_score in zip(served, scores, expected.mask, expected.confidence):
        assert (mask == exp_mask).all() and abs(score - exp_score) < 1e-6


BAD_REQUESTS = {
    "unknown version": ({"sam2_version_id": "hiera_huge"}, 400, ["hiera_huge", "hiera_tiny", "demo"]),
    "not an image": (
        {"image": {"type": "base64", "value": base64.b64encode(b"not an image").decode()}},
        400,
        ["image"],
    ),
    "a url": ({"image": {"type": "url", "value": "http://127.0.0.1:1/x.png"}}, 400, ["image.type", "base64"]),
    "a file path": ({"image": {"type": "file", "value": "/etc/passwd"}}, 400, ["image.type"]),
    "a box without height": ({"prompts": [{"box": {"x": 1, "y": 2, "width": 3}}]}, 422, ["height"]),
    "a point without label": ({"prompts": [{"points": [{"x": 1, "y": 2}]}]}, 422, ["positive"]),
    "prompts not a list": ({"prompts": "a cat"}, 422, ["prompts"]),
    "an empty prompt": ({"prompts": [{}]}, 400, ["prompts[0]", "neither"]),
    "a NaN coordinate": (
        {"prompts": [{"points": [{"x": math.nan, "y": 2, "positive": True}]}]},
        400,
        ["prompts[0].points[0].x"],
    ),
    "unknown format": ({"format": "xml", "prompts": PROMPTS[:1]}, 400, ["format", "xml", "rle"]),
    "binary without prompts": ({"format": "binary"}, 400, ["binary", "json"]),
    "missing checkpoint": (
        {"sam2_version_id": "hiera_small", "prompts": PROMPTS[:1]},
        500,
        ["sam2.1_hiera_small.pt", "SAM_BLOCK_OFFLINE"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_answered_naming_the_problem(server, name):
    fields, status, words = BAD_REQUESTS[name]
    payload = {"image": {"type": "base64", "value": SCENE_B64}, "sam2_version_id": "demo", **fields}
    response = post(server, "/sam2/segment_image", payload)
    assert response.status_code == status, response.text[:2000]
    for word in words:
        assert word in response.text, (word, response.text[:2000])


def test_prompts_outside_the_image_are_clipped_or_get_an_empty_mask(server, meta):
    outside_box = {"box": {"x": 2000, "y": 2000, "width": 50, "height": 50}}
    overhanging = {"box": {"x": 60, "y": 125, "width": 240, "height": 150}}  # x1 = -60: clipped to 0
    far_click = {"points": [{"x": -40, "y": 10, "positive": True}]}
    masks, scores = rle_masks(segment(server, prompts=[outside_box, overhanging, far_click], format="rle"))
    assert len(masks) == 3  # one prediction per prompt, aligned
    assert not masks[0].any() and scores[0] == 0 and not masks[2].any() and scores[2] == 0
    clipped = {"box": {"x": 90, "y": 125, "width": 180, "height": 150}}  # the same box, clipped at x = 0
    assert_same(masks[1], scores[1], *meta_best(meta["demo"], clipped)[:2])
    assert post(server, "/sam2/embed_image", {"sam2_version_id": "demo", "image_id": "never-seen"}).status_code == 400


def test_eight_concurrent_clients_each_get_their_own_masks(server):
    from sam_block.runtime.models import MODELS
    from sam_block.runtime.predictor import PromptBatch

    scenes = [make_scene(240 + 8 * i, 320 + 12 * i, seed=i + 1) for i in range(8)]
    box = {"x": 110, "y": 125, "width": 140, "height": 150}

    def client(i):
        b64 = png_b64(scenes[i])
        embedded = post(
            server,
            "/sam2/embed_image",
            {"image": {"type": "base64", "value": b64}, "image_id": f"c{i}", "sam2_version_id": "demo"},
        )
        assert embedded.status_code == 200, embedded.text
        return rle_masks(segment(server, image_b64=b64, image_id=f"c{i}", prompts=[{"box": box}], format="rle"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    predictor = MODELS.predictor("demo", torch.device("cpu"))
    xyxy = np.array([[40, 50, 180, 200]], np.float32)
    for scene, ([mask], [score]) in zip(scenes, results):
        expected = predictor.predict(predictor.encode(scene[:, :, ::-1].copy()), PromptBatch(boxes=xyxy))
        assert mask.shape == scene.shape[:2]
        assert (mask == expected.masks.to_dense()[0]).all() and abs(score - expected.scores[0]) < 1e-5
    assert len({mask.tobytes() for (mask,), _ in results}) == 8


def test_the_api_and_the_workflow_step_share_embeddings(monkeypatch):
    """An image embedded over the API is not re-encoded by the step, and the reverse: both key the
    runtime's cache by the content of the same decoded pixels. In process (the routes through
    FastAPI's ASGI test client, the step through the real engine) so the encoder calls can be counted."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sam_block.runtime.predictor import Sam2Predictor
    from sam_block.server import sam2_api
    from tests.support import detections, load_example, run_workflow

    encoded = []
    real_encode = Sam2Predictor._encode_batch
    monkeypatch.setattr(
        Sam2Predictor, "_encode_batch", lambda self, images: encoded.append(len(images)) or real_encode(self, images)
    )
    client = TestClient(sam2_api.install(FastAPI()))
    boxes_workflow = load_example("a_boxes_input.json")
    first, second = png_b64(make_scene(seed=21)), png_b64(make_scene(seed=22))

    def step(image_b64):
        return run_workflow(
            boxes_workflow,
            image={"type": "base64", "value": image_b64},
            boxes=[detections([[40, 50, 180, 200]])],
            version="demo",
        )

    embedded = client.post(
        "/sam2/embed_image",
        json={"image": {"type": "base64", "value": first}, "image_id": "shared", "sam2_version_id": "demo"},
    )
    assert embedded.status_code == 200 and encoded == [1]
    assert len(step(first)[0]["predictions"]) == 1
    assert encoded == [1], "the step re-encoded an image the API had embedded"

    assert len(step(second)[0]["predictions"]) == 1 and encoded == [1, 1]
    answer = client.post(
        "/sam2/segment_image",
        json={
            "image": {"type": "base64", "value": second},
            "sam2_version_id": "demo",
            "prompts": [{"box": RECT}],
            "format": "rle",
        },
    )
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    assert encoded == [1, 1], "the API re-encoded an image the step had embedded"


def test_a_resent_image_under_its_image_id_is_not_decoded_again(monkeypatch):
    """Segment by image_id with the very payload that was embedded: no decoding, no encoding.
    Another image under the same id is decoded and encoded (the content wins)."""
    from sam_block.runtime.models import MODELS
    from sam_block.server import sam2_images

    decoded = []
    real_decode = sam2_images.decode_image
    monkeypatch.setattr(sam2_images, "decode_image", lambda image: decoded.append(1) or real_decode(image))
    predictor = MODELS.predictor("demo", torch.device("cpu"))
    ids = sam2_images.ImageIds()
    image = type("Image", (), {"type": "base64", "value": png_b64(make_scene(seed=31))})()
    first = sam2_images.resolve_image(predictor, image, "img", ids)
    again = sam2_images.resolve_image(predictor, image, "img", ids)
    assert decoded == [1] and again.embedding is first.embedding and not again.encoded
    other = type("Image", (), {"type": "base64", "value": png_b64(make_scene(seed=32))})()
    replaced = sam2_images.resolve_image(predictor, other, "img", ids)
    assert decoded == [1, 1] and replaced.digest != first.digest and replaced.encoded
    assert ids.get(predictor.model_key, "img").digest == replaced.digest
