"""A request can only name what is built in or registered — over HTTP (issue 24, item 4).

One real server (``python -m sam_block.serve``, downloads allowed: ``SAM_BLOCK_OFFLINE`` and
``HF_HUB_OFFLINE`` off, ``HF_ENDPOINT`` pointing at a local recorder) with one registered model.
A file path, a URL, an ``hf://`` URI and an unregistered Hugging Face repo id, given as ``version``
to ``/workflows/run`` (our step, as a runtime input and written into the step) and as
``sam2_version_id`` to ``/sam2/embed_image`` and ``/sam2/segment_image``, are a 400 naming the value and listing the available
names — and nothing is read or fetched:

- the path names a valid checkpoint (the demo weights): had the server loaded it, the request
  would have succeeded; its access time (set before its modification time, so that any read updates
  it under ``relatime``) is unchanged — checked against a control file read by this test;
- another path names a FIFO: an ``open`` of it would block the request (a timeout here) and would
  leave a reader, which a non-blocking writer's ``open`` would find (no ``ENXIO``);
- the URL and the Hugging Face hub are a recorder on loopback that serves the demo weights to any
  request: it must have received none.
"""

from __future__ import annotations

import base64
import errno
import http.server
import json
import os
import threading
import time
from pathlib import Path

import cv2
import pytest
import requests

from sam_block.runtime.variants import get_variant
from tests.http_server import LocalServer
from tests.support import load_example, make_scene

pytestmark = pytest.mark.slow  # one server start (~30-60 s on the shared machine)

TIMEOUT_S = 60  # a refusal is immediate; a request blocked on the FIFO fails here
SCENE = make_scene(120, 160, seed=0)
SCENE_INPUT = {"type": "base64", "value": base64.b64encode(cv2.imencode(".png", SCENE)[1].tobytes()).decode()}
DEMO_BYTES = Path(get_variant("demo").bundled).read_bytes()
DEMO_CONFIG = str(Path(get_variant("demo").bundled).parents[1] / "configs" / "sam2.1_demo.yaml")


class Recorder(http.server.ThreadingHTTPServer):
    """Answers every GET/HEAD on loopback with the demo weights, and remembers the paths asked for."""

    def __init__(self):
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool):
                recorder.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", str(len(DEMO_BYTES)))
                self.end_headers()
                if body:
                    self.wfile.write(DEMO_BYTES)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def untouched_file(path: Path, data: bytes) -> Path:
    """`data` at `path`, its access time an hour before its modification time (a read updates it)."""
    path.write_bytes(data)
    stat = path.stat()
    os.utime(path, ns=(stat.st_mtime_ns - 3600 * 10**9, stat.st_mtime_ns))
    return path


def has_reader(fifo: Path) -> bool:
    """Whether any process has `fifo` open for reading (or is blocked opening it)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)  # (also releases a reader blocked in open: it reads end-of-file)
    return True


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry_http")
    (folder / "weights").mkdir()
    (folder / "weights" / "shapes.pt").write_bytes(DEMO_BYTES)
    registry = folder / "models.json"
    registry.write_text(json.dumps({"my_shapes": {"checkpoint": "weights/shapes.pt", "config": DEMO_CONFIG}}))
    sentinel = untouched_file(folder / "sentinel_sam2.1_demo.pt", DEMO_BYTES)
    fifo = folder / "sentinel_fifo.pt"
    os.mkfifo(fifo)
    recorder = Recorder()
    server = LocalServer(
        folder / "checkpoints", SAM_BLOCK_MODELS=str(registry), SAM_BLOCK_OFFLINE="0", HF_HUB_OFFLINE="0",
        HF_ENDPOINT=recorder.url, HF_HOME=str(folder / "hf"),
    )  # fmt: skip
    try:
        with server:
            yield {"server": server, "folder": folder, "sentinel": sentinel, "fifo": fifo, "recorder": recorder}
    finally:
        has_reader(fifo)  # a writer's open and close: never leaves a server thread blocked on the FIFO
        recorder.shutdown()
        recorder.server_close()


def refused_names(setup) -> dict:
    return {
        "path": str(setup["sentinel"]),
        "fifo": str(setup["fifo"]),
        "url": f"{setup['recorder'].url}/sam2.1_demo.pt",
        "hf-uri": "hf://facebook/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt",
        "hf-repo": "someone/sam2-finetune",
    }


def post(server, path: str, payload: dict) -> requests.Response:
    return requests.post(
        server.url + path, data=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S
    )


def assert_refusal(response: requests.Response, name: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:2000])
    text = response.text
    assert f"Unknown SAM 2 version {json.dumps(repr(name))[1:-1]}" in text, text[:2000]
    assert "Use one of: hiera_tiny, hiera_small" in text and "demo" in text, text[:2000]
    assert ", my_shapes (" in text, text[:2000]  # the registered name is offered
    assert "registered by the operator in SAM_BLOCK_MODELS" in text, text[:2000]


@pytest.mark.parametrize("kind", ["path", "fifo", "url", "hf-uri", "hf-repo"])
def test_a_path_url_or_unregistered_repo_is_a_400_listing_the_names(kind, setup):
    server = setup["server"]
    name = refused_names(setup)[kind]
    boxes = {"image": {"width": 160, "height": 120}, "predictions": [
        {"x": 50, "y": 50, "width": 40, "height": 40, "class": "a", "class_id": 0, "confidence": 0.9,
         "detection_id": "d1"},
    ]}  # fmt: skip
    definition = load_example("a_boxes_input.json")
    as_input = post(
        server,
        "/workflows/run",
        {"specification": definition, "inputs": {"image": SCENE_INPUT, "boxes": boxes, "version": name}},
    )
    assert_refusal(as_input, name)
    definition["steps"][0]["version"] = name  # written into the step: refused when the workflow compiles
    in_step = post(
        server, "/workflows/run", {"specification": definition, "inputs": {"image": SCENE_INPUT, "boxes": boxes}}
    )
    assert_refusal(in_step, name)
    for route in ("/sam2/embed_image", "/sam2/segment_image"):
        assert_refusal(post(server, route, {"image": SCENE_INPUT, "sam2_version_id": name}), name)


def test_nothing_was_read_or_fetched(setup):
    """After the refusals above (run first: this module's tests run in file order)."""
    server = setup["server"]
    names = refused_names(setup)
    for name in names.values():  # refused again here, so this test also stands alone
        assert_refusal(post(server, "/sam2/embed_image", {"image": SCENE_INPUT, "sam2_version_id": name}), name)
    assert setup["recorder"].requests == []  # no download from the URL, no call to the hub
    assert not has_reader(setup["fifo"])  # nobody opened the FIFO
    sentinel = setup["sentinel"].stat()
    control = untouched_file(setup["folder"] / "control.pt", b"x" * 64)
    before = control.stat().st_atime_ns
    time.sleep(0.01)
    control.read_bytes()
    if control.stat().st_atime_ns != before:  # this filesystem records reads (not mounted noatime)
        assert sentinel.st_atime_ns < sentinel.st_mtime_ns, "the server read the sentinel checkpoint"
    # and the registered name does load (the same server can read what the operator registered)
    registered = post(setup["server"], "/sam2/embed_image", {"image": SCENE_INPUT, "sam2_version_id": "my_shapes"})
    assert registered.status_code == 200, registered.text[:2000]
