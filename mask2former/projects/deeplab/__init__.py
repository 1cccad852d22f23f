"""The parts of detectron2's DeepLab project that Mask2Former's scripts use."""

from .config import DEEPLAB_KEYS, add_deeplab_config
from .lr_scheduler import WarmupPolyLR, build_lr_scheduler

__all__ = ["DEEPLAB_KEYS", "WarmupPolyLR", "add_deeplab_config", "build_lr_scheduler"]
