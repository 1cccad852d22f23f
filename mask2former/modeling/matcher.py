"""Hungarian matching of predicted masks to target masks (scipy ``linear_sum_assignment``).

The cost of assigning query q to target n is
``cost_class * -p_q(class_n) + cost_mask * mask(q, n) + cost_dice * dice(q, n)``: ``cost_*`` are
the weights (the official keywords), and ``mask_loss`` names the family of the mask and dice
costs, the same as the criterion's mask losses:

- ``"point"`` (Mask2Former): on ``num_points`` points drawn uniformly per image, the same points
  for the image's predictions and targets, with a binary cross-entropy mask cost; or
- ``"full"`` (MaskFormer v1): on the full prediction grid, targets resized to it (nearest), with
  a sigmoid focal mask cost.

Costs are computed for the whole batch at once (targets padded to the largest count) and copied
to the host once per call, i.e. once per batch and prediction (decoder layer); the assignment is
solved there, per image.

Video (Mask2Former for video instance segmentation): predictions ``(B, Q, T, h, w)`` and
targets ``(n_i, T, H, W)`` are masks through a clip, matched once per clip: a mask's points are
those of every frame (the same ``num_points`` points in each, so ``T * num_points`` values), and
the full grid is every frame's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .losses import (
    class_cost,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    pairwise_sigmoid_focal_cost,
)
from .point_sampling import point_sample

__all__ = ["MASK_LOSS_FAMILIES", "HungarianMatcher"]

#: The two ways masks are compared, by the matcher and by the criterion's losses.
MASK_LOSS_FAMILIES = ("point", "full")

#: {"pred_logits": (B, Q, K + 1), "pred_masks": (B, Q, h, w) or clips (B, Q, T, h, w)}
Outputs = dict[str, torch.Tensor]
#: B dicts {"labels": (n_i,) long, "masks": (n_i, H, W) or clips (n_i, T, H, W)}
Targets = list[dict[str, torch.Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, per image.

    ``forward(outputs, targets)`` takes ``outputs`` {"pred_logits": (B, Q, K + 1),
    "pred_masks": (B, Q, h, w) logits} and ``targets``, a list of B dicts {"labels": (n_i,)
    long, "masks": (n_i, H, W)}, and returns B pairs ``(query_idx, target_idx)`` of int64
    tensors of length ``min(Q, n_i)``, ``target_idx`` in the order of ``query_idx``. For clips
    the masks are (B, Q, T, h, w) and (n_i, T, H, W) (see the module docstring).
    """

    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        mask_loss: str = "point",
        num_points: int = 12544,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if mask_loss not in MASK_LOSS_FAMILIES:
            raise ValueError(f"mask_loss must be one of {MASK_LOSS_FAMILIES}, got {mask_loss!r}")
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.mask_loss = mask_loss
        self.num_points = num_points
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def sample_points(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Uniform random points, one set per image: (B, num_points, 2) in [0, 1]."""
        return torch.rand(batch_size, self.num_points, 2, device=device)

    @torch.no_grad()
    def forward(
        self, outputs: Outputs, targets: Targets, point_coords: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match; ``point_coords`` (B, P, 2) overrides the random points of the "point" mode.

        Raises ``FloatingPointError`` when a cost is NaN or inf: the predictions are non-finite
        (or too large to score), i.e. the model's weights have diverged.
        """
        cost, counts = self._batched_cost(outputs, targets, point_coords)
        # one copy for the batch; the checks and the assignment run on the host (numpy)
        costs = [c[:, :n] for c, n in zip(cost.cpu().numpy(), counts)]
        if not all(np.isfinite(c).all() for c in costs):
            raise FloatingPointError(_nonfinite_cost_message(outputs))
        return [_assign(c) for c in costs]

    @torch.no_grad()
    def cost_matrices(
        self, outputs: Outputs, targets: Targets, point_coords: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Per image the (Q, n_i) cost matrix, computed batched."""
        cost, counts = self._batched_cost(outputs, targets, point_coords)
        return [c[:, :n] for c, n in zip(cost, counts)]

    def _batched_cost(
        self, outputs: Outputs, targets: Targets, point_coords: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[int]]:
        """(B, Q, N_max) costs, targets padded to the largest count, and the counts n_i."""
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_masks.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_masks.shape[0]}")
        # float32 under any autocast (as the official matcher): in float16 the sums over
        # thousands of points overflow to inf
        with torch.autocast(pred_masks.device.type, enabled=False):
            return self._float32_cost(
                outputs["pred_logits"].float(), pred_masks.float(), targets, point_coords
            )

    def _float32_cost(self, pred_logits, pred_masks, targets, point_coords):
        """``_batched_cost`` of float32 (B, Q, K + 1) logits and (B, Q, h, w) mask logits."""
        counts = [len(t["labels"]) for t in targets]
        if self.mask_loss == "point":
            if point_coords is None:
                point_coords = self.sample_points(pred_masks.shape[0], pred_masks.device)
            pred, tgt = self._point_values(pred_masks, targets, point_coords)
            mask_cost = pairwise_sigmoid_ce_cost(pred, tgt)
        else:
            pred, tgt = self._grid_values(pred_masks, targets)
            mask_cost = pairwise_sigmoid_focal_cost(pred, tgt, self.focal_alpha, self.focal_gamma)
        labels = _pad_stack([t["labels"] for t in targets], max(counts, default=0))
        cost = (
            self.cost_class * class_cost(pred_logits, labels)
            + self.cost_mask * mask_cost
            + self.cost_dice * pairwise_dice_cost(pred, tgt)
        )
        return cost, counts

    def _point_values(self, pred_masks, targets, point_coords):
        """(B, Q, P) prediction and (B, N_max, P) target values at each image's points; for
        clips (B, Q, T*P) and (B, N_max, T*P), the same points in every frame."""
        pred = _sample_masks(pred_masks, point_coords)
        sampled = [
            _sample_masks(t["masks"].to(pred.dtype)[None], coords[None])[0]
            for t, coords in zip(targets, point_coords)
        ]
        return pred, _pad_stack(sampled, max(len(s) for s in sampled))

    def _grid_values(self, pred_masks, targets):
        """(B, Q, h*w) predictions and (B, N_max, h*w) targets resized (nearest) to h x w (for
        clips (B, Q, T*h*w) and (B, N_max, T*h*w))."""
        resized = [
            _resize_nearest(t["masks"].to(pred_masks), pred_masks.shape[-2:]) for t in targets
        ]
        tgt = _pad_stack([r.flatten(1) for r in resized], max(len(r) for r in resized))
        return pred_masks.flatten(2), tgt

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, mask_loss={self.mask_loss!r}, "
            f"num_points={self.num_points}"
        )


def _sample_masks(masks: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Values of masks at one set of points per batch element, each mask's frames in a row.

    masks: (B, M, H, W), or clips (B, M, T, H, W); point_coords: (B, P, 2) -> (B, M, P), or
    (B, M, T*P) with every frame sampled at the same points.
    """
    # every mask and frame is a channel of the sampling: (B, M, T, H, W) -> (B, M*T, H, W)
    values = point_sample(masks.flatten(1, -3), point_coords)
    # (B, M*T, P) -> (B, M, T, P) -> (B, M, T*P); sizes spelt out, as M may be 0
    return values.view(*masks.shape[:-2], values.shape[-1]).flatten(2)


def _resize_nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) masks, or clips (n, T, H, W), resized (nearest) to (n, [T,] *size); ``n`` may
    be 0."""
    if len(masks) == 0:
        return masks.new_zeros((*masks.shape[:-2], *size))
    # every frame is a channel of the resize: (n, T, H, W) -> (1, n*T, H, W)
    resized = F.interpolate(masks.flatten(0, -3)[None], size=size, mode="nearest")[0]
    return resized.view(*masks.shape[:-2], *size)


def _pad_stack(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack tensors (n_i, ...) into (B, length, ...), zero-padding the first dimension."""
    out = tensors[0].new_zeros((len(tensors), length) + tuple(tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
    return out


def _nonfinite_cost_message(outputs: Outputs) -> str:
    """Why the costs are not finite: which predictions have NaN / inf, or how large they are."""
    nonfinite = [k for k in ("pred_logits", "pred_masks") if not torch.isfinite(outputs[k]).all()]
    if nonfinite:
        found = f"the model's predictions are non-finite (NaN or inf in {', '.join(nonfinite)})"
    else:
        largest = max(float(outputs[k].detach().abs().max()) for k in ("pred_logits", "pred_masks"))
        found = f"the model's predictions are too large to score (largest |value| {largest:.3g})"
    return (
        f"HungarianMatcher: the cost matrix has NaN or inf entries: {found}, so the model's "
        "weights have probably diverged."
    )


def _assign(cost: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a finite (Q, n) cost matrix: (query_idx, target_idx), int64
    CPU tensors."""
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
