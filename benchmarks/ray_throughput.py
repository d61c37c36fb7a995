"""Images/s of `sam-block run --ray` on 1 and 2 actors vs the plain single-process run.

    python benchmarks/ray_throughput.py --images 60

Generates IMAGES demo scenes (256 × 256 PNG) and segments everything on them (demo model,
8 × 8 points, CPU) four ways, each into a fresh output folder:

- plain, 1 thread: ``run_frames`` (what ``sam-block run`` does) in a child process with
  ``OMP_NUM_THREADS=1`` and torch on 1 thread: what Ray gives an actor of 1 CPU;
- plain, default threads: the same child process with the default environment (what
  ``sam-block run`` does on this machine);
- Ray, 1 actor and Ray, 2 actors: ``run_with_ray`` on a local Ray (``num_cpus`` = the cores).

For each: steady images/s (images written after the first delivery / time from it to the
last image written: model loading excluded) and the end-to-end wall time (plain: compile the workflow,
load the model, run; Ray: the whole ``run_with_ray`` call — actor processes start, import,
load the model — with Ray itself already started, its start printed separately), and for
the plain runs the whole child process (Python start and imports included).
Prints a Markdown table and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKFLOW = {
    "version": "1.0",
    "inputs": [
        {"type": "WorkflowImage", "name": "image"},
        {"type": "WorkflowParameter", "name": "points_per_side", "default_value": 32},
    ],
    "steps": [
        {
            "type": "sam_block/segment_anything_2@v1",
            "name": "sam",
            "images": "$inputs.image",
            "version": "demo",
            "points_per_side": "$inputs.points_per_side",
        }
    ],
    "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.sam.predictions"}],
}
PARAMS = {"points_per_side": 8}


def plain_in_child(images: Path, out: Path, threads: int | None) -> dict:
    """`plain` in a fresh process (its own thread settings, its own imports), results as JSON."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, __file__, "--plain-child", str(images), str(out), str(threads or 0)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - started}


def plain(images: Path, out: Path, threads: int | None) -> dict:
    import torch

    from sam_block.cli import expand_inputs, init_engine, iter_frames, run_frames

    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    stamps = []

    def frames():
        for frame in iter_frames(expand_inputs([images]), 1):
            yield frame
            stamps.append(time.perf_counter())  # resumed: the previous frame is written

    started = time.perf_counter()
    engine = init_engine(WORKFLOW)
    summary = run_frames(engine, "image", frames(), out, PARAMS, progress=False)
    wall = time.perf_counter() - started
    torch.set_num_threads(default_threads)
    return {"images": summary.frames, "wall": wall, "stamps": stamps}


def with_ray(images: Path, out: Path, workers: int) -> dict:
    from sam_block.cli.batch import RayOptions, run_with_ray

    stamps = []
    started = time.perf_counter()
    options = RayOptions(workers=workers, progress=False, on_image=lambda _: stamps.append(time.perf_counter()))
    summary = run_with_ray(WORKFLOW, [images], out, PARAMS, options)
    wall = time.perf_counter() - started
    assert summary.computed == summary.frames and not summary.failed
    return {"images": summary.frames, "wall": wall, "stamps": stamps}


def steady(stamps) -> float:
    """Images/s after the first delivery: Ray hands back a batch at once, so the images that
    arrived with the first one are not counted (their compute time is before stamps[0])."""
    first = sum(1 for t in stamps if t <= stamps[0] + 0.05)
    return (len(stamps) - first) / (stamps[-1] - stamps[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--plain-child", nargs=3, metavar=("IMAGES", "OUT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        images, out, threads = args.plain_child
        with contextlib.redirect_stdout(sys.stderr):
            result = plain(Path(images), Path(out), int(threads) or None)
        print(json.dumps(result))
        return 0

    import logging

    logging.disable(logging.WARNING)
    import ray

    from sam_block.demo.scenes import make_scene

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="sam_block_ray_bench_"))
    images = root / "images"
    images.mkdir()
    for seed in range(args.images):
        cv2.imwrite(
            str(images / f"scene{seed:03d}.png"), np.ascontiguousarray(make_scene(1000 + seed).image[..., ::-1])
        )

    rows = []
    rows.append(
        (
            "plain `sam-block run` path, 1 thread (OMP_NUM_THREADS=1, torch 1 thread)",
            plain_in_child(images, root / "out0", 1),
        )
    )
    rows.append(("plain `sam-block run` path, default threads", plain_in_child(images, root / "out1", None)))
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    for workers in (1, 2):
        rows.append((f"Ray, {workers} actor(s) × 1 CPU", with_ray(images, root / f"out{len(rows)}", workers)))
    ray.shutdown()

    reference = json.loads((root / "out0" / "coco.json").read_text())
    for index in range(1, len(rows)):
        assert json.loads((root / f"out{index}" / "coco.json").read_text()) == reference, (
            f"run {index} wrote another coco.json"
        )

    print(
        f"\n{args.images} images 256 × 256, demo model, segment everything 8 × 8 points; {os.cpu_count()} cores; "
        f"load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}; ray.init: {ray_start:.1f} s; every coco.json identical\n"
    )
    print("| run | steady images/s | end-to-end wall (s) | end-to-end images/s | whole process (s) |")
    print("|---|---|---|---|---|")
    for label, result in rows:
        process = (
            f"{result['process']:.1f}"
            if "process" in result
            else f"ray.init + wall = {ray_start + result['wall']:.1f}, + the driver's imports"
        )
        print(
            f"| {label} | {steady(result['stamps']):.2f} | {result['wall']:.1f} | {result['images'] / result['wall']:.2f} | {process} |"
        )
    base = steady(rows[0][1]["stamps"])
    one = steady(rows[2][1]["stamps"])
    print(
        f"\nRay 1 actor vs plain 1 thread, steady: {100 * (base / one - 1):+.1f} % time per image; "
        f"end-to-end: {100 * (rows[2][1]['wall'] / rows[0][1]['wall'] - 1):+.1f} %"
    )
    print(f"Ray 2 actors vs 1 actor, steady: × {steady(rows[3][1]['stamps']) / one:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
