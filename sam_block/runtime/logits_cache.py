"""Low-resolution logits of prompts already decoded on an image, for click refinement.

The meaning is inference's (``save_logits_to_cache`` / ``load_logits_from_cache`` of its
SAM 2 model): a prompt set decoded with saving on is remembered with the low-resolution
logits SAM returned for each of its prompts; a later prompt set on the same image that
*extends* a remembered one (every remembered prompt has a distinct counterpart with the
same box and a subset of its points, and the two sets differ) gets those logits as SAM's
``mask_input``. Among several remembered sets the one with the most points wins (the
previous click), the most recent on a tie. Unlike inference, logits go to the prompt they
were matched to (inference hands them over in stored order), and entries are per image
*content and model*, so an image id reused for another image or another model version never
receives foreign logits.

Bounded in bytes (``SAM_BLOCK_LOGITS_CACHE_MB``, default 64; ``0`` disables it), least
recently used first out; thread-safe. Nothing here knows HTTP: a prompt is plain data.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import FrozenSet, Hashable, List, Optional, Sequence, Tuple

import numpy as np

LOGITS_CACHE_MB_ENV = "SAM_BLOCK_LOGITS_CACHE_MB"
DEFAULT_LOGITS_CACHE_MB = 64

BoxKey = Optional[Tuple[float, float, float, float]]
PointKey = Tuple[float, float, bool]


@dataclass(frozen=True)
class PromptKey:
    """One prompt as the cache compares it: its box (any fixed convention) and its points."""

    box: BoxKey
    points: FrozenSet[PointKey]

    @classmethod
    def of(cls, box: Optional[Sequence[float]], points: Sequence[Sequence]) -> "PromptKey":
        """Example:
        >>> PromptKey.of(None, [(1, 2, True)]) == PromptKey.of(None, [(1.0, 2.0, True)])
        True
        """
        return cls(
            None if box is None else tuple(float(v) for v in box),
            frozenset((float(x), float(y), bool(positive)) for x, y, positive in points),
        )


@dataclass
class _Entry:
    prompts: Tuple[PromptKey, ...]
    logits: np.ndarray  # (N, h, w) float32, row i for prompts[i]

    @property
    def points(self) -> int:
        return sum(len(p.points) for p in self.prompts)


def match_prior(prior: Sequence[PromptKey], current: Sequence[PromptKey]) -> Optional[List[int]]:
    """For each prompt of `prior`, the index of the distinct prompt of `current` it extends to,
    or ``None`` when `current` does not extend `prior` (or equals it).

    Example:
        >>> a, b = PromptKey.of(None, [(5, 5, True)]), PromptKey.of(None, [(5, 5, True), (9, 9, False)])
        >>> match_prior([a], [b]), match_prior([b], [a]), match_prior([a], [a])
        ([0], None, None)
    """
    if tuple(prior) == tuple(current) or not prior:
        return None
    free = list(range(len(current)))
    matched = []
    for old in prior:
        for position, index in enumerate(free):
            new = current[index]
            if old.box == new.box and old.points <= new.points:
                matched.append(index)
                del free[position]
                break
        else:
            return None
    return matched


class LogitsCache:
    """Prompt sets decoded on each image and their low-resolution logits, at most `capacity_bytes`."""

    def __init__(self, capacity_bytes: Optional[int] = None) -> None:
        if capacity_bytes is None:
            capacity_bytes = int(float(os.environ.get(LOGITS_CACHE_MB_ENV, DEFAULT_LOGITS_CACHE_MB)) * (1 << 20))
        self.capacity_bytes = max(0, int(capacity_bytes))
        self._entries: "OrderedDict[Tuple[Hashable, Tuple[PromptKey, ...]], _Entry]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, image_key: Hashable, prompts: Sequence[PromptKey], logits: np.ndarray) -> None:
        """Remember `logits` (``(N, h, w)``, row ``i`` for ``prompts[i]``) of this prompt set on this image."""
        prompts = tuple(prompts)
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if len(logits) != len(prompts):
            raise ValueError(f"{len(logits)} logits for {len(prompts)} prompts")
        if not prompts or logits.nbytes > self.capacity_bytes:
            return
        key = (image_key, prompts)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.logits.nbytes
            self._entries[key] = _Entry(prompts, logits)
            self._bytes += logits.nbytes
            while self._bytes > self.capacity_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.logits.nbytes

    def load(self, image_key: Hashable, prompts: Sequence[PromptKey]) -> Optional[List[Optional[np.ndarray]]]:
        """Per prompt of `prompts`, the remembered logits of the prompt it extends (``None`` for
        prompts that extend none), from the best remembered set; ``None`` when no set fits."""
        prompts = tuple(prompts)
        best: Optional[Tuple[_Entry, List[int]]] = None
        with self._lock:
            candidates = [entry for key, entry in reversed(self._entries.items()) if key[0] == image_key]
            for entry in candidates:  # most recent first
                matched = match_prior(entry.prompts, prompts)
                if matched is not None and (best is None or entry.points > best[0].points):
                    best = (entry, matched)
            if best is None:
                return None
            self._entries.move_to_end((image_key, best[0].prompts))
        entry, matched = best
        per_prompt: List[Optional[np.ndarray]] = [None] * len(prompts)
        for row, index in enumerate(matched):
            per_prompt[index] = entry.logits[row]
        return per_prompt

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


LOGITS = LogitsCache()
