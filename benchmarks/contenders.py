"""The contenders of the box-prompt benchmark, each set up as ``run(image_bgr, boxes)``:
Meta's raw predictor, the anchor block (inference's ``roboflow_core/segment_anything@v1``,
run locally from a local ``inference_models`` package) and our block through the engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

from harness import REPO

ANCHOR_STEP_TYPE = "roboflow_core/segment_anything@v1"
#: SAM 2.1 state-dict entries the SAM 2.0 architecture lacks. They serve video memory
#: only (object pointers), never the image encoder, prompt encoder or mask decoder.
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")


def prepare_anchor_package(work_dir: Path, checkpoint: Path) -> Path:
    """Lay out a local ``inference_models`` package that the anchor loads as ``sam2/hiera_tiny``.

    The anchor asks its model manager for model id ``sam2/<version>``. With
    ``USE_INFERENCE_MODELS=True`` and ``ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES=True``
    a model id that is an existing directory is a local package: ``inference``'s
    registry reads its task and architecture from ``model_config.json``
    (``_get_local_model_type``) and maps them to the stock ``InferenceModelsSAM2Adapter``,
    whose ``AutoModel.from_pretrained`` loads the directory with ``SAM2Torch.from_pretrained``
    (``model.pt`` + ``sam_configuration.json``). So the anchor subprocess runs with the
    returned directory as its working directory, where ``sam2/hiera_tiny`` is this package.

    ``SAM2Torch`` builds ``f"{version}.yaml"`` through Meta's hydra search path, which
    holds the SAM 2.0 configs only (``sam2_hiera_t.yaml``; ``sam2.1_hiera_t.yaml`` is not
    found). As in Roboflow's own ``hiera_tiny`` package the version is ``sam2_hiera_t``, and
    ``model.pt`` is our SAM 2.1 checkpoint without the three video-only tensors 2.0 lacks;
    the two configs build identical image encoders, prompt encoders and mask decoders.
    Returns the directory to run the anchor in.
    """
    import torch

    root = work_dir / "anchor_package"
    package = root / "sam2" / "hiera_tiny"
    package.mkdir(parents=True, exist_ok=True)
    weights = package / "model.pt"
    if not weights.exists() or weights.stat().st_mtime < checkpoint.stat().st_mtime:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        state = {key: value for key, value in state.items() if not key.startswith(SAM21_ONLY_KEYS)}
        partial = weights.with_suffix(".partial")
        torch.save({"model": state}, partial)
        partial.replace(weights)
    (package / "sam_configuration.json").write_text(json.dumps({"version": "sam2_hiera_t"}))
    (package / "model_config.json").write_text(
        json.dumps(
            {
                "model_architecture": "sam2",
                "task_type": "interactive-instance-segmentation",
                "backend_type": "torch",
            }
        )
    )
    return root


def child_environment(work_dir: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        WORKFLOWS_PLUGINS="sam_block",
        SAM_BLOCK_CHECKPOINT_DIR=str(work_dir),
        SAM_BLOCK_OFFLINE="1",
        SAM_BLOCK_DEVICE="cpu",
        CUDA_VISIBLE_DEVICES="",
        DISABLE_VERSION_CHECK="True",  # `import inference` otherwise asks api.github.com for releases
        DEVICE="cpu",  # inference
        DEFAULT_DEVICE="cpu",  # inference_models
        USE_INFERENCE_MODELS="True",
        ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES="True",
    )
    return env


def _workflow(step_type: Optional[str] = None) -> dict:
    definition = json.loads((REPO / "example_workflows" / "a_boxes_input.json").read_text())
    if step_type is not None:
        definition["steps"][0]["type"] = step_type
    return definition


def setup_raw(checkpoint: Path):
    import numpy as np
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from tests.support import meta_sam2

    predictor = SAM2ImagePredictor(meta_sam2(checkpoint))

    def run(image, boxes):
        predictor.set_image(np.ascontiguousarray(image[:, :, ::-1]))  # Meta takes RGB
        return predictor.predict(box=boxes.xyxy, multimask_output=True)

    return run


def setup_engine(step_type: Optional[str], model_manager=None):
    from roboflow_workflows.execution_engine.core import ExecutionEngine

    init_parameters = {}
    if model_manager is not None:
        from roboflow_workflows.core_steps.common.entities import StepExecutionMode

        init_parameters = {
            "workflows_core.model_manager": model_manager,
            "workflows_core.api_key": None,
            "workflows_core.step_execution_mode": StepExecutionMode.LOCAL,
        }
    engine = ExecutionEngine.init(workflow_definition=_workflow(step_type), init_parameters=init_parameters)
    return lambda image, boxes: engine.run(runtime_parameters={"image": image, "boxes": [boxes]})


def setup_anchor():
    # A real ModelManager over inference's real registry: "sam2/hiera_tiny" resolves to
    # the local package in the working directory (see prepare_anchor_package).
    from inference.core.managers.base import ModelManager
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    if not (Path("sam2") / "hiera_tiny" / "model.pt").is_file():
        raise SystemExit("anchor: run from the directory returned by prepare_anchor_package")
    manager = ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES))
    return setup_engine(ANCHOR_STEP_TYPE, manager)
