"""Sliding-window inference for large images: tile geometry and merging of per-tile outputs.

An image (at the network input size, after the test-time resize) is cut into tiles of
``tile_size`` pixels that overlap their neighbours by ``overlap`` pixels (the last tile of a
row or column is moved back to end at the border, as in mmsegmentation's slide inference).
Each tile is run through the model on its own, its outputs are computed at the tile's
footprint in the output size ("height" x "width"), and the tiles' outputs are merged:

- ``"sem_seg"``: the per-pixel mean, over the tiles covering the pixel, of the tiles' scores
  (Mask2Former's class scores before argmax; a per-pixel model's logits). See
  :class:`ScoreAverager`.
- ``"panoptic_seg"``: each output pixel takes its label from the one tile that owns it (the
  overlap between two neighbours is split at its middle), and segments of different tiles
  are joined: a tile's thing segment joins an earlier tiles' segment of its class when their
  masks have an IoU of at least :data:`MATCH_IOU` on the earlier tiles' side of the
  overlap's middle (the pixels they label), and all segments of one stuff class are joined
  (whole-image inference also gives one segment per stuff class). See
  :class:`PanopticStitcher`.

When one tile covers the image both are exactly the whole-image outputs. Otherwise they
differ from them as follows: a pixel's semantic scores are a mean over tiles that each saw
only part of the image; a panoptic pixel's label comes from one tile's view, so a thing that
no tile sees whole is merged only through its overlaps (with ``overlap`` 0 a thing crossing a
tile border stays two segments); segments are found per tile (``OBJECT_MASK_THRESHOLD`` /
``OVERLAP_THRESHOLD`` apply to each tile's masks), and a joined segment's score is the
highest of its pieces'. When the output size differs from the input size, each tile's
outputs are resized to its rounded footprint rather than cut from one resized image, which
moves them by at most half an output pixel, and bilinear resizing near a tile's border sees
only that tile.

Memory: besides the input image, the full-size buffers are the score sum (C, H, W) float
(which becomes the returned ``"sem_seg"``), a pixel count (H, W) float, and for panoptic
outputs a label canvas and the returned map (H, W) int32 each, H x W being the output size;
everything else (network activations, per-query masks, per-tile post-processing) is one
tile's, bounded by the tile size (times the output / input scale squared for the masks).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import torch
from torch import Tensor

__all__ = [
    "MATCH_IOU",
    "PanopticStitcher",
    "ScoreAverager",
    "SlidingWindow",
    "Tile",
    "build_sliding_window",
    "sliding_window_inference",
    "tile_intervals",
]

#: Two thing segments of one class from different tiles are one segment when the IoU of their
#: masks, where both tiles see the image, is at least this.
MATCH_IOU = 0.5

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open


def tile_intervals(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open intervals ``[start, end)`` of the tiles along an axis of ``length`` pixels.

    Tiles start every ``tile - overlap`` pixels; the last one is moved back to end at
    ``length``, so every tile has ``tile`` pixels, except the single tile ``[0, length)`` of
    an axis no longer than a tile. Consecutive tiles overlap by ``overlap`` pixels or more.
    """
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    num_tiles = -(-(length - tile) // stride) + 1  # ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(num_tiles)]
    return [(start, start + tile) for start in starts]


def _scale(value: int, src: int, dst: int) -> int:
    """``value * dst / src`` rounded half up, in integers (0 and ``src`` map exactly)."""
    return (2 * value * dst + src) // (2 * src)


def _axis_boxes(
    length: int, out_length: int, tile: int, overlap: int
) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """Per tile along one axis: (input interval, output footprint, owned output interval)."""
    inputs = tile_intervals(length, tile, overlap)
    outputs = [(_scale(a, length, out_length), _scale(b, length, out_length)) for a, b in inputs]
    # the overlap of two neighbours' footprints is split at its middle
    cuts = [(outputs[i + 1][0] + outputs[i][1]) // 2 for i in range(len(outputs) - 1)]
    bounds = [0, *cuts, out_length]
    return [(inputs[i], outputs[i], (bounds[i], bounds[i + 1])) for i in range(len(inputs))]


@dataclass(frozen=True)
class Tile:
    """One tile: the part of the network input it reads, the part of the output its outputs
    cover (``output_box``), and the part of that whose panoptic labels it gives."""

    input_box: Box
    output_box: Box
    owned_box: Box


@dataclass(frozen=True)
class SlidingWindow:
    """Tiles of ``tile_size`` (h, w) input pixels overlapping by ``overlap`` (h, w) pixels."""

    tile_size: tuple[int, int]
    overlap: tuple[int, int]

    def __post_init__(self) -> None:
        tile, overlap = tuple(self.tile_size), tuple(self.overlap)
        if len(tile) != 2 or not all(isinstance(t, int) and t > 0 for t in tile):
            raise ValueError(
                "TEST.SLIDING_WINDOW.TILE_SIZE must be two positive integers (height, width), "
                f"got {self.tile_size!r}"
            )
        if len(overlap) != 2 or not all(
            isinstance(o, int) and 0 <= o < t for o, t in zip(overlap, tile)
        ):
            raise ValueError(
                "TEST.SLIDING_WINDOW.OVERLAP must be two integers (height, width), each >= 0 "
                f"and smaller than TILE_SIZE {tile}, got {self.overlap!r}"
            )
        object.__setattr__(self, "tile_size", tile)
        object.__setattr__(self, "overlap", overlap)

    def tiles(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> list[Tile]:
        """The tiles of an input of ``input_size`` (h, w) whose outputs have ``output_size``,
        row by row. Their input boxes cover the input and their footprints the output."""
        rows = _axis_boxes(input_size[0], output_size[0], self.tile_size[0], self.overlap[0])
        cols = _axis_boxes(input_size[1], output_size[1], self.tile_size[1], self.overlap[1])
        return [
            Tile((*r_in, *c_in), (*r_out, *c_out), (*r_own, *c_own))
            for (r_in, r_out, r_own), (c_in, c_out, c_own) in product(rows, cols)
        ]


def build_sliding_window(cfg) -> SlidingWindow | None:
    """``SlidingWindow`` of ``cfg.TEST.SLIDING_WINDOW``, or None when it is not enabled."""
    sliding = cfg.TEST.SLIDING_WINDOW
    enabled, tile_size, overlap = sliding.ENABLED, sliding.TILE_SIZE, sliding.OVERLAP
    return SlidingWindow(tuple(tile_size), tuple(overlap)) if enabled else None


class ScoreAverager:
    """Per-pixel mean of per-tile scores (C, h, w) over the tiles covering each pixel.

    ``count`` (H, W) holds how many tiles cover each pixel.
    """

    def __init__(self, output_size: tuple[int, int]):
        self.output_size = tuple(output_size)
        self.sum: Tensor | None = None
        self.count: Tensor | None = None

    def add(self, box: Box, scores: Tensor) -> None:
        """Add ``scores`` (C, y1 - y0, x1 - x0) at ``box`` (y0, y1, x0, x1)."""
        y0, y1, x0, x1 = box
        if scores.shape[-2:] != (y1 - y0, x1 - x0):
            raise ValueError(f"scores of shape {tuple(scores.shape)} do not fit the box {box}")
        if self.sum is None:
            self.sum = scores.new_zeros((scores.shape[0], *self.output_size))
            self.count = scores.new_zeros(self.output_size)
        self.sum[:, y0:y1, x0:x1] += scores
        self.count[y0:y1, x0:x1] += 1

    def average(self) -> Tensor:
        """(C, H, W) mean scores; the sum buffer is divided in place and returned."""
        if self.sum is None or bool((self.count == 0).any()):
            raise RuntimeError("the tiles added do not cover every output pixel")
        return self.sum.div_(self.count)


class PanopticStitcher:
    """One panoptic segmentation (H, W) from the tiles' segmentations, added row by row.

    Every segment of every tile is a *piece*, numbered from 1 in the order added. A canvas
    (H, W) int32 holds for each output pixel the piece its owner tile labels it with (0:
    void, -1: no owner added yet). When a tile is added, its pieces are compared with the
    canvas where its footprint has owners already: a thing piece joins a group of pieces
    already joined (one object, possibly labelled by several tiles there) of the same class
    when their masks there have an IoU >= ``match_iou``. In :meth:`result` all pieces
    of one stuff class are joined too, and each group of joined pieces that labels some
    pixel becomes a segment, numbered in the order of its first piece.
    """

    def __init__(self, output_size: tuple[int, int], *, match_iou: float = MATCH_IOU):
        self.canvas: Tensor | None = None
        self.output_size = tuple(output_size)
        self.match_iou = match_iou
        self.infos: list[dict] = [{}]  # per piece; piece 0 is void
        self.parent: list[int] = [0]  # union-find forest over pieces

    def add(self, tile: Tile, panoptic_seg: Tensor, segments_info: Sequence[dict]) -> None:
        """Add a tile's ``panoptic_seg`` (h, w) int ids (0: void) over ``tile.output_box``
        and its ``segments_info`` (dicts with "id", "category_id", "isthing", "score")."""
        y0, y1, x0, x1 = tile.output_box
        if panoptic_seg.shape != (y1 - y0, x1 - x0):
            raise ValueError(
                f"panoptic_seg of shape {tuple(panoptic_seg.shape)} does not fit the box "
                f"{tile.output_box}"
            )
        if self.canvas is None:
            self.canvas = torch.full(
                self.output_size, -1, dtype=torch.int32, device=panoptic_seg.device
            )
        max_id = max([0] + [info["id"] for info in segments_info])
        local_to_piece = torch.zeros(max_id + 1, dtype=torch.int32, device=panoptic_seg.device)
        for info in segments_info:
            local_to_piece[info["id"]] = len(self.infos)
            self.parent.append(len(self.infos))
            self.infos.append(dict(info))
        pieces = local_to_piece[panoptic_seg.long()]
        self._join_matching(pieces, self.canvas[y0:y1, x0:x1])
        oy0, oy1, ox0, ox1 = tile.owned_box
        owned = pieces[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        self.canvas[oy0:oy1, ox0:ox1] = owned

    def _join_matching(self, pieces: Tensor, canvas: Tensor) -> None:
        """Join the new ``pieces`` (h, w) to the groups of the canvas's pieces (h, w) they
        match (same thing class, IoU >= ``match_iou``)."""
        seen = canvas >= 0
        num = len(self.infos)
        # the canvas's pieces as their groups: an object seen by several tiles already is one
        roots = torch.tensor([self._find(p) for p in range(num)], device=canvas.device)
        new, old = pieces[seen].long(), roots[canvas[seen]]
        # (new piece, old group) pairs as one index: intersections by pair, areas by piece
        pairs, intersections = torch.unique(new * num + old, return_counts=True)
        new_area = torch.bincount(new, minlength=num).tolist()
        old_area = torch.bincount(old, minlength=num).tolist()
        for pair, inter in zip(pairs.tolist(), intersections.tolist()):
            a, b = divmod(pair, num)
            info_a, info_b = self.infos[a], self.infos[b]
            if a == 0 or b == 0 or not (info_a["isthing"] and info_b["isthing"]):
                continue
            if info_a["category_id"] != info_b["category_id"]:
                continue
            if inter / (new_area[a] + old_area[b] - inter) >= self.match_iou:
                self._union(a, b)

    def _find(self, piece: int) -> int:
        while self.parent[piece] != piece:
            self.parent[piece] = self.parent[self.parent[piece]]
            piece = self.parent[piece]
        return piece

    def _union(self, a: int, b: int) -> None:
        root_a, root_b = self._find(a), self._find(b)
        self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def result(self) -> tuple[Tensor, list[dict]]:
        """``(panoptic_seg (H, W) int32, segments_info)``, ids counting from 1."""
        if self.canvas is None or bool((self.canvas < 0).any()):
            raise RuntimeError("the tiles added do not own every output pixel")
        first_of_stuff: dict[int, int] = {}
        for piece, info in enumerate(self.infos[1:], start=1):
            if not info["isthing"]:
                self._union(piece, first_of_stuff.setdefault(info["category_id"], piece))
        num = len(self.infos)
        roots = [self._find(piece) for piece in range(num)]
        present = torch.bincount(self.canvas.flatten(), minlength=num).tolist()
        labelled = {roots[piece] for piece in range(1, num) if present[piece]}
        segments: dict[int, dict] = {}  # root piece -> segment info
        for piece in range(1, num):
            root, info = roots[piece], self.infos[piece]
            if root in segments:
                segments[root]["score"] = max(segments[root]["score"], info["score"])
            elif root in labelled:
                segments[root] = {
                    "id": len(segments) + 1,
                    "isthing": info["isthing"],
                    "category_id": info["category_id"],
                    "score": info["score"],
                }
        lut = [segments[root]["id"] if root in segments else 0 for root in roots]
        lut_tensor = torch.tensor(lut, dtype=torch.int32, device=self.canvas.device)
        return lut_tensor[self.canvas], list(segments.values())


def sliding_window_inference(x: dict, window: SlidingWindow, run: Callable[[dict], dict]) -> dict:
    """One image's outputs merged from ``run`` on each of its tiles.

    x: a detectron2-format input ("image" (C, h, w) at the network input size, optional
    "height" / "width" of the output). ``run`` takes a tile's input dict ("image" cut from
    x's, "height" / "width" of its footprint) and returns its outputs, of which "sem_seg"
    (C, fh, fw) and "panoptic_seg" are merged (see the module docstring); any other output
    raises, since it cannot be merged.
    """
    image = x["image"]
    input_size = tuple(image.shape[-2:])
    output_size = (x.get("height", input_size[0]), x.get("width", input_size[1]))
    scores, panoptic = ScoreAverager(output_size), PanopticStitcher(output_size)
    keys: set[str] = set()
    for tile in window.tiles(input_size, output_size):
        y0, y1, x0, x1 = tile.input_box
        oy0, oy1, ox0, ox1 = tile.output_box
        result = run({"image": image[:, y0:y1, x0:x1], "height": oy1 - oy0, "width": ox1 - ox0})
        if set(result) - {"sem_seg", "panoptic_seg"}:
            raise ValueError(
                f"sliding-window inference merges sem_seg and panoptic_seg only, got "
                f"{sorted(result)}"
            )
        keys = set(result)
        if "sem_seg" in result:
            scores.add(tile.output_box, result.pop("sem_seg"))
        if "panoptic_seg" in result:
            panoptic.add(tile, *result.pop("panoptic_seg"))
    merged = {}
    if "sem_seg" in keys:
        merged["sem_seg"] = scores.average()
    if "panoptic_seg" in keys:
        merged["panoptic_seg"] = panoptic.result()
    return merged
