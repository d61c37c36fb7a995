"""Test session setup: the environment every test runs in, and session-scoped fixtures.

The helpers themselves live in the side-effect-free ``tests/support.py`` (the
benchmarks import them from there); they are re-exported here for the tests.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import (  # noqa: F401  (re-exported for the tests)
    EXAMPLES,
    REPO,
    TINY_CONFIG,
    FileServer,
    build_random_checkpoint,
    detections,
    load_example,
    make_scene,
    mask_iou,
    meta_sam2,
    run_workflow,
)

# The environment must be set before the engine or sam_block read it.
_CHECKPOINT_DIR = Path(tempfile.mkdtemp(prefix="sam_block_ckpt_"))
os.environ["SAM_BLOCK_CHECKPOINT_DIR"] = str(_CHECKPOINT_DIR)
os.environ["SAM_BLOCK_OFFLINE"] = "1"
os.environ["SAM_BLOCK_DEVICE"] = "cpu"
# Parity with Meta is fp32; bf16 is judged by agreement with fp32 (tests/test_precision.py asks for it).
os.environ["SAM_BLOCK_PRECISION"] = "fp32"
os.environ["WORKFLOWS_PLUGINS"] = "sam_block"
torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    path = _CHECKPOINT_DIR / "sam2.1_hiera_tiny.pt"
    if not path.exists():
        build_random_checkpoint(path)
    return _CHECKPOINT_DIR


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_dir) -> Path:
    return checkpoint_dir / "sam2.1_hiera_tiny.pt"


@pytest.fixture(scope="session")
def meta_predictor(tiny_checkpoint):
    """Meta's own SAM2ImagePredictor, loaded by Meta's own builder from the same file."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(meta_sam2(tiny_checkpoint))


@pytest.fixture(scope="module")
def meta_on_scene(meta_predictor, scene):
    """Meta's predictor with the test scene set (Meta takes RGB; the engine gives BGR)."""
    meta_predictor.set_image(scene[:, :, ::-1].copy())
    return meta_predictor


@pytest.fixture(scope="session")
def scene() -> np.ndarray:
    return make_scene()


@pytest.fixture(scope="session")
def default_server(checkpoint_dir):
    """One ``python -m sam_block.serve`` with no options on the session's checkpoint dir, shared by the
    modules that need exactly that server (a start costs tens of seconds on the shared machine)."""
    from tests.http_server import LocalServer

    with LocalServer(checkpoint_dir) as running:
        yield running
