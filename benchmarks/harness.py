"""The measurement harness the benchmark scripts share: one configuration per fresh
subprocess, its peak RSS growth and network attempts, the inputs, and the report helpers.

Side-effect free to import; inputs and the checkpoint come from ``tests/support.py`` (the
tests' own builders), never from ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULT_PREFIX = "BENCH_RESULT "
CLASS_NAMES = ("person", "car", "dog", "bottle", "chair")


# ----------------------------------------------------------------------------- inputs


def make_image(height: int, width: int, seed: int):
    """A BGR test scene (the tests' generator) with a per-seed background."""
    from tests.support import make_scene

    return make_scene(height, width, seed=seed)


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


def prepare_checkpoint(work_dir: Path) -> Path:
    """The tests' random-weight hiera_tiny checkpoint (official ``{"model": ...}`` format), built once."""
    from tests.support import build_random_checkpoint

    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / "sam2.1_hiera_tiny.pt"
    if not checkpoint.exists():
        partial = checkpoint.with_suffix(".partial")
        build_random_checkpoint(partial)
        partial.replace(checkpoint)
    return checkpoint


def use_all_cores() -> None:
    """torch's intra-op threads = ``os.cpu_count()``, as the tests run."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))


# ------------------------------------------------------------ inside one configuration


def status_kib(field: str) -> Optional[int]:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def record_network_attempts() -> List[str]:
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


def run_in_subprocess(
    script: Path, arguments: Sequence[str], cwd: Path, env: dict, timeout: Optional[float], describe: dict
) -> dict:
    """Run ``script ARGUMENTS`` in a fresh interpreter; its ``RESULT_PREFIX`` line, or an error dict."""
    command = [sys.executable, str(script), *arguments]
    try:
        completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**describe, "error": f"timed out after {timeout} s"}
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-15:]
    return {**describe, "error": f"exit {completed.returncode}: " + " | ".join(tail)}


def emit(result: dict) -> None:
    """What a configuration's subprocess prints for :func:`run_in_subprocess`."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def median(result: Optional[dict]) -> Optional[float]:
    if not result or not result.get("seconds"):
        return None
    return statistics.median(result["seconds"])


def fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def check(label: str, value: Optional[float], ok: Callable[[float], bool], target: str, needs: str) -> None:
    """One target line: the measured value, the target, PASS/FAIL (or what it needs)."""
    if value is None:
        print(f"- {label}: not measured (needs {needs}) — target {target}")
    else:
        print(f"- {label}: **{value:.3f}** — target {target} — {'PASS' if ok(value) else 'FAIL'}")


__all__: List[str] = [
    "REPO",
    "RESULT_PREFIX",
    "check",
    "emit",
    "fmt",
    "make_boxes",
    "make_image",
    "median",
    "mem_available_mib",
    "prepare_checkpoint",
    "record_network_attempts",
    "reset_peak_rss",
    "run_in_subprocess",
    "status_kib",
    "use_all_cores",
]
