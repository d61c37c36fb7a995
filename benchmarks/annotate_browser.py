"""Click → mask drawn in a real browser: the click-to-segment page (`/sam_block/annotate`) (issue 22).

    python benchmarks/annotate_browser.py                     # demo and hiera_tiny, 30 clicks each
    python benchmarks/annotate_browser.py --models demo --clicks 10

Starts one `python -m sam_block.serve` on 127.0.0.1 (a random-weight hiera_tiny checkpoint
beside the bundled demo model; the server's default precision unless --precision), drives
the OS Chromium (headless, Playwright with executable_path) to the page, opens an image
with the file picker, waits for the embedding, then makes `--clicks` single clicks, each on a
fresh object (the click, its mask drawn, then Delete: every click is a one-point prompt).

The figure is the page's own Performance API measure `sam:click-to-mask` (annotate.js): from
the pointer-up event to the animation frame after the mask was painted on the canvas. The page's
`sam:segment-request` (request built with the re-sent image, sent, answer read) and
`sam:mask-decode-draw` (RLE decoded, mask bitmap, canvas repainted) split it, the Resource Timing
entry of each `/sam2/segment_image` request gives its HTTP part (request sent → last byte), and
the answer's `time` field the server's own work.

- demo: a generated scene (sam_block.demo.scenes) of --demo-size, clicks inside its shapes;
  goal p50 <= 100 ms.
- hiera_tiny (random weights): a 1280 x 960 photo-like JPEG, clicks at random points after the
  embed; goal p50 <= 250 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from common import REPO, LocalServer, checkpoint_dir
from http_load import percentile

from tests.browser import click_image, interior_point, launch, missing_browser, wait_for_masks

PAGE = "/sam_block/annotate"
GOALS_MS = {"demo": 100.0, "hiera_tiny": 250.0}


def scene_jpeg(path: Path, seed: int, height: int, width: int, noise: float = 0.0):
    """A generated scene saved as JPEG (quality 90); returns its masks."""
    from sam_block.demo.scenes import make_scene

    scene = make_scene(seed=seed, height=height, width=width)
    image = scene.image[:, :, ::-1].astype(np.float32)
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape)
    ok = cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok, path
    return scene.masks


def click_points(masks, count: int, height: int, width: int, seed: int):
    """`count` clicks: inside the scene's shapes in turn (jittered), or at random when there are none."""
    rng = np.random.default_rng(seed)
    if masks is None or not len(masks):
        return [(int(rng.integers(8, width - 8)), int(rng.integers(8, height - 8))) for _ in range(count)]
    points = []
    for i in range(count):
        mask = masks[i % len(masks)]
        if i < len(masks):
            points.append(interior_point(mask))
        else:
            ys, xs = np.nonzero(mask)
            j = int(rng.integers(len(xs)))
            points.append((int(xs[j]), int(ys[j])))
    return points


def run_model(browser, server, version: str, image: Path, points, timeout_s: float) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    answers = []
    page.on(
        "response",
        lambda r: urlsplit(r.url).path == "/sam2/segment_image" and r.status == 200 and answers.append(r),
    )
    try:
        page.goto(f"{server.url}{PAGE}?version={version}")
        page.wait_for_selector(f"#version option[value='{version}']", state="attached")
        if page.input_value("#version") != version:
            raise SystemExit(f"the server cannot serve {version}: {page.inner_text('#version')}")
        started = time.perf_counter()
        page.set_input_files("#file", str(image))
        page.locator("#status", has_text="embedded").wait_for(timeout=timeout_s * 1000)
        embed_s = time.perf_counter() - started
        # one warm-up click (first decoder call of the process and the page's first mask), not counted
        click_image(page, *points[-1])
        wait_for_masks(page, 1, timeout_s)
        page.keyboard.press("Delete")
        page.evaluate("() => { performance.clearMeasures(); performance.clearResourceTimings(); }")
        page.evaluate("() => performance.setResourceTimingBufferSize(10000)")
        for n, (x, y) in enumerate(points, start=2):
            click_image(page, x, y)
            wait_for_masks(page, n, timeout_s)
            page.wait_for_function(
                f"() => performance.getEntriesByName('sam:click-to-mask').length >= {n - 1}", timeout=timeout_s * 1000
            )
            page.keyboard.press("Delete")
        measures, request_ms, draw_ms = (
            page.evaluate(f"() => performance.getEntriesByName('sam:{name}').map(e => e.duration)")
            for name in ("click-to-mask", "segment-request", "mask-decode-draw")
        )
        requests = page.evaluate(
            """() => performance.getEntriesByType('resource')
                 .filter(e => new URL(e.name).pathname === '/sam2/segment_image')
                 .map(e => ({start: e.startTime, request: e.responseEnd - e.requestStart, body: e.encodedBodySize}))"""
        )
        server_ms = [1000 * answer.json()["time"] for answer in answers[1:]]
        payload = page.evaluate(
            "() => document.getElementById('canvas').width + 'x' + document.getElementById('canvas').height"
        )
    finally:
        context.close()
    if errors:
        raise SystemExit(f"the page reported errors: {errors}")
    return {
        "embed_s": embed_s,
        "click_to_mask_ms": measures,
        "request_ms": request_ms,
        "draw_ms": draw_ms,
        "http_ms": [r["request"] for r in requests],
        "answer_bytes": [r["body"] for r in requests],
        "server_ms": server_ms,
        "canvas": payload,
    }


def line(name: str, ms) -> str:
    if not ms:
        return f"{name}: none"
    return (
        f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "hiera_tiny"], choices=sorted(GOALS_MS))
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--demo-size", default="640x480", help="WIDTHxHEIGHT of the demo scene")
    parser.add_argument("--tiny-size", default="1280x960", help="WIDTHxHEIGHT of the hiera_tiny image")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args()

    missing = missing_browser()
    if missing:
        raise SystemExit(missing)
    from playwright.sync_api import sync_playwright

    env = {"SAM_BLOCK_PRECISION": args.precision} if args.precision else {}
    workdir = Path(tempfile.mkdtemp(prefix="sam_block_annotate_bench_"))
    images = {}
    for version in args.models:
        width, height = map(int, (args.demo_size if version == "demo" else args.tiny_size).split("x"))
        path = workdir / f"{version}.jpg"
        masks = scene_jpeg(path, seed=6, height=height, width=width, noise=0 if version == "demo" else 6)
        images[version] = (path, click_points(masks if version == "demo" else None, args.clicks, height, width, 0))

    results = {}
    ckpt = checkpoint_dir(args.checkpoint_dir) if "hiera_tiny" in args.models else workdir
    with LocalServer(ckpt, **env) as server, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for version in args.models:
                path, points = images[version]
                results[version] = run_model(browser, server, version, path, points, args.timeout_s)
        finally:
            browser.close()
        logged = [text for text in server.log_tail(200_000).splitlines() if "SAM 2 runs in" in text]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; browser: headless Chromium")
    print(f"precision: {logged[-1].strip()[-120:] if logged else 'see the server log'}")
    for version, result in results.items():
        path = images[version][0]
        print(
            f"--- {version}: image {result['canvas']} ({path.stat().st_size / 1e3:.0f} kB JPEG), embed {result['embed_s']:.2f} s"
        )
        print(line("click -> mask drawn (sam:click-to-mask)", result["click_to_mask_ms"]))
        print(line("  segment request: JSON built, sent, answer read (sam:segment-request)", result["request_ms"]))
        print(line("    of which HTTP, request sent -> answer received (Resource Timing)", result["http_ms"]))
        print(line("      of which the server's own time (answer's `time`)", result["server_ms"]))
        print(line("  RLE decoded, mask bitmap, canvas repainted (sam:mask-decode-draw)", result["draw_ms"]))
        print("  the rest: pointer-up handling and the wait for the next animation frame")
        if result["click_to_mask_ms"]:
            p50 = statistics.median(result["click_to_mask_ms"])
            goal = GOALS_MS[version]
            print(f"goal p50 <= {goal:.0f} ms: {p50:.1f} ms -> {'met' if p50 <= goal else 'MISSED'}")
    for path, _ in images.values():
        path.unlink()
    workdir.rmdir()
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    raise SystemExit(main())
