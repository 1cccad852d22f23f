"""Configuration: detectron2-compatible ``CfgNode`` with every Mask2Former key."""

from .config import BASE_KEY, CfgNode, ConfigError, configurable, get_cfg, safe_eval_expression
from .supported import NOT_READ, check_supported

__all__ = [
    "BASE_KEY",
    "NOT_READ",
    "CfgNode",
    "ConfigError",
    "check_supported",
    "configurable",
    "get_cfg",
    "safe_eval_expression",
]
