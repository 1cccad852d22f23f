"""The config builds the module the official ``from_config`` builds, for any values.

Each test builds with values the published configs never use and checks the hyper-parameters
or parameter shapes the official code derives from them. File/line references are to
facebookresearch/Mask2Former (``mask2former/...``) unless stated; numbers compared are exact.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from mask2former.config import ConfigError, get_cfg
from mask2former.data import MetadataCatalog
from mask2former.engine.defaults import model_kwargs_from_metadata
from mask2former.modeling import build_backbone, build_model
from mask2former.modeling.transformer_decoder import StandardTransformerDecoder
from mask2former.ops import MSDeformAttn
from tests.modeling.tiny import CONFIG_DIR, build_tiny_model, make_image, tiny_cfg


def _dropout_rates(module: nn.Module) -> set[float]:
    rates = {m.p for m in module.modules() if isinstance(m, nn.Dropout)}
    rates |= {m.dropout for m in module.modules() if isinstance(m, nn.MultiheadAttention)}
    return rates


def test_detections_per_image_is_the_instance_top_k():
    """maskformer_model.py:160 ``"test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE``."""
    model = build_tiny_model(
        "mask2former", TEST__DETECTIONS_PER_IMAGE=3, MODEL__MASK_FORMER__TEST__PANOPTIC_ON=False
    )
    assert model.test_topk_per_image == 3
    with torch.no_grad():
        (result,) = model([{"image": make_image()}])
    assert len(result["instances"]) == 3  # top 3 of 6 queries x 4 classes (no thing filter)


def test_deformable_encoder_heads_points_and_ffn():
    """pixel_decoder/msdeformattn.py:304-306 (heads = MASK_FORMER.NHEADS, FFN 1024) and :27
    (``enc_n_points=4``): the DEFORMABLE_TRANSFORMER_ENCODER_N_* keys are not read."""
    model = build_tiny_model("mask2former", MODEL__MASK_FORMER__NHEADS=2)
    decoder = model.sem_seg_head.pixel_decoder
    attns = [m for m in decoder.modules() if isinstance(m, MSDeformAttn)]
    assert attns and all((a.n_heads, a.n_levels, a.n_points) == (2, 3, 4) for a in attns)
    # sampling offsets: heads x levels x points x (x, y); weights: heads x levels x points
    assert attns[0].sampling_offsets.out_features == 2 * 3 * 4 * 2
    assert attns[0].attention_weights.out_features == 2 * 3 * 4
    layer = decoder.transformer.encoder.layers[0]
    assert layer.linear1.out_features == 1024 and layer.linear2.in_features == 1024


def test_quick_start_encoder_keeps_its_four_heads_without_the_n_heads_line():
    """configs/shapes/mask2former_R18_quickstart.yaml no longer sets
    DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS: 4; its NHEADS 4 gives the same encoder."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / "shapes/mask2former_R18_quickstart.yaml"))
    assert cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS == 8  # default, unread
    model = build_model(cfg, thing_ids=[0, 1, 2])
    attns = [m for m in model.sem_seg_head.pixel_decoder.modules() if isinstance(m, MSDeformAttn)]
    assert [a.n_heads for a in attns] == [4]  # one encoder layer
    assert attns[0].sampling_offsets.weight.shape == (4 * 3 * 4 * 2, 64)


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 4),
        ("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 8),
    ],
)
def test_unread_deformable_encoder_keys_are_refused(key, value):
    cfg = tiny_cfg("mask2former")
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=f"{key} = {value} is not supported"):
        build_model(cfg)


def test_masked_decoder_has_no_dropout_and_always_returns_aux_outputs():
    """transformer_decoder/mask2former_transformer_decoder.py:289/298/307 (``dropout=0.0``)
    and :427 (``aux_outputs`` whatever DEEP_SUPERVISION): MASK_FORMER.DROPOUT reaches only
    the deformable pixel decoder (msdeformattn.py:303)."""
    model = build_tiny_model("mask2former", deep_supervision=False, MODEL__MASK_FORMER__DROPOUT=0.3)
    assert _dropout_rates(model.sem_seg_head.predictor) == {0.0}
    assert _dropout_rates(model.sem_seg_head.pixel_decoder) == {0.3}
    x = [torch.randn(1, 32, 2, 2), torch.randn(1, 32, 4, 4), torch.randn(1, 32, 8, 8)]
    with torch.no_grad():  # in training mode (eval mode returns the last prediction only)
        out = model.sem_seg_head.predictor.train()(x, torch.randn(1, 32, 16, 16))
    assert len(out["aux_outputs"]) == 2  # DEC_LAYERS 3: two earlier predictions
    # the criterion weighs only the final prediction (maskformer_model.py:120-124, 208-214)
    assert set(model.criterion.weight_dict) == {"loss_ce", "loss_mask", "loss_dice"}


def test_standard_decoder_reads_dropout():
    """transformer_decoder/maskformer_transformer_decoder.py:118 ``dropout``."""
    model = build_tiny_model("maskformer_fpn", MODEL__MASK_FORMER__DROPOUT=0.3)
    assert _dropout_rates(model.sem_seg_head.predictor) == {0.3}


def test_per_pixel_plus_head_always_uses_the_standard_decoder():
    """meta_arch/per_pixel_baseline.py:202 builds ``StandardTransformerDecoder`` directly,
    whatever MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME says."""
    model = build_tiny_model(
        "per_pixel_plus",
        MODEL__MASK_FORMER__TRANSFORMER_DECODER_NAME="MultiScaleMaskedTransformerDecoder",
    )
    assert type(model.sem_seg_head.predictor) is StandardTransformerDecoder


@pytest.mark.parametrize("in_feature", ["multi_scale_pixel_decoder", "pixel_embedding"])
def test_per_pixel_plus_head_refuses_what_the_official_head_cannot_build(in_feature):
    """per_pixel_baseline.py:198-201 looks any other name up among the backbone features."""
    cfg = tiny_cfg("per_pixel_plus", MODEL__MASK_FORMER__TRANSFORMER_IN_FEATURE=in_feature)
    with pytest.raises(ConfigError, match="TRANSFORMER_IN_FEATURE"):
        build_model(cfg)


def test_transformer_in_feature_may_be_a_backbone_feature_outside_in_features():
    """meta_arch/mask_former_head.py:97 takes the channels from every backbone output, not
    only SEM_SEG_HEAD.IN_FEATURES (R18 res5: 512 channels)."""
    model = build_tiny_model(
        "maskformer_fpn",
        MODEL__SEM_SEG_HEAD__IN_FEATURES=["res2", "res3", "res4"],
        MODEL__MASK_FORMER__TRANSFORMER_IN_FEATURE="res5",
    )
    assert model.sem_seg_head.predictor.input_proj.in_channels == 512
    assert model.sem_seg_head.pixel_decoder.in_features == ["res2", "res3", "res4"]
    with torch.no_grad():
        (result,) = model([{"image": make_image()}])
    assert result["sem_seg"].shape[-2:] == (64, 64)


def test_in_features_the_backbone_lacks_are_left_out(caplog):
    """pixel_decoder/msdeformattn.py:298 and :195 keep only the names the backbone has.

    Without res2 the finest encoder level (res3, stride 8) is one FPN level above the common
    stride 4, so the FPN level is res3 itself (msdeformattn.py:258-263)."""
    with caplog.at_level(logging.WARNING):
        model = build_tiny_model(
            "mask2former", MODEL__RESNETS__OUT_FEATURES=["res3", "res4", "res5"]
        )
    decoder = model.sem_seg_head.pixel_decoder
    assert decoder.in_features == ["res3", "res4", "res5"]
    assert decoder.num_fpn_levels == 1 and decoder.adapter_1.in_channels == 128  # R18 res3
    assert "MODEL.SEM_SEG_HEAD.IN_FEATURES names ['res2']" in caplog.text
    cfg = tiny_cfg("mask2former", MODEL__SEM_SEG_HEAD__IN_FEATURES=["res6"])
    with pytest.raises(ConfigError, match="IN_FEATURES"):
        build_model(cfg)


def _swin_cfg(**swin):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 16
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 2, 4]
    for key, value in swin.items():
        cfg.MODEL.SWIN[key] = value
    return cfg


def test_swin_strides_norms_channels_and_drop_path_as_official():
    """backbone/swin.py: strides fixed at 4..32 (:730-735) whatever PATCH_SIZE; a norm for
    every stage (``out_indices=(0, 1, 2, 3)``, :544 and :611); 3 input channels (:692);
    float32 ``torch.linspace`` drop-path rates (:584)."""
    cfg = _swin_cfg(PATCH_SIZE=2, OUT_FEATURES=["res4", "res5"], DROP_PATH_RATE=0.3)
    cfg.MODEL.PIXEL_MEAN = [128.0]
    cfg.MODEL.PIXEL_STD = [1.0]
    backbone = build_backbone(cfg)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {"res4": 16, "res5": 32}
    assert [getattr(backbone, f"norm{i}").normalized_shape for i in range(4)] == [
        (16,),
        (32,),
        (64,),
        (128,),
    ]
    assert backbone.patch_embed.proj.in_channels == 3
    rates = [b.drop_path.rate for layer in backbone.layers for b in layer.blocks]
    assert rates == [x.item() for x in torch.linspace(0, 0.3, 12)]


def test_thing_ids_come_from_the_first_training_dataset():
    """maskformer_model.py:147 ``MetadataCatalog.get(cfg.DATASETS.TRAIN[0])`` (also when the
    model is built for evaluation on another dataset)."""
    train, test = "_cfg_keys_train_meta", "_cfg_keys_test_meta"
    MetadataCatalog.get(train).set(thing_dataset_id_to_contiguous_id={7: 2, 3: 0})
    MetadataCatalog.get(test).set(thing_dataset_id_to_contiguous_id={1: 1})
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (test,)
    assert model_kwargs_from_metadata(cfg) == {"thing_ids": [0, 2]}
