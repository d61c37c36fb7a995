"""The one adapter for the private methods of Meta's ``SAM2Base`` that sam_block calls.

``sam2`` exposes no public API for streaming, frame-at-a-time tracking or for reading
the backbone's features, so we call four of its private methods. Each call here passes
every argument **by keyword**: if a ``sam2`` release renames, reorders or adds a required
parameter, the call fails at once with :class:`~sam_block.errors.Sam2InterfaceError`
naming the method and the installed ``sam2`` — instead of binding values to the wrong
parameters and producing silently wrong masks. Results are unpacked here too, with
their expected lengths checked, so callers get named values.

This module knows sam2 and torch only; precision (autocast) is the caller's context.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import torch

from sam_block.errors import Sam2InterfaceError


class BackboneFeatures(NamedTuple):
    """``_prepare_backbone_features``: per level, finest first, flattened to ``(h*w, B, C)``."""

    vision_feats: List[torch.Tensor]
    vision_pos: List[torch.Tensor]
    feat_sizes: List[Tuple[int, int]]


class TrackStep(NamedTuple):
    """``_track_step`` without memory encoding: what the frame's SAM heads produced."""

    current_out: dict  # Meta's per-frame output dict (point/mask inputs so far)
    ious: torch.Tensor  # (B, K) predicted IoU of the proposals
    low_res_masks: torch.Tensor  # (B, 1, h, w) float32 logits of the chosen mask
    high_res_masks: torch.Tensor  # (B, 1, S, S) the same, upsampled to the model's input size
    obj_ptr: torch.Tensor  # (B, C) object pointer
    object_score_logits: torch.Tensor  # (B, 1): > 0 means the object is present
    low_res_multimasks: torch.Tensor  # (B, K, h, w) logits of every proposal (K = 3 with multimask output, else 1)


def _sam2_version() -> str:
    try:
        from importlib.metadata import version

        for name in ("sam2", "rf-sam-2", "SAM-2"):
            try:
                return f"{name} {version(name)}"
            except Exception:
                continue
    except Exception:  # pragma: no cover - importlib.metadata is always there on 3.8+
        pass
    return "sam2 (version unknown)"


@functools.lru_cache(maxsize=None)
def _check_keywords(cls: type, name: str, keywords: FrozenSet[str]) -> None:
    method = getattr(cls, name, None)
    if method is None:
        raise Sam2InterfaceError(
            f"{cls.__name__}.{name} does not exist in the installed {_sam2_version()}; sam_block needs it."
        )
    signature = inspect.signature(method)
    try:
        signature.bind(None, **dict.fromkeys(keywords))
    except TypeError as error:
        raise Sam2InterfaceError(
            f"{cls.__name__}.{name}{signature} of the installed {_sam2_version()} does not take the arguments "
            f"sam_block passes ({', '.join(sorted(keywords))}): {error}. Install the sam2 version sam_block was "
            f"tested with, or update sam_block/runtime/sam2_calls.py."
        ) from None


def _call(model: torch.nn.Module, name: str, **kwargs: Any) -> Any:
    _check_keywords(type(model), name, frozenset(kwargs))
    return getattr(model, name)(**kwargs)


def _expect(name: str, value: Any, length: int) -> Any:
    if not isinstance(value, (tuple, list)) or len(value) != length:
        got = f"{type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list)) else type(value).__name__
        raise Sam2InterfaceError(
            f"SAM2Base.{name} of the installed {_sam2_version()} returned {got}, sam_block expects {length} values."
        )
    return value


def prepare_backbone_features(model: torch.nn.Module, backbone_out: Dict[str, Any]) -> BackboneFeatures:
    """``SAM2Base._prepare_backbone_features``: the levels the heads read, flattened."""
    result = _expect(
        "_prepare_backbone_features", _call(model, "_prepare_backbone_features", backbone_out=backbone_out), 4
    )
    _, vision_feats, vision_pos, feat_sizes = result
    return BackboneFeatures(vision_feats, vision_pos, feat_sizes)


def track_step(
    model: torch.nn.Module,
    *,
    frame_idx: int,
    is_init_cond_frame: bool,
    vision_feats: List[torch.Tensor],
    vision_pos: List[torch.Tensor],
    feat_sizes: List[Tuple[int, int]],
    point_inputs: Optional[dict],
    mask_inputs: Optional[torch.Tensor],
    output_dict: dict,
    num_frames: int,
    track_in_reverse: bool = False,
    prev_sam_mask_logits: Optional[torch.Tensor] = None,
) -> TrackStep:
    """``SAM2Base._track_step``: memory attention (unless `is_init_cond_frame`) and SAM heads, no memory encoding."""
    result = _call(
        model,
        "_track_step",
        frame_idx=frame_idx,
        is_init_cond_frame=is_init_cond_frame,
        current_vision_feats=vision_feats,
        current_vision_pos_embeds=vision_pos,
        feat_sizes=feat_sizes,
        point_inputs=point_inputs,
        mask_inputs=mask_inputs,
        output_dict=output_dict,
        num_frames=num_frames,
        track_in_reverse=track_in_reverse,
        prev_sam_mask_logits=prev_sam_mask_logits,
    )
    current_out, sam_outputs, _, _ = _expect("_track_step", result, 4)
    multimasks, _, ious, low_res, high_res, obj_ptr, object_score_logits = _expect(
        "_track_step (SAM outputs)", sam_outputs, 7
    )
    return TrackStep(current_out, ious, low_res, high_res, obj_ptr, object_score_logits, multimasks)


def encode_new_memory(
    model: torch.nn.Module,
    *,
    vision_feats: List[torch.Tensor],
    feat_sizes: List[Tuple[int, int]],
    pred_masks_high_res: torch.Tensor,
    object_score_logits: torch.Tensor,
    is_mask_from_pts: bool,
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``SAM2Base._encode_new_memory``: memory features and their positional encodings of one frame."""
    result = _call(
        model,
        "_encode_new_memory",
        current_vision_feats=vision_feats,
        feat_sizes=feat_sizes,
        pred_masks_high_res=pred_masks_high_res,
        object_score_logits=object_score_logits,
        is_mask_from_pts=is_mask_from_pts,
    )
    features, pos_enc = _expect("_encode_new_memory", result, 2)
    return features, pos_enc


def encode_memory_in_output(
    model: torch.nn.Module,
    *,
    vision_feats: List[torch.Tensor],
    feat_sizes: List[Tuple[int, int]],
    point_inputs: Optional[dict],
    run_mem_encoder: bool,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    current_out: dict,
) -> dict:
    """``SAM2Base._encode_memory_in_output``: writes ``maskmem_features`` / ``maskmem_pos_enc`` into `current_out`."""
    _call(
        model,
        "_encode_memory_in_output",
        current_vision_feats=vision_feats,
        feat_sizes=feat_sizes,
        point_inputs=point_inputs,
        run_mem_encoder=run_mem_encoder,
        high_res_masks=high_res_masks,
        object_score_logits=object_score_logits,
        current_out=current_out,
    )
    if run_mem_encoder and int(getattr(model, "num_maskmem", 0)) > 0 and "maskmem_features" not in current_out:
        raise Sam2InterfaceError(
            f"SAM2Base._encode_memory_in_output of the installed {_sam2_version()} wrote no 'maskmem_features'."
        )
    return current_out


#: The private SAM2Base methods this module calls, with the keyword arguments it passes
#: (``tests/test_precision.py`` checks them against the installed sam2's signatures).
CALLED = {
    "_prepare_backbone_features": ("backbone_out",),
    "_track_step": (
        "frame_idx", "is_init_cond_frame", "current_vision_feats", "current_vision_pos_embeds", "feat_sizes",
        "point_inputs", "mask_inputs", "output_dict", "num_frames", "track_in_reverse", "prev_sam_mask_logits",
    ),
    "_encode_new_memory": ("current_vision_feats", "feat_sizes", "pred_masks_high_res", "object_score_logits", "is_mask_from_pts"),
    "_encode_memory_in_output": (
        "current_vision_feats", "feat_sizes", "point_inputs", "run_mem_encoder", "high_res_masks", "object_score_logits", "current_out",
    ),
}  # fmt: skip


def check_interface(cls: Optional[type] = None) -> None:
    """Raise :class:`Sam2InterfaceError` unless every method in :data:`CALLED` takes its keywords.

    Example:
        >>> check_interface()  # the installed sam2's SAM2Base
    """
    if cls is None:
        from sam2.modeling.sam2_base import SAM2Base

        cls = SAM2Base
    for name, keywords in CALLED.items():
        _check_keywords(cls, name, frozenset(keywords))
