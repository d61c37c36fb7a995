"""Errors sam_block raises. Each message names the bad value and the fix."""


class SamBlockError(Exception):
    """Base class of every error sam_block raises on purpose."""


class UnknownVersionError(SamBlockError, ValueError):
    """The requested `version` is not a known SAM 2 variant."""


class CheckpointMissingError(SamBlockError, FileNotFoundError):
    """The checkpoint file is not on disk and could not be downloaded."""


class CheckpointCorruptError(SamBlockError, ValueError):
    """The checkpoint file exists but is not a loadable SAM 2 checkpoint."""


class DeviceError(SamBlockError, ValueError):
    """`SAM_BLOCK_DEVICE` names a device that is malformed or not available."""


class InvalidImageError(SamBlockError, ValueError):
    """An image cannot be turned into the RGB uint8 array SAM 2 expects."""
