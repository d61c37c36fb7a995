"""One video's tracks (identities, prompting, lifetime) and the sessions of many videos.

No supervision, no engine: prompts come in as boxes with an opaque ``info`` dict
(class, ids, confidence) that rides along with the track they start or refresh.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Literal, Optional, Tuple, get_args

import numpy as np

from sam_block.errors import InvalidParameterError
from sam_block.runtime.association import box_iou_matrix, match
from sam_block.runtime.masks import CroppedMasks
from sam_block.runtime.tracker import TrackMemory, TrackOutput, VideoTracker, logits_to_masks

logger = logging.getLogger(__name__)

# When detections prompt the tracker; the video step's manifest and `sam-block track` take these.
PromptMode = Literal["first_frame", "every_n_frames", "every_frame"]
PROMPT_MODES = get_args(PromptMode)
# A matched detection re-anchors its track (a fresh conditioning frame from the box) when
# the box and this frame's propagated mask overlap less than this.
DRIFT_IOU = 0.75
DEFAULT_MAX_SESSIONS = 32  # videos tracked at once per block instance (LRU beyond)
DEFAULT_SESSION_TTL_S = 300.0  # a video silent this long is forgotten
MAX_REMEMBERED_VIDEOS = 100_000  # next free tracker id kept per dropped video


@dataclass
class TrackerSettings:
    prompt_mode: str = "first_frame"
    prompt_interval: int = 30
    match_iou: float = 0.3
    lost_after: int = 15
    max_tracks: int = 50

    def __post_init__(self) -> None:
        if self.prompt_mode not in PROMPT_MODES:
            raise InvalidParameterError(f"prompt_mode={self.prompt_mode!r}: use one of {', '.join(PROMPT_MODES)}.")
        if int(self.prompt_interval) < 1:
            raise InvalidParameterError(f"prompt_interval={self.prompt_interval!r}: use a whole number ≥ 1.")
        if int(self.lost_after) < 1:
            raise InvalidParameterError(f"lost_after={self.lost_after!r}: use a whole number ≥ 1.")
        if not 0.0 <= float(self.match_iou) <= 1.0:
            raise InvalidParameterError(f"match_iou={self.match_iou!r}: use a number from 0 to 1.")
        if int(self.max_tracks) < 1:
            raise InvalidParameterError(f"max_tracks={self.max_tracks!r}: use a whole number ≥ 1.")


@dataclass
class BoxPrompt:
    """A detection on a prompt frame: its box (pixels ``x1, y1, x2, y2``), what the track inherits,
    and its ``(H, W)`` bool mask when the detector gives one (then matched by mask IoU)."""

    box: np.ndarray
    info: dict = field(default_factory=dict)
    mask: Optional[np.ndarray] = None


@dataclass
class Track:
    track_id: int
    memory: TrackMemory
    info: dict
    last_box: Optional[np.ndarray] = None  # box of the last reported mask
    detected_box: Optional[np.ndarray] = None  # box of the last detection matched to this track
    absent_frames: int = 0
    unconfirmed_prompts: int = 0  # prompt frames in a row whose detections matched no box to this track


@dataclass
class FrameResult:
    """The present tracks of one frame, row by row."""

    track_ids: np.ndarray  # (N,) int
    masks: CroppedMasks
    ious: np.ndarray  # (N,) SAM's predicted IoU
    object_scores: np.ndarray  # (N,) object-score logits (> 0: present)
    infos: List[dict]


class VideoSession:
    """The tracks of one video; ``step`` takes its frames in order."""

    def __init__(self, tracker: VideoTracker, settings: TrackerSettings, first_id: int = 1):
        self.tracker = tracker
        self.settings = settings
        self.tracks: List[Track] = []
        self.frame_idx = -1  # dense index of the last frame seen
        self.last_frame_number: Optional[int] = None
        self.frame_size: Optional[Tuple[int, int]] = None
        self.next_id = int(first_id)  # ids are never reused within a video, restarts included
        self.prompted = False

    def is_prompt_frame(self, frame_idx: int) -> bool:
        mode = self.settings.prompt_mode
        if mode == "every_frame":
            return True
        if mode == "every_n_frames":
            return frame_idx % int(self.settings.prompt_interval) == 0
        return not self.prompted

    def state_bytes(self) -> int:
        """Bytes of tensors the session holds (every track's bounded memory)."""
        return sum(track.memory.tensor_bytes() for track in self.tracks)

    def step(
        self, frame_rgb: np.ndarray, prompts: Optional[List[BoxPrompt]], frame_number: Optional[int] = None
    ) -> FrameResult:
        """Track every live object onto this frame; on a prompt frame, match `prompts` to tracks.

        `prompts` is None when no detector feeds this frame and a (possibly empty) list of
        its detections when one does. A track ends after `lost_after` frames in a row where
        SAM finds it absent, or after `lost_after` prompt frames in a row where the detector
        gave boxes (or none) but none matched it: SAM's memory can drift onto background,
        and a detector that keeps disagreeing is the signal.
        """
        self.frame_idx += 1
        self.last_frame_number = frame_number
        self.frame_size = tuple(frame_rgb.shape[:2])
        idx, size = self.frame_idx, self.frame_size
        features = self.tracker.encode(frame_rgb)
        propagated = self.tracker.propagate_many([t.memory for t in self.tracks], idx, features)
        outputs: Dict[int, TrackOutput] = {t.track_id: out for t, out in zip(self.tracks, propagated)}
        masks, _ = logits_to_masks(propagated, size)
        if prompts is not None and self.is_prompt_frame(idx) and (prompts or self.tracks):
            self.prompted = self.prompted or bool(prompts)
            if self._apply_prompts(prompts, outputs, masks, idx, features):  # some tracks decoded anew
                masks, _ = logits_to_masks([outputs[t.track_id] for t in self.tracks], size)
        order = list(self.tracks)
        present = np.array([outputs[t.track_id].object_score > 0 for t in order], dtype=bool) & (masks.areas > 0)
        kept: List[Track] = []
        for row, track in enumerate(order):
            if present[row]:
                track.absent_frames = 0
                track.last_box = _mask_box(masks.boxes[row])
            else:
                track.absent_frames += 1
            if track.absent_frames >= int(self.settings.lost_after):
                logger.info("Track %d ended: absent for %d frames", track.track_id, track.absent_frames)
            elif track.unconfirmed_prompts >= int(self.settings.lost_after):
                logger.info(
                    "Track %d ended: no detection matched it on %d prompt frames in a row",
                    track.track_id,
                    track.unconfirmed_prompts,
                )
            else:
                kept.append(track)
        self.tracks = kept
        rows = np.flatnonzero(present)
        return FrameResult(
            track_ids=np.array([order[r].track_id for r in rows], dtype=int),
            masks=masks.select(rows),
            ious=np.array([outputs[order[r].track_id].iou for r in rows], dtype=np.float32),
            object_scores=np.array([outputs[order[r].track_id].object_score for r in rows], dtype=np.float32),
            infos=[dict(order[r].info) for r in rows],
        )

    def _apply_prompts(
        self, prompts: List[BoxPrompt], outputs: Dict[int, TrackOutput], masks: CroppedMasks, idx: int, features
    ) -> bool:
        """Match `prompts` to the tracks (`masks`: their propagated masks, row by row); re-anchor
        drifted tracks, start new ones. True when any track's output on this frame changed."""
        det_boxes = np.stack([np.asarray(p.box, dtype=np.float64) for p in prompts]) if prompts else np.zeros((0, 4))
        present = [outputs[t.track_id].object_score > 0 for t in self.tracks]
        similarity, propagated_iou = overlaps(prompts, self.tracks, masks, present)
        pairs, new_dets, _ = match(similarity, float(self.settings.match_iou))
        matched, changed = {col for _, col in pairs}, False
        for col, track in enumerate(self.tracks):
            track.unconfirmed_prompts = 0 if col in matched else track.unconfirmed_prompts + 1
        for det, col in pairs:
            track = self.tracks[col]
            track.info = dict(prompts[det].info)
            track.last_box = track.detected_box = det_boxes[det]  # last_box: until a mask of this frame says better
            if propagated_iou[det, col] < DRIFT_IOU:
                outputs[track.track_id] = self.tracker.prompt_box(track.memory, idx, features, det_boxes[det])
                changed = True
        for det in new_dets:
            if len(self.tracks) >= int(self.settings.max_tracks):
                logger.warning(
                    "max_tracks=%d reached: detection %s starts no new track (raise max_tracks to track more objects)",
                    self.settings.max_tracks,
                    det_boxes[det].round(1).tolist(),
                )
                continue
            track = Track(
                self.next_id,
                TrackMemory(),
                dict(prompts[det].info),
                last_box=det_boxes[det],
                detected_box=det_boxes[det],
            )
            self.next_id += 1
            outputs[track.track_id] = self.tracker.prompt_box(track.memory, idx, features, det_boxes[det])
            self.tracks.append(track)
            changed = True
        return changed


def overlaps(
    prompts: List[BoxPrompt], tracks: List[Track], masks: CroppedMasks, present
) -> Tuple[np.ndarray, np.ndarray]:
    """``(similarity, propagated)``, both ``(detections, tracks)``.

    `propagated`: overlap of each detection with each track's mask on this frame (mask IoU
    when the detection has a mask of the frame's size, else IoU of the boxes; 0 where the
    track is absent). `similarity`: the larger of that and the IoU of the detection's box with
    the track's last reported mask box and its last matched detection box.
    """
    det_boxes = np.stack([np.asarray(p.box, dtype=np.float64) for p in prompts]) if prompts else np.zeros((0, 4))
    similarity = np.zeros((len(prompts), len(tracks)))
    propagated = np.zeros_like(similarity)
    for col, track in enumerate(tracks):
        if present[col] and masks.areas[col] > 0:
            propagated[:, col] = box_iou_matrix(det_boxes, _exclusive(masks.boxes[col]))[:, 0]
            for det, prompt in enumerate(prompts):
                if prompt.mask is not None and prompt.mask.shape == tuple(masks.image_size):
                    propagated[det, col] = _mask_iou(prompt.mask, masks, col)
        similarity[:, col] = propagated[:, col]
        for anchor in (track.last_box, track.detected_box):
            if anchor is not None:
                similarity[:, col] = np.maximum(similarity[:, col], box_iou_matrix(det_boxes, anchor[None])[:, 0])
    return similarity, propagated


def _exclusive(box) -> np.ndarray:
    """A mask's inclusive pixel bounds as a box with exclusive right/bottom edges."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).reshape(4)
    return np.array([[x1, y1, x2 + 1, y2 + 1]])


def _mask_iou(dense: np.ndarray, masks: CroppedMasks, row: int) -> float:
    """IoU of a full-frame bool mask and row `row` of `masks`, computed inside the crop."""
    x1, y1, x2, y2 = (int(v) for v in masks.boxes[row])
    inside = np.count_nonzero(np.logical_and(dense[y1 : y2 + 1, x1 : x2 + 1], masks.crop(row)))
    union = np.count_nonzero(dense) + int(masks.areas[row]) - inside
    return inside / union if union else 0.0


def _mask_box(box) -> np.ndarray:
    return _exclusive(box)[0]


class SessionStore:
    """Sessions keyed by video, least recently used evicted beyond `max_sessions`, idle ones after `ttl_s`.

    A session restarts when the frame number does not increase (a rollback, or still
    images that all arrive as frame 0) or when the frame size changes. Not thread-safe:
    its user serializes calls (the video step holds its own lock around every batch).
    """

    def __init__(
        self,
        factory: Callable[[int], VideoSession],
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        ttl_s: float = DEFAULT_SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.factory = factory
        self.max_sessions = max(1, int(max_sessions))
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self._sessions: "OrderedDict[Hashable, Tuple[VideoSession, float]]" = OrderedDict()
        # next free id of videos whose session was dropped: a video that comes back never
        # sees an old id again (ints only, the oldest forgotten beyond MAX_REMEMBERED_VIDEOS)
        self._next_ids: "OrderedDict[Hashable, int]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sessions

    def get(self, key: Hashable, frame_number: Optional[int], frame_size: Tuple[int, int]) -> VideoSession:
        now = self.clock()
        for old in [k for k, (_, seen) in self._sessions.items() if now - seen > self.ttl_s]:
            logger.info("Video %r idle for over %.0f s: its tracks are dropped", old, self.ttl_s)
            self._drop(old)
        session = self._sessions.pop(key, (None, 0.0))[0]
        first_id = session.next_id if session is not None else self._next_ids.pop(key, 1)
        if session is not None and session.frame_size is not None and session.frame_size != tuple(frame_size):
            logger.warning(
                "Video %r changed frame size from %s to %s: tracking restarts with new ids",
                key,
                session.frame_size,
                tuple(frame_size),
            )
            session = None
        elif (
            session is not None
            and frame_number is not None
            and session.last_frame_number is not None
            and frame_number <= session.last_frame_number
        ):
            logger.info(
                "Video %r: frame %s after frame %s, tracking restarts", key, frame_number, session.last_frame_number
            )
            session = None
        if session is None:
            session = self.factory(first_id)
        self._sessions[key] = (session, now)
        while len(self._sessions) > self.max_sessions:
            evicted = next(iter(self._sessions))
            logger.info("Video %r evicted (more than %d videos at once)", evicted, self.max_sessions)
            self._drop(evicted)
        return session

    def _drop(self, key: Hashable) -> None:
        session, _ = self._sessions.pop(key)
        self._next_ids[key] = session.next_id
        while len(self._next_ids) > MAX_REMEMBERED_VIDEOS:
            self._next_ids.popitem(last=False)
