"""Images of the ``/sam2/*`` routes: decoding a request's image, and which content an ``image_id`` names.

A request's image is decoded exactly as the engine decodes a base64 workflow image
(inference's ``load_image_base64``: OpenCV, EXIF orientation applied, BGR), then turned
into the RGB array the workflow step hands to the runtime — so both paths compute the
same content digest and share one entry of the embedding cache.

Only inline base64 images are accepted: this server never fetches a URL, reads a file or
unpickles a request's data.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from sam_block.errors import InvalidImageError, InvalidParameterError
from sam_block.images import to_rgb_uint8
from sam_block.runtime.cache import image_digest
from sam_block.runtime.predictor import ImageEmbedding, Sam2Predictor

logger = logging.getLogger(__name__)

ACCEPTED_IMAGE_TYPE = "base64"
MAX_IMAGE_IDS = 10_000  # image_id → content records kept (a few hundred bytes each)


def decode_image(image) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of a request's ``image`` (``{"type": "base64", "value": ...}``).

    Raises:
        InvalidImageError: naming ``image``, for any other type, a missing value, or bytes
            that are not an image file.
    """
    from inference.core.exceptions import InputImageLoadError
    from inference.core.utils.image_utils import load_image_base64

    kind = str(getattr(image, "type", "")).lower()
    if kind != ACCEPTED_IMAGE_TYPE:
        raise InvalidImageError(
            f"image.type {getattr(image, 'type', None)!r} is not accepted: send the image inline as "
            f'{{"type": "base64", "value": "<base64 of a PNG/JPEG file>"}} (this server never fetches '
            f"URLs, reads files or unpickles request data)."
        )
    value = getattr(image, "value", None)
    if not isinstance(value, str) or not value:
        raise InvalidImageError("image.value must be the base64 text of an image file (PNG, JPEG, ...).")
    try:
        bgr = load_image_base64(value)
    except InputImageLoadError as error:
        raise InvalidImageError(
            f"image: {error.get_public_error_details()} Send a base64-encoded PNG or JPEG file."
        ) from None
    return to_rgb_uint8(bgr, channel_order="bgr")


def payload_fingerprint(image) -> Optional[str]:
    """A hash of the request's image payload as sent (no decoding): equal payloads, equal images."""
    value = getattr(image, "value", None) if image is not None else None
    if not isinstance(value, str):
        return None
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class ImageRecord:
    """What an ``image_id`` names: the image's content digest, its size, and the payload it came in."""

    digest: str
    size: Tuple[int, int]
    fingerprint: Optional[str]


class ImageIds:
    """``(model, image_id)`` → :class:`ImageRecord`, least recently used first out; thread-safe.

    The embeddings themselves live in the runtime's byte-bounded cache, keyed by content:
    this only remembers which content an id stands for.
    """

    def __init__(self, max_entries: int = MAX_IMAGE_IDS) -> None:
        self.max_entries = max_entries
        self._records: "OrderedDict[Tuple[str, str], ImageRecord]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_key: str, image_id: str) -> Optional[ImageRecord]:
        with self._lock:
            record = self._records.get((model_key, image_id))
            if record is not None:
                self._records.move_to_end((model_key, image_id))
            return record

    def put(self, model_key: str, image_id: str, record: ImageRecord) -> None:
        with self._lock:
            self._records[(model_key, image_id)] = record
            self._records.move_to_end((model_key, image_id))
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


IMAGE_IDS = ImageIds()


@dataclass
class ResolvedImage:
    """The embedding a request works on, and where it came from."""

    embedding: ImageEmbedding
    digest: str
    image_id: str
    encoded: bool  # True when the encoder ran for this request


def resolve_image(predictor: Sam2Predictor, image, image_id: Optional[str], ids: ImageIds = IMAGE_IDS) -> ResolvedImage:
    """The embedding of a request's image.

    With an ``image_id`` that names a cached embedding and the same payload as before (or
    no image at all), nothing is decoded. Otherwise the image is decoded and encoded —
    unless its content is in the cache already (embedded by a workflow step, or sent
    under another id). Without ``image_id`` the id is the content digest. An id re-sent
    with another image names the new image from then on (logged).
    """
    fingerprint = payload_fingerprint(image)
    record = ids.get(predictor.model_key, image_id) if image_id else None
    if record is not None and (image is None or record.fingerprint == fingerprint):
        embedding = predictor.cached_embedding(record.digest)
        if embedding is not None:
            return ResolvedImage(embedding, record.digest, image_id, encoded=False)
    if image is None:
        raise InvalidParameterError(
            f"image_id {image_id!r} names no cached embedding (never embedded, or evicted): send the image too."
            if image_id
            else "image is required (or the image_id of an embedded image)."
        )
    rgb = decode_image(image)
    digest = image_digest(rgb)
    if record is not None and record.digest != digest:
        logger.warning("image_id %r was embedded for another image; it now names the image of this request.", image_id)
    embedding = predictor.cached_embedding(digest)
    encoded = embedding is None
    if encoded:
        embedding = predictor.encode(rgb)
    image_id = image_id or digest
    ids.put(predictor.model_key, image_id, ImageRecord(digest, tuple(rgb.shape[:2]), fingerprint))
    return ResolvedImage(embedding, digest, image_id, encoded)
