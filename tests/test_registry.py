"""Your own SAM 2: the operator's registry (SAM_BLOCK_MODELS), SAM 2.0 files, Meta's Hugging Face ids.

Real engine, real Meta code, real huggingface_hub (with a cache this module fills, offline):
a registered "fine-tuned" checkpoint (the demo architecture, perturbed weights) gives Meta's
masks on that very file through the image step, the video step and the CLI, not demo's; the
SAM 2.0 hiera_tiny architecture gives Meta's build_sam2 masks; names that are neither built in
nor registered are refused — over the engine without touching the file or the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import torch

from sam_block.errors import CheckpointCorruptError, CheckpointMissingError, UnknownVersionError
from sam_block.runtime.registry import RegistryError
from sam_block.runtime.variants import BUILTIN_VERSIONS, HF_MODELS, available_versions, get_variant
from tests.conftest import REPO, build_random_checkpoint, detections, load_example, mask_iou, meta_sam2, run_workflow
from tests.video_support import build_meta_video_predictor, make_clip, meta_track, write_jpegs

DEMO_CONFIG = str(REPO / "sam_block" / "configs" / "sam2.1_demo.yaml")
BOXES = np.array(
    [[35, 45, 190, 210], [225, 45, 375, 195], [310, 195, 450, 290], [100.5, 80.25, 330.75, 260.5]], np.float32
)
PARITY_IOU = 0.99


@pytest.fixture(autouse=True)
def fresh_models(monkeypatch):
    """Each test starts with no loaded model (a registered name may change what it loads)."""
    from sam_block.runtime.models import MODELS

    monkeypatch.setattr(MODELS, "_models", {})
    monkeypatch.setattr(MODELS, "_locks", {})


def write_registry(path: Path, entries: dict, monkeypatch) -> Path:
    """Write `entries` as YAML (or JSON, by suffix) and point SAM_BLOCK_MODELS at it."""
    import yaml

    path.write_text(json.dumps(entries) if path.suffix == ".json" else yaml.safe_dump(entries))
    monkeypatch.setenv("SAM_BLOCK_MODELS", str(path))
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """The bundled demo weights, perturbed (seeded): a "fine-tuned" checkpoint of the demo architecture."""
    state = torch.load(get_variant("demo").bundled, map_location="cpu", weights_only=True)["model"]
    generator = torch.Generator().manual_seed(0)
    for key, value in state.items():
        if value.is_floating_point() and value.numel() > 1:
            state[key] = value + 0.3 * value.std() * torch.randn(value.shape, generator=generator)
    path = tmp_path_factory.mktemp("finetuned") / "shapes_finetune.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture
def registered(finetuned, tmp_path, monkeypatch) -> str:
    """`my_shapes` registered: a checkpoint path relative to the registry file, the demo config as a file."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "weights").mkdir()
    (folder / "weights" / finetuned.name).write_bytes(finetuned.read_bytes())
    write_registry(
        folder / "registry.yaml",
        {"my_shapes": {"checkpoint": f"weights/{finetuned.name}", "config": DEMO_CONFIG}},
        monkeypatch,
    )
    return "my_shapes"


@pytest.fixture(scope="module")
def scene():
    """A non-square scene of the kind the demo model knows (BGR, as the engine gives it), and its shapes' boxes."""
    from sam_block.demo.scenes import make_scene as demo_scene

    drawn = demo_scene(seed=2, height=240, width=320)  # five shapes
    return drawn.image[:, :, ::-1].copy(), drawn.boxes.astype(np.float32)


def meta_image_masks(config: str, checkpoint: Path, rgb: np.ndarray, boxes=BOXES):
    """Meta's SAM2ImagePredictor, loaded by Meta's loader, with build_sam2's post-processing: best of 3 per box."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from sam2.build_sam import _load_checkpoint
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_block.runtime.architecture import config_path
    from sam_block.runtime.variants import Variant

    cfg = OmegaConf.load(config_path(Variant(name="x", config=config, filename="x", url=None)))
    for key, value in {
        "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    }.items():  # Meta's build_sam2(apply_postprocessing=True)
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    _load_checkpoint(model, str(checkpoint))
    predictor = SAM2ImagePredictor(model.eval())
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    predictor.set_image(rgb)
    masks, scores, _ = predictor.predict(box=boxes, multimask_output=True)
    best = scores.argmax(axis=1)
    return masks[np.arange(len(boxes)), best] > 0


def block_masks(image_bgr: np.ndarray, version: str, boxes=BOXES) -> np.ndarray:
    ids = [f"b{i}" for i in range(len(boxes))]
    result = run_workflow(
        load_example("a_boxes_input.json"),
        image=image_bgr,
        boxes=[detections(boxes, detection_ids=ids)],
        version=version,
    )
    predictions = result[0]["predictions"]
    order = {pid: i for i, pid in enumerate(predictions["parent_id"])}
    return np.stack([predictions.mask[order[i]] for i in ids])


def assert_parity_and_difference(ours, meta, demo):
    assert [round(mask_iou(a, b), 3) for a, b in zip(ours, meta)] == pytest.approx(
        [1.0] * len(meta), abs=1 - PARITY_IOU
    )
    assert all(m.any() and not m.all() for m in meta), "the fine-tuned masks must be non-trivial"
    differences = [mask_iou(a, b) for a, b in zip(meta, demo)]
    assert min(differences) < 0.9, differences  # it is not demo's model under another name


# ---------------------------------------------------------------- a registered fine-tuned model


def test_a_registered_checkpoint_runs_in_the_image_step_like_meta_on_that_file(registered, finetuned, scene):
    image, boxes = scene
    rgb = image[:, :, ::-1].copy()
    ours = block_masks(image, registered, boxes)
    meta = meta_image_masks(DEMO_CONFIG, finetuned, rgb, boxes)
    demo = meta_image_masks(DEMO_CONFIG, Path(get_variant("demo").bundled), rgb, boxes)
    assert_parity_and_difference(ours, meta, demo)
    assert registered in available_versions() and get_variant(registered).origin == "registry"


def test_a_registered_checkpoint_runs_in_the_video_step_like_meta_on_that_file(registered, finetuned, tmp_path):
    from datetime import datetime

    from roboflow_workflows.execution_engine.core import ExecutionEngine
    from roboflow_workflows.execution_engine.entities.base import VideoMetadata

    frames, boxes = make_clip(frames=8, objects=2, seed=1)
    decoded = write_jpegs(frames, tmp_path / "clip")
    prompts = {k: (0, boxes[0][k]) for k in range(2)}
    meta = meta_track(build_meta_video_predictor(DEMO_CONFIG, finetuned), tmp_path / "clip", prompts)
    demo = meta_track(
        build_meta_video_predictor(DEMO_CONFIG, Path(get_variant("demo").bundled)), tmp_path / "clip", prompts
    )
    definition = load_example("g_video_tracking.json")
    definition["steps"][0]["prompt_mode"] = "first_frame"
    engine = ExecutionEngine.init(workflow_definition=definition, init_parameters={})
    first = sv.Detections(xyxy=np.array(boxes[0], float), class_id=np.arange(2), confidence=np.full(2, 0.9),
                          data={"class_name": np.array(["a", "b"])})  # fmt: skip
    differences = []
    for f, frame in enumerate(decoded):
        image = {"type": "numpy_object", "value": frame,
                 "video_metadata": VideoMetadata(video_identifier="reg", frame_number=f, frame_timestamp=datetime.now(), fps=30)}  # fmt: skip
        out = engine.run(
            runtime_parameters={
                "image": [image],
                "boxes": [first if f == 0 else sv.Detections.empty()],
                "version": registered,
            }
        )
        ours = {int(t): out[0]["predictions"].mask[i] for i, t in enumerate(out[0]["predictions"].tracker_id)}
        for k in range(2):
            got = ours.get(k + 1, np.zeros_like(meta[k][f]))
            assert mask_iou(got, meta[k][f]) >= PARITY_IOU, (f, k, mask_iou(got, meta[k][f]))
            differences.append(mask_iou(meta[k][f], demo[k][f]))
    assert sum(meta[k][f].any() for k in range(2) for f in range(len(decoded))) >= 8  # tracked, not empty
    assert min(differences) < 0.9, differences


def test_a_registered_checkpoint_runs_through_the_cli_like_meta_on_that_file(
    registered, finetuned, scene, tmp_path, capsys
):
    from pycocotools import mask as coco_mask

    from sam_block.cli import main

    bgr, boxes = scene
    image = tmp_path / "shapes.png"  # lossless: the CLI reads the very pixels Meta gets
    cv2.imwrite(str(image), bgr)
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps([{"x1": float(a), "y1": float(b), "x2": float(c), "y2": float(d), "class_name": f"c{i}"}
                                      for i, (a, b, c, d) in enumerate(boxes)]))  # fmt: skip
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(image),
                "--boxes",
                str(boxes_file),
                "--out",
                str(out),
                "--model",
                registered,
                "--no-progress",
            ]
        )
        == 0
    )
    written = json.loads((out / "shapes.json").read_text())
    predictions = written["predictions"]
    by_class = {
        p["class"]: coco_mask.decode({"size": p["rle_mask"]["size"], "counts": p["rle_mask"]["counts"].encode()})
        for p in predictions
    }
    ours = np.stack([by_class[f"c{i}"].astype(bool) for i in range(len(boxes))])
    rgb = bgr[:, :, ::-1].copy()
    meta = meta_image_masks(DEMO_CONFIG, finetuned, rgb, boxes)
    demo = meta_image_masks(DEMO_CONFIG, Path(get_variant("demo").bundled), rgb, boxes)
    assert_parity_and_difference(ours, meta, demo)


def test_sam_block_models_lists_every_version_with_where_and_presence(registered, capsys):
    from sam_block.cli import main

    assert main(["models", "--json"]) == 0
    rows = {row["version"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == [*BUILTIN_VERSIONS, registered]
    assert rows["demo"]["where"] == "bundled" and rows["demo"]["present"] is True
    assert rows["hiera_large"]["where"] == "checkpoint dir" and rows["hiera_large"]["present"] is False
    assert rows["sam2_hiera_tiny"]["config"] == "configs/sam2/sam2_hiera_t.yaml"
    assert rows["facebook/sam2.1-hiera-tiny"]["where"] == "HF cache"
    assert rows["facebook/sam2.1-hiera-tiny"]["file"] == "hf://facebook/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt"
    mine = rows[registered]
    assert mine["where"].startswith("registry ") and mine["where"].endswith("registry.yaml (file)")
    assert (
        mine["present"] is True
        and mine["file"].endswith("weights/shapes_finetune.pt")
        and mine["config"] == DEMO_CONFIG
    )
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["VERSION", "CONFIG", "WHERE", "PRESENT", "FILE"] and len(table) == len(rows) + 1


def test_a_registered_url_is_downloaded_verified_and_renamed_into_place(finetuned, tmp_path, monkeypatch):
    from sam_block.runtime.checkpoints import resolve_checkpoint, sha256_of
    from tests.support import FileServer

    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    with FileServer({"/v2/shapes.pt": finetuned.read_bytes(), "/bad.pt": finetuned.read_bytes()[:-1] + b"x"}) as server:
        digest = sha256_of(finetuned)
        write_registry(tmp_path / "models.json", {
            "remote": {"checkpoint": f"{server.url}/v2/shapes.pt", "config": DEMO_CONFIG, "sha256": digest.upper()},
            "tampered": {"checkpoint": f"{server.url}/bad.pt", "config": DEMO_CONFIG, "sha256": digest},
        }, monkeypatch)  # fmt: skip
        path = resolve_checkpoint(get_variant("remote"), progress=False)
        assert path == tmp_path / "ckpt" / "registered" / "remote" / "shapes.pt" and sha256_of(path) == digest
        with pytest.raises(CheckpointCorruptError, match="SHA-256"):
            resolve_checkpoint(get_variant("tampered"), progress=False)
    assert sorted(p.name for p in (tmp_path / "ckpt" / "registered").rglob("*") if p.is_file()) == [
        "shapes.pt"
    ]  # no partial file


def test_a_registered_digest_is_checked_on_every_load(finetuned, tmp_path, monkeypatch):
    from sam_block.runtime.models import MODELS

    copy = tmp_path / "model.pt"
    copy.write_bytes(finetuned.read_bytes())
    write_registry(
        tmp_path / "r.yaml",
        {"pinned": {"checkpoint": str(copy), "config": DEMO_CONFIG, "sha256": "0" * 64}},
        monkeypatch,
    )
    with pytest.raises(CheckpointCorruptError) as error:
        MODELS.get("pinned", torch.device("cpu"))
    assert (
        str(copy) in str(error.value) and "0" * 64 in str(error.value) and str(tmp_path / "r.yaml") in str(error.value)
    )


def test_a_registered_checkpoint_of_another_architecture_is_explained(finetuned, tmp_path, monkeypatch):
    from sam_block.runtime.models import MODELS

    write_registry(
        tmp_path / "r.yaml",
        {"wrong": {"checkpoint": str(finetuned), "config": "configs/sam2.1/sam2.1_hiera_t.yaml"}},
        monkeypatch,
    )
    with pytest.raises(
        CheckpointCorruptError,
        match=r"does not fit SAM 2 version 'wrong' \(config configs/sam2.1/sam2.1_hiera_t.yaml\)",
    ):
        MODELS.get("wrong", torch.device("cpu"))


# ---------------------------------------------------------------- built-in SAM 2.0 and Hugging Face names


def test_sam2_0_hiera_tiny_matches_meta_build_sam2_on_the_2_0_config(checkpoint_dir):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from tests.conftest import make_scene

    variant = get_variant("sam2_hiera_tiny")
    assert (variant.config, variant.filename) == ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt")
    assert variant.download_url() == "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt"
    path = checkpoint_dir / variant.filename
    build_random_checkpoint(path, seed=7, version="sam2_hiera_tiny")
    assert not any(
        k.startswith(("no_obj_embed_spatial", "obj_ptr_tpos_proj."))
        for k in torch.load(path, weights_only=True)["model"]
    )
    image = make_scene()
    predictor = SAM2ImagePredictor(meta_sam2(path, config="configs/sam2/sam2_hiera_t.yaml"))
    predictor.set_image(image[:, :, ::-1].copy())
    masks, scores, _ = predictor.predict(box=BOXES, multimask_output=True)
    meta = masks[np.arange(len(BOXES)), scores.argmax(axis=1)] > 0
    ours = block_masks(image, "sam2_hiera_tiny")
    assert all(m.any() and not m.all() for m in meta)
    assert [mask_iou(a, b) >= PARITY_IOU for a, b in zip(ours, meta)] == [True] * len(BOXES)


def test_meta_hugging_face_ids_map_to_the_configs_meta_uses():
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    assert HF_MODELS == HF_MODEL_ID_TO_FILENAMES
    assert all(get_variant(repo).hf_repo == repo and get_variant(repo).url is None for repo in HF_MODELS)


def fill_hf_cache(cache: Path, repo: str, filename: str, payload: bytes) -> Path:
    """huggingface_hub's own cache layout: refs/main names a snapshot holding the file."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(payload)
    return snapshot


def test_a_hugging_face_id_is_read_from_the_hub_cache_offline(tiny_checkpoint, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set: huggingface_hub finds the file;
    the loaded model holds exactly its weights."""
    snapshot = fill_hf_cache(
        tmp_path / "hub", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", tiny_checkpoint.read_bytes()
    )
    probe = (
        "import torch\n"
        "from sam_block.runtime.checkpoints import resolve_checkpoint\n"
        "from sam_block.runtime.models import MODELS\n"
        "from sam_block.runtime.variants import get_variant\n"
        "name = 'facebook/sam2.1-hiera-tiny'\n"
        "print(resolve_checkpoint(get_variant(name)))\n"
        "state = MODELS.get(name, torch.device('cpu')).state_dict()\n"
        f"saved = torch.load({str(tiny_checkpoint)!r}, weights_only=True)['model']\n"
        "print(sorted(state) == sorted(saved) and all(torch.equal(state[k], saved[k]) for k in saved))\n"
    )
    env = {**_env(), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "SAM_BLOCK_OFFLINE": "",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(snapshot), "True"]


def test_a_hugging_face_id_offline_and_not_cached_is_one_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from sam_block.runtime.checkpoints import resolve_checkpoint

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointMissingError) as error:
        resolve_checkpoint(get_variant("facebook/sam2-hiera-small"))
    message = str(error.value)
    for words in ("'facebook/sam2-hiera-small'", "sam2_hiera_small.pt", "HF_HUB_OFFLINE=1", str(tmp_path / "empty_hub"),
                  "hf download facebook/sam2-hiera-small sam2_hiera_small.pt"):  # fmt: skip
        assert words in message, message


def test_a_hugging_face_id_with_the_hub_unreachable_is_one_clear_error(tmp_path, monkeypatch):
    """Online, not cached, HF_ENDPOINT a closed loopback port: huggingface_hub's failure in our words."""
    from huggingface_hub import constants

    from sam_block.runtime.checkpoints import resolve_checkpoint
    from tests.http_server import free_port

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointMissingError) as error:
        resolve_checkpoint(get_variant("facebook/sam2.1-hiera-large"), progress=False)
    message = str(error.value)
    assert "huggingface_hub could not fetch it" in message and "facebook/sam2.1-hiera-large" in message, message
    assert not (tmp_path / "empty_hub").exists() or not list((tmp_path / "empty_hub").rglob("*.pt"))


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------- refusals


class _Watch:
    """Every file opened and every socket connected while active (a CPython audit hook: real calls, observed)."""

    active = None

    def __init__(self):
        self.opened, self.connected = [], []

    def __enter__(self):
        _Watch.active = self
        return self

    def __exit__(self, *exc):
        _Watch.active = None


def _audit(event, args):
    watch = _Watch.active
    if watch is None:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        watch.opened.append(str(args[0]))
    elif event == "socket.connect":
        watch.connected.append(args[1])


sys.addaudithook(_audit)


def refused_names(tmp_path, url):
    """A valid checkpoint as a path, as a URL, as hf://, an unregistered Hugging Face repo, an unknown name."""
    path = tmp_path / "sam2.1_demo.pt"
    path.write_bytes(Path(get_variant("demo").bundled).read_bytes())
    return {
        "path": str(path),
        "url": f"{url}/sam2.1_demo.pt",
        "hf-uri": "hf://facebook/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt",
        "other-hf-repo": "someone/sam2-finetune",
        "unregistered": "my_shapes",
    }


@pytest.mark.parametrize("kind", ["path", "url", "hf-uri", "other-hf-repo", "unregistered"])
@pytest.mark.parametrize("how", ["literal", "runtime input"])
def test_a_request_can_only_name_built_in_or_registered_models(kind, how, registered, tmp_path, monkeypatch):
    from roboflow_workflows.errors import RuntimeInputError, WorkflowSyntaxError
    from tests.support import FileServer

    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    with FileServer({"/sam2.1_demo.pt": Path(get_variant("demo").bundled).read_bytes()}) as server:
        names = refused_names(tmp_path, server.url)
        names["unregistered"] = "my_shapes_v2"  # `my_shapes` is registered, this one is not
        name = names[kind]
        definition = load_example("a_boxes_input.json")
        if how == "literal":
            definition["steps"][0]["version"] = name
        # inference's HTTP API answers both with 400 (its error handlers map these two types)
        with _Watch() as watch, pytest.raises(WorkflowSyntaxError if how == "literal" else RuntimeInputError) as raised:
            run_workflow(
                definition, image=np.zeros((64, 64, 3), np.uint8), boxes=[detections([[5, 5, 40, 40]])], version=name
            )
    error = raised.value
    message = str(error.inner_error)
    assert f"Unknown SAM 2 version {name!r}. Use one of: hiera_tiny" in message, message
    assert ", my_shapes (" in message  # the registered name is offered
    assert not any(name in opened or opened.endswith("sam2.1_demo.pt") for opened in watch.opened), watch.opened
    assert not watch.connected, watch.connected


def test_registered_names_must_not_shadow_built_in_ones(tmp_path, finetuned, monkeypatch):
    write_registry(
        tmp_path / "r.yaml", {"hiera_tiny": {"checkpoint": str(finetuned), "config": DEMO_CONFIG}}, monkeypatch
    )
    with pytest.raises(RegistryError, match=r"r\.yaml: entry 'hiera_tiny' is a built-in version name"):
        available_versions()


# ---------------------------------------------------------------- a broken registry


@pytest.mark.parametrize(
    "text, words",
    [
        ("good:\n  checkpoint: [unclosed\n", ["is not valid YAML", "line 2"]),
        ("- just\n- a list\n", ["must map model names to entries", "not a list"]),
        ("mine:\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n", ["entry 'mine'", "missing 'checkpoint'"]),
        (
            "mine:\n  checkpoint: nowhere/model.pt\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n",
            ["entry 'mine'", "nowhere/model.pt does not exist"],
        ),
        (
            "mine:\n  checkpoint: FINETUNED\n  config: configs/sam9/x.yaml\n",
            ["entry 'mine'", "config 'configs/sam9/x.yaml' is neither a config of the sam2 package"],
        ),
        (
            "mine:\n  checkpoint: FINETUNED\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n  sha: abc\n",
            ["entry 'mine'", "unknown key(s) sha"],
        ),
        (
            "mine:\n  checkpoint: FINETUNED\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n  sha256: abc\n",
            ["entry 'mine'", "64 hexadecimal digits"],
        ),
        (
            "mine:\n  checkpoint: s3://bucket/model.pt\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n",
            ["entry 'mine'", "only a file path, https://... or hf://OWNER/REPO/FILE"],
        ),
        (
            "mine:\n  checkpoint: hf://facebook/sam2.1-hiera-tiny\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n",
            ["entry 'mine'", "hf://OWNER/REPO/FILE"],
        ),
        (
            "../up:\n  checkpoint: FINETUNED\n  config: configs/sam2.1/sam2.1_hiera_t.yaml\n",
            ["entry '../up'", "a model name is letters"],
        ),
    ],
    ids=[
        "bad-yaml",
        "not-a-mapping",
        "missing-key",
        "missing-checkpoint",
        "bad-config",
        "unknown-key",
        "bad-sha256",
        "bad-scheme",
        "bad-hf-uri",
        "bad-name",
    ],  # fmt: skip
)
def test_a_broken_registry_is_one_error_naming_the_file_and_the_entry(
    text, words, finetuned, tmp_path, monkeypatch, capsys
):
    from sam_block.cli import main

    path = tmp_path / "models.yaml"
    path.write_text(text.replace("FINETUNED", str(finetuned)))
    monkeypatch.setenv("SAM_BLOCK_MODELS", str(path))
    with pytest.raises(RegistryError) as error:
        get_variant("mine")
    message = str(error.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message
    assert get_variant("demo").name == "demo"  # built-in names do not depend on the registry
    assert main(["models"]) == 2  # `sam-block models` says it in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sam-block: error: {path}"), err


def test_a_missing_registry_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_BLOCK_MODELS", str(tmp_path / "nope.yaml"))
    with pytest.raises(
        RegistryError, match=r"SAM_BLOCK_MODELS=.*nope\.yaml.* names a registry file that cannot be read"
    ):
        get_variant("mine")


def test_the_registry_is_read_again_when_it_changes(finetuned, tmp_path, monkeypatch):
    path = write_registry(
        tmp_path / "r.json", {"one": {"checkpoint": str(finetuned), "config": DEMO_CONFIG}}, monkeypatch
    )
    assert available_versions()[-1] == "one"
    path.write_text(
        json.dumps(
            {
                "two": {"checkpoint": str(finetuned), "config": DEMO_CONFIG},
                "three": {"checkpoint": str(finetuned), "config": DEMO_CONFIG},
            }
        )
    )
    assert available_versions()[-2:] == ["two", "three"]
    with pytest.raises(UnknownVersionError):
        get_variant("one")
