"""Load SAM 2 models (architecture + checkpoint) and share them per (version, device)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict, Tuple

import torch

from sam_block.runtime.architecture import build_model, config_path  # noqa: F401  (also importable from here)
from sam_block.runtime.checkpoints import load_state_dict, resolve_checkpoint
from sam_block.runtime.variants import Variant, get_variant

logger = logging.getLogger(__name__)
COMPILE_ENV = "SAM_BLOCK_COMPILE"


def load_model(variant: Variant, device: torch.device) -> torch.nn.Module:
    """Build `variant` and load its checkpoint (downloaded if missing) onto `device`."""
    path = resolve_checkpoint(variant)
    state_dict = load_state_dict(path)
    model = build_model(variant)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        from sam_block.errors import CheckpointCorruptError

        raise CheckpointCorruptError(
            f"Checkpoint {path} does not fit SAM 2 version {variant.name!r}: "
            f"{len(missing)} missing weights (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected weights (e.g. {unexpected[:3]}). "
            f"Is it the checkpoint of another version?"
        )
    logger.info("Loaded SAM 2 %s from %s on %s", variant.name, path, device)
    model = model.to(device).eval()
    if os.environ.get(COMPILE_ENV, "").strip() == "1":
        # Opt-in: the first calls pay for compilation; shapes vary with the prompt count.
        model.image_encoder = torch.compile(model.image_encoder)
        model.sam_mask_decoder = torch.compile(model.sam_mask_decoder, dynamic=True)
    return model


class ModelRegistry:
    """Loaded models, shared by every step and run in the process.

    Each (version, device) is loaded once, even when many threads ask at once.
    """

    def __init__(self) -> None:
        self._models: Dict[Tuple[str, str], torch.nn.Module] = {}
        self._locks: Dict[Tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, version: str, device: torch.device) -> torch.nn.Module:
        key = (version, str(device))
        model = self._models.get(key)
        if model is not None:
            return model
        variant = get_variant(version)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            model = self._models.get(key)
            if model is None:
                model = load_model(variant, device)
                self._models[key] = model
        return model

    def predictor(self, version: str, device: torch.device):
        """A predictor over the shared model, whose embeddings share the process cache."""
        from sam_block.runtime.predictor import Sam2Predictor

        return Sam2Predictor(self.get(version, device), model_key=f"{version}@{device}")

    def clear(self) -> None:
        with self._guard:
            self._models.clear()
            self._locks.clear()


MODELS = ModelRegistry()
