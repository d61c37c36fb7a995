"""Train the toy ``demo`` SAM 2 on generated scenes, on CPU, from scratch.

    python -m sam_block.demo.train            # writes sam_block/weights/sam2.1_demo.pt

The model is the real SAM 2.1 architecture, shrunk (``sam_block/configs/sam2.1_demo.yaml``).
Training has two phases.

1. *Where is the box* (``--prompt-steps``): prompt encoder and mask decoder alone learn
   to turn a box into the mask that fills it, on a blank image embedding. Trained
   jointly from scratch, the model instead settles on segmenting every shape whatever
   the prompt (mean IoU ~0.25, far below the 0.71 of simply filling the box): image
   features offer that shortcut long before the decoder's attention has learned to
   read prompt positions. Taught first, the localisation survives phase 2.
2. Encoder and decoder are trained jointly on generated scenes (``--steps``), with the
   prompts SAM 2 understands: every shape gets a box (some slightly jittered), half of
   them also 1-3 foreground points. Loss, per prompt: BCE + dice of the single-mask
   output, BCE + dice of the best of the three multimask outputs (SAM's "minimum over
   proposals"), and the MSE between each output's predicted IoU and its actual IoU.

Everything is seeded: the same command on the same thread count gives the same
weights (28 min on a 2-core CPU: one thread trains, a second process draws scenes).
At the end the mean box-prompt mask IoU on held-out scenes (other seeds) is measured
through sam_block's own predictor and printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Deque, Iterator, List, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sam_block.demo.scenes import Scene, make_scene
from sam_block.runtime import sam2_calls

HELD_OUT_SEED = 1_000_000  # evaluation scenes use seeds from here on; training seeds stay far below
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights" / "sam2.1_demo.pt"
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def encode_batch(model, images: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Same path as ``Sam2Predictor.encode``, batched and with gradients."""
    backbone_out = model.forward_image(images)
    vision_feats, _, feat_sizes = sam2_calls.prepare_backbone_features(model, backbone_out)
    vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    batch = images.shape[0]
    feats = [f.permute(1, 2, 0).reshape(batch, -1, h, w) for f, (h, w) in zip(vision_feats, feat_sizes)]
    return feats[-1], feats[:-1]


def sample_prompts(rng: np.random.Generator, scenes: List[Scene], per_image: int):
    """Prompts for up to `per_image` shapes per scene: each gets a box prompt (most exact,
    some jittered) and, half of the time, also a prompt of 1–3 foreground points.

    Returns two groups ``(image index, coords (N, P, 2), labels (N, P), target masks)``,
    boxes and points, so that each group is decoded with the token layout inference uses.
    """
    groups = {"box": ([], [], [], []), "points": ([], [], [], [])}
    for index, scene in enumerate(scenes):
        chosen = rng.permutation(len(scene.masks))[:per_image]
        for shape in chosen:
            mask = scene.masks[shape]
            x1, y1, x2, y2 = scene.boxes[shape]
            jitter = rng.normal(0, 0.03, 4) * np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
            jitter *= rng.random() < 0.3  # most boxes are exact, like a good detector's
            box = np.array([[x1, y1], [x2, y2]], np.float32) + jitter.reshape(2, 2)
            prompts = [("box", box, np.array([2, 3], np.int32))]
            if rng.random() < 0.5:
                ys, xs = np.nonzero(mask)
                count = int(rng.integers(1, 4))
                pick = rng.integers(0, len(xs), count)
                coords = np.full((3, 2), 0, np.float32)
                labels = np.full(3, -1, np.int32)
                coords[:count] = np.stack([xs[pick], ys[pick]], 1) + 0.5
                labels[:count] = 1
                prompts.append(("points", coords, labels))
            for name, coords, labels in prompts:
                for target, value in zip(groups[name], (index, coords, labels, mask)):
                    target.append(value)
    return {name: tuple(np.array(v) for v in group) for name, group in groups.items() if group[0]}


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + dice per mask: logits ``(N, K, H, W)``, target ``(N, 1, H, W)`` → ``(N, K)``."""
    target = target.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((2, 3))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum((2, 3)) + 1) / (prob.sum((2, 3)) + target.sum((2, 3)) + 1)
    return bce + dice


LOSS_SIZE = 128  # masks are compared with the ground truth at this resolution (logits are 64 x 64)


def decode_prompts(
    model, embed: torch.Tensor, high_res: List[torch.Tensor], coords: torch.Tensor, labels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """All four mask outputs ``(N, 4, h, w)`` and their predicted IoUs, one image row per prompt row."""
    encoder = model.sam_prompt_encoder
    sparse, dense = encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, iou_pred, _, _ = model.sam_mask_decoder.predict_masks(
        image_embeddings=embed,
        image_pe=encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=False,
        high_res_features=high_res,
    )
    return low_res, iou_pred


def step_loss(model, embed, high_res, prompts) -> Tuple[torch.Tensor, float]:
    """Decode every prompt group and return the loss and the mean IoU of the single-mask outputs."""
    total, ious = 0.0, []
    for index, coords, labels, targets in prompts.values():
        idx = torch.as_tensor(index)
        low_res, iou_pred = decode_prompts(
            model, embed[idx], [f[idx] for f in high_res], torch.as_tensor(coords), torch.as_tensor(labels)
        )
        logits = F.interpolate(low_res, size=(LOSS_SIZE, LOSS_SIZE), mode="bilinear", align_corners=False)
        target = torch.as_tensor(targets, dtype=torch.float32).unsqueeze(1)
        target = F.interpolate(target, size=(LOSS_SIZE, LOSS_SIZE), mode="area")  # soft edges: exact coverage
        losses = mask_losses(logits, target)  # (N, 4): single-mask output, then 3 proposals
        best = losses[:, 1:].min(dim=1).values
        with torch.no_grad():
            hard, truth = (logits > 0).float(), (target > 0.5).float()
            inter = (hard * truth).sum((2, 3))
            union = (hard + truth).clamp(max=1).sum((2, 3))
            actual_iou = inter / union.clamp(min=1)
        iou_loss = F.mse_loss(iou_pred, actual_iou)
        total = total + losses[:, 0].mean() + best.mean() + iou_loss
        ious.append(actual_iou[:, 0])
    return total, float(torch.cat(ious).mean())


def held_out_ious(predictor, scenes: int = 40, seed: int = HELD_OUT_SEED, multimask_output: bool = True) -> np.ndarray:
    """Mask IoU of every box prompt (exact ground-truth boxes) on held-out scenes."""
    from sam_block.runtime.predictor import PromptBatch

    ious = []
    for s in range(seed, seed + scenes):
        scene = make_scene(s)
        if not len(scene.masks):
            continue
        result = predictor.predict(predictor.encode(scene.image), PromptBatch(boxes=scene.boxes), multimask_output)
        for pred, truth in zip(result.masks.to_dense(), scene.masks):
            ious.append((pred & truth).sum() / max(1, (pred | truth).sum()))
    return np.array(ious)


def evaluate(model, scenes: int = 40, seed: int = HELD_OUT_SEED, multimask_output: bool = True) -> float:
    """Mean mask IoU of box prompts on held-out scenes."""
    from sam_block.runtime.predictor import Sam2Predictor

    return float(np.mean(held_out_ious(Sam2Predictor(model.eval(), cache=None), scenes, seed, multimask_output)))


def pretrain_prompts(
    model, rng: np.random.Generator, steps: int, per_step: int = 32, lr: float = 1e-3, log_every: int = 50
) -> None:
    """Phase 1: prompt encoder and mask decoder learn to fill random boxes on a blank image.

    The image embedding and the high-resolution features are zeros, so the box
    coordinates are the decoder's only information: it has to learn to read them.
    Every output (the single mask and the three proposals) is trained to the filled box.
    """
    encoder, decoder = model.sam_prompt_encoder, model.sam_mask_decoder
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    size, grid = model.image_size, model.sam_image_embedding_size  # 256, 16
    blank = torch.zeros(per_step, model.sam_prompt_embed_dim, grid, grid)
    high_res = [
        torch.zeros(per_step, conv.out_channels, scale * grid, scale * grid)
        for conv, scale in ((decoder.conv_s0, 4), (decoder.conv_s1, 2))
    ]
    centres = (torch.arange(4 * grid) + 0.5) * size / (4 * grid)  # low-res mask pixel centres, image pixels
    start, running = time.time(), []
    for step in range(steps):
        centre = rng.uniform(0, size, (per_step, 2))
        extent = rng.uniform(12, 140, (per_step, 2))
        boxes = torch.from_numpy(
            np.concatenate([centre - extent / 2, centre + extent / 2], 1).clip(0, size).astype(np.float32)
        )
        inside_x = (centres >= boxes[:, 0, None]) & (centres < boxes[:, 2, None])  # (N, W)
        inside_y = (centres >= boxes[:, 1, None]) & (centres < boxes[:, 3, None])  # (N, H)
        target = (inside_y[:, :, None] & inside_x[:, None, :]).float().unsqueeze(1)
        labels = torch.tensor([[2, 3]]).expand(per_step, 2)
        low_res, _ = decode_prompts(model, blank, high_res, boxes.view(-1, 2, 2), labels)
        loss = mask_losses(low_res, target).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"boxes {step + 1}/{steps}  loss {np.mean(running):.3f}  {time.time() - start:.0f}s", flush=True)
            running.clear()


def _scene_batch(first_seed: int, batch: int) -> List[Scene]:
    return [make_scene(first_seed + i) for i in range(batch)]


def _quiet_worker() -> None:
    cv2.setNumThreads(1)


def prefetched_scenes(first_seed: int, steps: int, batch: int, ahead: int = 8) -> Iterator[List[Scene]]:
    """The scenes of each step (seeds ``first_seed + step * batch + i``), drawn by a second
    process a few steps ahead: drawing costs ~20 % of a step, the second core is idle
    otherwise, and the scenes depend only on their seeds, so the weights are unchanged."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_quiet_worker) as pool:
        pending: Deque = deque()
        for step in range(steps):
            pending.append(pool.submit(_scene_batch, first_seed + step * batch, batch))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def train(steps: int, batch: int, per_image: int, lr: float, seed: int, prompt_steps: int = 0, log_every: int = 20):
    from sam_block.runtime.models import build_model
    from sam_block.runtime.variants import get_variant

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(get_variant("demo")).train()
    if prompt_steps:
        pretrain_prompts(model, rng, prompt_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / steps)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start, running = time.time(), []
    for step, scenes in enumerate(prefetched_scenes(seed * 10_000_000, steps, batch)):
        images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float().div(255)
        images = (images - MEAN) / STD
        prompts = sample_prompts(rng, scenes, per_image)
        embed, high_res = encode_batch(model, images)
        loss, iou = step_loss(model, embed, high_res, prompts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        running.append((float(loss.detach()), iou))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean_loss, mean_iou = np.mean(running, axis=0)
            running.clear()
            print(
                f"step {step + 1}/{steps}  loss {mean_loss:.3f}  train IoU {mean_iou:.3f}  lr {scheduler.get_last_lr()[0]:.2e}  {time.time() - start:.0f}s",
                flush=True,
            )
    return model.eval()


def load_demo(path: Path):
    """The demo architecture with the weights of checkpoint `path`, in eval mode."""
    from sam_block.runtime.checkpoints import load_state_dict
    from sam_block.runtime.models import build_model
    from sam_block.runtime.variants import get_variant

    model = build_model(get_variant("demo"))
    model.load_state_dict(load_state_dict(path))
    return model.eval()


def save_checkpoint(model, out: Path) -> None:
    """Write `model`'s weights in the official format ``{"model": state_dict}``, atomically."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({"model": state}, tmp)
    os.replace(tmp, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint to write (default {DEFAULT_OUT})")
    parser.add_argument(
        "--prompt-steps", type=int, default=600, help="phase 1: steps of learning to read box prompts on a blank image"
    )
    parser.add_argument("--steps", type=int, default=3000, help="phase 2: steps of joint training on scenes")
    parser.add_argument("--batch", type=int, default=4, help="scenes per step")
    parser.add_argument("--per-image", type=int, default=6, help="prompts per scene")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: fastest for this small model, and the weights depend on it slightly)",
    )
    parser.add_argument(
        "--evaluate", type=Path, metavar="CHECKPOINT", help="only measure the held-out IoU of CHECKPOINT"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        model = load_demo(args.evaluate)
        print(
            f"held-out mean box IoU: {evaluate(model):.4f} (best of 3 proposals), {evaluate(model, multimask_output=False):.4f} (single-mask output)"
        )
        return 0
    wall, cpu = time.time(), time.process_time()
    model = train(args.steps, args.batch, args.per_image, args.lr, args.seed, args.prompt_steps)
    save_checkpoint(model, args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {time.time() - wall:.0f}s wall, {time.process_time() - cpu:.0f}s CPU"
    )
    print(
        f"held-out mean box IoU: {evaluate(model):.4f} (best of 3 proposals), {evaluate(model, multimask_output=False):.4f} (single-mask output)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
