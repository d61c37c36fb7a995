"""Regenerate docs/demo.png, the picture in the README: `sam-block demo`'s input and result side by side.

python scripts/render_demo_png.py
"""

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from sam_block.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def render(seed: int = 0) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        if main(["demo", "--out", tmp, "--seed", str(seed)]) != 0:
            raise SystemExit("sam-block demo failed")
        source = cv2.imread(str(Path(tmp) / "demo_scene.png"))
        annotated = cv2.imread(str(Path(tmp) / "demo_scene.annotated.png"))
    gap = np.full((source.shape[0], 12, 3), 255, np.uint8)
    DOCS.mkdir(exist_ok=True)
    path = DOCS / "demo.png"
    cv2.imwrite(str(path), np.hstack([source, gap, annotated]))
    return path


if __name__ == "__main__":
    print(f"wrote {render(*map(int, sys.argv[1:2]))}")
