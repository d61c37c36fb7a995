"""A variant's SAM 2 architecture: its config file, the model built from it, its tensor shapes.

Below both :mod:`sam_block.runtime.checkpoints` (which checks a file against the shapes)
and :mod:`sam_block.runtime.models` (which loads weights into the model): neither imports
the other for it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Dict, Tuple

import torch

from sam_block.runtime.variants import Variant

# Meta's build_sam2(apply_postprocessing=True) settings for image prediction: when
# the single-mask output is unstable, fall back to the best multimask proposal.
POSTPROCESSING_OVERRIDES = {
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
}


def config_path(variant: Variant) -> Path:
    """Absolute path of the variant's YAML config (a resource of the ``sam2`` package, or a file).

    Example:
        >>> from sam_block.runtime.variants import get_variant
        >>> config_path(get_variant("hiera_tiny")).name
        'sam2.1_hiera_t.yaml'
    """
    path = Path(variant.config)
    if path.is_absolute():
        return path
    return Path(str(importlib.resources.files("sam2") / variant.config))


def build_model(variant: Variant) -> torch.nn.Module:
    """Instantiate the SAM 2 architecture of `variant` with untrained weights, in eval mode.

    The config is read directly with OmegaConf (no global Hydra state), so this works
    whatever else in the process initialised Hydra.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(config_path(variant))
    for key, value in POSTPROCESSING_OVERRIDES.items():
        OmegaConf.update(config, key, value, force_add=True)
    OmegaConf.resolve(config)
    return instantiate(config.model, _recursive_=True).eval()


_SHAPES: Dict[str, Dict[str, Tuple[int, ...]]] = {}


def expected_shapes(variant: Variant) -> Dict[str, Tuple[int, ...]]:
    """Name → shape of every tensor in `variant`'s state dict (built once per config file)."""
    key = str(config_path(variant))
    if key not in _SHAPES:
        with torch.no_grad():
            model = build_model(variant)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        del model
    return _SHAPES[key]
