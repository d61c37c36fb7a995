"""The click-to-segment page (``GET /sam_block/annotate``) in a real headless Chromium (the OS
package, driven by Playwright), against a real server (``python -m sam_block.serve``) on
loopback, on the bundled ``demo`` model and generated scenes. Nothing is mocked: the page's
requests reach the server's ``/sam2/embed_image`` and ``/sam2/segment_image``.

One server and one browser serve the whole module (a server start costs tens of seconds here);
the last test stops the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tests.browser import (
    canvas_rgb,
    click_image,
    drag_image,
    interior_point,
    launch,
    missing_browser,
    wait_for_idle,
    wait_for_masks,
    write_scene_png,
)
from tests.http_server import LocalServer

_MISSING = missing_browser()
if _MISSING:
    pytest.skip(_MISSING, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow  # one server start (~45 s on the shared machine) and a browser

PAGE = "/sam_block/annotate"
SCENE_SEED, SCENE_HEIGHT, SCENE_WIDTH = 6, 300, 400  # three shapes, none tiny; not square


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("annotate_saved")


@pytest.fixture(scope="module")
def server(tmp_path_factory, save_dir):
    # the demo model is bundled: an empty checkpoint directory, offline
    with LocalServer(tmp_path_factory.mktemp("no_checkpoints"), args=["--save-dir", str(save_dir)]) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    return path, write_scene_png(path, SCENE_SEED, SCENE_HEIGHT, SCENE_WIDTH)


class Watched:
    """A page and everything it did: console errors, uncaught errors, dialogs, requests."""

    def __init__(self, page, origin: str):
        self.page, self.origin = page, origin
        self.console_errors, self.page_errors, self.dialogs, self.requests = [], [], [], []
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", lambda request: self.requests.append(request))

    def posts(self, path: str) -> list:
        return [r for r in self.requests if r.method == "POST" and urlsplit(r.url).path == path]

    def foreign_requests(self) -> list:
        return [
            r.url
            for r in self.requests
            if not r.url.startswith(("blob:", "data:")) and not r.url.startswith(self.origin + "/")
        ]

    def assert_clean(self) -> None:
        assert self.console_errors == [] and self.page_errors == [] and self.dialogs == []
        assert self.foreign_requests() == []


@pytest.fixture
def watched(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    yield Watched(page, server.url)
    context.close()


def open_page(watched: Watched, server, query: str = "") -> None:
    watched.page.goto(server.url + PAGE + query)
    watched.page.wait_for_selector("#version option[value='demo']", state="attached")


def open_scene(watched: Watched, path: Path) -> str:
    """Open the scene with the file picker; returns the image_id the embedding answered."""
    with watched.page.expect_response(lambda r: urlsplit(r.url).path == "/sam2/embed_image") as answer:
        watched.page.set_input_files("#file", str(path))
    assert answer.value.status == 200, answer.value.text()
    watched.page.locator("#status", has_text="embedded").wait_for()
    return answer.value.json()["image_id"]


def export_coco(page, tmp_path: Path) -> tuple:
    with page.expect_download() as download:
        page.click("#export")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    return target, json.loads(target.read_text())


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def meta_demo_predictor():
    """Meta's SAM2ImagePredictor on the bundled demo weights (feature sizes set from the model's
    256-px input: Meta hard-codes those of 1024 px)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_block.runtime.models import config_path
    from sam_block.runtime.variants import get_variant

    variant = get_variant("demo")
    config = OmegaConf.load(config_path(variant))
    for key, value in {
        "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    }.items():  # what Meta's build_sam2(apply_postprocessing=True) sets
        OmegaConf.update(config, key, value, force_add=True)
    OmegaConf.resolve(config)
    model = instantiate(config.model, _recursive_=True)
    model.load_state_dict(torch.load(variant.bundled, map_location="cpu", weights_only=True)["model"])
    predictor = SAM2ImagePredictor(model.eval())
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return predictor


def test_page_is_served_offline_with_no_console_errors(server, watched):
    answer = requests.get(server.url + PAGE, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert f"page: {server.url}{PAGE}" in server.log_tail(20000)  # printed at start

    open_page(watched, server)
    page = watched.page
    # the offline server has only the bundled demo model: it is picked, the others say why not
    assert page.input_value("#version") == "demo"
    assert "checkpoint missing" in page.locator("#version option[value='hiera_tiny']").inner_text()
    assert page.locator("#save").is_visible()  # the server was started with --save-dir
    assert {urlsplit(r.url).path for r in watched.requests} == {
        PAGE,
        "/sam_block/static/annotate.js",
        "/sam_block/static/annotate.css",
        "/sam_block/annotate/config",
    }
    watched.assert_clean()


def test_click_and_shift_click_segment_one_object_and_export_the_api_mask(server, watched, scene, tmp_path):
    path, truth = scene
    open_page(watched, server)
    page = watched.page
    image_id = open_scene(watched, path)
    assert len(watched.posts("/sam2/embed_image")) == 1
    before = canvas_rgb(page).astype(int)
    assert before.shape == (SCENE_HEIGHT, SCENE_WIDTH, 3)

    # click inside the biggest shape: /sam2/segment_image with the image_id, and the mask on screen
    shape = truth.masks[int(np.argmax(truth.masks.sum(axis=(1, 2))))]
    x, y = interior_point(shape)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/sam2/segment_image") as first:
        click_image(page, x, y)
    wait_for_masks(page, 1)
    sent = first.value.request.post_data_json
    assert sent["image_id"] == image_id and sent["format"] == "rle"
    assert sent["prompts"]["prompts"][0]["points"] == [
        {"x": pytest.approx(x + 0.5, abs=1), "y": pytest.approx(y + 0.5, abs=1), "positive": True}
    ]
    first_mask = decode(first.value.json()["predictions"][0]["masks"])
    changed = np.abs(canvas_rgb(page).astype(int) - before).max(axis=2) > 0
    near_click = np.hypot(*np.mgrid[0:SCENE_HEIGHT, 0:SCENE_WIDTH][::-1] - np.array([x, y])[:, None, None]) < 9
    assert first_mask[shape].mean() > 0.9  # the demo model finds the shape...
    assert changed[first_mask].mean() > 0.99  # ...and the page paints it
    assert changed[~first_mask & ~near_click].mean() < 0.001  # and nothing else

    # shift-click on the background next to the shape: a negative point of the same object
    background = ~truth.masks.any(axis=0)
    ys, xs = np.nonzero(background)
    nearest = int(np.argmin(np.hypot(xs - x, ys - y)))
    nx, ny = int(xs[nearest]), int(ys[nearest])
    with page.expect_response(lambda r: urlsplit(r.url).path == "/sam2/segment_image") as second:
        click_image(page, nx, ny, shift=True)
    wait_for_masks(page, 2)
    refined = second.value.request.post_data_json
    assert refined["image_id"] == image_id
    assert [p["positive"] for p in refined["prompts"]["prompts"][0]["points"]] == [True, False]
    assert page.locator("#objects li").count() == 1

    # "Export COCO": the mask exactly as the API returned it, loadable by pycocotools
    target, document = export_coco(page, tmp_path)
    assert target.name == "scene.coco.json"
    coco = COCO(str(target))
    [annotation] = coco.loadAnns(coco.getAnnIds())
    served = second.value.json()["predictions"][0]
    assert annotation["segmentation"] == served["masks"]
    assert annotation["score"] == pytest.approx(served["confidence"])
    exported = coco.annToMask(annotation).astype(bool)
    rle = {"size": served["masks"]["size"], "counts": served["masks"]["counts"].encode("ascii")}
    assert annotation["area"] == int(mask_utils.area(rle)) == int(exported.sum())
    assert annotation["bbox"] == mask_utils.toBbox(rle).tolist()
    assert document["images"] == [{"id": 1, "file_name": "scene.png", "width": SCENE_WIDTH, "height": SCENE_HEIGHT}]

    # the same two requests sent by hand give the same mask...
    for body, answer in ((sent, first), (refined, second)):
        replay = requests.post(server.url + "/sam2/segment_image", json=body, timeout=120)
        assert replay.status_code == 200, replay.text[:500]
        assert replay.json()["predictions"][0]["masks"] == answer.value.json()["predictions"][0]["masks"]
    # ...and so does Meta's predictor on the same weights (the first mask's logits refine the second)
    meta = meta_demo_predictor()
    meta.set_image(truth.image)
    masks, scores, logits = meta.predict(
        point_coords=np.array([[p["x"], p["y"]] for p in sent["prompts"]["prompts"][0]["points"]]),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    best = int(np.argmax(scores))
    points = refined["prompts"]["prompts"][0]["points"]
    masks, scores, _ = meta.predict(
        point_coords=np.array([[p["x"], p["y"]] for p in points]), point_labels=np.array([int(p["positive"]) for p in points]),
        mask_input=logits[best][None], multimask_output=refined["multimask_output"],
    )  # fmt: skip
    meta_mask = masks[int(np.argmax(scores))].astype(bool)
    assert (meta_mask & exported).sum() / (meta_mask | exported).sum() > 0.99
    assert float(scores.max()) == pytest.approx(annotation["score"], abs=1e-3)
    watched.assert_clean()


def test_two_labels_box_undo_export_two_categories_and_save(server, watched, scene, save_dir, tmp_path):
    path, truth = scene
    open_page(watched, server)
    page = watched.page
    open_scene(watched, path)
    first_shape, second_shape = np.argsort(-truth.masks.sum(axis=(1, 2)))[:2]

    page.fill("#label", "large")
    x, y = interior_point(truth.masks[first_shape])
    click_image(page, x, y)
    wait_for_masks(page, 1)
    one_point = page.locator("#objects li").inner_text()
    first_rle = watched.posts("/sam2/segment_image")[-1]
    ys, xs = np.nonzero(truth.masks[first_shape])
    click_image(page, int(xs[0]), int(ys[0]))  # a second positive point
    wait_for_masks(page, 2)
    page.keyboard.press("Control+z")  # back to the single point
    wait_for_masks(page, 3)
    undone = watched.posts("/sam2/segment_image")[-1].post_data_json
    assert undone == first_rle.post_data_json and page.locator("#objects li").inner_text() == one_point

    page.keyboard.press("Enter")  # next object, drawn as a box; the label field is remembered...
    assert page.input_value("#label") == "large"
    page.fill("#label", "second")  # ...and renamed
    x1, y1, x2, y2 = truth.boxes[second_shape]
    drag_image(page, x1, y1, x2 - 1, y2 - 1)
    wait_for_masks(page, 4)
    boxed = watched.posts("/sam2/segment_image")[-1].post_data_json["prompts"]["prompts"][0]
    assert "points" not in boxed and boxed["box"]["width"] == pytest.approx(x2 - x1 - 1, abs=1.5)
    assert page.locator("#objects li").count() == 2

    _, document = export_coco(page, tmp_path)
    # each mask carries its label on the image, at the top left corner of its box (on or below its top edge)
    tags = page.locator("#tags .tag")
    assert tags.all_inner_texts() == ["#1 large", "#2 second"]
    canvas = page.locator("#canvas").bounding_box()
    for tag, annotation in zip(tags.all(), document["annotations"]):
        tag_box, (x, y) = tag.bounding_box(), annotation["bbox"][:2]
        left = canvas["x"] + x * canvas["width"] / SCENE_WIDTH
        top = canvas["y"] + y * canvas["height"] / SCENE_HEIGHT
        assert tag_box["x"] == pytest.approx(left, abs=1)
        assert min(abs(tag_box["y"] + tag_box["height"] - top), abs(tag_box["y"] - top)) <= 1
    assert [c["name"] for c in document["categories"]] == ["large", "second"]
    assert [a["category_id"] for a in document["annotations"]] == [1, 2]
    for annotation, shape in zip(document["annotations"], (first_shape, second_shape)):
        mask = decode(annotation["segmentation"])
        assert (mask & truth.masks[shape]).sum() / (mask | truth.masks[shape]).sum() > 0.8

    page.click("#save")  # the server was started with --save-dir: the same file lands there
    page.locator("#status", has_text="Saved").wait_for()
    saved = json.loads((save_dir / "scene.coco.json").read_text())
    assert saved["annotations"] == document["annotations"] and saved["categories"] == document["categories"]
    assert [p.name for p in save_dir.iterdir()] == ["scene.coco.json"]  # no temporary file left
    watched.assert_clean()


def test_a_click_while_a_request_is_in_flight_is_sent_next(server, watched, scene):
    path, truth = scene
    open_page(watched, server)
    page = watched.page
    open_scene(watched, path)
    held = []
    page.route(
        "**/sam2/segment_image", lambda route: held.append(route)
    )  # hold the first request (the server answers it later)
    x, y = interior_point(truth.masks[0])
    click_image(page, x, y)
    page.wait_for_selector("html[data-requests='busy']", state="attached")
    while not held:
        page.wait_for_timeout(20)
    ys, xs = np.nonzero(truth.masks[0])
    click_image(page, int(xs[len(xs) // 3]), int(ys[len(ys) // 3]))
    page.wait_for_timeout(300)
    assert len(held) == 1  # one request at a time...
    held[0].continue_()
    page.unroute("**/sam2/segment_image")
    wait_for_masks(page, 2)
    wait_for_idle(page)
    sent = [r.post_data_json["prompts"]["prompts"][0]["points"] for r in watched.posts("/sam2/segment_image")]
    assert [len(points) for points in sent] == [1, 2]  # ...and the second click was not lost
    watched.assert_clean()


def test_a_stopped_server_is_reported_in_the_page(server, watched, scene):
    """Last in the module: it stops the shared server."""
    path, truth = scene
    open_page(watched, server)
    page = watched.page
    open_scene(watched, path)
    server.stop()
    x, y = interior_point(truth.masks[0])
    click_image(page, x, y)
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "Cannot reach the server" in error.inner_text() and "still running" in error.inner_text()
    page.wait_for_timeout(1000)
    assert len(watched.posts("/sam2/segment_image")) == 1  # reported once, not retried in a loop
    assert watched.dialogs == [] and watched.page_errors == []
