"""The SAM 2 models a `version` can name: built in here, or registered by the operator.

This module is the one list of version names. Built in: Meta's SAM 2.1 files under short
names (``hiera_tiny`` …), the toy ``demo``, Meta's SAM 2.0 files (``sam2_hiera_tiny`` …)
and Meta's Hugging Face repositories (``facebook/sam2.1-hiera-tiny`` …). Anything else
exists only when the operator registers it in the file named by ``SAM_BLOCK_MODELS``
(:mod:`sam_block.runtime.registry`). A request can only name one of these: a path, a URL
or another Hugging Face repository is an unknown version, refused before any file is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sam_block.errors import UnknownVersionError
from sam_block.runtime import registry

META_CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
META_SAM2_0_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
# A mirror of Meta's checkpoint directories (same file names) to download from instead.
CHECKPOINT_BASE_URL_ENV = "SAM_BLOCK_CHECKPOINT_BASE_URL"
# Known digests of checkpoint files, "version=hex,version=hex": a download must match.
CHECKPOINT_SHA256_ENV = "SAM_BLOCK_CHECKPOINT_SHA256"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]

BUNDLED = "bundled"
CHECKPOINT_DIR = "checkpoint dir"
HF_CACHE = "HF cache"
REGISTRY = "registry"


@dataclass(frozen=True)
class Variant:
    """One SAM 2 model the block can run.

    Attributes:
        name: the value of the block's `version` field, e.g. ``"hiera_tiny"``.
        config: the model's Hydra config, either a resource inside the ``sam2``
            package (``"configs/sam2.1/sam2.1_hiera_t.yaml"``) or an absolute path.
        filename: the checkpoint file name: inside the checkpoint directory (a path
            relative to it), or inside :attr:`hf_repo`.
        url: where the checkpoint can be downloaded from (``None`` when the file cannot
            be downloaded by us); see :meth:`download_url`.
        bundled: absolute path of a checkpoint shipped inside the package (the
            ``demo`` model); such a checkpoint is read from there, never downloaded.
        sha256: the SHA-256 of the checkpoint file when known; a download that does not
            match is refused. ``SAM_BLOCK_CHECKPOINT_SHA256`` overrides it (see
            :meth:`expected_sha256`).
        hf_repo: a Hugging Face model repository holding :attr:`filename`, fetched with
            ``huggingface_hub`` into its own cache.
        path: an exact checkpoint file named by the operator's registry.
        registry: the registry file that defines this name (``None`` when built in).
    """

    name: str
    config: str
    filename: str
    url: Optional[str]
    bundled: Optional[str] = None
    sha256: Optional[str] = None
    hf_repo: Optional[str] = None
    path: Optional[str] = None
    registry: Optional[str] = None

    @property
    def origin(self) -> str:
        """Where the checkpoint comes from: ``bundled``, ``checkpoint dir``, ``HF cache``, or
        ``registry`` (any registered name, whatever its checkpoint).

        Example:
            >>> [get_variant(v).origin for v in ("demo", "hiera_tiny", "facebook/sam2-hiera-tiny")]
            ['bundled', 'checkpoint dir', 'HF cache']
        """
        if self.registry:
            return REGISTRY
        if self.bundled:
            return BUNDLED
        return HF_CACHE if self.hf_repo else CHECKPOINT_DIR

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
        return self.sha256.lower() if self.sha256 else None

    def download_url(self) -> Optional[str]:
        """The URL to fetch the checkpoint from now.

        ``SAM_BLOCK_CHECKPOINT_BASE_URL``, when set, replaces Meta's base URLs of the
        official files (SAM 2.1 and 2.0: a mirror, or a local server), keeping their file names.

        Example:
            >>> get_variant("hiera_tiny").download_url()
            'https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt'
            >>> get_variant("sam2_hiera_tiny").download_url()
            'https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt'
        """
        base = os.environ.get(CHECKPOINT_BASE_URL_ENV, "").strip()
        official = {f"{META_CHECKPOINT_BASE_URL}/{self.filename}", f"{META_SAM2_0_BASE_URL}/{self.filename}"}
        if base and self.url in official and not self.registry:
            return f"{base.rstrip('/')}/{self.filename}"
        return self.url


# (name, config, file): Meta's SAM 2.1 files (092824) under our short names, then the SAM 2.0
# files (072824) under Meta's file names, each with the sam2 package's config.
_SAM2_1 = (
    ("hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    ("hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    ("hiera_b_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    ("hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
)  # fmt: skip
_SAM2_0 = (
    ("sam2_hiera_tiny", "configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    ("sam2_hiera_small", "configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt"),
    ("sam2_hiera_b_plus", "configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt"),
    ("sam2_hiera_large", "configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
)  # fmt: skip
# Meta's Hugging Face repositories, each with the config and file Meta's build_sam2_hf
# uses (sam2.build_sam.HF_MODEL_ID_TO_FILENAMES; a test holds the two tables equal).
HF_MODELS: Dict[str, Tuple[str, str]] = {
    "facebook/sam2-hiera-tiny": ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    "facebook/sam2-hiera-small": ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt"),
    "facebook/sam2-hiera-base-plus": ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt"),
    "facebook/sam2-hiera-large": ("configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
    "facebook/sam2.1-hiera-tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "facebook/sam2.1-hiera-small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "facebook/sam2.1-hiera-base-plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "facebook/sam2.1-hiera-large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}  # fmt: skip

VARIANTS: Dict[str, Variant] = {
    v.name: v
    for v in (
        *(Variant(name, config, file, url=f"{META_CHECKPOINT_BASE_URL}/{file}") for name, config, file in _SAM2_1),
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
        *(Variant(name, config, file, url=f"{META_SAM2_0_BASE_URL}/{file}") for name, config, file in _SAM2_0),
        *(Variant(repo, config, file, url=None, hf_repo=repo) for repo, (config, file) in HF_MODELS.items()),
    )
}
"""Every built-in version, in the order they are offered: SAM 2.1, demo, SAM 2.0, Hugging Face."""

DEFAULT_VERSION = "hiera_tiny"
OFFICIAL_VERSIONS = tuple(name for name, _, _ in _SAM2_1)
SAM2_0_VERSIONS = tuple(name for name, _, _ in _SAM2_0)
BUILTIN_VERSIONS = tuple(VARIANTS)
DOWNLOADABLE_VERSIONS = tuple(name for name, v in VARIANTS.items() if v.url or v.hf_repo)


def registered_variants() -> Dict[str, Variant]:
    """The operator's models (``SAM_BLOCK_MODELS``), as variants; ``{}`` when it is unset.

    Raises:
        RegistryError: the registry file is unreadable or an entry is wrong (naming both).
    """
    variants = {}
    for entry in registry.registered_models():
        if entry.name in VARIANTS:
            raise registry.RegistryError(
                f"{entry.registry}: entry {entry.name!r} is a built-in version name; give your model another name"
            )
        variants[entry.name] = Variant(
            name=entry.name,
            config=entry.config,
            filename=entry.filename,
            url=entry.url,
            sha256=entry.sha256,
            hf_repo=entry.hf_repo,
            path=entry.path,
            registry=entry.registry,
        )
    return variants


def available_versions() -> List[str]:
    """Every name a `version` may be: the built-in ones (SAM 2.1 smallest first, ``demo``,
    SAM 2.0, Meta's Hugging Face repositories), then the registered ones.

    Example:
        >>> available_versions()[:6]
        ['hiera_tiny', 'hiera_small', 'hiera_b_plus', 'hiera_large', 'demo', 'sam2_hiera_tiny']
    """
    return [*VARIANTS, *registered_variants()]


def get_variant(version: str) -> Variant:
    """The model a `version` names: built in, or registered in ``SAM_BLOCK_MODELS``.

    This is the one check of a version name (blocks, CLI and HTTP routes call it): anything
    else, a file path, a URL or another Hugging Face repository included, is refused here,
    before any file is touched.

    Raises:
        UnknownVersionError: listing every available name.
        RegistryError: the registry file is broken (only looked at for names not built in).

    Example:
        >>> get_variant("hiera_tiny").filename
        'sam2.1_hiera_tiny.pt'
        >>> get_variant("/etc/passwd")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sam_block.errors.UnknownVersionError: Unknown SAM 2 version '/etc/passwd'. Use one of: hiera_tiny, hiera_small, ...
    """
    if isinstance(version, str):
        variant = VARIANTS.get(version) or registered_variants().get(version)
        if variant is not None:
            return variant
    raise UnknownVersionError(
        f"Unknown SAM 2 version {version!r}. Use one of: {', '.join(available_versions())}"
        f" (a file path, a URL or another Hugging Face repository must first be registered by the "
        f"operator in {registry.MODELS_ENV})."
    )


def versions_help() -> str:
    """What a version may be, in one line, for ``--help`` texts (names from the table above)."""
    return (
        f"{DEFAULT_VERSION} (default), {', '.join(OFFICIAL_VERSIONS[1:])}, the toy demo; SAM 2.0 "
        f"{SAM2_0_VERSIONS[0]} ... {SAM2_0_VERSIONS[-1]}; Meta's Hugging Face repos "
        f"{next(iter(HF_MODELS))} ... {list(HF_MODELS)[-1]}; or a name registered in "
        f"${registry.MODELS_ENV} (`sam-block models` lists them all)"
    )
