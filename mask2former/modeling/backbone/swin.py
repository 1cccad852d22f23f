"""Swin Transformer backbone with the published Mask2Former parameter names.

Keys (under ``backbone.`` in a full model): ``patch_embed.proj``, ``patch_embed.norm``,
``absolute_pos_embed`` (with APE), ``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}``,
``layers.{i}.downsample.{reduction, norm}`` and ``norm{i}`` for each stage i (returned or not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.checkpoint as activation_checkpoint
from torch import nn
from torch.nn import functional as F

from mask2former.config import configurable
from mask2former.layers import ShapeSpec
from mask2former.layers.linear import Linear
from mask2former.ops import deterministic

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["D2SwinTransformer", "SwinTransformerBlock", "WindowAttention"]

SWIN_STAGE_NAMES = ("res2", "res3", "res4", "res5")


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``rate``, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nW, window, window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window, window, C) -> (B, H, W, C); inverse of :func:`window_partition`."""
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the ((2 window - 1)², heads) relative bias table."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)
    # (2, N, N): row and column offsets between every pair of window positions
    relative = (coords[:, :, None] - coords[:, None, :]) + (window - 1)
    return relative[0] * (2 * window - 1) + relative[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # Persistent, as in the published checkpoints (which carry it).
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows of N tokens; mask: (nW, N, N) additive, or None."""
        bw, n, c = x.shape
        # (B*nW, N, 3C) -> 3 x (B*nW, heads, N, C/heads)
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and an MLP, each pre-normed with a residual connection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) tokens of an H x W map; mask: (nW, N, N) for shifted windows."""
        (h, w), ws = hw, self.window_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        # pad bottom and right to whole windows
        y = F.pad(y, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = y.shape[1:3]
        if self.shift_size:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(y, ws).reshape(-1, ws * ws, c)
        windows = self.attn(windows, mask if self.shift_size else None)
        y = window_reverse(windows.view(-1, ws, ws, c), ws, hp, wp)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), normed, projected to 2C: halves H and W."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) -> (B, ceil(H/2) * ceil(W/2), 2C)."""
        h, w = hw
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        # order (even row, even col), (odd, even), (even, odd), (odd, odd) as published
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = torch.cat(parts, dim=-1).view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


def shifted_window_mask(
    hw: tuple[int, int], window: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(nW, N, N) additive mask: -100 between tokens of different regions after the shift."""
    hp = -(-hw[0] // window) * window
    wp = -(-hw[1] // window) * window
    regions = torch.zeros((1, hp, wp, 1), device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bands:
        for wsl in bands:
            regions[:, hs, wsl, :] = label
            label += 1
    labels = window_partition(regions, window).reshape(-1, window * window)
    differs = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differs.shape, device=device).masked_fill(differs, -100.0)


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating plain and shifted windows, then merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
        **block_kwargs,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                drop_path=drop_path[i],
                **block_kwargs,
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        """(B, H*W, C) -> stage output (B, H*W, C) and next input (B, H'*W', 2C), (H', W')."""
        mask = shifted_window_mask(hw, self.window_size, self.shift_size, x.device).to(x.dtype)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = activation_checkpoint.checkpoint(block, x, hw, mask, use_reentrant=False)
            else:
                x = block(x, hw, mask)
        if self.downsample is None:
            return x, x, hw
        next_hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
        return x, self.downsample(x, hw), next_hw


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> embeddings: (B, 3, H, W) -> (B, C, ceil(H/p), ceil(W/p))."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            h, w = x.shape[2:]
            x = (
                self.norm(x.flatten(2).transpose(1, 2))
                .transpose(1, 2)
                .reshape(-1, x.shape[1], h, w)
            )
        return x


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Backbone):
    """Swin Transformer returning res2..res5 (strides 4..32, channels C, 2C, 4C, 8C).

    ``forward(x: (N, 3, H, W))`` works for any H, W (padded to the patch and window size
    inside); res{i+2} has size ceil(H / 2^(i+2)) x ceil(W / 2^(i+2)) for stage i.
    """

    @configurable
    def __init__(
        self,
        *,
        in_chans: int = 3,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_features: Sequence[str] = SWIN_STAGE_NAMES,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ")
        bad = [f for f in out_features if f not in SWIN_STAGE_NAMES[: len(depths)]]
        if bad or not out_features:
            raise ValueError(f"out_features must be among res2..res5, got {list(out_features)}")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.absolute_pos_embed = None
        if ape:
            side = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, side, side))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth rising linearly from 0 to drop_path_rate over all blocks (the
        # official float32 linspace, so the rates are the same floats)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    self.num_features[i],
                    depth,
                    num_heads[i],
                    window_size,
                    drop_path=rates[start : start + depth],
                    downsample=i < len(depths) - 1,
                    use_checkpoint=use_checkpoint,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                )
            )
        self._out_features = list(out_features)
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for i, name in enumerate(SWIN_STAGE_NAMES[: len(depths)]):
            # The official D2SwinTransformer reports strides 4..32 whatever the patch size,
            # and the pixel decoder's layout follows them.
            self._out_feature_strides[name] = 4 * 2**i
            self._out_feature_channels[name] = self.num_features[i]
            # A norm for every stage, returned or not (the official out_indices (0, 1, 2, 3)).
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        s = cfg.MODEL.SWIN
        return {
            # the official D2SwinTransformer takes 3 channels whatever MODEL.PIXEL_MEAN's length
            "in_chans": 3,
            "pretrain_img_size": s.PRETRAIN_IMG_SIZE,
            "patch_size": s.PATCH_SIZE,
            "embed_dim": s.EMBED_DIM,
            "depths": list(s.DEPTHS),
            "num_heads": list(s.NUM_HEADS),
            "window_size": s.WINDOW_SIZE,
            "mlp_ratio": s.MLP_RATIO,
            "qkv_bias": s.QKV_BIAS,
            "qk_scale": s.QK_SCALE,
            "drop_rate": s.DROP_RATE,
            "attn_drop_rate": s.ATTN_DROP_RATE,
            "drop_path_rate": s.DROP_PATH_RATE,
            "ape": s.APE,
            "patch_norm": s.PATCH_NORM,
            "out_features": list(s.OUT_FEATURES),
            "use_checkpoint": s.USE_CHECKPOINT,
        }

    @property
    def size_divisibility(self) -> int:
        return 32

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, 3, H, W) -> tokens (N, Wh*Ww, C) and (Wh, Ww)."""
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        if self.absolute_pos_embed is not None:
            x = x + deterministic.interpolate(self.absolute_pos_embed, size=hw, mode="bicubic")
        return self.pos_drop(x.flatten(2).transpose(1, 2)), hw

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"D2SwinTransformer takes (N, C, H, W), got {tuple(x.shape)}")
        x, hw = self._embed(x)
        outputs = {}
        for i, (name, layer) in enumerate(zip(SWIN_STAGE_NAMES, self.layers)):
            stage_out, x, next_hw = layer(x, hw)
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(stage_out)
                # (N, H*W, C) -> (N, C, H, W)
                outputs[name] = out.view(-1, *hw, self.num_features[i]).permute(0, 3, 1, 2)
            hw = next_hw
        return {k: v.contiguous() for k, v in outputs.items()}


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
