"""Exact RLE of many masks on a 4K frame: built from our cropped masks vs densifying each mask.

    python benchmarks/rle_4k.py                 # 300 masks on 3840x2160
    python benchmarks/rle_4k.py --masks 100 --width 1920 --height 1080

Masks are random blobs (ellipses with ragged edges, 40-400 px) stored as ``CroppedMasks``, as
the blocks hold them. "crops" is what ``output_format: rle`` does (``cropped_masks_to_rles``);
"dense" is what a serializer without crops must do: unpack each mask to the full frame and
``pycocotools.mask.encode`` it. Both outputs are checked byte-identical. Peak memory is
tracemalloc's peak of Python/numpy allocations during the encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam_block.rle import cropped_masks_to_rles
from sam_block.runtime.masks import CroppedMasks


def blobs(count: int, height: int, width: int, seed: int = 0) -> CroppedMasks:
    rng = np.random.default_rng(seed)
    boxes, crops = [], []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(40, 400, 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        crop = np.zeros((h, w), np.uint8)
        cv2.ellipse(crop, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
        crop &= (rng.random((h, w)) > 0.05).astype(np.uint8)  # ragged: holes and specks
        ys, xs = np.nonzero(crop)
        crop = crop[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(bool)
        boxes.append([x + xs.min(), y + ys.min(), x + xs.max(), y + ys.max()])
        crops.append(crop)
    return CroppedMasks((height, width), np.array(boxes), crops=crops)


def dense_rles(masks: CroppedMasks):
    out = []
    for i in range(len(masks)):
        full = np.zeros(masks.image_size, dtype=np.uint8, order="F")
        x1, y1, x2, y2 = masks.boxes[i]
        full[y1 : y2 + 1, x1 : x2 + 1] = masks.crop(i)
        rle = mask_utils.encode(full)
        out.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def measure(function, masks):
    tracemalloc.start()
    started = time.perf_counter()
    result = function(masks)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=300)
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--height", type=int, default=2160)
    args = parser.parse_args()
    masks = blobs(args.masks, args.height, args.width)
    crops, crops_s, crops_mb = measure(cropped_masks_to_rles, masks)
    dense, dense_s, dense_mb = measure(dense_rles, masks)
    assert crops == dense, "RLE from crops differs from pycocotools on the dense masks"
    print(f"{args.masks} masks on {args.width}x{args.height}, identical RLE: "
          f"crops {crops_s:.2f} s, peak {crops_mb:.1f} MB; dense {dense_s:.2f} s, peak {dense_mb:.1f} MB "
          f"({dense_s / crops_s:.1f}x the time, {dense_mb / max(crops_mb, 1e-6):.1f}x the memory)")  # fmt: skip


if __name__ == "__main__":
    main()
