"""Side-effect-free helpers to drive the click-to-segment page (``/sam_block/annotate``) in the
operating system's Chromium through Playwright: used by tests/test_annotate_browser.py,
benchmarks/annotate_browser.py and scripts/render_annotate_png.py.

No browser is downloaded (``playwright install`` cannot fetch one here): Playwright launches the
OS package's binary (Debian's ``chromium``, ``/usr/bin/chromium``) with ``executable_path``.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

CHROMIUM_ENV = "SAM_BLOCK_CHROMIUM"  # path of a Chromium binary, when not /usr/bin/chromium
_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL_HINT = (
    "no Chromium for the browser tests: install the OS package (apt-get install -y chromium) and "
    "Playwright (pip install playwright), or set SAM_BLOCK_CHROMIUM to a Chromium binary"
)


def chromium_path() -> Optional[str]:
    """The Chromium binary to drive: ``$SAM_BLOCK_CHROMIUM``, else ``/usr/bin/chromium``, else on PATH."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in _CANDIDATES:
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found:
            return found
    return None


def missing_browser() -> Optional[str]:
    """None when Playwright and a Chromium are here, else one line saying how to install them."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None if chromium_path() else INSTALL_HINT


def launch(playwright, **options):
    """Headless Chromium of the OS, e.g. ``with sync_playwright() as p: browser = launch(p)``."""
    return playwright.chromium.launch(executable_path=chromium_path(), **options)


def write_scene_png(path: Path, seed: int, height: int, width: int):
    """A generated scene (sam_block.demo.scenes) saved as a lossless PNG; returns the Scene (RGB)."""
    from sam_block.demo.scenes import make_scene

    scene = make_scene(seed=seed, height=height, width=width)
    assert cv2.imwrite(str(path), scene.image[:, :, ::-1]), path
    return scene


def interior_point(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the pixel of `mask` farthest from its border."""
    distance = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def canvas_size(page) -> Tuple[int, int]:
    width, height = page.evaluate(
        "() => [document.getElementById('canvas').width, document.getElementById('canvas').height]"
    )
    return int(width), int(height)


def page_position(page, x: float, y: float) -> Tuple[float, float]:
    """The viewport position of image pixel centre ``(x, y)`` on the (CSS-scaled) canvas."""
    box = page.locator("#canvas").bounding_box()
    width, height = canvas_size(page)
    return float(box["x"] + (x + 0.5) * box["width"] / width), float(box["y"] + (y + 0.5) * box["height"] / height)


def click_image(page, x: float, y: float, shift: bool = False, button: str = "left") -> None:
    """Click image pixel ``(x, y)``; ``shift=True`` or ``button="right"`` for a negative point."""
    position = page_position(page, x, y)
    if shift:
        page.keyboard.down("Shift")
    try:
        page.mouse.click(*position, button=button)
    finally:
        if shift:
            page.keyboard.up("Shift")


def drag_image(page, x1: float, y1: float, x2: float, y2: float) -> None:
    """Drag a box on the image from pixel ``(x1, y1)`` to ``(x2, y2)``."""
    page.mouse.move(*page_position(page, x1, y1))
    page.mouse.down()
    page.mouse.move(*page_position(page, x2, y2), steps=5)
    page.mouse.up()


def masks_drawn(page) -> int:
    return int(page.evaluate("() => Number(document.documentElement.dataset.masksDrawn || 0)"))


def wait_for_masks(page, count: int, timeout_s: float = 120) -> None:
    """Until the page has applied `count` masks in all (``<html data-masks-drawn>``)."""
    page.wait_for_selector(f"html[data-masks-drawn='{count}']", state="attached", timeout=timeout_s * 1000)


def wait_for_idle(page, timeout_s: float = 120) -> None:
    page.wait_for_selector("html[data-requests='idle']", state="attached", timeout=timeout_s * 1000)


def canvas_rgb(page) -> np.ndarray:
    """What the canvas shows now, ``(H, W, 3)`` uint8 RGB at the image's pixel size."""
    data_url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    encoded = np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
