"""Every `sam-block` command shown to users runs: the code blocks of README.md and the examples
in the ``--help`` of every subcommand are parsed (not copied) here and each is run, so an example
cannot rot silently.

How a command is run, as the README's "Command line" section says: offline, on the bundled toy
model (``--param version=demo`` for `run` and `track --workflow`, ``--model demo`` for `segment`
and `track`), in a fresh directory holding a copy of ``example_workflows/`` and small stand-ins
for the names that stand for the user's files (``photos/``, ``clip.mp4``, ``boxes.json``, ...:
:data:`STAND_INS`). Each must exit with 0 and leave the files it promises (:func:`check_outputs`).
One command also runs as written, on the random-weight ``hiera_tiny`` checkpoint of
``tests/conftest.py``: the first one with Meta's default model a new user runs.

A command that cannot run here is in :data:`NOT_RUN` with the reason (the network, a cluster, a
server that runs until stopped). A command that is neither runnable (a subcommand
:func:`check_outputs` knows) nor listed fails the test that bears its name.

Commands run in this process through :func:`sam_block.cli.main`, the function the ``sam-block``
script calls (the engine and the models load once; a subprocess per command would cost ~10 s of
imports each, ~30 commands); `--ray` commands run as a subprocess of ``python -m sam_block.cli``,
since such a run starts and stops its own Ray.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from sam_block.cli import main
from tests.http_server import box_prediction
from tests.support import EXAMPLES, REPO

README = REPO / "README.md"
DATA = EXAMPLES / "data"
OFFLINE_MODEL = "demo"

# `sam-block ...` at the start of a shell command, after optional VAR=value assignments and a path
# to the script (`.venv/bin/sam-block`).
COMMAND = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:\S*/)?sam-block(?:\s|$)")
NETWORK = "downloads Meta's checkpoints: needs the network (downloads are tested against a local server in tests/test_checkpoints.py)"
NOT_RUN: Dict[str, str] = {
    "sam-block download hiera_tiny": NETWORK,
    "sam-block download": NETWORK,
    "sam-block download hiera_small hiera_large": NETWORK,
    "SAM_BLOCK_CHECKPOINT_DIR=/models sam-block download --all": NETWORK,
    "sam-block run workflow.json /shared/photos/ --out out/ --ray auto --workers 8 --gpus-per-worker 0.5": (
        "joins a Ray cluster started with `ray start` on several machines, on shared storage; "
        "the local --ray path runs here (the README's --ray example) and in tests/test_ray.py"
    ),
}
NOT_RUN_SUBCOMMANDS = {"serve": "long-running server; tested in tests/test_serve_*.py"}
# Shown, run, and failing today: expected to fail (strict: the test says so once it is fixed).
BROKEN: Dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# Finding the commands


def _commands_in(text: str) -> List[str]:
    """The `sam-block` commands of shell text: one per line (or per `&&` part), comments and
    quoting resolved by shlex, the script's path dropped: the key by which they are listed."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"\$\([^)]*\)", "VALUE", line)  # VAR=$(command) sam-block ...: the value does not matter
        for part in re.split(r"\s&&\s|\s;\s", line.strip()):
            part = part.strip()
            if not COMMAND.match(part):
                continue
            words = shlex.split(part, comments=True)
            words = [re.sub(r"^\S*/sam-block$", "sam-block", w) for w in words]
            found.append(" ".join(words))
    return found


def readme_commands() -> List[str]:
    """The commands of README.md's fenced code blocks (Python, JSON and YAML blocks aside: the
    Python ones run in tests/test_readme_snippet.py)."""
    text = README.read_text()
    commands = []
    for block in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.M | re.S):
        if block.group(1) not in ("python", "json", "yaml"):
            commands += _commands_in(block.group(2))
    return commands


def help_texts() -> Dict[str, str]:
    """What ``sam-block --help`` and ``sam-block COMMAND --help`` print, for every subcommand."""
    import argparse

    from sam_block.cli.app import build_parser

    [subparsers] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    texts = {}
    for name in [None, *subparsers.choices]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
            main([*([name] if name else []), "--help"])
        assert exited.value.code == 0
        texts[name or "sam-block"] = printed.getvalue()
    return texts


def help_commands() -> List[str]:
    commands = []
    for text in help_texts().values():
        commands += _commands_in("\n".join(line for line in text.splitlines() if COMMAND.match(line.strip())))
    return commands


def shown_commands() -> Dict[str, List[str]]:
    """Every command shown to users, once, with where it is shown."""
    shown: Dict[str, List[str]] = {}
    for where, commands in (("README.md", readme_commands()), ("--help", help_commands())):
        for command in commands:
            if where not in shown.setdefault(command, []):
                shown[command].append(where)
    return shown


SHOWN = shown_commands()


# ---------------------------------------------------------------------------------------------
# Stand-ins for the user's files

SCENE_BOXES = json.loads((DATA / "scene_boxes.json").read_text())
CLIP_FRAMES, CLIP_STEP = 6, 3  # the scene moving right by 3 px a frame


def _clip(path: Path) -> None:
    scene = cv2.imread(str(DATA / "scene.jpg"))
    height, width = scene.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for frame in range(CLIP_FRAMES):
        shift = np.float32([[1, 0, CLIP_STEP * frame], [0, 1, 0]])
        writer.write(cv2.warpAffine(scene, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()


def _per_frame_boxes(path: Path) -> None:
    with path.open("w") as lines:
        for frame in range(CLIP_FRAMES):
            shift = CLIP_STEP * frame
            predictions = [
                box_prediction(b["x1"] + shift, b["y1"], b["x2"] + shift, b["y2"], b["class_name"], k, f"f{frame}-{k}")
                for k, b in enumerate(SCENE_BOXES)
            ]
            lines.write(json.dumps({"frame": frame, "predictions": predictions}) + "\n")


def _photos(path: Path) -> None:
    path.mkdir()
    for name in ("scene.jpg", "scene_mirrored.jpg"):
        shutil.copy(DATA / name, path / name)


def _patch(path: Path) -> None:
    box = SCENE_BOXES[1]  # the circle, with the background around it: one place matches
    cv2.imwrite(str(path), cv2.imread(str(DATA / "scene.jpg"))[box["y1"] : box["y2"], box["x1"] : box["x2"]])


def _copy(source: Path) -> Callable[[Path], None]:
    return lambda path: shutil.copy(source, path)


def _demo_video_output(name: str) -> Callable[[Path], None]:
    """A file `sam-block demo --video` writes (the README's track example runs on them)."""

    def make(path: Path) -> None:
        shutil.copy(run_shown("sam-block demo --video").cwd / "sam-block-demo" / name, path)

    return make


STAND_INS: Dict[str, Callable[[Path], None]] = {
    "photo.jpg": _copy(DATA / "scene.jpg"),
    "scene.jpg": _copy(DATA / "scene.jpg"),
    "photos": _photos,
    "clip.mp4": _clip,
    "other.mp4": _clip,
    "boxes.json": _copy(DATA / "scene_boxes.json"),  # the boxes of scene.jpg and of the clip's first frame
    "first_frame_boxes.json": _copy(DATA / "scene_boxes.json"),
    "per_frame.jsonl": _per_frame_boxes,
    "patch.png": _patch,
    "sam-block-demo/input/demo_clip.mp4": _demo_video_output("input/demo_clip.mp4"),
    "sam-block-demo/demo_clip_boxes.json": _demo_video_output("demo_clip_boxes.json"),
}


# ---------------------------------------------------------------------------------------------
# Running them


@dataclass
class Ran:
    command: str
    argv: List[str]
    cwd: Path
    code: int
    stdout: str
    stderr: str
    env: Dict[str, str] = field(default_factory=dict)


_RAN: Dict[Tuple[str, bool], Ran] = {}
_WORKDIRS: List[Path] = []


def _workdir() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sam_block_readme_"))
    _WORKDIRS.append(path)
    shutil.copytree(EXAMPLES, path / "example_workflows")
    return path


@pytest.fixture(scope="module", autouse=True)
def _clean_workdirs():
    yield
    for path in _WORKDIRS:
        shutil.rmtree(path, ignore_errors=True)


def _declares(workflow: Path, name: str) -> bool:
    try:
        return any(i.get("name") == name for i in json.loads(workflow.read_text()).get("inputs", []))
    except (OSError, ValueError):
        return False


def _offline(argv: List[str], cwd: Path) -> List[str]:
    """The README's rule for running an example offline: the `demo` model."""
    argv = list(argv)
    command = argv[0]
    if command in ("segment", "track") and "--workflow" not in argv:
        if "--model" in argv:
            argv[argv.index("--model") + 1] = OFFLINE_MODEL
        else:
            argv += ["--model", OFFLINE_MODEL]
    workflow = argv[1] if command == "run" else argv[argv.index("--workflow") + 1] if "--workflow" in argv else None
    if workflow is not None and _declares(cwd / workflow, "version"):
        given = [i for i, word in enumerate(argv) if word.startswith("version=") and argv[i - 1] == "--param"]
        for i in given:
            argv[i] = f"version={OFFLINE_MODEL}"
        if not given:
            argv += ["--param", f"version={OFFLINE_MODEL}"]
    return argv


def _prepare(command: str, as_written: bool) -> Tuple[List[str], Dict[str, str], Optional[str], Path]:
    """argv, environment, stdout file and working directory of a shown command."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith("sam-block"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words.pop(0) == "sam-block"
    stdout_file = None
    if ">" in words:
        at = words.index(">")
        stdout_file, words = words[at + 1], words[:at] + words[at + 2 :]
    words = [w[1:] if w.startswith("/") else w for w in words]  # absolute paths (/tmp/demo): inside the directory
    cwd = _workdir()
    for word in words:
        for name in {word, word.split("=", 1)[-1].lstrip("@")}:
            if name.rstrip("/") in STAND_INS and not (cwd / name).exists():
                (cwd / name).parent.mkdir(parents=True, exist_ok=True)
                STAND_INS[name.rstrip("/")](cwd / name.rstrip("/"))
    argv = words if as_written else _offline(words, cwd)
    return argv, env, stdout_file, cwd


def run_shown(command: str, as_written: bool = False) -> Ran:
    """Run a shown command once (later calls return the same run)."""
    if (command, as_written) in _RAN:
        return _RAN[(command, as_written)]
    argv, env, stdout_file, cwd = _prepare(command, as_written)
    if "--ray" in argv:  # starts and stops its own local Ray: a process of its own, as for a user
        done = subprocess.run(
            [sys.executable, "-m", "sam_block.cli", *argv],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        out_buffer, err_buffer = io.StringIO(), io.StringIO()
        saved_env, saved_cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
        try:
            os.environ.update(env)
            os.chdir(cwd)
            with contextlib.redirect_stdout(out_buffer), contextlib.redirect_stderr(err_buffer):
                try:
                    code = main(argv)
                except SystemExit as exited:  # argparse
                    code = exited.code
        finally:
            os.chdir(saved_cwd)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        out, err = out_buffer.getvalue(), err_buffer.getvalue()
    if stdout_file is not None:
        (cwd / stdout_file).write_text(out)
    ran = _RAN[(command, as_written)] = Ran(command, argv, cwd, code, out, err, env)
    return ran


# ---------------------------------------------------------------------------------------------
# What each command promises


def _video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _run_outputs(ran: Ran, inputs: List[Path], every: int) -> List[str]:
    """The output names `run` / `segment` promise: one per image and per N-th video frame."""
    names = []
    for given in inputs:
        path = ran.cwd / given
        files = (
            sorted(p for p in path.iterdir() if p.suffix.lower() in {".jpg", ".png", ".mp4"})
            if path.is_dir()
            else [path]
        )
        for file in files:
            if file.suffix.lower() == ".mp4":
                names += [f"{file.stem}_f{i:06d}" for i in range(0, _video_frames(file), every)]
            else:
                names.append(file.stem)
    return names


def _image_outputs(workflow: dict) -> List[str]:
    """Outputs selecting a visualization step's image: written as NAME.OUTPUT.png."""
    kinds = {s["name"]: s["type"] for s in workflow["steps"]}
    return [
        o["name"]
        for o in workflow["outputs"]
        if re.fullmatch(r"\$steps\.(\w+)\.image", o["selector"])
        and kinds[o["selector"].split(".")[1]].endswith("_visualization@v1")
    ]


def check_outputs(ran: Ran) -> None:
    from sam_block.cli.app import build_parser

    args = build_parser().parse_args(ran.argv)
    assert ran.code == 0, f"{ran.command}: exit code {ran.code}\n{ran.stderr[-3000:]}"
    if args.command in ("run", "segment"):
        out = ran.cwd / args.out
        inputs = args.inputs if args.command == "run" else args.images
        names = _run_outputs(ran, inputs, getattr(args, "every", 1))
        extra = _image_outputs(json.loads((ran.cwd / args.workflow).read_text())) if args.command == "run" else []
        for name in names:
            for suffix in [".png", ".json", *(f".{o}.png" for o in extra)]:
                assert (out / f"{name}{suffix}").is_file(), f"{ran.command}: no {name}{suffix}"
            assert json.loads((out / f"{name}.json").read_text())
        coco = json.loads((out / "coco.json").read_text())
        assert len(coco["images"]) == len(names)
        assert not (out / "failed.jsonl").exists()
        assert f"{len(names)} image(s)" in ran.stdout
    elif args.command == "track":
        out = ran.cwd / args.out
        for video in args.videos:
            stem = Path(video).stem
            frames = len(range(0, _video_frames(ran.cwd / video), args.every))
            assert _video_frames(out / f"{stem}.mp4") == frames
            records = [json.loads(line) for line in (out / f"{stem}.jsonl").read_text().splitlines()]
            assert [r["frame"] for r in records] == list(range(0, _video_frames(ran.cwd / video), args.every))
            tracked = {p["tracker_id"] for r in records for p in r["predictions"]["predictions"]}
            mot_ids = {int(row.split(",")[1]) for row in (out / f"{stem}.mot.txt").read_text().splitlines()}
            assert tracked and mot_ids == tracked, f"{ran.command}: nothing tracked"
    elif args.command == "demo":
        out = ran.cwd / args.out
        promised = (
            ["input/demo_clip.mp4", "demo_clip.mp4", "demo_strip.png", "demo_clip.jsonl", "demo_clip.mot.txt",
             "demo_clip_boxes.json"]
            if args.video
            else ["demo_scene.png", "demo_scene.annotated.png", "demo_scene.json", "coco.json"]
        )  # fmt: skip
        for name in promised:
            assert (out / name).is_file(), f"{ran.command}: no {name}"
        assert "IoU" in ran.stdout
    elif args.command == "describe":
        described = json.loads(ran.stdout)
        assert set(described) == {p.name for p in (REPO / "manifests").glob("*.json")}
    elif args.command == "models":
        assert re.search(r"^demo\s.*\byes\b", ran.stdout, re.M)
    else:
        pytest.fail(
            f"{ran.command}: no check for `sam-block {args.command}` in tests/test_readme_commands.py: "
            "add one to check_outputs, or list it in NOT_RUN with the reason"
        )


# ---------------------------------------------------------------------------------------------
# The tests


def _slow(command: str) -> bool:
    """Over ~15 s on 2 cores: a local Ray start, a generated 60–90-frame clip made or tracked,
    segment-everything (32 × 32 points) on several images."""
    return bool(re.search(r"--ray|--video|sam-block-demo/input/|f_segment_everything\.json photos/ clip", command))


def _params():
    for command, where in SHOWN.items():
        marks = [pytest.mark.slow] if _slow(command) else []
        if command in BROKEN:
            marks.append(pytest.mark.xfail(strict=True, reason=BROKEN[command]))
        yield pytest.param(command, marks=marks, id=f"{'+'.join(where)}: {command}")


def _not_run_reason(command: str) -> Optional[str]:
    words = command.split()
    subcommand = next((w for w in words[words.index("sam-block") + 1 :] if not w.startswith("-")), None)
    return NOT_RUN.get(command) or NOT_RUN_SUBCOMMANDS.get(subcommand)


def test_commands_are_found_in_the_readme_and_every_help():
    """The parser sees what users see: commands of every part of the README and of each --help."""
    readme, helps = set(readme_commands()), set(help_commands())
    assert "sam-block demo" in readme and "sam-block demo --video" in readme
    assert any(c.startswith("sam-block run ") and "--ray" in c for c in readme)
    assert "SAM_BLOCK_CHECKPOINT_DIR=/models sam-block download --all" in helps  # env prefix, comment stripped
    assert "sam-block download" in helps  # `sam-block download  # the default, hiera_tiny`
    for subcommand in ("run", "segment", "track", "download", "describe", "demo"):
        assert any(c.split()[1] == subcommand for c in helps), subcommand


@pytest.mark.parametrize("command", list(_params()))
def test_shown_command_runs(command):
    reason = _not_run_reason(command)
    if reason is not None:
        pytest.skip(reason)
    check_outputs(run_shown(command))


def test_the_quick_start_segment_runs_as_written_on_the_default_model(checkpoint_dir):
    """The README's first command with Meta's model (after `sam-block download hiera_tiny`), as
    written: `hiera_tiny`, here the random-weight checkpoint of tests/conftest.py."""
    [command] = {c for c in readme_commands() if c.startswith("sam-block segment example_workflows/data/scene.jpg")}
    assert "--model" not in command
    ran = run_shown(command, as_written=True)
    check_outputs(ran)
    assert "3 mask(s)" in ran.stdout  # one per box of scene_boxes.json


def test_the_readme_shows_the_per_image_boxes_file_as_it_is():
    shown = "\n".join(line.strip() for line in README.read_text().splitlines())
    assert "\n".join(line.strip() for line in (DATA / "per_image_boxes.json").read_text().splitlines()) in shown
    per_image = json.loads((DATA / "per_image_boxes.json").read_text())
    assert sorted(per_image) == sorted(p.name for p in DATA.glob("*.jpg"))  # every image of the folder has its boxes


def test_the_per_image_example_gives_each_image_its_own_boxes():
    """`run ... example_workflows/data/ --per-image example_workflows/data/per_image_boxes.json`: each
    image is prompted with its own boxes: the mirrored scene's masks are the mirror of the scene's."""
    commands = [c for c in SHOWN if "--per-image example_workflows/data/per_image_boxes.json" in c]
    assert commands, "the README and --help show the per-image example"
    ran = run_shown(commands[0])
    check_outputs(ran)
    per_image = json.loads((DATA / "per_image_boxes.json").read_text())
    found = {
        name: json.loads((ran.cwd / "out" / f"{Path(name).stem}.json").read_text())["predictions"] for name in per_image
    }
    for name, own in per_image.items():
        assert [p["class"] for p in found[name]["predictions"]] == [b["class_name"] for b in own["boxes"]]
    width = found["scene.jpg"]["image"]["width"]
    for scene, mirrored in zip(found["scene.jpg"]["predictions"], found["scene_mirrored.jpg"]["predictions"]):
        assert abs(mirrored["x"] - (width - scene["x"])) <= 10 and abs(mirrored["y"] - scene["y"]) <= 10, (
            scene,
            mirrored,
        )
