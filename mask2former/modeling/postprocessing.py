"""Post-processing of MaskFormer predictions: pure functions over one image's tensors.

Inputs are one image's class logits ``mask_cls: (Q, K+1)`` (last column: no-object) and
mask logits ``mask_pred: (Q, H, W)``; for a video, ``mask_pred: (Q, T, H, W)``.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from mask2former.layers.linear import linear, uses_onednn
from mask2former.structures import BitMasks, Instances, encode_masks

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
    """
    return _class_weighted(mask_cls, mask_pred.sigmoid())


def _class_weighted(mask_cls: Tensor, mask_probs: Tensor) -> Tensor:
    """mask_cls: (Q, K+1) logits; mask_probs: (Q, H, W) -> (K, H, W) per-class scores.

    Where :func:`~mask2former.layers.linear.linear` runs on oneDNN (float32 on a CPU) each
    pixel's Q probabilities go through oneDNN's product with the (Q, K) class probabilities,
    a block of rows at a time; it is fastest with the queries innermost in memory
    (``mask_probs.permute(1, 2, 0)`` contiguous), and the scores come back with the classes
    innermost (a (H, W, K) tensor seen as (K, H, W)). A pixel's scores do not depend on the
    block it is in (oneDNN's product of more than one row), so the low-memory path, which
    calls this on bands of the image, gets the same scores.
    """
    class_probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    # whatever the size (min_macs=0): the low-memory path's bands must take the same path
    if not uses_onednn(mask_probs, class_probs, min_macs=0):
        return torch.einsum("qc,qhw->chw", class_probs, mask_probs)
    q, h, w = mask_probs.shape
    weight = class_probs.t().contiguous()  # (K, Q)
    scores = mask_probs.new_empty((h, w, weight.shape[0]))
    rows = max(1, BLOCK_BYTES // (4 * q * w))
    for top in range(0, h, rows):
        # (Q, rows, W) -> (rows, W, Q) probabilities -> (rows, W, K) scores
        probs = mask_probs[:, top : top + rows].permute(1, 2, 0)
        scores[top : top + rows] = linear(probs, weight, min_macs=0)
    return scores.permute(2, 0, 1)


def panoptic_queries(mask_cls: Tensor, object_mask_threshold: float) -> Tensor:
    """Indices (n,) of the queries panoptic inference keeps, in increasing order: those whose
    most probable class is not no-object, with a probability above the threshold.

    mask_cls: (Q, K+1) logits. A query's masks matter to :func:`panoptic_inference` only when
    it is kept, so a caller may resize only those and pass them with their logits.
    """
    return _confident_queries(mask_cls, object_mask_threshold)[2]


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
    masks_of_kept_only = kept is not None
    if masks_of_kept_only and len(kept) != len(mask_pred):
        raise ValueError(f"{len(kept)} kept queries but {len(mask_pred)} masks")
    cur_scores, cur_classes, kept = _confident_queries(mask_cls, object_mask_threshold, kept)
    h, w = mask_pred.shape[-2:]
    if len(kept) == 0:
        return torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device), []
    rows = None if masks_of_kept_only else kept
    winner, covered, own_area = _pixel_winners(mask_pred, cur_scores, rows)
    segment_query, *areas = _segment_areas(winner, covered, own_area)
    lut, segments_info = _segment_ids(cur_scores, cur_classes, *areas, thing_ids, overlap_threshold)
    return lut[segment_query], segments_info


def _confident_queries(
    mask_cls: Tensor, threshold: float, kept: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores (n,), classes (n,) and indices (n,) of the queries whose best class is an
    object scored above ``threshold``; ``kept``: those indices, when already known."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    if kept is None:
        keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > threshold)
        # the kept queries' indices: one read of the device for the selections
        kept = keep.nonzero()[:, 0]
    return scores[kept], labels[kept], kept


def _pixel_winners(
    mask_logits: Tensor, scores: Tensor, queries: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """For masks (n, H, W) logits (or those of ``queries`` (n,) among (Q, H, W)) of queries
    scored (n,): :func:`_winners` of their probabilities.

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
        block_winner, block_covered, block_area = _winners(scores, probs)
        winner[top : top + rows] = block_winner
        covered[top : top + rows] = block_covered
        own_area += block_area
    return winner, covered, own_area


def _winners(scores: Tensor, probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For queries scored (n,) with mask probabilities (n, H, W): the query each pixel goes to
    (H, W) (the largest score x probability; max(0) gives the first maximal index, as argmax
    does, and is faster on CPU), whether that query's own probability there is >= 0.5 (H, W),
    and each query's area of probability >= 0.5 (n,) int64."""
    winner = (scores.view(-1, 1, 1) * probs).max(0).indices
    covered = probs.gather(0, winner[None])[0] >= 0.5
    return winner, covered, (probs >= 0.5).sum((1, 2))


def _assign_pixels(cur_scores: Tensor, cur_masks: Tensor) -> tuple[Tensor, ...]:
    """Which kept query each pixel goes to, and the areas that decide which queries stay.

    cur_scores: (n,); cur_masks: (n, H, W) probabilities. Returns ``segment_query`` (H, W)
    (n where the winning query's own mask is < 0.5), and per query (n,): its own area
    (probability >= 0.5), the area it won, the area it keeps.
    """
    return _segment_areas(*_winners(cur_scores, cur_masks))


def _segment_areas(winner: Tensor, covered: Tensor, own_area: Tensor) -> tuple[Tensor, ...]:
    """``segment_query`` (H, W): the winner (H, W), or n where ``covered`` is false; then
    ``own_area`` and per query (n,) the area it won and the area it keeps."""
    num_kept = len(own_area)
    segment_query = torch.where(covered, winner, num_kept)
    won_area = _count(winner, num_kept)
    kept_area = _count(segment_query, num_kept + 1)[:num_kept]
    return segment_query, own_area, won_area, kept_area


def _count(values: Tensor, length: int) -> Tensor:
    """(length,) int64: how often each of 0 .. length - 1 occurs in ``values`` (all in range).

    ``torch.bincount`` on a GPU reads the largest value on the host; this reads nothing.
    """
    flat = values.flatten()
    counts = torch.zeros(length, dtype=torch.int64, device=values.device)
    ones = torch.ones((), dtype=torch.int64, device=values.device).expand(flat.shape)
    return counts.index_add_(0, flat, ones)


def _segment_ids(
    cur_scores: Tensor,
    cur_classes: Tensor,
    own_area: Tensor,
    won_area: Tensor,
    kept_area: Tensor,
    thing_ids: Sequence[int],
    overlap_threshold: float,
) -> tuple[Tensor, list[dict]]:
    """From the kept queries' areas: the segment id of each kept query and 0 for the dropped
    ones and the extra last index, ``lut`` (n + 1,) int32, and segments_info."""
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
    lut = torch.tensor(segment_of_query + [0], dtype=torch.int32, device=cur_scores.device)
    return lut, segments_info


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
    scores, labels, query_indices = _top_pairs(mask_cls, topk, thing_ids)
    masks = mask_pred[query_indices]
    binary = (masks > 0).float()
    scores = scores * _mask_scores(
        masks.sigmoid().flatten(1) * binary.flatten(1), binary.flatten(1)
    )
    order = scores.argsort(descending=True)
    return _instances(tuple(mask_pred.shape[-2:]), binary[order], scores[order], labels[order])


def _top_pairs(
    mask_cls: Tensor, topk: int, thing_ids: Sequence[int] | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The top ``topk`` (query, class) pairs by class probability, stuff classes dropped when
    ``thing_ids`` is given: their class probabilities, classes and queries, each (n,)."""
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
    return scores, labels, query_indices


def _mask_scores(inside_probs: Tensor, binary: Tensor) -> Tensor:
    """Mean probability inside each binary mask: inside_probs (n, N) probabilities zeroed
    outside the masks, binary (n, N) float 0/1 -> (n,)."""
    return inside_probs.sum(1) / (binary.sum(1) + 1e-6)


def _instances(
    image_size: tuple[int, int], masks: Tensor, scores: Tensor, classes: Tensor
) -> Instances:
    result = Instances(image_size)
    result.pred_masks = masks
    result.scores = scores
    result.pred_classes = classes
    result.pred_boxes = BitMasks(masks).get_bounding_boxes()
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
    scores, labels, query_indices = top_video_pairs(F.softmax(mask_cls, dim=-1)[:, :-1], topk)
    masks = video_masks_at_output_size(
        mask_pred[query_indices], padded_size, image_size, output_size
    )
    return {
        "image_size": tuple(output_size),
        "pred_scores": scores.tolist(),
        "pred_labels": labels.tolist(),
        "pred_masks": list((masks > 0).cpu()),
    }


def top_video_pairs(class_probs: Tensor, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``topk`` (query, class) pairs of largest probability, in decreasing order.

    class_probs: (Q, K) -> (scores (k,), labels (k,), query indices (k,)), k = min(topk, Q*K).
    """
    num_queries, num_classes = class_probs.shape
    # (Q, K) -> (Q*K,): index q * K + c is query q with class c
    scores, flat_indices = class_probs.flatten().topk(min(topk, num_queries * num_classes))
    labels = flat_indices % num_classes
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    return scores, labels, query_indices


def video_masks_at_output_size(
    mask_pred: Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:
    """(N, T, h, w) mask logits -> (N, T, *output_size) mask logits: upsampled (bilinear) to
    the padded input size, cropped to ``image_size``, resized to ``output_size``.

    Each (instance, frame) mask is resized as an image of its own: torch's CPU resize
    rounds differently when it vectorises over channels, so this way a frame's mask does not
    depend on how many frames or instances are resized with it (a clip's frames one at a time
    give the whole video's masks bit for bit).
    """
    num_masks, num_frames = mask_pred.shape[:2]
    # (N, T, h, w) -> (N*T, 1, h, w): one single-channel image per mask
    masks = F.interpolate(
        mask_pred.flatten(0, 1)[:, None], size=padded_size, mode="bilinear", align_corners=False
    )
    masks = masks[:, :, : image_size[0], : image_size[1]]
    if masks.shape[-2:] != tuple(output_size):
        masks = F.interpolate(masks, size=output_size, mode="bilinear", align_corners=False)
    # (N*T, 1, H, W) -> (N, T, H, W)
    return masks[:, 0].unflatten(0, (num_masks, num_frames))


def video_masks_rle(
    mask_pred: Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> list[list[dict]]:
    """(N, T, h, w) mask logits -> per instance, the COCO RLEs of its T masks at
    ``output_size``: the masks of :func:`video_masks_at_output_size` > 0, bit for bit.

    One frame is resized at a time: memory holds N masks at the padded size, not N*T.
    """
    rles: list[list[dict]] = [[] for _ in range(mask_pred.shape[0])]
    for t in range(mask_pred.shape[1]):
        masks = video_masks_at_output_size(
            mask_pred[:, t : t + 1], padded_size, image_size, output_size
        )
        for instance_rles, rle in zip(rles, encode_masks((masks[:, 0] > 0).cpu())):
            instance_rles.append(rle)
    return rles
