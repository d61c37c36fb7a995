"""Shared fixtures: a tiny real-architecture SAM 2.1 checkpoint with random weights,
built once per session, and helpers to run workflows through the real engine."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"

# The environment must be set before the engine or sam_block read it.
_CHECKPOINT_DIR = Path(tempfile.mkdtemp(prefix="sam_block_ckpt_"))
os.environ["SAM_BLOCK_CHECKPOINT_DIR"] = str(_CHECKPOINT_DIR)
os.environ["SAM_BLOCK_OFFLINE"] = "1"
os.environ["SAM_BLOCK_DEVICE"] = "cpu"
os.environ["WORKFLOWS_PLUGINS"] = "sam_block"
torch.set_num_threads(max(1, os.cpu_count() or 1))


def build_random_checkpoint(path: Path, seed: int = 0, version: str = "hiera_tiny") -> Path:
    """Real SAM 2.1 architecture, random weights (fixed seed), official format."""
    from sam_block.runtime.models import build_model
    from sam_block.runtime.variants import get_variant

    torch.manual_seed(seed)
    state = build_model(get_variant(version)).state_dict()
    # Untrained decoders produce logits within ±1, so every stability score is 0 and
    # segment-everything finds nothing. Scaling the last layer of the mask and IoU heads
    # keeps every mask's sign pattern but spreads logits and scores like a trained model.
    for key in state:
        if key.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in key:
            state[key] *= 20
        if key.startswith("sam_mask_decoder.iou_prediction_head.layers.2."):
            state[key] *= 5
    torch.save({"model": state}, path)
    return path


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
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(build_sam2(TINY_CONFIG, str(tiny_checkpoint), device="cpu"))


def make_scene(height: int = 300, width: int = 470, seed: int = 0) -> np.ndarray:
    """A non-square BGR image with a few coloured shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(110, 25, (height, width, 3))).clip(0, 255).astype(np.uint8)
    cv2.rectangle(image, (40, 50), (180, 200), (30, 40, 220), -1)
    cv2.circle(image, (300, 120), 70, (220, 180, 20), -1)
    cv2.ellipse(image, (380, 240), (60, 35), 20, 0, 360, (40, 200, 60), -1)
    return image


@pytest.fixture(scope="session")
def scene() -> np.ndarray:
    return make_scene()


def detections(xyxy, class_names=None, class_ids=None, detection_ids=None) -> sv.Detections:
    xyxy = np.asarray(xyxy, dtype=float).reshape(-1, 4)
    data = {}
    if class_names is not None:
        data["class_name"] = np.asarray(class_names)
    if detection_ids is not None:
        data["detection_id"] = np.asarray(detection_ids)
    return sv.Detections(
        xyxy=xyxy,
        class_id=None if class_ids is None else np.asarray(class_ids),
        confidence=np.full(len(xyxy), 0.9),
        data=data,
    )


def load_example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def run_workflow(definition: dict, init_parameters=None, **runtime_parameters):
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    engine = ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters or {})
    return engine.run(runtime_parameters=runtime_parameters)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
