"""SAM 2.1 model variants: the `version` a user picks → config, checkpoint file, URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from sam_block.errors import UnknownVersionError

META_CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class Variant:
    """One SAM 2 model the block can run.

    Attributes:
        name: the value of the block's `version` field, e.g. ``"hiera_tiny"``.
        config: the model's Hydra config, either a resource inside the ``sam2``
            package (``"configs/sam2.1/sam2.1_hiera_t.yaml"``) or an absolute path.
        filename: the checkpoint file name inside the checkpoint directory.
        url: where the official checkpoint can be downloaded from (``None`` when
            the file cannot be downloaded).
    """

    name: str
    config: str
    filename: str
    url: Optional[str]


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
    )
}
DEFAULT_VERSION = "hiera_tiny"


def available_versions() -> List[str]:
    """Names accepted by the block's `version` field, smallest model first."""
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
