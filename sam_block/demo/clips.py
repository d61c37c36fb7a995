"""Procedurally generated video clips: textured shapes moving, scaling and rotating over a
textured background, passing over and under each other, some leaving the frame.

Every clip comes with its ground truth: each object's visible mask on every frame (what
the objects drawn above it leave of it) and the frame from which it has left the picture.
The same seed and arguments always give the same clip.

Example:
    >>> clip = make_clip(seed=3, frames=5)
    >>> clip.frames.shape, clip.masks.shape[0], clip.masks.shape[2:]
    ((5, 256, 256, 3), 5, (256, 256))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import cv2
import numpy as np

from sam_block.demo.scenes import MIN_VISIBLE_FRACTION, SHAPE_KINDS, boxes_of, color, draw_shape, texture

MIN_PRESENT_PIXELS = 24  # an object with fewer visible pixels counts as absent (its mask is emptied)
DISTINCT_COLOR = 70  # an object's colour differs this much (max over R, G, B) from the background's and the others'
MIN_BULK = 0.35  # a shape covers at least this fraction of its ellipse (thin slivers are drawn again)


@dataclass
class Clip:
    """One generated clip and its ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8, RGB.
        masks: ``(T, N, H, W)`` bool, visible part of each object (empty when absent).
        kinds: ``N`` shape kinds.
        leaves_at: ``(N,)`` int, first frame from which the object is entirely outside the
            picture for good, ``-1`` for objects that stay.
        areas: ``(T, N)`` int, pixels of each object inside the picture, hidden parts included.
    """

    frames: np.ndarray
    masks: np.ndarray
    kinds: List[str]
    leaves_at: np.ndarray
    areas: np.ndarray

    def prompted(self, frame: int = 0) -> np.ndarray:
        """The objects a detector would box on `frame`: those showing at least
        MIN_VISIBLE_FRACTION of themselves there, the rule the demo scenes' ground truth
        follows (a shape mostly hidden under another has no box of its own)."""
        visible = self.masks[frame].sum(axis=(1, 2))
        return np.flatnonzero((visible > 0) & (visible >= MIN_VISIBLE_FRACTION * self.areas[frame]))

    @property
    def present(self) -> np.ndarray:
        """``(T, N)`` bool: the object is visible on the frame."""
        return self.masks.any(axis=(2, 3))

    def boxes(self, frame: int) -> np.ndarray:
        """Tight ``x1, y1, x2, y2`` boxes of the objects on `frame` (zeros where absent)."""
        return boxes_of(self.masks[frame])


@dataclass
class _Sprite:
    """An object in its own square canvas, centred; placed on frames by an affine warp."""

    mask: np.ndarray  # (S, S) uint8
    fill: np.ndarray  # (S, S, 3) float32
    kind: str
    centres: np.ndarray  # (T, 2) frame position of the canvas centre
    scales: np.ndarray  # (T,)
    angles: np.ndarray  # (T,) degrees


def _distinct_color(rng: np.random.Generator, avoid: List[np.ndarray]) -> np.ndarray:
    """A random colour far from every colour in `avoid` (the background's, the other objects'):
    the objects of a clip can be told apart by how they look."""
    for _ in range(50):
        value = rng.integers(0, 256, 3).astype(np.float32)
        if all(np.abs(value - other).max() > DISTINCT_COLOR for other in avoid):
            return value
    return value


def _sprite(rng: np.random.Generator, size: int, avoid: List[np.ndarray]) -> tuple:
    """A shape of reasonable bulk (no slivers) in its own canvas, with its fill."""
    for _ in range(20):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        rx, ry = rng.uniform(0.07, 0.17, 2) * size
        canvas = int(np.ceil(2.2 * max(rx, ry))) | 1
        mask = draw_shape(rng, kind, canvas, canvas, canvas / 2, canvas / 2, rx, ry).astype(np.uint8)
        if mask.sum() >= MIN_BULK * np.pi * rx * ry:
            break
    base = _distinct_color(rng, avoid)
    return kind, mask, texture(rng, canvas, canvas, base), base


def _path(rng: np.random.Generator, frames: int, size: int, radius: float, speed: float, leaving: bool) -> np.ndarray:
    """Centres of one object over `frames`: a smoothly turning walk that bounces off the
    borders, or, for a `leaving` object, heads out through the nearest border."""
    low, high = radius, size - radius
    if leaving:  # start in a border band and head out across it, leaving around mid-clip
        side = int(rng.integers(4))
        normal = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)][side], dtype=np.float64)
        along = rng.uniform(0.25, 0.75) * size
        depth = rng.uniform(0.25, 0.45) * size
        start = {0: (depth, along), 1: (size - depth, along), 2: (along, depth), 3: (along, size - depth)}[side]
        position = np.array(start, dtype=np.float64)
        velocity = normal * max(speed, (depth + 2 * radius) / max(frames * 0.6, 1))
    else:
        position = rng.uniform(low, high, 2)
        angle = rng.uniform(0, 2 * np.pi)
        velocity = np.array([np.cos(angle), np.sin(angle)]) * speed * rng.uniform(0.5, 1.0)
    turn = rng.uniform(-0.05, 0.05)
    centres = np.zeros((frames, 2))
    for t in range(frames):
        centres[t] = position
        if not leaving:
            c, s = np.cos(turn), np.sin(turn)
            velocity = np.array([c * velocity[0] - s * velocity[1], s * velocity[0] + c * velocity[1]])
            for axis in range(2):
                nxt = position[axis] + velocity[axis]
                if nxt < low or nxt > high:
                    velocity[axis] = -velocity[axis]
        position = position + velocity
    return centres


def make_clip(
    seed: int,
    frames: int = 60,
    size: int = 256,
    objects: tuple = (2, 4),
    speed: float = 2.0,
    leave_probability: float = 0.3,
) -> Clip:
    """Generate the clip of `seed`.

    Args:
        seed: everything random comes from it.
        frames: clip length.
        size: frames are ``size x size``.
        objects: inclusive range of the number of objects.
        speed: typical motion in pixels per frame at 256 px (scaled with `size`); scaling and
            rotation rates follow it.
        leave_probability: chance that the clip has an object that leaves the picture.
    """
    rng = np.random.default_rng(seed)
    background_colour = color(rng)
    background = texture(rng, size, size, background_colour)
    count = int(rng.integers(objects[0], objects[1] + 1))
    leaving = int(rng.integers(count)) if rng.random() < leave_probability else -1
    pixel_speed = speed * size / 256
    sprites: List[_Sprite] = []
    colours = [background_colour]
    for k in range(count):
        kind, mask, fill, colour = _sprite(rng, size, colours)
        colours.append(colour)
        radius = mask.shape[0] / 2
        centres = _path(rng, frames, size, radius * 0.8, pixel_speed * rng.uniform(0.4, 1.2), k == leaving)
        growth = rng.uniform(-0.25, 0.25) * min(1.0, speed / 2)
        phase = rng.uniform(0, 2 * np.pi)
        scales = (
            np.exp(growth * np.sin(phase + np.arange(frames) * 2 * np.pi / max(frames, 40))) if frames else np.ones(0)
        )
        spin = rng.uniform(-2.0, 2.0) * min(1.0, speed / 2)
        angles = rng.uniform(0, 360) + spin * np.arange(frames)
        sprites.append(_Sprite(mask, fill, kind, centres, scales, angles))
    noise = rng.uniform(2, 8)
    video = np.zeros((frames, size, size, 3), np.uint8)
    masks = np.zeros((frames, count, size, size), bool)
    leaves_at = np.full(count, -1)
    areas = np.zeros((frames, count), int)
    for t in range(frames):
        image = background.copy()
        for k, sprite in enumerate(sprites):
            canvas = sprite.mask.shape[0]
            warp = cv2.getRotationMatrix2D((canvas / 2, canvas / 2), float(sprite.angles[t]), float(sprite.scales[t]))
            warp[:, 2] += sprite.centres[t] - canvas / 2
            drawn = cv2.warpAffine(sprite.mask, warp, (size, size), flags=cv2.INTER_NEAREST).astype(bool)
            if not drawn.any():
                if k == leaving and leaves_at[k] < 0 and t > 0:
                    leaves_at[k] = t
                continue
            fill = cv2.warpAffine(sprite.fill, warp, (size, size), flags=cv2.INTER_LINEAR)
            image[drawn] = fill[drawn]
            areas[t, k] = np.count_nonzero(drawn)
            masks[t, :k] &= ~drawn
            masks[t, k] = drawn
        image += rng.normal(0, noise, image.shape).astype(np.float32)
        video[t] = np.clip(image, 0, 255).astype(np.uint8)
    small = masks.sum(axis=(2, 3)) < MIN_PRESENT_PIXELS
    masks[small] = False
    return Clip(frames=video, masks=masks, kinds=[s.kind for s in sprites], leaves_at=leaves_at, areas=areas)
