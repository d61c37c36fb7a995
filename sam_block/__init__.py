"""sam_block: Segment Anything 2, locally, as a Roboflow Workflows plugin.

Load it with ``WORKFLOWS_PLUGINS=sam_block``; the engine calls :func:`load_blocks`.
"""

from typing import List, Type

__version__ = "0.1.0"


def load_blocks() -> List[Type]:
    """The workflow blocks this plugin contributes (the engine's plugin interface)."""
    from sam_block.blocks.segment_anything_2.v1 import SegmentAnything2BlockV1
    from sam_block.blocks.segment_anything_2_video.v1 import SegmentAnything2VideoBlockV1

    return [SegmentAnything2BlockV1, SegmentAnything2VideoBlockV1]
