"""Post-processing of MaskFormer predictions: pure functions over one image's tensors.

Inputs are one image's class logits ``mask_cls: (Q, K+1)`` (last column: no-object) and
mask logits ``mask_pred: (Q, H, W)``; for a video, ``mask_pred: (Q, T, H, W)``.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from mask2former.layers.linear import linear, uses_onednn
from mask2former.structures import BitMasks, Instances

#: Bytes of float32 per-query maps (Q x rows x W) that the CPU post-processing handles at a time:
#: small enough for the temporaries to be reused from cache instead of faulted in fresh, large
#: enough for few blocks (each operation on a block synchronises the threads).
BLOCK_BYTES = 2**23


def sem_seg_postprocess(
    result: Tensor, img_size: tuple[int, int], height: int, width: int
) -> Tensor:
    """Crop the padding away, then resize bilinearly to the original size.

    result: (C, H_pad, W_pad); img_size: (h, w) of the image inside the padding.
    Returns (C, height, width).
    """
    cropped = result[:, : img_size[0], : img_size[1]]
    if cropped.shape[-2:] == (height, width):
        # Bilinear resizing to the same size is the identity: skip it.
        return cropped
    return F.interpolate(cropped[None], size=(height, width), mode="bilinear", align_corners=False)[
        0
    ]


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Per-class scores: softmax over classes (no-object dropped) times sigmoid masks.

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) logits -> (K, H, W).

    Where :func:`~mask2former.layers.linear.linear` runs on oneDNN (float32 on a CPU) each
    pixel's Q probabilities go through oneDNN's product with the (Q, K) class probabilities,
    a block of rows at a time so that the sigmoids stay in cache; it is fastest with the
    queries innermost in memory (``mask_pred.permute(1, 2, 0)`` contiguous), and the scores
    come back with the classes innermost (a (H, W, K) tensor seen as (K, H, W)).
    """
    class_probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    if not uses_onednn(mask_pred, class_probs):
        return torch.einsum("qc,qhw->chw", class_probs, mask_pred.sigmoid())
    q, h, w = mask_pred.shape
    weight = class_probs.t().contiguous()  # (K, Q)
    scores = mask_pred.new_empty((h, w, weight.shape[0]))
    rows = max(1, BLOCK_BYTES // (4 * q * w))
    for top in range(0, h, rows):
        # (Q, rows, W) -> (rows, W, Q) probabilities -> (rows, W, K) scores
        probs = mask_pred[:, top : top + rows].permute(1, 2, 0).sigmoid()
        scores[top : top + rows] = linear(probs, weight)
    return scores.permute(2, 0, 1)


def panoptic_queries(mask_cls: Tensor, object_mask_threshold: float) -> Tensor:
    """Indices (n,) of the queries panoptic inference keeps, in increasing order: those whose
    most probable class is not no-object, with a probability above the threshold.

    mask_cls: (Q, K+1) logits. A query's masks matter to :func:`panoptic_inference` only when
    it is kept, so a caller may resize only those and pass them with their logits.
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
    return keep.nonzero()[:, 0]


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    kept: Tensor | None = None,
) -> tuple[Tensor, list[dict]]:
    """Panoptic segmentation: non-overlapping segments from the confident queries.

    Queries whose best class is not no-object and whose score exceeds
    ``object_mask_threshold`` are kept; each pixel goes to the kept query maximising
    score x mask probability; a query keeps the pixels it won where its own mask
    probability >= 0.5, and is dropped when that area is empty or the area it won is below
    ``overlap_threshold`` of its full mask (probability >= 0.5). Segments of one stuff class
    are merged into the first one of that class.

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) logits, or with ``kept`` (the
    :func:`panoptic_queries` of ``mask_cls``) only the kept queries' masks (n, H, W), in that
    order; thing_ids: contiguous class ids that are things. Returns ``(panoptic_seg (H, W)
    int32, segments_info)``, with ids counting from 1 and 0 for unassigned pixels; each info
    is ``{"id", "category_id", "isthing", "score"}``.
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    if kept is None:
        # the kept queries' indices: one read of the device for the three selections below
        kept = panoptic_queries(mask_cls, object_mask_threshold)
        rows_of_kept = kept
    elif len(kept) != len(mask_pred):
        raise ValueError(f"{len(kept)} kept queries but {len(mask_pred)} masks")
    else:
        rows_of_kept = None  # mask_pred holds the kept queries' masks only
    cur_scores, cur_classes = scores[kept], labels[kept]
    h, w = mask_pred.shape[-2:]
    num_kept = len(kept)
    if num_kept == 0:
        return torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device), []
    winner, covered, own_area = _pixel_winners(mask_pred, cur_scores, rows_of_kept)
    segment_query = torch.where(covered, winner, num_kept)
    won_area = _count(winner, num_kept)
    kept_area = _count(segment_query, num_kept + 1)[:num_kept]
    # (5, num_kept) float64, exact for the float32 scores and the integers: one read
    stats = [cur_classes, cur_scores, own_area, won_area, kept_area]
    classes, scores_kept, own, won, kept_in = torch.stack([t.double() for t in stats]).tolist()
    segment_of_query, segments_info = _assign_segment_ids(
        [int(c) for c in classes],
        scores_kept,
        [int(a) for a in own],
        [int(a) for a in won],
        [int(a) for a in kept_in],
        things={int(t) for t in thing_ids},
        overlap_threshold=overlap_threshold,
    )
    # lookup table: kept query -> segment id (0: dropped); the extra last entry is 0
    lut = torch.tensor(segment_of_query + [0], dtype=torch.int32, device=mask_pred.device)
    panoptic_seg = lut[segment_query]
    return panoptic_seg, segments_info


def _pixel_winners(
    mask_logits: Tensor, scores: Tensor, queries: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """For masks (n, H, W) logits (or those of ``queries`` (n,) among (Q, H, W)) of queries
    scored (n,): the query each pixel goes to (H, W)
    (the largest score x mask probability; max(0) gives the first maximal index, as argmax
    does, and is faster on CPU), whether that query's own probability there is >= 0.5 (H, W),
    and each query's area of probability >= 0.5 (n,).

    On a CPU the rows go in blocks of ``BLOCK_BYTES``, so that the probabilities and
    products stay in cache instead of filling fresh memory; on a GPU in one block. Every
    pixel's result is its own, so the blocks change nothing.
    """
    n, (h, w) = len(scores), mask_logits.shape[-2:]
    rows = h if mask_logits.device.type != "cpu" else max(1, BLOCK_BYTES // (4 * n * w))
    winner = torch.empty((h, w), dtype=torch.int64, device=mask_logits.device)
    covered = torch.empty((h, w), dtype=torch.bool, device=mask_logits.device)
    own_area = torch.zeros(n, dtype=torch.int64, device=mask_logits.device)
    for top in range(0, h, rows):
        if queries is None:
            probs = mask_logits[:, top : top + rows].sigmoid()
        else:  # indexing copies: the sigmoid works in place
            probs = mask_logits[queries, top : top + rows].sigmoid_()
        block = winner[top : top + rows]
        torch.max(scores.view(-1, 1, 1) * probs, 0, out=(torch.empty_like(probs[0]), block))
        covered[top : top + rows] = probs.gather(0, block[None])[0] >= 0.5
        own_area += (probs >= 0.5).sum((1, 2))
    return winner, covered, own_area


def _count(values: Tensor, length: int) -> Tensor:
    """(length,) int64: how often each of 0 .. length - 1 occurs in ``values`` (all in range).

    ``torch.bincount`` on a GPU reads the largest value on the host; this reads nothing.
    """
    flat = values.flatten()
    counts = torch.zeros(length, dtype=torch.int64, device=values.device)
    ones = torch.ones((), dtype=torch.int64, device=values.device).expand(flat.shape)
    return counts.index_add_(0, flat, ones)


def _assign_segment_ids(
    classes: list[int],
    scores: list[float],
    own_area: list[int],
    won_area: list[int],
    kept_area: list[int],
    *,
    things: set[int],
    overlap_threshold: float,
) -> tuple[list[int], list[dict]]:
    """Segment id of each kept query (0: dropped) and the segments' infos, in query order.

    A stuff query whose class already has a segment joins it instead of starting one.
    """
    segment_of_query = [0] * len(classes)
    segments_info: list[dict] = []
    stuff_segment_ids: dict[int, int] = {}
    for k, pred_class in enumerate(classes):
        if won_area[k] == 0 or own_area[k] == 0 or kept_area[k] == 0:
            continue
        if won_area[k] / own_area[k] < overlap_threshold:
            continue
        isthing = pred_class in things
        if not isthing and pred_class in stuff_segment_ids:
            segment_of_query[k] = stuff_segment_ids[pred_class]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment_ids[pred_class] = segment_id
        segment_of_query[k] = segment_id
        segments_info.append(
            {"id": segment_id, "isthing": isthing, "category_id": pred_class, "score": scores[k]}
        )
    return segment_of_query, segments_info


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    topk: int,
    thing_ids: Sequence[int] | None = None,
) -> Instances:
    """Instances: the top ``topk`` (query, class) pairs by class probability.

    Each pair gives a binary mask (logit > 0), scored by its class probability times the
    mean mask probability inside the binary mask. With ``thing_ids`` (panoptic models)
    pairs of stuff classes are dropped. Results are sorted by decreasing score.

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) logits. Returns ``Instances`` of
    image size (H, W) with ``pred_masks`` (n, H, W) float 0/1, ``scores`` (n,),
    ``pred_classes`` (n,) long, ``pred_boxes`` (tight boxes around the masks).
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[1] - 1
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    topk = min(topk, num_queries * num_classes)
    # (Q, K) -> (Q*K,): index q * K + c is query q with class c
    scores, flat_indices = class_probs.flatten().topk(topk, sorted=False)
    labels = flat_indices % num_classes
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        things = torch.as_tensor(list(thing_ids), dtype=labels.dtype, device=labels.device)
        # (n, 1) == (1, T): torch.isin sorts and reads sizes on a GPU for many thing ids
        is_thing = (labels[:, None] == things[None]).any(1)
        # the thing pairs' positions: one read of the device for the three selections
        thing_pairs = is_thing.nonzero()[:, 0]
        scores, labels, query_indices = (
            scores[thing_pairs],
            labels[thing_pairs],
            query_indices[thing_pairs],
        )
    masks = mask_pred[query_indices]
    binary = (masks > 0).float()
    mask_scores = (masks.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    scores = scores * mask_scores
    order = scores.argsort(descending=True)
    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = binary[order]
    result.scores = scores[order]
    result.pred_classes = labels[order]
    result.pred_boxes = BitMasks(result.pred_masks).get_bounding_boxes()
    return result


def video_instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    topk: int = 10,
) -> dict:
    """Video instances: the top ``topk`` (query, class) pairs of a video by class probability.

    As published (Mask2Former's ``VideoMaskFormer.inference_video``): each pair's mask is its
    query's mask in every frame, upsampled (bilinear) to the padded input size, cropped to the
    image inside the padding, resized to ``output_size`` and thresholded at logit 0; its score
    is the class probability alone. Only the top pairs' masks are resized (the published code
    resizes all Q first: the same values, in Q / topk times the memory). Pairs are sorted by
    decreasing score (the published order is topk's unsorted one).

    mask_cls: (Q, K+1) logits; mask_pred: (Q, T, h, w) logits. Returns ``{"image_size":
    output_size, "pred_scores": [float], "pred_labels": [int], "pred_masks": [(T, *output_size)
    bool CPU tensor]}``, one entry per pair.
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[1] - 1
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    # (Q, K) -> (Q*K,): index q * K + c is query q with class c
    scores, flat_indices = class_probs.flatten().topk(min(topk, num_queries * num_classes))
    labels = flat_indices % num_classes
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    # frames are channels of the resizes: (k, T, h, w) -> (k, T, H_pad, W_pad)
    masks = F.interpolate(
        mask_pred[query_indices], size=padded_size, mode="bilinear", align_corners=False
    )
    # (k, T, ...) -> (k*T, ...) -> (k*T, height, width) -> (k, T, height, width)
    masks = sem_seg_postprocess(masks.flatten(0, 1), image_size, *output_size)
    masks = masks.unflatten(0, (len(query_indices), mask_pred.shape[1]))
    return {
        "image_size": tuple(output_size),
        "pred_scores": scores.tolist(),
        "pred_labels": labels.tolist(),
        "pred_masks": list((masks > 0).cpu()),
    }
