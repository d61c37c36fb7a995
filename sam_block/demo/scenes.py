"""Procedurally generated scenes: overlapping shapes on textured, noisy backgrounds.

Every scene comes with the ground truth of each visible shape: its mask (what is
left of it once the shapes drawn later cover it), its tight box and its kind.
The same seed always gives the same scene.

Example:
    >>> scene = make_scene(seed=7)
    >>> scene.image.shape, scene.masks.shape[1:]
    ((256, 256, 3), (256, 256))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import cv2
import numpy as np

SHAPE_KINDS = ("rectangle", "ellipse", "polygon")
MIN_VISIBLE_PIXELS = 0.004  # fraction of the image a shape must keep to be ground truth
MIN_VISIBLE_FRACTION = 0.55  # fraction of its own area a shape must keep to be ground truth


@dataclass
class Scene:
    """One generated picture and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8, RGB.
        masks: ``(N, H, W)`` bool, visible part of each shape, in drawing order.
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` tight boxes of `masks` (pixel edges).
        kinds: ``N`` shape kinds, from :data:`SHAPE_KINDS`.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    kinds: List[str]


def color(rng: np.random.Generator, avoid: np.ndarray = None) -> np.ndarray:
    """A random colour at least somewhat different from `avoid`."""
    for _ in range(20):
        value = rng.integers(0, 256, 3).astype(np.float32)
        if avoid is None or np.abs(value - avoid).max() > 60:
            return value
    return value


def texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray) -> np.ndarray:
    """A float32 ``(H, W, 3)`` fill around colour `base`: flat, stripes, checks, blobs or gradient."""
    kind = rng.choice(["flat", "flat", "stripes", "checks", "blobs", "gradient"])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    other = np.clip(base + rng.normal(0, 45, 3), 0, 255)
    if kind == "flat":
        weight = np.zeros((height, width), np.float32)
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        weight = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checks":
        cell = int(rng.integers(3, 12))
        weight = (((xs // cell) + (ys // cell)) % 2).astype(np.float32)
    elif kind == "blobs":
        grid = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
        weight = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        weight = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    return base * (1 - weight[..., None]) + other * weight[..., None]


def _shape_mask(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    scale = min(height, width)
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    rx, ry = rng.uniform(0.06, 0.25, 2) * scale
    return draw_shape(rng, kind, height, width, cx, cy, rx, ry)


def draw_shape(
    rng: np.random.Generator, kind: str, height: int, width: int, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    """A ``(height, width)`` bool mask of a random shape of `kind` centred at `cx, cy` with radii `rx, ry`."""
    mask = np.zeros((height, width), np.uint8)
    if kind == "rectangle":
        angle = 0.0 if rng.random() < 0.5 else rng.uniform(0, 180)
        corners = cv2.boxPoints(((cx, cy), (2 * rx, 2 * ry), angle))
        cv2.fillPoly(mask, [np.round(corners * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    elif kind == "ellipse":
        cv2.ellipse(mask, ((cx, cy), (2 * rx, 2 * ry), rng.uniform(0, 180)), 1, -1)
    else:
        count = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(0.5, 1.0, count)
        points = np.stack([cx + rx * radii * np.cos(angles), cy + ry * radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def make_scene(seed: int, height: int = 256, width: int = 256, max_shapes: int = 6) -> Scene:
    """Draw the scene of `seed`: a textured background, 2..`max_shapes` shapes, noise."""
    rng = np.random.default_rng(seed)
    background = color(rng)
    image = texture(rng, height, width, background)
    masks, kinds, areas = [], [], []
    for _ in range(int(rng.integers(2, max_shapes + 1))):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        mask = _shape_mask(rng, kind, height, width)
        if not mask.any():
            continue
        fill = texture(rng, height, width, color(rng, avoid=image[mask].mean(axis=0)))
        image[mask] = fill[mask]
        masks = [m & ~mask for m in masks]
        masks.append(mask)
        kinds.append(kind)
        areas.append(int(mask.sum()))
    image += rng.normal(0, rng.uniform(0, 12), image.shape).astype(np.float32)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    image = np.clip(image, 0, 255).astype(np.uint8)
    keep = [
        i
        for i, mask in enumerate(masks)
        if mask.sum() >= MIN_VISIBLE_PIXELS * height * width and mask.sum() >= MIN_VISIBLE_FRACTION * areas[i]
    ]
    kept = np.array([masks[i] for i in keep], dtype=bool).reshape(-1, height, width)
    return Scene(image=image, masks=kept, boxes=boxes_of(kept), kinds=[kinds[i] for i in keep])


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """Tight ``x1, y1, x2, y2`` boxes of ``(N, H, W)`` masks, in pixel-edge coordinates."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes
