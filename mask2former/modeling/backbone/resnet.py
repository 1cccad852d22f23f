"""ResNet in detectron2's layout, so detectron2 ``.pkl`` checkpoints load by exact key names.

Parameter names: ``stem.conv1.weight`` and ``stem.conv1.norm.*`` (basic stem) or
``stem.conv{1,2,3}.*`` (DeepLab stem); ``res{2..5}.{block}.conv{1,2,3}.weight`` with
``.norm.*`` after each conv, and ``res{2..5}.0.shortcut.weight`` / ``.shortcut.norm.*``
where a block changes its width or stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mask2former.config import ConfigError
from mask2former.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, c2_msra_fill, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeepLabStem",
    "ResNet",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
    "freeze_module",
]

BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop training ``module``: no gradients, and every BatchNorm becomes FrozenBatchNorm2d.

    Returns the module to use in its place (a BatchNorm passed in is itself replaced).
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def _conv(in_ch: int, out_ch: int, kernel: int, norm: str, **kwargs) -> Conv2d:
    """A bias-free conv with its norm, MSRA-initialised (detectron2's block convs)."""
    conv = Conv2d(
        in_ch,
        out_ch,
        kernel_size=kernel,
        bias=False,
        norm=get_norm(norm, out_ch),
        **kwargs,
    )
    c2_msra_fill(conv)
    return conv


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> Conv2d | None:
    """1x1 projection of the residual path, or None when the shapes already agree."""
    if in_ch == out_ch and stride == 1:
        return None
    return _conv(in_ch, out_ch, 1, norm, stride=stride)


class BasicStem(nn.Module):
    """7x7 stride-2 conv + norm + ReLU, then 3x3 stride-2 max pool: (N, C, H, W) -> /4."""

    stride = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = _conv(in_channels, out_channels, 7, norm, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class DeepLabStem(nn.Module):
    """Three 3x3 convs (stride 2, 1, 1; widths C/2, C/2, C) then a stride-2 max pool."""

    stride = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN"):
        super().__init__()
        self.out_channels = out_channels
        half = out_channels // 2
        self.conv1 = _conv(in_channels, half, 3, norm, stride=2, padding=1)
        self.conv2 = _conv(half, half, 3, norm, stride=1, padding=1)
        self.conv3 = _conv(half, out_channels, 3, norm, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm: str = "BN",
        dilation: int = 1,
    ):
        super().__init__()
        if dilation != 1:
            raise ValueError("BasicBlock (ResNet-18/34) does not support dilation")
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, out_channels, 3, norm, stride=stride, padding=1)
        self.conv2 = _conv(out_channels, out_channels, 3, norm, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class BottleneckBlock(nn.Module):
    """1x1 (reduce) -> 3x3 (grouped, dilated) -> 1x1 (expand), with a residual connection.

    The block's stride sits on the first 1x1 (``stride_in_1x1``, MSRA weights) or on the
    3x3 (torchvision weights).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, norm, stride=stride_1x1)
        self.conv2 = _conv(
            bottleneck_channels,
            bottleneck_channels,
            3,
            norm,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
        )
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class ResNet(Backbone):
    """A stem followed by stages ``res2``.. ; returns the stages named in ``out_features``.

    ``forward(x: (N, C, H, W))`` -> ``{"res2": (N, C2, ceil(H/4), ceil(W/4)), ...}``.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[nn.Module]],
        out_features: Sequence[str],
        freeze_at: int = 0,
    ):
        super().__init__()
        self.stem = stem
        self.stage_names = [f"res{i + 2}" for i in range(len(stages))]
        unknown = sorted(set(out_features) - set(self.stage_names))
        if unknown:
            raise ValueError(f"out_features {unknown} not among the stages {self.stage_names}")
        self._out_features = list(out_features)
        self._out_feature_channels: dict[str, int] = {}
        self._out_feature_strides: dict[str, int] = {}
        stride = stem.stride
        for name, blocks in zip(self.stage_names, stages):
            self.add_module(name, nn.Sequential(*blocks))
            stride *= _stage_stride(blocks)
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = _block_out_channels(blocks[-1])
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> ResNet:
        """Freeze the stem (``freeze_at >= 1``) and stages res2..res{freeze_at} (detectron2)."""
        if freeze_at >= 1:
            self.stem = freeze_module(self.stem)
        for index, name in enumerate(self.stage_names, start=2):
            if freeze_at >= index:
                self.add_module(name, freeze_module(getattr(self, name)))
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNet takes (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        if x.device.type == "cpu":
            # oneDNN's convolutions give the same numbers from a channels-last input, and its
            # outputs then stay channels-last: the stem's max pool and the 1x1 convolutions
            # (products over each pixel's channels) need no layout conversions (R50 at
            # 512x704: 181 -> 158 ms, the max pool 16 -> 2 ms)
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def _stage_stride(blocks: Sequence[nn.Module]) -> int:
    """Product of the strides of a stage's blocks (read from their convs)."""
    stride = 1
    for block in blocks:
        first_conv = block.conv1.stride[0] * block.conv2.stride[0]
        stride *= first_conv
    return stride


def _block_out_channels(block: nn.Module) -> int:
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return last.out_channels


def make_stage(
    block_class: type,
    num_blocks: int,
    in_channels: int,
    out_channels: int,
    *,
    first_stride: int,
    dilations: Sequence[int],
    **block_kwargs,
) -> list[nn.Module]:
    """``num_blocks`` blocks; the first has ``first_stride``, block i has ``dilations[i]``."""
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            block_class(
                in_channels,
                out_channels,
                stride=first_stride if i == 0 else 1,
                dilation=dilations[i],
                **block_kwargs,
            )
        )
        in_channels = out_channels
    return blocks


def _check_resnet_cfg(
    cfg, res5_multi_grid: Sequence[int], depths: Sequence[int], res5_dilations: Sequence[int]
) -> None:
    """Refuse MODEL.RESNETS values the official builder refuses, naming the key.

    ``depths`` and ``res5_dilations`` are what the builder accepts (detectron2's: all depths,
    dilation 1 or 2; DeepLab's: 50/101/152, dilation 1, 2 or 4). Deformable convolutions
    (``DEFORM_*``) are refused by :func:`mask2former.config.check_supported`.
    """
    _check_out_features(cfg)
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in depths:
        raise ConfigError(f"MODEL.RESNETS.DEPTH must be one of {list(depths)}, got {r.DEPTH}")
    if r.RES5_DILATION not in res5_dilations:
        raise ConfigError(
            f"MODEL.RESNETS.RES5_DILATION must be one of {list(res5_dilations)}, "
            f"got {r.RES5_DILATION}"
        )
    if len(res5_multi_grid) != BLOCKS_PER_STAGE[r.DEPTH][3]:
        raise ConfigError(
            f"MODEL.RESNETS.RES5_MULTI_GRID needs one entry per res5 block, got {res5_multi_grid}"
        )
    if r.DEPTH in (18, 34) and (
        r.RES2_OUT_CHANNELS != 64 or r.RES5_DILATION != 1 or r.NUM_GROUPS != 1
    ):
        raise ConfigError(
            "ResNet-18/34 need MODEL.RESNETS.RES2_OUT_CHANNELS = 64, RES5_DILATION = 1 and "
            f"NUM_GROUPS = 1, got {r.RES2_OUT_CHANNELS}, {r.RES5_DILATION} and {r.NUM_GROUPS}"
        )


def _build_stages(
    cfg,
    in_channels: int,
    res5_multi_grid: Sequence[int],
    depths: Sequence[int] = tuple(BLOCKS_PER_STAGE),
    res5_dilations: Sequence[int] = (1, 2),
) -> list[list[nn.Module]]:
    """Stages res2..res{max out feature} as detectron2 builds them from MODEL.RESNETS."""
    _check_resnet_cfg(cfg, res5_multi_grid, depths, res5_dilations)
    r = cfg.MODEL.RESNETS
    basic = r.DEPTH in (18, 34)
    stage_ids = [int(name[len("res") :]) for name in r.OUT_FEATURES]
    out_channels, bottleneck = r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for stage_id, num_blocks in zip(range(2, max(stage_ids) + 1), BLOCKS_PER_STAGE[r.DEPTH]):
        dilation = r.RES5_DILATION if stage_id == 5 else 1
        grid = res5_multi_grid if stage_id == 5 else [1] * num_blocks
        first_stride = 1 if stage_id == 2 or dilation > 1 else 2
        kwargs = {"norm": r.NORM}
        if not basic:
            kwargs.update(
                bottleneck_channels=bottleneck,
                num_groups=r.NUM_GROUPS,
                stride_in_1x1=r.STRIDE_IN_1X1,
            )
        block = BasicBlock if basic else BottleneckBlock
        dilations = [dilation * g for g in grid]
        stages.append(
            make_stage(
                block,
                num_blocks,
                in_channels,
                out_channels,
                first_stride=first_stride,
                dilations=dilations,
                **kwargs,
            )
        )
        in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
    return stages


def _check_out_features(cfg) -> None:
    allowed = {"res2", "res3", "res4", "res5"}
    bad = [f for f in cfg.MODEL.RESNETS.OUT_FEATURES if f not in allowed]
    if bad or not cfg.MODEL.RESNETS.OUT_FEATURES:
        raise ConfigError(
            f"MODEL.RESNETS.OUT_FEATURES must be a non-empty subset of res2..res5, got {bad or '[]'}"
        )


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """detectron2's ResNet with the basic stem (MODEL.RESNETS.*, MODEL.BACKBONE.FREEZE_AT)."""
    r = cfg.MODEL.RESNETS
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    blocks_in_res5 = BLOCKS_PER_STAGE.get(r.DEPTH, [0, 0, 0, 0])[3]
    stages = _build_stages(cfg, r.STEM_OUT_CHANNELS, [1] * blocks_in_res5)
    return ResNet(stem, stages, r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """DeepLab's ResNet: MODEL.RESNETS.STEM_TYPE "deeplab" (three 3x3 convs) or "basic",
    and res5 block i dilated by RES5_DILATION * RES5_MULTI_GRID[i]."""
    r = cfg.MODEL.RESNETS
    stems = {"basic": BasicStem, "deeplab": DeepLabStem}
    if r.STEM_TYPE not in stems:
        raise ConfigError(
            f"MODEL.RESNETS.STEM_TYPE must be one of {sorted(stems)}, got {r.STEM_TYPE!r}"
        )
    stem = stems[r.STEM_TYPE](input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    # DeepLab's builder knows only the bottleneck depths, and also dilates res5 by 4
    stages = _build_stages(
        cfg, r.STEM_OUT_CHANNELS, list(r.RES5_MULTI_GRID), (50, 101, 152), (1, 2, 4)
    )
    return ResNet(stem, stages, r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
