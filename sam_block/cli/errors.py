"""The CLI's one error type and how an engine error becomes one line."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


class SetupError(CliError):
    """A problem that fails every input alike (e.g. a detector whose model cannot be loaded):
    a run stops on it (exit 2) rather than listing every input as failed."""


def root_message(error: BaseException) -> str:
    """The message to show for `error`: the first of our own errors down the chain
    (it names the value and the fix), else the innermost cause."""
    from sam_block.errors import SamBlockError

    while True:
        if isinstance(error, (SamBlockError, CliError)):
            return _one_line(error)
        inner = getattr(error, "inner_error", None) or error.__cause__
        if inner is None or inner is error:
            return _one_line(error)
        error = inner


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
