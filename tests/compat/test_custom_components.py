"""Components registered the detectron2 way build from a config and train.

A backbone: ``@BACKBONE_REGISTRY.register()`` on a ``Backbone`` subclass built as
``cls(cfg, input_shape)`` whose ``output_shape()`` gives ``ShapeSpec``s. A semantic head:
``SEM_SEG_HEADS_REGISTRY``, ``cls(cfg, input_shape)``, ``forward(features, targets)``
returning ``(logits, losses)``. A meta-architecture: ``META_ARCH_REGISTRY``, ``cls(cfg)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mask2former.config import get_cfg
from mask2former.engine import DefaultTrainer
from mask2former.engine.model_kwargs import model_kwargs_from_metadata
from mask2former.layers import ShapeSpec as LayersShapeSpec
from mask2former.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    Backbone,
    ShapeSpec,
    build_backbone,
    build_model,
    build_sem_seg_head,
)
from mask2former.modeling.meta_arch import MaskFormer

CONFIG = (
    Path(__file__).resolve().parents[2] / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"
)
CHANNELS = {"res2": 16, "res3": 24, "res4": 32, "res5": 48}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def _register(registry, cls):
    if cls.__name__ not in registry:
        registry.register(cls)
    return registry.get(cls.__name__)


class ToyBackbone(Backbone):
    """Strided convolutions giving res2..res5 at strides 4..32."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        stem = nn.Conv2d(input_shape.channels, CHANNELS["res2"], 3, stride=4, padding=1)
        layers, prev = [stem], CHANNELS["res2"]
        for name in ("res3", "res4", "res5"):
            layers.append(nn.Conv2d(prev, CHANNELS[name], 3, stride=2, padding=1))
            prev = CHANNELS[name]
        self.stages = nn.ModuleList(layers)

    def forward(self, x):
        out = {}
        for name, stage in zip(CHANNELS, self.stages):
            x = F.relu(stage(x))
            out[name] = x
        return out

    def output_shape(self):
        return {n: ShapeSpec(channels=CHANNELS[n], stride=STRIDES[n]) for n in CHANNELS}


class ToySemSegHead(nn.Module):
    """detectron2's semantic head contract: ``(logits at input size, losses)``."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        self.predictor = nn.Conv2d(
            input_shape["res2"].channels, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 1
        )

    def forward(self, features, targets=None):
        logits = F.interpolate(
            self.predictor(features["res2"]), scale_factor=4, mode="bilinear", align_corners=False
        )
        if targets is None:
            return logits, {}
        loss = F.cross_entropy(logits, targets, ignore_index=self.ignore_value)
        return None, {"loss_sem_seg": loss}


class ToyMetaArch(nn.Module):
    """A meta-architecture built as ``cls(cfg)``: backbone + head from the registries."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.sem_seg_head = build_sem_seg_head(cfg, self.backbone.output_shape())
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1))

    def forward(self, batched_inputs):
        images = torch.stack(
            [(x["image"] - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        )
        features = self.backbone(images)
        if self.training:
            targets = torch.stack([x["sem_seg"] for x in batched_inputs])
            return self.sem_seg_head(features, targets)[1]
        logits, _ = self.sem_seg_head(features)
        return [
            {"sem_seg": F.interpolate(logit[None], size=(x["height"], x["width"]))[0]}
            for logit, x in zip(logits, batched_inputs)
        ]


class RenamedMaskFormer(MaskFormer):
    """MaskFormer under another registered name."""


def _semantic_cfg(tmp_path, **overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        ["SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.IMS_PER_BATCH", 2]
        + ["DATALOADER.NUM_WORKERS", 0]
        + ["DATASETS.TRAIN", ("shapes_train_sem_seg",), "DATASETS.TEST", ()]
        + ["INPUT.DATASET_MAPPER_NAME", "mask_former_semantic", "OUTPUT_DIR", str(tmp_path)]
        + ["MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255]
    )
    for key, value in overrides.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    return cfg


def _train_and_compare(cfg, part: str) -> nn.Module:
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    module = getattr(trainer.model, part)
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1]
    changed = [k for k, v in module.named_parameters() if not torch.equal(v, before[k])]
    assert changed == list(
        before
    ), f"parameters of {part} not updated: {set(before) - set(changed)}"
    assert torch.isfinite(torch.tensor(trainer.storage.history("total_loss").latest()))
    return trainer.model


def test_shape_spec_is_one_class():
    assert ShapeSpec is LayersShapeSpec


@pytest.mark.slow
def test_custom_backbone_trains_inside_mask2former(tmp_path):
    _register(BACKBONE_REGISTRY, ToyBackbone)
    cfg = _semantic_cfg(tmp_path, MODEL__BACKBONE__NAME="ToyBackbone")
    model = _train_and_compare(cfg, "backbone")
    assert type(model).__name__ == "MaskFormer" and isinstance(model.backbone, ToyBackbone)


@pytest.mark.slow
def test_custom_head_and_meta_architecture_built_as_cls_cfg_train(tmp_path):
    _register(BACKBONE_REGISTRY, ToyBackbone)
    _register(SEM_SEG_HEADS_REGISTRY, ToySemSegHead)
    _register(META_ARCH_REGISTRY, ToyMetaArch)
    cfg = _semantic_cfg(
        tmp_path,
        MODEL__META_ARCHITECTURE="ToyMetaArch",
        MODEL__BACKBONE__NAME="ToyBackbone",
        MODEL__SEM_SEG_HEAD__NAME="ToySemSegHead",
    )
    assert model_kwargs_from_metadata(cfg) == {}, "detectron2's convention: cls(cfg) only"
    model = _train_and_compare(cfg, "sem_seg_head")
    assert isinstance(model, ToyMetaArch) and isinstance(model.sem_seg_head, ToySemSegHead)
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"  # our detectron2 segmentor, same head
    model = _train_and_compare(cfg, "sem_seg_head")
    assert isinstance(model.sem_seg_head, ToySemSegHead)


def test_maskformer_subclass_under_a_new_name_gets_thing_ids():
    _register(META_ARCH_REGISTRY, RenamedMaskFormer)
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.META_ARCHITECTURE = "RenamedMaskFormer"
    assert model_kwargs_from_metadata(cfg) == {"thing_ids": [0, 1, 2]}
    cfg.MODEL.RESNETS.DEPTH = 18
    model = build_model(cfg, **model_kwargs_from_metadata(cfg))
    assert isinstance(model, RenamedMaskFormer) and model.thing_ids == [0, 1, 2]
