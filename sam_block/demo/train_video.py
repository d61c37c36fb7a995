"""Teach the toy ``demo`` SAM 2 to track: train its video parts on generated clips, on CPU.

    python -m sam_block.demo.train_video      # rewrites sam_block/weights/sam2.1_demo.pt

What is trained is what only video uses: memory attention, memory encoder (its mask
downsampler included), object-pointer projections, memory and pointer position
encodings, the no-object embeddings and the object-score head. They start from a seeded
fresh initialisation every run. Everything the image path reads (image encoder, prompt
encoder, mask decoder) is loaded from the checkpoint and frozen, so box-prompt masks on
still images stay bit for bit what ``python -m sam_block.demo.train`` made them.

Each step tracks a batch of generated clips (``sam_block/demo/clips.py``) exactly as the
tracker step does at inference: every object is prompted with its box on frame 0 (a
conditioning frame whose memory is encoded from the binarised mask), then propagated
frame by frame through ``SAM2Base._track_step`` and its memory encoder, each frame's
prediction becoming memory for the next, with gradients through time. Loss per object and
frame: BCE + dice of the three proposals where the object is visible, BCE of the
object-score logit against "visible" (0 once it has left or is hidden). A curriculum
starts with short, slow clips and ends with longer, faster ones.

Seeded: the same command on the same thread count gives the same weights. At the end the
tracking of held-out clips (seeds never trained on) is measured through sam_block's own
tracker and printed: see :func:`evaluate_tracking`.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam_block.demo.clips import Clip, make_clip
from sam_block.demo.train import DEFAULT_OUT, load_demo, mask_losses, save_checkpoint
from sam_block.runtime import sam2_calls

HELD_OUT_CLIP_SEED = 2_000_000  # evaluation clips; training clips use seeds far below
EVAL_FRAMES = 60
LEAVE_WITHIN = 5  # frames: how soon an object that left must be reported absent
# Parameters only the video path reads (prefixes of SAM2Base's parameter names).
VIDEO_PARTS = (
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "maskmem_tpos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "sam_mask_decoder.pred_obj_score_head.",
)
UNKNOWN_NUM_FRAMES = 1 << 30


def is_video_part(name: str) -> bool:
    return name.startswith(VIDEO_PARTS)


# ----------------------------------------------------------------------------- training


def _encode_frames(model, frames: np.ndarray):
    """Vision features of ``(T, H, W, 3)`` RGB frames (already model-sized), no gradients:
    per level ``(h*w, T, C)`` as ``_track_step`` reads them."""
    from sam_block.runtime.predictor import IMAGENET_MEAN, IMAGENET_STD

    images = torch.from_numpy(frames / 255.0).permute(0, 3, 1, 2).float()
    images = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        backbone_out = model.forward_image(images.float())
        feats, pos, sizes = sam2_calls.prepare_backbone_features(model, backbone_out)
    return feats, pos, sizes


def _box_inputs(boxes: np.ndarray) -> dict:
    """Box prompts as SAM 2's two corner points (frames are model-sized: no rescaling)."""
    coords = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int32).expand(len(boxes), 2)
    return {"point_coords": coords, "point_labels": labels}


def track_loss(
    model, clips: List[Clip], rng: np.random.Generator, jitter: float = 0.03
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Prompt every object visible on frame 0 of each clip with its (slightly jittered) box,
    propagate through the clip as the tracker does, and return the loss and statistics."""
    frames = np.concatenate([c.frames for c in clips])
    feats, pos, sizes = _encode_frames(model, frames)
    length = clips[0].frames.shape[0]
    columns, targets, boxes = [], [], []
    for i, clip in enumerate(clips):
        visible = np.flatnonzero(clip.present[0])
        first = clip.boxes(0)[visible]
        scale = np.tile(first[:, 2:] - first[:, :2], 2)
        first = first + rng.normal(0, jitter, first.shape) * scale * (rng.random((len(first), 1)) < 0.5)
        boxes.append(first)
        columns += [i * length] * len(visible)
        targets.append(clip.masks[:, visible])
    columns = torch.tensor(columns)
    target = torch.from_numpy(np.concatenate(targets, axis=1)).float()  # (T, N, H, W)
    size = model.sam_image_embedding_size * 4  # the low-res logits' size
    target = F.interpolate(target, size=(size, size), mode="area")
    present = (target.flatten(2).sum(-1) > 0).float()  # (T, N)
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    mask_terms, score_terms, ious, present_acc = [], [], [], []
    for t in range(length):
        rows = columns + t
        vision = [f[:, rows] for f in feats]
        vision_pos = [p[:, rows] for p in pos]
        prompt = t == 0
        step = sam2_calls.track_step(
            model,
            frame_idx=t,
            is_init_cond_frame=prompt,
            vision_feats=vision,
            vision_pos=vision_pos,
            feat_sizes=sizes,
            point_inputs=_box_inputs(np.concatenate(boxes)) if prompt else None,
            mask_inputs=None,
            output_dict=memory,
            num_frames=UNKNOWN_NUM_FRAMES,
            track_in_reverse=False,
            prev_sam_mask_logits=None,
        )
        current, multimasks, low_res, score = (
            step.current_out,
            step.low_res_multimasks,
            step.low_res_masks,
            step.object_score_logits,
        )
        current.update(pred_masks=low_res, obj_ptr=step.obj_ptr, object_score_logits=score)
        if prompt:  # the tracker encodes a prompt frame's memory from the binarised, upsampled low-res mask
            high_res = F.interpolate(
                low_res, size=(model.image_size, model.image_size), mode="bilinear", align_corners=False
            )
            current["maskmem_features"], current["maskmem_pos_enc"] = sam2_calls.encode_new_memory(
                model,
                vision_feats=vision,
                feat_sizes=sizes,
                pred_masks_high_res=high_res,
                object_score_logits=score,
                is_mask_from_pts=True,
            )
        else:
            sam2_calls.encode_memory_in_output(
                model,
                vision_feats=vision,
                feat_sizes=sizes,
                point_inputs=None,
                run_mem_encoder=True,
                high_res_masks=step.high_res_masks,
                object_score_logits=score,
                current_out=current,
            )
        memory["cond_frame_outputs" if prompt else "non_cond_frame_outputs"][t] = current
        seen = present[t]
        score_terms.append(F.binary_cross_entropy_with_logits(score.reshape(-1), seen))  # the prompt frame's too
        if prompt:
            continue
        losses = mask_losses(multimasks.clamp(-32, 32), target[t].unsqueeze(1))  # (N, 3)
        mask_terms.append((losses.mean(1) * seen).sum() / seen.sum().clamp(min=1))
        with torch.no_grad():
            hard, truth = (low_res > 0).float(), (target[t].unsqueeze(1) > 0.5).float()
            inter, union = (hard * truth).sum((1, 2, 3)), (hard + truth).clamp(max=1).sum((1, 2, 3))
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
            ious.append(iou.mean())
            present_acc.append(((score.reshape(-1) > 0).float() == seen).float().mean())
    loss = torch.stack(mask_terms).mean() + torch.stack(score_terms).mean()
    stats = {
        "loss": float(loss.detach()),
        "iou": float(torch.stack(ious).mean()),
        "presence": float(torch.stack(present_acc).mean()),
    }
    return loss, stats


@dataclass
class Stage:
    """A curriculum stage: from `start` (fraction of the steps) on, clips of `frames` frames at `speed`."""

    start: float
    frames: int
    speed: float


CURRICULUM = (Stage(0.0, 4, 1.0), Stage(0.2, 6, 2.0), Stage(0.45, 8, 3.0), Stage(0.75, 10, 3.0))


def stage_at(step: int, steps: int) -> Stage:
    return [s for s in CURRICULUM if step >= s.start * steps][-1]


def training_seeds(seed: int, steps: int, batch: int) -> range:
    """The clip seeds one training run draws, step by step (held-out clips start at HELD_OUT_CLIP_SEED)."""
    return range(seed * 10_000_000, seed * 10_000_000 + steps * batch)


def build_demo_model(seed: int, checkpoint: Optional[Path] = None):
    """The demo model with its video parts freshly initialised from `seed` and everything else
    loaded (and frozen) from `checkpoint` (default: the bundled weights)."""
    from sam_block.runtime.checkpoints import checkpoint_path, load_state_dict
    from sam_block.runtime.models import build_model
    from sam_block.runtime.variants import get_variant

    variant = get_variant("demo")
    torch.manual_seed(seed)
    model = build_model(variant)
    state = load_state_dict(checkpoint or checkpoint_path(variant))
    image_parts = {k: v for k, v in state.items() if not is_video_part(k)}
    missing, unexpected = model.load_state_dict(image_parts, strict=False)
    assert not unexpected and all(is_video_part(k) for k in missing), (missing, unexpected)
    for name, param in model.named_parameters():
        param.requires_grad_(is_video_part(name))
    return model.eval()  # eval: no dropout, and the prompt frame's memory is binarised as at inference


def train(steps: int, batch: int, lr: float, seed: int, checkpoint: Optional[Path] = None, log_every: int = 25):
    model = build_demo_model(seed, checkpoint)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / steps)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start, running, seeds = time.time(), [], training_seeds(seed, steps, batch)
    for step in range(steps):
        stage = stage_at(step, steps)
        clips = [
            make_clip(
                seeds[step * batch + i], frames=stage.frames, speed=stage.speed, objects=(2, 4), leave_probability=0.5
            )
            for i in range(batch)
        ]
        loss, stats = track_loss(model, clips, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        running.append(stats)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean = {k: np.mean([r[k] for r in running]) for k in running[0]}
            running.clear()
            print(
                f"step {step + 1}/{steps}  {stage.frames} frames x{stage.speed:g}  loss {mean['loss']:.3f}  "
                f"tracked IoU {mean['iou']:.3f}  presence {mean['presence']:.3f}  {time.time() - start:.0f}s",
                flush=True,
            )
    return model


# ----------------------------------------------------------------------------- evaluation


@dataclass
class TrackingScore:
    """How one clip was tracked from its frame-0 boxes."""

    j: float  # mean mask IoU over frames and prompted objects (both empty counts as 1)
    copy_first: float  # the same for the frame-0 mask copied to every frame
    leave_delays: List[int]  # per object that left: frames until it was reported absent (-1: never)
    id_switches: int  # frames x tracks where a track's mask is another object's
    objects: int


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; two empty masks agree (1.0), as in DAVIS."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def track_clip(model, clip: Clip, settings=None):
    """Track `clip` through sam_block's VideoSession (the tracker step's runtime), prompted
    with the boxes of the objects a detector would box on frame 0 (``Clip.prompted``).
    Returns (object indices, per frame ``{object index: mask}`` of the tracks reported present)."""
    from sam_block.runtime.sessions import BoxPrompt, TrackerSettings, VideoSession
    from sam_block.runtime.tracker import VideoTracker

    session = VideoSession(VideoTracker(model), settings or TrackerSettings())
    objects = clip.prompted(0)
    first_boxes = clip.boxes(0)
    prompts = [BoxPrompt(first_boxes[k], {"object": int(k)}) for k in objects]
    reported = []
    for t, frame in enumerate(clip.frames):
        result = session.step(frame, prompts if t == 0 else None, frame_number=t)
        dense = result.masks.to_dense()
        reported.append({info["object"]: dense[row] for row, info in enumerate(result.infos)})
    return objects, reported


def score_clip(clip: Clip, objects: np.ndarray, reported: List[Dict[int, np.ndarray]]) -> TrackingScore:
    empty = np.zeros(clip.masks.shape[2:], bool)
    js, copies, switches = [], [], 0
    for t, frame in enumerate(reported):
        for k in objects:
            js.append(mask_iou(frame.get(k, empty), clip.masks[t, k]))
            copies.append(mask_iou(clip.masks[0, k], clip.masks[t, k]))
        for k, mask in frame.items():
            overlaps = [mask_iou(mask, clip.masks[t, other]) for other in range(clip.masks.shape[1])]
            best = int(np.argmax(overlaps))
            switches += int(best != k and overlaps[best] > 0.5)
    delays = []
    for k in objects:
        leave = int(clip.leaves_at[k])
        if leave >= 0:
            gone = [t for t in range(leave, len(reported)) if k not in reported[t]]
            delays.append(gone[0] - leave if gone else -1)
    return TrackingScore(float(np.mean(js)), float(np.mean(copies)), delays, switches, len(objects))


def held_out_clip(index: int, frames: int = EVAL_FRAMES) -> Clip:
    """Held-out clip `index`: seeds never trained on; every other clip has an object that leaves."""
    return make_clip(HELD_OUT_CLIP_SEED + index, frames=frames, speed=2.0, leave_probability=float(index % 2 == 0))


def evaluate_tracking(model, clips: int = 12, frames: int = EVAL_FRAMES) -> Dict[str, float]:
    scores = [score_clip(clip, *track_clip(model, clip)) for clip in (held_out_clip(i, frames) for i in range(clips))]
    delays = [d for s in scores for d in s.leave_delays]
    return {
        "J": float(np.mean([s.j for s in scores])),
        "copy_first": float(np.mean([s.copy_first for s in scores])),
        "left": len(delays),
        "left_reported_in_time": sum(0 <= d <= LEAVE_WITHIN for d in delays),
        "id_switches": sum(s.id_switches for s in scores),
        "objects": sum(s.objects for s in scores),
    }


def describe(result: Dict[str, float]) -> str:
    return (
        f"held-out tracking ({result['objects']} objects): J {result['J']:.3f} vs copy-first-mask {result['copy_first']:.3f}; "
        f"left the frame and reported absent within {LEAVE_WITHIN} frames: {result['left_reported_in_time']}/{result['left']}; "
        f"id switches: {result['id_switches']}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint to write (default {DEFAULT_OUT})")
    parser.add_argument(
        "--checkpoint", type=Path, help="take the image parts from this checkpoint (default: the bundled demo weights)"
    )
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the weights depend on it slightly)")
    parser.add_argument("--eval-clips", type=int, default=12, help="held-out clips measured at the end (0: skip)")
    parser.add_argument(
        "--evaluate", type=Path, metavar="CHECKPOINT", help="only measure held-out tracking of CHECKPOINT"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        print(describe(evaluate_tracking(load_demo(args.evaluate), args.eval_clips)))
        return 0
    wall = time.time()
    model = train(args.steps, args.batch, args.lr, args.seed, args.checkpoint)
    save_checkpoint(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {time.time() - wall:.0f}s")
    if args.eval_clips:
        print(describe(evaluate_tracking(model.eval(), args.eval_clips)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
