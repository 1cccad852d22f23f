"""SetCriterion and the loss functions: hand-computed values, weights, empty targets, gradients."""

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from mask2former.config import ConfigError, get_cfg
from mask2former.modeling.criterion import SetCriterion, build_criterion, mask_loss_family
from mask2former.modeling.losses import dice_loss, sigmoid_ce_loss, sigmoid_focal_loss
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.point_sampling import point_sample, uncertain_point_coords_with_randomness
from mask2former.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
X = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])  # (N=2, P=3) logits
T = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_sigmoid_ce_loss_by_hand():
    per_mask = [
        sum(-(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x))) for x, t in zip(xs, ts)) / 3
        for xs, ts in zip(X.tolist(), T.tolist())
    ]
    assert sigmoid_ce_loss(X, T, 4.0).item() == pytest.approx(sum(per_mask) / 4, rel=1e-6)


def test_dice_loss_by_hand():
    per_mask = []
    for xs, ts in zip(X.tolist(), T.tolist()):
        p = [_sig(x) for x in xs]
        inter = sum(a * b for a, b in zip(p, ts))
        per_mask.append(1 - (2 * inter + 1) / (sum(p) + sum(ts) + 1))
    assert dice_loss(X, T, 2.0).item() == pytest.approx(sum(per_mask) / 2, rel=1e-6)


def test_focal_loss_by_hand_and_against_torchvision():
    total = 0.0
    for xs, ts in zip(X.tolist(), T.tolist()):
        point = []
        for x, t in zip(xs, ts):
            p = _sig(x)
            point.append(
                -0.25 * (1 - p) ** 2 * math.log(p) if t else -0.75 * p**2 * math.log(1 - p)
            )
        total += sum(point) / 3
    ours = sigmoid_focal_loss(X, T, 3.0)
    assert ours.item() == pytest.approx(total / 3, rel=1e-6)
    reference = torchvision.ops.sigmoid_focal_loss(X, T, 0.25, 2.0, reduction="none")
    assert ours.item() == pytest.approx(reference.mean(1).sum().item() / 3, rel=1e-6)


def test_point_sample_at_pixel_centres_reads_the_pixels():
    features = torch.randn(2, 3, 5, 7)
    ij = torch.tensor([[0, 0], [4, 6], [2, 3], [1, 5]])
    coords = torch.stack([(ij[:, 1] + 0.5) / 7, (ij[:, 0] + 0.5) / 5], dim=-1)
    sampled = point_sample(features, coords[None].expand(2, -1, -1))
    torch.testing.assert_close(sampled, features[:, :, ij[:, 0], ij[:, 1]])


def test_importance_sampling_picks_uncertain_points():
    # Logits 0 (most uncertain) only in the left quarter, +-100 elsewhere.
    logits = torch.full((3, 1, 16, 16), 100.0)
    logits[:, :, :, :4] = 0.0
    coords = uncertain_point_coords_with_randomness(logits, 40, 3.0, 0.5)
    assert coords.shape == (3, 40, 2)
    assert (coords[:, :20, 0] < 0.25).all()  # the 20 importance points lie in the left quarter
    assert ((coords >= 0) & (coords <= 1)).all()


def _criterion(mode, weights=(2.0, 5.0, 3.0), num_aux=0, num_classes=4, eos=0.1):
    from mask2former.modeling.criterion import loss_weights

    matcher = HungarianMatcher(
        cost_class=1.0, cost_mask=1.0, cost_dice=1.0, mask_loss=mode, num_points=64
    )
    return SetCriterion(
        num_classes=num_classes,
        matcher=matcher,
        weight_dict=loss_weights(*weights, num_aux),
        eos_coef=eos,
        mask_loss=mode,
        num_points=64,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def _pixel_centres(num, size=16):
    """Points at the centres of ``num`` pixels of a size x size grid: (num, 2)."""
    idx = torch.arange(num) * 7 % (size * size)
    return torch.stack([(idx % size + 0.5) / size, (idx // size + 0.5) / size], dim=-1)


def _fix_points(criterion, monkeypatch, num=64):
    """Sample losses and costs at pixel centres, so binary masks are read exactly."""
    points = _pixel_centres(num)
    monkeypatch.setattr(criterion, "sample_points", lambda m: points.expand(len(m), -1, -1))
    monkeypatch.setattr(
        criterion.matcher, "sample_points", lambda b, device: points.expand(b, -1, -1)
    )


def _batch(num_classes=4, queries=5, seed=0, counts=(2, 3)):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(counts), queries, num_classes + 1, generator=g),
        "pred_masks": torch.randn(len(counts), queries, 16, 16, generator=g),
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=g),
            "masks": torch.rand(n, 16, 16, generator=g) > 0.5,
        }
        for n in counts
    ]
    return outputs, targets


@pytest.mark.parametrize("mode", ["point", "full"])
def test_perfect_prediction_has_near_zero_mask_losses(mode, monkeypatch):
    outputs, targets = _batch()
    for b, t in enumerate(targets):  # queries 1.. predict the targets exactly (logits +-30)
        queries = torch.arange(1, 1 + len(t["labels"]))
        outputs["pred_masks"][b, queries] = t["masks"].float() * 60 - 30
        outputs["pred_logits"][b, queries, t["labels"]] = 10.0
    criterion = _criterion(mode)
    _fix_points(criterion, monkeypatch)
    for b, (rows, cols) in enumerate(criterion.matcher(outputs, targets)):
        assert torch.equal(rows, cols + 1)
    losses = criterion(outputs, targets)
    assert losses["loss_mask"].item() < 1e-6
    assert losses["loss_dice"].item() < 1e-6
    random_outputs, _ = _batch()
    assert criterion(random_outputs, targets)["loss_dice"].item() > 0.1


@pytest.mark.parametrize("mode", ["point", "full"])
def test_weights_applied_exactly_once(mode, monkeypatch):
    outputs, targets = _batch(seed=1)
    outputs["aux_outputs"] = [_batch(seed=2)[0]]
    plain, weighted = _criterion(mode, (1.0, 1.0, 1.0), 1), _criterion(mode, (2.0, 5.0, 3.0), 1)
    _fix_points(plain, monkeypatch)
    _fix_points(weighted, monkeypatch)
    a, b = plain(outputs, targets), weighted(outputs, targets)
    assert set(a) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    for name, w in weighted.weight_dict.items():
        assert b[name].item() == pytest.approx(w * a[name].item(), rel=1e-5), name


def test_class_loss_by_hand_with_no_object_weight():
    criterion = _criterion("full", (1.0, 1.0, 1.0), eos=0.1)
    outputs, targets = _batch(counts=(1, 2), seed=3)
    losses = criterion(outputs, targets)
    indices = criterion.matcher(outputs, targets)
    num, den = 0.0, 0.0
    for b, (rows, cols) in enumerate(indices):
        matched = dict(zip(rows.tolist(), targets[b]["labels"][cols].tolist()))
        for q in range(5):
            cls = matched.get(q, 4)
            w = 0.1 if cls == 4 else 1.0
            num += -w * torch.log_softmax(outputs["pred_logits"][b, q], -1)[cls].item()
            den += w
    assert losses["loss_ce"].item() == pytest.approx(num / den, rel=1e-5)


def test_num_masks_is_clamped_and_divides_the_losses(monkeypatch):
    assert SetCriterion.num_masks([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0
    assert SetCriterion.num_masks([{"labels": torch.zeros(2)}] * 3, torch.device("cpu")) == 6.0
    criterion = _criterion("full", (1.0, 1.0, 1.0))
    outputs, targets = _batch(seed=4)
    total = criterion(outputs, targets)["loss_mask"].item()
    # The same loss with num_masks forced to 1 is 5 (= 2 + 3 masks) times larger.
    monkeypatch.setattr(SetCriterion, "num_masks", staticmethod(lambda t, d: 1.0))
    assert criterion(outputs, targets)["loss_mask"].item() == pytest.approx(5 * total, rel=1e-5)


@pytest.mark.parametrize("mode", ["point", "full"])
def test_empty_targets_and_finite_gradients(mode):
    outputs, targets = _batch(counts=(0, 3), seed=5)
    outputs["aux_outputs"] = [_batch(counts=(0, 3), seed=6)[0]]
    leaves = [outputs["pred_logits"], outputs["pred_masks"]] + [
        v for aux in outputs["aux_outputs"] for v in aux.values()
    ]
    for leaf in leaves:
        leaf.requires_grad_(True)
    criterion = _criterion(mode, num_aux=1)
    losses = criterion(outputs, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(leaf.grad is not None and torch.isfinite(leaf.grad).all() for leaf in leaves)
    # No target at all: mask losses are zero, the class loss still trains towards no-object.
    outputs, targets = _batch(counts=(0, 0), seed=7)
    outputs["pred_masks"].requires_grad_(True)
    losses = _criterion(mode)(outputs, targets)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert losses["loss_ce"].item() > 0
    losses["loss_mask"].backward()
    assert torch.equal(outputs["pred_masks"].grad, torch.zeros_like(outputs["pred_masks"]))


def test_bad_targets_and_aux_count_raise():
    criterion = _criterion("full")
    outputs, targets = _batch()
    targets[1]["labels"][0] = 4  # == num_classes: the no-object index is not a target class
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        criterion(outputs, targets)
    outputs, targets = _batch()
    aux_criterion = _criterion("full", num_aux=1)
    with pytest.raises(ValueError, match="weights without a loss.*loss_ce_0"):
        aux_criterion(outputs, targets)  # aux weights, but no aux output


def test_aux_losses_without_a_weight_are_dropped():
    """As the official MaskFormer.forward does (losses not in weight_dict are popped): the
    Mask2Former decoder always returns aux outputs, DEEP_SUPERVISION False weights none."""
    criterion = _criterion("full")
    outputs, targets = _batch()
    expected = criterion(outputs, targets)
    outputs["aux_outputs"] = [_batch(seed=9)[0]]
    losses = criterion(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=0, atol=0)


def test_build_criterion_from_published_configs():
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"))
    m2f = build_criterion(cfg)
    assert m2f.mask_loss == "point" and m2f.matcher.mask_loss == "point"
    assert len(m2f.weight_dict) == 3 * 10  # final + 9 aux (DEC_LAYERS 10)
    assert m2f.weight_dict["loss_ce_8"] == 2.0 and m2f.weight_dict["loss_mask"] == 5.0
    assert m2f.num_points == m2f.matcher.num_points == 12544
    assert m2f.empty_weight[-1].item() == pytest.approx(0.1) and m2f.empty_weight[:-1].eq(1).all()
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml"))
    v1 = build_criterion(cfg)
    assert v1.mask_loss == "full" and v1.matcher.mask_loss == "full"
    assert v1.weight_dict["loss_ce"] == 1.0 and v1.weight_dict["loss_mask"] == 20.0
    assert len(v1.weight_dict) == 3 * cfg.MODEL.MASK_FORMER.DEC_LAYERS
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = False
    assert set(build_criterion(cfg).weight_dict) == {"loss_ce", "loss_mask", "loss_dice"}


def test_mask_loss_family():
    assert mask_loss_family("auto", "MultiScaleMaskedTransformerDecoder") == "point"
    assert mask_loss_family("auto", "StandardTransformerDecoder") == "full"
    assert mask_loss_family("full", "MultiScaleMaskedTransformerDecoder") == "full"
    with pytest.raises(ConfigError, match="MASK_LOSS"):
        mask_loss_family("focal", "StandardTransformerDecoder")


class _RenamedMaskedDecoder(MultiScaleMaskedTransformerDecoder):
    """Mask2Former's decoder under another registered name."""


class _RenamedStandardDecoder(StandardTransformerDecoder):
    """MaskFormer v1's decoder under another registered name."""


class _DecoderWithoutFamily(nn.Module):
    """A third-party decoder that does not say which mask losses it needs."""


def _registered(cls) -> str:
    if cls.__name__ not in TRANSFORMER_DECODER_REGISTRY:
        TRANSFORMER_DECODER_REGISTRY.register(cls)
    return cls.__name__


@pytest.mark.parametrize(
    "config, decoder, family",
    [
        (
            "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
            _RenamedMaskedDecoder,
            "point",
        ),
        ("maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml", _RenamedStandardDecoder, "full"),
        # the family follows the class, not the config the name appears in
        ("maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml", _RenamedMaskedDecoder, "point"),
    ],
)
def test_decoder_under_a_new_name_keeps_its_loss_family(config, decoder, family):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = _registered(decoder)
    criterion = build_criterion(cfg)
    assert criterion.mask_loss == family and criterion.matcher.mask_loss == family
    assert mask_loss_family("auto", decoder) == family


def test_decoder_without_a_loss_family_needs_an_explicit_mask_loss():
    name = _registered(_DecoderWithoutFamily)
    with pytest.raises(ConfigError, match="mask_loss_family"):
        mask_loss_family("auto", name)
    assert mask_loss_family("point", name) == "point"


# --------------------------------------------------------------------------- video
def _clip_batch(counts=(2, 1), queries=4, frames=3, num_classes=4, seed=20):
    """Clip outputs (B, Q, T, 16, 16) and targets (n, T, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(counts), queries, num_classes + 1, generator=g),
        "pred_masks": torch.randn(len(counts), queries, frames, 16, 16, generator=g),
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=g),
            "masks": torch.rand(n, frames, 16, 16, generator=g) > 0.5,
        }
        for n in counts
    ]
    return outputs, targets


@pytest.mark.parametrize("mode", ["point", "full"])
def test_clip_mask_losses_sum_over_frames_divided_by_clips(mode, monkeypatch):
    """As published (VideoSetCriterion.loss_masks): each frame of a matched clip pair is a mask of
    the losses, and the sum is divided by the number of target clips. The frames of the clips,
    taken as images with the same matches, give the same losses."""
    outputs, targets = _clip_batch()
    criterion = _criterion(mode)
    _fix_points(criterion, monkeypatch)
    indices = criterion.matcher(outputs, targets)
    clip_losses = criterion.loss_masks(outputs, targets, indices, num_masks=3.0)
    frames = outputs["pred_masks"].shape[2]
    image_outputs = {"pred_masks": outputs["pred_masks"].transpose(1, 2).flatten(0, 1)}
    image_targets = [
        {"labels": t["labels"], "masks": t["masks"][:, f]} for t in targets for f in range(frames)
    ]
    image_indices = [i for i in indices for _ in range(frames)]
    image_losses = criterion.loss_masks(image_outputs, image_targets, image_indices, num_masks=3.0)
    for name in ("loss_mask", "loss_dice"):
        torch.testing.assert_close(clip_losses[name], image_losses[name])


def test_clip_losses_are_finite_and_shapes_are_checked():
    outputs, targets = _clip_batch(counts=(0, 2))
    outputs["pred_masks"].requires_grad_(True)
    losses = _criterion("point")(outputs, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(outputs["pred_masks"].grad).all()
    assert outputs["pred_masks"].grad[1].abs().sum() > 0
    targets[1]["masks"] = targets[1]["masks"][:, :2]  # two frames for a three-frame clip
    with pytest.raises(ValueError, match=r"target 1: 'masks' must be \(n, 3, H, W\)"):
        _criterion("point")(outputs, targets)
