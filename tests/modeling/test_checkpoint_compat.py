"""Checkpoints load both ways between our models and the published code, by module version.

The published modules that changed their key layout record a ``_version`` and rename older
layouts in ``_load_from_state_dict``. Read for this (the rules below are written from them):

- Mask2Former ``mask2former/modeling/meta_arch/mask_former_head.py`` (MaskFormerHead) and
  ``per_pixel_baseline.py`` (PerPixelBaselineHead, PerPixelBaselinePlusHead), and MaskFormer
  ``mask_former/modeling/heads/`` (the same three): ``_version = 2``; when the head's
  recorded version is None or below 2, every key of the state dict that contains
  ``"sem_seg_head"`` and does not start with ``<prefix>predictor`` has ``<prefix>`` replaced
  by ``<prefix>pixel_decoder.``.
- Mask2Former ``mask2former/modeling/transformer_decoder/mask2former_transformer_decoder.py``
  (MultiScaleMaskedTransformerDecoder): ``_version = 2``; below 2 or None, ``static_query``
  is replaced by ``query_feat`` in every key.
- detectron2 ``detectron2/layers/batch_norm.py`` (FrozenBatchNorm2d): ``_version = 3``; below
  2 or None, ``running_mean`` (zeros) and ``running_var`` (ones) are added where missing.
  Version 2 loads unchanged (detectron2 commit bd004fd4 dropped the eps correction).

No other module of those models, in those repositories or detectron2's layers, sets
``_version``: they record torch's (``nn.Module``'s 1, or that of the torch class they extend).
"""

from collections import OrderedDict
from collections.abc import Mapping

import pytest
import torch
from torch import nn

from mask2former.checkpoint import CheckpointError, DetectionCheckpointer, load_state_dict_exact
from tests.modeling.tiny import build_tiny_model

OFFICIAL_VERSIONS = {
    "MaskFormerHead": 2,
    "PerPixelBaselineHead": 2,
    "PerPixelBaselinePlusHead": 2,
    "MultiScaleMaskedTransformerDecoder": 2,
    "FrozenBatchNorm2d": 3,
}
OFFICIAL_HEADS = ("MaskFormerHead", "PerPixelBaselineHead", "PerPixelBaselinePlusHead")
MODELS = ("mask2former", "maskformer_fpn", "maskformer_encoder", "per_pixel", "per_pixel_plus")
HEAD, PIXEL_DECODER = "sem_seg_head.", "sem_seg_head.pixel_decoder."
QUERY_FEAT = "sem_seg_head.predictor.query_feat."
STATIC_QUERY = "sem_seg_head.predictor.static_query."


# --------------------------------------------------------------------------- #
# The published rules, as independent little functions
# --------------------------------------------------------------------------- #
def official_version(module: nn.Module) -> int:
    """The ``_version`` the published counterpart of ``module`` records."""
    for cls in type(module).__mro__:
        if cls.__name__ in OFFICIAL_VERSIONS:
            return OFFICIAL_VERSIONS[cls.__name__]
        if cls.__module__.startswith("torch."):
            # the same torch class (or a subclass of it) in the published model
            return cls._version
    raise AssertionError(f"{type(module)} is not an nn.Module")


def official_load(model: nn.Module, state_dict: Mapping) -> tuple[OrderedDict, dict[str, str]]:
    """The state dict the published modules would load after their renames, and the renames.

    Walks the modules parents first, as ``nn.Module.load_state_dict`` does; an added FrozenBN
    statistic is reported as ``{"<added>": key}``.
    """
    state = OrderedDict(state_dict)
    metadata = getattr(state_dict, "_metadata", {})
    changes: dict[str, str] = {}
    for name, module in model.named_modules():
        prefix = name + "." if name else ""
        version = metadata.get(name, {}).get("version")
        if version is not None and version >= 2:
            continue
        kind = type(module).__name__
        for key in list(state):
            new = key
            if kind in OFFICIAL_HEADS and "sem_seg_head" in key:
                if not key.startswith(prefix + "predictor"):
                    new = key.replace(prefix, prefix + "pixel_decoder.")
            elif kind == "MultiScaleMaskedTransformerDecoder" and "static_query" in key:
                new = key.replace("static_query", "query_feat")
            if new != key:
                state[new] = state.pop(key)
                changes[key] = new
        if kind == "FrozenBatchNorm2d":
            for buffer in ("running_mean", "running_var"):
                if prefix + buffer not in state:
                    state[prefix + buffer] = torch.zeros(0)
                    changes.setdefault("<added>", prefix + buffer)
    return state, changes


# --------------------------------------------------------------------------- #
# Building older layouts
# --------------------------------------------------------------------------- #
def with_versions(
    state: Mapping[str, torch.Tensor], versions: Mapping[str, int | None]
) -> OrderedDict:
    """``state`` (with its ``_metadata``) where module ``m`` records ``versions[m]``; None
    removes the module's entry, as in a checkpoint written before the module had versions."""
    result = OrderedDict(state)
    metadata = OrderedDict((k, dict(v)) for k, v in state._metadata.items())
    for module, version in versions.items():
        if version is None:
            metadata.pop(module, None)
        else:
            metadata[module] = {"version": version}
    result._metadata = metadata
    return result


def renamed_prefix(state: Mapping, old: str, new: str) -> OrderedDict:
    """``state`` with key prefix ``old`` replaced by ``new`` (its ``_metadata`` kept)."""
    result = OrderedDict(
        (new + k[len(old) :] if k.startswith(old) else k, v) for k, v in state.items()
    )
    if hasattr(state, "_metadata"):
        result._metadata = state._metadata
    return result


def without(state: Mapping, dropped: set[str]) -> OrderedDict:
    """``state`` without the keys ``dropped`` (its ``_metadata`` kept)."""
    result = OrderedDict((k, v) for k, v in state.items() if k not in dropped)
    result._metadata = state._metadata
    return result


def frozen_bn_prefixes(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__name__ == "FrozenBatchNorm2d"]


def load_clean(model: nn.Module, state: Mapping) -> None:
    """Load ``state`` into ``model``; no key may be missing or unexpected."""
    result = load_state_dict_exact(model, state, "test")
    assert result.missing_keys == [] and result.unexpected_keys == []


def assert_loaded(model: nn.Module, expected: Mapping[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


# --------------------------------------------------------------------------- #
# Ours -> published
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", MODELS)
def test_our_checkpoint_records_the_published_versions_and_needs_no_rename(tmp_path, name):
    model = build_tiny_model(name)
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu")["model"]

    modules = dict(model.named_modules())
    assert set(saved._metadata) == set(modules)
    versions = {prefix: entry["version"] for prefix, entry in saved._metadata.items()}
    assert versions == {prefix: official_version(m) for prefix, m in modules.items()}
    assert versions["sem_seg_head"] == 2
    assert all(versions[p] == 3 for p in frozen_bn_prefixes(model))

    loaded, changes = official_load(model, saved)
    assert changes == {}
    assert loaded.keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", ["mask2former", "maskformer_fpn"])
def test_without_the_head_version_the_published_rule_would_rename_our_keys(name):
    """What the checkpoints saved before the versions were recorded (head version 1) meet in
    the published code: every pixel-decoder key renamed a second time."""
    model = build_tiny_model(name)
    old = with_versions(model.state_dict(), {"sem_seg_head": 1})
    _, changes = official_load(model, old)
    pixel_decoder_keys = [k for k in old if k.startswith(PIXEL_DECODER)]
    assert sorted(changes) == sorted(pixel_decoder_keys) and len(pixel_decoder_keys) > 10
    assert all(v.startswith(PIXEL_DECODER + "pixel_decoder.") for v in changes.values())


# --------------------------------------------------------------------------- #
# Published (every version it loads) -> ours
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("head_version", [None, 1])
def test_head_layout_before_the_pixel_decoder_submodule_loads(name, head_version):
    source, target = build_tiny_model(name, seed=0), build_tiny_model(name, seed=1)
    current = source.state_dict()
    legacy = with_versions(
        renamed_prefix(current, PIXEL_DECODER, HEAD), {"sem_seg_head": head_version}
    )
    assert any(k.startswith(PIXEL_DECODER) for k in current)
    assert not any(k.startswith(PIXEL_DECODER) for k in legacy)
    # the layout built here is the one the published rule reads
    assert official_load(source, legacy)[0].keys() == current.keys()
    load_clean(target, legacy)
    assert_loaded(target, current)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("versions", ["none", "head_1", "current"])
def test_current_layout_loads_whatever_versions_it_carries(name, versions):
    """A plain dict (no versions), our checkpoints saved before the versions were recorded
    (head 1, decoder 1, FrozenBN 1) and current ones all load unchanged."""
    source, target = build_tiny_model(name, seed=0), build_tiny_model(name, seed=1)
    current = source.state_dict()
    if versions == "none":
        state = dict(current)
    else:
        old = {m: 1 for m in current._metadata} if versions == "head_1" else {}
        state = with_versions(current, old)
    load_clean(target, state)
    assert_loaded(target, current)


def test_head_of_version_2_is_not_renamed():
    """Decided by the recorded version, as published: version 2 means the current layout."""
    source, target = build_tiny_model("maskformer_fpn", seed=0), build_tiny_model(
        "maskformer_fpn", seed=1
    )
    legacy = with_versions(renamed_prefix(source.state_dict(), PIXEL_DECODER, HEAD), {})
    assert official_load(source, legacy)[1] == {}
    result = load_state_dict_exact(target, legacy, "test")
    assert "sem_seg_head.adapter_1.weight" in result.unexpected_keys
    assert "sem_seg_head.pixel_decoder.adapter_1.weight" in result.missing_keys
    assert not any(k.startswith("sem_seg_head.predictor.") for k in result.missing_keys)


@pytest.mark.parametrize("decoder_version", [None, 1])
def test_decoder_static_query_loads_as_query_feat(decoder_version):
    source, target = build_tiny_model("mask2former", seed=0), build_tiny_model(
        "mask2former", seed=1
    )
    current = source.state_dict()
    old = with_versions(
        renamed_prefix(current, QUERY_FEAT, STATIC_QUERY),
        {"sem_seg_head.predictor": decoder_version},
    )
    assert STATIC_QUERY + "weight" in old and QUERY_FEAT + "weight" not in old
    assert official_load(source, old)[0].keys() == current.keys()
    load_clean(target, old)
    assert_loaded(target, current)


def test_decoder_static_query_of_version_2_is_not_renamed():
    model = build_tiny_model("mask2former")
    old = renamed_prefix(model.state_dict(), QUERY_FEAT, STATIC_QUERY)
    result = load_state_dict_exact(model, old, "test")
    assert result.missing_keys == [QUERY_FEAT + "weight"]
    assert result.unexpected_keys == [STATIC_QUERY + "weight"]


@pytest.mark.parametrize("bn_version", [None, 1])
def test_frozen_bn_without_statistics_loads_identity_statistics(bn_version):
    source, target = build_tiny_model("maskformer_fpn", seed=0), build_tiny_model(
        "maskformer_fpn", seed=1
    )
    norms = frozen_bn_prefixes(source)
    with torch.no_grad():  # statistics that differ from both the init and identity
        for prefix in norms:
            source.get_submodule(prefix).running_var.fill_(4.0)
    current = source.state_dict()
    stats = {f"{p}.{b}" for p in norms for b in ("running_mean", "running_var")}
    old = with_versions(without(current, stats), dict.fromkeys(norms, bn_version))
    _, changes = official_load(source, old)
    assert "<added>" in changes
    load_clean(target, old)
    loaded = target.state_dict()
    for prefix in norms:
        assert torch.equal(
            loaded[f"{prefix}.running_mean"], torch.zeros_like(current[f"{prefix}.running_mean"])
        )
        assert torch.equal(
            loaded[f"{prefix}.running_var"], torch.ones_like(current[f"{prefix}.running_var"])
        )
        assert torch.equal(loaded[f"{prefix}.weight"], current[f"{prefix}.weight"])
    rest = {k: v for k, v in current.items() if k not in stats}
    assert all(torch.equal(loaded[k], v) for k, v in rest.items())


def test_frozen_bn_version_2_loads_its_statistics_unchanged():
    source, target = build_tiny_model("maskformer_fpn", seed=0), build_tiny_model(
        "maskformer_fpn", seed=1
    )
    norms = frozen_bn_prefixes(source)
    with torch.no_grad():
        for i, prefix in enumerate(norms):
            source.get_submodule(prefix).running_var.fill_(0.5 + i)
    current = source.state_dict()
    load_clean(target, with_versions(current, dict.fromkeys(norms, 2)))
    assert_loaded(target, current)  # no eps subtracted from running_var


def test_frozen_bn_of_version_3_without_statistics_reports_them_missing():
    model = build_tiny_model("maskformer_fpn")
    prefix = frozen_bn_prefixes(model)[0]
    state = model.state_dict()
    stats = [f"{prefix}.running_mean", f"{prefix}.running_var"]
    old = without(state, set(stats))
    result = load_state_dict_exact(model, old, "test")
    assert sorted(result.missing_keys) == sorted(stats)


def test_oldest_layout_of_every_module_at_once():
    """Head keys under the head, ``static_query``, FrozenBN v1 without statistics."""
    source, target = build_tiny_model("mask2former", seed=0), build_tiny_model(
        "mask2former", seed=1
    )
    current = source.state_dict()
    norms = frozen_bn_prefixes(source)
    stats = {f"{p}.{b}" for p in norms for b in ("running_mean", "running_var")}
    old = renamed_prefix(current, QUERY_FEAT, STATIC_QUERY)
    old = renamed_prefix(old, PIXEL_DECODER, HEAD)
    old = with_versions(
        without(old, stats),
        {"sem_seg_head": 1, "sem_seg_head.predictor": 1, **dict.fromkeys(norms, 1)},
    )
    assert official_load(source, old)[0].keys() == current.keys()
    load_clean(target, old)
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in current.items() if k not in stats)


def test_a_weight_in_both_layouts_is_refused_naming_both_keys():
    model = build_tiny_model("maskformer_fpn")
    state = model.state_dict()
    both = with_versions(state, {"sem_seg_head": 1})
    both["sem_seg_head.adapter_1.weight"] = state[PIXEL_DECODER + "adapter_1.weight"].clone()
    with pytest.raises(
        CheckpointError,
        match=r"both-layouts\.pth.*'sem_seg_head\.adapter_1\.weight'.*'sem_seg_head\.pixel_decoder\.adapter_1\.weight'",
    ):
        load_state_dict_exact(model, both, "both-layouts.pth")
