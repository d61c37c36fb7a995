"""Find, download and safely load SAM 2 checkpoints.

Checkpoints live in ``SAM_BLOCK_CHECKPOINT_DIR`` (default ``~/.cache/sam_block``)
under their official file names (files of Meta's Hugging Face repositories: in
huggingface_hub's cache; registered files: where the registry says). A missing file is
downloaded from Meta's public URL (or a registered URL) unless ``SAM_BLOCK_OFFLINE=1``: into a temporary file that is verified (it loads
with ``weights_only=True`` as a state dict fitting the variant's architecture, and
matches the variant's SHA-256 when one is known) before it is renamed into place.
Files are loaded with ``torch.load(..., weights_only=True)``: no object is ever unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from sam_block.errors import CheckpointCorruptError, CheckpointMissingError, SamBlockError
from sam_block.runtime.architecture import expected_shapes
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
    """Where the checkpoint of `variant` is, or is expected, on disk: bundled ones inside the
    package, registered files where the registry says, Hugging Face ones in huggingface_hub's
    cache (its snapshot file once fetched), the others in the checkpoint directory."""
    if variant.bundled:
        return Path(variant.bundled)
    if variant.path:
        return Path(variant.path)
    if variant.hf_repo:
        return (
            _hf_cached(variant) or _hf_cache_dir() / f"models--{variant.hf_repo.replace('/', '--')}" / variant.filename
        )
    return checkpoint_dir() / variant.filename


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cached(variant: Variant) -> Optional[Path]:
    """The file of a Hugging Face variant in huggingface_hub's cache, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(variant.hf_repo, variant.filename)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _where(variant: Variant) -> str:
    return f" (registered in {variant.registry})" if variant.registry else ""


def _missing_message(variant: Variant, path: Path, reason: str) -> str:
    if variant.bundled:
        return (
            f"SAM 2 checkpoint for version {variant.name!r} is not available: {reason}. "
            f"Expected file: {path}, shipped with sam_block. To fix: reinstall sam_block, "
            f"or retrain it with `python -m sam_block.demo.train`."
        )
    if variant.path:
        return (
            f"SAM 2 checkpoint for version {variant.name!r}{_where(variant)} is not available: {reason}. "
            f"Expected file: {path}. To fix: put the file there or correct the entry's checkpoint."
        )
    if variant.hf_repo:
        return (
            f"SAM 2 checkpoint for version {variant.name!r}{_where(variant)} is not available: {reason}. "
            f"Expected: {variant.filename} of the Hugging Face repository {variant.hf_repo} in the "
            f"huggingface_hub cache {_hf_cache_dir()}. To fix: fetch it where the Hub (or the mirror "
            f"HF_ENDPOINT names) is reachable, e.g. `hf download {variant.hf_repo} {variant.filename}`, "
            f"with the same HF_HOME / HF_HUB_CACHE."
        )
    url = variant.download_url()
    fix = f"download it from {url} and save it as {path}" if url else f"place the checkpoint file at {path}"
    return (
        f"SAM 2 checkpoint for version {variant.name!r}{_where(variant)} is not available: {reason}. "
        f"Expected file: {path}. To fix: {fix} (or point {CHECKPOINT_DIR_ENV} at the "
        f"directory that holds {variant.filename})."
    )


def local_checkpoint(variant: Variant) -> Optional[Path]:
    """The checkpoint file of `variant` when it is on this machine now, else None (never downloads)."""
    path = checkpoint_path(variant)
    return path if path.is_file() else None


def resolve_checkpoint(variant: Variant, progress: Optional[bool] = True) -> Path:
    """Return the path of `variant`'s checkpoint, downloading it if it is missing.

    `progress`: show a download bar (``None``: only when stderr is a terminal).
    Hugging Face variants are fetched by ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``,
    ``HF_ENDPOINT``, its progress bar). A registered checkpoint with a ``sha256`` must have
    that digest every time it is resolved.

    Raises:
        CheckpointMissingError: the file is absent and downloading is disabled or failed.
        CheckpointCorruptError: the downloaded file is not `variant`'s checkpoint (it was deleted),
            or a registered file does not have its registered digest.
    """
    if variant.hf_repo:
        return _resolve_from_hub(variant, progress)
    path = checkpoint_path(variant)
    if path.is_file():
        _check_registered_digest(path, variant)
        return path
    url = variant.download_url()
    if url is None:
        raise CheckpointMissingError(_missing_message(variant, path, "the file does not exist"))
    if is_offline():
        raise CheckpointMissingError(
            _missing_message(variant, path, f"the file does not exist and {OFFLINE_ENV}=1 forbids downloading")
        )
    try:
        download(url, path, progress=progress, verify=lambda candidate: verify_checkpoint(candidate, variant))
    except SamBlockError as error:
        raise CheckpointCorruptError(
            f"The file downloaded from {url} for SAM 2 version {variant.name!r} was rejected and "
            f"deleted, nothing was saved at {path}: {error}"
        ) from error
    except Exception as error:  # network, disk, HTTP status: all mean "not available"
        raise CheckpointMissingError(
            _missing_message(
                variant, path, f"the file does not exist and downloading failed: {download_failure(error, url)}"
            )
        ) from error
    return path


def _check_registered_digest(path: Path, variant: Variant) -> None:
    expected = variant.expected_sha256() if variant.registry else None
    if expected and (actual := sha256_of(path)) != expected:
        raise CheckpointCorruptError(
            f"Checkpoint {path} of SAM 2 version {variant.name!r}{_where(variant)} has SHA-256 {actual}, "
            f"but the registry expects {expected}: the file changed or the entry is wrong; it was not loaded."
        )


def _resolve_from_hub(variant: Variant, progress: Optional[bool]) -> Path:
    """`variant`'s file from huggingface_hub's cache, fetched by huggingface_hub when missing.

    A fresh download is verified like ours (architecture, digest) before it is used;
    huggingface_hub itself writes into its cache atomically and checks the Hub's digest.
    """
    from huggingface_hub import constants, hf_hub_download

    cached = _hf_cached(variant)
    if cached is not None:
        _check_registered_digest(cached, variant)
        return cached
    hf_offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }
    if is_offline() or hf_offline:
        flag = f"{OFFLINE_ENV}=1" if is_offline() else "HF_HUB_OFFLINE=1"
        raise CheckpointMissingError(
            _missing_message(
                variant, checkpoint_path(variant), f"it is not in the Hugging Face cache and {flag} forbids downloading"
            )
        )
    try:
        found = Path(
            hf_hub_download(
                variant.hf_repo, variant.filename, tqdm_class=None if progress is not False else _silent_bar_class()
            )
        )
    except Exception as error:  # offline, unreachable, no such repo or file, gated: all mean "not available"
        detail = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointMissingError(
            _missing_message(
                variant,
                checkpoint_path(variant),
                f"huggingface_hub could not fetch it ({type(error).__name__}: {detail[:300]})",
            )
        ) from error
    try:
        verify_checkpoint(found, variant)
    except SamBlockError as error:
        raise CheckpointCorruptError(
            f"The file huggingface_hub fetched from {variant.hf_repo} for SAM 2 version {variant.name!r} "
            f"({found}) was rejected: {error}. Remove it from the cache (`hf cache delete`) or correct the entry."
        ) from error
    return found


def _silent_bar_class():
    from tqdm.auto import tqdm

    class SilentBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentBar


def download_failure(error: BaseException, url: str) -> str:
    """Why downloading `url` failed, in words (not ``<urlopen error [Errno -2] ...>``).

    Example:
        >>> import urllib.error
        >>> download_failure(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "http://127.0.0.1:9/a.pt")
        'cannot connect to 127.0.0.1:9 (Connection refused)'
        >>> download_failure(urllib.error.HTTPError("http://h/a.pt", 404, "Not Found", None, None), "http://h/a.pt")
        'http://h/a.pt answered HTTP 404 Not Found'
    """
    host = urllib.parse.urlsplit(url).netloc or url
    if isinstance(error, urllib.error.HTTPError):
        return f"{url} answered HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host {host} (no network, or no DNS: {reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"{host} sent nothing for too long (timeout; {DOWNLOAD_TIMEOUT_ENV} sets the seconds)"
    if isinstance(reason, ConnectionError):
        return f"cannot connect to {host} ({reason.strerror or reason})"
    if isinstance(reason, OSError) and isinstance(error, urllib.error.URLError):
        return f"cannot reach {host} ({reason.strerror or reason})"
    return " ".join(str(reason).split()) or type(reason).__name__


def download(
    url: str,
    destination: Path,
    progress: Optional[bool] = True,
    timeout_s: Optional[float] = None,
    verify: Optional[Callable[[Path], None]] = None,
) -> None:
    """Download `url` to `destination` atomically: a partial or rejected file is never left behind.

    The bytes go to a temporary file beside `destination` (created with the user's normal
    permissions, i.e. ``0o666`` less the umask); ``verify(temp_path)``, when given, may
    raise to reject it; only then is it renamed into place.
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get(DOWNLOAD_TIMEOUT_ENV, DEFAULT_DOWNLOAD_TIMEOUT_S))
    destination.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s", url, destination)
    tmp_path = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.part"
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
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
        if verify is not None:
            verify(tmp_path)
        os.replace(tmp_path, destination)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: Path, variant: Variant) -> None:
    """Check that `path` holds `variant`'s weights before anything trusts it.

    It must match the variant's SHA-256 when one is known, load with
    ``weights_only=True`` in the official format, and hold exactly the tensors of the
    variant's architecture, with their shapes.

    Raises:
        CheckpointCorruptError: saying which check failed.
    """
    expected_digest = variant.expected_sha256()
    if expected_digest:
        actual = sha256_of(path)
        if actual != expected_digest.lower():
            raise CheckpointCorruptError(f"its SHA-256 is {actual}, expected {expected_digest}")
    state_dict = load_state_dict(path)
    expected = expected_shapes(variant)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or tuple(state_dict[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        raise CheckpointCorruptError(
            f"it does not fit the architecture of version {variant.name!r}: {len(missing)} missing "
            f"weights (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of another shape (e.g. {wrong[:3]})"
        )


def _progress_bar(total: Optional[int], name: str, enabled: Optional[bool]):
    """A bar on stderr: always (True), never (False), or only on a terminal (None)."""
    import sys

    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=disable, file=sys.stderr)


def load_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Load the model weights from an official SAM 2 checkpoint (``{"model": state_dict}``).

    Only tensors and plain containers are accepted (``weights_only=True``).

    Raises:
        CheckpointCorruptError: naming the file, when it is truncated, not a torch
            file, holds pickled objects, or lacks the ``"model"`` entry.
    """
    path = Path(path)
    if not _looks_like_torch_file(path):
        raise CheckpointCorruptError(
            f"Checkpoint {path} is corrupt or truncated and cannot be read: it is neither "
            f"torch's zip format nor its legacy pickle format (its first bytes are "
            f"{_head(path)!r}). Delete it and download it again."
        )
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


def _head(path: Path, size: int = 8) -> Optional[bytes]:
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return None


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (``PK``), or in the legacy format a pickle (protocol byte 0x80)."""
    head = _head(path, 2)
    if head is None:  # unreadable: torch.load says why
        return True
    return head == b"PK" or head[:1] == b"\x80"
