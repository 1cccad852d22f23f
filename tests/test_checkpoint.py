"""Checkpoints: safe reading, exact-name loading, atomic saving, and the converters."""

import logging
import os
import pickle
import re
import runpy
import stat
import sys
import traceback
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from mask2former.checkpoint import (
    CheckpointError,
    DetectionCheckpointer,
    UnsafeCheckpointError,
    atomic_write,
    convert_swin_release,
    load_state_dict_exact,
    read_checkpoint,
    save_weights,
)
from mask2former.checkpoint.matching import replace_key_prefix
from mask2former.config import get_cfg
from mask2former.modeling import build_backbone
from mask2former.modeling.backbone.swin import D2SwinTransformer
from tests.modeling.tiny import build_tiny_model

TOOLS = Path(__file__).resolve().parents[1] / "tools"


class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)


class TinyModel(nn.Module):
    """A model with a backbone and a head, as the meta-architectures have."""

    def __init__(self):
        super().__init__()
        self.backbone = TinyBackbone()
        self.head = nn.Linear(4, 2)


def _randomised(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.normal_()
            else:
                value.fill_(7)
    return model


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("ext", [".pkl", ".pth", ".safetensors"])
def test_round_trip_through_each_format(tmp_path, ext):
    source, target = _randomised(TinyModel()), TinyModel()
    path = str(tmp_path / f"weights{ext}")
    save_weights(source.state_dict(), path)
    DetectionCheckpointer(target).load(path)
    _assert_same_state(source, target)
    assert os.listdir(tmp_path) == [f"weights{ext}"]  # no temporary file left behind


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_pkl_layouts_load(tmp_path, protocol):
    """{"model": {name: ndarray}, "__author__", ...} and a plain dict of arrays both load."""
    source = _randomised(TinyModel())
    arrays = {k: v.numpy() for k, v in source.state_dict().items()}
    arrays["backbone.norm.num_batches_tracked"] = np.int64(7)  # a numpy scalar
    for i, payload in enumerate(
        [
            {"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True},
            arrays,
        ]
    ):
        path = tmp_path / f"m{i}.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
        target = TinyModel()
        extra = DetectionCheckpointer(target).load(str(path))
        _assert_same_state(source, target)
        assert extra.get("__author__") == ("Detectron2 Model Zoo" if i == 0 else None)


def test_pth_training_checkpoint_keeps_extra_entries(tmp_path):
    model = _randomised(TinyModel())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.head(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    checkpointer = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert checkpointer.has_checkpoint()
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000009.pth")

    fresh = TinyModel()
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    resumed = DetectionCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer)
    extra = resumed.resume_or_load("ignored-when-resuming.pth", resume=True)
    assert extra == {"iteration": 9}
    _assert_same_state(model, fresh)
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_resume_false_loads_only_the_model(tmp_path):
    model = _randomised(TinyModel())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer).save("m", iteration=3)
    fresh_optimizer = torch.optim.SGD(TinyModel().parameters(), lr=0.01)
    fresh = TinyModel()
    checkpointer = DetectionCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer)
    extra = checkpointer.resume_or_load(str(tmp_path / "m.pth"), resume=False)
    _assert_same_state(model, fresh)
    assert fresh_optimizer.param_groups[0]["lr"] == 0.01
    assert "optimizer" in extra and extra["iteration"] == 3


def test_failed_atomic_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "last_checkpoint"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(str(path)) as f:
        f.write(b"half-written")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["last_checkpoint"]


# --------------------------------------------------------------------------- #
# Refusing code in pickles
# --------------------------------------------------------------------------- #
class _Payload:
    """Unpickling this would create ``marker`` (if the unpickler ran it)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _SystemPayload:
    def __init__(self, marker: Path):
        self.command = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("payload_class", [_Payload, _SystemPayload])
def test_pkl_with_reduce_payload_is_refused_and_never_runs(tmp_path, payload_class):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    weights = {"w": np.zeros(3, dtype=np.float32)}
    path.write_bytes(pickle.dumps({"model": weights, "x": payload_class(marker)}))
    with pytest.raises(UnsafeCheckpointError) as info:
        DetectionCheckpointer(TinyModel()).load(str(path))
    message = str(info.value)
    assert str(path) in message
    assert ("io.open" if payload_class is _Payload else ".system'") in message
    assert not marker.exists()


def test_pth_with_reduce_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, str(path))
    with pytest.raises(UnsafeCheckpointError, match="evil.pth") as info:
        read_checkpoint(str(path))
    assert not marker.exists()
    assert "GLOBAL io.open" in str(info.value)  # torch's reason is kept
    # torch's advice to retry with weights_only=False (which would run the payload) is not
    shown = "".join(traceback.format_exception(info.value))
    assert "weights_only" not in shown and "safe_globals" not in shown


def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pkl"
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        DetectionCheckpointer(TinyModel()).load(str(missing))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        read_checkpoint(str(garbage))
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"epoch": 1}}, str(nested))
    with pytest.raises(CheckpointError, match="nested.pth.*state_dict"):
        read_checkpoint(str(nested))


# --------------------------------------------------------------------------- #
# Exact matching
# --------------------------------------------------------------------------- #
class TinyClassifier(TinyModel):
    """TinyModel with ``num_classes`` outputs: the head is what fine-tuning changes."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.head = nn.Linear(4, num_classes)


def test_weights_of_another_shape_are_skipped_and_listed_with_both_shapes(tmp_path, caplog):
    source, target = _randomised(TinyClassifier(3)), TinyClassifier(2)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    path = str(tmp_path / "three_classes.pth")
    save_weights(source.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        result = load_state_dict_exact(target, read_checkpoint(path)["model"], path)
    assert result.incorrect_shapes == [
        ("head.weight", (3, 4), (2, 4)),
        ("head.bias", (3,), (2,)),
    ]
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"]
    assert result.unexpected_keys == []
    assert re.search(r"three_classes\.pth", caplog.text)
    assert re.search(r"head\.weight\s*\|\s*\(3, 4\)\s*\|\s*\(2, 4\)", caplog.text)
    assert re.search(r"head\.bias\s*\|\s*\(3,\)\s*\|\s*\(2,\)", caplog.text)
    _assert_same_state(source.backbone, target.backbone)
    for key, value in target.head.state_dict().items():
        assert torch.equal(value, head_before[key]), key


def test_fine_tuning_to_another_number_of_classes_loads_the_rest(tmp_path, caplog):
    """A tiny Mask2Former trained for 4 classes, loaded as the trainer loads MODEL.WEIGHTS
    into one for 3: the classifier and the criterion's class weights keep their
    initialisation (they are derived from NUM_CLASSES), every other weight loads."""
    source = build_tiny_model("mask2former", seed=0)
    target = build_tiny_model("mask2former", seed=1, MODEL__SEM_SEG_HEAD__NUM_CLASSES=3)
    initial = {k: v.clone() for k, v in target.state_dict().items()}
    path = tmp_path / "model_final.pth"
    DetectionCheckpointer(source, str(tmp_path)).save("model_final")
    out = tmp_path / "finetune"
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        DetectionCheckpointer(target, str(out)).resume_or_load(str(path), resume=False)
    skipped = {
        "sem_seg_head.predictor.class_embed.weight": ((5, 32), (4, 32)),
        "sem_seg_head.predictor.class_embed.bias": ((5,), (4,)),
        "criterion.empty_weight": ((5,), (4,)),
    }
    for key, (ckpt_shape, model_shape) in skipped.items():
        assert re.search(rf"{re.escape(key)}\s*\|\s*{re.escape(str(ckpt_shape))}", caplog.text)
        assert re.search(
            rf"{re.escape(str(ckpt_shape))}\s*\|\s*{re.escape(str(model_shape))}", caplog.text
        )
    loaded, saved = target.state_dict(), source.state_dict()
    for key in loaded:
        expected = initial[key] if key in skipped else saved[key]
        assert torch.equal(loaded[key], expected), key


def test_an_older_layout_key_of_another_shape_is_skipped_under_its_new_name():
    """``static_query`` (decoder version 1) is renamed to ``query_feat`` on load; with
    another number of queries it is skipped, not refused by torch."""
    source = build_tiny_model("mask2former", seed=0)
    target = build_tiny_model("mask2former", seed=1, MODEL__MASK_FORMER__NUM_OBJECT_QUERIES=4)
    query_feat = "sem_seg_head.predictor.query_feat."
    old = OrderedDict(
        (k.replace(query_feat, "sem_seg_head.predictor.static_query."), v)
        for k, v in source.state_dict().items()
    )
    old._metadata = source.state_dict()._metadata
    old._metadata["sem_seg_head.predictor"] = {"version": 1}
    result = load_state_dict_exact(target, old, "old.pkl")
    assert (query_feat + "weight", (6, 32), (4, 32)) in result.incorrect_shapes
    assert query_feat + "weight" in result.missing_keys
    assert result.unexpected_keys == []


def test_missing_and_unexpected_keys_are_reported_as_a_table(tmp_path, caplog):
    state = TinyModel().state_dict()
    del state["head.bias"]
    state["head.extra"] = torch.zeros(1)
    result = load_state_dict_exact(TinyModel(), state, "ckpt.pkl")
    assert result.missing_keys == ["head.bias"]
    assert result.unexpected_keys == ["head.extra"]
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        load_state_dict_exact(TinyModel(), state, "ckpt.pkl")
    assert "ckpt.pkl" in caplog.text and "head.bias" in caplog.text and "head.extra" in caplog.text


def test_backbone_only_checkpoint_loads_into_model_backbone():
    source = _randomised(TinyBackbone())
    target = TinyModel()
    head_before = target.head.weight.clone()
    result = load_state_dict_exact(target, source.state_dict())
    _assert_same_state(source, target.backbone)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"]
    assert result.unexpected_keys == []
    assert torch.equal(target.head.weight, head_before)


def test_backbone_only_checkpoint_with_a_classifier_loads_the_rest():
    """detectron2's torchvision R-50.pkl carries ``stem.fc.*``: reported, not loaded."""
    source = _randomised(TinyBackbone())
    state = dict(source.state_dict(), **{"stem.fc.weight": torch.zeros(10, 4)})
    target = TinyModel()
    result = load_state_dict_exact(target, state)
    _assert_same_state(source, target.backbone)
    assert result.unexpected_keys == ["backbone.stem.fc.weight"]


def test_backbone_prefix_is_not_applied_when_a_key_matches_the_full_model():
    """One key that names a model key: no renaming (no guessing), backbone keys unexpected."""
    state = _randomised(TinyBackbone()).state_dict()
    state["head.bias"] = torch.ones(2)
    target = TinyModel()
    before = target.backbone.conv.weight.clone()
    result = load_state_dict_exact(target, state)
    assert torch.equal(target.backbone.conv.weight, before)
    assert torch.equal(target.head.bias, torch.ones(2))
    assert "conv.weight" in result.unexpected_keys


def test_backbone_prefix_is_not_applied_when_nothing_would_match(caplog):
    state = {"layer1.0.conv1.weight": torch.zeros(1)}  # torchvision names, not converted
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        result = load_state_dict_exact(TinyModel(), state, "raw.pth")
    assert result.unexpected_keys == ["layer1.0.conv1.weight"]
    assert "no key matched" in caplog.text


# --------------------------------------------------------------------------- #
# Converters
# --------------------------------------------------------------------------- #
def _run_tool(script: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(TOOLS / script), run_name="__main__")
    finally:
        sys.argv = argv


def test_torchvision_resnet50_converted_with_the_tool_matches_torchvision(tmp_path):
    """Converted weights give torchvision's layer4 output as res5.

    Random weights and random BN statistics, eval mode, STRIDE_IN_1X1 False. Tolerance:
    |ours - torchvision| <= 1e-5 * max|torchvision| + 1e-5 (float32; FrozenBN folds the
    statistics into a scale and shift, BatchNorm2d applies them in a different order).
    """
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    source, converted = tmp_path / "resnet50.pth", tmp_path / "R-50.pkl"
    torch.save(reference.state_dict(), str(source))
    _run_tool("convert-torchvision-to-d2.py", str(source), str(converted))

    checkpoint = read_checkpoint(str(converted))
    assert checkpoint["__author__"] == "torchvision"
    # torchvision's module versions name torchvision's modules: not carried into ours
    assert hasattr(reference.state_dict(), "_metadata")
    with open(converted, "rb") as f:
        assert not hasattr(pickle.load(f)["model"], "_metadata")
    cfg = get_cfg()
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    backbone = build_backbone(cfg).eval()  # FrozenBN, freeze-at 2: as the configs train
    result = load_state_dict_exact(backbone, checkpoint["model"], str(converted))
    assert result.missing_keys == [] and result.unexpected_keys == []

    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        r = reference
        expected = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
        actual = backbone(x)["res5"]
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * scale + 1e-5)


def test_swin_release_converted_with_the_tool_loads_into_the_backbone(tmp_path):
    """Head, final norm and attn_mask buffers are dropped; the rest loads by exact name."""
    torch.manual_seed(0)
    args = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4)}
    pretrained = _randomised(D2SwinTransformer(**args))
    release = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("norm")}
    release.update(
        {
            "norm.weight": torch.ones(128),
            "norm.bias": torch.zeros(128),
            "head.weight": torch.zeros(1000, 128),
            "head.bias": torch.zeros(1000),
            "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49),
        }
    )
    source, converted = tmp_path / "swin_tiny.pth", tmp_path / "swin_tiny.pkl"
    torch.save({"model": release}, str(source))
    _run_tool("convert-pretrained-swin-model-to-d2.py", str(source), str(converted))

    model = TinyModel()
    model.backbone = D2SwinTransformer(**args)
    result = load_state_dict_exact(model, read_checkpoint(str(converted))["model"])
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(
        [f"backbone.norm{i}.{p}" for i in range(4) for p in ("weight", "bias")]
        + ["head.weight", "head.bias"]
    )
    loaded = model.backbone.state_dict()
    for key, value in release.items():
        if key in loaded:
            assert torch.equal(loaded[key], value), key


def test_swin_converter_refuses_unknown_keys():
    with pytest.raises(KeyError, match="fc.weight"):
        convert_swin_release(
            {"patch_embed.proj.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}
        )


def test_save_to_disk_false_writes_nothing(tmp_path):
    DetectionCheckpointer(TinyModel(), str(tmp_path), save_to_disk=False).save("m")
    assert os.listdir(tmp_path) == []


def test_pkl_written_by_numpy_1_loads(tmp_path):
    """numpy 1.x pickles name ``numpy.core.multiarray`` (numpy 2 writes ``numpy._core``)."""
    source = _randomised(TinyModel())
    arrays = {k: v.numpy() for k, v in source.state_dict().items()}
    data = pickle.dumps({"model": arrays}, protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    target = TinyModel()
    DetectionCheckpointer(target).load(str(path))
    _assert_same_state(source, target)


# --------------------------------------------------------------------------- #
# Module versions (state_dict._metadata) through readers, writers and renames
# --------------------------------------------------------------------------- #
def _versioned_state() -> OrderedDict:
    """TinyModel's state dict; ``head`` records version 5 so no version is a default."""
    state = _randomised(TinyModel()).state_dict()
    state._metadata["head"] = {"version": 5}
    return state


def _tiny_legacy_head(head_version: int, prefix: str = "") -> tuple[nn.Module, OrderedDict]:
    """A tiny MaskFormer and its state dict with the pixel decoder's keys directly under the
    head (the layout before ``pixel_decoder`` was a submodule), recording ``head_version``;
    every key and module version under ``prefix``."""
    model = build_tiny_model("maskformer_fpn")
    state = model.state_dict()
    legacy = OrderedDict(
        (prefix + k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."), v)
        for k, v in state.items()
    )
    metadata = OrderedDict(
        (prefix + k if k else prefix.rstrip("."), dict(v)) for k, v in state._metadata.items()
    )
    metadata[prefix + "sem_seg_head"] = {"version": head_version}
    legacy._metadata = metadata
    return model, legacy


@pytest.mark.parametrize("ext", [".pkl", ".pth", ".safetensors"])
def test_each_format_keeps_the_module_versions(tmp_path, ext):
    state = _versioned_state()
    path = tmp_path / f"weights{ext}"
    save_weights(state, str(path))
    assert read_checkpoint(str(path))["model"]._metadata == state._metadata
    if ext == ".pkl":  # as detectron2 reads it
        with open(path, "rb") as f:
            assert pickle.load(f, encoding="latin1")["model"]._metadata == state._metadata
    elif ext == ".pth":
        assert torch.load(path)["model"]._metadata == state._metadata


def test_a_plain_dict_is_written_and_read_without_versions(tmp_path):
    path = tmp_path / "plain.pkl"
    save_weights(dict(_versioned_state()), str(path))
    assert not hasattr(read_checkpoint(str(path))["model"], "_metadata")


@pytest.mark.parametrize("head_version, loads", [(1, True), (2, False)])
def test_model_zoo_pkl_with_versions_loads_by_its_versions(tmp_path, head_version, loads):
    """A detectron2 model-zoo .pkl: {"model": OrderedDict of arrays with _metadata, ...}.
    The head layout before ``pixel_decoder`` loads when the file says version 1, and is left
    alone (reported) when it says version 2: the versions come from the file."""
    source, legacy = _tiny_legacy_head(head_version)
    arrays = OrderedDict((k, v.numpy()) for k, v in legacy.items())
    arrays._metadata = legacy._metadata
    path = tmp_path / "model_final.pkl"
    path.write_bytes(
        pickle.dumps({"model": arrays, "__author__": "Detectron2 Model Zoo"}, protocol=2)
    )
    target = build_tiny_model("maskformer_fpn", seed=1)
    result = load_state_dict_exact(target, read_checkpoint(str(path))["model"], str(path))
    if loads:
        assert result.missing_keys == [] and result.unexpected_keys == []
        DetectionCheckpointer(target).load(str(path))
        _assert_same_state(source, target)
    else:
        assert "sem_seg_head.adapter_1.weight" in result.unexpected_keys


def test_module_prefix_of_a_dataparallel_checkpoint_is_removed_with_its_versions():
    source, legacy = _tiny_legacy_head(1, prefix="module.")
    legacy._metadata = OrderedDict([("", {"version": 1}), *legacy._metadata.items()])
    stripped = replace_key_prefix(legacy, "module.", "")
    assert stripped._metadata["sem_seg_head"] == {"version": 1}
    assert stripped._metadata[""] == legacy._metadata["module"]
    # "module" (the model) becomes the root; the wrapper's own "" is gone with the wrapper
    inner = {k[len("module.") :] for k in legacy._metadata if k.startswith("module.")}
    assert set(stripped._metadata) == inner | {""}

    target = build_tiny_model("maskformer_fpn", seed=1)
    result = load_state_dict_exact(target, legacy, "ddp.pth")
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_state(source, target)


def test_module_prefix_with_current_versions_loads_without_renames():
    model = build_tiny_model("maskformer_fpn")
    state = model.state_dict()
    wrapped = OrderedDict(("module." + k, v) for k, v in state.items())
    wrapped._metadata = OrderedDict(
        ("module." + k if k else "module", v) for k, v in state._metadata.items()
    )
    target = build_tiny_model("maskformer_fpn", seed=1)
    result = load_state_dict_exact(target, wrapped, "ddp.pth")
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_state(model, target)


@pytest.mark.parametrize("bn_version, missing", [(1, False), (3, True)])
def test_backbone_only_checkpoint_keeps_its_module_versions(bn_version, missing):
    """The versions move under ``backbone.`` with the keys: a FrozenBN of version 1 without
    statistics gets identity statistics, one of version 3 reports them missing."""
    model = build_tiny_model("maskformer_fpn")
    state = model.backbone.state_dict()
    stats = ["stem.conv1.norm.running_mean", "stem.conv1.norm.running_var"]
    backbone_only = OrderedDict((k, v) for k, v in state.items() if k not in stats)
    backbone_only._metadata = state._metadata
    backbone_only._metadata["stem.conv1.norm"] = {"version": bn_version}
    result = load_state_dict_exact(model, backbone_only)
    expected = {"backbone." + k for k in stats} if missing else set()
    assert set(result.missing_keys) - expected == {
        k for k in model.state_dict() if not k.startswith("backbone.")
    }
    assert expected <= set(result.missing_keys)
    if not missing:
        assert torch.equal(model.backbone.stem.conv1.norm.running_var, torch.ones(64))


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"head": {"version": "2"}}, r"bad\.pkl.*_metadata\['head'\]\['version'\] = '2'"),
        ({"head": 2}, r"bad\.pkl.*_metadata\['head'\] must be a dict"),
        ([("head", {"version": 2})], r"bad\.pkl.*_metadata must map module prefixes"),
    ],
)
def test_bad_module_versions_name_the_file_and_module(tmp_path, metadata, message):
    arrays = OrderedDict((k, v.numpy()) for k, v in TinyModel().state_dict().items())
    arrays._metadata = metadata
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"model": arrays}))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(str(path))


def test_safetensors_with_a_broken_version_header_names_the_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"head.bias": torch.zeros(2)}, str(path), metadata={"_metadata": "{not json"})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*_metadata.*not JSON"):
        read_checkpoint(str(path))


# --------------------------------------------------------------------------- #
# Files that are not checkpoints
# --------------------------------------------------------------------------- #
def _jpeg_bytes() -> bytes:
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    return data.tobytes()


NOT_CHECKPOINTS = {
    "text": (b"hello world\nthis is a text file\n", r"starts with 'hello world' \(text\)"),
    "html": (
        b"<html><head><title>404 Not Found</title></head><body>gone</body></html>\n",
        r"starts with '<html><head><title>404 Not Found</title>' \(an HTML page",
    ),
    "jpeg": (None, r"holds JPEG data"),
    "empty": (b"", r"is empty"),
}


@pytest.mark.parametrize("ext", [".pth", ".pkl"])
@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_says_so_and_what_it_holds(tmp_path, ext, kind):
    content, description = NOT_CHECKPOINTS[kind]
    path = tmp_path / f"model_final{ext}"
    path.write_bytes(_jpeg_bytes() if content is None else content)
    with pytest.raises(CheckpointError) as info:
        DetectionCheckpointer(TinyModel()).load(str(path))
    message = str(info.value)
    assert message.startswith(f"not a checkpoint: {path}: ")
    assert re.search(description, message), message
    assert "weights_only" not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("container", [dict, OrderedDict])
def test_pkl_of_every_pickle_protocol_is_still_read(tmp_path, protocol, container):
    """The format check admits what a pickled dict starts with in each protocol."""
    source = _randomised(TinyModel())
    arrays = container((k, v.numpy()) for k, v in source.state_dict().items())
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    target = TinyModel()
    DetectionCheckpointer(target).load(str(path))
    _assert_same_state(source, target)


def test_pth_in_torch_legacy_format_is_still_read(tmp_path):
    source = _randomised(TinyModel())
    path = tmp_path / "legacy.pth"
    torch.save({"model": source.state_dict()}, path, _use_new_zipfile_serialization=False)
    target = TinyModel()
    DetectionCheckpointer(target).load(str(path))
    _assert_same_state(source, target)


# --------------------------------------------------------------------------- #
# Files of the checkpoint directory
# --------------------------------------------------------------------------- #
def test_checkpoints_get_a_plain_files_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        DetectionCheckpointer(TinyModel(), str(tmp_path)).save("model_0000009")
    finally:
        os.umask(old)
    for name in ("model_0000009.pth", "last_checkpoint"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_partial_files_of_killed_saves_are_removed_at_the_next_save(tmp_path, caplog):
    partial = [".model_0000009.pth.k3x_9a0q.tmp", ".last_checkpoint.abcdefgh.tmp"]
    unrelated = [
        ".model_0000009.pth.tmp",  # no random part: not an atomic_write name
        ".model_0000009.pth.ABCDEFGH.tmp",  # not mkstemp's alphabet
        ".metrics.json.abcdefgh.tmp",  # another writer's file, not a checkpoint's
        "model_0000009.pth.abcdefgh.tmp",  # no leading dot
        ".model_0000009.pth.abcdefgh.tmp.bak",
    ]
    for name in partial + unrelated:
        (tmp_path / name).write_bytes(b"partial")
    checkpointer = DetectionCheckpointer(TinyModel(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(partial + unrelated)  # not at creation
    with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
        checkpointer.save("model_0000019")
    assert sorted(os.listdir(tmp_path)) == sorted(
        unrelated + ["model_0000019.pth", "last_checkpoint"]
    )
    assert all(name in caplog.text for name in partial)
