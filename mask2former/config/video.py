"""Config keys of video instance segmentation (YouTube-VIS), added by :func:`add_video_config`.

As in the published code (``mask2former_video.add_maskformer2_video_config``), these keys are
not in :func:`~mask2former.config.get_cfg`: a video config is built as ``get_cfg()``, then
``add_video_config(cfg)``, then ``merge_from_file`` of a YouTube-VIS config.

The video mapper also accepts video-only values of two image keys:
``INPUT.MIN_SIZE_TRAIN_SAMPLING`` "choice_by_clip" / "range_by_clip" (one size per clip) and
``INPUT.RANDOM_FLIP`` "flip_by_clip" (one horizontal flip decision per clip).
"""

from __future__ import annotations

from .compat import add_missing_keys
from .config import CfgNode as CN

__all__ = ["VIDEO_DEFAULTS", "add_maskformer2_video_config", "add_video_config"]

VIDEO_DEFAULTS = CN()
VIDEO_DEFAULTS.INPUT = CN()
VIDEO_DEFAULTS.INPUT.SAMPLING_FRAME_NUM = 2  # frames per training clip
# training clips: frames within this many frames of a random reference frame
VIDEO_DEFAULTS.INPUT.SAMPLING_FRAME_RANGE = 20
VIDEO_DEFAULTS.INPUT.SAMPLING_FRAME_SHUFFLE = False  # shuffle a clip's frames (else time order)
# extra photometric / geometric augmentations of the published code ("brightness", "contrast",
# "saturation", "rotation"); not implemented here: only [] is accepted
VIDEO_DEFAULTS.INPUT.AUGMENTATIONS = []
# the published video training always uses YTVISDatasetMapper (train_net_video.py), and its
# configs name no mapper: the video config selects it
VIDEO_DEFAULTS.INPUT.DATASET_MAPPER_NAME = "ytvis"

_NEW_KEYS = (
    "INPUT.SAMPLING_FRAME_NUM",
    "INPUT.SAMPLING_FRAME_RANGE",
    "INPUT.SAMPLING_FRAME_SHUFFLE",
    "INPUT.AUGMENTATIONS",
)


def add_video_config(cfg: CN) -> None:
    """Add the video keys (INPUT.SAMPLING_FRAME_NUM, SAMPLING_FRAME_RANGE,
    SAMPLING_FRAME_SHUFFLE, AUGMENTATIONS) with the published defaults where missing, and set
    INPUT.DATASET_MAPPER_NAME to "ytvis" (the video mapper, for training and testing)."""
    add_missing_keys(cfg, VIDEO_DEFAULTS, _NEW_KEYS)
    cfg.INPUT.DATASET_MAPPER_NAME = VIDEO_DEFAULTS.INPUT.DATASET_MAPPER_NAME


add_maskformer2_video_config = add_video_config
"""The published name of :func:`add_video_config`."""
