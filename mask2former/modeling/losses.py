"""Mask losses and matching costs as pure functions.

Losses take matched pairs and return a scalar summed over masks and divided by ``num_masks``
(the average number of target masks per process). Costs take every prediction against every
target and return a cost matrix; they accept optional leading batch dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "class_cost",
    "dice_loss",
    "pairwise_dice_cost",
    "pairwise_sigmoid_ce_cost",
    "pairwise_sigmoid_focal_cost",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
]


# --------------------------------------------------------------------------- #
# Losses over matched pairs
# --------------------------------------------------------------------------- #
def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy, averaged over points, summed over masks, divided by ``num_masks``.

    Args:
        inputs: (N, P) mask logits.
        targets: (N, P) in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss (RetinaNet, ``torchvision.ops.sigmoid_focal_loss``) on sigmoid
    probabilities; reduced like :func:`sigmoid_ce_loss`.

    ``alpha`` in [0, 1] weighs positives by ``alpha`` and negatives by ``1 - alpha``;
    ``alpha < 0`` disables the class balance factor (torchvision's ``alpha=-1``).

    Args:
        inputs: (N, P) mask logits.
        targets: (N, P) in [0, 1].
    """
    import torchvision  # here: importing it costs ~150 MB of memory (torch._dynamo)

    loss = torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha if alpha >= 0 else -1, gamma)
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` per mask on sigmoid probabilities, summed over
    masks, divided by ``num_masks``.

    Args:
        inputs: (N, P) mask logits.
        targets: (N, P) in [0, 1].
    """
    prob = inputs.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


# --------------------------------------------------------------------------- #
# Matching costs: every prediction against every target
# --------------------------------------------------------------------------- #
def class_cost(class_logits: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
    """Negative softmax probability of each target's class.

    Args:
        class_logits: (..., Q, K + 1).
        target_labels: (..., N) long in [0, K).
    Returns:
        (..., Q, N).
    """
    prob = class_logits.softmax(-1)
    # Gather along classes: index (..., Q, N) picks prob[..., q, labels[n]].
    index = target_labels.unsqueeze(-2).expand(*prob.shape[:-1], target_labels.shape[-1])
    return -torch.gather(prob, -1, index)


def pairwise_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        inputs: (..., Q, P) mask logits.
        targets: (..., N, P) in [0, 1].
    Returns:
        (..., Q, N).
    """
    pos, neg = _bce_against_one_and_zero(inputs)
    return _pairwise_mean(pos, neg, targets)


def pairwise_sigmoid_focal_cost(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean focal loss of every prediction against every target (as :func:`sigmoid_focal_loss`).

    Args:
        inputs: (..., Q, P) mask logits.
        targets: (..., N, P) in [0, 1].
    Returns:
        (..., Q, N).
    """
    prob = inputs.sigmoid()
    pos, neg = _bce_against_one_and_zero(inputs)
    pos = (1 - prob) ** gamma * pos
    neg = prob**gamma * neg
    if alpha >= 0:
        pos, neg = alpha * pos, (1 - alpha) * neg
    return _pairwise_mean(pos, neg, targets)


def pairwise_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target (as :func:`dice_loss`).

    Args:
        inputs: (..., Q, P) mask logits.
        targets: (..., N, P) in [0, 1].
    Returns:
        (..., Q, N).
    """
    prob = inputs.sigmoid()
    numerator = 2 * torch.einsum("...qp,...np->...qn", prob, targets)
    denominator = prob.sum(-1).unsqueeze(-1) + targets.sum(-1).unsqueeze(-2)
    return 1 - (numerator + 1) / (denominator + 1)


def _bce_against_one_and_zero(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point binary cross-entropy of (..., Q, P) logits if the target is 1 and if it is 0.

    ``-log sigmoid(x)`` and ``x - log sigmoid(x)``: what ``binary_cross_entropy_with_logits``
    computes for targets of ones and of zeros, without making those targets.
    """
    pos = -F.logsigmoid(inputs)
    return pos, pos + inputs


def _pairwise_mean(pos: torch.Tensor, neg: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over points of ``pos`` where a target is 1 and ``neg`` where it is 0.

    pos, neg: (..., Q, P) per-point costs; targets: (..., N, P) in [0, 1] -> (..., Q, N).
    """
    # Sum over points p: cost[q, n] = sum_p pos[q, p] t[n, p] + neg[q, p] (1 - t[n, p]).
    cost = torch.einsum("...qp,...np->...qn", pos, targets)
    cost = cost + torch.einsum("...qp,...np->...qn", neg, 1 - targets)
    return cost / pos.shape[-1]
