"""Serve safely (issue 18): real servers (``python -m sam_block.serve``) on loopback, real requests.

A server start costs tens of seconds on the shared machine, so the checks are grouped per server:
``default`` (no options: the session's shared ``default_server``), ``switched`` (``--allow-custom-python --allow-origin --allow-host``) and
``operator`` (binds 0.0.0.0 with a generated token; the operator set inference's
``ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS=True`` and ``ALLOW_ORIGINS``). Requests go to
127.0.0.1 only; other names are sent as ``Host`` headers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.conftest import load_example, make_scene
from tests.http_server import (
    REPO,
    LocalServer,
    box_prediction,
    boxes_input,
    free_port,
    image_input,
    polygon_mask,
    server_env,
)  # fmt: skip

pytestmark = pytest.mark.slow  # two server starts of its own (~45 s each on the shared 2-core machine)

FOREIGN = "https://evil.example"
TIMEOUT_S = 300


def custom_python_workflow(marker: Path, escaped: bool = False) -> str:
    """The body of a ``/workflows/run`` whose custom Python block writes ``marker`` when compiled and when run."""
    code = (
        f"open({str(marker)!r}, 'a').write('compiled\\n')\n"
        "def run(self):\n"
        f"    open({str(marker)!r}, 'a').write('ran\\n')\n"
        "    return {'answer': 42}\n"
    )
    block = {
        "type": "DynamicBlockDefinition",
        "manifest": {
            "type": "ManifestDescription", "block_type": "WriteAFile", "inputs": {},
            "outputs": {"answer": {"type": "DynamicOutputDefinition", "kind": []}},
        },
        "code": {"type": "PythonCode", "run_function_code": code},
    }  # fmt: skip
    specification = {
        "version": "1.0",
        "inputs": [],
        "dynamic_blocks_definitions": [block],
        "steps": [{"type": "WriteAFile", "name": "write"}],
        "outputs": [{"type": "JsonField", "name": "answer", "selector": "$steps.write.answer"}],
    }
    body = json.dumps({"specification": specification, "inputs": {}})
    if escaped:  # the same key spelled with a JSON escape: still parsed by every JSON reader
        body = body.replace('"dynamic_blocks_definitions"', '"dynamic\\u005fblocks_definitions"')
        assert "dynamic_blocks_definitions" not in body
    return body


def post_json(server, path: str, body: str, headers=None) -> requests.Response:
    return requests.post(
        server.url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=TIMEOUT_S
    )


def preflight(server, origin: str, headers=None) -> requests.Response:
    return requests.options(
        server.url + "/workflows/run",
        headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization", **(headers or {}),
        },
        timeout=60,
    )  # fmt: skip


def assert_refused(response: requests.Response, status: int, *words: str) -> str:
    """A refusal: the status, a JSON body of one line (no traceback) naming the words (the switch)."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    body = response.json()
    assert list(body) == ["message"]
    message = body["message"]
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def sam_block_run(server, headers=None) -> requests.Response:
    scene = make_scene()
    height, width = scene.shape[:2]
    payload = {
        "specification": load_example("a_boxes_input.json"),
        "inputs": {
            "image": image_input(scene),
            "boxes": boxes_input(width, height, [box_prediction(35, 45, 185, 205, "rectangle", 1, "d1")]),
            "version": "demo",
        },
    }
    return post_json(server, "/workflows/run", json.dumps(payload), headers)


@pytest.fixture(scope="module")
def default(default_server):
    """The server with no options (shared by the session; these tests use only the bundled demo weights)."""
    return default_server


@pytest.fixture(scope="module")
def switched(tmp_path_factory):
    args = ["--allow-custom-python", "--allow-origin", "https://app.example", "--allow-host", "sam.test"]
    with LocalServer(tmp_path_factory.mktemp("ckpt"), args=args) as running:
        yield running


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    with LocalServer(
        tmp_path_factory.mktemp("ckpt"), bind="0.0.0.0", args=["--token"],
        ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS="True", ALLOW_ORIGINS="https://ops.example",
    ) as running:  # fmt: skip
        assert running.token, running.log_tail()
        yield running


# --- defaults ---------------------------------------------------------------------------


def test_default_start_up_lines_say_what_is_refused(default):
    log = default.log_tail(100_000)
    assert "custom Python in workflows: off (the default; --allow-custom-python turns it on)" in log
    assert "CORS: only this server's own origin" in log
    assert "Host: served for 127.0.0.1, localhost, ::1" in log
    assert "token: none (loopback" in log


def test_foreign_origin_preflight_is_refused_and_the_own_origin_is_allowed(default):
    refused = preflight(default, FOREIGN)
    assert_refused(refused, 403, FOREIGN, f"--allow-origin {FOREIGN}")
    assert "access-control-allow-origin" not in refused.headers
    for own in (f"http://127.0.0.1:{default.port}", f"http://localhost:{default.port}", f"http://[::1]:{default.port}"):
        allowed = preflight(default, own, headers={"Host": own.split("//")[1]})
        assert allowed.status_code == 200, (own, allowed.text)
        assert allowed.headers["access-control-allow-origin"] == own


def test_our_workflow_step_runs_for_the_same_origin_page_and_not_for_a_foreign_one(default):
    own = {"Origin": f"http://127.0.0.1:{default.port}"}
    response = sam_block_run(default, own)
    assert response.status_code == 200, response.text[:2000]
    [output] = response.json()["outputs"]
    [prediction] = output["predictions"]["predictions"]
    assert (prediction["class"], prediction["parent_id"]) == ("rectangle", "d1")
    mask = polygon_mask(prediction["points"], 300, 470)
    rectangle = np.zeros_like(mask)
    cv2.rectangle(rectangle.view(np.uint8), (40, 50), (180, 200), 1, -1)
    assert (mask & rectangle).sum() / (mask | rectangle).sum() > 0.8  # the demo model finds the drawn rectangle
    assert_refused(sam_block_run(default, {"Origin": FOREIGN}), 403, "--allow-origin")


def test_custom_python_is_refused_and_does_not_run(default, tmp_path):
    marker = tmp_path / "written_by_custom_python.txt"
    for headers in ({}, {"Origin": FOREIGN}, {"Origin": f"http://127.0.0.1:{default.port}"}):
        response = post_json(default, "/workflows/run", custom_python_workflow(marker), headers)
        assert_refused(response, 403, "--allow-origin" if headers.get("Origin") == FOREIGN else "--allow-custom-python")
    # a "simple" cross-site POST (no preflight: text/plain) is refused as well, before any route reads it
    simple = requests.post(
        default.url + "/workflows/run", data=custom_python_workflow(marker),
        headers={"Content-Type": "text/plain", "Origin": FOREIGN}, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert_refused(simple, 403, "--allow-origin")
    escaped = post_json(default, "/workflows/run", custom_python_workflow(marker, escaped=True))
    assert_refused(escaped, 403, "--allow-custom-python")
    describe = json.loads(custom_python_workflow(marker))["specification"]["dynamic_blocks_definitions"]
    response = post_json(default, "/workflows/blocks/describe", json.dumps({"dynamic_blocks_definitions": describe}))
    assert_refused(response, 403, "--allow-custom-python")
    assert not marker.exists()


def test_foreign_host_is_refused_and_loopback_names_are_served(default):
    port = default.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
        response = requests.get(default.url + "/readiness", headers={"Host": host}, timeout=60)
        assert_refused(response, 400, f"--allow-host {host.split(':')[0]}")
    # DNS rebinding: a page on evil.example (now resolving to 127.0.0.1) posts a workflow "same-origin"
    rebinding = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert_refused(sam_block_run(default, rebinding), 400, "--allow-host evil.example")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        response = requests.get(default.url + "/readiness", headers={"Host": host}, timeout=60)
        assert response.status_code == 200, (host, response.text)


# --- switches -----------------------------------------------------------------------------


def test_switches_are_logged_at_start(switched):
    log = switched.log_tail(100_000)
    assert "custom Python in workflows: ON" in log and "(--allow-custom-python)" in log
    assert "--allow-origin https://app.example" in log
    assert "Host: served for 127.0.0.1, localhost, ::1, sam.test" in log


def test_allow_custom_python_runs_the_workflow(switched, tmp_path):
    marker = tmp_path / "written_by_custom_python.txt"
    response = post_json(switched, "/workflows/run", custom_python_workflow(marker))
    assert response.status_code == 200, response.text[:2000]
    assert response.json()["outputs"] == [{"answer": 42}]
    assert "ran" in marker.read_text().split()


def test_allow_origin_and_allow_host_are_honoured(switched):
    allowed = preflight(switched, "https://app.example")
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert_refused(preflight(switched, FOREIGN), 403, "--allow-origin")
    assert requests.get(switched.url + "/readiness", headers={"Host": f"sam.test:{switched.port}"}, timeout=60).ok
    assert_refused(requests.get(switched.url + "/readiness", headers={"Host": "other.test"}, timeout=60), 400)


# --- the operator's own settings; a non-loopback bind with a token -------------------------


def test_non_loopback_bind_without_token_refuses_to_start_in_one_line(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "sam_block.serve", "--host", "0.0.0.0", "--port", str(port)]
    done = subprocess.run(
        command, env=server_env(tmp_path), cwd=str(REPO), capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "0.0.0.0" in line and "--token" in line and "--no-token" in line and "SAM_BLOCK_TOKEN" in line


def test_token_is_required_on_every_route_but_info(operator, tmp_path):
    url, token = operator.url, operator.token
    log = operator.log_tail(100_000)
    assert f"token: generated: {token}" in log and "bound to 0.0.0.0" in log
    assert requests.get(url + "/info", timeout=60).status_code == 200
    for path in ("/readiness", "/workflows/blocks/describe", "/docs"):
        missing = requests.get(url + path, timeout=60)
        assert_refused(missing, 401, "Authorization: Bearer", "--no-token")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_refused(requests.get(url + path, headers={"Authorization": "Bearer " + token[:-1]}, timeout=60), 401)
        assert requests.get(url + path, headers=operator.headers, timeout=120).status_code == 200, path
    # the token in the URL is accepted only for the page's GET, never elsewhere (until the page exists, inference's
    # catch-all /{dataset_id}/{version_id} answers it: anything but our 401)
    page = requests.get(url + "/sam_block/annotate", params={"token": token}, timeout=60)
    assert page.status_code != 401, page.text
    assert_refused(requests.get(url + "/sam_block/annotate", timeout=60), 401)
    assert_refused(requests.get(url + "/readiness", params={"token": token}, timeout=60), 401)
    # custom Python, on by the operator's ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS=True: needs the token too
    marker = tmp_path / "written_by_custom_python.txt"
    assert_refused(post_json(operator, "/workflows/run", custom_python_workflow(marker)), 401)
    assert not marker.exists()
    response = post_json(operator, "/workflows/run", custom_python_workflow(marker), operator.headers)
    assert response.status_code == 200, response.text[:2000]
    assert response.json()["outputs"] == [{"answer": 42}]
    assert "ran" in marker.read_text().split()
    assert "ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS=True set by the operator" in log


def test_operator_allow_origins_is_honoured_and_preflights_need_no_token(operator):
    allowed = preflight(operator, "https://ops.example")
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
    assert_refused(preflight(operator, FOREIGN), 403, "--allow-origin")
    assert "CORS: origins from ALLOW_ORIGINS (set by the operator): https://ops.example" in operator.log_tail(100_000)


# --- the decisions themselves (no server) ----------------------------------------------------


def test_token_sources_and_refusals_to_start(tmp_path):
    from sam_block.server.app import _GENERATE, StartRefused, operator_variables, resolve_security

    assert resolve_security("0.0.0.0", operator={"SAM_BLOCK_TOKEN": "from-env"}).policy.token == "from-env"
    assert resolve_security("0.0.0.0", token="given", operator={"SAM_BLOCK_TOKEN": "x"}).policy.token == "given"
    generated = {resolve_security("0.0.0.0", token=_GENERATE, operator={}).policy.token for _ in range(3)}
    assert len(generated) == 3 and all(len(t) >= 32 for t in generated)
    assert resolve_security("0.0.0.0", no_token=True, operator={"SAM_BLOCK_TOKEN": "x"}).policy.token is None
    assert resolve_security("127.0.0.1", operator={}).policy.token is None
    assert resolve_security("::1", operator={}).policy.token is None
    for host in ("0.0.0.0", "192.168.1.20", "my-desktop", "::"):
        with pytest.raises(StartRefused, match="--no-token"):
            resolve_security(host, operator={})
    with pytest.raises(StartRefused, match="--token is empty"):
        resolve_security(token=" ", operator={})
    with pytest.raises(StartRefused, match="'evil.example/page' is not an origin"):
        resolve_security(allow_origins=["evil.example/page"], operator={})
    # a .env in the working directory (inference reads it) counts as the operator's; the environment wins
    (tmp_path / ".env").write_text("ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS=True\nALLOW_ORIGINS=https://a.example\n")
    found = operator_variables(tmp_path, environ={"ALLOW_ORIGINS": "https://b.example"})
    assert found["ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS"] == "True"
    assert found["ALLOW_ORIGINS"] == "https://b.example"
    honoured = resolve_security(operator=found)
    assert "ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS" not in honoured.environment  # left as the operator set it
    assert "ALLOW_ORIGINS" not in honoured.environment
    assert resolve_security("::1", operator={}).policy.allowed_hosts == {"::1", "localhost", "127.0.0.1"}
    assert resolve_security("fe80::1", token="t", operator={}).policy.host_allowed("fe80::1")
    assert resolve_security(allow_hosts=["*"], operator={}).policy.host_allowed("any.name.example")
    assert not resolve_security(allow_hosts=["Sam.Test."], operator={}).policy.host_allowed("other.test")
    assert resolve_security(allow_hosts=["Sam.Test."], operator={}).policy.host_allowed("sam.test")
    safe = resolve_security(port=9001, operator={})
    assert safe.environment == {
        "ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS": "False",
        "ALLOW_ORIGINS": "http://127.0.0.1:9001,http://localhost:9001,http://[::1]:9001",
    }


def test_routers_go_in_front_of_catch_all_routes_and_behind_the_security_layer(monkeypatch):
    """What build_app does with ROUTER_MODULES, on a small FastAPI app with inference's catch-all route."""
    import types

    from fastapi import APIRouter, FastAPI
    from fastapi.testclient import TestClient
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    from sam_block.server.app import include_routers, resolve_security
    from sam_block.server.security import PAGE_PATH, SecurityMiddleware

    app = FastAPI()
    app.get("/{dataset_id}/{version_id}")(lambda dataset_id, version_id: {"legacy": True})
    router = APIRouter()
    router.get(PAGE_PATH)(lambda: {"page": True})

    async def socket(websocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    router.routes.append(WebSocketRoute("/sam_block/socket", socket))

    monkeypatch.setitem(sys.modules, "_issue18_routes", types.SimpleNamespace(router=router))
    include_routers(app, ["_issue18_routes"])
    policy = resolve_security("0.0.0.0", port=80, token="s3cret", operator={}).policy
    app.add_middleware(SecurityMiddleware, policy=policy)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get(PAGE_PATH, params={"token": "s3cret"}).json() == {"page": True}
    assert client.get(PAGE_PATH, headers={"Authorization": "Bearer s3cret"}).json() == {"page": True}
    assert client.get(PAGE_PATH, params={"token": "wrong"}).status_code == 401
    assert client.get("/a/b").status_code == 401
    assert client.get("/a/b", headers={"Authorization": "Bearer s3cret"}).json() == {"legacy": True}
    # WebSockets pass the same checks: refused before the handshake completes, the reason in the close frame
    bearer = {"Authorization": "Bearer s3cret", "Host": "127.0.0.1"}
    with client.websocket_connect("/sam_block/socket", headers=bearer) as websocket:
        assert websocket.receive_text() == "hello"
    refusals = (
        ({"Host": "127.0.0.1"}, "token required"),
        ({**bearer, "Host": "evil.example"}, "--allow-host evil.example"),
        ({**bearer, "Origin": "https://evil.example"}, "--allow-origin"),
    )
    for headers, reason in refusals:
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/sam_block/socket", headers=headers) as websocket:
                websocket.receive_text()
        assert refused.value.code == 1008 and reason in refused.value.reason, (headers, refused.value.reason)
