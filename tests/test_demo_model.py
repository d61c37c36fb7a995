"""The bundled toy `demo` model: it is packaged, loads without a download, and its quality.

The quality test runs sam_block's own predictor on the committed weights over generated
scenes it never saw in training (other seeds) and compares with the ground truth: box
prompts must give a mean mask IoU of at least 0.90 (the committed weights: 0.91).
"""

from pathlib import Path

import pytest
import torch

from sam_block.demo.train import HELD_OUT_SEED, held_out_ious
from sam_block.runtime.checkpoints import checkpoint_path, load_state_dict, resolve_checkpoint
from sam_block.runtime.models import MODELS, build_model
from sam_block.runtime.predictor import Sam2Predictor
from sam_block.runtime.variants import DEFAULT_VERSION, available_versions, get_variant
from tests.conftest import REPO

HELD_OUT_SCENES = 30


@pytest.fixture(scope="module")
def predictor():
    # the toy model's ops are tiny: one thread is faster than several (and far faster on a busy CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Sam2Predictor(MODELS.get("demo", torch.device("cpu")))
    torch.set_num_threads(threads)


def test_demo_is_a_bundled_toy_never_the_default(monkeypatch, tmp_path):
    variant = get_variant("demo")
    assert DEFAULT_VERSION != "demo" and "demo" in available_versions()
    assert Path(variant.config).is_absolute() and Path(variant.config).is_file()
    assert variant.url is None and variant.download_url() is None
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path))  # not looked up there
    path = resolve_checkpoint(variant)
    assert path == checkpoint_path(variant) == REPO / "sam_block" / "weights" / "sam2.1_demo.pt"
    assert path.stat().st_size <= 20 * 1024 * 1024


def test_demo_weights_fit_the_config_exactly():
    model = build_model(get_variant("demo"))
    state = load_state_dict(checkpoint_path(get_variant("demo")))
    assert set(state) == set(model.state_dict())
    assert model.image_size == 256


def test_checkpoint_base_url_override_keeps_official_file_names(monkeypatch):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_BASE_URL", "http://mirror.local/sam2/")
    assert get_variant("hiera_small").download_url() == "http://mirror.local/sam2/sam2.1_hiera_small.pt"
    monkeypatch.delenv("SAM_BLOCK_CHECKPOINT_BASE_URL")
    assert get_variant("hiera_small").download_url().startswith("https://dl.fbaipublicfiles.com/")


def _held_out_ious(predictor, multimask_output: bool):
    return held_out_ious(predictor, HELD_OUT_SCENES, HELD_OUT_SEED, multimask_output)


def test_box_prompts_segment_held_out_scenes(predictor):
    ious = _held_out_ious(predictor, multimask_output=True)  # the block's default
    assert len(ious) > 60
    assert ious.mean() >= 0.90, f"mean IoU {ious.mean():.3f}"


@pytest.mark.slow  # 70 s on the shared 2-core machine
def test_training_is_reproducible_and_writes_a_loadable_checkpoint(tmp_path, capsys):
    """Two short runs of the training command with the same seed give identical weights."""
    from sam_block.demo.train import main

    threads = torch.get_num_threads()
    try:
        for name in ("a.pt", "b.pt"):
            assert main(["--prompt-steps", "3", "--steps", "2", "--out", str(tmp_path / name)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "boxes 3/3" in printed and "step 2/2" in printed and "held-out mean box IoU" in printed
    first, second = (load_state_dict(tmp_path / name) for name in ("a.pt", "b.pt"))
    assert set(first) == set(build_model(get_variant("demo")).state_dict())
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
