"""Workflow block `sam_block/segment_anything_2@v1`: glue between the engine and SAM 2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, List, Literal, Optional, Type, Union

import numpy as np
import supervision as sv
from pydantic import ConfigDict, Field

from roboflow_workflows.execution_engine.entities.base import Batch, WorkflowImageData
from roboflow_workflows.execution_engine.entities.types import (
    BOOLEAN_KIND,
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
from roboflow_workflows.prototypes.block import BlockResult, WorkflowBlock, WorkflowBlockManifest
from sam_block.blocks.common import (
    SamStepManifest,
    attach_engine_metadata,
    check_output_format,
    client_errors_as_4xx,
    number,
)
from sam_block.blocks.versions import VERSION_DEFAULT, VERSION_EXAMPLES, VersionField
from sam_block.detections import masks_to_detections
from sam_block.images import to_rgb_uint8
from sam_block.prompts import detections_to_prompts
from sam_block.rle import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMAT_DESCRIPTION, OutputFormat
from sam_block.runtime.device import resolve_device
from sam_block.runtime.everything import EverythingParams, segment_everything
from sam_block.runtime.masks import CroppedMasks
from sam_block.runtime.models import MODELS
from sam_block.runtime.predictor import Sam2Predictor

TYPE_IDENTIFIER = "sam_block/segment_anything_2@v1"
EVERYTHING_NMS_IOU = 0.7  # masks whose boxes overlap more than this are duplicates
ADVANCED = {"advanced": True, "group": "Segment everything (no boxes)"}
MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 1024

LONG_DESCRIPTION = """
Turn every box of an upstream detector into a precise segmentation mask with
Segment Anything 2.1, running **locally** (CPU or GPU) — no API key, no remote server.

Connect the predictions of any object-detection, instance-segmentation or
keypoint-detection step to **Boxes**. Each box prompts SAM 2 once; the mask it
returns keeps the box's class name and class id, and points back to the box
through `parent_id`. The image is encoded once and its boxes are decoded in
batches (`SAM_BLOCK_DECODER_BATCH`, default 32). Masks are exact model output at full
image resolution.

Keypoint detections add their visible keypoints as point prompts; with
**Use mask prompts**, instance-segmentation masks are refined by SAM instead of
starting from the box alone. Every mask carries SAM's `stability_score`.

Without boxes the step **segments everything**: a grid of points covers the
image, and masks that are confident, stable and distinct are returned, largest
first, with class ids 0…N−1 and class names "0", "1", …

Checkpoints are read from `SAM_BLOCK_CHECKPOINT_DIR` (default `~/.cache/sam_block`)
and downloaded from Meta on first use; `SAM_BLOCK_DEVICE` picks `cpu` or `cuda`.
"""


class BlockManifest(SamStepManifest):
    model_config = ConfigDict(
        json_schema_extra={
            "name": "Segment Anything 2 (local)",
            "version": "v1",
            "short_description": "Turn detected boxes into precise masks with SAM 2, locally.",
            "long_description": LONG_DESCRIPTION,
            "license": "Apache-2.0",
            "block_type": "model",
            "search_keywords": ["SAM2", "SAM 2", "segment anything", "mask", "box to mask", "META"],
            "ui_manifest": {
                "section": "model",
                "icon": "fa-brands fa-meta",
                "blockPriority": 9.5,
                "inference": True,
            },
        },
        protected_namespaces=(),
    )

    type: Literal["sam_block/segment_anything_2@v1"]
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
        description="Predictions of a detector step. Each box becomes one mask that keeps the "
        "box's class name. Leave empty to segment the whole image.",
        examples=["$steps.object_detection_model.predictions"],
        json_schema_extra={"always_visible": True},
    )
    version: VersionField = Field(
        default=VERSION_DEFAULT,
        description="SAM 2.1 model size: hiera_tiny is fastest, hiera_large most accurate "
        "(hiera_small and hiera_b_plus sit in between). Also SAM 2.0 (sam2_hiera_tiny ...), Meta's "
        "Hugging Face ids (facebook/sam2.1-hiera-tiny ...) or a model the server's operator registered.",
        examples=VERSION_EXAMPLES,
    )
    threshold: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.0,
        description="Drop masks whose quality score (SAM's predicted IoU, 0–1) is below this value. "
        "0 keeps every non-empty mask.",
        examples=[0.5, "$inputs.sam_threshold"],
    )
    multimask_output: Union[bool, Selector(kind=[BOOLEAN_KIND])] = Field(
        default=True,
        description="Let SAM propose three masks per box and keep the best-scoring one "
        "(recommended for ambiguous boxes). Off: use SAM's single-mask output.",
        examples=[True, "$inputs.multimask_output"],
    )

    keypoint_confidence: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.5,
        description="For keypoint detections: keypoints at least this confident become extra "
        "'this is the object' clicks for SAM; less confident ones are ignored.",
        examples=[0.5, "$inputs.keypoint_confidence"],
    )
    use_mask_prompts: Union[bool, Selector(kind=[BOOLEAN_KIND])] = Field(
        default=False,
        description="For instance-segmentation predictions: give SAM each upstream mask as a "
        "starting point to refine (on), or only its box (off).",
        examples=[False, "$inputs.use_mask_prompts"],
    )
    points_per_side: Union[Annotated[int, Field(ge=1, le=MAX_POINTS_PER_SIDE)], Selector(kind=[INTEGER_KIND])] = Field(
        default=32,
        description="Segment everything: the grid of prompt points has this many points per side "
        "(32 → 1024 points). More finds smaller objects but takes longer.",
        examples=[32, "$inputs.points_per_side"],
        json_schema_extra=ADVANCED,
    )
    points_per_batch: Union[Annotated[int, Field(ge=1, le=MAX_POINTS_PER_BATCH)], Selector(kind=[INTEGER_KIND])] = (
        Field(
            default=64,
            description="Segment everything: how many grid points are decoded together. Higher is "
            "faster on a GPU but needs more memory.",
            examples=[64],
            json_schema_extra=ADVANCED,
        )
    )
    pred_iou_thresh: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.8,
        description="Segment everything: keep masks whose predicted quality (IoU) is above this.",
        examples=[0.8],
        json_schema_extra=ADVANCED,
    )
    stability_score_thresh: Union[FloatZeroToOne, Selector(kind=[FLOAT_ZERO_TO_ONE_KIND])] = Field(
        default=0.95,
        description="Segment everything: keep masks whose outline barely moves when SAM's "
        "confidence cut moves (stability score at least this).",
        examples=[0.95],
        json_schema_extra=ADVANCED,
    )
    min_mask_area: Union[Annotated[int, Field(ge=0)], Selector(kind=[INTEGER_KIND])] = Field(
        default=0,
        description="Segment everything: drop masks smaller than this many pixels.",
        examples=[0, 100],
        json_schema_extra=ADVANCED,
    )
    output_format: Union[OutputFormat, Selector(kind=[STRING_KIND])] = Field(
        default=DEFAULT_OUTPUT_FORMAT,
        description=OUTPUT_FORMAT_DESCRIPTION,
        examples=["polygons", "rle", "$inputs.output_format"],
    )


class SegmentAnything2BlockV1(WorkflowBlock):
    """Segments every upstream box with a locally loaded SAM 2.1 model."""

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
        threshold: float,
        multimask_output: bool,
        keypoint_confidence: float = 0.5,
        use_mask_prompts: bool = False,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        min_mask_area: int = 0,
        output_format: str = DEFAULT_OUTPUT_FORMAT,
    ) -> BlockResult:
        with client_errors_as_4xx(TYPE_IDENTIFIER):
            check_output_format(output_format)
            options = SegmentOptions(
                threshold=number("threshold", threshold, float, 0, 1),
                output_format=output_format,
                multimask_output=bool(multimask_output),
                keypoint_confidence=number("keypoint_confidence", keypoint_confidence, float, 0, 1),
                use_mask_prompts=bool(use_mask_prompts),
                everything=EverythingParams(
                    points_per_side=number("points_per_side", points_per_side, int, 1, MAX_POINTS_PER_SIDE),
                    points_per_batch=number("points_per_batch", points_per_batch, int, 1, MAX_POINTS_PER_BATCH),
                    pred_iou_thresh=number("pred_iou_thresh", pred_iou_thresh, float, 0, 1),
                    stability_score_thresh=number("stability_score_thresh", stability_score_thresh, float, 0, 1),
                    box_nms_thresh=EVERYTHING_NMS_IOU,
                    min_mask_area=number("min_mask_area", min_mask_area, int, 0),
                ),
            )
            predictor = MODELS.predictor(version, resolve_device())
            rgb_images = [to_rgb_uint8(image.numpy_image, channel_order="bgr") for image in images]
            if boxes is None:
                return _segment_everything(predictor, images, rgb_images, options)
            return _segment_boxes(predictor, images, rgb_images, boxes, options)


@dataclass(frozen=True)
class SegmentOptions:
    """The step's parameters once checked (values computed by other steps included)."""

    threshold: float
    output_format: str
    multimask_output: bool
    keypoint_confidence: float
    use_mask_prompts: bool
    everything: EverythingParams


def _segment_boxes(
    predictor: Sam2Predictor,
    images: Batch[WorkflowImageData],
    rgb_images: List[np.ndarray],
    boxes: Batch[Optional[sv.Detections]],
    options: SegmentOptions,
) -> BlockResult:
    """One mask per usable upstream box (keypoints and masks as extra prompts), per image."""
    prompted = [
        detections_to_prompts(
            upstream if upstream is not None else sv.Detections.empty(),
            rgb.shape[:2],
            options.keypoint_confidence,
            options.use_mask_prompts,
        )
        for rgb, upstream in zip(rgb_images, boxes)
    ]
    needed = [i for i, (prompts, _) in enumerate(prompted) if len(prompts)]
    embeddings = dict(zip(needed, predictor.encode_many([rgb_images[i] for i in needed])))
    results = []
    for i, (image, rgb, (prompts, provenance)) in enumerate(zip(images, rgb_images, prompted)):
        prediction = predictor.predict(embeddings[i], prompts, options.multimask_output) if i in embeddings else None
        parent_id = [image.parent_metadata.parent_id if pid is None else str(pid) for pid in provenance.parent_id]
        detections = masks_to_detections(
            masks=prediction.masks if prediction else CroppedMasks.empty(rgb.shape[:2]),
            scores=prediction.scores if prediction else np.zeros(0, dtype=np.float32),
            class_id=provenance.class_id,
            class_name=provenance.class_name,
            parent_id=parent_id,
            threshold=options.threshold,
            stability_score=prediction.stability_scores if prediction else None,
            output_format=options.output_format,
        )
        results.append({"predictions": attach_engine_metadata(detections, image)})
    return results


def _segment_everything(
    predictor: Sam2Predictor, images: Batch[WorkflowImageData], rgb_images: List[np.ndarray], options: SegmentOptions
) -> BlockResult:
    """Every distinct object of each image, largest first, numbered 0…N−1 after the threshold."""
    results = []
    for image, embedding in zip(images, predictor.encode_many(rgb_images)):
        result = segment_everything(predictor, embedding, options.everything)
        keep = result.scores >= options.threshold  # before numbering, so ids stay 0…N−1
        ids = np.arange(int(keep.sum()))
        detections = masks_to_detections(
            masks=result.masks.select(keep),
            scores=result.scores[keep],
            class_id=ids,
            class_name=[str(i) for i in ids],
            parent_id=[image.parent_metadata.parent_id] * len(ids),
            stability_score=result.stability_scores[keep],
            output_format=options.output_format,
        )
        results.append({"predictions": attach_engine_metadata(detections, image)})
    return results
