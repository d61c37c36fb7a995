"""Find, download and safely load SAM 2 checkpoints.

Checkpoints live in ``SAM_BLOCK_CHECKPOINT_DIR`` (default ``~/.cache/sam_block``)
under their official file names. A missing file is downloaded from Meta's public
URL (atomically: temp file + rename) unless ``SAM_BLOCK_OFFLINE=1``. Files are
loaded with ``torch.load(..., weights_only=True)``: no object is ever unpickled.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, Optional

import torch

from sam_block.errors import CheckpointCorruptError, CheckpointMissingError
from sam_block.runtime.variants import Variant

logger = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "SAM_BLOCK_CHECKPOINT_DIR"
OFFLINE_ENV = "SAM_BLOCK_OFFLINE"
DOWNLOAD_TIMEOUT_ENV = "SAM_BLOCK_DOWNLOAD_TIMEOUT"
DEFAULT_CHECKPOINT_DIR = Path("~/.cache/sam_block")
DEFAULT_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


def checkpoint_dir() -> Path:
    """The directory checkpoints are read from and downloaded to."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or DEFAULT_CHECKPOINT_DIR).expanduser()


def checkpoint_path(variant: Variant) -> Path:
    """Where the checkpoint of `variant` is expected on disk (bundled ones: inside the package)."""
    if variant.bundled:
        return Path(variant.bundled)
    return checkpoint_dir() / variant.filename


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _missing_message(variant: Variant, path: Path, reason: str) -> str:
    if variant.bundled:
        return (
            f"SAM 2 checkpoint for version {variant.name!r} is not available: {reason}. "
            f"Expected file: {path}, shipped with sam_block. To fix: reinstall sam_block, "
            f"or retrain it with `python -m sam_block.demo.train`."
        )
    url = variant.download_url()
    fix = f"download it from {url} and save it as {path}" if url else f"place the checkpoint file at {path}"
    return (
        f"SAM 2 checkpoint for version {variant.name!r} is not available: {reason}. "
        f"Expected file: {path}. To fix: {fix} (or point {CHECKPOINT_DIR_ENV} at the "
        f"directory that holds {variant.filename})."
    )


def resolve_checkpoint(variant: Variant, progress: bool = True) -> Path:
    """Return the path of `variant`'s checkpoint, downloading it if it is missing.

    Raises:
        CheckpointMissingError: the file is absent and downloading is disabled or failed.
    """
    path = checkpoint_path(variant)
    if path.is_file():
        return path
    url = variant.download_url()
    if url is None:
        raise CheckpointMissingError(_missing_message(variant, path, "the file does not exist"))
    if is_offline():
        raise CheckpointMissingError(
            _missing_message(
                variant, path, f"the file does not exist and {OFFLINE_ENV}=1 forbids downloading"
            )
        )
    try:
        download(url, path, progress=progress)
    except Exception as error:  # network, disk, HTTP status: all mean "not available"
        raise CheckpointMissingError(
            _missing_message(variant, path, f"the file does not exist and downloading failed ({error})")
        ) from error
    return path


def download(url: str, destination: Path, progress: bool = True, timeout_s: Optional[float] = None) -> None:
    """Download `url` to `destination` atomically: a partial file is never left behind."""
    if timeout_s is None:
        timeout_s = float(os.environ.get(DOWNLOAD_TIMEOUT_ENV, DEFAULT_DOWNLOAD_TIMEOUT_S))
    destination.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s", url, destination)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, destination.name, enabled=progress)
            try:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            if total is not None and out.tell() != total:
                raise IOError(f"received {out.tell()} of {total} bytes")
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _progress_bar(total: Optional[int], name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled)


def load_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Load the model weights from an official SAM 2 checkpoint (``{"model": state_dict}``).

    Only tensors and plain containers are accepted (``weights_only=True``).

    Raises:
        CheckpointCorruptError: naming the file, when it is truncated, not a torch
            file, holds pickled objects, or lacks the ``"model"`` entry.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointCorruptError(
            f"Refusing to load checkpoint {path}: it contains pickled Python objects, "
            f"which sam_block never unpickles (only tensors are allowed). Re-download the "
            f"official file or re-save it as torch.save({{'model': state_dict}}). "
            f"Detail: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # truncated zip, not a torch file, garbage bytes: torch raises many types
        raise CheckpointCorruptError(
            f"Checkpoint {path} is corrupt or truncated and cannot be read "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). "
            f"Delete it and download it again."
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(map(str, checkpoint))[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointCorruptError(
            f"Checkpoint {path} is not in the official SAM 2 format "
            f"{{'model': state_dict}} (found {found}). Save it as torch.save({{'model': model.state_dict()}})."
        )
    return checkpoint["model"]
