"""Load SAM 2 models (architecture + checkpoint) and share them per (version, device)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict, Tuple

import torch

from sam_block.errors import CheckpointCorruptError
from sam_block.runtime.architecture import build_model, config_path  # noqa: F401  (also importable from here)
from sam_block.runtime.checkpoints import load_state_dict, resolve_checkpoint
from sam_block.runtime.registry import RegistryError
from sam_block.runtime.variants import Variant, get_variant

logger = logging.getLogger(__name__)
COMPILE_ENV = "SAM_BLOCK_COMPILE"


def _build(variant: Variant) -> torch.nn.Module:
    """The architecture of `variant`; a registered config that builds no SAM 2 model is the registry's error."""
    if not variant.registry:
        return build_model(variant)
    try:
        return build_model(variant)
    except Exception as error:
        raise RegistryError(
            f"{variant.registry}: entry {variant.name!r}: config {variant.config} does not build a SAM 2 model "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]})"
        ) from error


def load_model(variant: Variant, device: torch.device) -> torch.nn.Module:
    """Build `variant` and load its checkpoint (downloaded if missing) onto `device`."""
    path = resolve_checkpoint(variant)
    state_dict = load_state_dict(path)
    model = _build(variant)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # same names, other shapes
        missing, unexpected = [], [" ".join(str(error).split())[:300]]
    if missing or unexpected:
        raise CheckpointCorruptError(
            f"Checkpoint {path} does not fit SAM 2 version {variant.name!r} (config {variant.config}): "
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
        self._models: Dict[Tuple[Variant, str], torch.nn.Module] = {}
        self._locks: Dict[Tuple[Variant, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, version: str, device: torch.device) -> torch.nn.Module:
        variant = get_variant(version)  # refuses unknown names; a registered name may change its entry
        key = (variant, str(device))
        model = self._models.get(key)
        if model is not None:
            return model
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

        variant = get_variant(version)
        key = f"{version}@{device}" if not variant.registry else f"{version}@{device}#{hash(variant) & 0xFFFFFFFF:08x}"
        return Sam2Predictor(self.get(version, device), model_key=key)

    def clear(self) -> None:
        with self._guard:
            self._models.clear()
            self._locks.clear()


MODELS = ModelRegistry()
