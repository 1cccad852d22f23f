"""Load a state dict into a model by exact key names, and report what did not match."""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import torch
from tabulate import tabulate
from torch import nn

from .io import CheckpointError, state_dict_metadata, with_metadata

__all__ = [
    "IncompatibleKeys",
    "ShapeMismatch",
    "add_backbone_prefix_if_backbone_only",
    "load_state_dict_exact",
    "replace_key_prefix",
    "strip_prefix_if_present",
]

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
# What (Distributed)DataParallel puts before every key of the model it wraps.
DDP_PREFIX = "module."
# BatchNorm step counters carry no weights; FrozenBatchNorm2d has none.
_STEP_COUNTER = "num_batches_tracked"


#: (key, shape in the checkpoint, shape in the model)
ShapeMismatch = tuple[str, tuple[int, ...], tuple[int, ...]]


class IncompatibleKeys(NamedTuple):
    """What did not load, as fvcore's ``Checkpointer._load_model`` reports it.

    ``missing_keys``: model keys not loaded, those of ``incorrect_shapes`` included;
    ``unexpected_keys``: checkpoint keys the model lacks; ``incorrect_shapes``: keys present
    in both with different shapes (skipped: the model keeps its value).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    incorrect_shapes: list[ShapeMismatch]


def replace_key_prefix(state_dict: Mapping, old: str, new: str) -> OrderedDict:
    """Every key ``old + rest`` -> ``new + rest``, and the module versions moved alike.

    ``old`` and ``new`` are key prefixes: empty or ending in ".". Every key of
    ``state_dict`` must start with ``old``. In ``_metadata`` a module is named by its key
    prefix without the final dot (``""`` for the root), so removing ``"module."`` names
    ``"module.x"`` as ``"x"`` and ``"module"`` as ``""``, and adding ``"backbone."`` names
    ``""`` as ``"backbone"``. Entries of modules outside ``old`` (the ``""`` of the
    DataParallel wrapper when removing ``"module."``) are dropped with the wrapper.
    """
    outside = [k for k in state_dict if not k.startswith(old)]
    if outside:
        raise ValueError(f"keys without the prefix {old!r}: {outside[:5]}")
    renamed = ((new + k[len(old) :], v) for k, v in state_dict.items())
    metadata = state_dict_metadata(state_dict)
    if metadata is not None:
        moved = OrderedDict()
        for module, entry in metadata.items():
            key_prefix = module + "." if module else ""
            if key_prefix.startswith(old):
                moved[(new + key_prefix[len(old) :]).removesuffix(".")] = entry
        metadata = moved
    return with_metadata(renamed, metadata)


def strip_prefix_if_present(
    state_dict: Mapping[str, torch.Tensor], prefix: str, model_keys: set[str]
) -> OrderedDict:
    """Remove ``prefix`` from every key (and module version) when every key has it.

    fvcore's rule for ``"module."`` (a checkpoint of a DataParallel-wrapped model), with
    one guard: nothing is removed when a key already names a model entry. Otherwise
    ``state_dict`` is returned unchanged (as an OrderedDict keeping its module versions).
    """
    if (
        state_dict
        and all(k.startswith(prefix) for k in state_dict)
        and not any(k in model_keys for k in state_dict)
    ):
        logger.info("Removing the prefix %r from every checkpoint key", prefix)
        return replace_key_prefix(state_dict, prefix, "")
    return with_metadata(state_dict, state_dict_metadata(state_dict))


def add_backbone_prefix_if_backbone_only(
    state_dict: Mapping[str, torch.Tensor], model_keys: set[str]
) -> dict[str, torch.Tensor]:
    """Rename a backbone-only checkpoint's keys to ``backbone.<key>``.

    The rule (exact matching with one fixed prefix, not fuzzy matching): the prefix
    ``backbone.`` is added to every key if and only if

    1. no key of ``state_dict`` is a key of the model, and
    2. at least one key of ``state_dict``, with the prefix, is a key of the model.

    Then, as always, a weight is loaded only where its (prefixed) name equals a model key;
    the others are reported as unexpected. Condition 2 does not ask that *every* key fit:
    detectron2's own ImageNet files (``detectron2://ImageNetPretrained/torchvision/R-50.pkl``)
    carry the classifier as ``stem.fc.weight`` / ``stem.fc.bias``, which no backbone has.
    Backbone-only files are what the converters in :mod:`mask2former.checkpoint.convert`
    produce (``stem.conv1.weight``, ``res2.0.conv1.weight``, ``patch_embed.proj.weight`` ...).
    Otherwise ``state_dict`` is returned unchanged. Module versions (``_metadata``) follow
    the keys (see :func:`replace_key_prefix`).
    """
    if any(k in model_keys for k in state_dict) or not any(
        BACKBONE_PREFIX + k in model_keys for k in state_dict
    ):
        return with_metadata(state_dict, state_dict_metadata(state_dict))
    logger.info("Checkpoint holds only backbone weights: loading them into model.backbone")
    return replace_key_prefix(state_dict, "", BACKBONE_PREFIX)


def _group_keys(keys: list[str]) -> list[str]:
    """``a.b.weight``, ``a.b.bias`` -> ``a.b.{bias, weight}``: one line per module."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        prefix, _, leaf = key.rpartition(".")
        groups[prefix].append(leaf)
    lines = []
    for prefix, leaves in groups.items():
        leaf_text = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        lines.append(f"{prefix}.{leaf_text}" if prefix else leaf_text)
    return lines


def format_incompatible_keys(missing: list[str], unexpected: list[str]) -> str:
    """A two-column table: model keys not in the checkpoint, checkpoint keys not in the model."""
    rows = [("missing (in model, not in checkpoint)", line) for line in _group_keys(missing)]
    rows += [("unexpected (in checkpoint, not in model)", line) for line in _group_keys(unexpected)]
    return tabulate(rows, headers=["kind", "keys"], tablefmt="pipe")


def format_incorrect_shapes(incorrect_shapes: list[ShapeMismatch]) -> str:
    """A three-column table: key, its shape in the checkpoint, its shape in the model."""
    return tabulate(
        incorrect_shapes, headers=["key", "checkpoint shape", "model shape"], tablefmt="pipe"
    )


@contextmanager
def _skipping_shape_mismatches(
    model: nn.Module, model_state: Mapping[str, torch.Tensor]
) -> Iterator[list[ShapeMismatch]]:
    """While active, ``model.load_state_dict`` skips entries whose shape differs from the
    model's, and appends each as (key, checkpoint shape, model shape) to the yielded list.

    The check runs in each module's load pre-hook, so it sees the keys after the renames of
    older layouts (:mod:`mask2former.modeling.checkpoint_compat`), which happen in a parent's
    ``_load_from_state_dict`` before its children load. A skipped key is then reported
    missing by torch, as fvcore reports it.
    """
    skipped: list[ShapeMismatch] = []

    def skip_mismatches(module, state_dict, prefix, *args) -> None:
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, value in own:
            key = prefix + name
            if key not in state_dict or key not in model_state:  # not persistent
                continue
            if isinstance(value, nn.parameter.UninitializedParameter):
                continue  # a lazy module takes its shape from the checkpoint
            if tuple(state_dict[key].shape) != tuple(value.shape):
                skipped.append((key, tuple(state_dict.pop(key).shape), tuple(value.shape)))

    handles = [m.register_load_state_dict_pre_hook(skip_mismatches) for m in model.modules()]
    try:
        yield skipped
    finally:
        for handle in handles:
            handle.remove()


def _log_result(source: str, result: IncompatibleKeys, loaded: int, total: int) -> None:
    logger.info("Loaded %d of %d model entries from %s", loaded, total, source)
    if result.incorrect_shapes:
        logger.warning(
            "Skipped %d weights of %s whose shapes differ from the model's; the model keeps "
            "their initial values:\n%s",
            len(result.incorrect_shapes),
            source,
            format_incorrect_shapes(result.incorrect_shapes),
        )
    skipped = {key for key, _, _ in result.incorrect_shapes}
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        logger.warning(
            "Keys of %s that did not match the model:\n%s",
            source,
            format_incompatible_keys(missing, result.unexpected_keys),
        )


def load_state_dict_exact(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> IncompatibleKeys:
    """Copy ``state_dict`` into ``model`` where the key names agree exactly.

    A checkpoint of a DataParallel-wrapped model first loses its ``module.`` prefix
    (:func:`strip_prefix_if_present`) and a backbone-only checkpoint is renamed by
    :func:`add_backbone_prefix_if_backbone_only`. The module versions the checkpoint
    carries (``_metadata``) go to the modules, which rename older key layouts by them (see
    :mod:`mask2former.modeling.checkpoint_compat`); a weight given in both an older and the
    current layout raises :class:`CheckpointError`. A key present in both with different
    shapes (a classifier trained for another number of classes) is skipped, as fvcore
    skips it: the model keeps its value, and the key is reported in ``incorrect_shapes``
    and ``missing_keys``. Skipped, missing and unexpected keys are logged as tables.
    """
    model_state = model.state_dict()
    state_dict = strip_prefix_if_present(state_dict, DDP_PREFIX, set(model_state))
    state_dict = add_backbone_prefix_if_backbone_only(state_dict, set(model_state))
    with _skipping_shape_mismatches(model, model_state) as incorrect_shapes:
        try:
            result = model.load_state_dict(state_dict, strict=False)
        except ValueError as e:  # an older-layout key clashing with its current name
            raise CheckpointError(f"{source}: {e}") from e
    missing = [k for k in result.missing_keys if not k.endswith(_STEP_COUNTER)]
    incompatible = IncompatibleKeys(missing, list(result.unexpected_keys), incorrect_shapes)
    # step counters are not weights: BatchNorm adds a missing one as 0
    weights = {k for k in model_state if not k.endswith(_STEP_COUNTER)}
    loaded = len(weights - set(missing))
    _log_result(source, incompatible, loaded, len(weights))
    if loaded == 0 and len(state_dict) > 0:
        logger.warning("%s: no key matched the model; nothing was loaded", source)
    return incompatible
