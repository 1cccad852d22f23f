"""The set-prediction loss of MaskFormer and Mask2Former.

``SetCriterion`` matches queries to targets (Hungarian), computes each of its ``loss_fns``
(class, then mask and dice) on the matched pairs for the final prediction and for every auxiliary
(deep-supervision) prediction, and applies the loss weights. The returned dict is already
weighted: callers sum it and never weigh it again.

Two mask-loss families (``mask_loss``); with ``MODEL.MASK_FORMER.MASK_LOSS`` "auto" the transformer
decoder's class says which one its predictions are trained with (``mask_loss_family``):

- ``"point"`` (Mask2Former): sigmoid BCE + dice on ``num_points`` points per matched mask, of
  which ``importance_sample_ratio`` are the most uncertain of ``oversample_ratio * num_points``
  random candidates and the rest uniform;
- ``"full"`` (MaskFormer v1): sigmoid focal + dice on full-resolution masks, predictions
  upsampled (bilinear) to the target size.

Video (Mask2Former for video instance segmentation): a prediction and a target are a mask
through a clip, ``(T, h, w)`` and ``(T, H, W)``. The matcher compares whole clips; the mask
losses, as published, take each frame of a matched pair as a mask of its own (points drawn
per frame) and still divide by the number of target *clips* ``num_masks``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mask2former.config import ConfigError, configurable
from mask2former.ops import deterministic
from mask2former.utils import comm
from mask2former.utils.registry import lookup

from .losses import dice_loss, sigmoid_ce_loss, sigmoid_focal_loss
from .matcher import MASK_LOSS_FAMILIES, HungarianMatcher
from .point_sampling import point_sample, uncertain_point_coords_with_randomness
from .transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY

__all__ = ["SetCriterion", "build_criterion", "loss_weights", "mask_loss_family"]

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def mask_loss_family(mask_loss: str, decoder: type | str) -> str:
    """Resolve ``MODEL.MASK_FORMER.MASK_LOSS`` for a transformer decoder.

    "point" and "full" are returned as they are; "auto" is the decoder class's
    ``mask_loss_family`` attribute ("point" for Mask2Former's
    ``MultiScaleMaskedTransformerDecoder``, "full" for MaskFormer v1's
    ``StandardTransformerDecoder``, and the same for their subclasses under any registered
    name). ``decoder`` is the class or its name in ``TRANSFORMER_DECODER_REGISTRY``.
    """
    if mask_loss == "auto":
        if isinstance(decoder, str):
            key = "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME"
            decoder = lookup(TRANSFORMER_DECODER_REGISTRY, decoder, key)
        family = getattr(decoder, "mask_loss_family", None)
        if family not in MASK_LOSS_FAMILIES:
            raise ConfigError(
                f"MODEL.MASK_FORMER.MASK_LOSS 'auto': the transformer decoder "
                f"{getattr(decoder, '__name__', decoder)} gives no mask_loss_family in {MASK_LOSS_FAMILIES} (got "
                f"{family!r}); set MASK_LOSS to 'point' or 'full', or give the class the attribute"
            )
        return family
    if mask_loss not in MASK_LOSS_FAMILIES:
        raise ConfigError(
            f"MODEL.MASK_FORMER.MASK_LOSS must be 'auto', 'point' or 'full', got {mask_loss!r}"
        )
    return mask_loss


def loss_weights(
    class_weight: float, mask_weight: float, dice_weight: float, num_aux_outputs: int
) -> dict[str, float]:
    """Weight of every loss key: ``loss_ce``, ``loss_mask``, ``loss_dice`` and the same with
    suffix ``_i`` for auxiliary output i in ``range(num_aux_outputs)``."""
    base = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    weights = dict(base)
    for i in range(num_aux_outputs):
        weights.update({f"{k}_{i}": w for k, w in base.items()})
    return weights


class SetCriterion(nn.Module):
    """Weighted losses of a batch of mask predictions.

    ``forward(outputs, targets)``: ``outputs`` {"pred_logits": (B, Q, K + 1), "pred_masks":
    (B, Q, h, w) logits, optional "aux_outputs": list of dicts with the same two keys};
    ``targets`` a list of B dicts {"labels": (n_i,) long in [0, K), "masks": (n_i, H, W)
    binary}. Returns {loss name: weighted scalar}; every key of ``weight_dict`` exactly
    (losses of auxiliary outputs that have no weight are computed, as officially, then dropped).
    For clips of T frames the masks are (B, Q, T, h, w) and (n_i, T, H, W) (module docstring).
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float,
        mask_loss: str,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if mask_loss not in MASK_LOSS_FAMILIES:
            raise ValueError(f"mask_loss must be one of {MASK_LOSS_FAMILIES}, got {mask_loss!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.mask_loss = mask_loss
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        # Each takes (outputs, targets, indices, num_masks) and returns {loss name: value}.
        self.loss_fns: tuple[Callable[..., dict[str, torch.Tensor]], ...] = (
            self.loss_labels,
            self.loss_masks,
        )

    @classmethod
    def from_config(cls, cfg) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        mask_loss = mask_loss_family(mf.MASK_LOSS, mf.TRANSFORMER_DECODER_NAME)
        # The decoder makes DEC_LAYERS predictions; all but the last are auxiliary.
        num_aux = mf.DEC_LAYERS - 1 if mf.DEEP_SUPERVISION else 0
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            mask_loss=mask_loss,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        return {
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "matcher": matcher,
            "weight_dict": loss_weights(mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, num_aux),
            "eos_coef": mf.NO_OBJECT_WEIGHT,
            "mask_loss": mask_loss,
            "num_points": mf.TRAIN_NUM_POINTS,
            "oversample_ratio": mf.OVERSAMPLE_RATIO,
            "importance_sample_ratio": mf.IMPORTANCE_SAMPLE_RATIO,
        }

    # ------------------------------------------------------------------ losses
    def loss_labels(self, outputs, targets, indices: Indices, num_masks: float):
        """Cross-entropy over K + 1 classes; unmatched queries are no-object (weight eos_coef)."""
        logits = outputs["pred_logits"].float()
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        batch_idx, query_idx = _prediction_index(indices)
        matched = [t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)]
        target_classes[batch_idx, query_idx] = torch.cat(matched).to(logits.device)
        # cross_entropy wants classes on dim 1: (B, Q, K + 1) -> (B, K + 1, Q).
        loss = deterministic.cross_entropy(
            logits.transpose(1, 2), target_classes, self.empty_weight
        )
        return {"loss_ce": loss}

    def loss_masks(self, outputs, targets, indices: Indices, num_masks: float):
        """Mask loss (BCE or focal) and dice loss on matched masks (of clips: on every frame)."""
        batch_idx, query_idx = _prediction_index(indices)
        pred = outputs["pred_masks"][batch_idx, query_idx]  # (M, h, w) or (M, T, h, w)
        target = _matched_target_masks(targets, indices).to(pred)  # (M, H, W) or (M, T, H, W)
        if len(pred) == 0:
            # Nothing matched: zero losses that still depend on the predictions.
            zero = outputs["pred_masks"].sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        # each frame of a clip is a mask of the losses: (M, T, h, w) -> (M*T, h, w)
        pred, target = pred.flatten(0, -3), target.flatten(0, -3)
        if self.mask_loss == "point":
            pred, target = self._point_values(pred, target)
            mask = sigmoid_ce_loss(pred, target, num_masks)
        else:
            pred, target = self._full_values(pred, target)
            mask = sigmoid_focal_loss(pred, target, num_masks, self.focal_alpha, self.focal_gamma)
        return {"loss_mask": mask, "loss_dice": dice_loss(pred, target, num_masks)}

    def sample_points(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """Loss points for (M, h, w) mask logits: (M, num_points, 2) in [0, 1]."""
        with torch.no_grad():
            return uncertain_point_coords_with_randomness(
                pred_masks[:, None],
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )

    def _point_values(self, pred, target):
        """(M, P) prediction logits and target values at each mask's loss points."""
        coords = self.sample_points(pred)
        with torch.no_grad():
            target_values = point_sample(target[:, None], coords)[:, 0]
        return point_sample(pred[:, None], coords)[:, 0], target_values

    def _full_values(self, pred, target):
        """(M, H*W) predictions upsampled (bilinear) to the target size, and flat targets."""
        pred = deterministic.interpolate(
            pred[:, None], size=target.shape[-2:], mode="bilinear", align_corners=False
        )
        return pred.flatten(1), target.flatten(1)

    # ----------------------------------------------------------------- forward
    def forward(self, outputs: dict, targets: list[dict[str, torch.Tensor]]):
        """The weighted losses; reads from the device: the matcher's one cost copy per
        prediction, one label-range check per batch (and the mask count's all-reduce under
        several processes)."""
        _check_targets(targets, self.num_classes, outputs["pred_masks"].shape[2:-2])
        device = outputs["pred_logits"].device
        num_masks = self.num_masks(targets, device)
        predictions = [outputs] + list(outputs.get("aux_outputs", []))
        suffixes = [""] + [f"_{i}" for i in range(len(predictions) - 1)]
        losses = {}
        for prediction, suffix in zip(predictions, suffixes):
            indices = _indices_to(self.matcher(prediction, targets), device)
            for loss_fn in self.loss_fns:
                for name, value in loss_fn(prediction, targets, indices, num_masks).items():
                    losses[name + suffix] = value
        return self.weighted(losses)

    def weighted(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Multiply each loss by its weight and drop the losses that have none.

        As in the official model, a loss without a weight is computed but not returned: the
        Mask2Former decoder always returns its auxiliary predictions, and with
        ``DEEP_SUPERVISION`` off only the final prediction is weighted. A weight without a
        loss raises (fewer auxiliary outputs than ``DEC_LAYERS - 1``).
        """
        missing = sorted(set(self.weight_dict) - set(losses))
        if missing:
            raise ValueError(
                f"SetCriterion: weights without a loss {missing} (is the number of auxiliary "
                "outputs DEC_LAYERS - 1?)"
            )
        return {
            name: value * self.weight_dict[name]
            for name, value in losses.items()
            if name in self.weight_dict
        }

    @staticmethod
    def num_masks(targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
        """Target masks per process, averaged over all processes, at least 1.

        With one process the count never leaves the host; with several it is all-reduced on
        ``device`` and read back (one transfer).
        """
        count = float(sum(len(t["labels"]) for t in targets))
        if comm.get_world_size() == 1:
            return max(count, 1.0)
        count = torch.as_tensor(count, dtype=torch.float, device=device)
        return torch.clamp(comm.all_reduce_mean(count), min=1).item()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, "
            f"mask_loss={self.mask_loss!r}, num_points={self.num_points}, "
            f"weight_dict={self.weight_dict}"
        )


def build_criterion(cfg) -> SetCriterion:
    """The criterion of ``cfg.MODEL.MASK_FORMER`` (see :meth:`SetCriterion.from_config`)."""
    return SetCriterion(cfg)


def _indices_to(indices: Indices, device: torch.device) -> Indices:
    """The matcher's per-image (query_idx, target_idx) on ``device``, moved in one copy (one
    per image would stall a GPU once per image)."""
    # (2, n_i) per image -> (2, M) for the batch -> back to (2, n_i) views on the device
    stacked = torch.cat([torch.stack(pair) for pair in indices], dim=1).to(device)
    parts = stacked.split([len(src) for src, _ in indices], dim=1)
    return [(part[0], part[1]) for part in parts]


def _prediction_index(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index, query index) of every matched prediction, image by image."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def _matched_target_masks(targets, indices: Indices) -> torch.Tensor:
    """(M, H, W) target masks (clips: (M, T, H, W)) in the order of :func:`_prediction_index`,
    zero-padded at the bottom and right to the largest target size of the batch."""
    height = max(t["masks"].shape[-2] for t in targets)
    width = max(t["masks"].shape[-1] for t in targets)
    matched = []
    for t, (_, tgt) in zip(targets, indices):
        masks = t["masks"][tgt.to(t["masks"].device)].float()
        pad = (0, width - masks.shape[-1], 0, height - masks.shape[-2])
        matched.append(F.pad(masks, pad))
    return torch.cat(matched)


def _check_targets(
    targets: list[dict[str, torch.Tensor]], num_classes: int, frames: tuple[int, ...] = ()
) -> None:
    """Raise on targets whose labels are out of range or whose counts disagree, or whose masks
    are not (n, H, W), or for clips of ``frames`` = (T,) not (n, T, H, W).

    The labels of the whole batch are checked with one read of the device.
    """
    expected = "(n, " + "".join(f"{t}, " for t in frames) + "H, W)"
    for i, t in enumerate(targets):
        labels, masks = t["labels"], t["masks"]
        shape_ok = masks.dim() == 3 + len(frames) and tuple(masks.shape[1:-2]) == tuple(frames)
        if not shape_ok or len(masks) != len(labels):
            raise ValueError(
                f"target {i}: 'masks' must be {expected} with n = len(labels) = {len(labels)}, "
                f"got shape {tuple(masks.shape)}"
            )
    if not any(len(t["labels"]) for t in targets):
        return
    if not bool(_out_of_range(torch.cat([t["labels"] for t in targets]), num_classes).any()):
        return
    for i, t in enumerate(targets):
        if _out_of_range(t["labels"], num_classes).any():
            raise ValueError(
                f"target {i}: labels must be in [0, {num_classes}), got {t['labels'].tolist()}"
            )


def _out_of_range(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n,) bool: labels outside [0, num_classes)."""
    return (labels < 0) | (labels >= num_classes)
