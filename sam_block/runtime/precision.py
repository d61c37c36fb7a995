"""The one place that decides the numeric precision SAM 2 runs in (``SAM_BLOCK_PRECISION``).

``fp32`` runs everything in float32 (as Meta does on CPU); ``bf16`` runs the image
encoder, the prompt encoder and mask decoder (boxes, points, mask prompts and
segment-everything) and the video tracker (memory attention, memory encoder, heads)
under ``torch.autocast(dtype=torch.bfloat16)`` — on CUDA and on CPU alike, through the
same :func:`autocast` context, so the CPU test suite runs the code a GPU runs.
``auto`` (the default) picks bf16 on CUDA devices that support it and on CPUs that
execute bf16 natively (AVX512_BF16 or AMX, see :func:`cpu_bf16_support`), fp32 on other
CPUs, where bf16 is emulated and runs several times *slower* than fp32 (an AVX2-only VM:
4-10x). On a 2-core Zen 4 with AVX512_BF16 the hiera_tiny encoder runs 1.45-1.89x faster
in bf16 (``benchmarks/bf16.py``, figures in ``benchmarks/RESULTS.md``). The agreement tests
(``tests/test_precision.py``: bf16 against fp32 on the demo weights) are what allows bf16
by default; emulated bf16 rounds like native bf16 (bf16 operands, float32 accumulation),
so they hold the numerics of either.

What stays float32 on purpose, in every precision: the bilinear upsampling of the
low-resolution logits to the image and the cut at 0 (and the stability score's cuts at
±1), in ``masks.py``. A logit near the cut decides a boundary pixel; bf16 keeps 8 bits of
mantissa (a logit of 3.0 is only known to ±0.008), so upsampling in bf16 would flip
boundary pixels for no gain — that step is memory-bound, not arithmetic-bound.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from sam_block.errors import PrecisionError
from sam_block.runtime.precision_names import PRECISION_CHOICES, PRECISION_ENV

logger = logging.getLogger(__name__)

#: CPU features that execute bf16 arithmetic natively (Linux ``/proc/cpuinfo`` flag names,
#: the same keys as ``torch.cpu.get_capabilities()``): AVX-512 BF16 dot products, AMX tiles.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

_logged: set = set()
_log_lock = threading.Lock()


@dataclass(frozen=True)
class Precision:
    """The precision one model runs in on one device, and why it was chosen."""

    name: str  # "fp32" or "bf16"
    device_type: str  # "cpu" or "cuda"
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    @property
    def is_bf16(self) -> bool:
        return self.name == "bf16"


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> Optional[set]:
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):  # x86: flags, ARM: Features
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> Tuple[str, ...]:
    """The native-bf16 features of this CPU (``()`` when it has none), e.g. ``('avx512_bf16',)``.

    Read from the ``flags`` line of ``/proc/cpuinfo``; where that file does not exist
    (macOS, Windows) from ``torch.cpu.get_capabilities()`` (torch's cpuinfo library).

    Example:
        >>> isinstance(cpu_bf16_support(), tuple)
        True
    """
    flags = _cpuinfo_flags()
    if flags is None:
        try:
            capabilities = torch.cpu.get_capabilities()
        except Exception:  # older torch: no capability query, assume no native bf16
            capabilities = {}
        flags = {name for name, value in capabilities.items() if value is True}
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)


def requested_precision(requested: Optional[str] = None) -> str:
    """`requested` or ``SAM_BLOCK_PRECISION``, checked: ``auto`` (the default), ``fp32`` or ``bf16``.

    Example:
        >>> requested_precision("BF16")
        'bf16'
    """
    value = (requested if requested is not None else os.environ.get(PRECISION_ENV, "")).strip().lower() or "auto"
    if value not in PRECISION_CHOICES:
        raise PrecisionError(
            f"{PRECISION_ENV}={value!r} is not a precision sam_block knows. "
            f"Use 'auto' (bf16 on CUDA and on CPUs with native bf16, else fp32), 'fp32' or 'bf16' (or unset it for 'auto')."
        )
    return value


def resolve_precision(device: torch.device, requested: Optional[str] = None) -> Precision:
    """The precision to run on `device`: `requested`, else ``SAM_BLOCK_PRECISION``, else ``auto``.

    The choice is logged once per (device type, precision, reason).

    Example:
        >>> resolve_precision(torch.device("cpu"), "fp32").name
        'fp32'
        >>> resolve_precision(torch.device("cpu"), "bf16").dtype
        torch.bfloat16
    """
    value = requested_precision(requested)
    device_type = torch.device(device).type
    native = cpu_bf16_support() if device_type == "cpu" else ()
    if value == "fp32":
        precision = Precision("fp32", device_type, f"{PRECISION_ENV}=fp32")
    elif value == "bf16":
        if device_type == "cpu" and not native:
            reason = (
                f"{PRECISION_ENV}=bf16 on a CPU without native bf16 (no {' / '.join(NATIVE_BF16_FLAGS)}): "
                f"bf16 is emulated and usually slower than fp32 here"
            )
        else:
            reason = f"{PRECISION_ENV}=bf16" + (f" ({', '.join(native)})" if native else "")
        precision = Precision("bf16", device_type, reason)
    elif device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            precision = Precision("bf16", device_type, "auto: CUDA supports bf16")
        else:
            precision = Precision("fp32", device_type, "auto: this GPU has no bf16 support")
    elif native:
        precision = Precision("bf16", device_type, f"auto: this CPU has native bf16 ({', '.join(native)})")
    else:
        precision = Precision(
            "fp32", device_type, f"auto: this CPU has no native bf16 (no {' / '.join(NATIVE_BF16_FLAGS)} flag)"
        )
    _log_once(precision)
    return precision


def _log_once(precision: Precision) -> None:
    key = (precision.device_type, precision.name, precision.reason)
    with _log_lock:
        if key in _logged:
            return
        _logged.add(key)
    emulated = precision.is_bf16 and precision.device_type == "cpu" and not cpu_bf16_support()
    (logger.warning if emulated else logger.info)(
        "SAM 2 runs in %s on %s: %s", precision.name, precision.device_type, precision.reason
    )


def autocast(precision: Precision):
    """The context every SAM 2 forward pass of sam_block runs in: bf16 autocast or nothing.

    Used by the image encoder and decoder (``predictor.py``, hence segment-everything) and
    the video tracker (``tracker.py``), on CPU and CUDA alike.
    """
    if not precision.is_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=precision.device_type, dtype=torch.bfloat16)


def encoder_input(images: torch.Tensor, precision: Precision) -> torch.Tensor:
    """The ``(B, 3, S, S)`` batch as the image encoder gets it: channels-last for bf16 on CPU, else unchanged.

    oneDNN's bf16 convolution (the encoder's patch embedding) reads NHWC without a
    reorder; the features come out bit-identical and the hiera_tiny encoder was faster in
    each of 3 interleaved pairs, 1.945 s against 2.035 s median
    (``benchmarks/bf16.py encoder --variants``, ``benchmarks/RESULTS.md``).

    Example:
        >>> cpu_bf16 = Precision("bf16", "cpu", "example")
        >>> encoder_input(torch.zeros(1, 3, 8, 8), cpu_bf16).is_contiguous(memory_format=torch.channels_last)
        True
    """
    if precision.is_bf16 and precision.device_type == "cpu":
        return images.contiguous(memory_format=torch.channels_last)
    return images
