"""Hugging Face checkpoint conversion: directory round trip, rules, configs, errors."""

import json
import re
from pathlib import Path

import pytest
import torch

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.checkpoint.hf import (
    ConversionError,
    cfg_to_hf_config,
    convert_hf_to_ours,
    convert_ours_to_hf,
    hf_config_to_cfg,
    hf_to_ours_state_dict,
    ours_to_hf_state_dict,
    read_weights,
    relative_position_index,
)
from mask2former.config import get_cfg
from mask2former.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PIXEL_DECODER_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    TRANSFORMER_DECODER_REGISTRY,
    build_model,
)
from mask2former.modeling.backbone import D2SwinTransformer
from mask2former.modeling.heads import MaskFormerHead
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from mask2former.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: the conversion tests need it"
)

from tests.modeling.test_hf_parity import NUM_LABELS, tiny_hf_model
from tests.published import PARAMS_M2F_R50_COCO_PANOPTIC

NAMES = ["cat", "dog", "road", "sky"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _hf_logits(model, pixels):
    with torch.no_grad():
        out = model(pixel_values=pixels)
    return out.class_queries_logits, out.masks_queries_logits


@pytest.mark.parametrize("arch,backbone", [("mask2former", "swin"), ("maskformer", "resnet")])
def test_round_trip_through_our_model_keeps_logits(arch, backbone, tmp_path):
    hf = tiny_hf_model(arch, backbone, seed=5)
    hf.config.id2label = dict(enumerate(NAMES))
    hf.config.label2id = {n: i for i, n in enumerate(NAMES)}
    hf.save_pretrained(tmp_path / "hf")
    config_file, weights_file = convert_hf_to_ours(tmp_path / "hf", tmp_path / "ours")

    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    assert cfg.MODEL.WEIGHTS == str(weights_file.resolve())
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == NUM_LABELS
    cfg.MODEL.DEVICE = "cpu"
    ours = build_model(cfg, thing_ids=[0, 1]).eval()
    DetectionCheckpointer(ours).load(cfg.MODEL.WEIGHTS)  # exact key names, or it raises
    state, metadata = read_weights(weights_file)
    assert set(state) == set(ours.state_dict())
    assert json.loads(metadata["class_names"]) == NAMES

    pixels = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    logits, masks = _hf_logits(hf, pixels)
    with torch.no_grad():
        outputs = ours.sem_seg_head(ours.backbone(pixels))
    torch.testing.assert_close(outputs["pred_logits"], logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(outputs["pred_masks"], masks, rtol=0, atol=1e-4)

    # Our model's own state dict goes back to a transformers directory.
    torch.save({"model": ours.state_dict()}, tmp_path / "ours.pth")
    convert_ours_to_hf(config_file, tmp_path / "ours.pth", tmp_path / "hf2", names=NAMES)
    back = type(hf).from_pretrained(tmp_path / "hf2").eval()
    assert back.config.id2label == dict(enumerate(NAMES))
    logits2, masks2 = _hf_logits(back, pixels)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(masks2, masks, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "arch,backbone",
    [("mask2former", "swin"), ("mask2former", "resnet"), ("maskformer", "swin")],
)
def test_state_dict_rules_are_inverse(arch, backbone):
    hf = tiny_hf_model(arch, backbone)
    state = hf.state_dict()
    kind = hf.config.backbone_config.model_type
    ours = hf_to_ours_state_dict(state, arch, kind)
    assert all(not k.startswith("model.") for k in ours)
    back = ours_to_hf_state_dict(ours, arch, kind)
    # Only the keys with no counterpart are lost: BatchNorm counters, Swin's final norm.
    lost = {k for k in state if k not in back}
    assert all(k.endswith("num_batches_tracked") or ".layernorm." in k for k in lost), lost
    assert set(back) <= set(state)
    for key, value in back.items():
        assert torch.equal(value, state[key]), key


def test_fused_attention_is_concatenated_in_query_key_value_order():
    hf = tiny_hf_model("mask2former", "resnet")
    state = hf.state_dict()
    ours = hf_to_ours_state_dict(state, "mask2former", "resnet")
    prefix = "model.transformer_module.decoder.layers.1.self_attn."
    fused = ours[
        "sem_seg_head.predictor.transformer_self_attention_layers.1.self_attn.in_proj_weight"
    ]
    expected = torch.cat([state[prefix + f"{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(fused, expected)


def test_relative_position_index_matches_transformers():
    from transformers.models.maskformer.modeling_maskformer_swin import MaskFormerSwinSelfAttention

    attention = MaskFormerSwinSelfAttention(
        transformers.MaskFormerSwinConfig(), dim=8, num_heads=2, window_size=3
    )
    assert torch.equal(relative_position_index(3), attention.relative_position_index)


def test_config_conversion_round_trip():
    hf = tiny_hf_model("mask2former", "swin")
    cfg = hf_config_to_cfg(hf.config.to_dict())
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == hf.config.decoder_layers
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
    again = cfg_to_hf_config(cfg, NAMES).to_dict()
    for key in ("hidden_dim", "decoder_layers", "num_queries", "feature_size", "class_weight"):
        assert again[key] == hf.config.to_dict()[key], key
    assert again["backbone_config"]["depths"] == [1, 1, 2, 1]


def test_writes_through_temporary_files_of_its_own(tmp_path):
    """The outputs are written atomically through fresh temporary names: a ``.tmp`` file that
    is already there (another writer's, a crashed run's) is left alone, and none remains."""
    tiny_hf_model("maskformer", "resnet").save_pretrained(tmp_path / "hf")
    (tmp_path / "ours").mkdir()
    strangers = [
        tmp_path / "ours" / f"{name}.tmp" for name in ("config.yaml", "model_final.safetensors")
    ]
    for stranger in strangers:
        stranger.write_text("another writer's")
    convert_hf_to_ours(tmp_path / "hf", tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(
        ["config.yaml", "model_final.safetensors"] + [s.name for s in strangers]
    )
    assert all(s.read_text() == "another writer's" for s in strangers)


@pytest.fixture
def register_as():
    """Registers an object under one more name for the test (fvcore has no public way)."""
    added = []

    def register(registry, name, obj):
        registry._do_register(name, obj)
        added.append((registry, name))

    yield register
    for registry, name in added:
        registry._obj_map.pop(name)


def test_components_convert_by_class_not_by_registered_name(register_as):
    cfg = hf_config_to_cfg(tiny_hf_model("mask2former", "swin").config.to_dict())
    expected = cfg_to_hf_config(cfg, NAMES).to_dict()
    for key, registry, cls in [
        ("MODEL.META_ARCHITECTURE", META_ARCH_REGISTRY, MaskFormer),
        ("MODEL.BACKBONE.NAME", BACKBONE_REGISTRY, D2SwinTransformer),
        ("MODEL.SEM_SEG_HEAD.NAME", SEM_SEG_HEADS_REGISTRY, MaskFormerHead),
        ("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", PIXEL_DECODER_REGISTRY, MSDeformAttnPixelDecoder),
        (
            "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
            TRANSFORMER_DECODER_REGISTRY,
            MultiScaleMaskedTransformerDecoder,
        ),
    ]:
        # a name no other test registers (registries are shared by the tests of a process)
        register_as(registry, "HFConversionRenamed" + cls.__name__, cls)
        cfg.merge_from_list([key, "HFConversionRenamed" + cls.__name__])
    assert cfg_to_hf_config(cfg, NAMES).to_dict() == expected


def test_other_components_are_refused_naming_their_key(register_as):
    class TweakedDecoder(MultiScaleMaskedTransformerDecoder):
        pass

    register_as(TRANSFORMER_DECODER_REGISTRY, "Tweaked", TweakedDecoder)
    cfg = hf_config_to_cfg(tiny_hf_model("mask2former", "resnet").config.to_dict())
    for key, value, message in [
        ("MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "Tweaked", "'Tweaked' (TweakedDecoder)"),
        ("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder", "mask2former has MSDeform"),
        ("MODEL.SEM_SEG_HEAD.NAME", "PerPixelBaselineHead", "'PerPixelBaselineHead'"),
        ("MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone", "no transformers counterpart"),
        ("MODEL.BACKBONE.NAME", "NoSuchBackbone", "'NoSuchBackbone' is not in the BACKBONE"),
    ]:
        changed = cfg.clone()
        changed.merge_from_list([key, value])
        with pytest.raises(
            ConversionError, match=re.escape(f"{key} = ") + ".*" + re.escape(message)
        ):
            cfg_to_hf_config(changed, NAMES)
    per_pixel = get_cfg()
    per_pixel.merge_from_file(
        str(CONFIGS / "maskformer/ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml")
    )
    with pytest.raises(ConversionError, match="MODEL.META_ARCHITECTURE = 'SemanticSegmentor'"):
        cfg_to_hf_config(per_pixel, [str(i) for i in range(150)])


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ConversionError, match="no conversion rule for hf key 'model.unknown'"):
        hf_to_ours_state_dict({"model.unknown": torch.zeros(1)}, "mask2former", "swin")
    with pytest.raises(ConversionError, match="backbone model_type 'convnext'"):
        hf_to_ours_state_dict({}, "mask2former", "convnext")
    with pytest.raises(ConversionError, match="model_type 'detr'"):
        hf_config_to_cfg({"model_type": "detr"})
    (tmp_path / "config.json").write_text(
        json.dumps(tiny_hf_model("maskformer", "resnet").config.to_dict())
    )
    with pytest.raises(ConversionError, match="model.safetensors: not found"):
        convert_hf_to_ours(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_published_r50_config_fills_a_transformers_model_exactly():
    """The published R50 COCO panoptic config converts to a transformers Mask2Former whose
    every tensor our weights fill with the same shape; parameters agree with the published
    count (transformers' BatchNorm affine terms are parameters, ours frozen buffers)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    ours = build_model(cfg, thing_ids=list(range(80)))
    assert sum(p.numel() for p in ours.parameters()) == PARAMS_M2F_R50_COCO_PANOPTIC
    with torch.device("meta"):
        hf = transformers.Mask2FormerForUniversalSegmentation(
            cfg_to_hf_config(cfg, [f"class_{i}" for i in range(133)])
        )
    converted = ours_to_hf_state_dict(ours.state_dict(), "mask2former", "resnet")
    expected = {k: v.shape for k, v in hf.state_dict().items()}
    assert {k for k in expected if k not in converted} == {
        k for k in expected if k.endswith("num_batches_tracked")
    }
    assert {k: v.shape for k, v in converted.items()} == {
        k: s for k, s in expected.items() if k in converted
    }
    batch_norm_affine = sum(p.numel() for n, p in hf.named_parameters() if ".normalization." in n)
    assert (
        sum(p.numel() for p in hf.parameters()) - batch_norm_affine == PARAMS_M2F_R50_COCO_PANOPTIC
    )


def test_former_module_path_reexports_the_package():
    from mask2former.checkpoint import hf, hf_conversion

    assert all(getattr(hf_conversion, name) is getattr(hf, name) for name in hf.__all__)
