"""`sam-block track`: generated mp4 files through the real engine and the video step (demo model)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import supervision as sv

from sam_block.cli import main
from sam_block.rle import decode_rle
from tests.test_video_pipeline import WORKFLOW as TEMPLATE_WORKFLOW
from tests.test_video_pipeline import _patch, _write_clip
from tests.video_support import make_clip

NAMES = "abc"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("track")
    frames, truth = make_clip(frames=12, objects=3, seed=1, speed=4.0)
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    (folder / "boxes.json").write_text(
        json.dumps([{"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "class_name": n} for b, n in zip(truth[0], NAMES)])
    )
    with (folder / "boxes.jsonl").open("w") as lines:
        for f, row in enumerate(truth):
            predictions = [
                {"x": (b[0] + b[2]) / 2, "y": (b[1] + b[3]) / 2, "width": b[2] - b[0], "height": b[3] - b[1],
                 "class": NAMES[k], "class_id": k, "confidence": 0.9, "detection_id": f"f{f}o{k}"}
                for k, b in enumerate(row)
            ]  # fmt: skip
            lines.write(json.dumps({"frame": f, "predictions": predictions}) + "\n")
    return folder, truth


def read_outputs(out, stem="clip"):
    records = [json.loads(line) for line in (out / f"{stem}.jsonl").read_text().splitlines()]
    mot = [line.split(",") for line in (out / f"{stem}.mot.txt").read_text().splitlines()]
    return records, mot


def check_consistent(records, mot, size=(240, 320)):
    """JSON lines and MOT rows describe the same tracks, boxes and frames; RLE masks decode."""
    assert all(len(row) == 10 and row[7:] == ["-1", "-1", "-1"] for row in mot)
    from_mot = sorted((int(r[0]), int(r[1]), *(round(float(v), 1) for v in r[2:6])) for r in mot)
    from_json = []
    for record in records:
        for p in record["predictions"]["predictions"]:
            mask = decode_rle(p["rle_mask"])
            assert mask.shape == size and mask.any()
            ys, xs = np.nonzero(mask)
            assert (p["x"] - p["width"] / 2, p["y"] - p["height"] / 2) == (xs.min(), ys.min())  # tight box of the mask
            from_json.append((record["frame"] + 1, p["tracker_id"], round(p["x"] - p["width"] / 2, 1),
                              round(p["y"] - p["height"] / 2, 1), round(p["width"], 1), round(p["height"], 1)))  # fmt: skip
    assert from_mot == sorted(from_json) and from_mot


def test_first_frame_boxes_give_an_mp4_json_lines_and_mot_rows(clip, tmp_path, capsys):
    folder, truth = clip
    out = tmp_path / "out"
    assert (
        main(
            [
                "track",
                str(folder / "clip.mp4"),
                "--boxes",
                str(folder / "boxes.json"),
                "--model",
                "demo",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "1 video(s), 12 frame(s)" in capsys.readouterr().out
    assert sv.VideoInfo.from_video_path(str(out / "clip.mp4")).total_frames == 12
    decoded = list(sv.get_video_frames_generator(str(out / "clip.mp4")))
    assert len(decoded) == 12 and decoded[0].shape == (240, 320, 3)
    records, mot = read_outputs(out)
    assert [r["frame"] for r in records] == list(range(12))
    check_consistent(records, mot)
    first = {p["tracker_id"]: p["class"] for p in records[0]["predictions"]["predictions"]}
    assert sorted(first.values()) == sorted(NAMES[: len(first)]) and len(first) >= 2


def test_per_frame_boxes_keep_each_id_on_one_object_every_second_frame(clip, tmp_path):
    folder, truth = clip
    out = tmp_path / "out"
    args = [
        "track",
        str(folder / "clip.mp4"),
        "--boxes",
        str(folder / "boxes.jsonl"),
        "--model",
        "demo",
        "--every",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    records, mot = read_outputs(out)
    assert [r["frame"] for r in records] == [0, 2, 4, 6, 8, 10]  # the file's frame numbers, with gaps
    check_consistent(records, mot)
    class_of = {}
    for record in records:
        for p in record["predictions"]["predictions"]:
            assert class_of.setdefault(p["tracker_id"], p["class"]) == p["class"], record["frame"]
    assert sorted(class_of.values()) == list(NAMES)


@pytest.mark.slow
def test_a_workflow_with_a_detector_feeds_the_tracker(tmp_path):
    patch = _patch()
    truth = _write_clip(tmp_path / "patch.mp4", patch, 8, 3)
    cv2.imwrite(str(tmp_path / "patch.png"), patch)
    (tmp_path / "wf.json").write_text(json.dumps(TEMPLATE_WORKFLOW))
    out = tmp_path / "out"
    args = [
        "track",
        str(tmp_path / "patch.mp4"),
        "--workflow",
        str(tmp_path / "wf.json"),
        "--param",
        f"template={tmp_path / 'patch.png'}",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    records, mot = read_outputs(out, "patch")
    check_consistent(records, mot)
    assert {int(r[1]) for r in mot} == {1} and len(mot) == len(truth)
    for row, box in zip(mot, truth):
        x, y, w, h = (float(v) for v in row[2:6])
        assert sv.box_iou_batch(np.array([[x, y, x + w, y + h]]), np.array([box], float))[0, 0] > 0.7


@pytest.mark.parametrize(
    "args, words",
    [
        (["track", "{d}/missing.mp4", "--boxes", "{d}/boxes.json"], ["video", "missing.mp4", "does not exist"]),
        (["track", "{d}/garbage.mp4", "--boxes", "{d}/boxes.json"], ["garbage.mp4", "is not a video OpenCV can read"]),
        (["track", "{d}/clip.mp4", "--boxes", "{d}/bad.jsonl"], ["bad.jsonl", "line 2", '"frame": N']),
        (["track", "{d}/clip.mp4", "--boxes", "{d}/boxes.json", "--model", "hiera_huge"], ["hiera_huge", "hiera_tiny"]),
        (
            ["track", "{d}/clip.mp4", "--boxes", "{d}/boxes.json", "--prompt-mode", "every_frame"],
            ["every_frame", "JSON lines"],
        ),
        (
            ["track", "{d}/clip.mp4", "--workflow", "{d}/nostep.json"],
            ["nostep.json", "no sam_block/segment_anything_2_video@v1 step"],
        ),
    ],
    ids=["no-video", "not-a-video", "bad-jsonl", "unknown-version", "mode-needs-lines", "no-video-step"],
)
def test_bad_input_exits_non_zero_with_one_line(clip, tmp_path, capsys, args, words):
    folder, _ = clip
    (folder / "garbage.mp4").write_text("not a video")
    (folder / "bad.jsonl").write_text('{"frame": 0, "predictions": []}\n{"frame": "x"}\n')
    (folder / "nostep.json").write_text(
        json.dumps(
            {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}], "steps": [], "outputs": []}
        )
    )
    argv = [a.format(d=folder) for a in args] + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) if "hiera_huge" in args else _nothing() as raised:
        code = main(argv)
    err = capsys.readouterr().err
    assert (raised.value.code if raised else code) == 2
    assert err.count("\n") == 1 and err.startswith("sam-block")
    for word in words:
        assert word in err, err


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
