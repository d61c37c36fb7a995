"""Segment whole datasets on a Ray cluster: `sam-block run ... --ray [ADDRESS] --workers N`.

Ray Data does the scheduling: the images still to do become a dataset, ``map_batches``
hands its batches to a pool of N actors, and each actor holds one compiled
``ExecutionEngine`` (the model is loaded once per actor) and runs every image through
the same :func:`sam_block.cli.run.run_frames` as the single-process ``sam-block run``. An
actor whose process dies is restarted by Ray and its batches are retried
(Ray Data's defaults for actor pools: ``max_restarts=-1``, ``max_task_retries=-1``).

The actors send the files of each image back; this process (the driver) writes them
into ``--out``, each through a temporary file and a rename, then a small record of the
image in ``--out/.sam-block-ray/`` (written last, also atomically): an image counts as
done only when its record and every file it lists exist. A re-run with the same
``--out`` skips the images already done; ``coco.json`` is rebuilt at the end from the
records, in input order, so every image and annotation is in it exactly once and it is
the file the single-process run writes. An image that cannot be read, or on which the
workflow fails, is a line of ``failed.jsonl`` with the reason, as in the single-process run;
the job goes on. An error that would fail every image alike (a missing checkpoint, an
unknown version: :func:`sam_block.cli.run.is_setup_error`) stops it.

Example:
    >>> from sam_block.cli.batch import RayOptions, run_with_ray
    >>> summary = run_with_ray(definition, [Path("photos/")], Path("out"), {"version": "demo"}, RayOptions(workers=2))  # doctest: +SKIP
    >>> summary.frames, summary.computed, summary.skipped, len(summary.failed)  # doctest: +SKIP
    (40, 40, 0, 0)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from sam_block.cli.coco import COCO_FILE, CocoWriter
from sam_block.cli.engine import image_inputs, init_engine
from sam_block.cli.errors import CliError, root_message
from sam_block.cli.inputs import (
    Frame,
    UniqueStems,
    expand_inputs,
    load_image,
    load_per_image,
    match_per_image,
    prepare_inputs,
    require_inputs,
)
from sam_block.cli.run import FAILED_FILE, RunSummary, atomic_write, is_setup_error, run_frames, write_failed
from sam_block.runtime.precision_names import PRECISION_ENV

STATE_DIR = ".sam-block-ray"  # one record per finished image
LOCAL = "local"  # `--ray` without an address: a Ray on this machine
ROW_KEYS = (
    "name",
    "source",
    "reason",
    "setup",
    "record",
    "file_names",
    "file_bytes",
    "pid",
)  # what an actor returns per image

__all__ = ["FAILED_FILE", "STATE_DIR", "RayOptions", "RaySummary", "add_ray_arguments", "plan_items", "run_with_ray"]


@dataclass
class RaySummary(RunSummary):
    """What a Ray run did: ``frames`` images are in ``coco.json``; ``computed`` of them ran
    in this run, ``skipped`` were already done by an earlier run; ``failed`` lists
    ``{"name", "source", "reason"}`` (also written to ``failed.jsonl``)."""

    computed: int = 0
    skipped: int = 0


def add_ray_arguments(parser) -> None:
    """``--per-image FILE`` (with or without Ray) and the ``--ray [ADDRESS]``, ``--workers N`` and
    ``--gpus-per-worker G`` options of ``sam-block run``."""
    parser.add_argument(
        "--per-image",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON {IMAGE: {INPUT: VALUE}}, workflow inputs per image (IMAGE: file name or stem), "
        'e.g. each image\'s boxes: {"a.jpg": {"boxes": {"predictions": [...]}}} (any box format of `segment --boxes`); '
        "with or without --ray",
    )
    group = parser.add_argument_group("Ray (pip install 'sam_block[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster: ADDRESS of an existing one (`auto`, `HOST:6379`, `ray://HOST:10001`), "
        "or none for a Ray on this machine; put it after the inputs (or write --ray=ADDRESS)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="with --ray: actors, each holding one engine and model (default 2)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="with --ray: GPUs per actor (0.5 = two actors per GPU; default 1 when the cluster has GPUs, else 0)",
    )


@dataclass(frozen=True)
class RayOptions:
    """How a Ray run is carried out (what is computed is the definition, inputs and params).

    `address`: an existing cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); ``None``
    or ``"local"``: a Ray on this machine (or the one this process already joined). `workers`
    actors each hold one engine; `gpus_per_worker` (default: 1 when the cluster has GPUs, else 0)
    is Ray's ``num_gpus`` per actor; `batch_size` images go to an actor at a time. `per_image` (a
    dict or the path of its JSON file) maps an image's file name or stem to its own workflow
    inputs, e.g. ``{"a.jpg": {"boxes": [...]}}``. `on_image` is called in the driver with
    ``{"name", "source", "status": "done" | "failed", "reason", "pid"}`` after each image is
    written (``pid``: the actor process that computed it).
    """

    address: Optional[str] = None
    workers: int = 2
    gpus_per_worker: Optional[float] = None
    batch_size: int = 4
    progress: Optional[bool] = None
    per_image: Optional[Union[Path, Dict[str, Dict[str, Any]]]] = None
    on_image: Optional[Callable[[Dict[str, Any]], None]] = None


@dataclass(frozen=True)
class Item:
    """One image to do: its output stem, its path as given (written to coco.json), its file, and the
    JSON of its own workflow inputs (added to the run's)."""

    name: str
    source: str
    path: str
    params: str = "{}"


def plan_items(inputs: Sequence[Union[Path, Tuple[Path, str]]]) -> List[Item]:
    """The images of `inputs` (files and folders, as ``sam-block run`` expands them), in order,
    named like ``sam-block run`` names them (the stem; a repeated stem gets ``_2``, ``_3`` ...)."""
    expanded = [entry if isinstance(entry, tuple) else None for entry in inputs]
    if any(entry is None for entry in expanded):
        expanded = expand_inputs([Path(p) for p in inputs])
    videos = [str(path) for path, kind in expanded if kind == "video"]
    if videos:
        raise CliError(
            f"--ray runs on images; {videos[0]} is a video: run it without --ray (or extract its frames as images first)"
        )
    unique = UniqueStems()
    return [Item(unique(path.stem), str(path), str(Path(path).resolve())) for path, _ in expanded]


class Segmenter:
    """A Ray Data actor: one compiled engine (one model in memory) for its whole life."""

    def __init__(
        self, definition: dict, image_input: str, params: Dict[str, Any], threads: int, precision: Optional[str] = None
    ) -> None:
        import torch

        if precision:  # the driver's SAM_BLOCK_PRECISION (`--precision`), also on nodes started without it
            os.environ[PRECISION_ENV] = precision
        torch.set_num_threads(max(1, threads))
        self.definition, self.image_input, self.params = definition, image_input, params
        with contextlib.redirect_stdout(io.StringIO()):
            self.engine = init_engine(definition)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, list]:
        rows = [
            self.segment(Item(*fields))
            for fields in zip(batch["name"], batch["source"], batch["path"], batch["params"])
        ]
        return {key: [row[key] for row in rows] for key in ROW_KEYS}

    def segment(self, item: Item) -> Dict[str, Any]:
        """Run the workflow on one image exactly as ``sam-block run`` does; return its files' bytes."""
        row = dict(zip(ROW_KEYS, (item.name, item.source, "", False, "", [], [], os.getpid())))
        try:
            image = load_image(Path(item.path))
            params = {
                **self.params,
                **prepare_inputs(self.definition, json.loads(item.params), f"--per-image {item.name}:"),
            }
            require_inputs(self.definition, self.image_input, params, item.name)
            with tempfile.TemporaryDirectory(prefix="sam-block-ray-") as scratch:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):  # the driver prints its own lines
                    frame = Frame(item.name, item.source, image, input_name=item.name)
                    summary = run_frames(
                        self.engine,
                        self.image_input,
                        iter([frame]),
                        Path(scratch),
                        params,
                        total=1,
                        progress=False,
                        keep_going=True,
                    )
                if summary.failed:  # the workflow failed on this image: the reason the single-process run gives
                    row["reason"] = summary.failed[0]["reason"]
                    return row
                files = [p for p in summary.written if p.name != COCO_FILE]
                row["file_names"] = [p.name for p in files]
                row["file_bytes"] = [p.read_bytes() for p in files]
                coco = json.loads((Path(scratch) / COCO_FILE).read_text())
            row["record"] = json.dumps(
                {
                    "source": item.source,
                    "files": row["file_names"],
                    "detections": summary.detections,
                    "masks": summary.masks,
                    "coco": coco,
                }
            )
        except (
            Exception
        ) as error:  # a corrupt image: a line of failed.jsonl; an error failing every image alike: the end
            row["reason"], row["setup"] = root_message(error), is_setup_error(error)
        return row


def run_with_ray(
    definition: dict,
    inputs: Sequence[Union[Path, Tuple[Path, str]]],
    out: Path,
    params: Dict[str, Any],
    options: RayOptions = RayOptions(),
) -> RaySummary:
    """Run `definition` on every image of `inputs` with Ray Data and write what ``sam-block run`` writes.

    `options` (:class:`RayOptions`) says where and how: cluster, actors, GPUs, per-image inputs.
    Paths must be readable by every node; the outputs are written by this process only.
    """
    if options.workers < 1:
        raise CliError(f"--workers must be 1 or more (got {options.workers})")
    if options.batch_size < 1:
        raise CliError(f"batch size must be 1 or more (got {options.batch_size})")
    names = image_inputs(definition)
    if not names:
        raise CliError("the workflow has no WorkflowImage input to give the images to")
    items = plan_items(inputs)
    if options.per_image is not None:
        per_image = load_per_image(options.per_image, names[0])
        own = match_per_image(per_image, [(Path(item.source).name, item.name) for item in items])
        for item_own, item in zip(own, items):
            prepare_inputs(
                definition, item_own, f"--per-image {item.name}:"
            )  # a wrong box shape: refused before any work
        items = [Item(item.name, item.source, item.path, json.dumps(item_own)) for item, item_own in zip(items, own)]
    init_engine(definition)  # a workflow that does not compile fails here, before any Ray work
    out = Path(out)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    pending = [item for item in items if _record(out, item) is None]
    summary = RaySummary(skipped=len(items) - len(pending))
    if pending:
        _compute(definition, names[0], params, pending, out, summary, options)
    _merge(items, out, summary)
    if summary.skipped:
        print(
            f"{summary.skipped} image(s) already done in {out} by an earlier run: kept, not recomputed", file=sys.stderr
        )
    return summary


def _compute(
    definition: dict,
    image_input: str,
    params: Dict[str, Any],
    pending: List[Item],
    out: Path,
    summary: RaySummary,
    options: RayOptions,
) -> None:
    import ray
    from tqdm.auto import tqdm

    started = _connect(ray, options.address)
    batch_size, gpus_per_worker, on_image = options.batch_size, options.gpus_per_worker, options.on_image
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts images
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        dataset = ray.data.from_items(
            [{"name": i.name, "source": i.source, "path": i.path, "params": i.params} for i in pending],
            override_num_blocks=max(1, len(pending) // batch_size),
        )
        results = dataset.map_batches(
            Segmenter,
            fn_constructor_kwargs={
                "definition": definition,
                "image_input": image_input,
                "params": params,
                "threads": 1,
                "precision": os.environ.get(PRECISION_ENV),
            },
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=1,
            num_gpus=gpus_per_worker or None,
            # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a dead
            # actor is restarted and its batches run again (tests/test_ray.py kills one).
        )
        failed: List[Dict[str, str]] = []
        rows = iter(results.iter_rows())
        with tqdm(
            total=len(pending),
            unit="image",
            desc="sam-block (ray)",
            disable=None if options.progress is None else not options.progress,
            file=sys.stderr,
        ) as bar:
            try:
                for row in rows:
                    if row["setup"]:  # e.g. a missing checkpoint: every other image would fail alike
                        raise CliError(f"{row['source']}: {row['reason']}")
                    if row["reason"]:
                        failed.append({"name": row["name"], "source": row["source"], "reason": row["reason"]})
                        write_failed(out, failed)  # at once: an interrupted job still says what failed
                        bar.write(f"{row['source']}: failed: {row['reason']}", file=sys.stderr)
                    else:
                        written = _store(out, row)
                        bar.write(
                            f"{row['source']}: {json.loads(row['record'])['masks']} mask(s) → {', '.join(map(str, written[:2]))}",
                            file=sys.stdout,
                        )
                        summary.computed += 1
                    bar.update(1)
                    if on_image is not None:
                        status = "failed" if row["reason"] else "done"
                        on_image(
                            {
                                "name": row["name"],
                                "source": row["source"],
                                "status": status,
                                "reason": row["reason"],
                                "pid": int(row["pid"]),
                            }
                        )
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()  # stops the streaming executor (and its actors) when we stop early
        summary.failed = failed
    finally:
        if started:
            ray.shutdown()


def _connect(ray, address: Optional[str]) -> bool:
    """Join `address` (or start a local Ray); True when we started it and must shut it down."""
    if address not in (None, LOCAL, "auto"):
        _check_reachable(address)  # ray.init retries an address where nothing listens for minutes
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address in (None, LOCAL):
            ray.init(**options)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:
        raise CliError(
            f"cannot start or join Ray at {address or 'this machine'}: {root_message(error)}; "
            "start one with `ray start --head` and pass its address (or `--ray` alone for a local one)"
        ) from None
    return True


def _check_reachable(address: str) -> None:
    """A clear error when nothing answers at `address` (``HOST:PORT`` or ``ray://HOST:PORT``)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    except ValueError:
        raise CliError(f"--ray {address!r} is not HOST:PORT, ray://HOST:PORT or auto") from None
    if not host:
        raise CliError(f"--ray {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as error:
        raise CliError(
            f"cannot join Ray at {address}: nothing answers at {host}:{port} ({error.strerror or error}); "
            "start the cluster with `ray start --head` there, or use `--ray` alone for a Ray on this machine"
        ) from None


def _store(out: Path, row: Dict[str, Any]) -> List[Path]:
    """Write an image's files, then its record; each atomically (a temporary file, then a rename)."""
    written = []
    for name, data in zip(row["file_names"], row["file_bytes"]):
        written.append(atomic_write(out / name, bytes(data)))
    atomic_write(out / STATE_DIR / f"{row['name']}.json", row["record"].encode())
    return written


def _record(out: Path, item: Item) -> Optional[dict]:
    """The record of `item` when it is done (record readable, same source, every file present), else None."""
    try:
        record = json.loads((out / STATE_DIR / f"{item.name}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("source") != item.source:
        return None
    if not all((out / name).is_file() for name in record.get("files", [])):
        return None
    return record


def _merge(items: Iterable[Item], out: Path, summary: RaySummary) -> None:
    """coco.json from the records, in input order, numbered as the single-process run numbers it;
    failed.jsonl with this run's failures (removed when there are none)."""
    coco = CocoWriter()
    for item in items:
        record = _record(out, item)
        if record is None:
            continue
        fragment = record["coco"]
        categories = {c["id"]: c["name"] for c in fragment["categories"]}
        for image in fragment["images"]:
            coco.images.append({**image, "id": len(coco.images) + 1})
            for annotation in (a for a in fragment["annotations"] if a["image_id"] == image["id"]):
                category = coco.categories.setdefault(categories[annotation["category_id"]], len(coco.categories) + 1)
                coco.annotations.append(
                    {
                        **annotation,
                        "id": len(coco.annotations) + 1,
                        "image_id": len(coco.images),
                        "category_id": category,
                    }
                )
        summary.frames += 1
        summary.detections += int(record.get("detections", 0))
        summary.masks += int(record.get("masks", 0))
        summary.written += [out / name for name in record["files"]]
    summary.coco = out / COCO_FILE
    scratch = out / f".{COCO_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        coco.write(scratch)
        os.replace(scratch, summary.coco)
    finally:
        scratch.unlink(missing_ok=True)
    summary.written.append(summary.coco)
    summary.failed_file = write_failed(out, summary.failed)
