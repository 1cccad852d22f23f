"""Hungarian matcher: batched costs equal per-image costs and a naive reference; optimality."""

import itertools
import math

import pytest
import torch

from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.point_sampling import point_sample


def _outputs(batch, queries, classes, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(batch, queries, classes + 1, generator=g),
        "pred_masks": torch.randn(batch, queries, size, size, generator=g) * 3,
    }


def _targets(counts, classes, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "labels": torch.randint(0, classes, (n,), generator=g),
            "masks": torch.rand(n, size, size, generator=g) > 0.5,
        }
        for n in counts
    ]


def _naive_cost(logits, masks, labels, target_masks, w_class, w_mask, w_dice, focal):
    """Cost of every (query, target) pair written out from the formulas, one pair at a time.

    logits (Q, K+1), masks (Q, P) logits, labels (N,), target_masks (N, P) in {0, 1}.
    """
    prob = logits.softmax(-1)
    cost = torch.zeros(len(logits), len(labels), dtype=torch.float64)
    for q, n in itertools.product(range(len(logits)), range(len(labels))):
        x, t = masks[q].double(), target_masks[n].double()
        p = 1 / (1 + torch.exp(-x))
        if focal:  # alpha 0.25, gamma 2, on the two cases t = 1 and t = 0
            per_point = -0.25 * (1 - p) ** 2 * torch.log(p) * t - 0.75 * p**2 * torch.log(
                1 - p
            ) * (1 - t)
        else:
            per_point = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
        dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        cost[q, n] = -w_class * prob[q, labels[n]] + w_mask * per_point.mean() + w_dice * dice
    return cost


@pytest.mark.parametrize("mode", ["point", "full"])
def test_batched_costs_equal_per_image_and_naive(mode):
    counts, queries, classes = [3, 0, 5], 6, 4
    outputs, targets = _outputs(3, queries, classes), _targets(counts, classes)
    matcher = HungarianMatcher(
        cost_class=2.0, cost_mask=5.0, cost_dice=3.0, mask_loss=mode, num_points=50
    )
    coords = torch.rand(3, 50, 2, generator=torch.Generator().manual_seed(2))
    batched = matcher.cost_matrices(outputs, targets, coords)
    for b, n in enumerate(counts):
        single = {k: v[b : b + 1] for k, v in outputs.items()}
        alone = matcher.cost_matrices(single, [targets[b]], coords[b : b + 1])[0]
        assert batched[b].shape == (queries, n)
        torch.testing.assert_close(batched[b], alone, rtol=1e-6, atol=1e-6)
        if mode == "point":
            pred = point_sample(outputs["pred_masks"][b : b + 1], coords[b : b + 1])[0]
            tgt = point_sample(targets[b]["masks"].float()[None], coords[b : b + 1])[0]
        else:  # targets are 16x16, predictions 8x8: nearest resize keeps every other pixel
            pred = outputs["pred_masks"][b].flatten(1)
            tgt = targets[b]["masks"][:, ::2, ::2].float().flatten(1)
        naive = _naive_cost(
            outputs["pred_logits"][b],
            pred,
            targets[b]["labels"],
            tgt,
            2.0,
            5.0,
            3.0,
            focal=mode == "full",
        )
        torch.testing.assert_close(batched[b].double(), naive, rtol=1e-4, atol=1e-5)


def test_batched_matching_equals_per_image_matching():
    counts = [2, 4, 0, 1]
    outputs, targets = _outputs(4, 5, 3, seed=3), _targets(counts, 3, seed=4)
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=1.0, cost_dice=1.0, num_points=40)
    coords = torch.rand(4, 40, 2)
    batched = matcher(outputs, targets, coords)
    for b in range(4):
        single = {k: v[b : b + 1] for k, v in outputs.items()}
        ((rows, cols),) = matcher(single, [targets[b]], coords[b : b + 1])
        assert torch.equal(batched[b][0], rows) and torch.equal(batched[b][1], cols)
        assert len(rows) == counts[b]


def test_assignment_is_optimal():
    outputs, targets = _outputs(1, 4, 3, seed=5), _targets([3], 3, seed=6)
    matcher = HungarianMatcher(mask_loss="full")
    cost = matcher.cost_matrices(outputs, targets)[0]
    ((rows, cols),) = matcher(outputs, targets)
    best = min(
        sum(cost[q, n].item() for n, q in enumerate(perm))
        for perm in itertools.permutations(range(4), 3)
    )
    assert math.isclose(cost[rows, cols].sum().item(), best, rel_tol=1e-6)


@pytest.mark.parametrize("mode", ["point", "full"])
def test_empty_targets_give_empty_matches(mode):
    outputs = _outputs(2, 5, 3)
    targets = _targets([0, 0], 3)
    for rows, cols in HungarianMatcher(mask_loss=mode, num_points=30)(outputs, targets):
        assert rows.dtype == cols.dtype == torch.int64
        assert rows.numel() == cols.numel() == 0


@pytest.mark.parametrize("mode", ["point", "full"])
def test_perfect_prediction_is_matched_to_its_target(mode):
    classes, queries = 5, 6
    targets = _targets([3], classes, size=16, seed=7)
    targets[0]["labels"] = torch.tensor([4, 0, 2])
    perm = torch.tensor([5, 1, 3])  # target n is predicted by query perm[n]
    logits = torch.full((1, queries, classes + 1), -10.0)
    logits[0, :, classes] = 10.0  # the other queries say no-object
    masks = torch.full((1, queries, 16, 16), -20.0)
    for n, q in enumerate(perm):
        logits[0, q, classes] = -10.0
        logits[0, q, targets[0]["labels"][n]] = 10.0
        masks[0, q] = targets[0]["masks"][n].float() * 40 - 20
    outputs = {"pred_logits": logits, "pred_masks": masks}
    ((rows, cols),) = HungarianMatcher(mask_loss=mode, num_points=100)(outputs, targets)
    assert dict(zip(cols.tolist(), rows.tolist())) == dict(enumerate(perm.tolist()))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="mask_loss"):
        HungarianMatcher(mask_loss="pixels")
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)


@pytest.mark.parametrize("mode", ["point", "full"])
def test_non_finite_predictions_raise_floating_point_error_naming_them(mode):
    outputs = _outputs(2, 3, 2)
    outputs["pred_masks"][1, 0, 0, 0] = float("nan")
    outputs["pred_logits"][0, 2, 1] = float("inf")
    with pytest.raises(
        FloatingPointError, match=r"non-finite \(NaN or inf in pred_logits, pred_masks\).*diverged"
    ):
        HungarianMatcher(mask_loss=mode, num_points=64 * 64)(outputs, _targets([1, 2], 2))


def test_costs_are_float32_under_float16_autocast():
    """A sum over thousands of points overflows float16: the costs stay float32, as without
    autocast, so confident predictions are matched instead of raising."""
    outputs, targets = _outputs(2, 4, 3), _targets([2, 3], 3)
    outputs["pred_masks"] = outputs["pred_masks"] * 10  # |logit| up to ~100
    coords = torch.rand(2, 12544, 2, generator=torch.Generator().manual_seed(2))
    matcher = HungarianMatcher(num_points=12544)
    expected = matcher.cost_matrices(outputs, targets, coords)
    with torch.autocast("cpu", dtype=torch.float16):
        costs = matcher.cost_matrices(outputs, targets, coords)
        matcher(outputs, targets, coords)
    for cost, reference in zip(costs, expected):
        assert cost.dtype == torch.float32
        torch.testing.assert_close(cost, reference)


# --------------------------------------------------------------------------- video
def _clips(counts, queries, classes, frames=3, seed=8):
    """Outputs with clip masks (B, Q, T, 8, 8) and targets (n, T, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(counts), queries, classes + 1, generator=g),
        "pred_masks": torch.randn(len(counts), queries, frames, 8, 8, generator=g) * 3,
    }
    targets = [
        {
            "labels": torch.randint(0, classes, (n,), generator=g),
            "masks": torch.rand(n, frames, 16, 16, generator=g) > 0.5,
        }
        for n in counts
    ]
    return outputs, targets


@pytest.mark.parametrize("mode", ["point", "full"])
def test_clip_costs_compare_every_frame_at_once(mode):
    """A clip's mask and dice costs are over the values of all its frames together: the same
    points in every frame (published VideoHungarianMatcher), or every frame's grid."""
    counts, queries, classes, frames = [2, 0, 3], 4, 3, 3
    outputs, targets = _clips(counts, queries, classes, frames)
    matcher = HungarianMatcher(
        cost_class=2.0, cost_mask=5.0, cost_dice=3.0, mask_loss=mode, num_points=20
    )
    coords = torch.rand(3, 20, 2, generator=torch.Generator().manual_seed(9))
    costs = matcher.cost_matrices(outputs, targets, coords)
    for b, n in enumerate(counts):
        if mode == "point":
            # (Q, T, h, w) sampled frame by frame at the clip's points -> (Q, T*P)
            pred = torch.cat(
                [
                    point_sample(outputs["pred_masks"][b : b + 1, :, t], coords[b : b + 1])[0]
                    for t in range(frames)
                ],
                dim=1,
            )
            tgt = torch.cat(
                [
                    point_sample(targets[b]["masks"][None, :, t].float(), coords[b : b + 1])[0]
                    for t in range(frames)
                ],
                dim=1,
            )
        else:
            pred = outputs["pred_masks"][b].flatten(1)
            tgt = targets[b]["masks"][..., ::2, ::2].float().flatten(1)
        naive = _naive_cost(
            outputs["pred_logits"][b],
            pred,
            targets[b]["labels"],
            tgt,
            2.0,
            5.0,
            3.0,
            mode == "full",
        )
        assert costs[b].shape == (queries, n)
        torch.testing.assert_close(costs[b].double(), naive, rtol=1e-4, atol=1e-5)


def test_one_frame_clips_match_like_images():
    outputs, targets = _clips([2, 3], 5, 4, frames=1, seed=10)
    images = {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"][:, :, 0]}
    image_targets = [{"labels": t["labels"], "masks": t["masks"][:, 0]} for t in targets]
    coords = torch.rand(2, 30, 2)
    matcher = HungarianMatcher(num_points=30)
    for clip, image in zip(
        matcher.cost_matrices(outputs, targets, coords),
        matcher.cost_matrices(images, image_targets, coords),
    ):
        torch.testing.assert_close(clip, image)


def test_a_track_is_matched_by_its_whole_clip():
    """Query 1 fits the target in frame 0 only, query 2 in both frames: the clip goes to 2."""
    targets = _clips([1], 3, 2, frames=2, seed=11)[1]
    target = targets[0]["masks"][0].float()  # (2, 16, 16)
    masks = torch.full((1, 3, 2, 16, 16), -20.0)
    masks[0, 1, 0] = target[0] * 40 - 20
    masks[0, 1, 1] = (1 - target[1]) * 40 - 20
    masks[0, 2] = target * 40 - 20
    logits = torch.zeros(1, 3, 3)
    ((rows, cols),) = HungarianMatcher(num_points=200)(
        {"pred_logits": logits, "pred_masks": masks}, targets
    )
    assert rows.tolist() == [2] and cols.tolist() == [0]
