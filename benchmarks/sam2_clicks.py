"""Embed once, click many: `/sam2/embed_image` once, then single clicks by `image_id` (issue 21).

    python benchmarks/sam2_clicks.py                       # hiera_tiny (random weights), 1280 x 960
    python benchmarks/sam2_clicks.py --precision fp32      # the server under SAM_BLOCK_PRECISION=fp32

Starts one `python -m sam_block.serve` on 127.0.0.1 (random-weight hiera_tiny unless
--checkpoint-dir is given; SAM_BLOCK_PRECISION as --precision, the server's default `auto`
unless given), loads the model with a small warm-up embed, then:

- embed: `--embeds` distinct images of --width x --height, each `POST /sam2/embed_image` (timed
  by the client, and the `time` the server reports);
- clicks: `--clicks` single positive clicks on the last embedded image, each `POST
  /sam2/segment_image` with its `image_id` and the image re-sent (the schema requires it),
  `format=rle`, `multimask_output=true` (SAM's best of three), one request at a time;
- the same click through `POST /workflows/run` (example_workflows/a_boxes_input.json: the step
  takes detector boxes, not bare points, so the click is a 9 x 9 box around it — one decoder call
  on the embedding the API cached, which the step shares).

Reports p50 / p99 / max of the client's wall time per request, the server's own `time` of the
/sam2 routes (request parsed → response built; the rest is HTTP, JSON and pydantic), and whether
the goals of issue 21 hold: p50 click <= 5 % of the embed time and <= 150 ms.
The image is a generated scene with camera-like noise, sent as a JPEG (quality 90) in base64.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import requests
from common import REPO, WORKFLOW, LocalServer, box_prediction, boxes_input, checkpoint_dir
from http_load import percentile

VERSION = "hiera_tiny"


def photo_like(seed: int, height: int, width: int) -> np.ndarray:
    """BGR: a generated scene (sam_block.demo.scenes) plus sensor-like noise, so JPEG sizes are a photo's."""
    from sam_block.demo.scenes import make_scene

    scene = make_scene(seed=seed, height=height, width=width).image[:, :, ::-1]
    noise = np.random.default_rng(seed).normal(0, 6, scene.shape)
    return np.clip(scene.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def jpeg_b64(bgr: np.ndarray, quality: int = 90) -> str:
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def server_precision(requested) -> str:
    """What the server resolves (same code, same environment and CPU) when its log does not say."""
    import torch

    from sam_block.runtime.precision import resolve_precision

    chosen = resolve_precision(torch.device("cpu"), requested)
    return f"{chosen.name} ({chosen.reason})"


def timed_post(session, url: str, body: dict, timeout: float = 600) -> tuple:
    """(seconds, response) of one JSON POST."""
    data = json.dumps(body)
    started = time.perf_counter()
    response = session.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:500]}")
    return elapsed, response


def summary(name: str, seconds) -> str:
    ms = [1000 * s for s in seconds]
    return (
        f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"min {min(ms):.1f} ms, max {max(ms):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--embeds", type=int, default=3, help="distinct images embedded (the last one is clicked)")
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--workflow-clicks", type=int, default=20)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = {"SAM_BLOCK_PRECISION": args.precision} if args.precision else {}
    images = [photo_like(args.seed + i, args.height, args.width) for i in range(args.embeds)]
    payloads = [jpeg_b64(image) for image in images]
    rng = np.random.default_rng(args.seed)
    clicks = [
        (float(rng.integers(8, args.width - 8)), float(rng.integers(8, args.height - 8)))
        for _ in range(max(args.clicks, args.workflow_clicks))
    ]

    ckpt = checkpoint_dir(args.checkpoint_dir)
    with LocalServer(ckpt, **env) as server, requests.Session() as session:
        base = server.url
        started = time.perf_counter()
        timed_post(  # loads the model: not part of any figure
            session,
            base + "/sam2/embed_image",
            {"image": {"type": "base64", "value": jpeg_b64(photo_like(999, 64, 64))}, "sam2_version_id": VERSION},
        )
        load_s = time.perf_counter() - started
        logged = [line for line in server.log_tail(200_000).splitlines() if "SAM 2 runs in" in line]
        precision = logged[-1].strip()[-160:] if logged else server_precision(args.precision)

        embed_wall, embed_server = [], []
        for i, payload in enumerate(payloads):
            seconds, response = timed_post(
                session,
                base + "/sam2/embed_image",
                {"image": {"type": "base64", "value": payload}, "image_id": f"bench-{i}", "sam2_version_id": VERSION},
            )
            embed_wall.append(seconds)
            embed_server.append(response.json()["time"])
        image_id, payload = f"bench-{len(payloads) - 1}", payloads[-1]

        def click_body(x, y):
            return {
                "image": {"type": "base64", "value": payload},
                "image_id": image_id,
                "sam2_version_id": VERSION,
                "prompts": {"prompts": [{"points": [{"x": x, "y": y, "positive": True}]}]},
                "multimask_output": True,
                "format": "rle",
            }

        timed_post(session, base + "/sam2/segment_image", click_body(*clicks[-1]))  # first decoder call
        click_wall, click_server, counts = [], [], []
        for x, y in clicks[: args.clicks]:
            seconds, response = timed_post(session, base + "/sam2/segment_image", click_body(x, y))
            click_wall.append(seconds)
            answer = response.json()
            click_server.append(answer["time"])
            counts.append(len(answer["predictions"]))

        def workflow_body(x, y):
            box = box_prediction(x - 4, y - 4, x + 5, y + 5, "click", 0, "click")
            return {
                "specification": WORKFLOW,
                "inputs": {
                    "image": {"type": "base64", "value": payload},
                    "boxes": boxes_input(args.width, args.height, [box]),
                    "version": VERSION,
                },
            }

        timed_post(session, base + "/workflows/run", workflow_body(*clicks[-1]))  # first workflow run
        workflow_wall = []
        for x, y in clicks[: args.workflow_clicks]:
            seconds, response = timed_post(session, base + "/workflows/run", workflow_body(x, y))
            workflow_wall.append(seconds)
            assert len(response.json()["outputs"][0]["predictions"]["predictions"]) <= 1

    embed_s = statistics.median(embed_wall)
    click_p50 = statistics.median(click_wall)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; device: cpu")
    print(f"precision: {precision}")
    print(f"model: {VERSION} (random weights unless --checkpoint-dir); image {args.width} x {args.height}, JPEG q90")
    print(f"payload: {len(payload) / 1e6:.2f} MB of base64 per request; model load + first embed {load_s:.1f} s")
    print(summary("embed (client wall)", embed_wall))
    print(summary("embed (server time)", embed_server))
    print(summary("click by image_id (client wall)", click_wall))
    print(summary("click by image_id (server time)", click_server))
    print(summary("same click via /workflows/run (client wall)", workflow_wall))
    print(f"predictions per click: {sorted(set(counts))}")
    share = click_p50 / embed_s
    print(
        f"goal p50 click <= 5 % of embed: {100 * share:.1f} % -> {'met' if share <= 0.05 else 'MISSED'}; "
        f"goal p50 <= 150 ms: {1000 * click_p50:.1f} ms -> {'met' if click_p50 <= 0.150 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    raise SystemExit(main())
