"""Start inference's own HTTP API with the plugin (``python -m sam_block.serve``) in a
subprocess on loopback, wait until it is ready, and always shut it down.

Used by tests/test_http.py and the benchmarks in benchmarks/.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
# inference's and our security variables: a server started here sees them only when a test passes them
SECURITY_VARIABLES = ("ALLOW_ORIGINS", "ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS", "SAM_BLOCK_TOKEN")
# how a server is started: `python -m sam_block.serve` (the default) or `sam-block serve` (the CLI's spelling)
SERVE_MODULE = ("-m", "sam_block.serve")
SERVE_CLI = ("-m", "sam_block.cli", "serve")


def free_port() -> int:
    """A port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def server_env(checkpoint_dir: Path, **extra: str) -> dict:
    """Environment of the server: the plugin, the checkpoint dir, offline, CPU; no inherited security variables."""
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
    env.update(
        WORKFLOWS_PLUGINS="sam_block",
        SAM_BLOCK_CHECKPOINT_DIR=str(checkpoint_dir),
        SAM_BLOCK_OFFLINE="1",
        SAM_BLOCK_DEVICE="cpu",
        OFFLINE_MODE="True",  # inference: no telemetry, no calls to Roboflow
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
    )
    env.update(extra)
    return env


class LocalServer:
    """``with LocalServer(checkpoint_dir) as server: requests.get(server.url + "/readiness")``.

    ``args``: more command-line options (``--allow-custom-python``, ``--token``, ...); ``bind``: the
    address to bind (requests always go to 127.0.0.1); ``token``: the token the server requires
    (read from its start-up output when it generates one, i.e. ``args`` has ``--token`` alone).
    ``server.headers`` carries it as ``Authorization: Bearer``. ``entry``: :data:`SERVE_MODULE` or
    :data:`SERVE_CLI`.
    """

    def __init__(
        self, checkpoint_dir: Path, startup_timeout_s: float = 180.0, args: Sequence[str] = (), bind: str = LOOPBACK,
        token: Optional[str] = None, entry: Sequence[str] = SERVE_MODULE, **env: str,
    ):  # fmt: skip
        self.checkpoint_dir = Path(checkpoint_dir)
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(args)
        self.bind = bind
        self.token = token
        self.token_generated = token is None and any(
            a == "--token" and (i + 1 == len(self.extra_args) or self.extra_args[i + 1].startswith("-"))
            for i, a in enumerate(self.extra_args)
        )
        self.extra_env = env
        self.entry = tuple(entry)
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None
        self._workdir = Path(tempfile.mkdtemp(prefix="sam_block_http_"))
        self.log_path = self._workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def headers(self) -> dict:
        """``Authorization: Bearer <token>`` when the server requires a token, else nothing."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> "LocalServer":
        self.port = free_port()
        command = [
            sys.executable, *self.entry,
            "--host", self.bind, "--port", str(self.port),
            "--working-dir", str(self._workdir / "cwd"), *self.extra_args,
        ]  # fmt: skip
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, env=server_env(self.checkpoint_dir, **self.extra_env), stdout=log, stderr=subprocess.STDOUT,
            cwd=str(REPO), start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self.token is None and self.token_generated:
                found = re.search(r"token: generated: (\S+)", self.log_tail(100_000))
                self.token = found.group(1) if found else None
            try:
                if requests.get(self.url + "/readiness", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate the server (SIGTERM), then kill it if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)

    def __enter__(self) -> "LocalServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def image_input(image: np.ndarray, ext: str = ".png") -> dict:
    """A workflow image input as inference's HTTP API takes it (base64, lossless PNG by default)."""
    ok, encoded = cv2.imencode(ext, image)
    assert ok, f"could not encode a {image.shape} image as {ext}"
    return {"type": "base64", "value": base64.b64encode(encoded.tobytes()).decode("ascii")}


def box_prediction(x1, y1, x2, y2, class_name="object", class_id=0, detection_id="box", confidence=0.9) -> dict:
    """One object-detection prediction in inference's JSON format (centre, width, height)."""
    return {
        "x": (x1 + x2) / 2, "y": (y1 + y2) / 2, "width": x2 - x1, "height": y2 - y1,
        "class": class_name, "class_id": class_id, "confidence": confidence, "detection_id": detection_id,
    }  # fmt: skip


def boxes_input(width: int, height: int, predictions) -> dict:
    """The `object_detection_prediction` JSON the HTTP API deserializes into ``sv.Detections``."""
    return {"image": {"width": width, "height": height}, "predictions": list(predictions)}


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """Rasterise a served polygon ``[{"x":…, "y":…}, …]`` to a boolean mask."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if points:
        contour = np.array([[round(p["x"]), round(p["y"])] for p in points], dtype=np.int32)
        cv2.fillPoly(mask, [contour], 1)
    return mask.astype(bool)
