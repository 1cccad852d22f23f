"""Backbones: every published config builds; shapes, strides, parameter counts and parity."""

import math
from pathlib import Path

import pytest
import torch
import torchvision

from mask2former.config import ConfigError, get_cfg
from mask2former.layers import FrozenBatchNorm2d
from mask2former.modeling import build_backbone, build_model
from mask2former.modeling.backbone.swin import D2SwinTransformer
from tests.published import CONFIG_DIR, published_configs

STAGES = ("res2", "res3", "res4", "res5")
ODD_INPUT = (1, 3, 197, 263)


def _cfg_from(path: Path, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(overrides))
    return cfg


def _backbone_description(cfg) -> str:
    """Everything a backbone builder reads, to build each distinct backbone once."""
    return "\n".join(
        [cfg.MODEL.BACKBONE.dump(), cfg.MODEL.RESNETS.dump(), cfg.MODEL.SWIN.dump()]
        + [str(cfg.MODEL.PIXEL_MEAN)]
    )


def test_every_published_config_builds_its_backbone():
    """Each config's backbone is built (on the meta device: shapes only, no weights)."""
    built: dict[str, dict] = {}
    paths = published_configs()
    assert len(paths) == 93  # 57 Mask2Former + 36 MaskFormer image configs
    for path in paths:
        cfg = _cfg_from(path)
        key = _backbone_description(cfg)
        if key not in built:
            with torch.device("meta"):
                backbone = build_backbone(cfg)
            built[key] = backbone.output_shape()
        shapes = built[key]
        for name, spec in shapes.items():
            assert spec.stride == 2 ** (int(name[3:])), (path, name, spec)
        assert set(shapes) >= set(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES) or path.name.startswith(
            "Base"
        ), path
    assert len(built) >= 6  # R50, R101, R101c, Swin T/S, B, L families


PANOPTIC_SWIN = "coco/panoptic-segmentation/swin/"
FAMILIES = {
    # family: (published config under configs/, res2 channels)
    "R50": ("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", 256),
    "R101": ("coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml", 256),
    "R101c": ("maskformer/ade20k-150/maskformer_R101c_bs16_160k.yaml", 256),
    "SwinT": ("ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml", 96),
    "SwinS": ("ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k.yaml", 96),
    "SwinB": (
        PANOPTIC_SWIN + "maskformer2_swin_base_384_bs16_50ep.yaml",
        128,
    ),
    "SwinL": (
        PANOPTIC_SWIN + "maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        192,
    ),
}


# Families run on real tensors; the others run on the meta device, where every op
# computes its output shape exactly but no arithmetic (keeps Swin-L and R101 quick).
REAL_FORWARD = ("R50", "SwinT")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_shapes_and_strides_on_odd_input(family):
    """res2..res5 have channels C, 2C, 4C, 8C and size ceil(H / stride) x ceil(W / stride)."""
    relative, res2_channels = FAMILIES[family]
    cfg = _cfg_from(CONFIG_DIR / relative)
    device = torch.device("cpu" if family in REAL_FORWARD else "meta")
    with device:
        backbone = build_backbone(cfg).eval()
        with torch.no_grad():
            outputs = backbone(torch.randn(ODD_INPUT))
    assert sorted(outputs) == list(STAGES)
    for i, name in enumerate(STAGES):
        stride = 4 * 2**i
        expected = (1, res2_channels * 2**i, math.ceil(197 / stride), math.ceil(263 / stride))
        assert tuple(outputs[name].shape) == expected, name
        assert backbone.output_shape()[name].stride == stride
        assert backbone.output_shape()[name].channels == expected[1]
        if device.type == "cpu":
            assert torch.isfinite(outputs[name]).all()


def test_r101c_is_the_deeplab_variant():
    cfg = _cfg_from(CONFIG_DIR / FAMILIES["R101c"][0])
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert [backbone.stem.conv1.out_channels, backbone.stem.conv3.out_channels] == [64, 128]
    assert [block.conv2.dilation[0] for block in backbone.res5] == [1, 2, 4]
    assert backbone.res5[0].conv2.stride == (2, 2)  # STRIDE_IN_1X1 False: stride in the 3x3
    assert len(backbone.res4) == 23


def _resnet_cfg(depth: int, **resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 256
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_with_bn_has_torchvision_parameter_count_minus_fc(depth):
    with torch.device("meta"):
        ours = build_backbone(_resnet_cfg(depth))
        reference = getattr(torchvision.models, f"resnet{depth}")()
    expected = sum(p.numel() for p in reference.parameters()) - sum(
        p.numel() for p in reference.fc.parameters()
    )
    assert sum(p.numel() for p in ours.parameters()) == expected
    if depth == 50:
        assert expected == 23_508_032


def test_resnet_parameter_names_follow_detectron2():
    with torch.device("meta"):
        keys = set(build_backbone(_resnet_cfg(50)).state_dict())
    for key in [
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.bias",
        "res2.2.conv3.norm.weight",
        "res5.2.conv2.weight",
    ]:
        assert key in keys
    assert "res2.1.shortcut.weight" not in keys


def test_frozen_bn_and_freeze_at():
    cfg = _resnet_cfg(50, NORM="FrozenBN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_backbone(cfg)
    names = {name for name, _ in backbone.named_parameters()}
    assert "stem.conv1.norm.weight" not in names  # FrozenBN affine terms are buffers
    assert "stem.conv1.norm.weight" in backbone.state_dict()
    frozen = [p.requires_grad for n, p in backbone.named_parameters() if n.startswith("res2.")]
    trainable = [p.requires_grad for n, p in backbone.named_parameters() if n.startswith("res3.")]
    assert frozen and not any(frozen) and all(trainable)


def test_freeze_at_converts_bn_to_frozen_bn():
    cfg = _resnet_cfg(50)
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_backbone(cfg)
    assert isinstance(backbone.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(backbone.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(backbone.res3[0].conv1.norm, torch.nn.BatchNorm2d)
    assert not any(p.requires_grad for p in backbone.stem.parameters())


@pytest.mark.parametrize("stride_in_1x1,conv1_stride,conv2_stride", [(True, 2, 1), (False, 1, 2)])
def test_stride_in_1x1(stride_in_1x1, conv1_stride, conv2_stride):
    with torch.device("meta"):
        backbone = build_backbone(_resnet_cfg(50, STRIDE_IN_1X1=stride_in_1x1))
    assert backbone.res3[0].conv1.stride == (conv1_stride, conv1_stride)
    assert backbone.res3[0].conv2.stride == (conv2_stride, conv2_stride)


def test_res5_dilation_keeps_stride_16():
    with torch.device("meta"):
        backbone = build_backbone(_resnet_cfg(50, RES5_DILATION=2)).eval()
        out = backbone(torch.randn(1, 3, 64, 96))
    assert [block.conv2.dilation for block in backbone.res5] == [(2, 2)] * 3
    assert backbone.output_shape()["res5"].stride == 16
    assert tuple(out["res5"].shape) == (1, 2048, 4, 6)


@pytest.mark.parametrize("norm", ["GN", "SyncBN", "FrozenBN", ""])
def test_norm_choices(norm):
    with torch.device("meta"):
        backbone = build_backbone(_resnet_cfg(50, NORM=norm))
    expected = {
        "GN": torch.nn.GroupNorm,
        "SyncBN": torch.nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "": type(None),
    }[norm]
    assert isinstance(backbone.res4[0].conv2.norm, expected)


@pytest.mark.parametrize(
    "key, value",
    [
        ("DEFORM_ON_PER_STAGE", [False, True, True, True]),
        ("DEFORM_MODULATED", True),
        ("DEFORM_NUM_GROUPS", 2),
    ],
)
def test_deformable_resnet_is_refused_naming_the_key(key, value):
    """Deformable convolutions are not implemented: any DEFORM_* value but the default is
    refused when the model is built (mask2former.config.check_supported)."""
    cfg = _resnet_cfg(50)
    cfg.MODEL.RESNETS[key] = value
    with pytest.raises(ConfigError, match=f"MODEL.RESNETS.{key} = "):
        build_model(cfg)


@pytest.mark.parametrize(
    "builder, depth, overrides, message",
    [
        # detectron2 resnet.py build_resnet_backbone: asserts for R18/R34
        ("build_resnet_backbone", 18, {"NUM_GROUPS": 2}, r"got 64, 1 and 2"),
        ("build_resnet_backbone", 34, {"RES2_OUT_CHANNELS": 256}, r"got 256, 1 and 1"),
        ("build_resnet_backbone", 50, {"RES5_DILATION": 4}, "RES5_DILATION must be one of"),
        # DeepLab resnet.py build_resnet_deeplab_backbone: depths 50/101/152 only
        ("build_resnet_deeplab_backbone", 18, {}, "DEPTH must be one of"),
        ("build_resnet_deeplab_backbone", 50, {"RES5_DILATION": 3}, "RES5_DILATION must be one"),
        ("build_resnet_deeplab_backbone", 50, {"STEM_TYPE": "fancy"}, "STEM_TYPE"),
    ],
)
def test_resnet_values_the_official_builders_refuse(builder, depth, overrides, message):
    cfg = _resnet_cfg(depth, **overrides)
    cfg.MODEL.BACKBONE.NAME = builder
    with pytest.raises(ConfigError, match=message):
        build_backbone(cfg)


def test_deeplab_resnet_dilates_res5_by_four():
    """DeepLab's builder accepts RES5_DILATION 4 (stride 1 in res5, dilation 4 * multi-grid),
    as projects/DeepLab/deeplab/resnet.py build_resnet_deeplab_backbone does."""
    cfg = _resnet_cfg(50, RES5_DILATION=4, RES5_MULTI_GRID=[1, 2, 4], STEM_TYPE="deeplab")
    cfg.MODEL.BACKBONE.NAME = "build_resnet_deeplab_backbone"
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert [block.conv2.dilation for block in backbone.res5] == [(4, 4), (8, 8), (16, 16)]
    assert backbone.res5[0].conv1.stride == (1, 1) and backbone.res5[0].conv2.stride == (1, 1)
    assert backbone.output_shape()["res5"].stride == 16


def test_unknown_backbone_name_lists_registered_names():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_nope_backbone"
    with pytest.raises(KeyError, match="D2SwinTransformer.*build_resnet_backbone"):
        build_backbone(cfg)


# --------------------------------------------------------------------------- #
# Swin
# --------------------------------------------------------------------------- #
def _tiny_swin(**kwargs) -> D2SwinTransformer:
    args = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "window_size": 7}
    args.update(kwargs)
    return D2SwinTransformer(drop_path_rate=0.0, **args)


def test_swin_parameter_names_follow_the_published_checkpoints():
    keys = set(_tiny_swin(ape=True).state_dict())
    for key in [
        "patch_embed.proj.weight",
        "patch_embed.norm.bias",
        "absolute_pos_embed",
        "layers.0.blocks.1.norm1.weight",
        "layers.0.blocks.1.attn.qkv.weight",
        "layers.0.blocks.1.attn.proj.bias",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.0.blocks.1.attn.relative_position_index",
        "layers.0.blocks.1.norm2.bias",
        "layers.0.blocks.1.mlp.fc1.weight",
        "layers.3.blocks.0.mlp.fc2.bias",
        "layers.2.downsample.reduction.weight",
        "layers.2.downsample.norm.weight",
        "norm0.weight",
        "norm3.bias",
    ]:
        assert key in keys, key
    assert "layers.3.downsample.reduction.weight" not in keys
    params = dict(_tiny_swin().named_parameters())
    assert "layers.0.blocks.0.attn.relative_position_index" not in params


def _copy_swin_weights_to_transformers(ours: D2SwinTransformer, hf) -> None:
    """Our keys -> transformers' SwinBackbone keys (qkv split into q, k, v)."""
    renames = [
        ("patch_embed.proj.", "swin.embeddings.patch_embeddings.projection."),
        ("patch_embed.norm.", "swin.embeddings.norm."),
        ("layers.", "swin.encoder.layers."),
        (".norm1.", ".layernorm_before."),
        (".norm2.", ".layernorm_after."),
        (".attn.proj.", ".attention.o_proj."),
        (
            ".attn.relative_position_bias_table",
            ".attention.relative_position_bias.relative_position_bias_table",
        ),
    ]
    target = {}
    for key, value in ours.state_dict().items():
        if key.endswith("relative_position_index"):
            continue
        if key.startswith("norm"):
            target[f"hidden_states_norms.stage{int(key[4]) + 1}.{key.split('.')[1]}"] = value
            continue
        for old, new in renames:
            key = key.replace(old, new)
        if ".attn.qkv." in key:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                target[key.replace(".attn.qkv.", f".attention.{part}_proj.")] = chunk
        else:
            target[key] = value
    missing, unexpected = hf.load_state_dict(target, strict=False)
    assert unexpected == [] and all(k.startswith("swin.layernorm.") for k in missing), missing


@pytest.mark.parametrize("window_size", [7, 12])
def test_swin_matches_transformers_swin_backbone(window_size):
    """Same weights, same input: our features equal transformers' SwinBackbone's.

    transformers is an independent implementation of the same architecture (padding,
    shifted windows and their masks, patch merging). Tolerance: 1e-4 absolute on features
    of LayerNorm scale (float32).
    """
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = _tiny_swin(window_size=window_size).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine terms and relative biases
        for name, p in ours.named_parameters():
            if "norm" in name or "relative_position_bias_table" in name:
                p.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.5)
    config = transformers.SwinConfig(
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=window_size,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        drop_path_rate=0.0,
    )
    hf = transformers.SwinBackbone(config).eval()
    _copy_swin_weights_to_transformers(ours, hf)
    x = torch.randn(ODD_INPUT)
    with torch.no_grad():
        expected = hf(x).feature_maps
        actual = ours(x)
    for name, reference in zip(STAGES, expected):
        torch.testing.assert_close(actual[name], reference, rtol=0, atol=1e-4)


def test_swin_pads_inputs_smaller_than_a_window():
    backbone = _tiny_swin(window_size=12).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 33, 17))
    assert tuple(out["res2"].shape) == (2, 16, 9, 5)
    assert tuple(out["res5"].shape) == (2, 128, 2, 1)
    assert backbone.size_divisibility == 32


def test_swin_absolute_position_embedding_is_resized_to_the_input():
    backbone = _tiny_swin(ape=True, pretrain_img_size=384).eval()
    assert tuple(backbone.absolute_pos_embed.shape) == (1, 16, 96, 96)
    x = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        with_ape = backbone(x)["res2"]
        backbone.absolute_pos_embed.zero_()
        without_ape = backbone(x)["res2"]
    assert tuple(with_ape.shape) == (1, 16, 18, 13)
    assert not torch.allclose(with_ape, without_ape)


def test_swin_drop_path_acts_only_in_training():
    backbone = D2SwinTransformer(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.5
    )
    x = torch.randn(4, 3, 64, 64)
    backbone.eval()
    with torch.no_grad():
        a, b = backbone(x)["res5"], backbone(x)["res5"]
        torch.manual_seed(1)
        backbone.train()
        c = backbone(x)["res5"]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert backbone.layers[3].blocks[1].drop_path.rate == pytest.approx(0.5)
    assert backbone.layers[0].blocks[0].drop_path.rate == 0.0


def test_swin_activation_checkpointing_gives_the_same_values_and_gradients():
    torch.manual_seed(0)
    plain = _tiny_swin().train()
    checkpointed = _tiny_swin(use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 40, 56)
    grads = []
    for model in (plain, checkpointed):
        out = model(x)
        sum(v.square().sum() for v in out.values()).backward()
        grads.append(model.layers[1].blocks[1].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_resnext_groups_match_torchvision_resnext50_32x4d():
    with torch.device("meta"):
        ours = build_backbone(_resnet_cfg(50, NUM_GROUPS=32, WIDTH_PER_GROUP=4))
        reference = torchvision.models.resnext50_32x4d()
    expected = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in ours.parameters()) == expected
    assert ours.res2[0].conv2.groups == 32 and ours.res2[0].conv2.out_channels == 128
