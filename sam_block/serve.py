"""``python -m sam_block.serve`` (also ``sam-block serve``): inference's HTTP API with the plugin
(see :mod:`sam_block.server.app`)."""

import sys

from sam_block.server.app import build_app, main

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    sys.exit(main())
