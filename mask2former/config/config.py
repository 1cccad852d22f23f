"""fvcore ``CfgNode`` with safe YAML loading, file-naming errors and ``@configurable``."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Callable

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from ..utils.file_io import PathManager
from .expression import ExpressionError, UnsupportedExpression, safe_eval_expression

BASE_KEY = "_BASE_"

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override that cannot be merged: names the key and the file."""


# --------------------------------------------------------------------------- #
# YAML loading. The published configs use ``!!python/object/apply:eval`` for list
# comprehensions such as ``[int(x * 0.1 * 512) for x in range(5, 21)]``. Instead of
# yaml.unsafe_load (arbitrary code), those expressions are evaluated by the restricted,
# bounded interpreter of ``expression.py``.
# --------------------------------------------------------------------------- #
class _ConfigLoader(yaml.SafeLoader):
    pass


class _ExpressionAtNode(Exception):
    """An :class:`ExpressionError` raised while constructing the YAML ``node`` (the constructor
    does not know the node's key; ``_read_yaml`` finds it in the document)."""

    def __init__(self, error: ExpressionError, node: yaml.Node) -> None:
        super().__init__(str(error))
        self.error = error
        self.node = node


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node)
    if len(args) != 1 or not isinstance(args[0], str):
        error = UnsupportedExpression(f"!!python/object/apply:eval takes one string, got {args!r}")
        raise _ExpressionAtNode(error, node)
    try:
        return safe_eval_expression(args[0])
    except ExpressionError as e:
        raise _ExpressionAtNode(e, node) from e


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)


def _key_path(root: yaml.Node, target: yaml.Node) -> str:
    """The dotted key (``SOLVER.STEPS``, ``A.B[2]``) of ``target`` in the document ``root``."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path or "(top level)"
        if id(node) in seen:  # an alias to an enclosing anchor
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            prefix = path + "." if path else ""
            stack.extend((value, f"{prefix}{key.value}") for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(node.value))
    return "(unknown key)"


def _read_yaml(filename: str) -> Any:
    """The document in ``filename`` read with the safe loader; an expression it cannot evaluate
    raises an :class:`ExpressionError` that names its key, line and column."""
    with PathManager.open(filename, "r") as f:
        loader = _ConfigLoader(f)
        try:
            root = loader.get_single_node()
            try:
                return None if root is None else loader.construct_document(root)
            except _ExpressionAtNode as e:
                mark = e.node.start_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}"
                message = f"config key {_key_path(root, e.node)} ({where}): {e.error}"
                raise type(e.error)(message) from e.error
        finally:
            loader.dispose()


def _load_yaml(filename: str, allow_unsafe: bool = False, referrer: str | None = None) -> dict:
    """The mapping in ``filename``, read with the safe loader; a tag it refuses (a Python object,
    an expression outside the restricted language) is loaded with ``yaml.unsafe_load`` only when
    ``allow_unsafe``, after a warning, as fvcore does. An expression past the interpreter's
    bounds, or one that fails (``1 / 0``), is refused either way. ``referrer``: the file whose
    ``_BASE_`` names ``filename``, for the error when it does not exist."""
    try:
        data = _read_yaml(filename)
    except FileNotFoundError as e:
        named_in = f" (the {BASE_KEY} of {referrer})" if referrer else ""
        raise ConfigError(f"config file not found: {filename}{named_in}") from e
    except ExpressionError as e:
        if not (allow_unsafe and isinstance(e, UnsupportedExpression)):
            raise ConfigError(f"{filename}: !!python/object/apply:eval at {e}") from e
        data = _unsafe_load(filename, e)
    except yaml.constructor.ConstructorError as e:
        if not allow_unsafe:
            raise ConfigError(f"{filename}: cannot parse YAML: {e}") from e
        data = _unsafe_load(filename, e)
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: cannot parse YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: top level must be a mapping, got {type(data).__name__}")
    return data


def _unsafe_load(filename: str, refusal: Exception) -> Any:
    logger.warning(
        "Loading config %s with yaml.unsafe_load (allow_unsafe=True): it can run any code "
        "the file holds (%s)",
        filename,
        refusal,
    )
    with PathManager.open(filename, "r") as f:
        return yaml.unsafe_load(f)


def _load_with_base(filename: str, allow_unsafe: bool, chain: tuple[str, ...]) -> dict:
    """``CfgNode.load_yaml_with_base``; ``chain``: the files whose ``_BASE_`` led here."""
    if _same_file_key(filename) in map(_same_file_key, chain):
        cycle = " -> ".join((*chain, filename))
        raise ConfigError(f"{BASE_KEY} files form a cycle: {cycle}")
    data = _load_yaml(filename, allow_unsafe, referrer=chain[-1] if chain else None)
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
        _merge_dicts(merged, _load_with_base(base, allow_unsafe, (*chain, filename)))
    _merge_dicts(merged, data)
    return merged


def _same_file_key(filename: str) -> str:
    """One spelling per local file (``a/../b.yaml`` and ``b.yaml`` are one file); URLs as given."""
    return filename if "://" in filename else os.path.realpath(filename)


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
        """The mapping in ``filename`` merged over those of its ``_BASE_`` files, recursively."""
        return _load_with_base(filename, allow_unsafe, chain=())

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
