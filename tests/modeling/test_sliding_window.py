"""Sliding-window inference: tile geometry, merging on hand-made outputs, tiny models."""

import pytest
import torch

from mask2former.modeling.sliding_window import (
    PanopticStitcher,
    SlidingWindow,
    sliding_window_inference,
    tile_intervals,
)
from tests.modeling.test_meta_arch import _same_result
from tests.modeling.tiny import NUM_CLASSES, THING_IDS, build_tiny_model, make_image


# --------------------------------------------------------------------------- #
# Geometry
# --------------------------------------------------------------------------- #
def test_tile_intervals_on_known_cases():
    # stride 384; the third tile is moved back to end at 1100 (mmsegmentation's grid)
    assert tile_intervals(1100, 512, 128) == [(0, 512), (384, 896), (588, 1100)]
    assert tile_intervals(896, 512, 128) == [(0, 512), (384, 896)]
    assert tile_intervals(512, 512, 128) == [(0, 512)]
    assert tile_intervals(300, 512, 128) == [(0, 300)]  # one tile, smaller than TILE_SIZE
    assert tile_intervals(10, 4, 0) == [(0, 4), (4, 8), (6, 10)]


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 100, 191, 192, 193, 500])
@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 16), (64, 63), (33, 10)])
def test_tile_intervals_cover_the_axis_with_full_tiles_that_overlap(length, tile, overlap):
    intervals = tile_intervals(length, tile, overlap)
    covered = torch.zeros(length, dtype=torch.int64)
    for start, end in intervals:
        assert 0 <= start < end <= length and end - start == min(tile, length)
        covered[start:end] += 1
    assert bool((covered > 0).all())
    for (s0, e0), (s1, _) in zip(intervals, intervals[1:]):
        assert s0 < s1 and e0 - s1 >= overlap


@pytest.mark.parametrize(
    "input_size,output_size",
    [((150, 230), (150, 230)), ((150, 230), (301, 459)), ((90, 70), (45, 35))],
)
def test_footprints_cover_the_output_and_owned_boxes_partition_it(input_size, output_size):
    window = SlidingWindow((64, 48), (16, 8))
    tiles = window.tiles(input_size, output_size)
    covered = torch.zeros(output_size, dtype=torch.int64)
    owned = torch.zeros(output_size, dtype=torch.int64)
    for tile in tiles:
        y0, y1, x0, x1 = tile.output_box
        oy0, oy1, ox0, ox1 = tile.owned_box
        assert y0 <= oy0 <= oy1 <= y1 and x0 <= ox0 <= ox1 <= x1
        covered[y0:y1, x0:x1] += 1
        owned[oy0:oy1, ox0:ox1] += 1
    assert bool((covered > 0).all()) and bool((owned == 1).all())
    assert len(tiles) == len(tile_intervals(input_size[0], 64, 16)) * len(
        tile_intervals(input_size[1], 48, 8)
    )


@pytest.mark.parametrize(
    "tile_size,overlap,key",
    [
        ((0, 64), (0, 0), "TILE_SIZE"),
        ((64,), (0, 0), "TILE_SIZE"),
        ((64, 64.0), (0, 0), "TILE_SIZE"),
    ]
    + [((64, 64), (64, 0), "OVERLAP"), ((64, 64), (0, -1), "OVERLAP"), ((64, 64), (8,), "OVERLAP")],
)
def test_bad_tile_size_or_overlap_is_refused_naming_the_key(tile_size, overlap, key):
    with pytest.raises(ValueError, match=f"TEST.SLIDING_WINDOW.{key} must be"):
        SlidingWindow(tile_size, overlap)


# --------------------------------------------------------------------------- #
# Merging outputs of known functions of the input
# --------------------------------------------------------------------------- #
def test_semantic_scores_that_are_the_input_come_back_exactly():
    """Every tile returns its own pixels as scores: their mean over tiles is the image."""
    image = torch.randint(0, 256, (3, 150, 230)).float()
    window = SlidingWindow((64, 48), (16, 8))
    result = sliding_window_inference(
        {"image": image}, window, lambda x: {"sem_seg": x["image"].clone()}
    )
    assert torch.equal(result["sem_seg"], image)


def test_semantic_scores_are_averaged_over_the_tiles_covering_each_pixel():
    """Scores = row index inside the tile. Rows 0-9, tiles [0, 6) and [4, 10): rows 0-3 see
    only the first (y), rows 6-9 only the second (y - 4), rows 4-5 the mean (y - 2)."""

    def local_rows(x):
        h, w = x["image"].shape[-2:]
        return {"sem_seg": torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(1, h, w)}

    window = SlidingWindow((6, 6), (2, 2))
    result = sliding_window_inference({"image": torch.zeros(3, 10, 5)}, window, local_rows)
    expected = torch.tensor([0, 1, 2, 3, 2, 3, 2, 3, 4, 5], dtype=torch.float32)
    assert torch.equal(result["sem_seg"][0], expected.view(10, 1).expand(10, 5))


#: Ground-truth panoptic ids -> (category, isthing): two same-class things side by side
#: (1, 2), a thing crossing every tile border (3), a thing of another class (4), and one
#: stuff class in three separate blocks (5, 6, 7 share category 3).
GT_SEGMENTS = {1: (0, True), 2: (0, True), 3: (1, True), 4: (0, True)}
GT_SEGMENTS.update({5: (3, False), 6: (3, False), 7: (3, False)})


def ground_truth_map() -> torch.Tensor:
    gt = torch.zeros(96, 96, dtype=torch.int32)
    gt[10:40, 20:46] = 1
    gt[10:40, 46:70] = 2  # touches segment 1 along column 46, crosses the border at 48
    gt[40:90, 30:60] = 3  # crosses rows 48 and 64, columns 48 and 64 (overlaps of tiles)
    gt[70:80, 75:95] = 4
    gt[0:5, 0:5] = 5
    gt[0:5, 90:96] = 6
    gt[90:96, 0:20] = 7
    return gt


def tile_panoptic_from(gt: torch.Tensor, x: dict) -> dict:
    """The ground truth cut to the tile, its ids renumbered in reverse order, one segment per
    stuff class (as panoptic_inference gives). The tile's image holds its rows and columns."""
    y0, x0 = int(x["image"][0, 0, 0]), int(x["image"][1, 0, 0])
    crop = gt[y0 : y0 + x["height"], x0 : x0 + x["width"]]
    local = torch.zeros_like(crop)
    infos, stuff_ids = [], {}
    for gt_id in sorted(set(crop.unique().tolist()) - {0}, reverse=True):
        category, isthing = GT_SEGMENTS[gt_id]
        if not isthing and category in stuff_ids:
            local[crop == gt_id] = stuff_ids[category]
            continue
        local[crop == gt_id] = new_id = len(infos) + 1
        if not isthing:
            stuff_ids[category] = new_id
        infos.append({"id": new_id, "category_id": category, "isthing": isthing, "score": 0.5})
    return {"panoptic_seg": (local, infos)}


def run_on_ground_truth(gt: torch.Tensor, window: SlidingWindow) -> tuple:
    height, width = gt.shape
    rows = torch.arange(height, dtype=torch.float32).view(height, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, width).expand(height, width)
    image = torch.stack([rows, cols, rows])
    result = sliding_window_inference({"image": image}, window, lambda x: tile_panoptic_from(gt, x))
    return result["panoptic_seg"]


def test_panoptic_stitching_recovers_segments_that_cross_tile_borders():
    gt = ground_truth_map()
    window = SlidingWindow((48, 48), (16, 16))  # tiles [0, 48), [32, 80), [48, 96) per axis
    seg, infos = run_on_ground_truth(gt, window)
    # one segment per thing, one for the stuff class; the map is the ground truth, renamed
    assert len(infos) == 5 and [s["id"] for s in infos] == [1, 2, 3, 4, 5]
    renamed = {}
    for gt_id in range(8):
        values = seg[gt == gt_id].unique().tolist()
        assert len(values) == 1, (gt_id, values)
        renamed[gt_id] = values[0]
    assert renamed[0] == 0
    assert len({renamed[i] for i in (1, 2, 3, 4)}) == 4  # the touching things stay apart
    assert renamed[5] == renamed[6] == renamed[7]  # one stuff segment
    info_of = {s["id"]: s for s in infos}
    for gt_id, (category, isthing) in GT_SEGMENTS.items():
        assert info_of[renamed[gt_id]]["category_id"] == category
        assert info_of[renamed[gt_id]]["isthing"] == isthing


def test_panoptic_stitching_without_overlap_cannot_join_things():
    gt = ground_truth_map()
    seg, infos = run_on_ground_truth(gt, SlidingWindow((48, 48), (0, 0)))
    assert seg[gt == 3].unique().numel() == 4  # cut by the tile borders in four
    assert seg[gt == 1].unique().numel() == 1 and seg[gt == 2].unique().numel() == 2
    assert seg[gt == 5].unique().item() == seg[gt == 7].unique().item()  # stuff still one


def two_tiles_with_things(second: slice, second_category: int) -> tuple:
    """A 1 x 14 image in tiles [0, 10) and [4, 14), each owning its side of column 7. The
    first tile sees a thing of class 0 on columns 3-6, the second one on columns ``second``.
    Where both tiles are seen when the second is added (columns 4-6), the first's thing
    covers 3 pixels."""
    first_tile, second_tile = SlidingWindow((1, 10), (0, 6)).tiles((1, 14), (1, 14))
    stitcher = PanopticStitcher((1, 14))
    seg = torch.zeros(1, 10, dtype=torch.int32)
    seg[0, 3:7] = 1
    stitcher.add(first_tile, seg, [{"id": 1, "category_id": 0, "isthing": True, "score": 0.9}])
    seg = torch.zeros(1, 10, dtype=torch.int32)
    seg[0, second.start - 4 : second.stop - 4] = 1
    info = {"id": 1, "category_id": second_category, "isthing": True, "score": 0.7}
    stitcher.add(second_tile, seg, [info])
    return stitcher.result()


def test_panoptic_things_join_by_class_and_iou_where_both_tiles_see():
    # columns 5-9: IoU 2/3 on columns 4-6, joined
    seg, infos = two_tiles_with_things(slice(5, 10), 0)
    assert seg.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]]
    assert len(infos) == 1 and infos[0]["score"] == 0.9  # the highest of the pieces'
    # columns 6-9: IoU 1/3, two segments, each pixel labelled by the tile owning it
    seg, infos = two_tiles_with_things(slice(6, 10), 0)
    assert seg.tolist() == [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0]]
    assert [s["score"] for s in infos] == [0.9, 0.7]
    # another class: not joined whatever the IoU
    seg, infos = two_tiles_with_things(slice(4, 10), 1)
    assert [s["category_id"] for s in infos] == [0, 1]


def test_one_tile_panoptic_is_returned_unchanged():
    (tile,) = SlidingWindow((8, 8), (2, 2)).tiles((5, 7), (5, 7))
    seg = torch.randint(0, 4, (5, 7), dtype=torch.int32)
    seg[0, :3] = torch.tensor([1, 2, 3], dtype=torch.int32)
    infos = [
        {"id": 1, "category_id": 0, "isthing": True, "score": 0.2},
        {"id": 2, "category_id": 2, "isthing": False, "score": 0.3},
        {"id": 3, "category_id": 0, "isthing": True, "score": 0.4},
    ]
    stitcher = PanopticStitcher((5, 7))
    stitcher.add(tile, seg, infos)
    got_seg, got_infos = stitcher.result()
    assert torch.equal(got_seg, seg) and got_infos == infos


# --------------------------------------------------------------------------- #
# Tiny models
# --------------------------------------------------------------------------- #
def sliding_model(name: str, tile_size, overlap=(16, 16), **extra):
    return build_tiny_model(
        name,
        MODEL__MASK_FORMER__TEST__INSTANCE_ON=False,
        TEST__SLIDING_WINDOW__ENABLED=True,
        TEST__SLIDING_WINDOW__TILE_SIZE=tuple(tile_size),
        TEST__SLIDING_WINDOW__OVERLAP=tuple(overlap),
        **extra,
    )


@pytest.mark.parametrize("name", ["mask2former", "maskformer_fpn", "per_pixel"])
@pytest.mark.parametrize("tile_size", [(64, 96), (128, 128)])
def test_one_tile_covering_the_image_is_exactly_whole_image_inference(name, tile_size):
    """sem_seg and panoptic_seg bit for bit, for an image resized for the network (64x96
    standing for 100x150) and one that is not, alone or in a batch."""
    whole = build_tiny_model(name, MODEL__MASK_FORMER__TEST__INSTANCE_ON=False)
    sliding = sliding_model(name, tile_size)
    inputs = [
        {"image": make_image(64, 96, seed=0), "height": 100, "width": 150},
        {"image": make_image(50, 70, seed=1)},
    ]
    with torch.no_grad():
        alone = [whole([x])[0] for x in inputs]
        tiled = sliding(inputs)
    assert set(tiled[0]) == ({"sem_seg"} if name == "per_pixel" else {"sem_seg", "panoptic_seg"})
    assert all(_same_result(t, a) for t, a in zip(tiled, alone))


@pytest.mark.parametrize("output_size", [None, (300, 200)])
def test_large_image_is_the_mean_of_its_tiles_whole_image_outputs(output_size):
    """A 192x128 image (3 x 2 tiles of 64, overlap 16): each pixel's scores are the mean of
    the whole-image scores of the tiles covering it; the panoptic map has the image's size
    and one consistent id per segment."""
    image = make_image(192, 128, seed=3)
    x = {"image": image}
    if output_size is not None:
        x.update(height=output_size[0], width=output_size[1])
    size = output_size or (192, 128)
    model = sliding_model("mask2former", (64, 64))
    tiles = model.sliding_window.tiles((192, 128), size)
    assert len(tiles) == 4 * 3
    with torch.no_grad():
        (result,) = model([x])
        expected = torch.zeros(NUM_CLASSES, *size)
        count = torch.zeros(size)
        for tile in tiles:
            y0, y1, x0, x1 = tile.input_box
            oy0, oy1, ox0, ox1 = tile.output_box
            crop = {"image": image[:, y0:y1, x0:x1], "height": oy1 - oy0, "width": ox1 - ox0}
            expected[:, oy0:oy1, ox0:ox1] += model.whole_image_inference(crop)["sem_seg"]
            count[oy0:oy1, ox0:ox1] += 1
    assert bool((count > 0).all()) and int(count.max()) == 4
    assert result["sem_seg"].shape == (NUM_CLASSES, *size)
    torch.testing.assert_close(result["sem_seg"], expected / count, rtol=1e-6, atol=1e-6)
    seg, infos = result["panoptic_seg"]
    assert seg.shape == size and seg.dtype == torch.int32
    assert sorted(seg.unique().tolist()) == [0] + [s["id"] for s in infos]
    assert [s["id"] for s in infos] == list(range(1, len(infos) + 1))
    for s in infos:
        assert 0 <= s["category_id"] < NUM_CLASSES
        assert s["isthing"] == (s["category_id"] in THING_IDS)


def test_sliding_window_with_instances_is_refused():
    with pytest.raises(ValueError, match="INSTANCE_ON False"):
        build_tiny_model("mask2former", TEST__SLIDING_WINDOW__ENABLED=True)


def test_training_is_not_tiled():
    from tests.modeling.tiny import training_input

    model = sliding_model("mask2former", (32, 32), (8, 8)).train()
    losses = model([training_input(seed=0)])
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
