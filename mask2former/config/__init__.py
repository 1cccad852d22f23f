"""Configuration: detectron2-compatible ``CfgNode`` with every Mask2Former key."""

from .compat import (
    add_mask_former_config,
    add_maskformer2_config,
    add_maskformer2_video_config,
    add_missing_keys,
)
from .config import BASE_KEY, CfgNode, ConfigError, configurable, get_cfg
from .expression import ExpressionError, safe_eval_expression
from .supported import NOT_READ, check_supported

__all__ = [
    "BASE_KEY",
    "NOT_READ",
    "CfgNode",
    "ConfigError",
    "ExpressionError",
    "add_mask_former_config",
    "add_maskformer2_config",
    "add_maskformer2_video_config",
    "add_missing_keys",
    "check_supported",
    "configurable",
    "get_cfg",
    "safe_eval_expression",
]
