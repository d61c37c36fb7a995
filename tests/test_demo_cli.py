"""`sam-block demo --video` writes the first-frame boxes it used, and `sam-block track` on them
reproduces the demo's tracking (issue 20 item 8); the demos print the README's figures in fp32 and
in bf16 (issue 23)."""

import json

import pytest

from sam_block.cli import main


def test_demo_video_boxes_file_feeds_track_to_the_same_result(tmp_path, capsys):
    demo = tmp_path / "demo"
    assert main(["demo", "--video", "--out", str(demo), "--frames", "6"]) == 0
    printed = capsys.readouterr().out
    boxes_file = demo / "demo_clip_boxes.json"
    boxes = json.loads(boxes_file.read_text())
    assert [sorted(b) for b in boxes] == [["class_name", "x1", "x2", "y1", "y2"]] * len(boxes) and len(boxes) == 3
    assert f"--boxes {boxes_file} --model demo" in printed
    out = tmp_path / "track"
    assert (
        main(
            [
                "track",
                str(demo / "input" / "demo_clip.mp4"),
                "--boxes",
                str(boxes_file),
                "--model",
                "demo",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )

    def tracks(path):
        return [
            [
                (p["tracker_id"], p["class"], p["rle_mask"]["counts"])
                for p in json.loads(line)["predictions"]["predictions"]
            ]
            for line in path.read_text().splitlines()
        ]

    from_demo, from_track = tracks(demo / "demo_clip.jsonl"), tracks(out / "demo_clip.jsonl")
    assert len(from_track) == 6 and all(len(frame) == 3 for frame in from_track[:1])
    assert from_track == from_demo  # the same boxes, model and frames: the very same masks and ids


def _printed_ious(printed: str) -> list:
    """Every 'mean IoU vs ground truth X' and 'copying the first frame's masks: Y' figure printed, in order."""
    figures = [float(part.split()[0].rstrip(")")) for part in printed.split("mean IoU vs ground truth ")[1:]]
    figures += [float(part.split(")")[0]) for part in printed.split("copying the first frame's masks: ")[1:]]
    return figures


@pytest.mark.parametrize(
    "argv, readme",
    [
        (["demo"], [0.895]),
        # two full 60-frame demo runs (the README figures are for the default 60-frame clip)
        pytest.param(["demo", "--video"], [0.965, 0.332], marks=pytest.mark.slow),
    ],
    ids=["image", "video"],
)
def test_demo_prints_the_readme_figures_in_fp32_and_in_bf16(tmp_path, monkeypatch, capsys, argv, readme):
    """The README's demo figures hold in either precision (``auto`` picks bf16 on CPUs with native bf16),
    and bf16 really ran: its masks are not byte-identical to fp32's."""
    outputs = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv("SAM_BLOCK_PRECISION", precision)
        out = tmp_path / precision
        assert main([*argv, "--out", str(out)]) == 0
        assert _printed_ious(capsys.readouterr().out) == readme, precision
        outputs[precision] = _masks(out, video="--video" in argv)
    assert outputs["bf16"] != outputs["fp32"]


def _masks(out, video: bool) -> list:
    """The RLE counts of every mask written (per frame for video), without ids or paths that differ per run."""
    if video:
        return [
            [p["rle_mask"]["counts"] for p in json.loads(line)["predictions"]["predictions"]]
            for line in (out / "demo_clip.jsonl").read_text().splitlines()
        ]
    return [a["segmentation"]["counts"] for a in json.loads((out / "coco.json").read_text())["annotations"]]
