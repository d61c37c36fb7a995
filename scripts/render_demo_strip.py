"""Regenerate docs/demo_video_strip.png, the strip in the README: six frames of `sam-block demo --video`.

python scripts/render_demo_strip.py
"""

import shutil
import sys
import tempfile
from pathlib import Path

from sam_block.cli import main
from sam_block.cli.demo import DEFAULT_CLIP

DOCS = Path(__file__).resolve().parents[1] / "docs"


def render(seed: int = DEFAULT_CLIP) -> Path:
    DOCS.mkdir(exist_ok=True)
    path = DOCS / "demo_video_strip.png"
    with tempfile.TemporaryDirectory() as tmp:
        if main(["demo", "--video", "--out", tmp, "--seed", str(seed)]) != 0:
            raise SystemExit("sam-block demo --video failed")
        shutil.copyfile(Path(tmp) / "demo_strip.png", path)
    return path


if __name__ == "__main__":
    print(f"wrote {render(*map(int, sys.argv[1:2]))}")
