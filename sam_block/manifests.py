"""Write the block manifest JSON that no-code builders see (``python -m sam_block.manifests``).

The JSON is the block's entry in the engine's blocks description, produced by the
same handler that serves ``/workflows/blocks/describe`` in inference's HTTP API.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

from sam_block.plugin import enable_plugin

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"


def describe_blocks() -> Dict[str, dict]:
    """``{file name: block description}`` for every block this plugin contributes."""
    enable_plugin()
    from inference.core.interfaces.http.handlers.workflows import handle_describe_workflows_blocks_request

    description = handle_describe_workflows_blocks_request()
    ours = [block for block in description.blocks if block.block_source == "sam_block"]
    return {
        manifest_file_name(block.manifest_type_identifier): block.model_dump(mode="json", by_alias=True)
        for block in ours
    }


def manifest_file_name(type_identifier: str) -> str:
    """``sam_block/segment_anything_2@v1`` → ``sam_block.segment_anything_2.v1.json``."""
    return type_identifier.replace("/", ".").replace("@", ".") + ".json"


def render(description: dict) -> str:
    return json.dumps(description, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=MANIFESTS_DIR, help="directory to write into (default: manifests/)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a written file would change")
    args = parser.parse_args(argv)
    stale = []
    for name, description in describe_blocks().items():
        path = args.out / name
        text = render(description)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("stale manifests (run `python -m sam_block.manifests`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
