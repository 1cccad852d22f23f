"""Post-processing on hand-made tensors, without a model."""

import math

import pytest
import torch
from torch.nn import functional as F

from mask2former.modeling.postprocessing import (
    instance_inference,
    panoptic_inference,
    panoptic_queries,
    sem_seg_postprocess,
    semantic_inference,
    video_instance_inference,
)
from mask2former.modeling.postprocessing_low_memory import (
    FullSizeMaskLogits,
    instance_inference_low_memory,
    panoptic_inference_low_memory,
    semantic_inference_low_memory,
)

BIG = 20.0  # a logit whose sigmoid/softmax is 1 to float precision


def class_logits(rows: list[int], num_classes: int) -> torch.Tensor:
    """(Q, K+1) logits, query q confidently of class rows[q] (num_classes = no-object)."""
    logits = torch.full((len(rows), num_classes + 1), -BIG)
    for q, c in enumerate(rows):
        logits[q, c] = BIG
    return logits


def region_masks(*regions: tuple[slice, slice], size=(4, 4)) -> torch.Tensor:
    """(Q, H, W) mask logits: +BIG inside each query's region, -BIG outside."""
    masks = torch.full((len(regions), *size), -BIG)
    for q, (rows, cols) in enumerate(regions):
        masks[q, rows, cols] = BIG
    return masks


LEFT = (slice(None), slice(0, 2))
RIGHT = (slice(None), slice(2, 4))
ALL = (slice(None), slice(None))


def test_semantic_inference_matches_per_query_sum():
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(5, 4, generator=g), torch.randn(5, 3, 6, generator=g)
    expected = torch.zeros(3, 3, 6)
    for q in range(5):
        probs = [math.exp(v) for v in mask_cls[q].tolist()]
        for c in range(3):  # the no-object column (3) is dropped
            expected[c] += probs[c] / sum(probs) * torch.sigmoid(mask_pred[q])
    torch.testing.assert_close(semantic_inference(mask_cls, mask_pred), expected)


def test_semantic_inference_in_blocks_and_either_layout_is_the_einsum():
    """Large enough for several blocks of rows; queries innermost in memory or not."""
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(50, 8, generator=g), torch.randn(50, 300, 70, generator=g)
    expected = torch.einsum("qc,qhw->chw", F.softmax(mask_cls, -1)[:, :-1], mask_pred.sigmoid())
    queries_innermost = mask_pred.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    for masks in (mask_pred, queries_innermost):
        torch.testing.assert_close(semantic_inference(mask_cls, masks), expected)


def test_sem_seg_postprocess_crops_padding_before_resizing():
    result = torch.zeros(2, 6, 8)
    result[:, :4, :5] = torch.arange(20.0).view(4, 5)
    result[:, 4:, :] = 1000.0  # padding rows
    result[:, :, 5:] = 1000.0  # padding columns
    out = sem_seg_postprocess(result, (4, 5), 8, 10)
    assert out.shape == (2, 8, 10)
    assert out.max() <= 19.0
    expected = F.interpolate(result[None, :, :4, :5], size=(8, 10), mode="bilinear")[0]
    torch.testing.assert_close(out, expected)


def panoptic(mask_cls, mask_pred, thing_ids=(0,), object_threshold=0.5, overlap=0.5):
    return panoptic_inference(
        mask_cls,
        mask_pred,
        thing_ids=thing_ids,
        object_mask_threshold=object_threshold,
        overlap_threshold=overlap,
    )


def test_panoptic_thing_and_stuff_segments():
    seg, info = panoptic(class_logits([0, 1], 2), region_masks(LEFT, RIGHT))
    assert seg.dtype == torch.int32 and seg.shape == (4, 4)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info] == [
        (1, 0, True),
        (2, 1, False),
    ]
    assert (seg[:, :2] == 1).all() and (seg[:, 2:] == 2).all()
    assert all(0.99 < s["score"] <= 1.0 for s in info)


def test_panoptic_merges_stuff_of_one_class_but_not_things():
    top_left, bottom_left = (slice(0, 2), slice(0, 2)), (slice(2, 4), slice(0, 2))
    masks = region_masks(top_left, bottom_left, RIGHT)
    seg, info = panoptic(class_logits([1, 1, 0], 2), masks)
    assert [(s["id"], s["category_id"]) for s in info] == [(1, 1), (2, 0)]
    assert (seg[:, :2] == 1).all() and (seg[:, 2:] == 2).all()
    # The same two regions as things stay two instances.
    seg, info = panoptic(class_logits([0, 0, 1], 2), masks)
    assert [s["id"] for s in info] == [1, 2, 3]
    assert set(seg.unique().tolist()) == {1, 2, 3}


def test_panoptic_drops_no_object_and_low_scores():
    mask_cls = class_logits([2, 0], 2)  # query 0 is no-object
    mask_cls[1] = torch.tensor([0.0, 0.0, 0.0])  # query 1: score 1/3 < 0.5
    seg, info = panoptic(mask_cls, region_masks(ALL, ALL))
    assert info == [] and (seg == 0).all()


def test_panoptic_overlap_threshold():
    # Query 0 (score ~1) covers the image; query 1 (score 0.5 + eps) covers the right half
    # but wins only its last column, where query 0's mask is switched off.
    mask_cls = class_logits([0, 0], 2)
    mask_cls[1] = torch.tensor([1.0, -BIG, 1.0 - 1e-3])  # class 0 score just above 0.5
    masks = region_masks(ALL, RIGHT)
    masks[0, :, 3] = -BIG
    _, info = panoptic(mask_cls, masks, object_threshold=0.4, overlap=0.6)
    assert [s["id"] for s in info] == [1]  # query 1 keeps 4 of its 8 pixels: 0.5 < 0.6
    seg, info = panoptic(mask_cls, masks, object_threshold=0.4, overlap=0.4)
    assert [s["id"] for s in info] == [1, 2]
    assert (seg[:, 3] == 2).all() and (seg[:, :3] == 1).all()


def test_panoptic_ids_are_consistent_on_random_predictions():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        mask_cls, mask_pred = (
            torch.randn(10, 6, generator=g) * 3,
            torch.randn(10, 16, 16, generator=g) * 3,
        )
        seg, info = panoptic(
            mask_cls, mask_pred, thing_ids=(0, 1), object_threshold=0.2, overlap=0.3
        )
        ids = [s["id"] for s in info]
        assert len(ids) == len(set(ids))
        assert set(seg.unique().tolist()) - {0} == set(ids)
        for s in info:
            assert s["isthing"] == (s["category_id"] in (0, 1))
            assert 0 <= s["category_id"] < 5
        stuff = [s["category_id"] for s in info if not s["isthing"]]
        assert len(stuff) == len(set(stuff))


def test_instance_inference_scores_and_top_k():
    mask_cls = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]])  # Q=2, K=2
    mask_pred = torch.tensor([[[4.0, -1.0], [2.0, -3.0]], [[-2.0, 1.0], [-1.0, 0.5]]])
    result = instance_inference(mask_cls, mask_pred, topk=3)
    probs = F.softmax(mask_cls, -1)[:, :2]
    # mean sigmoid inside the binary (logit > 0) mask of each query
    inside = [
        torch.sigmoid(torch.tensor([4.0, 2.0])).mean(),
        torch.sigmoid(torch.tensor([1.0, 0.5])).mean(),
    ]
    # top-3 by class probability: (q1, c1), (q0, c0), (q0, c1); final order by score
    picked = sorted([(probs[q, c] * inside[q]).item(), q, c] for q, c in [(1, 1), (0, 0), (0, 1)])[
        ::-1
    ]
    assert len(result) == 3
    torch.testing.assert_close(result.scores, torch.tensor([s for s, _, _ in picked]))
    assert result.pred_classes.tolist() == [c for _, _, c in picked]
    for i, (_, q, _) in enumerate(picked):
        assert torch.equal(result.pred_masks[i], (mask_pred[q] > 0).float())
    assert result.image_size == (2, 2)
    assert torch.all(result.scores[:-1] >= result.scores[1:])


def test_instance_inference_boxes_and_thing_filter():
    mask_cls = class_logits([0, 1, 2], 3)
    mask_pred = region_masks((slice(1, 3), slice(0, 2)), RIGHT, ALL)
    result = instance_inference(mask_cls, mask_pred, topk=9, thing_ids=[0, 2])
    assert set(result.pred_classes.tolist()) <= {0, 2}
    assert len(result) == 6  # 3 queries x 2 thing classes
    first = result[0]
    assert first.pred_classes.item() in (0, 2)
    boxes = {tuple(b) for b in result.pred_boxes.tensor.tolist()}
    assert (0.0, 1.0, 2.0, 3.0) in boxes and (0.0, 0.0, 4.0, 4.0) in boxes


def test_instance_inference_top_k_larger_than_pairs():
    result = instance_inference(torch.randn(2, 3), torch.randn(2, 5, 5), topk=100)
    assert len(result) == 4


@pytest.mark.parametrize("num_queries", [0])
def test_empty_predictions(num_queries):
    mask_cls, mask_pred = torch.zeros(num_queries, 3), torch.zeros(num_queries, 4, 4)
    seg, info = panoptic(mask_cls, mask_pred)
    assert info == [] and seg.shape == (4, 4)
    assert len(instance_inference(mask_cls, mask_pred, topk=10)) == 0
    assert semantic_inference(mask_cls, mask_pred).shape == (2, 4, 4)


def per_query_panoptic_reference(mask_cls, mask_pred, thing_ids, object_thr, overlap_thr):
    """Panoptic inference written query by query, each with full-image masks (slow, plain).

    Returns (panoptic_seg, segments_info, queries dropped by the overlap threshold, stuff
    queries merged into an earlier segment of their class).
    """
    probs = F.softmax(mask_cls, dim=-1)
    scores, labels = probs.max(-1)
    no_object = mask_cls.shape[-1] - 1
    queries = [q for q in range(len(labels)) if labels[q] != no_object and scores[q] > object_thr]
    panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    if not queries:
        return panoptic_seg, [], 0, 0
    masks = mask_pred[queries].sigmoid()
    weighted = torch.stack([scores[q] * masks[i] for i, q in enumerate(queries)])
    winner = weighted.argmax(0)
    infos, stuff_ids, dropped, merged = [], {}, 0, 0
    for i, q in enumerate(queries):
        won, own = winner == i, masks[i] >= 0.5
        segment = won & own
        if not won.any() or not own.any() or not segment.any():
            continue
        if won.sum().item() / own.sum().item() < overlap_thr:
            dropped += 1
            continue
        category = int(labels[q])
        isthing = category in thing_ids
        if not isthing and category in stuff_ids:
            panoptic_seg[segment] = stuff_ids[category]
            merged += 1
            continue
        infos.append(
            {
                "id": len(infos) + 1,
                "isthing": isthing,
                "category_id": category,
                "score": scores[q].item(),
            }
        )
        if not isthing:
            stuff_ids[category] = len(infos)
        panoptic_seg[segment] = len(infos)
    return panoptic_seg, infos, dropped, merged


def test_panoptic_inference_matches_per_query_reference():
    """Random smooth masks, several thresholds: same map and infos as the plain loop."""
    num_classes, thing_ids = 5, {0, 1}  # classes 2-4 are stuff, so stuff merges happen
    seen_drops = seen_merges = 0
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        mask_cls = torch.randn(16, num_classes + 1, generator=generator) * 4
        coarse = torch.randn(1, 16, 6, 7, generator=generator) * 3
        mask_pred = F.interpolate(coarse, size=(30, 37), mode="bilinear", align_corners=False)[0]
        for object_thr in (0.0, 0.4, 0.8):
            for overlap_thr in (0.0, 0.5, 0.8, 1.0):
                seg, infos = panoptic_inference(
                    mask_cls,
                    mask_pred,
                    thing_ids=sorted(thing_ids),
                    object_mask_threshold=object_thr,
                    overlap_threshold=overlap_thr,
                )
                ref = per_query_panoptic_reference(
                    mask_cls, mask_pred, thing_ids, object_thr, overlap_thr
                )
                ref_seg, ref_infos, dropped, merged = ref
                seen_drops, seen_merges = seen_drops + dropped, seen_merges + merged
                assert seg.dtype == torch.int32
                assert torch.equal(seg, ref_seg)
                assert infos == ref_infos
                # only the kept queries' masks, as the meta-architecture passes them
                kept = panoptic_queries(mask_cls, object_thr)
                assert 0 < len(kept) < len(mask_cls) or object_thr == 0.0
                seg_kept, infos_kept = panoptic_inference(
                    mask_cls,
                    mask_pred[kept],
                    thing_ids=sorted(thing_ids),
                    object_mask_threshold=object_thr,
                    overlap_threshold=overlap_thr,
                    kept=kept,
                )
                assert torch.equal(seg_kept, seg) and infos_kept == infos
    # the comparison covered both the overlap-threshold drop and the stuff merge
    assert seen_drops > 0 and seen_merges > 0


def test_sem_seg_postprocess_same_size_equals_bilinear_identity():
    """Skipping the resize when the crop already has the output size changes nothing."""
    result = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(0))
    out = sem_seg_postprocess(result, (10, 13), 10, 13)
    expected = F.interpolate(
        result[None, :, :10, :13], size=(10, 13), mode="bilinear", align_corners=False
    )[0]
    assert torch.equal(out, expected)


# --------------------------------------------------------------------------- video
def published_video_inference(mask_cls, mask_pred, padded_size, image_size, output_size, topk):
    """The published order (VideoMaskFormer.forward / inference_video): every query's masks
    upsampled to the padded size, top-k pairs chosen, cropped, resized, thresholded."""
    num_classes = mask_cls.shape[-1] - 1
    upsampled = F.interpolate(mask_pred, size=padded_size, mode="bilinear", align_corners=False)
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes).repeat(len(mask_cls))
    top_scores, top = scores.flatten().topk(topk, sorted=False)
    masks = upsampled[top // num_classes][:, :, : image_size[0], : image_size[1]]
    masks = F.interpolate(masks, size=output_size, mode="bilinear", align_corners=False)
    return top_scores, labels[top], masks > 0


def test_video_instance_inference_is_the_published_one_in_less_memory():
    g = torch.Generator().manual_seed(0)
    mask_cls = torch.randn(7, 5, generator=g) * 3  # 7 queries, 4 classes
    mask_pred = torch.randn(7, 3, 6, 8, generator=g) * 4  # 3 frames at 1/4 of 24 x 32
    out = video_instance_inference(
        mask_cls, mask_pred, padded_size=(24, 32), image_size=(21, 30), output_size=(42, 61)
    )
    assert set(out) == {"image_size", "pred_scores", "pred_labels", "pred_masks"}
    assert out["image_size"] == (42, 61) and len(out["pred_masks"]) == 10
    assert out["pred_scores"] == sorted(out["pred_scores"], reverse=True)
    assert all(m.shape == (3, 42, 61) and m.dtype == torch.bool for m in out["pred_masks"])
    scores, labels, masks = published_video_inference(
        mask_cls, mask_pred, (24, 32), (21, 30), (42, 61), 10
    )
    published = sorted(zip(scores.tolist(), labels.tolist(), masks), key=lambda r: -r[0])
    for score, label, mask, (p_score, p_label, p_mask) in zip(
        out["pred_scores"], out["pred_labels"], out["pred_masks"], published
    ):
        assert (score, label) == (p_score, p_label)
        assert torch.equal(mask, p_mask)


def test_video_instance_inference_keeps_at_most_every_pair():
    """Fewer (query, class) pairs than top-k: all of them, each query's class probabilities."""
    mask_cls = class_logits([0, 1], num_classes=2)  # query 0 is class 0, query 1 class 1
    mask_pred = torch.full((2, 2, 4, 4), -BIG)
    mask_pred[0, 1] = BIG  # query 0: frame 1 only
    out = video_instance_inference(
        mask_cls, mask_pred, padded_size=(4, 4), image_size=(4, 4), output_size=(4, 4)
    )
    assert len(out["pred_scores"]) == 4
    assert out["pred_scores"][:2] == pytest.approx([1.0, 1.0])
    assert sorted(out["pred_labels"][:2]) == [0, 1]
    first = out["pred_labels"].index(0)
    assert not out["pred_masks"][first][0].any() and out["pred_masks"][first][1].all()


# Low-memory inference: the same outputs from the full-size logits a band at a time.


def smooth_mask_logits(num_queries: int, padded: tuple[int, int], seed: int) -> torch.Tensor:
    """(Q, H_pad, W_pad) logits as the model gives them: a 1/4-resolution map resized."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_queries, padded[0] // 4, padded[1] // 4, generator=generator)
    return F.interpolate(coarse * 4, size=padded, mode="bilinear", align_corners=False)[0]


# (queries, padded size, image size inside the padding, output size): upsampled both ways,
# only the height or only the width resized, not resized at all, a narrow last band.
LOW_MEMORY_CASES = [
    (16, (64, 96), (64, 96), (200, 300)),
    (6, (64, 64), (43, 64), (160, 640)),
    (6, (64, 96), (48, 96), (64, 400)),
    (5, (64, 128), (64, 128), (96, 128)),
    (6, (64, 64), (64, 43), (300, 208)),
    (8, (32, 160), (32, 160), (32, 160)),
]


@pytest.mark.parametrize(
    "num_queries,padded,image_size,size", LOW_MEMORY_CASES + [(7, (64, 64), (63, 41), (301, 203))]
)
def test_full_size_mask_logits_equal_the_one_call_resize(num_queries, padded, image_size, size):
    mask_pred = smooth_mask_logits(num_queries, padded, seed=0)
    # small bands: several per image, the last one wider than the others
    masks = FullSizeMaskLogits(mask_pred, image_size, *size, band_elements=2000)
    assert FullSizeMaskLogits.supports(num_queries, *size)
    full = sem_seg_postprocess(mask_pred, image_size, *size)
    keep = torch.arange(num_queries) % 2 == 0
    bands = list(masks.column_bands(keep))
    widths = [columns.stop - columns.start for columns, _ in bands]
    assert min(widths) >= 128 and all(w % 32 == 0 for w in widths[:-1])
    assert bands[0][0].start == 0 and bands[-1][0].stop == size[1]
    for columns, logits in masks.column_bands(keep):  # one buffer: compare band by band
        assert torch.equal(logits, full[keep][:, :, columns])
    for q in (0, num_queries - 1):
        assert torch.equal(masks.query(q), full[q])
    assert torch.equal(mask_pred, smooth_mask_logits(num_queries, padded, seed=0)), "untouched"


def test_full_size_mask_logits_refuse_narrow_outputs_and_one_thread_rgb():
    assert not FullSizeMaskLogits.supports(16, 1000, 127)  # ATen's channels-last kernel
    assert FullSizeMaskLogits.supports(16, 10, 128)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert not FullSizeMaskLogits.supports(3, 1000, 1000)
        assert FullSizeMaskLogits.supports(4, 1000, 1000)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("num_queries,padded,image_size,size", LOW_MEMORY_CASES)
def test_low_memory_inference_equals_the_straightforward_one(num_queries, padded, image_size, size):
    """Bit for bit: semantic scores, panoptic map and segments, instance masks, scores,
    classes and boxes; for output sizes whose H x W is a multiple of 32, the one-call
    sigmoid is vectorised everywhere (see ``_sigmoid_``)."""
    assert size[0] * size[1] % 32 == 0
    generator = torch.Generator().manual_seed(1)
    mask_cls = torch.randn(num_queries, 5, generator=generator) * 6  # 4 classes + no-object
    mask_pred = smooth_mask_logits(num_queries, padded, seed=2)
    masks = FullSizeMaskLogits(mask_pred, image_size, *size, band_elements=2000)
    full = sem_seg_postprocess(mask_pred, image_size, *size)

    semantic = semantic_inference_low_memory(mask_cls, masks)
    assert torch.equal(semantic, semantic_inference(mask_cls, full))

    for object_threshold, overlap in ((0.0, 0.0), (0.2, 0.3)):
        thresholds = {"object_mask_threshold": object_threshold, "overlap_threshold": overlap}
        seg, infos = panoptic_inference_low_memory(mask_cls, masks, thing_ids=(0, 1), **thresholds)
        want_seg, want_infos = panoptic_inference(mask_cls, full, thing_ids=(0, 1), **thresholds)
        assert len(want_infos) >= 2 or object_threshold > 0, "segments are compared"
        assert torch.equal(seg, want_seg) and infos == want_infos

    for thing_ids in (None, (0, 1)):
        got = instance_inference_low_memory(mask_cls, masks, topk=7, thing_ids=thing_ids)
        want = instance_inference(mask_cls, full, topk=7, thing_ids=thing_ids)
        assert got.pred_masks.dtype == torch.bool and len(got) == len(want) > 0
        assert torch.equal(got.pred_masks, want.pred_masks.bool())
        assert torch.equal(got.scores, want.scores)
        assert torch.equal(got.pred_classes, want.pred_classes)
        assert torch.equal(got.pred_boxes.tensor, want.pred_boxes.tensor)
        assert got.image_size == want.image_size == size


def test_low_memory_inference_with_nothing_kept_or_no_pair():
    mask_pred = smooth_mask_logits(4, (32, 64), seed=3)
    masks = FullSizeMaskLogits(mask_pred, (32, 64), 64, 128)
    no_object = class_logits([3, 3, 3, 3], 3)  # every query's best class is no-object
    seg, infos = panoptic_inference_low_memory(
        no_object, masks, thing_ids=(0,), object_mask_threshold=0.5, overlap_threshold=0.5
    )
    assert infos == [] and seg.shape == (64, 128) and not seg.any()
    result = instance_inference_low_memory(
        class_logits([0, 1, 2, 0], 3), masks, topk=4, thing_ids=()
    )
    assert len(result) == 0 and result.pred_masks.shape == (0, 64, 128)


def test_low_memory_semantic_scores_do_not_depend_on_the_thread_count():
    """ATen splits the straightforward path's one sigmoid call among threads, and computes
    each share's last elements with scalar code: at 200x300 with 6 queries and 16 threads the
    shares are not whole vectors (AVX-512: its scores then change in the last bit). The
    low-memory path gives the one-thread scores whatever the thread count."""
    generator = torch.Generator().manual_seed(0)
    mask_cls = torch.randn(6, 5, generator=generator) * 3
    mask_pred = smooth_mask_logits(6, (64, 96), seed=0)
    threads, results = torch.get_num_threads(), {}
    try:
        for num_threads in (1, 16):
            torch.set_num_threads(num_threads)
            full = sem_seg_postprocess(mask_pred, (64, 96), 200, 300)
            masks = FullSizeMaskLogits(mask_pred, (64, 96), 200, 300)
            results[num_threads] = (
                semantic_inference(mask_cls, full),
                semantic_inference_low_memory(mask_cls, masks),
            )
    finally:
        torch.set_num_threads(threads)
    (one_thread, low_one), (sixteen, low_sixteen) = results[1], results[16]
    torch.testing.assert_close(one_thread, sixteen, rtol=0, atol=1e-6)
    assert torch.equal(low_one, one_thread) and torch.equal(low_sixteen, one_thread)
