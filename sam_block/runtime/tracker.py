"""SAM 2's streaming memory, one frame at a time, for the tracks of one video.

This module knows SAM 2 and torch, nothing of supervision or the workflow engine.
It reproduces what Meta's ``SAM2VideoPredictor`` computes when every object is
prompted with a box on the frame it first appears and then propagated forward —
without knowing the frames in advance and without keeping them:

- frames are preprocessed as Meta's video loader does (PIL's default resize of the
  RGB frame to the model size, ``/255``, ImageNet mean and std);
- a prompt frame is decoded with no memory and its memory is encoded from the
  low-resolution mask, upsampled and binarised (Meta's ``propagate_in_video_preflight``
  with ``binarize_mask_from_pts_for_mem_enc``);
- later frames go through ``SAM2Base``'s own memory attention and heads; memory
  features are stored in bfloat16, as Meta stores them;
- the logits are upsampled bilinearly to the frame size and cut at 0.

What a track keeps is only what the next ``track_step`` can read: the last
``num_maskmem - 1`` frames' memory features, object pointers of the last
``max_obj_ptrs_in_encoder - 1`` frames, and at most :data:`MAX_COND_FRAMES`
conditioning (prompt) frames. Memory stays flat however long the video runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam_block.runtime import sam2_calls
from sam_block.runtime.masks import CroppedMasks, upsample_to_crops
from sam_block.runtime.precision import autocast, encoder_input, resolve_precision
from sam_block.runtime.predictor import BOX_CORNER_LABELS, IMAGENET_MEAN, IMAGENET_STD, STABILITY_OFFSET

# Meta asks for the video's length; a stream has none. Any value ≥ max_obj_ptrs_in_encoder
# (16) gives the same arithmetic as Meta's on clips of at least that many frames.
UNKNOWN_NUM_FRAMES = 1 << 30
# Conditioning frames a track keeps: its first prompt and the latest re-anchors.
MAX_COND_FRAMES = 4


@dataclass
class FrameFeatures:
    """One encoded frame, shared by every track of the video on that frame."""

    vision_feats: List[torch.Tensor]  # per level (h*w, 1, C)
    vision_pos: List[torch.Tensor]
    feat_sizes: List[Tuple[int, int]]
    size: Tuple[int, int]  # (H, W) of the original frame


@dataclass
class TrackOutput:
    """What one track predicts on one frame."""

    low_res_logits: torch.Tensor  # (1, 1, h, w) float32
    iou: float  # SAM's predicted IoU of the chosen mask
    object_score: float  # object-score logit: > 0 means the object is present


@dataclass
class TrackMemory:
    """What SAM 2's memory attention reads for one object (Meta's ``output_dict``, bounded)."""

    cond_frame_outputs: Dict[int, dict] = field(default_factory=dict)
    non_cond_frame_outputs: Dict[int, dict] = field(default_factory=dict)

    def as_output_dict(self) -> dict:
        return {"cond_frame_outputs": self.cond_frame_outputs, "non_cond_frame_outputs": self.non_cond_frame_outputs}

    def tensor_bytes(self) -> int:
        """Bytes held in tensors by this track (positional encodings are shared, not counted)."""
        total = 0
        for outputs in (self.cond_frame_outputs, self.non_cond_frame_outputs):
            for out in outputs.values():
                for key in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits"):
                    value = out.get(key)
                    if isinstance(value, torch.Tensor):
                        total += value.numel() * value.element_size()
        return total


class VideoTracker:
    """Streaming SAM 2 memory for the objects of one video.

    ``frame_idx`` values are dense (0, 1, 2, …) and must increase by one per frame.

    Example:
        >>> tracker = VideoTracker(model)
        >>> features = tracker.encode(rgb_frame)
        >>> out = tracker.prompt_box(memory, 0, features, np.array([10, 10, 90, 80]))
        >>> out = tracker.propagate(memory, 1, tracker.encode(next_rgb_frame))
    """

    def __init__(self, model: torch.nn.Module, precision: Optional[str] = None):
        self.model = model
        # Meta's video build sets this (build_sam2_video_predictor); the image path never
        # encodes memory, so setting it on the shared model changes nothing there.
        model.binarize_mask_from_pts_for_mem_enc = True
        self.image_size = int(model.image_size)
        self.device = next(model.parameters()).device
        # auto / fp32 / bf16 (None: SAM_BLOCK_PRECISION); see runtime/precision.py
        self.precision = resolve_precision(self.device, precision)
        self._pos_enc: Optional[List[torch.Tensor]] = None
        self.keep_non_cond = max(int(model.num_maskmem) - 1, int(model.max_obj_ptrs_in_encoder) - 1, 1)
        self.keep_memory = max(int(model.num_maskmem) - 1, 1) * max(1, int(model.memory_temporal_stride_for_eval))

    def _autocast(self):
        return autocast(self.precision)

    def preprocess(self, frame_rgb: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` → ``(1, 3, S, S)`` float32, exactly as Meta's video loader."""
        from PIL import Image

        resized = np.asarray(
            Image.fromarray(np.ascontiguousarray(frame_rgb)).resize((self.image_size, self.image_size))
        )
        tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
        return ((tensor - mean) / std).unsqueeze(0).to(self.device)

    @torch.inference_mode()
    def encode(self, frame_rgb: np.ndarray) -> FrameFeatures:
        """Run the image encoder once on a frame; every track of the frame uses the result."""
        with self._autocast():
            backbone_out = self.model.forward_image(encoder_input(self.preprocess(frame_rgb), self.precision))
            vision_feats, vision_pos, feat_sizes = sam2_calls.prepare_backbone_features(self.model, backbone_out)
        return FrameFeatures(vision_feats, vision_pos, feat_sizes, tuple(frame_rgb.shape[:2]))

    def _point_inputs(self, box: np.ndarray, size: Tuple[int, int]) -> dict:
        height, width = size
        corners = torch.as_tensor(np.asarray(box, dtype=np.float32).reshape(1, 2, 2))
        corners = corners / torch.tensor([width, height], dtype=torch.float32) * self.image_size
        labels = torch.tensor([BOX_CORNER_LABELS], dtype=torch.int32)
        return {"point_coords": corners.to(self.device), "point_labels": labels.to(self.device)}

    @torch.inference_mode()
    def prompt_box(self, memory: TrackMemory, frame_idx: int, features: FrameFeatures, box: np.ndarray) -> TrackOutput:
        """Decode `box` on this frame with no memory and store it as a conditioning frame.

        Used for a new track and for re-anchoring a drifted one; the frame's memory is
        encoded from the upsampled, binarised low-resolution mask, as Meta's preflight does.
        """
        with self._autocast():
            out, ious = self._step(memory, frame_idx, features, self._point_inputs(box, features.size), init_cond=True)
            high_res = F.interpolate(
                out["pred_masks"], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
            maskmem, pos_enc = sam2_calls.encode_new_memory(
                self.model,
                vision_feats=features.vision_feats,
                feat_sizes=features.feat_sizes,
                pred_masks_high_res=high_res,
                object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True,
            )
        out["maskmem_features"], out["maskmem_pos_enc"] = maskmem.to(torch.bfloat16), self._shared_pos_enc(pos_enc)
        memory.non_cond_frame_outputs.pop(frame_idx, None)
        memory.cond_frame_outputs[frame_idx] = self._compact(out)
        while len(memory.cond_frame_outputs) > MAX_COND_FRAMES:
            # keep the first prompt (the object's definition) and the latest re-anchors
            del memory.cond_frame_outputs[sorted(memory.cond_frame_outputs)[1]]
        return self._output(out, ious)

    @torch.inference_mode()
    def propagate(self, memory: TrackMemory, frame_idx: int, features: FrameFeatures) -> TrackOutput:
        """Predict the object on a new frame from its memory, then add this frame to the memory."""
        with self._autocast():
            out, ious = self._step(memory, frame_idx, features, None, init_cond=False)
            self._encode_memory(out, features.vision_feats, features.feat_sizes)
        out["maskmem_features"] = out["maskmem_features"].to(torch.bfloat16)
        out["maskmem_pos_enc"] = self._shared_pos_enc(out["maskmem_pos_enc"])
        memory.non_cond_frame_outputs[frame_idx] = self._compact(out)
        self._forget(memory, frame_idx)
        return self._output(out, ious)

    @torch.inference_mode()
    def propagate_many(self, memories: List[TrackMemory], frame_idx: int, features: FrameFeatures) -> List[TrackOutput]:
        """`propagate` for several tracks of one frame: tracks whose memories hold the same
        frames (e.g. objects prompted together) go through one batched ``track_step``, as
        Meta's predictor batches the objects of a video; the others one by one."""
        groups: Dict[tuple, List[int]] = {}
        for i, memory in enumerate(memories):
            groups.setdefault(self._layout(memory), []).append(i)
        results: List[Optional[TrackOutput]] = [None] * len(memories)
        for rows in groups.values():
            if len(rows) == 1:
                results[rows[0]] = self.propagate(memories[rows[0]], frame_idx, features)
                continue
            batch = self._stacked([memories[i] for i in rows])
            feats = [f.repeat(1, len(rows), 1) for f in features.vision_feats]
            pos = [p.repeat(1, len(rows), 1) for p in features.vision_pos]
            batched = FrameFeatures(feats, pos, features.feat_sizes, features.size)
            with self._autocast():
                out, ious = self._step(batch, frame_idx, batched, None, init_cond=False)
                self._encode_memory(out, feats, features.feat_sizes)
            shared_pos = self._shared_pos_enc(out["maskmem_pos_enc"])
            for j, i in enumerate(rows):
                single = {
                    "maskmem_features": out["maskmem_features"][j : j + 1].to(torch.bfloat16),
                    "maskmem_pos_enc": shared_pos,
                    "pred_masks": out["pred_masks"][j : j + 1],
                    "obj_ptr": out["obj_ptr"][j : j + 1],
                    "object_score_logits": out["object_score_logits"][j : j + 1],
                }
                memories[i].non_cond_frame_outputs[frame_idx] = self._compact(single)
                self._forget(memories[i], frame_idx)
                results[i] = self._output(single, ious[j : j + 1])
        return results

    @staticmethod
    def _layout(memory: TrackMemory) -> tuple:
        """Which frames a memory holds (and which still have memory features): tracks with
        the same layout can share one batched step."""
        return (
            tuple(sorted(memory.cond_frame_outputs)),
            tuple(
                (t, memory.non_cond_frame_outputs[t]["maskmem_features"] is None)
                for t in sorted(memory.non_cond_frame_outputs)
            ),
        )

    def _stacked(self, memories: List[TrackMemory]) -> TrackMemory:
        """One memory whose entries hold the tensors of `memories` along the batch dimension."""

        def stack(entries: List[dict]) -> dict:
            features = [e["maskmem_features"] for e in entries]
            return {
                "maskmem_features": None if features[0] is None else torch.cat(features),
                "maskmem_pos_enc": [p.expand(len(entries), *p.shape[1:]) for p in entries[0]["maskmem_pos_enc"]],
                "pred_masks": None,
                "obj_ptr": torch.cat([e["obj_ptr"] for e in entries]),
                "object_score_logits": torch.cat([e["object_score_logits"] for e in entries]),
            }

        first = memories[0]
        return TrackMemory(
            cond_frame_outputs={
                t: stack([m.cond_frame_outputs[t] for m in memories]) for t in first.cond_frame_outputs
            },
            non_cond_frame_outputs={
                t: stack([m.non_cond_frame_outputs[t] for m in memories]) for t in first.non_cond_frame_outputs
            },
        )

    def _step(self, memory: TrackMemory, frame_idx: int, features: FrameFeatures, point_inputs, init_cond: bool):
        """``SAM2Base.track_step`` without its memory encoding, keeping the predicted IoUs."""
        step = sam2_calls.track_step(
            self.model,
            frame_idx=frame_idx,
            is_init_cond_frame=init_cond,
            vision_feats=features.vision_feats,
            vision_pos=features.vision_pos,
            feat_sizes=features.feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=None,
            output_dict=memory.as_output_dict(),
            num_frames=UNKNOWN_NUM_FRAMES,
        )
        current_out = step.current_out
        current_out.update(
            pred_masks=step.low_res_masks,
            pred_masks_high_res=step.high_res_masks,
            obj_ptr=step.obj_ptr,
            object_score_logits=step.object_score_logits,
        )
        return current_out, step.ious

    def _encode_memory(self, out: dict, vision_feats: List[torch.Tensor], feat_sizes: List[Tuple[int, int]]) -> None:
        """Memory of a propagated frame from its own prediction (Meta's ``track_step`` with ``run_mem_encoder``)."""
        sam2_calls.encode_memory_in_output(
            self.model,
            vision_feats=vision_feats,
            feat_sizes=feat_sizes,
            point_inputs=None,
            run_mem_encoder=True,
            high_res_masks=out["pred_masks_high_res"],
            object_score_logits=out["object_score_logits"],
            current_out=out,
        )

    def _shared_pos_enc(self, pos_enc: List[torch.Tensor]) -> List[torch.Tensor]:
        # The memory's positional encoding is the same for every frame and object: keep one.
        if self._pos_enc is None:
            self._pos_enc = [p[0:1].clone() for p in pos_enc]
        return self._pos_enc

    @staticmethod
    def _compact(out: dict) -> dict:
        return {
            "maskmem_features": out["maskmem_features"],
            "maskmem_pos_enc": out["maskmem_pos_enc"],
            "pred_masks": None,  # not read by later frames
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }

    def _forget(self, memory: TrackMemory, frame_idx: int) -> None:
        """Drop what no later ``track_step`` can read (frames are dense and only move forward)."""
        outputs = memory.non_cond_frame_outputs
        for t in [t for t in outputs if t <= frame_idx - self.keep_non_cond]:
            del outputs[t]
        for t, out in outputs.items():
            if t <= frame_idx - self.keep_memory and out["maskmem_features"] is not None:
                out["maskmem_features"] = None  # only its object pointer is still read

    @staticmethod
    def _output(out: dict, ious: torch.Tensor) -> TrackOutput:
        return TrackOutput(
            low_res_logits=out["pred_masks"].float(),  # upsampling and the cut at 0 stay fp32: runtime/precision.py
            iou=float(ious.float().max()),
            object_score=float(out["object_score_logits"].float().reshape(-1)[0]),
        )


def logits_to_masks(outputs: List[TrackOutput], size: Tuple[int, int]) -> Tuple[CroppedMasks, np.ndarray]:
    """Full-resolution masks (bilinear upsampling of the logits, cut at 0) of several tracks."""
    if not outputs:
        return CroppedMasks.empty(size), np.zeros(0, dtype=np.float32)
    low_res = torch.cat([o.low_res_logits.reshape(1, *o.low_res_logits.shape[-2:]) for o in outputs])
    return upsample_to_crops(low_res, size, 0.0, STABILITY_OFFSET)
