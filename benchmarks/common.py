"""Shared by the HTTP benchmarks: a checkpoint to serve, distinct requests, one request."""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.http_server import LocalServer, box_prediction, boxes_input, image_input  # noqa: E402

WORKFLOW = json.loads((REPO / "example_workflows" / "a_boxes_input.json").read_text())


def checkpoint_dir(path: Path = None) -> Path:
    """`path` if given (a real checkpoint dir), else a temp dir with a random-weight hiera_tiny,
    removed when the benchmark's process exits."""
    if path is not None:
        return Path(path)
    directory = Path(tempfile.mkdtemp(prefix="sam_block_bench_ckpt_"))
    atexit.register(shutil.rmtree, directory, True)
    from tests.support import build_random_checkpoint  # side-effect free

    build_random_checkpoint(directory / "sam2.1_hiera_tiny.pt")
    return directory


def distinct_request(index: int, height: int = 480, width: int = 640) -> dict:
    """Request `index`: its own random image and 1–3 boxes with request-specific classes."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    predictions = []
    for j in range(1 + index % 3):
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x2, y2 = x1 + int(rng.integers(16, width // 2)), y1 + int(rng.integers(16, height // 2))
        predictions.append(box_prediction(x1, y1, x2, y2, f"r{index}c{j}", j, f"req{index}-box{j}"))
    return {
        "specification": WORKFLOW,
        "inputs": {"image": image_input(image, ".jpg"), "boxes": boxes_input(width, height, predictions)},
    }


def post(session, url: str, payload: dict, timeout: float = 600) -> tuple:
    """(status, seconds, expected classes seen?) of one /workflows/run request."""
    started = time.perf_counter()
    response = session.post(url + "/workflows/run", json=payload, timeout=timeout)
    elapsed = time.perf_counter() - started
    ok = response.status_code == 200
    if ok:
        expected = {p["class"] for p in payload["inputs"]["boxes"]["predictions"]}
        served = {p["class"] for p in response.json()["outputs"][0]["predictions"]["predictions"]}
        ok = served <= expected
    return response.status_code, elapsed, ok


__all__ = ["LocalServer", "checkpoint_dir", "distinct_request", "post", "REPO"]
