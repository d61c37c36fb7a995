"""bfloat16 on CPU (issue 23): our runtime in bf16 against fp32 and against Meta's fp32 predictors.

    python benchmarks/bf16.py encoder      # hiera_tiny image encoder at 1024: GFLOP/s fp32 vs bf16 vs the cores' peak
    python benchmarks/bf16.py encoder --variants   # and bf16 weights, int8 dynamic quantization, channels_last
    python benchmarks/bf16.py image        # hiera_tiny, 1080p, 50 boxes: our block bf16 / fp32 vs Meta's SAM2ImagePredictor
    python benchmarks/bf16.py video        # hiera_tiny, 480p, 2 objects: our tracker bf16 vs Meta's SAM2VideoPredictor
    python benchmarks/bf16.py demo-video   # demo model, 5 objects: our tracker ms/frame bf16 vs fp32
    python benchmarks/bf16.py image --boxes 2 --size 240x320 --repeats 1   # smoke run

Every part compares its sides in one process, on the same weights and inputs, sides
interleaved per repeat (A B C A B C ...) so that a load change on the machine hits all
of them. hiera_tiny has random weights (``tests/support.py``'s checkpoint: the real
architecture and cost); the demo model has its bundled weights. Meta's predictors always
run in fp32 (as Meta runs on CPU); ours run in the precision named, through
``SAM_BLOCK_PRECISION`` (the image block) or the ``precision`` argument (the tracker).

Peak FLOP/s assumed by ``encoder`` (printed with the figures): cores × clock × FLOP per
cycle. FLOP per cycle per core: AVX-512 FMA in fp32 = 16 lanes × 2 (multiply + add) × 1
instruction per cycle = 32 (Zen 4 executes a 512-bit FMA as two 256-bit halves on its two
FMA pipes, so one per cycle; Intel cores with two 512-bit FMA units reach 64);
AVX512_BF16 ``VDPBF16PS`` = 32 bf16 products + 32 additions into 16 fp32 lanes, one per
cycle = 64. The clock is ``cpu MHz`` of ``/proc/cpuinfo`` unless ``--clock-ghz`` is given
(boost clocks run above it, so the percentages are upper bounds).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: FLOP per cycle per core (see the module docstring)
FLOP_PER_CYCLE = {"fp32": 32, "bf16": 64}
GOALS = {"image": 1.8, "encoder": 1.7, "video": 1.8}


def cpu_clock_ghz() -> float:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    return float("nan")


def header(args) -> None:
    import torch

    from sam_block.runtime.precision import cpu_bf16_support

    load = os.getloadavg()
    print(f"command: python benchmarks/bf16.py {shlex.join(sys.argv[1:])}")
    print(
        f"nproc {os.cpu_count()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} threads, native bf16: {', '.join(cpu_bf16_support()) or 'none'}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def goal(label: str, ratio: float, target: float) -> None:
    print(f"- {label}: **{ratio:.2f}x** — goal >= {target}x — {'MET' if ratio >= target else 'MISSED'}")


def interleaved(sides: Dict[str, Callable[[int], float]], repeats: int) -> Dict[str, List[float]]:
    """Seconds of each side per repeat, sides in turn within each repeat."""
    seconds: Dict[str, List[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        for name, run in sides.items():
            gc.collect()
            seconds[name].append(run(repeat))
            print(f"  repeat {repeat + 1}: {name} {seconds[name][-1]:.3f} s", flush=True)
    return seconds


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the script exits."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def random_checkpoint(version: str = "hiera_tiny") -> Path:
    from sam_block.runtime.variants import get_variant
    from tests.support import build_random_checkpoint

    directory = scratch_dir("sam_block_bf16_")
    return build_random_checkpoint(directory / get_variant(version).filename, version=version)


def our_model(version: str, checkpoint: Path):
    import torch

    from sam_block.runtime.models import build_model
    from sam_block.runtime.variants import get_variant

    model = build_model(get_variant(version))
    model.load_state_dict(torch.load(str(checkpoint), map_location="cpu", weights_only=True)["model"])
    return model.eval()


# ----------------------------------------------------------------------------- encoder


def part_encoder(args) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sam_block.runtime.precision import autocast, encoder_input, resolve_precision

    model = our_model("hiera_tiny", random_checkpoint())
    torch.manual_seed(0)
    x = torch.randn(1, 3, 1024, 1024)
    precisions = {name: resolve_precision(torch.device("cpu"), name) for name in ("fp32", "bf16")}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.image_encoder(x)
    gflop = counter.get_total_flops() / 1e9

    def timed(precision):
        x_in = encoder_input(x, precision)  # as the runtime feeds it: channels-last in bf16

        def run(_repeat: int) -> float:
            with torch.inference_mode(), autocast(precision):
                start = time.perf_counter()
                model.image_encoder(x_in)
                return time.perf_counter() - start

        return run

    sides = {name: timed(precision) for name, precision in precisions.items()}
    variants = encoder_variants(model.image_encoder, x) if args.variants else {}
    for run in [*sides.values(), *(run for run, _ in variants.values())]:  # warm-up: oneDNN primitives, allocator
        run(0)
    seconds = interleaved({**sides, **{name: run for name, (run, _) in variants.items()}}, args.repeats)
    clock = args.clock_ghz or cpu_clock_ghz()
    cores = os.cpu_count() or 1
    print(f"\nhiera_tiny image encoder (trunk + neck), 1 × 3 × 1024 × 1024: {gflop:.1f} GFLOP (FlopCounterMode)")
    print(f"peak assumed: {cores} cores × {clock:.2f} GHz × FLOP/cycle (fp32 AVX-512 FMA 32, AVX512_BF16 64)\n")
    print("| precision | median s | min s | GFLOP/s (median) | peak GFLOP/s | % of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("fp32", "bf16"):
        values = seconds[name]
        peak = cores * clock * FLOP_PER_CYCLE[name]
        rate = gflop / statistics.median(values)
        print(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {rate:.1f} | {peak:.0f} | "
            f"{100 * rate / peak:.0f} % |"
        )
    print()
    goal("encoder bf16 vs our fp32", statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"]), 1.7)
    if variants:
        with torch.inference_mode():
            reference = model.image_encoder(x)["vision_features"].float().flatten()
            print("\n| variant | median s | vs fp32 | vs autocast bf16 | cosine of features to fp32 |")
            print("|---|---:|---:|---:|---:|")
            for name in ("fp32", "bf16", *variants):
                median_s = statistics.median(seconds[name])
                if name in variants:
                    features = variants[name][1]()
                else:
                    with autocast(precisions[name]):
                        features = model.image_encoder(encoder_input(x, precisions[name]))
                cosine = torch.nn.functional.cosine_similarity(
                    features["vision_features"].float().flatten(), reference, dim=0
                ).item()
                label = {"fp32": "fp32 (ours)", "bf16": "autocast bf16, channels-last input (ours)"}.get(name, name)
                print(
                    f"| {label} | {median_s:.3f} | {statistics.median(seconds['fp32']) / median_s:.2f}x | "
                    f"{statistics.median(seconds['bf16']) / median_s:.2f}x | {cosine:.5f} |"
                )


def encoder_variants(encoder, x) -> Dict[str, tuple]:
    """Cheaper forms of the encoder tried against autocast bf16: name -> (timed run, features)."""
    import copy

    import torch

    bf16_weights = copy.deepcopy(encoder).to(torch.bfloat16)
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder), {torch.nn.Linear}, dtype=torch.qint8)
    channels_last = copy.deepcopy(encoder).to(memory_format=torch.channels_last)
    x_bf16, x_last = x.to(torch.bfloat16), x.contiguous(memory_format=torch.channels_last)

    def autocast_nchw():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder(x)

    def autocast_all_last():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return channels_last(x_last)

    forwards = {
        "autocast bf16, NCHW input (before channels-last)": autocast_nchw,
        "autocast bf16, channels-last input and conv weights": autocast_all_last,
        "bf16 weights (no autocast)": lambda: bf16_weights(x_bf16),
        "int8 dynamic quantization of Linear, fp32 elsewhere": lambda: int8(x),
    }

    def timed(forward):
        def run(_repeat: int) -> float:
            with torch.inference_mode():
                start = time.perf_counter()
                forward()
                return time.perf_counter() - start

        def features():
            with torch.inference_mode():
                return forward()

        return run, features

    return {name: timed(forward) for name, forward in forwards.items()}


# ----------------------------------------------------------------------------- image


def part_image(args) -> None:
    from contenders import child_environment, setup_engine, setup_raw
    from harness import make_boxes, make_image

    checkpoint = random_checkpoint()
    os.environ.update(child_environment(checkpoint.parent))
    from sam_block.runtime.cache import EMBEDDINGS

    height, width = (int(v) for v in args.size.split("x"))
    boxes = make_boxes(args.boxes, height, width)
    images = [make_image(height, width, seed=seed) for seed in range(args.repeats)]
    raw, engine = setup_raw(checkpoint), setup_engine(None)

    def meta(repeat: int) -> float:
        start = time.perf_counter()
        raw(images[repeat], boxes)
        return time.perf_counter() - start

    def block(precision: str):
        def run(repeat: int) -> float:
            os.environ["SAM_BLOCK_PRECISION"] = precision  # read by the predictor the step builds per run
            EMBEDDINGS.clear()  # cold: every run encodes its image
            start = time.perf_counter()
            engine(images[repeat], boxes)
            return time.perf_counter() - start

        return run

    sides = {"Meta SAM2ImagePredictor fp32": meta, "our block bf16": block("bf16"), "our block fp32": block("fp32")}
    warm_image, warm_boxes = make_image(240, 320, seed=999), make_boxes(2, 240, 320)
    raw(warm_image, warm_boxes)
    for precision in ("bf16", "fp32"):
        os.environ["SAM_BLOCK_PRECISION"] = precision
        engine(warm_image, warm_boxes)
    seconds = interleaved(sides, args.repeats)
    print(f"\nhiera_tiny (random weights), {height} × {width} image, {args.boxes} boxes, cold embedding cache\n")
    print("| side | median s | min s | runs |")
    print("|---|---:|---:|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {len(values)} |")
    meta_s = statistics.median(seconds["Meta SAM2ImagePredictor fp32"])
    print()
    goal("Meta fp32 / our block bf16", meta_s / statistics.median(seconds["our block bf16"]), 1.8)
    print(f"- Meta fp32 / our block fp32: {meta_s / statistics.median(seconds['our block fp32']):.2f}x (reference)")


# ----------------------------------------------------------------------------- video


def track_ours(model, frames_bgr, boxes, precision: str):
    """Our tracker, frames streamed as the video step does: seconds per frame, masks {object: {frame: mask}}."""
    from sam_block.runtime.sessions import BoxPrompt, TrackerSettings, VideoSession
    from sam_block.runtime.tracker import VideoTracker

    session = VideoSession(VideoTracker(model, precision=precision), TrackerSettings(prompt_mode="first_frame"))
    times, masks = [], {}
    for f, bgr in enumerate(frames_bgr):
        prompts = [BoxPrompt(np.array(box, float), {"k": k}) for k, box in enumerate(boxes[0])] if f == 0 else None
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        start = time.perf_counter()
        result = session.step(rgb, prompts, f)
        times.append(time.perf_counter() - start)
        dense = result.masks.to_dense()
        for row, track_id in enumerate(result.track_ids):
            masks.setdefault(int(track_id) - 1, {})[f] = dense[row]
    return np.array(times), masks


def mean_iou(a: dict, b: dict) -> float:
    from tests.video_support import mask_iou

    values = [mask_iou(a[k][f], b[k][f]) for k in a for f in a[k] if k in b and f in b[k]]
    return float(np.mean(values)) if values else float("nan")


def part_video(args) -> None:
    from video_tracking import meta as meta_video  # Meta's propagate_in_video, timed per frame

    from sam_block.runtime.variants import get_variant
    from tests.video_support import build_meta_video_predictor, make_clip, write_jpegs

    checkpoint = random_checkpoint()
    model = our_model("hiera_tiny", checkpoint)
    frames, boxes = make_clip(frames=args.frames, height=args.height, width=args.width, objects=args.objects, seed=1)
    folder = scratch_dir("sam_block_bf16_clip_")
    decoded = write_jpegs(frames, folder)
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    per_frame, masks = {}, {}
    for side in sides:
        print(f"  running {side} ...", flush=True)
        if side == "meta":
            predictor = build_meta_video_predictor(get_variant("hiera_tiny").config, checkpoint)
            times, _, masks[side], _ = meta_video(predictor, folder, boxes, args.frames)
            del predictor
        else:
            times, masks[side] = track_ours(model, decoded, boxes, side)
        per_frame[side] = times
        print(f"  {side}: per frame {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
        gc.collect()
    names = {"meta": "Meta SAM2VideoPredictor fp32", "bf16": "our tracker bf16", "fp32": "our tracker fp32"}
    print(
        f"\nhiera_tiny (random weights), {args.height} × {args.width}, {args.objects} objects prompted by box on "
        f"frame 0, {args.frames} frames; frames 1..{args.frames - 1} (memory attention + memory encoder) timed\n"
    )
    print("| side | s/frame, frames 1.. | s/frame/object | frame 0 s |")
    print("|---|---:|---:|---:|")
    for side, times in per_frame.items():
        steady = float(np.mean(times[1:]))
        print(f"| {names[side]} | {steady:.2f} | {steady / args.objects:.2f} | {times[0]:.2f} |")
    print("(Meta's frame 0: propagate_in_video's preflight; its frame-0 encoding ran in add_new_points_or_box)")
    if "meta" in per_frame:
        meta_s = float(np.mean(per_frame["meta"][1:]))
        for side in ("bf16", "fp32"):
            if side in per_frame:
                ratio = meta_s / float(np.mean(per_frame[side][1:]))
                if side == "bf16":
                    print()
                    goal("Meta fp32 / our tracker bf16, s/frame", ratio, 1.8)
                else:
                    print(f"- Meta fp32 / our tracker fp32: {ratio:.2f}x (reference)")
                print(f"  mean mask IoU {side} vs Meta: {mean_iou(masks[side], masks['meta']):.4f}")


def part_demo_video(args) -> None:
    import torch

    from sam_block.runtime.models import MODELS
    from tests.video_support import make_clip

    model = MODELS.get("demo", torch.device("cpu"))
    frames, boxes = make_clip(frames=args.frames, height=args.height, width=args.width, objects=args.objects, seed=1)
    results: Dict[str, list] = {"fp32": [], "bf16": []}
    masks = {}
    track_ours(model, frames[:3], boxes, "bf16")  # warm-up
    track_ours(model, frames[:3], boxes, "fp32")
    for repeat in range(args.repeats):
        for precision in results:
            times, masks[precision] = track_ours(model, frames, boxes, precision)
            results[precision].append(times)
            print(f"  repeat {repeat + 1}: {precision} {1e3 * times.mean():.1f} ms/frame", flush=True)
    print(
        f"\ndemo model (bundled weights), {args.height} × {args.width}, {args.objects} objects prompted by box on "
        f"frame 0, {args.frames} frames, {args.repeats} runs each (interleaved)\n"
    )
    print("| precision | ms/frame (median of runs' means) | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for precision, runs in results.items():
        means = [1e3 * t.mean() for t in runs]
        every = np.concatenate(runs) * 1e3
        print(
            f"| {precision} | {statistics.median(means):.1f} | {np.percentile(every, 50):.1f} | "
            f"{np.percentile(every, 99):.1f} |"
        )
    fp32 = statistics.median([t.mean() for t in results["fp32"]])
    bf16 = statistics.median([t.mean() for t in results["bf16"]])
    print(
        f"\n- fp32 / bf16: **{fp32 / bf16:.2f}x**; mean mask IoU bf16 vs fp32: {mean_iou(masks['bf16'], masks['fp32']):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("encoder", "image", "video", "demo-video"))
    parser.add_argument("--repeats", type=int, default=None, help="encoder 3, image 2, demo-video 2")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--clock-ghz", type=float, default=None, help="encoder: the clock of the peak estimate")
    parser.add_argument(
        "--variants", action="store_true", help="encoder: also bf16 weights, int8 dynamic quantization, channels_last"
    )
    parser.add_argument("--size", default="1080x1920", help="image: HxW")
    parser.add_argument("--boxes", type=int, default=50, help="image: boxes")
    parser.add_argument("--frames", type=int, default=None, help="video 4, demo-video 60")
    parser.add_argument("--objects", type=int, default=None, help="video 2, demo-video 5")
    parser.add_argument("--height", type=int, default=None, help="video 480, demo-video 240")
    parser.add_argument("--width", type=int, default=None, help="video 640, demo-video 320")
    parser.add_argument("--sides", default="meta,bf16", help="video: any of meta,bf16,fp32, run in this order")
    args = parser.parse_args()
    video = args.part == "video"
    args.repeats = args.repeats or {"encoder": 3, "image": 2, "demo-video": 2}.get(args.part, 1)
    args.frames = args.frames or (4 if video else 60)
    args.objects = args.objects or (2 if video else 5)
    args.height = args.height or (480 if video else 240)
    args.width = args.width or (640 if video else 320)

    import torch

    torch.set_num_threads(args.threads)
    header(args)
    {"encoder": part_encoder, "image": part_image, "video": part_video, "demo-video": part_demo_video}[args.part](args)


if __name__ == "__main__":
    main()
