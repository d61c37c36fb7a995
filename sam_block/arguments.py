"""Argument parsing shared by ``sam-block`` (:mod:`sam_block.cli`) and ``python -m sam_block.serve``
(:mod:`sam_block.server.app`): one-line argument errors and the ``--precision`` flag. Light: no torch."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn, Optional

from sam_block.runtime.precision_names import PRECISION_CHOICES, PRECISION_ENV


class OneLineErrorParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error: what was wrong; where to look.

    The line starts with `error_name` (default: the program, ``sam-block``)."""

    error_name: Optional[str] = None

    def error(self, message: str) -> NoReturn:
        name = self.error_name or self.prog.split()[0]
        self.exit(2, f"{name}: error: {message}; see `{self.prog} --help`\n")


def add_precision_argument(command: argparse.ArgumentParser) -> None:
    """``--precision P``, on every command that runs SAM (and the server): see :func:`apply_precision`."""
    command.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=None,
        metavar="P",
        help="numeric precision SAM 2 runs in: %(choices)s (default: $SAM_BLOCK_PRECISION, else auto: bf16 on "
        "CUDA and on CPUs with native bf16, else fp32)",
    )


def apply_precision(args: argparse.Namespace) -> None:
    """``--precision P`` becomes ``SAM_BLOCK_PRECISION=P`` (over the value in the environment) before any
    model is built: everything this process builds, and the processes it starts (Ray's), reads it there."""
    if getattr(args, "precision", None) is not None:
        os.environ[PRECISION_ENV] = args.precision
