"""`sam-block run --ray`: real Ray (a local cluster of 2 CPUs), the real engine, the bundled demo model.

One Ray runtime serves the whole module. The reference is the single-process
`sam-block run` on the same 40 generated images; every Ray run must write the same
coco.json (same images, masks, scores, ids) and the same annotated pictures.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from pycocotools import mask as mask_utils

from sam_block.cli import main
from sam_block.cli.batch import FAILED_FILE, STATE_DIR, RayOptions, run_with_ray
from sam_block.demo.scenes import make_scene

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

IMAGES = 40
PARAMS = {"points_per_side": 8}  # segment everything on a coarse grid: a few masks per image, per scene different
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
        },
        {
            "type": "roboflow_core/mask_visualization@v1",
            "name": "masks",
            "image": "$inputs.image",
            "predictions": "$steps.sam.predictions",
        },
    ],
    "outputs": [
        {"type": "JsonField", "name": "predictions", "selector": "$steps.sam.predictions"},
        {"type": "JsonField", "name": "visualization", "selector": "$steps.masks.image"},
    ],
}


def test_the_command_starts_its_own_local_ray_and_stops_it(tmp_path):
    """`sam-block run ... --ray --workers 1` in a fresh process (first in this module: no Ray runs yet)."""
    import subprocess
    import sys

    images = tmp_path / "images"
    images.mkdir()
    for seed in (0, 1):
        cv2.imwrite(str(images / f"scene{seed:02d}.png"), np.ascontiguousarray(make_scene(seed).image[..., ::-1]))
    (tmp_path / "workflow.json").write_text(json.dumps(WORKFLOW))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "sam_block.cli",
        "run",
        str(tmp_path / "workflow.json"),
        str(images),
        "--out",
        str(out),
        "--param",
        "points_per_side=8",
        "--no-progress",
        "--ray",
        "--workers",
        "1",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 image(s)" in done.stdout and sorted(p.name for p in out.glob("*.png")) == [
        "scene00.png",
        "scene00.visualization.png",
        "scene01.png",
        "scene01.visualization.png",
    ]
    assert [Path(i["file_name"]).name for i in json.loads((out / "coco.json").read_text())["images"]] == [
        "scene00.png",
        "scene01.png",
    ]
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def registered_model(tmp_path_factory):
    """`my_shapes` in an operator's registry (SAM_BLOCK_MODELS): the demo architecture with perturbed
    weights, as tests/test_registry.py builds its "fine-tuned" checkpoint. Set before Ray starts, so
    that the actors see it, as they see the environment of the user's `sam-block run --ray`."""
    import torch
    import yaml

    from sam_block.runtime.variants import get_variant

    state = torch.load(get_variant("demo").bundled, map_location="cpu", weights_only=True)["model"]
    generator = torch.Generator().manual_seed(0)
    for key, value in state.items():
        if value.is_floating_point() and value.numel() > 1:
            state[key] = value + 0.3 * value.std() * torch.randn(value.shape, generator=generator)
    folder = tmp_path_factory.mktemp("registry")
    torch.save({"model": state}, folder / "my_shapes.pt")
    config = str(REPO / "sam_block" / "configs" / "sam2.1_demo.yaml")
    (folder / "models.yaml").write_text(yaml.safe_dump({"my_shapes": {"checkpoint": "my_shapes.pt", "config": config}}))
    saved = os.environ.get("SAM_BLOCK_MODELS")
    os.environ["SAM_BLOCK_MODELS"] = str(folder / "models.yaml")
    yield "my_shapes"
    if saved is None:
        os.environ.pop("SAM_BLOCK_MODELS")
    else:
        os.environ["SAM_BLOCK_MODELS"] = saved


@pytest.fixture(scope="module")
def ray_runtime(registered_model):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """40 generated scenes as PNG files, the workflow, and the single-process run's output."""
    root = tmp_path_factory.mktemp("ray")
    images = root / "images"
    images.mkdir()
    for seed in range(IMAGES):
        cv2.imwrite(str(images / f"scene{seed:02d}.png"), np.ascontiguousarray(make_scene(seed).image[..., ::-1]))
    workflow = root / "workflow.json"
    workflow.write_text(json.dumps(WORKFLOW))
    reference = root / "reference"
    assert (
        main(
            [
                "run",
                str(workflow),
                str(images),
                "--out",
                str(reference),
                "--param",
                "points_per_side=8",
                "--no-progress",
            ]
        )
        == 0
    )
    coco = json.loads((reference / "coco.json").read_text())
    assert len(coco["images"]) == IMAGES and len(coco["annotations"]) >= IMAGES  # masks on every scene, on average
    return images, workflow, reference


def outputs(out: Path) -> dict:
    """What a run leaves for the user: every file (bytes) but the engine's JSON, whose detection ids are fresh uuids."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix == ".png"}


def assert_same_as_reference(out: Path, reference: Path) -> None:
    assert json.loads((out / "coco.json").read_text()) == json.loads((reference / "coco.json").read_text())
    assert outputs(out) == outputs(reference)  # NAME.png and NAME.visualization.png, byte for byte
    for path in reference.glob("*.json"):  # the engine's JSON: the same masks, up to the fresh detection ids
        ours, theirs = json.loads((out / path.name).read_text()), json.loads(path.read_text())
        if "predictions" in theirs:

            def strip(p):
                return [
                    {k: v for k, v in d.items() if k not in ("detection_id", "parent_id")}
                    for d in p["predictions"]["predictions"]
                ]

            assert strip(ours) == strip(theirs), path.name


def test_ray_run_equals_the_single_process_run(ray_runtime, dataset, tmp_path, capsys):
    images, workflow, reference = dataset
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(workflow),
            str(images),
            "--out",
            str(out),
            "--param",
            "points_per_side=8",
            "--no-progress",
            "--ray",
            "--workers",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert f"{IMAGES} image(s)" in capsys.readouterr().out
    assert_same_as_reference(out, reference)
    assert not (out / FAILED_FILE).exists()


def test_a_killed_actor_is_restarted_and_nothing_is_lost(ray_runtime, dataset, tmp_path):
    images, workflow, reference = dataset
    pids, killed = [], []

    def kill_the_first_worker(image):
        pids.append(image["pid"])
        if not killed:  # the actor that delivered the first image dies with batches still queued on it
            os.kill(image["pid"], signal.SIGKILL)
            killed.append(image["pid"])

    summary = run_with_ray(
        json.loads(workflow.read_text()),
        [images],
        tmp_path / "out",
        PARAMS,
        RayOptions(workers=2, batch_size=2, progress=False, on_image=kill_the_first_worker),
    )
    assert killed and not _alive(killed[0])
    assert (summary.frames, summary.computed, summary.skipped, summary.failed) == (IMAGES, IMAGES, 0, [])
    assert len(set(pids) - set(killed)) >= 2, "a restarted actor (a new process) took the dead one's place"
    assert_same_as_reference(tmp_path / "out", reference)


class Stop(Exception):
    pass


def test_an_interrupted_run_resumes_without_duplicates_or_recomputation(ray_runtime, dataset, tmp_path):
    images, workflow, reference = dataset
    definition, out, first = json.loads(workflow.read_text()), tmp_path / "out", []

    def stop_half_way(image):
        first.append(image["name"])
        if len(first) == IMAGES // 2:
            raise Stop  # as Ctrl-C would, in the middle of the job

    with pytest.raises(Stop):
        run_with_ray(
            definition,
            [images],
            out,
            PARAMS,
            RayOptions(workers=2, batch_size=2, progress=False, on_image=stop_half_way),
        )
    done = _identities((out / STATE_DIR).glob("*.json"))
    pictures = _identities(out.glob("*.png"))
    assert set(done) == {f"{n}.json" for n in first} and len(done) == IMAGES // 2 and not (out / "coco.json").exists()

    second = []
    summary = run_with_ray(
        definition,
        [images],
        out,
        PARAMS,
        RayOptions(workers=2, batch_size=2, progress=False, on_image=lambda image: second.append(image["name"])),
    )
    assert (summary.frames, summary.skipped, summary.computed) == (IMAGES, IMAGES // 2, IMAGES // 2)
    assert sorted(second) == sorted(set(second)) and not set(second) & set(
        first
    )  # engine runs: only the missing half, once each
    # untouched: every file of the first half is the very file (a rewrite goes through a new file and
    # a rename, so it would have a new inode), with the same bytes
    assert {k: v for k, v in _identities((out / STATE_DIR).glob("*.json")).items() if k in done} == done
    assert {k: v for k, v in _identities(out.glob("*.png")).items() if k in pictures} == pictures
    assert_same_as_reference(out, reference)  # each image and annotation exactly once, in input order

    third = run_with_ray(definition, [images], out, PARAMS, RayOptions(workers=2, progress=False))
    assert (third.frames, third.skipped, third.computed) == (IMAGES, IMAGES, 0)  # nothing left: Ray is not even asked
    assert_same_as_reference(out, reference)


def test_per_image_boxes_and_a_corrupt_image_reported_in_failed_jsonl(ray_runtime, dataset, tmp_path):
    """The bundled boxes-to-masks workflow, each image with its own boxes (keyed by file name);
    one file is not an image: it is a line of failed.jsonl, the others complete."""
    images, _, _ = dataset
    inputs, per_image, truth = _with_their_boxes(images, tmp_path / "inputs", seeds=range(3))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))  # a PNG signature, then garbage
    (tmp_path / "per_image.json").write_text(json.dumps(per_image))
    out = tmp_path / "out"
    workflow = REPO / "sam_block/workflows/boxes_to_masks.json"
    command = [
        "run",
        str(workflow),
        str(inputs),
        "--param",
        "version=demo",
        "--no-progress",
        "--per-image",
        str(tmp_path / "per_image.json"),
    ]
    code = main([*command, "--out", str(out), "--ray", "--workers", "2"])
    assert code == 1  # some input failed: listed, and the exit code says so

    plain = tmp_path / "plain"  # the same job without Ray: the same files, the same failed.jsonl, the same exit code
    assert main([*command, "--out", str(plain)]) == 1
    assert (plain / FAILED_FILE).read_text() == (out / FAILED_FILE).read_text()
    ray_coco, plain_coco = (json.loads((d / "coco.json").read_text()) for d in (out, plain))
    assert ray_coco["images"] == plain_coco["images"] and ray_coco["categories"] == plain_coco["categories"]
    for ours, theirs in zip(
        ray_coco["annotations"], plain_coco["annotations"], strict=True
    ):  # the same masks; scores up to float
        assert {k: v for k, v in ours.items() if k != "score"} == {k: v for k, v in theirs.items() if k != "score"}
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)  # rounding (1 thread per actor)

    lines = [json.loads(line) for line in (out / FAILED_FILE).read_text().splitlines()]
    assert [(line["name"], line["source"]) for line in lines] == [("broken", str(inputs / "broken.png"))]
    assert "is not an image OpenCV can read" in lines[0]["reason"]
    coco = json.loads((out / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [str(inputs / n) for n in per_image]
    for stem in truth:  # every image got its own boxes: one mask per box, on its shape
        found = json.loads((out / f"{stem}.json").read_text())["predictions"]["predictions"]
        assert [p["parent_id"] for p in found] == [
            p["detection_id"] for p in per_image[f"{stem}.png"]["boxes"][0]["predictions"]
        ]
    for annotation in coco["annotations"]:
        stem = Path(coco["images"][annotation["image_id"] - 1]["file_name"]).stem
        mask = mask_utils.decode(
            {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
        ).astype(bool)
        assert max((mask & t).sum() / (mask | t).sum() for t in truth[stem]) > 0.5
    assert len(coco["annotations"]) == sum(len(m) for m in truth.values())

    (inputs / "broken.png").write_bytes((inputs / "scene00.png").read_bytes())  # repaired: the next run tries it again
    summary = run_with_ray(
        json.loads(workflow.read_text()),
        [inputs],
        out,
        {"version": "demo", "boxes": per_image["scene00.png"]["boxes"]},
        RayOptions(progress=False),
    )
    assert (summary.frames, summary.skipped, summary.computed, summary.failed) == (4, 3, 1, [])
    assert not (out / FAILED_FILE).exists()
    assert [Path(i["file_name"]).name for i in json.loads((out / "coco.json").read_text())["images"]] == [
        "broken.png",
        *per_image,
    ]


def _with_their_boxes(images: Path, inputs: Path, seeds) -> tuple:
    """The scenes of `seeds` copied into `inputs`, their boxes as a --per-image mapping keyed by file
    name, and their true masks by stem."""
    inputs.mkdir()
    per_image, truth = {}, {}
    for seed in seeds:
        name = f"scene{seed:02d}.png"
        (inputs / name).write_bytes((images / name).read_bytes())
        scene = make_scene(seed)
        truth[f"scene{seed:02d}"] = scene.masks
        predictions = [
            {
                "x": float(x1 + x2) / 2,
                "y": float(y1 + y2) / 2,
                "width": float(x2 - x1),
                "height": float(y2 - y1),
                "class": kind,
                "class_id": 0,
                "confidence": 1.0,
                "detection_id": f"s{seed}-{i}",
            }
            for i, ((x1, y1, x2, y2), kind) in enumerate(zip(scene.boxes, scene.kinds))
        ]
        per_image[name] = {"boxes": [{"image": {"width": 256, "height": 256}, "predictions": predictions}]}
    return inputs, per_image, truth


def _masks(coco: dict) -> list:
    """Per annotation: image, category, box and the decoded mask (scores aside: float rounding)."""
    return [
        (a["image_id"], a["category_id"], a["bbox"], mask_utils.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).tobytes())
        for a in coco["annotations"]
    ]  # fmt: skip


def test_a_registered_model_on_ray_gives_the_masks_of_the_plain_run(ray_runtime, registered_model, dataset, tmp_path):
    """A name of the operator's registry (SAM_BLOCK_MODELS, set where the actors run) reaches the
    actors: the Ray run's masks equal the plain run's with that name, and differ from demo's."""
    images, _, _ = dataset
    inputs, per_image, _ = _with_their_boxes(images, tmp_path / "inputs", seeds=range(3))
    (tmp_path / "per_image.json").write_text(json.dumps(per_image))
    workflow = REPO / "sam_block/workflows/boxes_to_masks.json"
    command = ["run", str(workflow), str(inputs), "--no-progress", "--per-image", str(tmp_path / "per_image.json")]
    runs = {
        "ray": [*command, "--param", f"version={registered_model}", "--ray", "--workers", "2"],
        "plain": [*command, "--param", f"version={registered_model}"],
        "demo": [*command, "--param", "version=demo"],
    }
    masks = {}
    for name, argv in runs.items():
        assert main([*argv, "--out", str(tmp_path / name)]) == 0, name
        masks[name] = _masks(json.loads((tmp_path / name / "coco.json").read_text()))
    assert len(masks["ray"]) == sum(len(own["boxes"][0]["predictions"]) for own in per_image.values())
    assert masks["ray"] == masks["plain"]
    assert masks["ray"] != masks["demo"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: {"inputs": [d / "clip.avi"]}, "is a video: run it without --ray"),
        (lambda d: {"workers": 0}, "--workers must be 1 or more (got 0)"),
        (lambda d: {"per_image": d / "missing.json"}, "missing.json cannot be read"),
        (lambda d: {"per_image": {"a.png": {"image": 1}}}, "'image' is the image input"),
        (lambda d: {"per_image": {"a.png": [1]}}, "must map image names to their inputs"),
        (lambda d: {"address": "127.0.0.1:1"}, "cannot join Ray at 127.0.0.1:1: nothing answers at 127.0.0.1:1"),
        (lambda d: {"address": "ray://127.0.0.1:1"}, "nothing answers at 127.0.0.1:1"),
    ],
)
def test_bad_requests_are_one_clear_error_before_any_work(change, expected, tmp_path):
    from sam_block.cli import CliError

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "clip.avi").write_bytes(b"not read: refused by its suffix")
    arguments = {"inputs": [tmp_path / "a.png"], "workers": 2, **change(tmp_path)}
    with pytest.raises(CliError, match=re.escape(expected)):
        run_with_ray(
            WORKFLOW, arguments.pop("inputs"), tmp_path / "out", PARAMS, RayOptions(progress=False, **arguments)
        )
    assert not (tmp_path / "out" / "coco.json").exists()


def _identities(paths) -> dict:
    """{file name: (inode, bytes)}: a file left alone keeps both; one rewritten in place of it (a
    temporary file renamed over it) gets a new inode."""
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in paths}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers signal 0
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
