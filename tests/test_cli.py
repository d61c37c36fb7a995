"""`sam-block segment` driven as a user would: real files in, real files out."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from sam_block.cli import main
from tests.conftest import EXAMPLES, REPO, FileServer, mask_iou

DATA = EXAMPLES / "data"


def test_bundled_workflow_is_example_a():
    bundled = REPO / "sam_block" / "workflows" / "boxes_to_masks.json"
    assert json.loads(bundled.read_text()) == json.loads((EXAMPLES / "a_boxes_input.json").read_text())


def test_segment_writes_annotated_png_and_predictions(checkpoint_dir, tmp_path, capsys):
    assert (
        main(["segment", str(DATA / "scene.jpg"), "--boxes", str(DATA / "scene_boxes.json"), "--out", str(tmp_path)])
        == 0
    )
    image = cv2.imread(str(DATA / "scene.jpg"))
    annotated = cv2.imread(str(tmp_path / "scene.png"))
    assert annotated is not None and annotated.shape == image.shape
    assert (annotated != image).any()
    payload = json.loads((tmp_path / "scene.json").read_text())
    assert sorted(p["class"] for p in payload["predictions"]) == ["circle", "ellipse", "rectangle"]
    # exact masks, not polygons: each rle_mask decodes to the mask coco.json holds for that box
    from sam_block.rle import decode_rle

    assert all("points" not in p for p in payload["predictions"])
    coco = COCO(str(tmp_path / "coco.json"))
    by_class = {
        coco.loadCats(a["category_id"])[0]["name"]: coco.annToMask(a).astype(bool)
        for a in coco.loadAnns(coco.getAnnIds())
    }
    for p in payload["predictions"]:
        mask = decode_rle(p["rle_mask"])
        assert mask.shape == image.shape[:2] and np.array_equal(mask, by_class[p["class"]])
    assert "3 mask(s)" in capsys.readouterr().out


def test_plain_and_inference_box_formats_are_equivalent(tmp_path):
    from sam_block.cli import load_boxes

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"x1": 10, "y1": 20, "x2": 50, "y2": 60, "class_name": "cat"}]))
    inference_format = tmp_path / "inference.json"
    inference_format.write_text(
        json.dumps(
            {
                "image": {"width": 100, "height": 100},
                "predictions": [
                    {
                        "x": 30,
                        "y": 40,
                        "width": 40,
                        "height": 40,
                        "class": "cat",
                        "class_id": 0,
                        "confidence": 0.9,
                        "detection_id": "d1",
                    }
                ],
            }
        )
    )
    a, b = load_boxes(plain), load_boxes(inference_format)
    assert a.xyxy.tolist() == b.xyxy.tolist() == [[10, 20, 50, 60]]
    assert list(a["class_name"]) == list(b["class_name"]) == ["cat"]
    assert list(b["detection_id"]) == ["d1"]


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda d: (d / "nope.jpg", DATA / "scene_boxes.json"), "nope.jpg does not exist"),
        (lambda d: (DATA / "scene.jpg", d / "missing.json"), "missing.json does not exist"),
        (lambda d: (DATA / "scene.jpg", _write(d / "bad.json", "{not json")), "bad.json is not valid JSON"),
        (
            lambda d: (DATA / "scene.jpg", _write(d / "odd.json", '[{"x1": 1}]')),
            "odd.json: box 0 misses 'y1', 'x2', 'y2'; expected",
        ),
        (lambda d: (_write(d / "text.jpg", "hello"), DATA / "scene_boxes.json"), "text.jpg is not an image"),
    ],
)
def test_user_errors_are_one_clear_line_and_non_zero_exit(setup, expected, tmp_path, capsys):
    image, boxes = setup(tmp_path)
    assert main(["segment", str(image), "--boxes", str(boxes), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert expected in err and err.startswith("sam-block: error:") and "\n" not in err


def test_missing_checkpoint_is_explained_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty"))
    code = main(
        [
            "segment",
            str(DATA / "scene.jpg"),
            "--boxes",
            str(DATA / "scene_boxes.json"),
            "--out",
            str(tmp_path),
            "--model",
            "hiera_small",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "'hiera_small'" in err and "sam2.1_hiera_small.pt" in err and "https://" in err and "\n" not in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the other commands
# They run the toy `demo` model (256 x 256 input): real weights, a real engine, seconds on CPU.

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from sam_block.demo.scenes import make_scene  # noqa: E402

TEMPLATE_WORKFLOW = {
    "version": "1.0",
    "inputs": [{"type": "WorkflowImage", "name": "image"}, {"type": "WorkflowImage", "name": "template"}],
    "steps": [
        {
            "type": "roboflow_core/template_matching@v1",
            "name": "matching",
            "image": "$inputs.image",
            "template": "$inputs.template",
            "matching_threshold": 0.9,
        },
        {
            "type": "sam_block/segment_anything_2@v1",
            "name": "sam",
            "images": "$inputs.image",
            "boxes": "$steps.matching.predictions",
            "version": "demo",
        },
        {
            "type": "roboflow_core/mask_visualization@v1",
            "name": "masks",
            "image": "$inputs.image",
            "predictions": "$steps.sam.predictions",
        },
    ],
    "outputs": [
        {"type": "JsonField", "name": "matches", "selector": "$steps.matching.predictions"},
        {"type": "JsonField", "name": "predictions", "selector": "$steps.sam.predictions"},
        {"type": "JsonField", "name": "visualization", "selector": "$steps.masks.image"},
    ],
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A generated scene as a PNG, one of its shapes cut out as a template, and the truth."""
    directory = tmp_path_factory.mktemp("shapes")
    scene = make_scene(5)
    image = np.ascontiguousarray(scene.image[..., ::-1])
    cv2.imwrite(str(directory / "scene.png"), image)
    biggest = int(np.argmax(scene.masks.sum((1, 2))))
    x1, y1, x2, y2 = scene.boxes[biggest].astype(int)
    cv2.imwrite(str(directory / "template.png"), image[y1:y2, x1:x2])
    (directory / "workflow.json").write_text(json.dumps(TEMPLATE_WORKFLOW))
    return directory, scene, biggest


def test_run_writes_annotation_json_image_outputs_and_coco(shapes, tmp_path, capsys):
    directory, scene, biggest = shapes
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(directory / "workflow.json"),
            str(directory / "scene.png"),
            "--out",
            str(out),
            "--param",
            f"template={directory / 'template.png'}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "1 mask(s)" in capsys.readouterr().out  # 2 detection outputs: the match (box) and its mask
    annotated = cv2.imread(str(out / "scene.png"))
    assert annotated is not None and annotated.shape == (256, 256, 3)
    assert cv2.imread(str(out / "scene.visualization.png")) is not None
    payload = json.loads((out / "scene.json").read_text())
    assert set(payload) == {"matches", "predictions", "visualization"}
    assert len(payload["matches"]["predictions"]) == 1 and len(payload["predictions"]["predictions"]) == 1
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 1 and len(coco.getAnnIds()) == 1
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    mask = coco.annToMask(annotation).astype(bool)
    assert mask.shape == (256, 256) and annotation["area"] == mask.sum()
    from sam_block.rle import decode_rle

    assert np.array_equal(
        decode_rle(payload["predictions"]["predictions"][0]["rle_mask"]), mask
    )  # exact in the JSON too
    assert "rle_mask" not in payload["matches"]["predictions"][0]  # boxes stay boxes
    x1, y1, x2, y2 = scene.boxes[biggest]  # the template was found where it was cut out
    match = payload["matches"]["predictions"][0]
    assert abs(match["x"] - (x1 + x2) / 2) <= 2 and abs(match["y"] - (y1 + y2) / 2) <= 2


def test_run_folder_and_video_every_nth_frame_with_params_from_a_file(shapes, tmp_path, capsys):
    directory, scene, _ = shapes
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(directory / "scene.png", inputs / "a.png")
    writer = cv2.VideoWriter(str(inputs / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 256))
    for _ in range(5):
        writer.write(cv2.imread(str(directory / "scene.png")))
    writer.release()
    x1, y1, x2, y2 = (float(v) for v in scene.boxes[0])
    boxes = {
        "image": {"width": 256, "height": 256},
        "predictions": [
            {
                "x": (x1 + x2) / 2,
                "y": (y1 + y2) / 2,
                "width": x2 - x1,
                "height": y2 - y1,
                "class": "shape",
                "class_id": 0,
                "confidence": 1.0,
                "detection_id": "s0",
            }
        ],
    }
    (tmp_path / "boxes.json").write_text(json.dumps([boxes]))
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(REPO / "sam_block/workflows/boxes_to_masks.json"),
            str(inputs),
            "--out",
            str(out),
            "--every",
            "2",
            "--param",
            f"boxes=@{tmp_path / 'boxes.json'}",
            "--param",
            "version=demo",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["a.png", "clip_f000000.png", "clip_f000002.png", "clip_f000004.png"]
    coco = json.loads((out / "coco.json").read_text())
    assert [i["file_name"].rsplit("/", 1)[-1] for i in coco["images"]] == [
        "a.png",
        "clip.avi#frame=0",
        "clip.avi#frame=2",
        "clip.avi#frame=4",
    ]
    assert len(coco["annotations"]) == 4 and {c["name"] for c in coco["categories"]} == {"shape"}
    assert (
        json.loads((out / "clip_f000002.json").read_text())["predictions"]["predictions"][0]["parent_id"] == "s0"
    )  # run: every output by name


@pytest.mark.parametrize(
    "args, expected",
    [
        (lambda d: ["run", str(d / "nope.json"), str(d / "scene.png")], "workflow file"),
        (lambda d: ["run", str(_write(d / "bad.json", "{oops")), str(d / "scene.png")], "is not valid JSON"),
        (
            lambda d: ["run", str(_write(d / "nosteps.json", "{}")), str(d / "scene.png")],
            "is not a workflow definition",
        ),
        (
            lambda d: ["run", str(REPO / "sam_block/workflows/boxes_to_masks.json"), str(d / "missing.png")],
            "missing.png does not exist",
        ),
        (
            lambda d: [
                "run",
                str(REPO / "sam_block/workflows/boxes_to_masks.json"),
                str(d / "scene.png"),
                "--param",
                "version",
            ],
            "is not NAME=VALUE",
        ),
        (
            lambda d: [
                "run",
                str(REPO / "sam_block/workflows/boxes_to_masks.json"),
                str(d / "scene.png"),
                "--param",
                "version=hiera_huge",
                "--param",
                'boxes=[{"image": {"width": 256, "height": 256}, "predictions": []}]',
            ],
            "version",
        ),
        (
            lambda d: [
                "run",
                str(
                    _write(d / "noimage.json", json.dumps({"version": "1.0", "inputs": [], "steps": [], "outputs": []}))
                ),
                str(d / "scene.png"),
            ],
            "no WorkflowImage input",
        ),
    ],
)
def test_run_errors_are_one_clear_line(args, expected, shapes, tmp_path, capsys):
    directory, _, _ = shapes
    for name in ("scene.png",):
        shutil.copy(directory / name, tmp_path / name)
    assert main([*args(tmp_path), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("sam-block: error:") and "\n" not in err and expected in err, err


def test_demo_writes_pictures_json_and_coco_offline(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "demo_scene.annotated.png") in out and "mean IoU vs ground truth" in out
    iou = float(out.split("mean IoU vs ground truth ")[1].split(")")[0])
    # the printed figure is the IoU of each shape's own mask (found by its parent box id in
    # the JSON, decoded from coco.json's RLE) against the scene's ground truth, recomputed here
    from pycocotools import mask as mask_utils

    truth = make_scene(0).masks.repeat(2, axis=1).repeat(2, axis=2)
    coco = json.loads((tmp_path / "coco.json").read_text())
    parents = [p["parent_id"] for p in json.loads((tmp_path / "demo_scene.json").read_text())["predictions"]]
    ious = []
    for annotation, parent in zip(coco["annotations"], parents):
        mask = mask_utils.decode(
            {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        ).astype(bool)
        ious.append(mask_iou(mask, truth[int(parent.split("-")[1])]))
    assert len(ious) == len(truth)
    assert iou == pytest.approx(np.mean(ious), abs=0.0015)
    assert iou >= 0.85  # the demo model segments its own kind of scene (seed 0: 0.895)
    source, annotated = (
        cv2.imread(str(tmp_path / "demo_scene.png")),
        cv2.imread(str(tmp_path / "demo_scene.annotated.png")),
    )
    assert source.shape == annotated.shape == (512, 512, 3) and (source != annotated).any()
    predictions = json.loads((tmp_path / "demo_scene.json").read_text())["predictions"]
    scene = make_scene(0)
    assert sorted(p["class"] for p in predictions) == sorted(scene.kinds)
    assert len(COCO(str(tmp_path / "coco.json")).getAnnIds()) == len(scene.kinds)


def test_describe_prints_the_committed_manifest(capsys):
    assert main(["describe"]) == 0
    printed = json.loads(capsys.readouterr().out)
    committed = {p.name: json.loads(p.read_text()) for p in (REPO / "manifests").glob("*.json")}
    assert sorted(printed) == ["sam_block.segment_anything_2.v1.json", "sam_block.segment_anything_2_video.v1.json"]
    assert printed == committed


@pytest.fixture
def mirror_server(monkeypatch, tmp_path, tiny_checkpoint):
    """A loopback HTTP server standing in for Meta's checkpoint directory; an empty checkpoint dir."""
    with FileServer({"/sam2.1_hiera_tiny.pt": tiny_checkpoint.read_bytes()}) as httpd:
        monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_BASE_URL", httpd.url + "/")
        monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
        monkeypatch.delenv("SAM_BLOCK_OFFLINE")
        yield httpd


@pytest.fixture
def mirror(mirror_server, tmp_path):
    return tmp_path / "ckpt"


def test_download_fetches_from_the_mirror_atomically(mirror, tiny_checkpoint, capsys):
    assert main(["download", "hiera_tiny", "--no-progress"]) == 0
    assert (mirror / "sam2.1_hiera_tiny.pt").read_bytes() == tiny_checkpoint.read_bytes()
    assert [p.name for p in mirror.iterdir()] == ["sam2.1_hiera_tiny.pt"]  # no temporary file left
    assert "downloaded to" in capsys.readouterr().out
    assert main(["download", "hiera_tiny", "demo"]) == 0
    out = capsys.readouterr().out
    assert "already present" in out and "bundled with sam_block" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["download", "hiera_small", "--no-progress"], "sam2.1_hiera_small.pt"),  # 404 on the mirror
        (["download", "hiera_huge"], "Unknown SAM 2 version 'hiera_huge'"),
    ],
)
def test_download_failures_say_why_in_one_line(argv, expected, mirror, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sam-block: error:") and expected in err
    assert not mirror.exists() or not any(mirror.iterdir())


def test_download_offline_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path))
    assert main(["download", "hiera_large"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "SAM_BLOCK_OFFLINE=1" in err and "sam2.1_hiera_large.pt" in err


@pytest.mark.parametrize("command", [[], ["run"], ["segment"], ["download"], ["describe"], ["demo"]])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "sam-block " in help_text


@pytest.mark.slow  # 50 s on the shared 2-core machine (a fresh interpreter)
def test_installed_console_script_runs_the_demo(tmp_path):
    script = Path(sys.executable).with_name("sam-block")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(script), "demo", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "annotated:" in done.stdout and (tmp_path / "demo_scene.annotated.png").is_file()
    bad = subprocess.run(
        [str(script), "run", str(tmp_path / "nope.json"), "x.png", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"sam-block: error: workflow file {tmp_path / 'nope.json'} does not exist"
    )


# --------------------------------------------------------------------------- the parser: one line, --version, --debug


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["segment", "x.jpg"],
            "sam-block: error: the following arguments are required: --boxes, --out; see `sam-block segment --help`",
        ),
        (["frobnicate"], "sam-block: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (
            ["run", "w.json", "x.jpg", "--out", "o", "--every", "two"],
            "sam-block: error: argument --every: invalid int value: 'two'; see `sam-block run --help`",
        ),
    ],
)
def test_argument_errors_are_one_line_without_usage(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith(expected), err
    assert "usage:" not in err


def test_segment_rejects_an_unknown_version_while_parsing(tmp_path, capsys):
    """Before anything is read or the engine imported: the image and boxes do not even exist."""
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "segment",
                str(tmp_path / "nope.jpg"),
                "--boxes",
                str(tmp_path / "nope.json"),
                "--out",
                str(tmp_path),
                "--model",
                "hiera_huge",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "sam-block: error: argument --model: Unknown SAM 2 version 'hiera_huge'. "
        "Use one of: hiera_tiny, hiera_small, hiera_b_plus, hiera_large, demo, sam2_hiera_tiny, "
    ), err
    assert err.endswith("; see `sam-block segment --help`\n") and err.count("\n") == 1, err


def test_version_prints_the_package_version(capsys):
    from sam_block import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"sam-block {__version__}\n"


def test_debug_adds_the_traceback_down_to_the_root_cause(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(
        "SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty")
    )  # offline (conftest): hiera_small is missing
    argv = [
        "segment",
        str(DATA / "scene.jpg"),
        "--boxes",
        str(DATA / "scene_boxes.json"),
        "--out",
        str(tmp_path),
        "--model",
        "hiera_small",
    ]
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert plain.count("\n") == 1 and "Traceback" not in plain
    assert main(["--debug", *argv]) == 2
    debug = capsys.readouterr().err
    assert debug.startswith("Traceback (most recent call last):")
    assert (
        "in resolve_checkpoint" in debug and "sam_block.errors.CheckpointMissingError" in debug
    )  # where it really failed
    assert debug.splitlines()[-1] == plain.strip()  # and the same one line last


def test_download_shows_a_bar_only_on_a_terminal_unless_forced(mirror, capsys):
    """stderr captured here is not a terminal, like a file or a pipe: no bar unless --progress."""
    assert main(["download", "hiera_tiny"]) == 0
    assert capsys.readouterr().err == ""
    (mirror / "sam2.1_hiera_tiny.pt").unlink()
    assert main(["download", "hiera_tiny", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "sam2.1_hiera_tiny.pt" in err and "100%" in err


def test_ray_only_flags_without_ray_are_refused_not_ignored(tmp_path, capsys):
    argv = [
        "run",
        str(REPO / "sam_block/workflows/boxes_to_masks.json"),
        str(DATA / "scene.jpg"),
        "--out",
        str(tmp_path),
        "--gpus-per-worker",
        "1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gpus-per-worker" in err and "--ray" in err
    assert not any(tmp_path.iterdir())  # refused before any work


# --------------------------------------------------------------------------- run: nothing lost, exit codes that tell the truth

BOXES_TO_MASKS = REPO / "sam_block/workflows/boxes_to_masks.json"


def _box(scene, index, name="shape"):
    x1, y1, x2, y2 = (float(v) for v in scene.boxes[index])
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class_name": name}


@pytest.fixture
def folder_with_a_corrupt_image(shapes, tmp_path):
    directory, scene, biggest = shapes
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(directory / "scene.png", inputs / name)
    (inputs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))  # a PNG signature, then garbage
    (tmp_path / "boxes.json").write_text(json.dumps([_box(scene, biggest)]))
    return inputs, tmp_path / "boxes.json"


def test_plain_run_does_every_readable_input_and_lists_each_unreadable_one(
    folder_with_a_corrupt_image, tmp_path, capsys
):
    inputs, boxes = folder_with_a_corrupt_image
    out = tmp_path / "out"
    argv = [
        "run",
        str(BOXES_TO_MASKS),
        str(inputs),
        "--out",
        str(out),
        "--param",
        f"boxes=@{boxes}",
        "--param",
        "version=demo",
        "--no-progress",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    broken = inputs / "b.png"
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "c.json", "c.png", "coco.json", "failed.jsonl"]
    assert [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()] == [
        {"name": "b", "source": str(broken), "reason": f"{broken} is not an image OpenCV can read"}
    ]
    assert f"{broken}: failed: {broken} is not an image OpenCV can read" in captured.err  # named on stderr
    assert (
        f"1 input(s) failed, 2 done; reasons in {out / 'failed.jsonl'}" in captured.err
        and "Traceback" not in captured.err
    )
    assert "2 image(s), 2 mask(s)" in captured.out  # the summary line
    assert [i["file_name"] for i in json.loads((out / "coco.json").read_text())["images"]] == [
        str(inputs / "a.png"),
        str(inputs / "c.png"),
    ]

    shutil.copy(inputs / "a.png", broken)  # repaired: everything is processed, exit 0, no failed.jsonl left behind
    assert main(argv) == 0
    assert not (out / "failed.jsonl").exists() and "3 image(s), 3 mask(s)" in capsys.readouterr().out


def test_run_exits_1_when_every_input_failed_and_2_on_a_setup_error(
    folder_with_a_corrupt_image, tmp_path, monkeypatch, capsys
):
    inputs, boxes = folder_with_a_corrupt_image
    for name in ("a.png", "c.png"):
        (inputs / name).write_text("not an image either")
    argv = ["run", str(BOXES_TO_MASKS), str(inputs), "--param", f"boxes=@{boxes}", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--param", "version=demo"]) == 1
    assert "0 image(s), 0 mask(s)" in capsys.readouterr().out
    assert len((tmp_path / "out" / "failed.jsonl").read_text().splitlines()) == 3

    shutil.copy(
        DATA / "scene.jpg", inputs / "a.png"
    )  # readable, but the checkpoint is missing: every image would fail alike
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path / "empty"))
    assert main([*argv, "--out", str(tmp_path / "setup"), "--param", "version=hiera_small"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(
            f"sam-block: error: {inputs / 'a.png'}: the workflow failed: SAM 2 checkpoint for version 'hiera_small'"
        )
        and "sam2.1_hiera_small.pt" in err
    )
    assert (
        err.count("\n") == 1 and not (tmp_path / "setup" / "failed.jsonl").exists()
    )  # one line, not one failure per image


def test_an_input_the_workflow_does_not_declare_is_refused_naming_it_and_the_inputs(tmp_path, capsys):
    argv = [
        "run",
        str(BOXES_TO_MASKS),
        str(DATA / "scene.jpg"),
        "--out",
        str(tmp_path / "out"),
        "--param",
        "nosuch=1",
        "--param",
        "version=demo",
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "sam-block: error: --param nosuch: the workflow has no input 'nosuch'; its inputs: image (the images), boxes (required), "
        'version (default "hiera_tiny"), threshold (default 0.0), multimask_output (default true)\n'
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_required_input_says_how_to_pass_it(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                str(BOXES_TO_MASKS),
                str(DATA / "scene.jpg"),
                "--out",
                str(tmp_path / "out"),
                "--param",
                "version=demo",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith(
            "sam-block: error: the workflow needs input 'boxes', which is not given: pass it with --param boxes=@FILE"
        )
        and err.count("\n") == 1
    )
    assert "--per-image FILE" in err and not (tmp_path / "out").exists()


def _as_predictions(box, image=None):
    payload = {
        "predictions": [
            {
                "x": (box["x1"] + box["x2"]) / 2,
                "y": (box["y1"] + box["y2"]) / 2,
                "width": box["x2"] - box["x1"],
                "height": box["y2"] - box["y1"],
                "class": box["class_name"],
            }
        ]
    }
    return {**payload, "image": image} if image else payload


@pytest.mark.parametrize(
    "shape",
    [
        lambda box: [box],  # the plain list, as `segment --boxes` takes it
        lambda box: _as_predictions(box),  # inference's predictions, no image size
        lambda box: _as_predictions(box, {"width": 256, "height": 256}),  # inference's full format
        lambda box: [_as_predictions(box, {"width": 256, "height": 256})],  # the engine's batch of one image
    ],
    ids=["plain-list", "predictions", "predictions-with-image", "batch-of-one"],
)
def test_param_boxes_takes_every_format_segment_boxes_takes(shape, shapes, tmp_path, capsys):
    directory, scene, biggest = shapes
    box = _box(scene, biggest, "square")
    (tmp_path / "boxes.json").write_text(json.dumps(shape(box)))
    run = [
        "run",
        str(BOXES_TO_MASKS),
        str(directory / "scene.png"),
        "--out",
        str(tmp_path / "run"),
        "--param",
        f"boxes=@{tmp_path / 'boxes.json'}",
        "--param",
        "version=demo",
    ]
    assert main(run) == 0, capsys.readouterr().err
    (tmp_path / "plain.json").write_text(json.dumps([box]))
    assert (
        main(
            [
                "segment",
                str(directory / "scene.png"),
                "--boxes",
                str(tmp_path / "plain.json"),
                "--out",
                str(tmp_path / "segment"),
                "--model",
                "demo",
            ]
        )
        == 0
    )
    ran = json.loads((tmp_path / "run" / "scene.json").read_text())["predictions"]["predictions"]
    segmented = json.loads((tmp_path / "segment" / "scene.json").read_text())["predictions"]
    assert [(p["class"], p["rle_mask"]) for p in ran] == [(p["class"], p["rle_mask"]) for p in segmented] and len(
        ran
    ) == 1
    assert (
        json.loads((tmp_path / "run" / "coco.json").read_text())["annotations"]
        == json.loads((tmp_path / "segment" / "coco.json").read_text())["annotations"]
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        (
            [{"x1": 1, "y1": 2}],
            "--param boxes: box 0 misses 'x2', 'y2'; expected inference's predictions {\"predictions\": [{\"x\": 60",
        ),
        (
            {"predictions": [{"x": 5, "y": 5, "w": 3, "h": 3}]},
            "--param boxes: box 0 misses 'width', 'height'; expected",
        ),
        ({"boxes": []}, "--param boxes: an object of boxes needs 'predictions' (found 'boxes'); expected"),
        ([{"x1": 1, "y1": 2, "x2": "far", "y2": 3}], "--param boxes: box 0: x2 is 'far', not a number"),
        (
            [_as_predictions({"x1": 0, "y1": 0, "x2": 1, "y2": 1, "class_name": "a"})] * 2,
            "--param boxes: 2 entries, but it holds one image's boxes; for boxes per image use --per-image FILE",
        ),
    ],
)
def test_a_wrong_box_shape_names_the_missing_keys_and_the_expected_shape(value, expected, tmp_path, capsys):
    (tmp_path / "boxes.json").write_text(json.dumps(value))
    assert (
        main(
            [
                "run",
                str(BOXES_TO_MASKS),
                str(DATA / "scene.jpg"),
                "--out",
                str(tmp_path / "out"),
                "--param",
                f"boxes=@{tmp_path / 'boxes.json'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"sam-block: error: {expected}") and err.count("\n") == 1, err
    assert "x1" in err and "width" in err  # both shapes shown
    assert not (tmp_path / "out").exists()


def test_per_image_inputs_in_a_plain_run(shapes, tmp_path, capsys):
    """Each image its own boxes (keyed by file name or stem, any box format); an image the file
    does not list is a failure of that image, named, not of the run."""
    directory, scene, _ = shapes
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(directory / "scene.png", inputs / name)
    per_image = {
        "a.png": {"boxes": [_box(scene, 0, "first")]},
        "b": {"boxes": _as_predictions(_box(scene, 1, "second"))},
    }
    (tmp_path / "per_image.json").write_text(json.dumps(per_image))
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(BOXES_TO_MASKS),
                str(inputs),
                "--out",
                str(out),
                "--param",
                "version=demo",
                "--per-image",
                str(tmp_path / "per_image.json"),
                "--no-progress",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    classes = {
        stem: [p["class"] for p in json.loads((out / f"{stem}.json").read_text())["predictions"]["predictions"]]
        for stem in ("a", "b")
    }
    assert classes == {"a": ["first"], "b": ["second"]}
    [failed] = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert failed == {
        "name": "c",
        "source": str(inputs / "c.png"),
        "reason": "no 'boxes' for c: --per-image has no 'boxes' for it and no --param gives one",
    }
    assert f"{inputs / 'c.png'}: failed:" in err

    (tmp_path / "bad.json").write_text(json.dumps({"a.png": {"boxes": [{"x": 1}]}}))
    assert (
        main(
            [
                "run",
                str(BOXES_TO_MASKS),
                str(inputs),
                "--out",
                str(tmp_path / "bad"),
                "--param",
                "version=demo",
                "--per-image",
                str(tmp_path / "bad.json"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith(
        "sam-block: error: --per-image a.png: boxes: box 0 misses 'x1', 'y1', 'x2', 'y2'; expected"
    )
