"""Workflow block `sam_block/segment_anything_2_video@v1`: SAM 2's streaming memory as a tracker step."""

from __future__ import annotations

import threading
from typing import Annotated, Dict, List, Literal, Optional, Type, Union

import numpy as np
import supervision as sv
from pydantic import ConfigDict, Field

from roboflow_workflows.execution_engine.entities.base import Batch, WorkflowImageData
from roboflow_workflows.execution_engine.entities.types import (
    FLOAT_ZERO_TO_ONE_KIND,
    IMAGE_KIND,
    INSTANCE_SEGMENTATION_PREDICTION_KIND,
    INTEGER_KIND,
    KEYPOINT_DETECTION_PREDICTION_KIND,
    OBJECT_DETECTION_PREDICTION_KIND,
    STRING_KIND,
    FloatZeroToOne,
    ImageInputField,
    Selector,
)
from roboflow_workflows.execution_engine.entities.workload import Discovery, RuntimeRestriction, WorkOperation
from roboflow_workflows.prototypes.block import BlockResult, WorkflowBlock, WorkflowBlockManifest
from sam_block.blocks.common import (
    STATEFUL_VIDEO_RESTRICTIONS,
    SamStepManifest,
    attach_engine_metadata,
    check_output_format,
    client_errors_as_4xx,
    local_model_restrictions,
    model_work_operations,
    number,
)
from sam_block.blocks.versions import VERSION_DEFAULT, VERSION_EXAMPLES, VersionField
from sam_block.detections import masks_to_detections
from sam_block.images import to_rgb_uint8
from sam_block.prompts import detections_to_prompts
from sam_block.rle import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMAT_DESCRIPTION, OutputFormat
from sam_block.runtime.device import resolve_device
from sam_block.runtime.models import MODELS
from sam_block.runtime.sessions import PROMPT_MODES, BoxPrompt, PromptMode, SessionStore, TrackerSettings, VideoSession
from sam_block.runtime.tracker import VideoTracker

TYPE_IDENTIFIER = "sam_block/segment_anything_2_video@v1"

LONG_DESCRIPTION = """
Track objects through a video with Segment Anything 2.1's **streaming memory**,
running **locally** (CPU or GPU) — no API key, no remote server.

Connect a detector to **Boxes**. On prompt frames (the first frame with detections,
every N frames, or every frame — see **Prompt mode**) each detection is matched to
the objects already tracked: a match keeps its `tracker_id` (and is re-anchored on
the box when SAM's mask has drifted away from it), an unmatched detection starts a
new track with a new id. Between prompt frames SAM 2 follows every object from its
memory of the previous frames. An object SAM reports absent for **Lost after**
frames in a row is dropped; ids are never reused.

Every frame is encoded once and all objects are propagated from that encoding;
each object keeps only the memory SAM 2 reads (the last 6 frames, up to 4 prompt
frames, 15 object pointers), so memory stays flat on long streams. Each video
(`video_identifier`) has its own tracks; a video restarts when its frame numbers
go back or its frame size changes.

Output: one mask per present object with `tracker_id`, `confidence` (SAM's
predicted IoU on this frame), class and `parent_id` from the detection that last
prompted it, `object_score` (> 0: present) and `detection_confidence`.
"""


class BlockManifest(SamStepManifest):
    model_config = ConfigDict(
        json_schema_extra={
            "name": "Segment Anything 2 Video Tracker (local)",
            "version": "v1",
            "short_description": "Track detected objects through video with SAM 2's memory, locally.",
            "long_description": LONG_DESCRIPTION,
            "license": "Apache-2.0",
            "block_type": "model",
            "search_keywords": ["SAM2", "SAM 2", "video", "tracking", "tracker", "segment anything", "META"],
            "ui_manifest": {"section": "video", "icon": "fa-brands fa-meta", "blockPriority": 9.5, "inference": True},
        },
        protected_namespaces=(),
    )

    type: Literal["sam_block/segment_anything_2_video@v1"]
    images: Selector(kind=[IMAGE_KIND]) = ImageInputField
    boxes: Optional[
        Selector(
            kind=[
                OBJECT_DETECTION_PREDICTION_KIND,
                INSTANCE_SEGMENTATION_PREDICTION_KIND,
                KEYPOINT_DETECTION_PREDICTION_KIND,
            ]
        )
    ] = Field(
        default=None,
        description="Predictions of a detector step. On prompt frames each box starts a new track or "
        "refreshes the track it overlaps.",
        examples=["$steps.object_detection_model.predictions"],
        json_schema_extra={"always_visible": True},
    )
    version: VersionField = Field(
        default=VERSION_DEFAULT,
        description="SAM 2.1 model size: hiera_tiny is fastest, hiera_large most accurate. Also SAM 2.0 "
        "(sam2_hiera_tiny ...), Meta's Hugging Face ids (facebook/sam2.1-hiera-tiny ...) or a model the "
        "server's operator registered.",
        examples=VERSION_EXAMPLES,
    )
    prompt_mode: PromptMode = Field(
        default="first_frame",
        description="When detections prompt the tracker: only on the first frame that has detections, "
        "every N frames, or on every frame (new objects are picked up on prompt frames).",
        examples=list(PROMPT_MODES),
    )
    prompt_interval: Union[Annotated[int, Field(ge=1)], Selector(kind=[INTEGER_KIND])] = Field(
        default=30,
        description="For prompt mode every_n_frames: prompt every this many frames.",
        examples=[30],
    )
    threshold: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.0,
        description="Hide masks whose quality score (SAM's predicted IoU, 0–1) is below this value on a "
        "frame (the object keeps being tracked).",
        examples=[0.0, 0.5],
    )
    match_iou: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.3,
        description="A detection continues an existing track when its box overlaps the track's mask box "
        "(this frame's or the last reported one) or the box of the last detection matched to it at least this "
        "much (IoU); a detection with a mask also by mask IoU with the track's mask on this frame. "
        "Otherwise it starts a new track.",
        examples=[0.3],
    )
    lost_after: Union[Annotated[int, Field(ge=1)], Selector(kind=[INTEGER_KIND])] = Field(
        default=15,
        description="A track ends after SAM reports its object absent this many frames in a row, or "
        "after this many prompt frames in a row on which no detection matched it.",
        examples=[15],
    )
    max_tracks: Union[Annotated[int, Field(ge=1)], Selector(kind=[INTEGER_KIND])] = Field(
        default=50,
        description="At most this many objects are tracked per video; further detections are ignored "
        "(with a warning) until a track ends.",
        examples=[50],
    )
    output_format: Union[OutputFormat, Selector(kind=[STRING_KIND])] = Field(
        default=DEFAULT_OUTPUT_FORMAT,
        description=OUTPUT_FORMAT_DESCRIPTION,
        examples=["polygons", "rle", "$inputs.output_format"],
    )

    def discover_work_operations(self) -> List[WorkOperation]:
        """Model inference and tracking: the step carries identities from frame to frame."""
        return [*model_work_operations(), WorkOperation.TRACKING]

    def get_actual_restrictions(
        self, *, ignore_environment_restrictions: bool = False
    ) -> Discovery[RuntimeRestriction]:
        """Not on hosted serverless (no plugins there); its tracks live in this process, so they
        reset where a video's frames do not all reach it; a still image has no history to track."""
        return local_model_restrictions(
            getattr(self, "name", None), ignore_environment_restrictions, STATEFUL_VIDEO_RESTRICTIONS
        )


class SegmentAnything2VideoBlockV1(WorkflowBlock):
    """Tracks upstream detections through video with SAM 2's memory; one session per video."""

    def __init__(self) -> None:
        self._stores: Dict[str, SessionStore] = {}  # per model version
        self._lock = threading.Lock()

    @classmethod
    def get_init_parameters(cls) -> List[str]:
        return []

    @classmethod
    def get_manifest(cls) -> Type[WorkflowBlockManifest]:
        return BlockManifest

    def run(
        self,
        images: Batch[WorkflowImageData],
        boxes: Optional[Batch[Optional[sv.Detections]]],
        version: str,
        prompt_mode: str = "first_frame",
        prompt_interval: int = 30,
        threshold: float = 0.0,
        match_iou: float = 0.3,
        lost_after: int = 15,
        max_tracks: int = 50,
        output_format: str = DEFAULT_OUTPUT_FORMAT,
    ) -> BlockResult:
        with client_errors_as_4xx(TYPE_IDENTIFIER):
            check_output_format(output_format)
            settings = TrackerSettings(
                prompt_mode=prompt_mode,
                prompt_interval=number("prompt_interval", prompt_interval, int, 1),
                match_iou=number("match_iou", match_iou, float, 0, 1),
                lost_after=number("lost_after", lost_after, int, 1),
                max_tracks=number("max_tracks", max_tracks, int, 1),
            )
            threshold = number("threshold", threshold, float, 0, 1)
            upstream = list(boxes) if boxes is not None else [None] * len(images)
            with self._lock:
                store = self._store(version)
                return [
                    {"predictions": self._track(store, settings, image, detections, threshold, output_format)}
                    for image, detections in zip(images, upstream)
                ]

    def _store(self, version: str) -> SessionStore:
        store = self._stores.get(version)
        if store is None:
            tracker = VideoTracker(MODELS.get(version, resolve_device()))
            store = SessionStore(lambda first_id: VideoSession(tracker, TrackerSettings(), first_id))
            self._stores[version] = store
        return store

    def _track(
        self,
        store: SessionStore,
        settings: TrackerSettings,
        image: WorkflowImageData,
        upstream,
        threshold: float,
        output_format: str,
    ) -> sv.Detections:
        rgb = to_rgb_uint8(image.numpy_image, channel_order="bgr")
        metadata = image.video_metadata
        session = store.get(metadata.video_identifier, metadata.frame_number, rgb.shape[:2])
        session.settings = settings
        result = session.step(rgb, _box_prompts(upstream, rgb.shape[:2], image), metadata.frame_number)
        infos = result.infos
        detections = masks_to_detections(
            masks=result.masks,
            scores=result.ious,
            class_id=np.array([info["class_id"] for info in infos], dtype=int),
            class_name=[info["class_name"] for info in infos],
            parent_id=[info["parent_id"] for info in infos],
            threshold=threshold,
            tracker_id=result.track_ids,
            output_format=output_format,
            extra_data={
                "object_score": result.object_scores,
                "detection_confidence": np.array([info["detection_confidence"] for info in infos], dtype=np.float32),
            },
        )
        return attach_engine_metadata(detections, image)


def _box_prompts(upstream: Optional[sv.Detections], size, image: WorkflowImageData) -> Optional[List[BoxPrompt]]:
    if upstream is None:
        return None
    if len(upstream) == 0:
        return []
    prompts, provenance = detections_to_prompts(upstream, size)
    confidence = upstream.confidence if upstream.confidence is not None else np.full(len(upstream), np.nan)
    return [
        BoxPrompt(
            box=prompts.boxes[row],
            info={
                "class_id": int(provenance.class_id[row]),
                "class_name": str(provenance.class_name[row]),
                "parent_id": image.parent_metadata.parent_id
                if provenance.parent_id[row] is None
                else str(provenance.parent_id[row]),
                "detection_confidence": float(confidence[provenance.source_index[row]]),
            },
            mask=None
            if upstream.mask is None
            else np.asarray(upstream.mask[int(provenance.source_index[row])], dtype=bool),
        )
        for row in range(len(provenance))
    ]
