"""Regenerate docs/annotate.png, the picture in the README: the click-to-segment page with two objects.

python scripts/render_annotate_png.py [SEED]

Starts `python -m sam_block.serve` on loopback (the bundled demo model, offline), opens the page
(`/sam_block/annotate`) in the OS Chromium (headless, Playwright with executable_path), opens a
generated scene, segments its largest shape with a click and a second shape with a dragged box,
each under its own label (the shape's kind), and saves a screenshot of the page.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser import (  # noqa: E402
    click_image,
    drag_image,
    interior_point,
    launch,
    missing_browser,
    wait_for_idle,
    wait_for_masks,
    write_scene_png,
)
from tests.http_server import LocalServer  # noqa: E402

DOCS = REPO / "docs"
HEIGHT, WIDTH = 420, 560
VIEWPORT = {"width": 1080, "height": 600}


def render(seed: int = 6) -> Path:
    missing = missing_browser()
    if missing:
        raise SystemExit(missing)
    from playwright.sync_api import sync_playwright

    DOCS.mkdir(exist_ok=True)
    target = DOCS / "annotate.png"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "scene.png"
        scene = write_scene_png(image, seed, HEIGHT, WIDTH)
        order = np.argsort(-scene.masks.sum(axis=(1, 2)))
        if len(order) < 2:
            raise SystemExit(f"scene {seed} has fewer than two shapes: pick another seed")
        first, second = int(order[0]), int(order[1])
        with LocalServer(Path(tmp) / "no_checkpoints") as server, sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.goto(server.url + "/sam_block/annotate?version=demo")
                page.wait_for_selector("#version option[value='demo']", state="attached")
                page.set_input_files("#file", str(image))
                page.locator("#status", has_text="embedded").wait_for(timeout=120_000)

                page.fill("#label", scene.kinds[first])
                click_image(page, *interior_point(scene.masks[first]))
                wait_for_masks(page, 1)
                page.keyboard.press("Enter")  # next object
                page.fill("#label", scene.kinds[second])
                x1, y1, x2, y2 = (float(v) for v in scene.boxes[second])
                drag_image(page, max(x1 - 2, 0), max(y1 - 2, 0), min(x2 + 1, WIDTH - 1), min(y2 + 1, HEIGHT - 1))
                wait_for_masks(page, 2)
                wait_for_idle(page)
                page.mouse.move(0, 0)  # no hover effect in the picture
                page.screenshot(path=str(target), full_page=False)
            except BaseException:
                page.screenshot(path=str(Path(tempfile.gettempdir()) / "annotate_failed.png"))
                raise
            finally:
                browser.close()
    return target


if __name__ == "__main__":
    print(f"wrote {render(*map(int, sys.argv[1:2]))}")
