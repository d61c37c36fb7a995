"""The dependency bounds in pyproject.toml are true.

The floor of supervision is proven, not assumed: the lowest version pyproject allows is
installed (``pip install --target DIR --no-deps``, from PyPI, cached in pytest's cache) and
core tests run against it in a subprocess with ``PYTHONPATH=DIR:repo``, so that copy
shadows the venv's. Needs PyPI once per machine (skipped, saying so, when it is unreachable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CORE_TESTS = [  # the block through the engine, CompactMask output, serializers and visualizers
    "tests/test_block.py",
    "tests/test_runtime_speedups.py::test_compact_masks_equal_dense_ones",
    "tests/test_runtime_speedups.py::test_compact_output_flows_through_serializer_and_visualizers",
    "tests/test_examples.py::test_example_a_runs",
]
NETWORK_TROUBLE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution",
)


def floor_of(package: str) -> str:
    """The ``>=`` bound of `package` in pyproject's dependencies, as a full version (0.28 → 0.28.0)."""
    [spec] = [d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{re.escape(package)}\s*[<>=!~]", d)]
    floor = re.search(r">=\s*([0-9.]+)", spec).group(1)
    return floor + ".0" * (2 - floor.count("."))


def test_python_version_agrees_between_pyproject_readme_and_this_interpreter():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert "needs Python 3.11" in (REPO / "README.md").read_text()
    assert sys.version_info >= (3, 11)


def test_every_runtime_dependency_we_call_privately_has_a_ceiling():
    deps = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0]: d for d in PYPROJECT["project"]["dependencies"]}
    for package in ("supervision", "rf-sam-2", "inference"):
        assert ">=" in deps[package] and "<" in deps[package].replace("<=", ""), deps[package]


@pytest.fixture(scope="session")
def lowest_supervision(request, tmp_path_factory) -> Path:
    version = floor_of("supervision")
    cache = getattr(request.config, "cache", None)
    target = (
        cache.mkdir(f"supervision-{version}")
        if cache is not None
        else tmp_path_factory.mktemp(f"supervision-{version}")
    )
    if not (target / f"supervision-{version}.dist-info").is_dir():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--upgrade", "--target", str(target), f"supervision=={version}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            if any(word in done.stdout + done.stderr for word in NETWORK_TROUBLE):
                pytest.skip(
                    f"PyPI unreachable, cannot install supervision=={version}: {done.stderr.strip().splitlines()[-1]}"
                )
            raise AssertionError(f"pip install supervision=={version} failed:\n{done.stdout}\n{done.stderr}")
    return target


@pytest.mark.slow
def test_core_tests_pass_with_the_lowest_supervision_allowed(lowest_supervision):
    version = floor_of("supervision")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lowest_supervision), str(REPO)])}
    probe = subprocess.run(
        [sys.executable, "-c", "import supervision; print(supervision.__version__, supervision.__file__)"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    found, location = probe.stdout.split()
    assert found == version and location.startswith(str(lowest_supervision)), probe.stdout + probe.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *CORE_TESTS],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b13 passed\b", done.stdout), done.stdout[-2000:]
