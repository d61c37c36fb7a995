"""``POST /sam2/embed_image`` and ``POST /sam2/segment_image`` answered by sam_block's runtime.

inference's own request and response schemas (``inference.core.entities.requests.sam2`` /
``responses.sam2``), so inference_sdk and existing clients work unchanged; our models
(every version the steps accept, ``demo`` included), no API key, no network. The routes
replace the ones inference's ``HttpInterface`` registers (which load Roboflow-hosted weights).

- ``image_id``: embed once, segment many. Embeddings live in the runtime's byte-bounded LRU
  (``SAM_BLOCK_CACHE_MB``), keyed by image content and model — the very entries the workflow
  step uses, so an image embedded here is not re-encoded by the step, and the reverse.
- ``save_logits_to_cache`` / ``load_logits_from_cache``: click refinement with inference's
  meaning (:mod:`sam_block.runtime.logits_cache`); ``DISABLE_SAM2_LOGITS_CACHE`` turns it off.
- No prompts: segment everything (the step's segment-everything path, Meta's defaults).

Each route: request → image and prompts → runtime → serializer. A client's mistake is a
400 (or FastAPI's 422 for a body that does not fit the schema) naming the field; a server
problem (missing checkpoint) a 500 with our message.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from time import perf_counter
from typing import Iterator, Tuple

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Response

from inference.core.entities.requests.sam2 import Sam2EmbeddingRequest, Sam2SegmentationRequest
from inference.core.entities.responses.sam2 import Sam2EmbeddingResponse, Sam2SegmentationResponse
from sam_block.errors import ClientInputError, InvalidParameterError, SamBlockError
from sam_block.runtime.device import resolve_device
from sam_block.runtime.everything import EverythingParams, segment_everything
from sam_block.runtime.logits_cache import LOGITS
from sam_block.runtime.masks import CroppedMasks
from sam_block.runtime.models import MODELS
from sam_block.runtime.predictor import Sam2Predictor
from sam_block.runtime.variants import get_variant
from sam_block.server.sam2_images import resolve_image
from sam_block.server.sam2_prompts import ParsedPrompts, attach_mask_logits, parse_prompts
from sam_block.server.sam2_serializers import binary_npz, check_format, predictions

logger = logging.getLogger(__name__)

EMBED_PATH = "/sam2/embed_image"
SEGMENT_PATH = "/sam2/segment_image"
EMPTY_LOGIT = -20.0  # low-resolution logit of a prompt that got no mask (nothing usable in it)

router = APIRouter(tags=["SAM 2 (sam_block)"])


def logits_cache_enabled() -> bool:
    """inference's switch: ``DISABLE_SAM2_LOGITS_CACHE=True`` ignores both logits flags."""
    return os.environ.get("DISABLE_SAM2_LOGITS_CACHE", "").strip().lower() not in ("1", "true", "yes")


@contextmanager
def http_errors() -> Iterator[None]:
    """Our errors as HTTP: the client's → 400 with the message, the server's → 500 with it."""
    try:
        yield
    except ClientInputError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    except SamBlockError as error:
        logger.error("SAM 2 request failed: %s", error)
        raise HTTPException(status_code=500, detail=str(error)) from None


def predictor_for(version) -> Sam2Predictor:
    """The shared predictor of `version` (the steps' own; raises UnknownVersionError listing the valid ones)."""
    if not isinstance(version, str) or not version:
        raise InvalidParameterError(f"sam2_version_id={version!r}: name a SAM 2 version, e.g. hiera_tiny.")
    get_variant(version)
    return MODELS.predictor(version, resolve_device())


def decode_prompts(
    predictor: Sam2Predictor, embedding, parsed: ParsedPrompts, multimask_output: bool
) -> Tuple[CroppedMasks, np.ndarray, np.ndarray]:
    """One mask, score and low-resolution logits per prompt, in the request's order."""
    size = embedding.original_size
    side = predictor.model.sam_prompt_encoder.mask_input_size
    masks, scores, logits = (
        [None] * parsed.count,
        np.zeros(parsed.count, np.float32),
        np.full((parsed.count, *side), EMPTY_LOGIT, np.float32),
    )
    for group in parsed.groups:
        result = predictor.predict(embedding, group.batch, multimask_output)
        for row, index in enumerate(group.indices):
            masks[index] = result.masks.select([row])
            scores[index] = result.scores[row]
            logits[index] = result.low_res_logits[row]
    empty = CroppedMasks(size, np.zeros((1, 4)), packed=[np.zeros(0, np.uint8)], areas=[0])
    return CroppedMasks.concatenate(size, [m if m is not None else empty for m in masks]), scores, logits


@router.post(
    EMBED_PATH,
    response_model=Sam2EmbeddingResponse,
    summary="SAM 2 image embedding (sam_block, local)",
    description="Encode an image once with SAM 2 and cache its embedding under `image_id` for later segment requests.",
)
def sam2_embed_image(inference_request: Sam2EmbeddingRequest) -> Sam2EmbeddingResponse:
    start = perf_counter()
    with http_errors():
        predictor = predictor_for(inference_request.sam2_version_id)
        resolved = resolve_image(predictor, inference_request.image, inference_request.image_id)
    return Sam2EmbeddingResponse(image_id=resolved.image_id, time=perf_counter() - start)


@router.post(
    SEGMENT_PATH,
    response_model=Sam2SegmentationResponse,
    summary="SAM 2 image segmentation (sam_block, local)",
    description="Masks for box and point prompts (one per prompt), or every object when no prompt is given.",
)
def sam2_segment_image(inference_request: Sam2SegmentationRequest):
    start = perf_counter()
    with http_errors():
        fmt = check_format(inference_request.format)
        predictor = predictor_for(inference_request.sam2_version_id)
        resolved = resolve_image(predictor, inference_request.image, inference_request.image_id)
        size = resolved.embedding.original_size
        parsed = parse_prompts(inference_request.prompts.prompts, size)
        if parsed.count == 0:
            if fmt == "binary":
                raise InvalidParameterError(
                    "format='binary' returns SAM's logits per prompt; without prompts (segment everything) "
                    "use format 'json' or 'rle'."
                )
            everything = segment_everything(predictor, resolved.embedding, EverythingParams())
            masks, scores = everything.masks, everything.scores
        else:
            use_cache = logits_cache_enabled()
            image_key = (predictor.model_key, resolved.digest)
            if use_cache and inference_request.load_logits_from_cache:
                attach_mask_logits(parsed, LOGITS.load(image_key, parsed.keys))
            masks, scores, logits = decode_prompts(
                predictor, resolved.embedding, parsed, inference_request.multimask_output
            )
            if use_cache and inference_request.save_logits_to_cache and parsed.usable:
                usable = parsed.usable
                LOGITS.save(image_key, [parsed.keys[i] for i in usable], logits[usable])
            if fmt == "binary":
                return Response(content=binary_npz(logits, size), media_type="application/octet-stream")
    return Sam2SegmentationResponse(predictions=predictions(masks, scores, fmt), time=perf_counter() - start)


def install(app: FastAPI) -> FastAPI:
    """Serve our ``/sam2/*`` routes on `app`, replacing any that inference registered there, in
    front of inference's catch-all ``/{dataset_id}/{version_id}`` (which would take the path for a model id)."""
    ours = {EMBED_PATH, SEGMENT_PATH}
    kept = [route for route in app.router.routes if getattr(route, "path", None) not in ours]
    # the router's own APIRoute objects, not include_router (which this FastAPI adds as one
    # path-less entry that prometheus' middleware cannot name)
    app.router.routes[:] = [*router.routes, *kept]
    app.openapi_schema = None
    return app
