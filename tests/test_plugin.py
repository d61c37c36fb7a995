"""The engine finds the plugin through WORKFLOWS_PLUGINS; the committed manifest is current."""

import threading

import torch

import sam_block
from sam_block.manifests import MANIFESTS_DIR, describe_blocks, render

TYPE = "sam_block/segment_anything_2@v1"


def test_load_blocks_returns_the_block_classes():
    image, video = sam_block.load_blocks()
    assert (image.__name__, video.__name__) == ("SegmentAnything2BlockV1", "SegmentAnything2VideoBlockV1")
    assert image.get_init_parameters() == [] and video.get_init_parameters() == []


def test_video_block_is_described_with_the_anchors_field_names():
    from inference.core.workflows.execution_engine.introspection.blocks_loader import describe_available_blocks

    described = {b.manifest_type_identifier: b for b in describe_available_blocks(dynamic_blocks=[]).blocks}
    block = described["sam_block/segment_anything_2_video@v1"]
    properties = block.block_schema["properties"]
    anchor = described["roboflow_core/segment_anything_2_video@v1"].block_schema["properties"]
    shared = {"images", "boxes", "prompt_mode", "prompt_interval", "threshold"}
    assert shared <= set(properties) and shared <= set(anchor)
    assert {"version", "match_iou", "lost_after", "max_tracks", "output_format"} <= set(properties)
    assert sorted(k.name for k in block.outputs_manifest[0].kind) == [
        "instance_segmentation_prediction",
        "rle_instance_segmentation_prediction",
    ]


def test_engine_blocks_loader_lists_the_block():
    from inference.core.workflows.execution_engine.introspection.blocks_loader import (
        describe_available_blocks,
        load_workflow_blocks,
    )

    assert any(
        b.block_class.__name__ == "SegmentAnything2BlockV1" and b.block_source == "sam_block"
        for b in load_workflow_blocks()
    )
    described = {b.manifest_type_identifier: b for b in describe_available_blocks(dynamic_blocks=[]).blocks}
    block = described[TYPE]
    assert [o.name for o in block.outputs_manifest] == ["predictions"]
    assert [k.name for k in block.outputs_manifest[0].kind] == [
        "rle_instance_segmentation_prediction",
        "instance_segmentation_prediction",
    ]


def test_manifest_binds_the_contracted_fields():
    from sam_block.blocks.segment_anything_2.v1 import BlockManifest
    from sam_block.runtime.variants import BUILTIN_VERSIONS

    schema = BlockManifest.model_json_schema()
    properties = schema["properties"]
    assert properties["type"].get("enum", [properties["type"].get("const")]) == [TYPE]
    box_kinds = {k["name"] for option in properties["boxes"]["anyOf"] for k in option.get("kind", [])}
    assert box_kinds == {
        "object_detection_prediction",
        "instance_segmentation_prediction",
        "keypoint_detection_prediction",
    }
    assert properties["version"]["default"] == "hiera_tiny"
    versions = [v for option in properties["version"]["anyOf"] for v in option.get("enum", [])]
    assert versions == list(BUILTIN_VERSIONS)  # offered to no-code builders; registered names are accepted too
    assert {
        "hiera_tiny",
        "hiera_small",
        "hiera_b_plus",
        "hiera_large",
        "demo",
        "sam2_hiera_tiny",
        "facebook/sam2.1-hiera-large",
    } <= set(versions)
    assert properties["threshold"]["default"] == 0.0
    assert properties["multimask_output"]["default"] is True
    for field in ("boxes", "version", "threshold", "multimask_output"):
        assert len(properties[field]["description"]) > 30, field
    assert BlockManifest.get_parameters_accepting_batches() == ["images", "boxes"]


def test_committed_manifests_are_current():
    described = describe_blocks()
    assert sorted(described) == sorted(p.name for p in MANIFESTS_DIR.glob("*.json"))
    for name, description in described.items():
        assert (MANIFESTS_DIR / name).read_text() == render(description), (
            f"manifests/{name} is stale: run `python -m sam_block.manifests`"
        )


def test_a_model_is_loaded_once_under_concurrent_first_use(checkpoint_dir, monkeypatch):
    from sam_block.runtime import models

    registry = models.ModelRegistry()
    calls = []
    real_load = models.load_model

    def counting_load(variant, device):
        calls.append(variant.name)
        return real_load(variant, device)

    monkeypatch.setattr(models, "load_model", counting_load)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.get("hiera_tiny", torch.device("cpu"))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["hiera_tiny"]
    assert len(results) == 4 and all(r is results[0] for r in results)
