"""The Python block under README "Use it in a workflow" runs as written (extracted from the README,
not copied), defines what it uses and passes only inputs its workflow declares."""

import ast
import json
import re

from tests.conftest import REPO


def readme_snippet() -> str:
    section = (REPO / "README.md").read_text().split("## Use it in a workflow", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs_and_segments_the_three_boxes(monkeypatch, capsys):
    code = readme_snippet()
    monkeypatch.chdir(REPO)  # its paths are relative to the repository, as the README says
    namespace = {}
    exec(compile(code, "README.md:Use it in a workflow", "exec"), namespace)
    masks = namespace["masks"]
    assert list(masks["class_name"]) == ["rectangle", "circle", "ellipse"]
    assert masks.mask.shape == (3, *namespace["bgr_image"].shape[:2]) and masks.mask.any(axis=(1, 2)).all()
    assert capsys.readouterr().out.startswith("3 (3, ")


def test_the_readme_snippet_passes_only_declared_inputs():
    tree = ast.parse(readme_snippet())
    runs = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "run"]
    assert len(runs) == 1
    (keyword,) = [k for k in runs[0].keywords if k.arg == "runtime_parameters"]
    given = {key.value for key in keyword.value.keys}
    declared = {i["name"] for i in json.loads((REPO / "example_workflows/a_boxes_input.json").read_text())["inputs"]}
    assert given and given <= declared, given - declared
