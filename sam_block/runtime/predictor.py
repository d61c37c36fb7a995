"""Encode an image once, decode every prompt in batches, keep the best mask of each.

This module knows SAM 2 and torch, nothing of supervision or the workflow engine.
Coordinates are pixels of the original image; images are RGB uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam_block.runtime import sam2_calls
from sam_block.runtime.cache import EMBEDDINGS, EmbeddingCache, image_digest
from sam_block.runtime.masks import CroppedMasks, upsample_to_crops
from sam_block.runtime.precision import autocast, encoder_input, resolve_precision
from sam_block.runtime.prompt_batch import PromptBatch

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_CORNER_LABELS = (2, 3)  # SAM's labels for a box's top-left and bottom-right corners
DECODER_BATCH_ENV = "SAM_BLOCK_DECODER_BATCH"
ENCODER_BATCH_ENV = "SAM_BLOCK_ENCODER_BATCH"
DEFAULT_DECODER_BATCH = 32  # prompts per decoder call: speed vs activation memory, see benchmarks/RESULTS.md
DEFAULT_ENCODER_BATCH = 4  # images per encoder call
STABILITY_OFFSET = 1.0  # logit offset of the stability score, as in Meta's mask generator
MASK_PROMPT_LOGIT = 10.0  # logit given to inside (+) / outside (-) pixels of a mask prompt


@dataclass
class ImageEmbedding:
    """What the mask decoder needs of one encoded image."""

    image_embed: torch.Tensor  # (1, C, h, w), lowest resolution level
    high_res_feats: List[torch.Tensor]  # finer levels, each (1, C_i, h_i, w_i)
    original_size: Tuple[int, int]  # (H, W) of the image that was encoded


@dataclass
class MaskPrediction:
    """One mask per prompt, at the original image's resolution."""

    masks: CroppedMasks  # N masks at the image's resolution, as tight crops
    scores: np.ndarray  # (N,) float32: SAM's predicted IoU of each returned mask
    stability_scores: np.ndarray  # (N,) float32: IoU of the mask thresholded at +1 and -1 logits
    low_res_logits: np.ndarray = field(repr=False)  # (N, 256, 256) float32 logits of each mask


class Sam2Predictor:
    """Runs a SAM 2 model (``SAM2Base``) on images and prompt batches.

    Example (the bundled toy ``demo`` model, on CPU):
        >>> from sam_block.runtime.models import MODELS
        >>> predictor = Sam2Predictor(MODELS.get("demo", torch.device("cpu")))
        >>> rgb_image = np.zeros((120, 160, 3), np.uint8)
        >>> rgb_image[20:80, 10:90] = 255  # a white rectangle
        >>> embedding = predictor.encode(rgb_image)
        >>> result = predictor.predict(embedding, PromptBatch(boxes=np.array([[10, 20, 90, 80]], np.float32)))
        >>> result.masks.to_dense().shape, result.scores.shape  # masks: CroppedMasks (tight crops)
        ((1, 120, 160), (1,))
    """

    def __init__(
        self,
        model: torch.nn.Module,
        mask_threshold: float = 0.0,
        decoder_batch: Optional[int] = None,
        encoder_batch: Optional[int] = None,
        model_key: Optional[str] = None,
        cache: Optional[EmbeddingCache] = EMBEDDINGS,
        precision: Optional[str] = None,
    ):
        self.model = model
        # auto / fp32 / bf16 (None: SAM_BLOCK_PRECISION); see runtime/precision.py
        self.precision = resolve_precision(self.device, precision)
        self.mask_threshold = mask_threshold
        self.decoder_batch = max(1, int(decoder_batch or os.environ.get(DECODER_BATCH_ENV) or DEFAULT_DECODER_BATCH))
        self.encoder_batch = max(1, int(encoder_batch or os.environ.get(ENCODER_BATCH_ENV) or DEFAULT_ENCODER_BATCH))
        self.image_size = int(model.image_size)
        # bf16 and fp32 embeddings differ: they never share a cache entry
        self.model_key = f"{model_key or f'model-{id(model)}'}/{self.precision.name}"
        self.cache = cache if cache is not None and cache.capacity_bytes > 0 else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        return autocast(self.precision)

    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` → normalised ``(1, 3, S, S)`` float tensor on the model's device."""
        tensor = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(self.device)
        tensor = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        tensor = F.interpolate(
            tensor, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return (tensor - mean) / std

    def cached_embedding(self, digest: str) -> Optional[ImageEmbedding]:
        """The cached embedding of the image whose :func:`image_digest` is `digest`, or ``None``."""
        return self.cache.get((self.model_key, digest)) if self.cache is not None else None

    def encode(self, image_rgb: np.ndarray) -> ImageEmbedding:
        """Image embedding of one RGB image (from the cache when this image was seen)."""
        return self.encode_many([image_rgb])[0]

    def encode_many(self, images_rgb: Sequence[np.ndarray]) -> List[ImageEmbedding]:
        """Embeddings of several images: cached ones are reused, the others are encoded
        ``encoder_batch`` at a time (SAM resizes every image to one square size, so any
        sizes batch together)."""
        keys = [(self.model_key, image_digest(image)) for image in images_rgb]
        found = [self.cache.get(key) if self.cache is not None else None for key in keys]
        missing = [i for i, embedding in enumerate(found) if embedding is None]
        for start in range(0, len(missing), self.encoder_batch):
            chunk = missing[start : start + self.encoder_batch]
            for i, embedding in zip(chunk, self._encode_batch([images_rgb[i] for i in chunk])):
                found[i] = embedding
                if self.cache is not None:
                    self.cache.put(keys[i], embedding)
        return found

    @torch.inference_mode()
    def _encode_batch(self, images_rgb: Sequence[np.ndarray]) -> List[ImageEmbedding]:
        batch = encoder_input(torch.cat([self.preprocess(image) for image in images_rgb]), self.precision)
        with self._autocast():
            backbone_out = self.model.forward_image(batch)
            vision_feats, _, feat_sizes = sam2_calls.prepare_backbone_features(self.model, backbone_out)
            if self.model.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        # (h*w, B, C) → (B, C, h, w), finest level first
        feats = [
            feat.permute(1, 2, 0).reshape(len(images_rgb), -1, h, w) for feat, (h, w) in zip(vision_feats, feat_sizes)
        ]
        return [
            ImageEmbedding(
                image_embed=feats[-1][b : b + 1].clone(),
                high_res_feats=[level[b : b + 1].clone() for level in feats[:-1]],
                original_size=tuple(image.shape[:2]),
            )
            for b, image in enumerate(images_rgb)
        ]

    @torch.inference_mode()
    def predict(self, embedding: ImageEmbedding, prompts: PromptBatch, multimask_output: bool = True) -> MaskPrediction:
        """Decode every prompt and keep, per prompt, the mask SAM scores highest.

        With ``multimask_output=True`` SAM proposes three masks per prompt and the one
        with the highest predicted IoU is returned; with ``False`` the single-mask head
        is used (falling back to the best proposal when it is unstable, as Meta does).
        """
        low_res, iou = self.decode(embedding, prompts, multimask_output)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        low_res, scores = low_res[rows, best], iou[rows, best]
        masks, stability = upsample_to_crops(low_res, embedding.original_size, self.mask_threshold, STABILITY_OFFSET)
        return MaskPrediction(
            masks=masks,
            scores=scores.cpu().numpy(),
            stability_scores=stability,
            low_res_logits=low_res.cpu().numpy(),
        )

    @torch.inference_mode()
    def decode(
        self, embedding: ImageEmbedding, prompts: PromptBatch, multimask_output: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every proposal of every prompt: low-res logits ``(N, K, h, w)`` and predicted IoUs ``(N, K)``.

        ``K`` is 3 with `multimask_output`, else 1. Prompts are decoded ``decoder_batch`` at a time.
        """
        side = 4 * self.image_size // 16
        if len(prompts) == 0:
            k = 3 if multimask_output else 1
            return torch.zeros((0, k, side, side), device=self.device), torch.zeros((0, k), device=self.device)
        logits, scores = [], []
        for start in range(0, len(prompts), self.decoder_batch):
            chunk_logits, chunk_scores = self._decode(
                embedding, prompts.subset(slice(start, start + self.decoder_batch)), multimask_output
            )
            logits.append(chunk_logits)
            scores.append(chunk_scores)
        return torch.cat(logits), torch.cat(scores)

    @functools.cached_property
    def _image_pe(self) -> torch.Tensor:
        """The prompt encoder's dense positional encoding, as the decoder reads it: it depends on the
        weights alone, so it is computed once per predictor (in its precision), not once per decode."""
        with self._autocast():
            return self.model.sam_prompt_encoder.get_dense_pe()

    def _decode(
        self, embedding: ImageEmbedding, prompts: PromptBatch, multimask_output: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        points = self._prompt_points(prompts, embedding.original_size)
        encoder = self.model.sam_prompt_encoder
        with self._autocast():
            if prompts.mask_inputs is None and prompts.mask_logits is None:
                sparse, dense = encoder(points=points, boxes=None, masks=None)
            else:
                if prompts.mask_logits is not None:
                    mask_input = torch.as_tensor(
                        np.asarray(prompts.mask_logits, dtype=np.float32)[:, None], device=self.device
                    )
                else:
                    mask_input = mask_prompt_logits(prompts.mask_inputs, encoder.mask_input_size).to(self.device)
                sparse, dense = encoder(points=points, boxes=None, masks=mask_input)
                _, no_mask_dense = encoder(points=(points[0][:1], points[1][:1]), boxes=None, masks=None)
                valid = (
                    np.ones(len(prompts), bool) if prompts.mask_valid is None else np.asarray(prompts.mask_valid, bool)
                )
                valid = torch.as_tensor(valid, device=self.device)
                dense = torch.where(valid.view(-1, 1, 1, 1), dense, no_mask_dense)
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=embedding.image_embed,
                image_pe=self._image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                repeat_image=len(prompts) > 1,
                high_res_features=embedding.high_res_feats,
            )
        # Logits leave autocast as float32: upsampling and the cut at 0 stay fp32 (see runtime/precision.py)
        return low_res.float(), iou.float()

    def _prompt_points(self, prompts: PromptBatch, original_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Boxes (as two labelled corners) followed by points, in model input coordinates."""
        coords, labels = [], []
        if prompts.boxes is not None:
            boxes = np.asarray(prompts.boxes, dtype=np.float32).reshape(-1, 2, 2)
            coords.append(boxes)
            labels.append(np.broadcast_to(np.array(BOX_CORNER_LABELS, dtype=np.int32), (len(boxes), 2)))
        if prompts.point_coords is not None:
            coords.append(np.asarray(prompts.point_coords, dtype=np.float32))
            labels.append(np.asarray(prompts.point_labels, dtype=np.int32))
        height, width = original_size
        scale = np.array([self.image_size / width, self.image_size / height], dtype=np.float32)
        coords_t = torch.as_tensor(np.concatenate(coords, axis=1) * scale, device=self.device)
        labels_t = torch.as_tensor(np.concatenate(labels, axis=1), device=self.device)
        return coords_t, labels_t


def mask_prompt_logits(masks: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
    """Binary masks ``(N, H, W)`` → SAM mask-prompt logits ``(N, 1, h, w)``.

    Each mask is area-resized to the prompt resolution (SAM 2 resizes images to a
    square without padding, so the whole mask maps onto the whole prompt) and the
    covered fraction ``f`` becomes the logit ``(2f - 1) * MASK_PROMPT_LOGIT``.
    """
    import cv2

    height, width = int(size[0]), int(size[1])
    out = np.empty((len(masks), 1, height, width), dtype=np.float32)
    for i, mask in enumerate(masks):
        fraction = cv2.resize(np.asarray(mask, dtype=np.float32), (width, height), interpolation=cv2.INTER_AREA)
        out[i, 0] = (2.0 * fraction - 1.0) * MASK_PROMPT_LOGIT
    return torch.from_numpy(out)
