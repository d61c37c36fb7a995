"""Names the docstring examples of ``sam_block`` may use without defining them, for
``--doctest-modules`` (pytest runs ``sam_block/`` as well as ``tests/``, see pyproject).

An example in a file this project's hardening did not own (``runtime/tracker.py``) uses
``model``, ``memory``, ``rgb_frame`` and ``next_rgb_frame``: they are the bundled toy ``demo``
model on CPU, an empty track memory and two small frames, so the example really runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if not isinstance(request.node, DoctestItem):
        return
    import torch

    from sam_block.runtime.models import MODELS
    from sam_block.runtime.tracker import TrackMemory

    frame = np.zeros((96, 128, 3), np.uint8)
    frame[10:80, 10:90] = 255
    request.getfixturevalue("doctest_namespace").update(
        np=np,
        model=MODELS.get("demo", torch.device("cpu")),
        memory=TrackMemory(),
        rgb_frame=frame,
        next_rgb_frame=np.roll(frame, 3, axis=1),
    )
