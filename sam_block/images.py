"""Turn whatever image array a workflow hands us into the RGB uint8 SAM 2 was trained on."""

from __future__ import annotations

import numpy as np

from sam_block.errors import InvalidImageError


def to_rgb_uint8(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Convert an image array to contiguous RGB uint8 ``(H, W, 3)``.

    Accepts gray ``(H, W)`` / ``(H, W, 1)``, colour ``(H, W, 3)`` and colour with
    alpha ``(H, W, 4)`` (alpha dropped) in `channel_order` (``"bgr"``, the workflow
    engine's convention, or ``"rgb"``), with dtype uint8, uint16 (scaled by 1/257),
    bool, or float (``[0, 1]`` or ``[0, 255]``).

    Example:
        >>> to_rgb_uint8(np.zeros((4, 6, 3), np.uint8)).shape
        (4, 6, 3)

    Raises:
        InvalidImageError: naming the shape, dtype or values that cannot be used.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"Expected the image as a numpy array, got {type(image).__name__}.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"Image of shape {image.shape} is not an image SAM 2 can read: expected (H, W), "
            f"(H, W, 1), (H, W, 3) or (H, W, 4)."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"Image of shape {image.shape} is empty: it has no pixels.")
    image = _to_uint8(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if channel_order.lower() == "bgr":
        image = image[:, :, ::-1]
    elif channel_order.lower() != "rgb":
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return (image.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InvalidImageError("Image holds NaN or infinite pixel values; SAM 2 needs finite pixels.")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 255.0:
            raise InvalidImageError(f"Float image values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255].")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise InvalidImageError(
                f"Image of dtype {image.dtype} has values in [{low}, {high}]; expected 0…255 "
                f"(or use uint16 for 16-bit images)."
            )
        return image.astype(np.uint8)
    raise InvalidImageError(f"Image dtype {image.dtype} is not supported; use uint8, uint16, bool or float.")
