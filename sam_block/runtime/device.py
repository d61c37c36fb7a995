"""Which torch device SAM 2 runs on (``SAM_BLOCK_DEVICE``)."""

from __future__ import annotations

import os
import re
from typing import Optional

import torch

from sam_block.errors import DeviceError

DEVICE_ENV = "SAM_BLOCK_DEVICE"
_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


def resolve_device(requested: Optional[str] = None) -> torch.device:
    """Return the device to run on.

    `requested` (or ``SAM_BLOCK_DEVICE``) may be ``cpu``, ``cuda`` or ``cuda:N``;
    when neither is set, CUDA is used if available, else the CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    value = (requested if requested is not None else os.environ.get(DEVICE_ENV, "")).strip().lower()
    if not value:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _DEVICE_PATTERN.match(value):
        raise DeviceError(
            f"{DEVICE_ENV}={value!r} is not a device sam_block understands. "
            f"Use 'cpu', 'cuda' or 'cuda:N' (or unset it to pick CUDA when available)."
        )
    device = torch.device(value)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{DEVICE_ENV}={value!r} asks for CUDA, but torch sees no CUDA device here. "
                f"Set {DEVICE_ENV}=cpu, or install a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"{DEVICE_ENV}={value!r} names GPU {device.index}, but only {count} "
                f"CUDA device(s) exist (cuda:0 … cuda:{count - 1})."
            )
    return device
