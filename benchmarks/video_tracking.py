"""Video tracking: our streaming tracker against Meta's SAM2VideoPredictor, and memory over a long video.

    python benchmarks/video_tracking.py                      # demo architecture, bundled weights
    python benchmarks/video_tracking.py --frames 60 --long 1000 --objects 5
    python benchmarks/video_tracking.py --version hiera_tiny --height 480 --width 640 --frames 4 --objects 2 --long 0

Part 1 (speed): the same clip (`--frames` frames, `--objects` moving shapes prompted with their
boxes on frame 0) tracked by Meta's predictor (one inference state, all objects together, frames
preloaded by `init_state`) and by our `VideoSession` (frames streamed one at a time). Prints the
per-frame time of each (Meta's `init_state` loading reported apart) and the worst mask IoU
between the two.

Part 2 (memory): `--long` frames streamed through our session, RSS and the session's tensor
bytes sampled every 100 frames, per-frame p50/p99. Meta's predictor is measured on the same
clip length only up to `--meta-long` frames (its state keeps every frame and every output).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.video_support import build_meta_video_predictor, make_clip, mask_iou, write_jpegs  # noqa: E402


def rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def ours(model, frames, boxes):
    """Per-frame seconds and masks {object: {frame: mask}}, frames streamed as the block does."""
    from sam_block.runtime.sessions import BoxPrompt, TrackerSettings, VideoSession
    from sam_block.runtime.tracker import VideoTracker

    session = VideoSession(VideoTracker(model), TrackerSettings(prompt_mode="first_frame"))
    times, masks = [], {}
    for f, bgr in enumerate(frames):
        prompts = [BoxPrompt(np.array(box, float), {"k": k}) for k, box in enumerate(boxes[0])] if f == 0 else None
        started = time.perf_counter()
        result = session.step(np.ascontiguousarray(bgr[..., ::-1]), prompts, f)
        times.append(time.perf_counter() - started)
        dense = result.masks.to_dense()
        for row, track_id in enumerate(result.track_ids):
            masks.setdefault(int(track_id) - 1, {})[f] = dense[row]
    return np.array(times), masks, session


def meta(predictor, folder, boxes, n_frames):
    """Meta's per-frame seconds (propagation), its init_state seconds, masks, RSS growth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = rss_mb()
        started = time.perf_counter()
        state = predictor.init_state(str(folder))
        load_s = time.perf_counter() - started
        for k, box in enumerate(boxes[0]):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k, box=np.asarray(box, dtype=np.float32))
        times, masks, last = [], {}, time.perf_counter()
        for frame, obj_ids, logits in predictor.propagate_in_video(state):
            now = time.perf_counter()
            times.append(now - last)
            last = now
            for row, obj in enumerate(obj_ids):
                masks.setdefault(int(obj), {})[frame] = (logits[row, 0] > 0).cpu().numpy()
        grown = rss_mb() - before
    return np.array(times), load_s, masks, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--long", type=int, default=1000)
    parser.add_argument("--meta-long", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--version", default="demo", help="demo (bundled weights) or an official version (random weights)"
    )
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sam_block.runtime.variants import get_variant

    variant = get_variant(args.version)
    if variant.bundled:
        checkpoint, weights = Path(variant.bundled), "bundled weights"
    else:
        from tests.support import build_random_checkpoint

        checkpoint = build_random_checkpoint(
            Path(tempfile.mkdtemp(prefix="sam_block_bench_")) / variant.filename, version=args.version
        )
        weights = "random weights"
    from sam_block.runtime.models import build_model

    model = build_model(variant)
    model.load_state_dict(torch.load(str(checkpoint), map_location="cpu", weights_only=True)["model"])
    model.eval()
    predictor = build_meta_video_predictor(variant.config, checkpoint)
    print(
        f"{args.version}, {weights}, CPU, {args.threads} threads, {args.objects} objects, "
        f"{args.height}x{args.width} frames"
    )

    frames, boxes = make_clip(frames=args.frames, height=args.height, width=args.width, objects=args.objects, seed=1)
    folder = Path(tempfile.mkdtemp(prefix="sam_block_bench_clip_"))
    decoded = write_jpegs(frames, folder)
    meta_t, load_s, meta_masks, _ = meta(predictor, folder, boxes, args.frames)
    our_t, our_masks, _ = ours(model, decoded, boxes)
    worst = min(
        mask_iou(our_masks[k][f], meta_masks[k][f])
        for k in meta_masks
        for f in meta_masks[k]
        if k in our_masks and f in our_masks[k]
    )
    compared = sum(1 for k in meta_masks for f in meta_masks[k] if k in our_masks and f in our_masks[k])
    print(
        f"[speed] {args.frames} frames: Meta {meta_t.mean() * 1e3:.0f} ms/frame (+ init_state {load_s:.2f} s), "
        f"ours {our_t.mean() * 1e3:.0f} ms/frame (p50 {np.percentile(our_t, 50) * 1e3:.0f}, "
        f"p99 {np.percentile(our_t, 99) * 1e3:.0f}); worst mask IoU ours vs Meta {worst:.4f} "
        f"over {compared} object-frames present in both"
    )

    if args.long <= 0:
        return
    long_frames, long_boxes = make_clip(
        frames=args.long, height=args.height, width=args.width, objects=args.objects, seed=2
    )
    gc.collect()
    start_rss = rss_mb()
    from sam_block.runtime.sessions import BoxPrompt, TrackerSettings, VideoSession
    from sam_block.runtime.tracker import VideoTracker

    session = VideoSession(VideoTracker(model), TrackerSettings(prompt_mode="first_frame", lost_after=10**6))
    times = []
    for f, bgr in enumerate(long_frames):
        prompts = [BoxPrompt(np.array(b, float), {}) for b in long_boxes[0]] if f == 0 else None
        started = time.perf_counter()
        session.step(np.ascontiguousarray(bgr[..., ::-1]), prompts, f)
        times.append(time.perf_counter() - started)
        if (f + 1) % 100 == 0:
            print(
                f"[memory] frame {f + 1}: RSS +{rss_mb() - start_rss:.1f} MB, session tensors "
                f"{session.state_bytes() / 2**20:.2f} MB, tracks {len(session.tracks)}"
            )
    times = np.array(times)
    print(
        f"[long] {args.long} frames: p50 {np.percentile(times, 50) * 1e3:.0f} ms, p99 "
        f"{np.percentile(times, 99) * 1e3:.0f} ms, mean {times.mean() * 1e3:.0f} ms per frame"
    )
    del session, long_frames
    gc.collect()

    meta_frames = long_boxes[: args.meta_long]
    meta_folder = Path(tempfile.mkdtemp(prefix="sam_block_bench_long_"))
    write_jpegs(
        make_clip(frames=args.meta_long, height=args.height, width=args.width, objects=args.objects, seed=2)[0],
        meta_folder,
    )
    _, _, _, grown = meta(predictor, meta_folder, meta_frames, args.meta_long)
    print(f"[meta memory] {args.meta_long} frames: RSS +{grown:.1f} MB during init_state + propagation")


if __name__ == "__main__":
    main()
