"""`sam-block segment` driven as a user would: real files in, real files out."""

import json
from pathlib import Path

import cv2
import pytest

from sam_block.cli import main
from tests.conftest import EXAMPLES, REPO

DATA = EXAMPLES / "data"


def test_bundled_workflow_is_example_a():
    bundled = REPO / "sam_block" / "workflows" / "boxes_to_masks.json"
    assert json.loads(bundled.read_text()) == json.loads((EXAMPLES / "a_boxes_input.json").read_text())


def test_segment_writes_annotated_png_and_predictions(checkpoint_dir, tmp_path, capsys):
    assert main(["segment", str(DATA / "scene.jpg"), "--boxes", str(DATA / "scene_boxes.json"), "--out", str(tmp_path)]) == 0
    image = cv2.imread(str(DATA / "scene.jpg"))
    annotated = cv2.imread(str(tmp_path / "scene.png"))
    assert annotated is not None and annotated.shape == image.shape
    assert (annotated != image).any()
    payload = json.loads((tmp_path / "scene.json").read_text())
    assert sorted(p["class"] for p in payload["predictions"]) == ["circle", "ellipse", "rectangle"]
    assert all(len(p["points"]) >= 3 for p in payload["predictions"])
    assert "3 mask(s)" in capsys.readouterr().out


def test_plain_and_inference_box_formats_are_equivalent(tmp_path):
    from sam_block.cli import load_boxes

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"x1": 10, "y1": 20, "x2": 50, "y2": 60, "class_name": "cat"}]))
    inference_format = tmp_path / "inference.json"
    inference_format.write_text(
        json.dumps({"image": {"width": 100, "height": 100}, "predictions": [{"x": 30, "y": 40, "width": 40, "height": 40, "class": "cat", "class_id": 0, "confidence": 0.9, "detection_id": "d1"}]})
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
        (lambda d: (DATA / "scene.jpg", _write(d / "odd.json", '[{"x1": 1}]')), "odd.json: a box is malformed"),
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
    code = main(["segment", str(DATA / "scene.jpg"), "--boxes", str(DATA / "scene_boxes.json"), "--out", str(tmp_path), "--version", "hiera_small"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "'hiera_small'" in err and "sam2.1_hiera_small.pt" in err and "https://" in err and "\n" not in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
