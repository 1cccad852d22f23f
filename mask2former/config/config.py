"""fvcore ``CfgNode`` with safe YAML loading, file-naming errors and ``@configurable``."""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import os
from typing import Any, Callable

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from ..utils.file_io import PathManager

BASE_KEY = "_BASE_"

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override that cannot be merged: names the key and the file."""


# --------------------------------------------------------------------------- #
# YAML loading. The published configs use ``!!python/object/apply:eval`` for
# list comprehensions such as ``[int(x * 0.1 * 512) for x in range(5, 21)]``.
# Instead of yaml.unsafe_load (arbitrary code), those expressions are evaluated
# by a small interpreter that admits only literals, arithmetic, range/int/float
# and list comprehensions.
# --------------------------------------------------------------------------- #
_SAFE_CALLS = {"range": range, "int": int, "float": float, "round": round, "list": list}
_BIN_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
    ast.Mod: lambda a, b: a % b,
}


def _eval_node(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body, env)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval_node(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        return _BIN_OPS[type(node.op)](_eval_node(node.left, env), _eval_node(node.right, env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_node(node.operand, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id in _SAFE_CALLS:
            return _SAFE_CALLS[node.func.id](*[_eval_node(a, env) for a in node.args])
    if isinstance(node, ast.ListComp) and len(node.generators) == 1:
        gen = node.generators[0]
        if isinstance(gen.target, ast.Name) and not gen.ifs and not gen.is_async:
            return [
                _eval_node(node.elt, {**env, gen.target.id: value})
                for value in _eval_node(gen.iter, env)
            ]
    raise ConfigError(f"unsupported expression in !!python/object/apply:eval: {ast.dump(node)}")


def safe_eval_expression(expression: str) -> Any:
    """Evaluate a config expression of literals, arithmetic and list comprehensions."""
    return _eval_node(ast.parse(expression, mode="eval"), {})


class _ConfigLoader(yaml.SafeLoader):
    pass


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node)
    if len(args) != 1 or not isinstance(args[0], str):
        raise ConfigError(f"!!python/object/apply:eval takes one string, got {args!r}")
    return safe_eval_expression(args[0])


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)


def _load_yaml(filename: str, allow_unsafe: bool = False) -> dict:
    """The mapping in ``filename``, read with the safe loader; a tag it refuses (a Python object,
    an expression the restricted interpreter does not admit) is loaded with ``yaml.unsafe_load``
    only when ``allow_unsafe``, after a warning, as fvcore does."""
    try:
        with PathManager.open(filename, "r") as f:
            data = yaml.load(f, Loader=_ConfigLoader)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {filename}") from e
    except (yaml.constructor.ConstructorError, ConfigError) as e:
        if not allow_unsafe:
            raise ConfigError(f"{filename}: cannot parse YAML: {e}") from e
        logger.warning(
            "Loading config %s with yaml.unsafe_load (allow_unsafe=True): it can run any code "
            "the file holds (%s)",
            filename,
            e,
        )
        with PathManager.open(filename, "r") as f:
            data = yaml.unsafe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: cannot parse YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge_dicts(base: dict, update: dict) -> None:
    """Merge ``update`` into ``base`` in place, recursing into nested mappings."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_dicts(base[key], value)
        else:
            base[key] = value


class CfgNode(_FvCfgNode):
    """fvcore's ``CfgNode`` whose errors name the offending key and file.

    Differences from fvcore: YAML is loaded with a safe loader (the published configs'
    ``!!python/object/apply:eval`` list comprehensions are evaluated by a restricted
    interpreter), an ``int`` is accepted where a ``float`` is expected, and an unknown key
    or a wrongly typed value raises :class:`ConfigError` naming the key and the file.
    ``allow_unsafe=True`` keeps fvcore's meaning: a file the safe loader refuses is read
    with ``yaml.unsafe_load`` (after a warning), its ``_BASE_`` files too.
    """

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict:
        data = _load_yaml(filename, allow_unsafe)
        base_files = data.pop(BASE_KEY, None)
        if base_files is None:
            return data
        if isinstance(base_files, str):
            base_files = [base_files]
        merged: dict = {}
        for base in base_files:
            if not isinstance(base, str):
                raise ConfigError(f"{filename}: {BASE_KEY} must be a path, got {base!r}")
            base = os.path.expanduser(base)
            if not base.startswith(("/", "~")) and "://" not in base:
                base = os.path.join(os.path.dirname(filename), base)
            _merge_dicts(merged, cls.load_yaml_with_base(base, allow_unsafe))
        _merge_dicts(merged, data)
        return merged

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file and its ``_BASE_`` chain; see the class for ``allow_unsafe``."""
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe)
        self._merge_dict(loaded, source=cfg_filename)

    def merge_from_other_cfg(self, cfg_other: "CfgNode") -> None:
        self._merge_dict(cfg_other, source="another config")

    def merge_from_list(self, cfg_list: list) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (command-line overrides)."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got {len(cfg_list)} items")
        for full_key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            *parents, leaf = full_key.split(".")
            nested: dict = {leaf: value}
            for name in reversed(parents):
                nested = {name: nested}
            self._merge_dict(nested, source="command-line override")

    def _merge_dict(self, update: dict, source: str, prefix: str = "") -> None:
        if self.is_frozen():
            raise ConfigError(f"cannot merge {source} into a frozen config")
        for key, value in update.items():
            full_key = prefix + key
            if key not in self:
                raise ConfigError(f"{source}: unknown config key {full_key}")
            if isinstance(self[key], CfgNode):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: config key {full_key} is a group, got {value!r}")
                self[key]._merge_dict(value, source, full_key + ".")
                continue
            value = self._decode_cfg_value(value)
            self[key] = _check_type(value, self[key], full_key, source)


def _check_type(replacement: Any, original: Any, full_key: str, source: str) -> Any:
    """Type check of one merged value as yacs does it, also admitting int where float is."""
    if original is None or replacement is None or type(replacement) is type(original):
        return replacement
    if isinstance(original, float) and type(replacement) is int:
        return float(replacement)
    if isinstance(original, (list, tuple)) and isinstance(replacement, (list, tuple)):
        return type(original)(replacement)
    raise ConfigError(
        f"{source}: wrong type for config key {full_key}: expected {type(original).__name__} "
        f"(default {original!r}), got {type(replacement).__name__} ({replacement!r})"
    )


def get_cfg() -> CfgNode:
    """A copy of the default config (see ``mask2former/config/defaults.py``)."""
    import torch

    from .defaults import _C

    cfg = _C.clone()
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


# --------------------------------------------------------------------------- #
# @configurable: a constructor takes plain values; ``from_config`` maps a cfg to them.
# --------------------------------------------------------------------------- #
def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and isinstance(args[0], _FvCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvCfgNode)


def _get_args_from_config(from_config: Callable, *args: Any, **kwargs: Any) -> dict:
    signature = inspect.signature(from_config)
    if list(signature.parameters)[0] != "cfg":
        raise TypeError(f"{from_config.__qualname__} must take 'cfg' as its first argument")
    accepts_all = any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()
    )
    if accepts_all:
        return from_config(*args, **kwargs)
    supported = set(signature.parameters)
    extra = {name: kwargs.pop(name) for name in list(kwargs) if name not in supported}
    result = from_config(*args, **kwargs)
    result.update(extra)
    return result


def configurable(init_func: Callable | None = None, *, from_config: Callable | None = None):
    """Let ``__init__`` (or a function, with ``from_config=``) be called with a cfg.

    ``Cls(cfg, **overrides)`` calls ``Cls.from_config(cfg, **overrides)`` and passes the
    returned dict to ``__init__``; ``Cls(a=..., b=...)`` calls ``__init__`` directly.
    """
    if init_func is not None:
        if not (inspect.isfunction(init_func) and init_func.__name__ == "__init__"):
            raise TypeError("@configurable without from_config decorates only __init__")

        @functools.wraps(init_func)
        def wrapped_init(self, *args, **kwargs):
            if _called_with_cfg(*args, **kwargs):
                from_config_func = getattr(type(self), "from_config", None)
                if from_config_func is None:
                    raise AttributeError(f"{type(self).__name__} has no from_config classmethod")
                explicit = _get_args_from_config(from_config_func, *args, **kwargs)
                init_func(self, **explicit)
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        raise TypeError("@configurable on a function needs from_config=")

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if _called_with_cfg(*args, **kwargs):
                return func(**_get_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return decorator
