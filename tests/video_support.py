"""Side-effect-free helpers of the video tests and benchmarks: generated clips, Meta's
video predictor on the same checkpoint, JPEG round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

COLORS = [(30, 40, 220), (220, 180, 20), (40, 200, 60), (200, 60, 200), (20, 200, 220), (120, 120, 250)]


def make_clip(
    frames: int = 20,
    height: int = 240,
    width: int = 320,
    objects: int = 3,
    seed: int = 0,
    speed: float = 3.0,
    exits: Sequence[int] = (),
) -> Tuple[List[np.ndarray], List[List[Optional[Tuple[int, int, int, int]]]]]:
    """BGR frames of filled shapes moving over a noisy background, and each object's box per frame.

    Objects listed in `exits` run off the right edge; a box is ``None`` once its object is gone.
    """
    rng = np.random.default_rng(seed)
    background = rng.normal(110, 20, (height, width, 3)).clip(0, 255).astype(np.uint8)
    starts = [(int(rng.integers(20, width - 90)), int(rng.integers(20, height - 80))) for _ in range(objects)]
    sizes = [(int(rng.integers(30, 55)), int(rng.integers(28, 50))) for _ in range(objects)]
    velocities = [rng.uniform(-1, 1, 2) * speed for _ in range(objects)]
    for k in exits:
        velocities[k] = np.array([width / max(frames // 2, 1), 0.0])
    clip, boxes = [], []
    for f in range(frames):
        image = background.copy()
        row = []
        for k in range(objects):
            x = starts[k][0] + velocities[k][0] * f
            y = starts[k][1] + velocities[k][1] * f
            if k not in exits:  # bounce inside the frame
                x = _bounce(x, width - sizes[k][0] - 2)
                y = _bounce(y, height - sizes[k][1] - 2)
            x1, y1 = int(round(x)), int(round(y))
            x2, y2 = x1 + sizes[k][0], y1 + sizes[k][1]
            if x1 >= width:
                row.append(None)
                continue
            if k % 2 == 0:
                cv2.rectangle(image, (x1, y1), (x2, y2), COLORS[k % len(COLORS)], -1)
            else:
                cv2.ellipse(
                    image,
                    ((x1 + x2) // 2, (y1 + y2) // 2),
                    ((x2 - x1) // 2, (y2 - y1) // 2),
                    0,
                    0,
                    360,
                    COLORS[k % len(COLORS)],
                    -1,
                )
            row.append((max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)))
        clip.append(image)
        boxes.append(row)
    return clip, boxes


def _bounce(value: float, limit: float) -> float:
    period = 2 * limit
    value = value % period
    return value if value <= limit else period - value


def write_jpegs(frames: Sequence[np.ndarray], folder: Path) -> List[np.ndarray]:
    """Write BGR frames as ``00000.jpg``… (Meta's loader reads such a folder); return the decoded BGR pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    decoded = []
    for i, frame in enumerate(frames):
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        decoded.append(cv2.imread(str(path)))
    return decoded


def build_meta_video_predictor(config: str, checkpoint: Path):
    """Meta's ``SAM2VideoPredictor`` with the overrides of Meta's ``build_sam2_video_predictor``
    (post-processing on), loaded from `checkpoint`. `config` is a sam2 resource or an absolute path."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sam_block.runtime.models import config_path
    from sam_block.runtime.variants import Variant

    cfg = OmegaConf.load(config_path(Variant(name="x", config=config, filename="x", url=None)))
    overrides = {
        "model._target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
        "model.binarize_mask_from_pts_for_mem_enc": True,
        "model.fill_hole_area": 8,
    }
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    return model.eval()


def meta_track(
    predictor, folder: Path, prompts: Dict[int, Tuple[int, Sequence[float]]]
) -> Dict[int, Dict[int, np.ndarray]]:
    """Meta's masks ``{obj_id: {frame: bool (H, W)}}``: each object prompted with its box on its
    own start frame and propagated forward, alone (as Meta tracks objects independently)."""
    import warnings

    result: Dict[int, Dict[int, np.ndarray]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = predictor.init_state(str(folder))
        for obj_id, (start, box) in prompts.items():
            predictor.reset_state(state)
            predictor.add_new_points_or_box(
                state, frame_idx=start, obj_id=obj_id, box=np.asarray(box, dtype=np.float32)
            )
            result[obj_id] = {
                frame: (masks[0, 0] > 0.0).cpu().numpy()
                for frame, _, masks in predictor.propagate_in_video(state, start_frame_idx=start)
            }
    return result


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
