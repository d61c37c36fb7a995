"""Box prompts: our block vs Meta's raw predictor vs the anchor block (issue 4).

Run by hand (not a test):
    python benchmarks/block_vs_anchor.py
    python benchmarks/block_vs_anchor.py --sizes 1080p --boxes 1,50 --repeats 3
    python benchmarks/block_vs_anchor.py --sizes 1080p --boxes 1 --repeats 1   # smoke run

Everything runs on the CPU, on the tests' tiny-architecture ``hiera_tiny`` checkpoint
with random weights (built once into ``--work-dir``), for every image size × box count:

raw
    Meta's ``SAM2ImagePredictor`` on the same checkpoint: ``set_image`` + one
    ``predict(box=<all boxes>, multimask_output=True)``: the model's own time.
anchor
    ``roboflow_core/segment_anything@v1`` (``roboflow_workflows``'s
    ``SegmentAnything2BlockV1``), its own ``run`` in ``StepExecutionMode.LOCAL``, through
    the real engine and a real ``ModelManager`` / ``RoboflowModelRegistry``. Its model
    is read from a local ``inference_models`` package built from the same weights; no
    network and no mock (see ``prepare_anchor_package``).
block_cold
    our ``sam_block/segment_anything_2@v1`` (``example_workflows/a_boxes_input.json``)
    through the real engine, the embedding cache cleared before every run.
block_warm
    the same, run again on an image whose embedding is already cached.

Both blocks get the boxes as ``sv.Detections`` (class names, class ids, detection
ids) in a ``WorkflowBatchInput``; every run is timed around ``ExecutionEngine.run``.

Each configuration runs in a fresh subprocess (the script re-invokes itself with
``--one CONFIG``), so peaks are separable. In it: imports, model load and one
warm-up run on a small image, then the baseline ``VmRSS`` is read and the peak
(``VmHWM``) reset through ``/proc/self/clear_refs``; the reported growth is the peak
during the timed runs minus that baseline. Cold configurations use a different image
for every repeat (the anchor keeps its own embedding cache keyed by image content).

Meta's predictor and the anchor both upsample N×3 float32 masks to full resolution
(300 boxes on 4K: ~30 GB); a configuration whose estimate does not fit in
``MemAvailable`` is skipped with a note unless ``--force`` is given.

Prints a markdown table (seconds: median and min over ``--repeats``; peak RSS growth
in MiB), the issue's target ratios, ``os.cpu_count()``, torch threads and the exact
command line.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}
CONFIGS = ("raw", "anchor", "block_cold", "block_warm")
ANCHOR_STEP_TYPE = "roboflow_core/segment_anything@v1"
CLASS_NAMES = ("person", "car", "dog", "bottle", "chair")
RESULT_PREFIX = "BENCH_RESULT "
WARMUP_HW = (240, 320)
#: SAM 2.1 state-dict entries the SAM 2.0 architecture lacks. They serve video memory
#: only (object pointers), never the image encoder, prompt encoder or mask decoder.
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")

# Issue 4 targets, checked on one run of this script.
TARGET_RAW_RATIO = 1.10  # block_cold <= 1.10 x raw, 1080p, 50 boxes
TARGET_ANCHOR_SPEEDUP = 1.5  # anchor >= 1.5 x block_cold, 1080p, 50 boxes
TARGET_WARM_FRACTION = 0.05  # block_warm <= 5 % of block_cold, 1080p, 1 box
TARGET_RSS_MIB = 1.5 * 1024  # block peak RSS growth <= 1.5 GiB, 4K, 300 boxes


# ----------------------------------------------------------------------------- inputs


def make_boxes(n: int, height: int, width: int):
    """`n` deterministic boxes spread on a grid over the image, sides 5-15 % of the image's.

    Returns ``sv.Detections`` with class ids, class names and detection ids, like a detector's.
    """
    import numpy as np
    import supervision as sv

    rng = np.random.default_rng(1234)
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = max(1, math.ceil(n / cols))
    index = np.arange(n)
    cx = (index % cols + 0.5) / cols * width
    cy = (index // cols + 0.5) / rows * height
    bw = rng.uniform(0.05, 0.15, n) * width
    bh = rng.uniform(0.05, 0.15, n) * height
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    xyxy = np.clip(xyxy, 0, [width - 1, height - 1, width - 1, height - 1]).round()
    class_id = index % len(CLASS_NAMES)
    return sv.Detections(
        xyxy=xyxy.astype(float),
        class_id=class_id,
        confidence=np.full(n, 0.9),
        data={
            "class_name": np.array([CLASS_NAMES[i] for i in class_id]),
            "detection_id": np.array([f"box-{i}" for i in index]),
        },
    )


def tests_conftest():
    """``tests.conftest`` (checkpoint builder, scene generator), minus its import side effect.

    Importing it points ``SAM_BLOCK_CHECKPOINT_DIR`` at a fresh empty temp dir (and sets
    torch's thread count to ``os.cpu_count()``); the env var is set again by the caller,
    the empty dir is removed here.
    """
    from tests import conftest

    try:
        conftest._CHECKPOINT_DIR.rmdir()
    except OSError:
        pass
    return conftest


def make_image(height: int, width: int, seed: int):
    """A BGR test scene (the tests' generator) with a per-seed background."""
    return tests_conftest().make_scene(height, width, seed=seed)


# ------------------------------------------------------------------- checkpoint, anchor


def prepare_checkpoint(work_dir: Path) -> Path:
    """The tests' random-weight hiera_tiny checkpoint (official ``{"model": ...}`` format)."""
    build_random_checkpoint = tests_conftest().build_random_checkpoint
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / "sam2.1_hiera_tiny.pt"
    if not checkpoint.exists():
        partial = checkpoint.with_suffix(".partial")
        build_random_checkpoint(partial)
        partial.replace(checkpoint)
    return checkpoint


def prepare_anchor_package(work_dir: Path, checkpoint: Path) -> Path:
    """Lay out a local ``inference_models`` package that the anchor loads as ``sam2/hiera_tiny``.

    The anchor asks its model manager for model id ``sam2/<version>``. With
    ``USE_INFERENCE_MODELS=True`` and ``ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES=True``
    a model id that is an existing directory is a local package: ``inference``'s
    registry reads its task and architecture from ``model_config.json``
    (``_get_local_model_type``) and maps them to the stock ``InferenceModelsSAM2Adapter``,
    whose ``AutoModel.from_pretrained`` loads the directory with ``SAM2Torch.from_pretrained``
    (``model.pt`` + ``sam_configuration.json``). So the anchor subprocess runs with the
    returned directory as its working directory, where ``sam2/hiera_tiny`` is this package.

    ``SAM2Torch`` builds ``f"{version}.yaml"`` through Meta's hydra search path, which
    holds the SAM 2.0 configs only (``sam2_hiera_t.yaml``; ``sam2.1_hiera_t.yaml`` is not
    found). As in Roboflow's own ``hiera_tiny`` package the version is ``sam2_hiera_t``, and
    ``model.pt`` is our SAM 2.1 checkpoint without the three video-only tensors 2.0 lacks;
    the two configs build identical image encoders, prompt encoders and mask decoders.
    Returns the directory to run the anchor in.
    """
    import torch

    root = work_dir / "anchor_package"
    package = root / "sam2" / "hiera_tiny"
    package.mkdir(parents=True, exist_ok=True)
    weights = package / "model.pt"
    if not weights.exists() or weights.stat().st_mtime < checkpoint.stat().st_mtime:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        state = {key: value for key, value in state.items() if not key.startswith(SAM21_ONLY_KEYS)}
        partial = weights.with_suffix(".partial")
        torch.save({"model": state}, partial)
        partial.replace(weights)
    (package / "sam_configuration.json").write_text(json.dumps({"version": "sam2_hiera_t"}))
    (package / "model_config.json").write_text(
        json.dumps(
            {
                "model_architecture": "sam2",
                "task_type": "interactive-instance-segmentation",
                "backend_type": "torch",
            }
        )
    )
    return root


def child_environment(work_dir: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        WORKFLOWS_PLUGINS="sam_block",
        SAM_BLOCK_CHECKPOINT_DIR=str(work_dir),
        SAM_BLOCK_OFFLINE="1",
        SAM_BLOCK_DEVICE="cpu",
        CUDA_VISIBLE_DEVICES="",
        DISABLE_VERSION_CHECK="True",  # `import inference` otherwise asks api.github.com for releases
        DEVICE="cpu",  # inference
        DEFAULT_DEVICE="cpu",  # inference_models
        USE_INFERENCE_MODELS="True",
        ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES="True",
    )
    return env


# ---------------------------------------------------------------- one configuration


def _status_kib(field: str) -> Optional[int]:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _record_network_attempts() -> List[str]:
    """Record every outbound socket connection / name lookup this process attempts."""
    import socket

    attempts: List[str] = []

    def hook(event: str, args) -> None:
        if event == "socket.getaddrinfo":
            attempts.append(f"getaddrinfo {args[0]}:{args[1]}")
        elif event == "socket.connect" and getattr(args[0], "family", None) != socket.AF_UNIX:
            attempts.append(f"connect {args[1]}")

    sys.addaudithook(hook)
    return attempts


def _workflow(step_type: Optional[str] = None) -> dict:
    definition = json.loads((REPO / "example_workflows" / "a_boxes_input.json").read_text())
    if step_type is not None:
        definition["steps"][0]["type"] = step_type
    return definition


def _setup_raw(checkpoint: Path):
    import numpy as np
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    config = tests_conftest().TINY_CONFIG
    predictor = SAM2ImagePredictor(build_sam2(config, str(checkpoint), device="cpu"))

    def run(image, boxes):
        predictor.set_image(np.ascontiguousarray(image[:, :, ::-1]))  # Meta takes RGB
        return predictor.predict(box=boxes.xyxy, multimask_output=True)

    return run


def _setup_engine(step_type: Optional[str], model_manager=None):
    from inference.core.workflows.execution_engine.core import ExecutionEngine

    init_parameters = {}
    if model_manager is not None:
        from roboflow_workflows.core_steps.common.entities import StepExecutionMode

        init_parameters = {
            "workflows_core.model_manager": model_manager,
            "workflows_core.api_key": None,
            "workflows_core.step_execution_mode": StepExecutionMode.LOCAL,
        }
    engine = ExecutionEngine.init(workflow_definition=_workflow(step_type), init_parameters=init_parameters)
    return lambda image, boxes: engine.run(runtime_parameters={"image": image, "boxes": [boxes]})


def _setup_anchor():
    # A real ModelManager over inference's real registry: "sam2/hiera_tiny" resolves to
    # the local package in the working directory (see prepare_anchor_package).
    from inference.core.managers.base import ModelManager
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    if not (Path("sam2") / "hiera_tiny" / "model.pt").is_file():
        raise SystemExit("anchor: run from the directory returned by prepare_anchor_package")
    manager = ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES))
    return _setup_engine(ANCHOR_STEP_TYPE, manager)


def run_one(config: str, size: str, n_boxes: int, repeats: int, checkpoint: Path) -> dict:
    """Measure one configuration in this (fresh) process; returns a JSON-able dict."""
    network = _record_network_attempts()
    import torch

    tests_conftest()  # torch threads = os.cpu_count(), as in the tests
    os.environ["SAM_BLOCK_CHECKPOINT_DIR"] = str(checkpoint.parent)  # after conftest, which sets its own

    height, width = SIZES[size]
    boxes = make_boxes(n_boxes, height, width)
    clear_cache: Callable[[], None] = lambda: None
    cache = None
    if config == "raw":
        run = _setup_raw(checkpoint)
    elif config == "anchor":
        run = _setup_anchor()
    else:
        from sam_block.runtime.cache import EMBEDDINGS as cache

        run = _setup_engine(None)
        clear_cache = cache.clear

    # Model load and lazy initialisation happen here, outside the baseline.
    run(make_image(*WARMUP_HW, seed=999), make_boxes(1, *WARMUP_HW))
    clear_cache()
    if config == "block_warm":
        images = [make_image(height, width, seed=0)] * repeats
        run(images[0], boxes)  # encodes and caches the embedding: the "first run"
    else:
        images = [make_image(height, width, seed=seed) for seed in range(repeats)]
    gc.collect()
    baseline_kib = _status_kib("VmRSS")
    peak_is_reset = _reset_peak_rss()

    def cache_counters():
        return (cache.hits, cache.misses) if cache is not None else (0, 0)

    seconds, hits, misses = [], 0, 0
    for image in images:
        if config == "block_cold":
            clear_cache()  # also zeroes its counters
        before = cache_counters()
        start = time.perf_counter()
        result = run(image, boxes)
        seconds.append(time.perf_counter() - start)
        after = cache_counters()
        hits, misses = hits + after[0] - before[0], misses + after[1] - before[1]
        del result
    peak_kib = _status_kib("VmHWM")
    if not peak_is_reset:
        import resource

        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # lifetime peak, KiB
    return {
        "config": config,
        "size": size,
        "boxes": n_boxes,
        "seconds": seconds,
        "baseline_mib": baseline_kib / 1024,
        "peak_growth_mib": (peak_kib - baseline_kib) / 1024,
        "peak_is_lifetime": not peak_is_reset,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "network_attempts": network,
        # our embedding cache during the timed runs (block configs only)
        "cache_hits": hits if cache is not None else None,
        "cache_misses": misses if cache is not None else None,
    }


# ----------------------------------------------------------------------- orchestration


def mem_available_mib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def full_resolution_masks_mib(config: str, size: str, n_boxes: int) -> float:
    """Rough peak of the N×3×H×W full-resolution masks Meta's predictor and the anchor build."""
    height, width = SIZES[size]
    bytes_per_pixel = {"raw": 4 + 1, "anchor": 4 + 4}.get(config, 0)  # float32 logits + bool / copy
    return n_boxes * 3 * height * width * bytes_per_pixel / (1 << 20)


def run_in_subprocess(config: str, size: str, n_boxes: int, args, checkpoint: Path, anchor_root: Path) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        config,
        "--sizes",
        size,
        "--boxes",
        str(n_boxes),
        "--repeats",
        str(args.repeats),
        "--work-dir",
        str(args.work_dir),
    ]
    cwd = anchor_root if config == "anchor" else REPO
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=child_environment(args.work_dir),
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"config": config, "size": size, "boxes": n_boxes, "error": f"timed out after {args.timeout} s"}
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-15:]
    return {"config": config, "size": size, "boxes": n_boxes, "error": f"exit {completed.returncode}: " + " | ".join(tail)}


def _median(result: Optional[dict]) -> Optional[float]:
    if not result or not result.get("seconds"):
        return None
    return statistics.median(result["seconds"])


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results: List[dict], args) -> None:
    print("| config | image | boxes | median s | min s | runs | peak RSS growth MiB | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        note = r.get("error") or r.get("skipped") or ""
        if r.get("peak_is_lifetime"):
            note = (note + "; " if note else "") + "lifetime peak (clear_refs unavailable)"
        if r.get("config") == "block_warm" and r.get("seconds") and not r.get("cache_hits"):
            note = (note + "; " if note else "") + f"NO EMBEDDING CACHE HIT (misses: {r.get('cache_misses')})"
        if r.get("network_attempts"):
            note = (note + "; " if note else "") + f"NETWORK ATTEMPTS: {r['network_attempts'][:3]}"
        seconds = r.get("seconds") or []
        growth = r.get("peak_growth_mib")
        print(
            f"| {r['config']} | {r['size']} | {r['boxes']} | {_fmt(_median(r))} | "
            f"{_fmt(min(seconds) if seconds else None)} | {len(seconds)} | {_fmt(growth, 0)} | {note} |"
        )

    by_key = {(r["config"], r["size"], r["boxes"]): r for r in results}

    def median_of(config: str, size: str, boxes: int) -> Optional[float]:
        return _median(by_key.get((config, size, boxes)))

    def check(label: str, value: Optional[float], ok: Callable[[float], bool], target: str, needs: str) -> None:
        if value is None:
            print(f"- {label}: not measured (needs {needs}) — target {target}")
        else:
            print(f"- {label}: **{value:.3f}** — target {target} — {'PASS' if ok(value) else 'FAIL'}")

    print("\nTargets (issue 4; CPU, hiera_tiny, ratios from this run):\n")
    cold, raw, anchor = (median_of(c, "1080p", 50) for c in ("block_cold", "raw", "anchor"))
    check(
        "block_cold / raw, 1080p, 50 boxes",
        cold / raw if cold and raw else None,
        lambda v: v <= TARGET_RAW_RATIO,
        f"<= {TARGET_RAW_RATIO}",
        "--sizes 1080p --boxes 50, raw and block_cold",
    )
    check(
        "anchor / block_cold (speed-up), 1080p, 50 boxes",
        anchor / cold if cold and anchor else None,
        lambda v: v >= TARGET_ANCHOR_SPEEDUP,
        f">= {TARGET_ANCHOR_SPEEDUP}",
        "--sizes 1080p --boxes 50, anchor and block_cold",
    )
    first, warm = median_of("block_cold", "1080p", 1), median_of("block_warm", "1080p", 1)
    check(
        "block_warm / block_cold, 1080p, 1 box",
        warm / first if first and warm else None,
        lambda v: v <= TARGET_WARM_FRACTION,
        f"<= {TARGET_WARM_FRACTION}",
        "--sizes 1080p --boxes 1, block_cold and block_warm",
    )
    big = by_key.get(("block_cold", "4k", 300)) or {}
    check(
        "block_cold peak RSS growth MiB, 4K, 300 boxes",
        big.get("peak_growth_mib"),
        lambda v: v <= TARGET_RSS_MIB,
        f"<= {TARGET_RSS_MIB:.0f} MiB (1.5 GiB)",
        "--sizes 4k --boxes 300, block_cold",
    )

    threads = sorted({(r["torch_threads"], r["torch_interop_threads"]) for r in results if "torch_threads" in r})
    print(f"\nos.cpu_count(): {os.cpu_count()}; torch threads (intra-op, inter-op) in the subprocesses: {threads}")
    print(f"repeats: {args.repeats}; seconds are wall time around one run (engine.run / set_image+predict)")
    print("command: " + shlex.join([sys.executable, *sys.argv]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1080p,4k", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--boxes", default="1,10,50,300", help="comma-separated box counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "sam_block_bench", help="checkpoint and anchor package"
    )
    parser.add_argument("--force", action="store_true", help="run configurations whose mask estimate exceeds MemAvailable")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration subprocess")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: measure one configuration
    args = parser.parse_args(argv)
    args.sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    args.boxes = [int(b) for b in args.boxes.split(",") if b.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in args.sizes:
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    for name in args.configs:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {list(CONFIGS)}")
    if args.repeats < 1 or any(b < 1 for b in args.boxes):
        parser.error("--repeats and --boxes must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    checkpoint = args.work_dir / "sam2.1_hiera_tiny.pt"
    if args.one:
        result = run_one(args.one, args.sizes[0], args.boxes[0], args.repeats, checkpoint)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    checkpoint = prepare_checkpoint(args.work_dir)
    anchor_root = prepare_anchor_package(args.work_dir, checkpoint)
    results = []
    for size in args.sizes:
        for n_boxes in args.boxes:
            for config in args.configs:
                available = mem_available_mib()
                needed = full_resolution_masks_mib(config, size, n_boxes)
                if available is not None and needed > 0.8 * available and not args.force:
                    result = {
                        "config": config,
                        "size": size,
                        "boxes": n_boxes,
                        "skipped": f"skipped: its N×3×H×W full-res masks need ~{needed / 1024:.1f} GiB, "
                        f"MemAvailable {available / 1024:.1f} GiB (--force runs it)",
                    }
                else:
                    result = run_in_subprocess(config, size, n_boxes, args, checkpoint, anchor_root)
                print(f"[{config} {size} {n_boxes} boxes] " + json.dumps({k: v for k, v in result.items() if k != "network_attempts"}), file=sys.stderr, flush=True)
                results.append(result)
    print()
    report(results, args)


if __name__ == "__main__":
    main()
