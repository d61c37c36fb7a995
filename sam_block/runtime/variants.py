"""SAM 2.1 model variants: the `version` a user picks → config, checkpoint file, URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from sam_block.errors import UnknownVersionError

META_CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
# A mirror of Meta's checkpoint directory (same file names) to download from instead.
CHECKPOINT_BASE_URL_ENV = "SAM_BLOCK_CHECKPOINT_BASE_URL"
# Known digests of checkpoint files, "version=hex,version=hex": a download must match.
CHECKPOINT_SHA256_ENV = "SAM_BLOCK_CHECKPOINT_SHA256"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One SAM 2 model the block can run.

    Attributes:
        name: the value of the block's `version` field, e.g. ``"hiera_tiny"``.
        config: the model's Hydra config, either a resource inside the ``sam2``
            package (``"configs/sam2.1/sam2.1_hiera_t.yaml"``) or an absolute path.
        filename: the checkpoint file name inside the checkpoint directory.
        url: where the official checkpoint can be downloaded from (``None`` when
            the file cannot be downloaded); see :meth:`download_url`.
        bundled: absolute path of a checkpoint shipped inside the package (the
            ``demo`` model); such a checkpoint is read from there, never downloaded.
        sha256: the SHA-256 of the checkpoint file when known; a download that does not
            match is refused. ``SAM_BLOCK_CHECKPOINT_SHA256`` overrides it (see
            :meth:`expected_sha256`).
    """

    name: str
    config: str
    filename: str
    url: Optional[str]
    bundled: Optional[str] = None
    sha256: Optional[str] = None

    def expected_sha256(self) -> Optional[str]:
        """The digest a downloaded file must have: ``SAM_BLOCK_CHECKPOINT_SHA256`` entries
        ``version=HEX`` (comma-separated) win over :attr:`sha256`; None when unknown.

        Example:
            >>> import os
            >>> os.environ[CHECKPOINT_SHA256_ENV] = "hiera_small=ab12"
            >>> get_variant("hiera_small").expected_sha256(), get_variant("hiera_tiny").expected_sha256()
            ('ab12', None)
            >>> del os.environ[CHECKPOINT_SHA256_ENV]
        """
        for entry in os.environ.get(CHECKPOINT_SHA256_ENV, "").split(","):
            name, sep, digest = entry.strip().partition("=")
            if sep and name.strip() == self.name and digest.strip():
                return digest.strip().lower()
        return self.sha256

    def download_url(self) -> Optional[str]:
        """The URL to fetch the checkpoint from now.

        ``SAM_BLOCK_CHECKPOINT_BASE_URL``, when set, replaces Meta's base URL of the
        official files (a mirror, or a local server), keeping their file names.

        Example:
            >>> get_variant("hiera_tiny").download_url()
            'https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt'
        """
        base = os.environ.get(CHECKPOINT_BASE_URL_ENV, "").strip()
        if base and self.url and self.url == f"{META_CHECKPOINT_BASE_URL}/{self.filename}":
            return f"{base.rstrip('/')}/{self.filename}"
        return self.url


def _official(name: str, config_suffix: str, file_suffix: str) -> Variant:
    filename = f"sam2.1_hiera_{file_suffix}.pt"
    return Variant(
        name=name,
        config=f"configs/sam2.1/sam2.1_hiera_{config_suffix}.yaml",
        filename=filename,
        url=f"{META_CHECKPOINT_BASE_URL}/{filename}",
    )


VARIANTS: Dict[str, Variant] = {
    v.name: v
    for v in (
        _official("hiera_tiny", "t", "tiny"),
        _official("hiera_small", "s", "small"),
        _official("hiera_b_plus", "b+", "base_plus"),
        _official("hiera_large", "l", "large"),
        # A toy, for the offline demo and tests only: the SAM 2.1 architecture shrunk to a
        # 256 x 256 input and trained for minutes on generated scenes of shapes
        # (sam_block/demo/train.py). It segments such scenes, not photographs.
        Variant(
            name="demo",
            config=str(_PACKAGE_DIR / "configs" / "sam2.1_demo.yaml"),
            filename="sam2.1_demo.pt",
            url=None,
            bundled=str(_PACKAGE_DIR / "weights" / "sam2.1_demo.pt"),
        ),
    )
}
DEFAULT_VERSION = "hiera_tiny"
OFFICIAL_VERSIONS = ("hiera_tiny", "hiera_small", "hiera_b_plus", "hiera_large")


def available_versions() -> List[str]:
    """Names accepted by the block's `version` field: the official models, smallest
    first, then the toy ``demo``."""
    return list(VARIANTS)


def get_variant(version: str) -> Variant:
    """Look up a variant by the name a user typed.

    Example:
        >>> get_variant("hiera_tiny").filename
        'sam2.1_hiera_tiny.pt'
    """
    try:
        return VARIANTS[version]
    except (KeyError, TypeError):
        raise UnknownVersionError(
            f"Unknown SAM 2 version {version!r}. Use one of: "
            f"{', '.join(available_versions())}."
        ) from None
