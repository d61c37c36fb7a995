"""Errors sam_block raises. Each message names the bad value and the fix.

Two families: :class:`ClientInputError` — the request's own data is wrong (an unknown
version, an unusable image, a bad parameter); the engine reports it to the client as a
4xx (see ``sam_block.blocks.common.client_errors_as_4xx``). Everything else (a missing or
corrupt checkpoint, an unavailable device) is the server's problem and stays a 500.
"""


class SamBlockError(Exception):
    """Base class of every error sam_block raises on purpose."""


class ClientInputError(SamBlockError):
    """The caller's data is wrong; resending the same request cannot succeed."""


class UnknownVersionError(ClientInputError, ValueError):
    """The requested `version` is not a known SAM 2 variant."""


class InvalidImageError(ClientInputError, ValueError):
    """An image cannot be turned into the RGB uint8 array SAM 2 expects."""


class InvalidParameterError(ClientInputError, ValueError):
    """A step parameter's value, known only at run time, cannot be used."""


class CheckpointMissingError(SamBlockError, FileNotFoundError):
    """The checkpoint file is not on disk and could not be downloaded."""


class CheckpointCorruptError(SamBlockError, ValueError):
    """The checkpoint file exists but is not a loadable SAM 2 checkpoint."""


class DeviceError(SamBlockError, ValueError):
    """`SAM_BLOCK_DEVICE` names a device that is malformed or not available."""


class PrecisionError(SamBlockError, ValueError):
    """`SAM_BLOCK_PRECISION` (or ``--precision``) is not ``auto``, ``fp32`` or ``bf16``."""


class Sam2InterfaceError(SamBlockError, TypeError):
    """The installed ``sam2`` package's private methods do not take the arguments sam_block passes."""
