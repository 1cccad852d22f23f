"""The shipped configs build the published models: parameter names and counts.

Published facts used here: the parameter counts in ``tests/published.py`` (where their source
is named) and the checkpoint key layout of facebookresearch/Mask2Former and MaskFormer (as
listed by detectron2 when it loads their checkpoints, and by the transformers conversion
scripts).
"""

from pathlib import Path

import pytest
import torch

from mask2former.config import get_cfg
from mask2former.modeling import META_ARCH_REGISTRY
from tests.published import (
    PARAMS_M2F_R50_COCO_PANOPTIC,
    PARAMS_M2F_R50_YTVIS_2019,
    PARAMS_M2F_SWIN_L_200_QUERIES_COCO_PANOPTIC,
    PARAMS_MASKFORMER_R50_ADE20K_150,
    published_video_config_hashes,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
M2F_R50_COCO_PANOPTIC = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
M2F_SWIN_L_COCO_PANOPTIC = (
    "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
)
MASKFORMER_R50_ADE = "maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml"


def build_on_meta(config: str):
    """The model of a shipped config, with parameters on the meta device (no memory, no init)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / config))
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg), cfg


def weight_bias(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def conv_with_norm(prefix: str) -> list[str]:
    """detectron2 Conv2d without bias, followed by a GroupNorm named ``norm``."""
    return [f"{prefix}.weight", *weight_bias(f"{prefix}.norm")]


def multihead_attention(prefix: str) -> list[str]:
    return [
        f"{prefix}.in_proj_weight",
        f"{prefix}.in_proj_bias",
        *weight_bias(f"{prefix}.out_proj"),
    ]


def mask2former_head_keys(enc_layers: int, dec_layers: int) -> set[str]:
    """sem_seg_head keys of published Mask2Former (MSDeformAttn pixel decoder, res2 FPN level)."""
    pd, pr = "sem_seg_head.pixel_decoder", "sem_seg_head.predictor"
    keys = [*conv_with_norm(f"{pd}.adapter_1"), *conv_with_norm(f"{pd}.layer_1")]
    keys += weight_bias(f"{pd}.mask_features") + [f"{pd}.transformer.level_embed"]
    for i in range(3):
        keys += weight_bias(f"{pd}.input_proj.{i}.0") + weight_bias(f"{pd}.input_proj.{i}.1")
    for i in range(enc_layers):
        layer = f"{pd}.transformer.encoder.layers.{i}"
        for name in ("linear1", "linear2", "norm1", "norm2"):
            keys += weight_bias(f"{layer}.{name}")
        for name in ("attention_weights", "output_proj", "sampling_offsets", "value_proj"):
            keys += weight_bias(f"{layer}.self_attn.{name}")
    for i in range(dec_layers - 1):
        keys += multihead_attention(f"{pr}.transformer_self_attention_layers.{i}.self_attn")
        keys += weight_bias(f"{pr}.transformer_self_attention_layers.{i}.norm")
        keys += multihead_attention(f"{pr}.transformer_cross_attention_layers.{i}.multihead_attn")
        keys += weight_bias(f"{pr}.transformer_cross_attention_layers.{i}.norm")
        for name in ("linear1", "linear2", "norm"):
            keys += weight_bias(f"{pr}.transformer_ffn_layers.{i}.{name}")
    keys += weight_bias(f"{pr}.decoder_norm") + weight_bias(f"{pr}.class_embed")
    keys += [f"{pr}.query_feat.weight", f"{pr}.query_embed.weight", f"{pr}.level_embed.weight"]
    keys += [k for i in range(3) for k in weight_bias(f"{pr}.mask_embed.layers.{i}")]
    return set(keys)


def maskformer_head_keys(dec_layers: int) -> set[str]:
    """sem_seg_head keys of published MaskFormer (FPN pixel decoder, DETR decoder on res5)."""
    pd, pr = "sem_seg_head.pixel_decoder", "sem_seg_head.predictor"
    keys = [k for i in (1, 2, 3) for k in conv_with_norm(f"{pd}.adapter_{i}")]
    keys += [k for i in (1, 2, 3, 4) for k in conv_with_norm(f"{pd}.layer_{i}")]
    keys += weight_bias(f"{pd}.mask_features")
    for i in range(dec_layers):
        layer = f"{pr}.transformer.decoder.layers.{i}"
        keys += multihead_attention(f"{layer}.self_attn") + multihead_attention(
            f"{layer}.multihead_attn"
        )
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            keys += weight_bias(f"{layer}.{name}")
    keys += weight_bias(f"{pr}.transformer.decoder.norm") + [f"{pr}.query_embed.weight"]
    keys += weight_bias(f"{pr}.input_proj") + weight_bias(f"{pr}.class_embed")
    keys += [k for i in range(3) for k in weight_bias(f"{pr}.mask_embed.layers.{i}")]
    return set(keys)


def non_backbone_keys(model) -> set[str]:
    return {k for k in model.state_dict() if not k.startswith("backbone.")}


def test_mask2former_r50_coco_panoptic_is_the_published_model():
    model, _ = build_on_meta(M2F_R50_COCO_PANOPTIC)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_M2F_R50_COCO_PANOPTIC
    expected = mask2former_head_keys(enc_layers=6, dec_layers=10) | {"criterion.empty_weight"}
    assert non_backbone_keys(model) == expected


def test_maskformer_r50_ade20k_is_the_published_model():
    model, _ = build_on_meta(MASKFORMER_R50_ADE)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_MASKFORMER_R50_ADE20K_150
    expected = maskformer_head_keys(dec_layers=6) | {"criterion.empty_weight"}
    assert non_backbone_keys(model) == expected
    assert model.criterion.mask_loss == "full"


def test_mask2former_swin_large_coco_panoptic_is_the_published_model():
    model, _ = build_on_meta(M2F_SWIN_L_COCO_PANOPTIC)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_M2F_SWIN_L_200_QUERIES_COCO_PANOPTIC
    expected = mask2former_head_keys(enc_layers=6, dec_layers=10) | {"criterion.empty_weight"}
    assert non_backbone_keys(model) == expected
    assert model.sem_seg_head.predictor.query_feat.weight.shape == (200, 256)


def test_mask2former_r50_youtubevis_2019_is_the_published_model():
    model, _ = build_on_meta("youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml")
    assert type(model).__name__ == "VideoMaskFormer"
    assert type(model.sem_seg_head.predictor).__name__ == "VideoMultiScaleMaskedTransformerDecoder"
    assert sum(p.numel() for p in model.parameters()) == PARAMS_M2F_R50_YTVIS_2019
    expected = mask2former_head_keys(enc_layers=6, dec_layers=10) | {"criterion.empty_weight"}
    assert non_backbone_keys(model) == expected
    assert model.criterion.mask_loss == "point"
    assert model.sem_seg_head.predictor.class_embed.out_features == 41  # 40 classes + no-object


#: The COCO instance model (Mask2Former MODEL_ZOO.md) each published video config's
#: MODEL.WEIGHTS names, by its file name, and the shipped config of that model.
VIDEO_WEIGHTS_FROM = {
    "model_final_3c8ec9.pkl": "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "model_final_eba159.pkl": "coco/instance-segmentation/maskformer2_R101_bs16_50ep.yaml",
    "model_final_86143f.pkl": "coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "model_final_1e7f22.pkl": "coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
    "model_final_83d103.pkl": (
        "coco/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml"
    ),
    "model_final_e5f453.pkl": (
        "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    ),
}
#: What a 40-class video model lacks of an 80-class COCO one: 40 rows of the class head.
COCO_TO_YTVIS_PARAMS = 40 * (256 + 1)


def video_configs() -> list[str]:
    return sorted(r for r in published_video_config_hashes() if "/Base-" not in r)


@pytest.mark.slow
@pytest.mark.parametrize("config", video_configs())
def test_every_video_config_is_its_coco_instance_model_with_40_classes(config):
    """Same parameter names and shapes as the COCO instance model its MODEL.WEIGHTS name, but
    the 40-class head: loading that checkpoint skips exactly the class head and the no-object
    weights (shape mismatch), as detectron2's checkpointer does for the published model."""
    video, cfg = build_on_meta(config)
    image, _ = build_on_meta(VIDEO_WEIGHTS_FROM[cfg.MODEL.WEIGHTS])
    video_shapes = {k: tuple(v.shape) for k, v in video.state_dict().items()}
    image_shapes = {k: tuple(v.shape) for k, v in image.state_dict().items()}
    assert video_shapes.keys() == image_shapes.keys()
    differ = {k for k in video_shapes if video_shapes[k] != image_shapes[k]}
    head = "sem_seg_head.predictor.class_embed"
    assert differ == {f"{head}.weight", f"{head}.bias", "criterion.empty_weight"}
    video_params = sum(p.numel() for p in video.parameters())
    assert video_params == sum(p.numel() for p in image.parameters()) - COCO_TO_YTVIS_PARAMS
    if "R50" in config:
        assert video_params == PARAMS_M2F_R50_YTVIS_2019


def shipped_configs() -> list[str]:
    paths = sorted(CONFIG_DIR.rglob("*.yaml"))
    return [str(p.relative_to(CONFIG_DIR)) for p in paths if not p.name.startswith("Base-")]


@pytest.mark.slow
@pytest.mark.parametrize("config", shipped_configs())
def test_every_shipped_config_builds_its_model_family(config):
    model, cfg = build_on_meta(config)
    head = model.sem_seg_head
    if config.startswith(("youtubevis_", "ytvis_shapes/")):
        assert type(model).__name__ == "VideoMaskFormer"
        assert type(head.predictor).__name__ == "VideoMultiScaleMaskedTransformerDecoder"
        assert type(head.pixel_decoder).__name__ == "MSDeformAttnPixelDecoder"
        assert model.criterion.mask_loss == "point"
    elif config.startswith("maskformer/"):
        # MaskFormer v1 YAMLs name no transformer decoder: the default builds the v1 model,
        # trained with the v1 (full-mask focal + dice) losses.
        assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "StandardTransformerDecoder"
        if cfg.MODEL.META_ARCHITECTURE == "MaskFormer":
            assert type(head.predictor).__name__ == "StandardTransformerDecoder"
            assert model.criterion.mask_loss == "full"
        else:
            assert type(head).__name__ in ("PerPixelBaselineHead", "PerPixelBaselinePlusHead")
    else:
        assert type(head.predictor).__name__ == "MultiScaleMaskedTransformerDecoder"
        assert type(head.pixel_decoder).__name__ == "MSDeformAttnPixelDecoder"
        assert model.criterion.mask_loss == "point"
        assert len(head.predictor.transformer_ffn_layers) == cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1


def test_legacy_head_layout_loads_into_pixel_decoder():
    """Pixel-decoder weights saved directly under the head (MaskFormer's first layout) load
    into ``pixel_decoder``; current keys are not renamed twice."""
    from tests.modeling.tiny import build_tiny_model

    source, target = build_tiny_model("maskformer_fpn", seed=0), build_tiny_model(
        "maskformer_fpn", seed=1
    )
    legacy = {
        k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."): v
        for k, v in source.state_dict().items()
    }
    assert "sem_seg_head.adapter_1.weight" in legacy
    assert target.load_state_dict(legacy, strict=True) is not None
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    current = build_tiny_model("maskformer_fpn", seed=2)
    current.load_state_dict(source.state_dict(), strict=True)
