"""`sam-block serve`: the server of ``python -m sam_block.serve`` from the CLI, one set of options.

One real server, started as ``sam-block serve --precision bf16`` (``SAM_BLOCK_PRECISION=fp32`` in its
environment: the flag must win): it prints what the module prints, answers ``/info`` and
``/sam2/embed_image`` with the module's safe defaults (loopback, no token on loopback, Host and Origin
checks, custom Python refused), and its SAM 2 answers are bf16's. Without a server: both spellings
parse the same options to the same values, and refuse a bad option or a broken ``SAM_BLOCK_MODELS``
file in one line with exit code 2.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import cv2
import pytest
import requests
import torch

from tests.http_server import LOOPBACK, REPO, SERVE_CLI, SERVE_MODULE, LocalServer, server_env
from tests.support import make_scene
from tests.test_serve_security import custom_python_workflow

TIMEOUT_S = 300
SCENE = make_scene(300, 470, seed=0)
PROMPTS = [
    {"box": {"x": 110, "y": 125, "width": 140, "height": 150}},
    {"points": [{"x": 300, "y": 120, "positive": True}, {"x": 380, "y": 240, "positive": False}]},
]
SCENE_B64 = base64.b64encode(cv2.imencode(".png", SCENE)[1].tobytes()).decode("ascii")


def both_parsers():
    from sam_block.cli.app import build_parser
    from sam_block.server.app import _parser

    cli = build_parser()
    return cli, _parser()


def options(namespace) -> dict:
    return {k: v for k, v in vars(namespace).items() if k not in ("command", "handler", "verbose", "debug")}


def test_both_spellings_take_the_same_options_to_the_same_values(tmp_path):
    cli, module = both_parsers()
    assert options(cli.parse_args(["serve"])) == options(module.parse_args([]))  # the same defaults
    given = [
        "--host", "0.0.0.0", "--port", "9123", "--log-level", "info", "--working-dir", str(tmp_path),
        "--precision", "fp32", "--allow-custom-python", "--allow-origin", "https://a.example",
        "--allow-origin", "https://b.example", "--allow-host", "me.lan", "--token", "--save-dir", str(tmp_path),
    ]  # fmt: skip
    parsed = options(module.parse_args(given))
    assert options(cli.parse_args(["serve", *given])) == parsed
    assert parsed["host"] == "0.0.0.0" and parsed["allow_origin"] == ["https://a.example", "https://b.example"]
    assert options(cli.parse_args(["serve", "--token", "abc"])) == options(module.parse_args(["--token", "abc"]))


@pytest.mark.parametrize(
    "entry, argv, words",
    [
        (SERVE_CLI, ["--port", "nine"], ["sam-block: error: argument --port: invalid int value: 'nine'"]),
        (SERVE_CLI, ["--bogus"], ["sam-block: error: unrecognized arguments: --bogus"]),
        (SERVE_CLI, ["--precision", "fp16"], ["argument --precision: invalid choice: 'fp16'"]),
        (SERVE_MODULE, ["--precision", "fp16"], ["sam_block.serve: error: argument --precision: invalid choice"]),
        (SERVE_CLI, ["--token", "--no-token"], ["argument --no-token: not allowed with argument --token"]),
    ],
    ids=["bad-int", "unknown-option", "bad-precision", "bad-precision-module", "exclusive"],
)
def test_a_bad_option_is_one_line_and_exit_2(entry, argv, words, tmp_path):
    done = subprocess.run(
        [sys.executable, *entry, *argv], env=server_env(tmp_path), cwd=str(REPO), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    for word in words:
        assert word in line, line


@pytest.mark.parametrize(
    "text, words",
    [
        ("good:\n  checkpoint: [unclosed\n", ["is not valid YAML", "line 2"]),
        ("mine:\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n", ["entry 'mine'", "missing 'checkpoint'"]),
        (
            "mine:\n  checkpoint: weights/model.pt\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n",
            ["entry 'mine'", "weights/model.pt does not exist"],
        ),
    ],
    ids=["bad-yaml", "missing-key", "missing-checkpoint"],
)
@pytest.mark.parametrize("entry", [SERVE_MODULE, SERVE_CLI], ids=["module", "cli"])
def test_a_broken_registry_stops_the_start_in_one_line(entry, text, words, tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(text)
    env = server_env(tmp_path, SAM_BLOCK_MODELS="models.yaml")  # relative: to where the server is started
    done = subprocess.run(
        [sys.executable, *entry, "--port", "1", "--working-dir", str(tmp_path / "cwd")], env=env, cwd=str(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()  # no traceback, no server
    name = "sam-block serve" if entry == SERVE_CLI else "sam_block.serve"
    assert line.startswith(f"{name}: {registry}"), line
    for word in words:
        assert word in line, line
    assert not (tmp_path / "cwd").exists()  # refused before the server set anything up


# --- one real server: `sam-block serve --precision bf16` ------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    threads = str(torch.get_num_threads())  # the test process's: bf16 sums then round alike in both
    with LocalServer(
        tmp_path_factory.mktemp("empty_checkpoints"), args=["--precision", "bf16"], entry=SERVE_CLI,
        SAM_BLOCK_PRECISION="fp32", OMP_NUM_THREADS=threads,
    ) as running:  # fmt: skip
        yield running


def post(server, path: str, payload: dict, headers=None) -> requests.Response:
    return requests.post(
        server.url + path, data=json.dumps(payload), headers={"Content-Type": "application/json", **(headers or {})},
        timeout=TIMEOUT_S,
    )  # fmt: skip


@pytest.mark.slow  # one server start (~30-60 s on the shared machine)
def test_sam_block_serve_is_the_module_server_with_its_defaults(server, tmp_path):
    from sam_block.server.app import resolve_security

    port = server.port
    printed = [line for line in server.log_tail(100_000).splitlines() if line.startswith("sam-block serve: ")]
    expected = [
        f"serving http://{LOOPBACK}:{port} (bound to {LOOPBACK})",
        *resolve_security(LOOPBACK, port, operator={}).lines,
        "custom Python in workflows: off (the default; --allow-custom-python turns it on)",
        f"page: http://{LOOPBACK}:{port}/sam_block/annotate",
    ]
    assert printed == [f"sam-block serve: {line}" for line in expected]
    assert "token: none (loopback; --token requires one)" in expected

    assert requests.get(server.url + "/info", timeout=60).status_code == 200
    embedded = post(
        server, "/sam2/embed_image", {"image": {"type": "base64", "value": SCENE_B64}, "sam2_version_id": "demo"}
    )
    assert embedded.status_code == 200, embedded.text[:2000]
    assert embedded.json()["image_id"]
    assert requests.get(server.url + "/sam_block/annotate", timeout=60).status_code == 200  # the printed page

    # the module's safe defaults: foreign Host and Origin refused, custom Python refused and not run
    host = requests.get(server.url + "/readiness", headers={"Host": "rebound.example"}, timeout=60)
    assert host.status_code == 400 and "--allow-host" in host.json()["message"]
    origin = post(server, "/sam2/embed_image", {"image": {"type": "base64", "value": SCENE_B64}},
                  headers={"Origin": "https://evil.example"})  # fmt: skip
    assert origin.status_code == 403 and "--allow-origin" in origin.json()["message"]
    marker = tmp_path / "written_by_custom_python.txt"
    custom = requests.post(
        server.url + "/workflows/run", data=custom_python_workflow(marker),
        headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert custom.status_code == 403 and "--allow-custom-python" in custom.json()["message"]
    assert not marker.exists()


@pytest.mark.slow
def test_sam_block_serve_precision_flag_wins_over_the_environment(server, monkeypatch):
    """The server (SAM_BLOCK_PRECISION=fp32, --precision bf16) answers what bf16 answers in this process."""
    from inference.core.entities.requests.sam2 import Sam2SegmentationRequest
    from sam_block.server import sam2_api

    payload = {"image": {"type": "base64", "value": SCENE_B64}, "sam2_version_id": "demo", "prompts": {"prompts": PROMPTS},
               "format": "rle"}  # fmt: skip
    answer = post(server, "/sam2/segment_image", payload)
    assert answer.status_code == 200, answer.text[:2000]
    served = [p["confidence"] for p in answer.json()["predictions"]]
    local = {}
    for precision in ("fp32", "bf16"):  # the route's own function, here, in each precision
        monkeypatch.setenv("SAM_BLOCK_PRECISION", precision)
        local[precision] = [
            p.confidence for p in sam2_api.sam2_segment_image(Sam2SegmentationRequest(**payload)).predictions
        ]
    assert max(abs(a - b) for a, b in zip(local["fp32"], local["bf16"])) > 1e-4, local  # bf16 shows in the scores
    assert served == pytest.approx(local["bf16"], abs=1e-6), (served, local)


def test_serve_help_lists_the_precision_choices(capsys):
    from sam_block.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--precision P" in text and "auto, fp32, bf16" in text and "--save-dir DIR" in text
