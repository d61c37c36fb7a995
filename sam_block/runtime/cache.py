"""A process-wide LRU of image embeddings, bounded in bytes (``SAM_BLOCK_CACHE_MB``).

Two SAM steps on the same image in one workflow, or the same frame in a later run,
encode it once. Keys are a hash of the image content (and shape) plus the model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Hashable, Optional, Tuple

import numpy as np

CACHE_MB_ENV = "SAM_BLOCK_CACHE_MB"
DEFAULT_CACHE_MB = 1024


def image_digest(image: np.ndarray) -> str:
    """Content hash of an image array (pixels, shape and dtype).

    Example:
        >>> image_digest(np.zeros((2, 2), np.uint8)) == image_digest(np.zeros((2, 2), np.uint8))
        True
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.shape}|{image.dtype}".encode())
    digest.update(memoryview(np.ascontiguousarray(image)).cast("B"))
    return digest.hexdigest()


def embedding_nbytes(embedding) -> int:
    tensors = [embedding.image_embed, *embedding.high_res_feats]
    return sum(t.element_size() * t.nelement() for t in tensors)


class EmbeddingCache:
    """Least-recently-used embeddings, at most `capacity_bytes` in total; thread-safe."""

    def __init__(self, capacity_bytes: Optional[int] = None) -> None:
        if capacity_bytes is None:
            capacity_bytes = int(float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB)) * (1 << 20))
        self.capacity_bytes = max(0, capacity_bytes)
        self._entries: "OrderedDict[Hashable, Tuple[object, int]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, embedding) -> None:
        size = embedding_nbytes(embedding)
        if size > self.capacity_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (embedding, size)
            self._bytes += size
            while self._bytes > self.capacity_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0


EMBEDDINGS = EmbeddingCache()
