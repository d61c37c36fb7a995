"""Region upsampling is exact, the embedding cache is bounded and shared, compact masks flow downstream."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam_block.detections import masks_to_detections, use_compact_masks
from sam_block.runtime.cache import EmbeddingCache
from sam_block.runtime.masks import CroppedMasks, upsample_to_crops
from tests.conftest import detections, load_example, run_workflow


def reference(low_res, size, threshold=0.0, offset=1.0):
    up = F.interpolate(low_res[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    from sam2.utils.amg import calculate_stability_score

    return (up > threshold).numpy(), calculate_stability_score(up, threshold, offset).numpy(), up.numpy()


@pytest.mark.parametrize("size", [(300, 470), (1080, 1920), (97, 33), (256, 256), (1, 1)])
def test_region_upsampling_equals_full_interpolation(size):
    generator = torch.Generator().manual_seed(sum(size))
    low_res = torch.randn(6, 256, 256, generator=generator) * 4 - 6  # mostly negative: small objects
    low_res[0] = -20  # empty
    low_res[1, 100:140, 30:90] = 15  # a blob
    low_res[2] = 5  # everything
    masks, stability = upsample_to_crops(low_res, size)
    expected_masks, expected_stability, logits = reference(low_res, size)
    dense = masks.to_dense()
    # Exact but for float32 rounding: small regions are interpolated by our own gathers,
    # whose sums round differently from PyTorch's kernel by ~1e-6, so only a pixel whose
    # logit lies that close to the cut may land on the other side (README, "How it stays fast").
    flipped = dense != expected_masks
    assert flipped.sum() <= 2, flipped.sum()
    assert np.all(np.abs(logits[flipped]) < 1e-5), logits[flipped]
    np.testing.assert_allclose(stability, np.nan_to_num(expected_stability), atol=1e-4)
    for (x1, y1, x2, y2), crop, full in zip(masks.boxes, masks.crops, dense):
        if crop.size:
            ys, xs = np.nonzero(full)
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_cache_is_lru_and_bounded_in_bytes():
    class Fake:
        def __init__(self, mb):
            self.image_embed = torch.zeros(mb << 18)  # mb MiB of float32
            self.high_res_feats = []

    cache = EmbeddingCache(capacity_bytes=3 << 20)
    for key in "abc":
        cache.put(key, Fake(1))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", Fake(1))  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("c") is not None and cache.get("d") is not None
    assert cache.nbytes <= 3 << 20
    cache.put("huge", Fake(4))  # larger than the whole cache: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
    assert EmbeddingCache(capacity_bytes=0).capacity_bytes == 0


def test_cache_under_concurrent_use_stays_consistent():
    class Fake:
        image_embed = torch.zeros(1 << 10)
        high_res_feats = []

    cache = EmbeddingCache(capacity_bytes=64 << 10)

    def hammer(offset):
        for i in range(500):
            cache.put((offset, i % 40), Fake())
            cache.get((offset, (i * 7) % 40))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == len(cache) * (4 << 10) <= 64 << 10


def test_two_sam_steps_on_one_image_encode_it_once(checkpoint_dir, scene, monkeypatch):
    from sam_block.runtime import cache as cache_module
    from sam_block.runtime.predictor import Sam2Predictor

    cache_module.EMBEDDINGS.clear()
    calls = []
    real = Sam2Predictor._encode_batch

    def counting(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(Sam2Predictor, "_encode_batch", counting)
    definition = load_example("a_boxes_input.json")
    second = dict(definition["steps"][0], name="sam_again", multimask_output=False)
    definition["steps"].append(second)
    definition["outputs"].append({"type": "JsonField", "name": "again", "selector": "$steps.sam_again.predictions"})
    boxes = [detections([[35, 45, 190, 210]], class_names=["a"])]
    # the demo model (256 px): the cache works the same for every version
    first_run = run_workflow(definition, image=scene, boxes=boxes, version="demo")[0]
    assert calls == [1]
    second_run = run_workflow(definition, image=scene, boxes=boxes, version="demo")[0]
    assert calls == [1]  # a later run on the same image: no encoding at all
    assert (first_run["predictions"].mask == second_run["predictions"].mask).all()
    assert cache_module.EMBEDDINGS.hits >= 3


def test_images_of_a_batch_are_encoded_together(checkpoint_dir, scene, monkeypatch):
    from sam_block.runtime import cache as cache_module
    from sam_block.runtime.predictor import Sam2Predictor

    cache_module.EMBEDDINGS.clear()
    calls = []
    real = Sam2Predictor._encode_batch
    monkeypatch.setattr(
        Sam2Predictor, "_encode_batch", lambda self, images: calls.append(len(images)) or real(self, images)
    )
    other = scene[::-1, ::2].copy()  # another size
    results = run_workflow(
        load_example("a_boxes_input.json"),
        image=[scene, other],
        boxes=[detections([[35, 45, 190, 210]], class_names=["a"]), detections([[10, 10, 100, 90]], class_names=["b"])],
        version="demo",  # the demo model (256 px): batching works the same for every version
    )
    assert calls == [2]
    single = run_workflow(
        load_example("a_boxes_input.json"),
        image=other,
        boxes=[detections([[10, 10, 100, 90]], class_names=["b"])],
        version="demo",
    )
    assert (results[1]["predictions"].mask == single[0]["predictions"].mask).all()


def test_compact_policy():
    assert use_compact_masks(300, (2160, 3840), "auto")
    assert not use_compact_masks(50, (1080, 1920), "auto")
    assert use_compact_masks(1, (10, 10), "1") and not use_compact_masks(10**6, (4000, 4000), "0")
    with pytest.raises(ValueError, match="SAM_BLOCK_COMPACT_MASKS='maybe'"):
        use_compact_masks(1, (1, 1), "maybe")


def test_compact_masks_equal_dense_ones():
    crops = [np.ones((3, 4), bool), np.eye(5, dtype=bool)]
    masks = CroppedMasks((20, 30), np.array([[2, 3, 5, 5], [10, 12, 14, 16]]), crops)
    args = dict(scores=np.array([0.9, 0.8]), class_id=np.array([1, 2]), class_name=["a", "b"], parent_id=["p", "q"])
    dense = masks_to_detections(masks, compact=False, **args)
    compact = masks_to_detections(masks, compact=True, **args)
    assert type(compact.mask).__name__ == "CompactMask"
    np.testing.assert_array_equal(np.asarray(compact.mask), dense.mask)
    np.testing.assert_array_equal(compact.xyxy, dense.xyxy)


def test_compact_output_flows_through_serializer_and_visualizers(checkpoint_dir, scene, monkeypatch):
    from inference.core.workflows.core_steps.common.serializers import serialize_wildcard_kind

    definition = load_example("b_template_matching_to_mask_visualization.json")
    definition["steps"].append(
        {
            "type": "roboflow_core/polygon_visualization@v1",
            "name": "polygons",
            "image": "$inputs.image",
            "predictions": "$steps.sam.predictions",
        }
    )
    definition["outputs"].append({"type": "JsonField", "name": "polygons", "selector": "$steps.polygons.image"})
    x1, y1, x2, y2 = 220, 40, 290, 110
    template = scene[y1:y2, x1:x2].copy()
    outputs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("SAM_BLOCK_COMPACT_MASKS", setting)
        outputs[setting] = run_workflow(definition, image=scene, template=template)[0]
    compact, dense = outputs["1"], outputs["0"]
    assert type(compact["predictions"].mask).__name__ == "CompactMask"
    assert isinstance(dense["predictions"].mask, np.ndarray)
    for key in ("visualization", "polygons"):
        np.testing.assert_array_equal(compact[key].numpy_image, dense[key].numpy_image)
        assert (compact[key].numpy_image != scene).any()
    a, b = serialize_wildcard_kind(compact["predictions"]), serialize_wildcard_kind(dense["predictions"])
    assert [p["points"] for p in a["predictions"]] == [p["points"] for p in b["predictions"]]


def test_cpu_path_never_enters_cuda_code(checkpoint_dir, scene, monkeypatch):
    from sam_block.runtime import cache as cache_module

    cache_module.EMBEDDINGS.clear()
    real_autocast = torch.autocast

    def guarded_autocast(device_type, *args, **kwargs):
        assert device_type != "cuda", "CUDA autocast entered on the CPU path"
        return real_autocast(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", guarded_autocast)
    result = run_workflow(
        load_example("a_boxes_input.json"), image=scene, boxes=[detections([[35, 45, 190, 210]], class_names=["a"])]
    )
    assert len(result[0]["predictions"]) == 1
