"""Low-memory post-processing: the outputs of ``postprocessing`` at an image's original size,
without holding every query's full-size mask logits.

:class:`FullSizeMaskLogits` computes the full-size logits a band of columns (or one query) at
a time, bit for bit those of ``sem_seg_postprocess``; ``semantic_inference_low_memory``,
``panoptic_inference_low_memory`` and ``instance_inference_low_memory`` compute from them the
outputs of ``semantic_inference``, ``panoptic_inference`` and ``instance_inference`` (instance
masks as bool), sharing their steps.
"""

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from mask2former.structures import Instances

from .postprocessing import (  # the steps shared with the straightforward functions
    _assign_pixels,
    _class_weighted,
    _confident_queries,
    _instances,
    _segment_ids,
    _top_pairs,
)

#: Narrowest band of output columns: ATen's CPU bilinear kernel rounds differently (its
#: channels-last kernel) for outputs whose height + width is at most 128.
_MIN_BAND_WIDTH = 128
#: ATen's CPU elementwise kernels give each thread at least this many elements
#: (``at::internal::GRAIN_SIZE``), and split a call of this many x threads evenly.
_ONE_THREAD_SLICE = 1 << 15


class FullSizeMaskLogits:
    """One image's mask logits at its original size, computed a few at a time.

    ``column_bands(queries)`` yields bands of output columns for some queries and ``query(q)``
    one query's logits: bit for bit the values ``sem_seg_postprocess(mask_pred, image_size,
    height, width)`` holds. Bilinear resizing is separable: ATen computes each output as the
    vertical interpolation of horizontally interpolated input rows, so the width is resized
    once for all queries ((Q, h, width), small) and the height band by band.

    ATen's CPU kernel has two roundings: its generic kernel, alike for any number of
    channels, and a channels-last kernel it takes for outputs whose height + width is at
    most 128, and for 3 channels on one thread. :meth:`supports` says when the one-call
    resize takes the generic kernel; the bands then always do (they are at least 128
    columns wide and never have 3 channels).

    mask_pred: (Q, H_pad, W_pad) logits; image_size: (h, w) of the image inside the padding.
    """

    def __init__(
        self,
        mask_pred: Tensor,
        image_size: tuple[int, int],
        height: int,
        width: int,
        band_elements: int = 1 << 23,
    ):
        self.mask_pred = mask_pred
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.size = (height, width)
        self.num_queries = mask_pred.shape[0]
        self.band_elements = band_elements
        cropped = mask_pred[:, : self.image_size[0], : self.image_size[1]]
        # (Q, h, width): each query's rows at the output width
        self._rows = _resize(cropped, (self.image_size[0], width))

    @staticmethod
    def supports(num_queries: int, height: int, width: int) -> bool:
        """Whether the bands equal the one-call resize of ``num_queries`` masks to this size."""
        one_thread_rgb = num_queries == 3 and torch.get_num_threads() == 1
        return width >= _MIN_BAND_WIDTH and not one_thread_rgb

    def query(self, q: int) -> Tensor:
        """(H, W) logits of query ``q``, a new tensor (the one-channel resize is exact too)."""
        cropped = self.mask_pred[q : q + 1, : self.image_size[0], : self.image_size[1]]
        logits = _resize(cropped, self.size)
        return (logits.clone() if logits is cropped else logits)[0]

    def column_bands(self, queries: Tensor | None = None) -> Iterator[tuple[slice, Tensor]]:
        """``(columns, logits)`` per band of output columns, left to right: logits (n, H, w) of
        ``queries`` (a (Q,) bool mask or indices; all by default). The bands share one buffer:
        each is overwritten by the next (no allocation per band)."""
        rows = self._rows if queries is None else self._rows[queries]
        num_rows, height = rows.shape[0], self.size[0]
        if num_rows == 3:
            rows = torch.cat([rows, rows[:1]])  # a 4th, dropped: never ATen's 3-channel kernel
        edges = self._band_edges(num_rows)
        widest = max((stop - start for start, stop in edges), default=0)
        buffer = rows.new_empty(rows.shape[0] * height * widest)
        for start, stop in edges:
            band = buffer[: rows.shape[0] * height * (stop - start)].view(-1, height, stop - start)
            if height == rows.shape[1]:
                band.copy_(rows[:, :, start:stop])
            else:
                torch.ops.aten.upsample_bilinear2d.out(
                    rows[None, :, :, start:stop], [height, stop - start], False, out=band[None]
                )
            yield slice(start, stop), band[:num_rows]

    def _band_edges(self, num_queries: int) -> list[tuple[int, int]]:
        """Bands of at least ``band_elements`` (for a large image), at least 128 wide, a multiple
        of 32 wide but the last (so that only the image's last pixels end a vector, see
        :func:`_sigmoid_`)."""
        height, width = self.size
        band_width = -(-self.band_elements // max(1, num_queries * height * 32)) * 32
        band_width = max(band_width, _MIN_BAND_WIDTH)
        starts = list(range(0, width, band_width))
        if len(starts) > 1 and width - starts[-1] < _MIN_BAND_WIDTH:
            starts.pop()  # the last band takes the narrow remainder
        return list(zip(starts, starts[1:] + [width]))


def _resize(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (n, h, w) to (n, *size); ``masks`` itself when already that size."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]


def _sigmoid_(logits: Tensor) -> Tensor:
    """``logits.sigmoid_()`` as ATen computes it on one thread, whatever the thread count.

    On the CPU ATen computes an elementwise op on vectors, and the few elements at the end of
    each call (of each thread's share of a call) with scalar code whose sigmoid can differ
    in the last bit. Here every thread's share is 2**15 elements (calls of 2**15 x threads
    elements, then of 2**15 for the rest), so every element but the tensor's last (numel mod
    32) goes through the vector code: as in the straightforward path's one call over all
    queries on one thread, and on several when their shares are whole vectors (e.g.
    6000x4000 on 2 or 16 threads; for other sizes that path's own result changes in the last
    bit with the number of threads).
    """
    if logits.device.type != "cpu":
        return logits.sigmoid_()
    flat = logits.view(-1)
    step = _ONE_THREAD_SLICE * torch.get_num_threads()
    whole = flat.numel() // step * step
    for piece in [*flat[:whole].split(step), *flat[whole:].split(_ONE_THREAD_SLICE)]:
        piece.sigmoid_()
    return logits


def _row_sum(row: Tensor, batch_rows: int) -> Tensor:
    """``row.sum()`` (row: (N,)) rounded as the row sums of a (batch_rows, N) batch are: ATen
    sums each row of a batch on one thread but splits a lone row across threads."""
    return row.expand(2 if batch_rows > 1 else 1, -1).sum(1)[0]


def semantic_inference_low_memory(mask_cls: Tensor, masks: FullSizeMaskLogits) -> Tensor:
    """``semantic_inference`` of the full-size logits, one band of columns at a time (and
    a few rows at a time within it: small temporaries)."""
    sem_seg = mask_cls.new_empty((mask_cls.shape[-1] - 1, *masks.size))
    for columns, logits in masks.column_bands():
        probs = _sigmoid_(logits)
        for rows in _row_slices(masks.size[0], probs.shape[0] * probs.shape[2]):
            sem_seg[:, rows, columns] = _class_weighted(mask_cls, probs[:, rows])
    return sem_seg


def panoptic_inference_low_memory(
    mask_cls: Tensor,
    masks: FullSizeMaskLogits,
    *,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[Tensor, list[dict]]:
    """``panoptic_inference`` of the full-size logits, one band of columns at a time."""
    cur_scores, cur_classes, kept = _confident_queries(mask_cls, object_mask_threshold)
    num_kept = cur_scores.shape[0]
    if num_kept == 0:
        return torch.zeros(masks.size, dtype=torch.int32, device=mask_cls.device), []
    # the kept query of each pixel (num_kept: none), in a byte where it fits
    dtype = torch.uint8 if num_kept < 255 else torch.int32
    segment_query = torch.empty(masks.size, dtype=dtype, device=mask_cls.device)
    areas = [torch.zeros(num_kept, dtype=torch.long, device=mask_cls.device) for _ in range(3)]
    for columns, logits in masks.column_bands(kept):
        probs = _sigmoid_(logits)
        # a few rows at a time: small temporaries (every step is per pixel)
        for rows in _row_slices(masks.size[0], probs.shape[0] * probs.shape[2]):
            block_query, *block_areas = _assign_pixels(cur_scores, probs[:, rows])
            segment_query[rows, columns] = block_query
            for total, block_area in zip(areas, block_areas):
                total += block_area
    lut, segments_info = _segment_ids(cur_scores, cur_classes, *areas, thing_ids, overlap_threshold)
    panoptic_seg = torch.empty(masks.size, dtype=torch.int32, device=mask_cls.device)
    for rows in _row_slices(*masks.size):
        panoptic_seg[rows] = lut[segment_query[rows].long()]
    return panoptic_seg, segments_info


def _row_slices(height: int, row_elements: int, elements: int = 1 << 20) -> list[slice]:
    """Slices of ``height`` rows, each about ``elements`` / ``row_elements`` rows (>= 1)."""
    step = max(1, elements // max(1, row_elements))
    return [slice(top, min(top + step, height)) for top in range(0, height, step)]


def instance_inference_low_memory(
    mask_cls: Tensor,
    masks: FullSizeMaskLogits,
    *,
    topk: int,
    thing_ids: Sequence[int] | None = None,
) -> Instances:
    """``instance_inference`` of the full-size logits, with ``pred_masks`` (n, H, W) bool.

    Each query's mask score comes from its full-size logits, computed once; the binary masks
    are written band by band into the result, sorted by score. A query's probabilities are
    computed on their own (:func:`_sigmoid_`): when H x W is not a multiple of 32, its last
    (H x W mod 32) pixels may differ in the last bit from the straightforward path's, which
    computes all pairs in one call; the mask score's sum almost always absorbs that.
    """
    scores, labels, query_indices = _top_pairs(mask_cls, topk, thing_ids)
    queries = query_indices.unique()
    mask_scores = mask_cls.new_zeros(masks.num_queries)
    for q in queries.tolist():
        mask_scores[q] = _full_size_mask_score(masks.query(q), len(query_indices))
    scores = scores * mask_scores[query_indices]
    order = scores.argsort(descending=True)
    # row i of the result is the binary mask of query queries[row_source[i]]
    row_source = torch.searchsorted(queries, query_indices[order])
    binary = torch.empty((len(order), *masks.size), dtype=torch.bool, device=mask_cls.device)
    if len(order):
        for columns, logits in masks.column_bands(queries):
            for rows in _row_slices(masks.size[0], logits.shape[0] * logits.shape[2]):
                binary[:, rows, columns] = (logits[:, rows] > 0)[row_source]
    return _instances(masks.size, binary, scores[order], labels[order])


def _full_size_mask_score(logits: Tensor, num_pairs: int) -> Tensor:
    """The mask score (``postprocessing._mask_scores``) of one query's (H, W) logits, rounded
    as over ``num_pairs`` rows; ``logits`` is overwritten."""
    binary = (logits > 0).float().view(-1)
    inside_probs = _sigmoid_(logits).view(-1) * binary
    inside = _row_sum(inside_probs, num_pairs)
    del inside_probs
    return inside / (_row_sum(binary, num_pairs) + 1e-6)
