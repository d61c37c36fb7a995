"""A missing checkpoint and no network (SAM_BLOCK_OFFLINE unset): every command and the engine
report our message — version, expected file, URL, fix — never a bare ``urlopen`` error.
(The HTTP server: tests/test_http.py runs its server against an unreachable mirror.)

Two kinds of unreachable: a host that never resolves (``.invalid``, RFC 2606: a DNS
failure) and a closed port on loopback (connection refused).
"""

from __future__ import annotations

import pytest

from sam_block.cli import main
from sam_block.errors import CheckpointMissingError
from tests.conftest import EXAMPLES, detections, load_example, make_scene, run_workflow
from tests.http_server import free_port

DATA = EXAMPLES / "data"
UNREACHABLE = {
    "dns": ("http://sam-block-test.invalid/", "cannot resolve the host sam-block-test.invalid"),
    "refused": (f"http://127.0.0.1:{free_port()}/", "cannot connect to 127.0.0.1:"),
}


@pytest.fixture(params=list(UNREACHABLE))
def no_network(request, monkeypatch, tmp_path):
    """An empty checkpoint dir, downloads allowed, the mirror unreachable: (dir, base URL, reason)."""
    from sam_block.runtime.models import MODELS

    base, reason = UNREACHABLE[request.param]
    # a fresh process's model registry: earlier tests' loaded hiera_tiny must not answer for the missing file
    monkeypatch.setattr(MODELS, "_models", {})
    monkeypatch.setattr(MODELS, "_locks", {})
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_BASE_URL", base)
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty"))
    return tmp_path / "empty", base, reason


def assert_our_message(message: str, checkpoint_dir, base: str, reason: str, version: str, filename: str) -> None:
    assert f"SAM 2 checkpoint for version '{version}' is not available" in message
    assert f"Expected file: {checkpoint_dir / filename}" in message
    assert f"To fix: download it from {base}{filename} and save it as {checkpoint_dir / filename}" in message
    assert reason in message
    assert "urlopen" not in message and "Errno" not in message


COMMANDS = {
    "segment": lambda out: [
        "segment",
        str(DATA / "scene.jpg"),
        "--boxes",
        str(DATA / "scene_boxes.json"),
        "--out",
        str(out),
    ],
    "run": lambda out: ["run", str(EXAMPLES / "f_segment_everything.json"), str(DATA / "scene.jpg"), "--out", str(out)],
    "download": lambda out: ["download", "--no-progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_names_the_missing_checkpoint_in_one_line(command, no_network, tmp_path, capsys):
    checkpoint_dir, base, reason = no_network
    assert main(COMMANDS[command](tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sam-block: error: "), err
    assert_our_message(err, checkpoint_dir, base, reason, "hiera_tiny", "sam2.1_hiera_tiny.pt")
    assert not checkpoint_dir.exists() or list(checkpoint_dir.iterdir()) == []  # no partial file


def test_the_engine_raises_our_error_with_our_message(no_network):
    from roboflow_workflows.errors import ClientCausedStepExecutionError, StepExecutionError

    checkpoint_dir, base, reason = no_network
    with pytest.raises(StepExecutionError) as raised:
        run_workflow(
            load_example("a_boxes_input.json"),
            image=make_scene(),
            boxes=[detections([[30, 40, 190, 210]])],
            version="hiera_small",
        )
    error = raised.value
    assert not isinstance(error, ClientCausedStepExecutionError)  # the server lacks a file: not the client's fault
    assert isinstance(error.inner_error, CheckpointMissingError)
    assert_our_message(str(error), checkpoint_dir, base, reason, "hiera_small", "sam2.1_hiera_small.pt")


def test_cli_unwrapping_stops_at_our_error():
    """The CLI shows the first of our errors down an engine error's chain, not its network cause."""
    import urllib.error

    from roboflow_workflows.errors import StepExecutionError
    from sam_block.cli import root_message

    ours = CheckpointMissingError("SAM 2 checkpoint for version 'hiera_tiny' is not available: ... To fix: ...")
    ours.__cause__ = urllib.error.URLError(OSError(-2, "Name or service not known"))
    wrapped = StepExecutionError(
        block_id="sam", block_type="t", public_message="Step failed", context="c", inner_error=ours
    )
    assert root_message(wrapped) == str(ours)
