"""Parity with Hugging Face ``transformers``: the same random weights give the same logits, and
the same logits and targets give the same losses (sampled points fixed on both sides).

Differences from ``transformers`` that are theirs, where we follow the published model and so
do not compare:

- ``transformers`` ignores ``pixel_mask``; the comparison is on one unpadded image, where a
  padding mask has nothing to say.
- Their post-processing resizes masks through a fixed 384x384 grid; ours crops the padding and
  resizes to the original size as the published model does, so only logits are compared.
"""

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: the parity tests need it"
)

from mask2former.checkpoint.hf import (
    hf_config_to_cfg,
    hf_to_ours_state_dict,
)
from mask2former.modeling import build_model
from mask2former.modeling.criterion import build_criterion

STAGES = ["stage1", "stage2", "stage3", "stage4"]
NUM_LABELS = 4
TOLERANCE = 1e-4  # float32, absolute, on class and mask logits


def _backbone(kind: str):
    if kind == "resnet":  # ResNet-18 layout (the smallest our ResNet builds)
        return transformers.ResNetConfig(
            embedding_size=64,
            hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2],
            layer_type="basic",
            out_features=STAGES,
        )
    return transformers.SwinConfig(
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 2, 4],
        window_size=2,
        image_size=64,
        drop_path_rate=0.0,
        out_features=STAGES,
    )


def tiny_hf_model(arch: str, backbone: str, seed: int = 0, aux_loss: bool = False):
    """A tiny randomly initialised transformers model in eval mode.

    ``aux_loss``: MaskFormer's ``use_auxiliary_loss`` (transformers' MaskFormer cannot run a
    forward pass with it; the loss test calls its loss directly)."""
    torch.manual_seed(seed)
    b = _backbone(backbone)
    if arch == "mask2former":
        config = transformers.Mask2FormerConfig(
            backbone_config=b, feature_size=32, mask_feature_size=32, hidden_dim=32,
            encoder_layers=1, decoder_layers=3, num_attention_heads=4, dim_feedforward=64,
            num_queries=6, num_labels=NUM_LABELS, train_num_points=64,
        )  # fmt: skip
        model = transformers.Mask2FormerForUniversalSegmentation(config)
    else:
        decoder = transformers.DetrConfig(
            d_model=32, encoder_layers=0, decoder_layers=2, decoder_ffn_dim=64,
            decoder_attention_heads=4, num_queries=6, use_timm_backbone=False, backbone_config=b,
        )  # fmt: skip
        config = transformers.MaskFormerConfig(
            backbone_config=b, decoder_config=decoder, fpn_feature_size=32,
            mask_feature_size=32, num_labels=NUM_LABELS, use_auxiliary_loss=aux_loss,
        )  # fmt: skip
        model = transformers.MaskFormerForInstanceSegmentation(config)
    with torch.no_grad():  # random BatchNorm statistics, so that their conversion matters
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model.eval()


def ours_from_hf(hf_model):
    """Our model built from the converted config, with the converted weights (strict)."""
    cfg = hf_config_to_cfg(hf_model.config.to_dict())
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg, thing_ids=[0, 1]).eval()
    state = hf_to_ours_state_dict(
        hf_model.state_dict(),
        hf_model.config.model_type,
        hf_model.config.backbone_config.model_type,
    )
    model.load_state_dict(state, strict=True)
    return model


CASES = [(a, b) for a in ("mask2former", "maskformer") for b in ("resnet", "swin")]


@pytest.mark.parametrize("arch,backbone", CASES)
def test_logits_match_transformers(arch, backbone):
    hf = tiny_hf_model(arch, backbone)
    ours = ours_from_hf(hf)
    # One unpadded, normalised image whose sides are multiples of 32.
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = hf(pixel_values=pixels)
        outputs = ours.sem_seg_head(ours.backbone(pixels))
    assert outputs["pred_masks"].shape == (1, 6, 24, 32)
    torch.testing.assert_close(
        outputs["pred_logits"], reference.class_queries_logits, rtol=0, atol=TOLERANCE
    )
    torch.testing.assert_close(
        outputs["pred_masks"], reference.masks_queries_logits, rtol=0, atol=TOLERANCE
    )


def _random_predictions(num_aux: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)

    def one():
        return torch.randn(2, 6, NUM_LABELS + 1, generator=g), torch.randn(
            2, 6, 24, 32, generator=g
        )

    return one(), [one() for _ in range(num_aux)]


def _targets(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand(n, 96, 128, generator=g) > 0.6 for n in (2, 3)]
    labels = [torch.tensor([1, 3]), torch.tensor([0, 2, 2])]
    return labels, masks


@pytest.mark.parametrize("arch", ["mask2former", "maskformer"])
def test_losses_match_transformers(arch, monkeypatch):
    hf = tiny_hf_model(arch, "resnet", aux_loss=True)
    cfg = hf_config_to_cfg(hf.config.to_dict())
    criterion = build_criterion(cfg)
    num_aux = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1
    (logits, masks), aux = _random_predictions(num_aux)
    labels, target_masks = _targets()
    if arch == "mask2former":
        # Fix every sampled point set to the same one on both sides: the matcher's uniform
        # points and the loss's importance-sampled points.
        points = torch.rand(64, 2, generator=torch.Generator().manual_seed(4))
        monkeypatch.setattr(criterion, "sample_points", lambda m: points.expand(len(m), -1, -1))
        monkeypatch.setattr(
            criterion.matcher, "sample_points", lambda b, device: points.expand(b, -1, -1)
        )
        monkeypatch.setattr(
            hf.criterion,
            "sample_points_using_uncertainty",
            lambda logits, *args: points.expand(len(logits), -1, -1),
        )
        real_rand = torch.rand

        def fixed_rand(*size, **kwargs):  # transformers' matcher draws (1, P, 2) per image
            return points[None] if tuple(size) == (1, 64, 2) else real_rand(*size, **kwargs)

        monkeypatch.setattr(torch, "rand", fixed_rand)
    aux_key = "auxiliary_predictions" if arch == "mask2former" else "auxiliary_logits"
    reference = hf.get_loss_dict(
        masks_queries_logits=masks,
        class_queries_logits=logits,
        mask_labels=[m.float() for m in target_masks],
        class_labels=labels,
        **{aux_key: [{"class_queries_logits": c, "masks_queries_logits": m} for c, m in aux]},
    )
    outputs = {
        "pred_logits": logits,
        "pred_masks": masks,
        "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in aux],
    }
    targets = [{"labels": lb, "masks": m} for lb, m in zip(labels, target_masks)]
    ours = criterion(outputs, targets)
    reference = {k.replace("loss_cross_entropy", "loss_ce"): v for k, v in reference.items()}
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert ours[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
