"""Inference's own model blocks from the CLI: `sam-block run example_workflows/c_roboflow_detector_to_sam.json`
compiles (a model manager and the API key reach the engine, as inference's CLI passes them), and when the
Roboflow API cannot serve the model the run stops with one line naming the step, the model, and that it
needs network access and a key.

No test reaches Roboflow: inference is pointed (its own ``API_BASE_URL``) at a closed loopback port, a host
that never resolves, or a loopback stand-in for the Roboflow API that records what it was sent and refuses.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from sam_block.cli import main
from sam_block.cli.engine import API_KEY, MODEL_MANAGER, engine_init_parameters, init_engine, steps_needing
from tests.conftest import EXAMPLES
from tests.http_server import free_port

DATA = EXAMPLES / "data"
DETECTOR = EXAMPLES / "c_roboflow_detector_to_sam.json"


@pytest.fixture
def no_key(monkeypatch):
    for name in ("ROBOFLOW_API_KEY", "API_KEY"):
        monkeypatch.delenv(name, raising=False)


def point_inference_at(monkeypatch, base_url: str) -> None:
    """Where inference's model registry asks for model metadata (inference.core.env.API_BASE_URL)."""
    import inference.core.roboflow_api as roboflow_api

    monkeypatch.setattr(roboflow_api, "API_BASE_URL", base_url)


def test_only_workflows_with_model_blocks_get_a_model_manager(no_key):
    from inference.core.interfaces.workflows_models_provider import ModelManagerModelsProvider

    detector = json.loads(DETECTOR.read_text())
    assert list(steps_needing(detector, "model_manager")) == ["detector"]
    assert isinstance(engine_init_parameters(detector)[MODEL_MANAGER], ModelManagerModelsProvider)
    boxes_only = json.loads((EXAMPLES / "a_boxes_input.json").read_text())
    assert steps_needing(boxes_only, "model_manager") == {} and engine_init_parameters(boxes_only) == {}
    init_engine(
        detector
    )  # compiles: was "Could not resolve init parameter model_manager to initialise step `detector`"


def test_api_key_comes_from_the_flag_else_the_environment(no_key, monkeypatch):
    definition = json.loads((EXAMPLES / "a_boxes_input.json").read_text())
    assert API_KEY not in engine_init_parameters(definition)
    monkeypatch.setenv("API_KEY", "from-api-key")
    assert engine_init_parameters(definition)[API_KEY] == "from-api-key"
    monkeypatch.setenv("ROBOFLOW_API_KEY", "from-env")  # inference's order: ROBOFLOW_API_KEY first
    assert engine_init_parameters(definition)[API_KEY] == "from-env"
    assert engine_init_parameters(definition, api_key="from-flag")[API_KEY] == "from-flag"


@pytest.mark.parametrize(
    "base_url, reason",
    [(f"http://127.0.0.1:{free_port()}", "connection refused"), ("http://roboflow-api.invalid", "host never resolves")],
    ids=["refused", "dns"],
)
def test_offline_a_detector_step_fails_in_one_line_naming_the_model(
    base_url, reason, no_key, monkeypatch, tmp_path, capsys
):
    point_inference_at(monkeypatch, base_url)
    assert main(["run", str(DETECTOR), str(DATA / "scene.jpg"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (
        err.startswith("sam-block: error: ")
        and "step 'detector' (roboflow_core/roboflow_object_detection_model@v2)" in err
    )
    assert "could not load model 'coco/3' from the Roboflow API (Could not connect to Roboflow API)" in err
    assert (
        "need network access to api.roboflow.com and an API key (none is set: pass --api-key KEY or set ROBOFLOW_API_KEY)"
        in err
    )
    assert not (tmp_path / "out" / "scene.png").exists()


class FakeRoboflowAPI(http.server.ThreadingHTTPServer):
    """Stands in for api.roboflow.com on loopback: records each request's path and Authorization
    header and answers 401, as Roboflow does for a key it does not know."""

    def __init__(self) -> None:
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.requests.append((handler.path, handler.headers.get("Authorization")))
                body = json.dumps({"error": {"message": "This API key does not exist (or has been revoked)."}}).encode()
                handler.send_response(401)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_api_key_reaches_the_roboflow_api_and_a_refusal_is_one_line(how, no_key, monkeypatch, tmp_path, capsys):
    server = FakeRoboflowAPI()
    try:
        point_inference_at(monkeypatch, server.url)
        argv = [
            "run",
            str(DETECTOR),
            str(DATA / "scene.jpg"),
            "--out",
            str(tmp_path / "out"),
            "--param",
            "model_id=my-project/7",
            "--no-progress",
        ]
        if how == "flag":
            argv += ["--api-key", "test-key-123"]
        else:
            monkeypatch.setenv("ROBOFLOW_API_KEY", "test-key-123")
        assert main(argv) == 2
    finally:
        server.shutdown()
        server.server_close()
    assert server.requests and server.requests[0][1] == "Bearer test-key-123"
    assert "modelId=my-project%2F7" in server.requests[0][0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "step 'detector'" in err and "could not load model 'my-project/7' from the Roboflow API" in err
    assert "an API key (one is given)" in err and "test-key-123" not in err  # the key is never printed


def test_api_key_with_ray_is_refused_with_what_to_do_instead(tmp_path, capsys):
    argv = ["run", str(DETECTOR), str(DATA / "scene.jpg"), "--out", str(tmp_path), "--api-key", "k", "--ray", "local"]
    assert main(argv) == 2
    assert "with --ray set ROBOFLOW_API_KEY where they run instead" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports inference's model registry: ~40-60 s on the shared 2-core machine
def test_the_console_path_prints_exactly_one_line_offline(tmp_path):
    """As a user runs it: a new process, inference's API_BASE_URL on a closed port, no key — stderr is the
    one line (no import-time notes from transformers or inference), exit code 2."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("ROBOFLOW_API_KEY", "API_KEY", "TRANSFORMERS_VERBOSITY")}
    env.update(
        API_BASE_URL=f"http://127.0.0.1:{free_port()}",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    argv = [
        sys.executable,
        "-m",
        "sam_block.cli",
        "run",
        str(DETECTOR),
        str(DATA / "scene.jpg"),
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sam-block: error: step 'detector'"), done.stderr
    assert "model 'coco/3'" in done.stderr and "network access" in done.stderr and "API key" in done.stderr
