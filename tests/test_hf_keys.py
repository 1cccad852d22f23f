"""The key tables of the Hugging Face conversion: every key of a tiny model of each kind maps
both ways, in memory and in the file layout, and every rule is needed."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mask2former.checkpoint.hf import (
    hf_config_to_cfg,
    hf_to_ours_state_dict,
    keys,
    ours_to_hf_state_dict,
)
from mask2former.modeling import build_model

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: the conversion tests need it"
)
from safetensors.torch import load_file

from tests.modeling.test_hf_parity import tiny_hf_model

KINDS = [("mask2former", "swin"), ("mask2former", "resnet"), ("maskformer", "swin"),
         ("maskformer", "resnet")]  # fmt: skip


def _tiny(arch: str, backbone: str, tmp: Path) -> SimpleNamespace:
    """State dicts of a tiny transformers model (in memory and as save_pretrained writes it)
    and of our model built from its converted config."""
    hf = tiny_hf_model(arch, backbone)
    if arch == "mask2former":  # so that the decoder has its input projections
        hf.config.enforce_input_projection = True
        hf = type(hf)(hf.config)
    hf.save_pretrained(tmp / f"{arch}-{backbone}")
    cfg = hf_config_to_cfg(hf.config.to_dict())
    cfg.MODEL.DEVICE = "cpu"
    return SimpleNamespace(
        arch=arch,
        kind=hf.config.backbone_config.model_type,
        memory=hf.state_dict(),
        file=load_file(tmp / f"{arch}-{backbone}" / "model.safetensors"),
        ours=build_model(cfg, thing_ids=[0, 1]).state_dict(),
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    return {kind: _tiny(*kind, tmp) for kind in KINDS}


def _assert_equal_states(a: dict, b: dict) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:10]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("arch,backbone", KINDS)
def test_file_layout_converts_like_memory_layout(arch, backbone, tiny):
    m = tiny[arch, backbone]
    from_memory = hf_to_ours_state_dict(m.memory, m.arch, m.kind)
    assert set(from_memory) == set(m.ours)
    _assert_equal_states(hf_to_ours_state_dict(m.file, m.arch, m.kind), from_memory)


@pytest.mark.parametrize("arch,backbone", KINDS)
def test_our_keys_go_to_every_transformers_key_and_back(arch, backbone, tiny):
    m = tiny[arch, backbone]
    hf = ours_to_hf_state_dict(m.ours, m.arch, m.kind)
    to_ours = keys.rules(keys.TO_OURS, m.arch, m.kind)
    assert set(hf) == {k for k in m.memory if not keys.dropped(k, to_ours)}
    assert all(hf[k].shape == m.memory[k].shape for k in hf)
    _assert_equal_states(hf_to_ours_state_dict(hf, m.arch, m.kind), m.ours)


def test_every_rule_is_used(tiny):
    """Each rule of each table is the first match of some key of the tiny models."""
    for arch, backbone in KINDS:
        m = tiny[arch, backbone]
        for table, names in [
            (keys.TO_OURS, [*m.memory, *m.file]),
            (keys.TO_HF, list(m.ours)),
        ]:
            rules = keys.rules(table, m.arch, m.kind)
            used = {next(i for i, (p, _) in enumerate(rules) if p.match(k)) for k in names}
            unused = [p.pattern for i, (p, _) in enumerate(rules) if i not in used]
            assert not unused, (arch, backbone, unused)


def test_first_matching_rule_wins():
    """A norm of ours is renamed by its own rule, not by its module's rule listed after it."""
    rules = keys.rules(keys.TO_HF, "mask2former", "resnet")
    pixel_decoder, encoder = keys.PD, keys.ENC + "encoder.stages."
    for ours, hf in [
        ("sem_seg_head.pixel_decoder.adapter_1.norm.weight", pixel_decoder + "adapter_1.1.weight"),
        ("sem_seg_head.pixel_decoder.adapter_1.weight", pixel_decoder + "adapter_1.0.weight"),
        ("backbone.res3.1.conv2.norm.bias", encoder + "1.layers.1.layer.1.normalization.bias"),
        ("backbone.res3.1.conv2.weight", encoder + "1.layers.1.layer.1.convolution.weight"),
    ]:
        assert keys.rename(ours, rules, "ours")[1] == hf
