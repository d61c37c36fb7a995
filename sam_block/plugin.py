"""Enable the sam_block plugin for inference's Workflows engine (the one place that does it)."""

from __future__ import annotations

import os
from typing import MutableMapping

PLUGIN = "sam_block"
PLUGINS_ENV = "WORKFLOWS_PLUGINS"


def enable_plugin(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add ``sam_block`` to ``WORKFLOWS_PLUGINS``, keeping the other plugins and their order.

    Example:
        >>> env = {"WORKFLOWS_PLUGINS": "other_plugin"}
        >>> enable_plugin(env)
        >>> env["WORKFLOWS_PLUGINS"]
        'other_plugin,sam_block'
        >>> enable_plugin(env)  # idempotent
        >>> env["WORKFLOWS_PLUGINS"]
        'other_plugin,sam_block'
    """
    plugins = [p.strip() for p in environ.get(PLUGINS_ENV, "").split(",") if p.strip()]
    environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*plugins, PLUGIN]))
