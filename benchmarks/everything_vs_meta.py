"""Segment-everything: our runtime vs Meta's SAM2AutomaticMaskGenerator, same checkpoint, same parameters.

Run by hand (not a test):
    python benchmarks/everything_vs_meta.py --size 1080x1920 --points-per-side 32
    python benchmarks/everything_vs_meta.py --size 1080x1920 --points-per-side 16 --pred-iou-thresh 0 --stability-score-thresh 0

Uses the tests' tiny-architecture hiera_tiny checkpoint with random weights (built
once into --checkpoint-dir). With random weights few proposals pass Meta's default
filters, which favours a filter-first implementation; the second command disables
both filters, so every proposal is upsampled by both: our worst case.
Prints wall time and peak RSS growth of each, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1080x1920", help="HxW of the test image")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.8)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path(tempfile.gettempdir()) / "sam_block_bench")
    args = parser.parse_args()

    from tests.support import build_random_checkpoint, make_scene, meta_sam2  # side-effect free

    os.environ["SAM_BLOCK_CHECKPOINT_DIR"] = str(args.checkpoint_dir)

    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint_dir / "sam2.1_hiera_tiny.pt"
    if not checkpoint.exists():
        build_random_checkpoint(checkpoint)
    height, width = map(int, args.size.split("x"))
    rgb = make_scene(height, width)[:, :, ::-1].copy()
    params = dict(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=0.7,
    )

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from sam_block.runtime.everything import EverythingParams, segment_everything
    from sam_block.runtime.models import MODELS
    from sam_block.runtime.predictor import Sam2Predictor

    meta = SAM2AutomaticMaskGenerator(meta_sam2(checkpoint), **params)
    ours = Sam2Predictor(MODELS.get("hiera_tiny", torch.device("cpu")))

    base = rss_mb()
    start = time.perf_counter()
    result = segment_everything(ours, ours.encode(rgb), EverythingParams(**params))
    ours_s = time.perf_counter() - start
    ours_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base

    start = time.perf_counter()
    theirs = meta.generate(rgb)
    meta_s = time.perf_counter() - start
    meta_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base

    print(f"image {height}x{width}, params {params}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    print(f"ours : {ours_s:8.1f} s  {len(result.masks):4d} masks  peak RSS growth {ours_peak:8.0f} MB")
    print(f"meta : {meta_s:8.1f} s  {len(theirs):4d} masks  peak RSS growth {meta_peak:8.0f} MB (cumulative peak)")
    print(f"ratio ours/meta: {ours_s / meta_s:.2f}")


if __name__ == "__main__":
    main()
