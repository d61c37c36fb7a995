"""`sam-block demo --video` writes the first-frame boxes it used, and `sam-block track` on them
reproduces the demo's tracking (issue 20 item 8)."""

import json

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
