"""Side-effect-free helpers shared by the tests and the benchmarks: importing this module
changes no environment variable and no torch setting.

- :func:`build_random_checkpoint`: a real SAM 2.1 architecture with random weights (fixed seed);
- :func:`meta_sam2`: Meta's own model built by Meta's own builder from such a file (for
  ``SAM2ImagePredictor`` / ``SAM2AutomaticMaskGenerator`` parity);
- :func:`make_scene`, :func:`detections`, :func:`mask_iou`: inputs and a comparison;
- :func:`load_example`, :func:`run_workflow`: the example workflows through the real engine;
  :func:`runtime_chosen_workflow`, :func:`passed_through_workflow`: values the manifest cannot check;
- :class:`FileServer`: a loopback HTTP server of named byte payloads (a checkpoint mirror).
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Dict, Optional

import cv2
import numpy as np
import supervision as sv
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def build_random_checkpoint(
    path: Path, seed: int = 0, version: str = "hiera_tiny", object_bias: Optional[float] = None
) -> Path:
    """Real SAM 2.1 architecture, random weights (fixed seed), official format.

    `object_bias` fixes the object-score head's output (+: every object present on every frame,
    −: every object absent), for tests of track lifetimes.
    """
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
    if object_bias is not None:
        state["sam_mask_decoder.pred_obj_score_head.layers.2.weight"].zero_()
        state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(object_bias)
    torch.save({"model": state}, path)
    return path


def meta_sam2(checkpoint: Path, config: str = TINY_CONFIG):
    """Meta's ``SAM2Base`` on CPU, loaded by Meta's ``build_sam2`` from `checkpoint`."""
    from sam2.build_sam import build_sam2

    return build_sam2(config, str(checkpoint), device="cpu")


def make_scene(height: int = 300, width: int = 470, seed: int = 0) -> np.ndarray:
    """A non-square BGR image with a few coloured shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(110, 25, (height, width, 3))).clip(0, 255).astype(np.uint8)
    cv2.rectangle(image, (40, 50), (180, 200), (30, 40, 220), -1)
    cv2.circle(image, (300, 120), 70, (220, 180, 20), -1)
    cv2.ellipse(image, (380, 240), (60, 35), 20, 0, 360, (40, 200, 60), -1)
    return image


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
    from roboflow_workflows.execution_engine.core import ExecutionEngine

    engine = ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters or {})
    return engine.run(runtime_parameters=runtime_parameters)


def runtime_chosen_workflow(step: dict, fmt: str) -> dict:
    """A workflow whose `step` (type and name, plus any fixed fields) gets `version` and
    `output_format` computed by another step — inputs ``model`` (default ``"DEMO"``) and ``fmt``
    (default `fmt`) lower-cased by string templates —, so the manifest cannot check them."""

    def lower(name: str) -> dict:
        return {"type": "roboflow_core/string_template@v1", "name": name, "template": "{v}", "data": {"v": f"$inputs.{name}"},
                "data_operations": {"v": [{"type": "StringToLowerCase"}]}}  # fmt: skip

    return {
        "version": "1.0",
        "inputs": [
            {"type": "WorkflowImage", "name": "image"},
            {"type": "WorkflowBatchInput", "name": "boxes", "kind": ["object_detection_prediction"]},
            {"type": "WorkflowParameter", "name": "model", "default_value": "DEMO"},
            {"type": "WorkflowParameter", "name": "fmt", "default_value": fmt},
        ],
        "steps": [
            lower("model"),
            lower("fmt"),
            {
                **step,
                "images": "$inputs.image",
                "boxes": "$inputs.boxes",
                "version": "$steps.model.output",
                "output_format": "$steps.fmt.output",
            },  # fmt: skip
        ],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": f"$steps.{step['name']}.predictions"}],
    }


def passed_through_workflow(step: dict, field: str) -> dict:
    """A workflow whose `step` (type and name, plus any fixed fields) reads images and boxes from
    the inputs and `field` from input ``value`` passed through another step
    (``first_non_empty_or_default``): any value reaches the step's ``run`` unchecked by its manifest."""
    return {
        "version": "1.0",
        "inputs": [
            {"type": "WorkflowImage", "name": "image"},
            {"type": "WorkflowBatchInput", "name": "boxes", "kind": ["object_detection_prediction"]},
            {"type": "WorkflowParameter", "name": "value"},
        ],
        "steps": [
            {"type": "roboflow_core/first_non_empty_or_default@v1", "name": "passed", "data": ["$inputs.value"]},
            {**step, "images": "$inputs.image", "boxes": "$inputs.boxes", field: "$steps.passed.output"},
        ],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": f"$steps.{step['name']}.predictions"}],
    }


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class _FileHandler(http.server.BaseHTTPRequestHandler):
    server: "FileServer"

    def do_GET(self):
        payload = self.server.files.get(self.path)
        if payload is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if self.server.truncate else payload)

    def log_message(self, *args):
        pass


class FileServer(http.server.ThreadingHTTPServer):
    """``with FileServer({"/a.pt": b"..."}) as server: urlopen(server.url + "/a.pt")``.

    Unknown paths answer 404; ``truncate=True`` sends half of each payload after a
    Content-Length announcing all of it (an interrupted download).
    """

    def __init__(self, files: Optional[Dict[str, bytes]] = None, truncate: bool = False):
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.files = dict(files or {})
        self.truncate = truncate
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
