"""bfloat16 against float32: the precision setting, agreement of the masks, the sam2 adapter.

Meta parity stays in fp32 (tests/conftest.py sets ``SAM_BLOCK_PRECISION=fp32``); bf16 is
judged by agreement with fp32 on the bundled ``demo`` weights, where masks are realistic.

The bf16 runs here go through the very functions a CUDA device runs — only the device
differs: ``precision.autocast`` (the one autocast context), entered by
``Sam2Predictor._encode_batch`` (image encoder) and ``Sam2Predictor._decode`` (prompt
encoder + mask decoder, hence ``segment_everything``), and by ``VideoTracker.encode``,
``VideoTracker.prompt_box``, ``VideoTracker.propagate`` / ``propagate_many`` (memory
attention and SAM heads via ``sam2_calls.track_step``, the memory encoder via
``sam2_calls.encode_new_memory`` / ``encode_memory_in_output``).

On a CPU without native bf16 (this project's machine: AVX2 only) the bf16 runs are
emulated and slow, which is why the clip and the grid are kept small.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sam_block.demo.scenes import make_scene
from sam_block.demo.train_video import held_out_clip
from sam_block.errors import PrecisionError, Sam2InterfaceError
from sam_block.runtime import precision as precision_module
from sam_block.runtime import sam2_calls
from sam_block.runtime.cache import EmbeddingCache
from sam_block.runtime.everything import EverythingParams, segment_everything
from sam_block.runtime.models import MODELS
from sam_block.runtime.precision import PRECISION_ENV, autocast, resolve_precision
from sam_block.runtime.predictor import PromptBatch, Sam2Predictor
from sam_block.runtime.sessions import BoxPrompt, TrackerSettings, VideoSession
from sam_block.runtime.tracker import VideoTracker

CPU = torch.device("cpu")
SCENE_SEEDS = range(1_000_000, 1_000_030)  # the demo model's held-out scenes (never trained on)
EVERYTHING_SEEDS = range(1_000_100, 1_000_116)
CLIP = 10  # the clip `sam-block demo --video` tracks: three shapes, one leaves
CLIP_FRAMES = 60


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the toy model's ops are tiny: one thread is faster than several, and ~10x faster on a
    # busy CPU (measured: 0.23 vs 2.2 s per tracked frame with the machine's 2 cores shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_model():
    return MODELS.get("demo", CPU)


# ------------------------------------------------------------------------------------ the setting


def test_precision_values_env_and_errors(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "BF16")
    assert resolve_precision(CPU).name == "bf16" and resolve_precision(CPU).dtype == torch.bfloat16
    assert resolve_precision(CPU, "fp32").name == "fp32"  # an explicit request wins over the variable
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(PrecisionError, match=r"SAM_BLOCK_PRECISION='fp16'.*'auto'.*'fp32'.*'bf16'"):
        resolve_precision(CPU)
    with pytest.raises(PrecisionError):
        Sam2Predictor(MODELS.get("demo", CPU), cache=None)  # refused when the predictor is made, not mid-run


def test_auto_follows_native_bf16_detection(monkeypatch, tmp_path):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: ("avx512_bf16",))
    chosen = resolve_precision(CPU)
    assert chosen.name == "bf16" and "avx512_bf16" in chosen.reason
    monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: ())
    chosen = resolve_precision(CPU, "auto")
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason
    # detection reads the flags line of /proc/cpuinfo (x86) or the Features line (ARM)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert {"avx512_bf16", "amx_bf16"} <= precision_module._cpuinfo_flags(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not set(precision_module.NATIVE_BF16_FLAGS) & precision_module._cpuinfo_flags(str(cpuinfo))
    assert precision_module._cpuinfo_flags(str(tmp_path / "absent")) is None


def test_choice_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "_logged", set())
    with caplog.at_level(logging.INFO, logger="sam_block.runtime.precision"):
        for _ in range(3):
            resolve_precision(CPU, "fp32")
    assert [r.getMessage() for r in caplog.records] == ["SAM 2 runs in fp32 on cpu: SAM_BLOCK_PRECISION=fp32"]


def test_bf16_is_applied_in_encoder_decoder_memory_attention_and_memory_encoder(demo_model):
    """Fails if bf16 is silently not applied: the heavy modules must compute in bf16 and
    the outputs must differ from fp32 (while agreeing, see below)."""
    seen = {}
    watched = {
        "image_encoder.trunk": demo_model.image_encoder.trunk,
        "sam_mask_decoder.transformer": demo_model.sam_mask_decoder.transformer,
        "memory_attention": demo_model.memory_attention,
        "memory_encoder": demo_model.memory_encoder,
    }

    def recorder(name):
        def hook(module, inputs, output):
            seen.setdefault(name, set()).add(output.dtype)

        return hook

    # every matrix product of these modules: a Linear / Conv layer's output dtype is what it computed in
    handles = [
        layer.register_forward_hook(recorder(name))
        for name, module in watched.items()
        for layer in module.modules()
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    try:
        outputs = {}
        for name in ("fp32", "bf16"):
            seen.clear()
            scene = make_scene(SCENE_SEEDS[0])
            predictor = Sam2Predictor(demo_model, precision=name, cache=None)
            result = predictor.predict(predictor.encode(scene.image), PromptBatch(boxes=scene.boxes))
            clip = held_out_clip(CLIP, frames=3)
            session = VideoSession(VideoTracker(demo_model, precision=name), TrackerSettings(prompt_mode="first_frame"))
            for t, frame in enumerate(clip.frames):
                prompts = [BoxPrompt(box) for box in clip.boxes(0)[clip.prompted(0)]] if t == 0 else None
                session.step(frame, prompts, t)
            outputs[name] = (result.low_res_logits, dict(seen))
    finally:
        for handle in handles:
            handle.remove()
    fp32_logits, fp32_dtypes = outputs["fp32"]
    bf16_logits, bf16_dtypes = outputs["bf16"]
    assert set(bf16_dtypes) == set(watched) == set(fp32_dtypes)
    assert all(dtypes == {torch.float32} for dtypes in fp32_dtypes.values()), fp32_dtypes
    assert all(dtypes == {torch.bfloat16} for dtypes in bf16_dtypes.values()), bf16_dtypes
    assert bf16_logits.dtype == np.float32  # logits leave autocast as float32 for the upsampling and cut
    assert not np.array_equal(fp32_logits, bf16_logits)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_the_one_context_for_cuda_and_cpu():
    import contextlib

    assert isinstance(autocast(resolve_precision(CPU, "fp32")), contextlib.nullcontext)
    context = autocast(resolve_precision(CPU, "bf16"))
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16 and context.device == "cpu"
    cuda = precision_module.Precision("bf16", "cuda", "test")  # what a GPU gets, built without one
    context = autocast(cuda)
    assert isinstance(context, torch.autocast) and context.device == "cuda" and context.fast_dtype == torch.bfloat16


def test_bf16_and_fp32_embeddings_never_share_a_cache_entry(demo_model):
    cache = EmbeddingCache(capacity_bytes=64 * 2**20)
    scene = make_scene(SCENE_SEEDS[1])
    fp32 = Sam2Predictor(demo_model, precision="fp32", cache=cache, model_key="demo@cpu")
    bf16 = Sam2Predictor(demo_model, precision="bf16", cache=cache, model_key="demo@cpu")
    a, b = fp32.encode(scene.image), bf16.encode(scene.image)
    assert fp32.model_key != bf16.model_key and len(cache) == 2
    assert not torch.equal(a.image_embed.float(), b.image_embed.float())
    assert fp32.encode(scene.image) is a and bf16.encode(scene.image) is b


# -------------------------------------------------------------------------------------- agreement


@pytest.mark.slow
def test_image_step_bf16_agrees_with_fp32_on_30_scenes(demo_model):
    ious = []
    for seed in SCENE_SEEDS:
        scene = make_scene(seed)
        masks = {}
        for name in ("fp32", "bf16"):
            predictor = Sam2Predictor(demo_model, precision=name, cache=None)
            masks[name] = predictor.predict(
                predictor.encode(scene.image), PromptBatch(boxes=scene.boxes)
            ).masks.to_dense()
        assert len(masks["fp32"]) == len(masks["bf16"]) == len(scene.boxes)
        ious += [mask_iou(a, b) for a, b in zip(masks["fp32"], masks["bf16"])]
    ious = np.array(ious)
    assert len(ious) >= 60
    assert ious.mean() >= 0.99, f"mean IoU {ious.mean():.4f} over {len(ious)} masks"
    assert np.percentile(ious, 5) >= 0.95, f"5th percentile {np.percentile(ious, 5):.4f}"


@pytest.mark.slow
def test_segment_everything_bf16_agrees_with_fp32(demo_model):
    params = EverythingParams(points_per_side=8)
    counts = {"fp32": 0, "bf16": 0}
    matched = []
    for seed in EVERYTHING_SEEDS:
        image = make_scene(seed).image
        found = {}
        for name in counts:
            predictor = Sam2Predictor(demo_model, precision=name, cache=None)
            found[name] = segment_everything(predictor, predictor.encode(image), params).masks.to_dense()
            counts[name] += len(found[name])
        for mask in found["fp32"]:
            best = max((mask_iou(mask, other) for other in found["bf16"]), default=0.0)
            if best > 0.5:  # the same object; an unmatched one counts against the totals
                matched.append(best)
    assert counts["fp32"] >= 15
    assert abs(counts["bf16"] - counts["fp32"]) <= 0.05 * counts["fp32"], counts
    assert np.mean(matched) >= 0.98, f"matched IoU {np.mean(matched):.4f}"


def _track(model, name: str, clip):
    session = VideoSession(VideoTracker(model, precision=name), TrackerSettings(prompt_mode="first_frame"))
    objects = clip.prompted(0)
    prompts = [BoxPrompt(clip.boxes(0)[k], {"object": int(k)}) for k in objects]
    frames = []
    for t, frame in enumerate(clip.frames):
        result = session.step(frame, prompts if t == 0 else None, t)
        dense = result.masks.to_dense()
        frames.append(
            {
                info["object"]: (int(track_id), dense[row])
                for row, (track_id, info) in enumerate(zip(result.track_ids, result.infos))
            }
        )
    return objects, frames


@pytest.mark.slow
def test_video_bf16_agrees_with_fp32_on_a_60_frame_clip(demo_model):
    clip = held_out_clip(CLIP, frames=CLIP_FRAMES)
    objects, fp32 = _track(demo_model, "fp32", clip)
    _, bf16 = _track(demo_model, "bf16", clip)
    assert len(objects) >= 2 and (clip.leaves_at[objects] >= 0).any()  # the clip has a shape that leaves
    ious = []
    for a, b in zip(fp32, bf16):
        for k in objects:
            if k in a and k in b:
                assert a[k][0] == b[k][0], "same object, another track id"
                ious.append(mask_iou(a[k][1], b[k][1]))
            elif k in a or k in b:
                ious.append(0.0)  # reported by one precision only
    assert np.mean(ious) >= 0.98, f"per object-frame IoU {np.mean(ious):.4f}"
    for k in objects:
        last = [max([t for t, frame in enumerate(run) if k in frame], default=-1) for run in (fp32, bf16)]
        assert abs(last[0] - last[1]) <= 1, f"object {k} last reported on frames {last} (fp32, bf16)"
    left = [k for k in objects if clip.leaves_at[k] >= 0]
    assert all(max(t for t, frame in enumerate(fp32) if k in frame) < CLIP_FRAMES - 1 for k in left)


# ----------------------------------------------------------------------------- the sam2 adapter


def test_adapter_matches_the_installed_sam2():
    from sam2.modeling.sam2_base import SAM2Base

    sam2_calls.check_interface(SAM2Base)


def test_adapter_fails_loudly_on_a_changed_sam2_signature(demo_model):
    class RenamedSam2(type(demo_model)):
        def _track_step(self, frame_idx, is_init_cond_frame, vision_feats, vision_pos_embeds, feat_sizes, point_inputs,
                        mask_inputs, output_dict, num_frames, track_in_reverse, prev_sam_mask_logits):  # fmt: skip
            raise AssertionError("must not be called with wrongly bound arguments")

        def _prepare_backbone_features(self, backbone_out):
            return backbone_out, [], []  # one value short

    with pytest.raises(Sam2InterfaceError, match=r"_track_step.*current_vision_feats"):
        sam2_calls.check_interface(RenamedSam2)
    renamed = object.__new__(RenamedSam2)
    with pytest.raises(Sam2InterfaceError, match="_track_step"):
        sam2_calls.track_step(
            renamed, frame_idx=0, is_init_cond_frame=True, vision_feats=[], vision_pos=[], feat_sizes=[],
            point_inputs=None, mask_inputs=None, output_dict={}, num_frames=1,
        )  # fmt: skip
    with pytest.raises(Sam2InterfaceError, match=r"_prepare_backbone_features.*returned tuple of 3.*expects 4"):
        sam2_calls.prepare_backbone_features(renamed, {})
