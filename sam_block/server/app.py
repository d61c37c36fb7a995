"""Serve inference's own HTTP API with the sam_block plugin enabled.

    python -m sam_block.serve --port 9001          # http://127.0.0.1:9001

This builds the same FastAPI app as inference's Docker images
(``HttpInterface(model_manager).app``) and serves it with uvicorn; the only
differences are that ``WORKFLOWS_PLUGINS`` is made to include ``sam_block`` and
that the server binds to loopback unless ``--host`` says otherwise. Every
workflow endpoint (``/workflows/run``, ``/workflows/blocks/describe``, ...) can
then use ``sam_block/segment_anything_2@v1``.

Needs inference's HTTP dependencies: ``pip install "sam_block[serve]"``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from sam_block.plugin import enable_plugin

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
# HttpInterface mounts these folders of inference's web UI relative to the working
# directory (they exist in inference's Docker images, not in its wheel).
_LANDING_DIRS = ("inference/landing/out/static", "inference/landing/out/_next/static")
# Relative paths in these variables are made absolute before leaving the caller's directory.
_PATH_VARIABLES = ("SAM_BLOCK_CHECKPOINT_DIR", "MODEL_CACHE_DIR")


def _enter_working_dir(working_dir: Optional[Path]) -> Path:
    """Make relative path variables absolute and move into a directory with the UI folders."""
    for name in _PATH_VARIABLES:
        value = os.environ.get(name)
        if value:
            os.environ[name] = str(Path(value).expanduser().resolve())
    working_dir = Path(working_dir) if working_dir else Path(tempfile.mkdtemp(prefix="sam_block_serve_"))
    for relative in _LANDING_DIRS:
        (working_dir / relative).mkdir(parents=True, exist_ok=True)
    os.chdir(working_dir)
    return working_dir


def build_app(working_dir: Optional[Path] = None):
    """inference's HTTP app (as in its Docker images) with the plugin enabled."""
    enable_plugin()
    _enter_working_dir(working_dir)
    from inference.core.env import MAX_ACTIVE_MODELS  # the HTTP app and model manager live in inference
    from inference.core.interfaces.http.http_api import HttpInterface
    from inference.core.managers.base import ModelManager
    from inference.core.managers.decorators.fixed_size_cache import WithFixedSizeCache
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    model_manager = WithFixedSizeCache(
        ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES)),
        max_size=MAX_ACTIVE_MODELS,
    )
    return HttpInterface(model_manager).app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    parser.add_argument("--working-dir", type=Path, default=None, help="directory to run in (default: a new temporary one)")
    args = parser.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print('inference\'s HTTP server needs uvicorn: pip install "sam_block[serve]"', file=sys.stderr)
        return 2
    app = build_app(args.working_dir)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
