"""One meaning per flag: `--model` is the SAM 2 version, `sam-block --version` the package's;
the old `COMMAND --version NAME` still works with a deprecation warning; `download` lists
only what it can download."""

import json
import os

import pytest

from sam_block.cli import main
from tests.conftest import EXAMPLES

DATA = EXAMPLES / "data"


def test_segment_with_model_demo_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty"))  # hiera_tiny would be missing: demo is used
    assert (
        main(
            [
                "segment",
                str(DATA / "scene.jpg"),
                "--boxes",
                str(DATA / "scene_boxes.json"),
                "--out",
                str(tmp_path / "out"),
                "--model",
                "demo",
                "--no-progress",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err == "" and "3 mask(s)" in captured.out
    assert len(json.loads((tmp_path / "out" / "scene.json").read_text())["predictions"]) == 3


def test_old_version_spelling_still_works_with_a_deprecation_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty"))  # only demo can run here
    assert (
        main(
            [
                "segment",
                str(DATA / "scene.jpg"),
                "--boxes",
                str(DATA / "scene_boxes.json"),
                "--out",
                str(tmp_path / "out"),
                "--version",
                "demo",
                "--no-progress",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err == (
        "sam-block: warning: `segment --version demo` is deprecated and will be removed: use `--model demo` "
        "(`sam-block --version` prints the package version)\n"
    )
    assert "3 mask(s)" in captured.out


def test_old_and_new_spelling_that_disagree_are_refused(tmp_path, capsys):
    argv = [
        "segment",
        str(DATA / "scene.jpg"),
        "--boxes",
        str(DATA / "scene_boxes.json"),
        "--out",
        str(tmp_path),
        "--model",
        "demo",
        "--version",
        "hiera_small",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model demo and --version hiera_small disagree" in err
    assert not (tmp_path / "coco.json").exists()


def test_old_spelling_of_an_unknown_version_is_still_refused_while_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "track",
                str(tmp_path / "clip.mp4"),
                "--boxes",
                str(tmp_path / "b.json"),
                "--out",
                str(tmp_path),
                "--version",
                "hiera_huge",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --version: Unknown SAM 2 version 'hiera_huge'" in err


@pytest.mark.parametrize("command", ["segment", "track"])
def test_help_shows_model_and_not_the_old_spelling(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--model NAME" in text and "--version" not in text


def test_track_with_a_workflow_names_model_as_the_flag_that_does_not_apply(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # never opened: the flags are refused first
    assert (
        main(
            [
                "track",
                str(video),
                "--workflow",
                str(EXAMPLES / "g_video_tracking.json"),
                "--model",
                "demo",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "--model and --prompt-mode go with --boxes" in capsys.readouterr().err


def test_download_lists_only_downloadable_names(capsys):
    assert main(["download", "hiera_huge"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "sam-block: error: Unknown SAM 2 version 'hiera_huge' to download. Use one of: hiera_tiny, hiera_small, hiera_b_plus, hiera_large, "
        "sam2_hiera_tiny, sam2_hiera_small, sam2_hiera_b_plus, sam2_hiera_large\n"
    )
    assert "demo" not in err


# --- --precision: sets SAM_BLOCK_PRECISION (runtime/precision.py) for the whole run ----------------


def segment_scene(tmp_path, name: str, *flags: str) -> list:
    """`sam-block segment` of the example scene on the demo model; the predictions it wrote."""
    out = tmp_path / name
    argv = ["segment", str(DATA / "scene.jpg"), "--boxes", str(DATA / "scene_boxes.json"), "--out", str(out)]
    assert main([*argv, "--model", "demo", "--no-progress", *flags]) == 0
    predictions = json.loads((out / "scene.json").read_text())["predictions"]
    return [{k: v for k, v in p.items() if k != "detection_id"} for p in predictions]  # ids are random


def test_precision_flag_runs_bf16_and_overrides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_BLOCK_PRECISION", "fp32")  # restored after the test: --precision sets it in-process
    fp32 = segment_scene(tmp_path, "fp32")
    bf16 = segment_scene(tmp_path, "bf16", "--precision", "bf16")
    assert os.environ["SAM_BLOCK_PRECISION"] == "bf16"
    # bf16 ran: same objects, scores moved by bf16's rounding (identical scores would mean fp32 ran again)
    assert [p["class"] for p in bf16] == [p["class"] for p in fp32]
    moved = [abs(a["confidence"] - b["confidence"]) for a, b in zip(fp32, bf16)]
    assert max(moved) > 1e-4 and max(moved) < 0.05, moved
    monkeypatch.setenv("SAM_BLOCK_PRECISION", "bf16")
    assert segment_scene(tmp_path, "env") == bf16  # without the flag: the variable
    assert segment_scene(tmp_path, "fp32-over-env", "--precision", "fp32") == fp32  # the flag wins over the variable


@pytest.mark.parametrize("command", ["run", "segment", "track", "demo", "serve"])
def test_an_unknown_precision_is_one_line(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--precision", "fp16"])  # checked while parsing: before required arguments are missed
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "argument --precision: invalid choice: 'fp16' (choose from 'auto', 'fp32', 'bf16')" in err


def run_scene(tmp_path, name: str, *flags: str) -> list:
    """`sam-block run` of the boxes workflow on the example scene, demo model; the predictions it wrote."""
    out = tmp_path / name
    argv = ["run", str(EXAMPLES / "a_boxes_input.json"), str(DATA / "scene.jpg"), "--out", str(out), "--no-progress"]
    params = ["--param", f"boxes=@{DATA / 'scene_boxes.json'}", "--param", "version=demo"]
    assert main([*argv, *params, *flags]) == 0
    predictions = json.loads((out / "scene.json").read_text())["predictions"]["predictions"]
    return [{k: v for k, v in p.items() if k != "detection_id"} for p in predictions]


@pytest.mark.slow  # starts Ray (~20-40 s here)
def test_precision_reaches_ray_actors_whose_cluster_says_otherwise(tmp_path, monkeypatch):
    """`run --ray --precision bf16` on a Ray whose workers are told SAM_BLOCK_PRECISION=fp32 (as a
    cluster started elsewhere would be): the actors run bf16, as the single-process run does."""
    import ray

    monkeypatch.setenv("SAM_BLOCK_PRECISION", "fp32")
    fp32 = run_scene(tmp_path, "fp32")
    bf16 = run_scene(tmp_path, "bf16", "--precision", "bf16")
    assert fp32 != bf16
    monkeypatch.setenv("SAM_BLOCK_PRECISION", "fp32")
    assert not ray.is_initialized()
    ray.init(
        num_cpus=1, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"SAM_BLOCK_PRECISION": "fp32"}},  # what every worker process starts with
    )  # fmt: skip
    try:
        on_ray = run_scene(tmp_path, "ray", "--precision", "bf16", "--ray", "--workers", "1")
    finally:
        ray.shutdown()
    assert on_ray == bf16
