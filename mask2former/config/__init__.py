"""Configuration: detectron2-compatible ``CfgNode`` with every Mask2Former key."""

from .config import BASE_KEY, CfgNode, ConfigError, configurable, get_cfg, safe_eval_expression

__all__ = ["BASE_KEY", "CfgNode", "ConfigError", "configurable", "get_cfg", "safe_eval_expression"]
