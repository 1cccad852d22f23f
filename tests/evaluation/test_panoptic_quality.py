"""PQ / SQ / RQ: hand-worked cases, panopticapi's algorithm as reference, PNG format."""

import json

import numpy as np
import pytest
from panoptic_reference import make_panoptic_set, reference_pq_compute
from PIL import Image

from mask2former.evaluation import panoptic_quality as pq
from mask2former.evaluation.panoptic_quality import (
    PQStat,
    histogram,
    image_pq_stat,
    pq_compute,
    pq_results,
    read_panoptic_png,
    write_panoptic_png,
)

# Categories: 1 and 2 are things, 3 is stuff.
ISTHING = {1: True, 2: True, 3: False}
CATS = np.array(sorted(ISTHING))


def _row(*spans):
    """A 1 x N id map from (id, length) spans, left to right."""
    return np.concatenate([np.full(n, i, dtype=np.int64) for i, n in spans])[None, :]


def _gt(*segs):
    """gt segments_info from (id, category, area, iscrowd)."""
    return [{"id": i, "category_id": c, "area": a, "iscrowd": cr} for i, c, a, cr in segs]


def _pred(*segs):
    return [{"id": i, "category_id": c} for i, c in segs]


def _score(gt_ids, gt_segs, pred_ids, pred_segs):
    """Scored from int64 maps (dense indices) and uint32 maps (mask2former._codec when it is
    built): the same results."""
    results = [
        pq_results(
            image_pq_stat(gt_ids.astype(t), gt_segs, pred_ids.astype(t), pred_segs, CATS), ISTHING
        )
        for t in (np.int64, np.uint32)
    ]
    assert results[0] == results[1]
    return results[0]


def test_one_matched_at_iou_06_and_one_missed():
    # gt: A (cat 1) px 0-9, B (cat 3) px 10-19. pred: a (cat 1) px 0-5, the rest VOID.
    # a vs A: intersection 6, union 6 + 10 - 6 = 10, IoU 0.6 > 0.5 -> TP. B is missed -> FN.
    # cat 1: PQ = SQ = 0.6, RQ = 1. cat 3: TP 0, FN 1 -> PQ = SQ = RQ = 0.
    # All (n = 2): PQ = SQ = 0.3, RQ = 0.5. Things: 0.6 / 0.6 / 1. Stuff: 0 / 0 / 0.
    res = _score(
        _row((7, 10), (9, 10)),
        _gt((7, 1, 10, 0), (9, 3, 10, 0)),
        _row((4, 6), (0, 14)),
        _pred((4, 1)),
    )
    assert res["All"] == pytest.approx({"pq": 0.3, "sq": 0.3, "rq": 0.5, "n": 2})
    assert res["Things"] == pytest.approx({"pq": 0.6, "sq": 0.6, "rq": 1.0, "n": 1})
    assert res["Stuff"] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1})
    assert res["per_class"][1] == pytest.approx({"pq": 0.6, "sq": 0.6, "rq": 1.0})


def test_void_removed_from_union_and_false_positive_mostly_on_void():
    # gt: A (cat 1) px 0-9, VOID px 10-15, B (cat 3) px 16-23.
    # pred: a (cat 1) px 0-11: 2 px on VOID leave the union: 12 + 10 - 10 - 2 = 10, IoU 1.
    #       b (cat 2) px 12-13: all on VOID (2/2 > 0.5) -> ignored, not a FP.
    #       c (cat 2) px 14-17: 2 of 4 px on VOID, 0.5 is not > 0.5 -> FP of cat 2.
    #       px 18-23 VOID. B (cat 3) only meets c (cat 2) -> FN of cat 3.
    # cat 1: PQ 1; cat 2: FP 1 -> 0; cat 3: FN 1 -> 0. All (n = 3): PQ = SQ = RQ = 1/3.
    gt = _row((7, 10), (0, 6), (9, 8))
    pred = _row((4, 12), (5, 2), (6, 4), (0, 6))
    res = _score(gt, _gt((7, 1, 10, 0), (9, 3, 8, 0)), pred, _pred((4, 1), (5, 2), (6, 2)))
    assert res["All"] == pytest.approx({"pq": 1 / 3, "sq": 1 / 3, "rq": 1 / 3, "n": 3})
    assert res["per_class"][1] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0})
    assert res["per_class"][2] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0})


def test_crowd_region():
    # gt: A (cat 1, crowd) px 0-9, B (cat 1) px 10-19.
    # pred: a (cat 1) px 0-7: on the crowd of its own class (8/8) -> not a FP; crowd never
    #       matches and A is not a FN. c (cat 2) px 8-9: on a crowd of another class -> FP.
    #       b (cat 1) px 10-19: IoU 1 with B -> TP.
    # cat 1: TP 1, IoU 1 -> PQ 1; cat 2: FP 1 -> PQ 0. All (n = 2): PQ = SQ = RQ = 0.5.
    gt_ids = _row((7, 10), (8, 10))
    pred_ids = _row((4, 8), (6, 2), (5, 10))
    pred = _pred((4, 1), (6, 2), (5, 1))
    res = _score(gt_ids, _gt((7, 1, 10, 1), (8, 1, 10, 0)), pred_ids, pred)
    assert res["All"] == pytest.approx({"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2})
    assert res["per_class"][1] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0})
    # The same region not marked crowd: a now overlaps A at IoU 0.8 -> TP, c is a FP, and
    # cat 1 has TP 2 with IoU 0.8 + 1 -> PQ = SQ = 0.9.
    res = _score(gt_ids, _gt((7, 1, 10, 0), (8, 1, 10, 0)), pred_ids, pred)
    assert res["per_class"][1] == pytest.approx({"pq": 0.9, "sq": 0.9, "rq": 1.0})


def test_prediction_overlapping_two_gt_segments():
    # gt: A (cat 1) px 0-9, B (cat 1) px 10-19.
    # pred: a (cat 1) px 0-13 covers A and 4 px of B: IoU(a, A) = 10 / 14 -> TP;
    #       IoU(a, B) = 4 / (14 + 10 - 4) = 0.2. px 14 VOID.
    #       b (cat 1) px 15-19: IoU(b, B) = 5 / (5 + 10 - 5) = 0.5, not > 0.5 -> b FP, B FN.
    # cat 1: TP 1, FP 1, FN 1, IoU 5/7: PQ = (5/7) / 2 = 5/14, SQ = 5/7, RQ = 1/2.
    gt = _row((7, 10), (8, 10))
    pred = _row((4, 14), (0, 1), (5, 5))
    res = _score(gt, _gt((7, 1, 10, 0), (8, 1, 10, 0)), pred, _pred((4, 1), (5, 1)))
    assert res["per_class"][1] == pytest.approx({"pq": 5 / 14, "sq": 5 / 7, "rq": 0.5})
    assert res["All"]["n"] == 1


def test_gt_as_prediction_is_100(tmp_path):
    files = make_panoptic_set(str(tmp_path), 3, height=48, width=64, num_segments=8)
    with open(files[0]) as f:
        gt = json.load(f)
    res = pq_compute(files[0], files[0], files[2], files[2])
    for group in ("All", "Things", "Stuff"):
        assert res[group]["pq"] == res[group]["sq"] == res[group]["rq"] == 1.0
    assert res["All"]["n"] == len(
        {
            s["category_id"]
            for a in gt["annotations"]
            for s in a["segments_info"]
            if not s["iscrowd"]
        }
    )


@pytest.mark.parametrize("num_workers", [1, 2])
def test_pq_compute_equals_reference_implementation(tmp_path, num_workers):
    files = make_panoptic_set(str(tmp_path), 10, seed=3, height=96, width=128, num_segments=12)
    ours = pq_compute(*files, num_workers=num_workers)
    ref = reference_pq_compute(*files, workers=1)
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == ref[group]["n"]
        for m in ("pq", "sq", "rq"):
            assert ours[group][m] == pytest.approx(ref[group][m], abs=1e-12)
    assert 0.05 < ours["All"]["pq"] < 0.95  # the set has matches and errors both
    for cat, values in ref["per_class"].items():
        assert ours["per_class"][cat] == pytest.approx(values, abs=1e-12)


def test_pq_compute_does_not_depend_on_the_number_of_processes(tmp_path):
    files = make_panoptic_set(str(tmp_path), 20, seed=4, height=48, width=64, num_segments=12)
    one = pq_compute(*files, num_workers=1)
    assert pq_compute(*files, num_workers=3) == one  # chunk sums in order: bit for bit


@pytest.mark.parametrize("dtype", [np.int64, np.uint32])
def test_malformed_predictions_give_clear_errors(dtype):
    def row(*spans):
        return _row(*spans).astype(dtype)

    gt, gt_segs = row((7, 4)), _gt((7, 1, 4, 0))
    with pytest.raises(
        KeyError, match=r"\[5\] are in the predicted id map but not in segments_info"
    ):
        image_pq_stat(gt, gt_segs, row((4, 2), (5, 2)), _pred((4, 1)), CATS, "img1")
    with pytest.raises(KeyError, match=r"\[6\] are in segments_info but not in the predicted"):
        image_pq_stat(gt, gt_segs, row((4, 4)), _pred((4, 1), (6, 1)), CATS, "img1")
    with pytest.raises(KeyError, match="unknown category_id"):
        image_pq_stat(gt, gt_segs, row((4, 4)), _pred((4, 42)), CATS, "img1")
    with pytest.raises(ValueError, match="1x4 but the prediction is 1x3"):
        image_pq_stat(gt, gt_segs, row((4, 3)), _pred((4, 1)), CATS, "img1")
    with pytest.raises(ValueError, match=r"segment ids must lie in \[0, 256\^3\)"):
        image_pq_stat(gt, _gt((256**3, 1, 4, 0)), row((4, 4)), _pred((4, 1)), CATS, "img1")


def test_png_roundtrip_uses_coco_id_encoding(tmp_path):
    ids = np.array([[0, 1, 255, 256], [65536, 16777215, 123456, 7]], dtype=np.int64)
    path = str(tmp_path / "x.png")
    write_panoptic_png(path, ids)
    rgb = np.asarray(Image.open(path)).astype(np.int64)  # read back independently
    assert np.array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)
    assert np.array_equal(read_panoptic_png(path), ids)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_panoptic_png(str(tmp_path / "missing.png"))


def test_png_reader_takes_rgba_and_palette_files_written_by_pillow(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    ids = rgb.astype(np.int64) @ np.array([1, 256, 65536])
    rgba = np.concatenate([rgb, rng.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_panoptic_png(str(tmp_path / "rgba.png")), ids)  # alpha ignored
    # A palette PNG: 3 colours; each pixel's id is its palette colour's.
    palette = np.array([[1, 0, 0], [0, 2, 0], [7, 8, 9]], dtype=np.uint8)
    index = rng.integers(0, 3, size=(4, 6), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "palette.png")
    expected = (palette.astype(np.int64) @ np.array([1, 256, 65536]))[index]
    assert np.array_equal(read_panoptic_png(str(tmp_path / "palette.png")), expected)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: Image.fromarray(np.zeros((3, 3), np.uint8), "L").save(p), "colour type 0"),
        (lambda p: Image.fromarray(np.zeros((3, 3), np.uint16)).save(p), "bit depth 16"),
        (lambda p: Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(p, "JPEG"), "not a PNG"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "not a PNG"),
    ],
    ids=["grey", "16-bit", "jpeg", "signature-only"],
)
def test_png_reader_rejects_files_that_are_not_8bit_colour_pngs(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ValueError, match=f"bad.png.*{message}"):
        read_panoptic_png(str(path))


def test_png_reader_names_a_truncated_file(tmp_path):
    path = str(tmp_path / "cut.png")
    write_panoptic_png(path, np.arange(64 * 64).reshape(64, 64) * 997)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode (panoptic )?PNG .*cut.png"):
        read_panoptic_png(path)


def test_pqstat_sums_and_rejects_other_categories():
    a = PQStat.zeros([1, 2])
    b = PQStat(
        a.category_ids, np.array([0.5, 0.0]), np.array([1, 0]), np.array([0, 1]), np.array([0, 0])
    )
    a += b
    a += b
    assert a.tp.tolist() == [2, 0] and a.fp.tolist() == [0, 2] and a.iou.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="different category sets"):
        a += PQStat.zeros([1, 3])


# --------------------------------------------------------------------------- #
# The dense index against the former lookup table of all 256^3 ids
# --------------------------------------------------------------------------- #
def _table_dense_index(ids, listed_ids, scale=1):
    """The former _dense_index: a table of 256^3 + 1 entries, one gather (clip mode)."""
    table = np.zeros(256**3 + 1, dtype=np.int64)
    table[listed_ids] = scale * np.arange(1, len(listed_ids) + 1)
    return np.take(table, ids, mode="clip")


def _random_ids(rng, shape, listed, unlisted_share, dtype):
    """An id map drawing from ``listed`` and, for ``unlisted_share`` of the pixels, from ids
    that share the low 16 bits of a listed id, are small, or lie beyond 256^3."""
    ids = rng.choice(listed, size=shape)
    stray = rng.random(shape) < unlisted_share
    lookalikes = (rng.choice(listed, size=shape) & 0xFFFF) + (rng.integers(0, 256, shape) << 16)
    others = np.where(rng.random(shape) < 0.5, lookalikes, rng.integers(0, 100, shape))
    if np.issubdtype(dtype, np.signedinteger):
        others = np.where(rng.random(shape) < 0.1, rng.integers(-5, 2**26, shape), others)
    return np.where(stray, others, ids).astype(dtype)


@pytest.mark.parametrize("seed", range(12))
def test_dense_index_equals_the_former_256_cubed_table(seed):
    rng = np.random.default_rng(seed)
    num = int(rng.integers(1, 300))
    if seed % 3 == 0:  # listed ids sharing their low 16 bits: several tables
        low = rng.integers(0, 2**16, size=max(num // 4, 1))
        listed = rng.choice(low, num) + (rng.integers(0, 256, num) << 16)
    else:
        listed = rng.integers(0, 256**3, size=num)
    listed = np.concatenate([[0], np.unique(listed[listed != 0])]).astype(np.int64)
    rng.shuffle(listed)
    dtype = (np.uint32, np.int64, np.int32)[seed % 3]
    ids = _random_ids(rng, (37, 53), listed, (0.0, 0.05, 0.5)[seed % 4 % 3], dtype)
    scale = int(rng.integers(1, 400))
    ours = pq._dense_index(ids, listed, scale)
    assert ours.dtype == np.uint32
    assert np.array_equal(ours, _table_dense_index(np.clip(ids, 0, None), listed, scale))


@pytest.mark.parametrize("seed", range(4))
def test_image_pq_stat_equals_the_former_table_on_random_images(seed, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    shape = (60, 80)
    gt_listed = rng.integers(1, 256**3, size=int(rng.integers(2, 40)))
    if seed % 2:  # two gt segments with the same low 16 bits, and unlisted gt ids
        gt_listed[1] = (gt_listed[0] & 0xFFFF) | ((gt_listed[0] >> 16) ^ 1) << 16
    gt_listed = np.unique(gt_listed)
    gt_ids = rng.choice(np.concatenate([[0], gt_listed]), size=shape)
    if seed % 2:
        gt_ids[rng.random(shape) < 0.05] = (gt_listed[0] & 0xFFFF) | (77 << 16)
    pred_listed = np.unique(rng.integers(1, 256**3, size=int(rng.integers(2, 40))))
    # predictions follow the ground truth in blocks, so that some segments match
    pred_ids = np.where(
        rng.random(shape) < 0.8,
        pred_listed[np.searchsorted(np.unique(gt_ids), gt_ids) % len(pred_listed)],
        rng.choice(np.concatenate([[0], pred_listed]), size=shape),
    )
    pred_listed = np.unique(pred_ids[pred_ids != 0])
    cats = np.array([1, 2, 3])
    gt_segs = [
        {
            "id": int(i),
            "category_id": int(rng.integers(1, 4)),
            "iscrowd": int(rng.random() < 0.1),
            "area": int((gt_ids == i).sum()),
        }
        for i in gt_listed
    ]
    pred_segs = [{"id": int(i), "category_id": int(rng.integers(1, 4))} for i in pred_listed]
    gt_ids = gt_ids.astype(np.uint32)
    ours = image_pq_stat(gt_ids, gt_segs, pred_ids, pred_segs, cats)  # dense indices
    # uint32 maps: counted by mask2former._codec when it is built
    ours_uint32 = image_pq_stat(gt_ids, gt_segs, pred_ids.astype(np.uint32), pred_segs, cats)
    monkeypatch.setattr(pq, "_dense_index", _table_dense_index)
    former = image_pq_stat(gt_ids, gt_segs, pred_ids, pred_segs, cats)
    assert former.tp.sum() > 0  # the images have matches
    for field in ("iou", "tp", "fp", "fn"):
        assert np.array_equal(getattr(ours, field), getattr(former, field)), field
        assert np.array_equal(getattr(ours_uint32, field), getattr(former, field)), field


def test_pq_compute_tool_gives_pq_compute_and_starts_without_torch(tmp_path):
    """tools/pq_compute.py (panopticapi's flags) in a fresh process: the same numbers, and
    neither torch nor the evaluators imported (its start-up counts against panopticapi)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    gt_json, pred_json, gt_folder, pred_folder = make_panoptic_set(str(tmp_path), 3, seed=2)
    out = tmp_path / "results.json"
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    args = ["tools/pq_compute.py", "--gt_json_file", gt_json, "--pred_json_file", pred_json]
    subprocess.run(
        [sys.executable, "-c", probe, *args, "--output", str(out)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    expected = pq_compute(gt_json, pred_json, gt_folder, pred_folder)
    got = json.loads(out.read_text())
    for group in ("All", "Things", "Stuff"):
        assert got[group] == expected[group]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32])
def test_png_encoding_decodes_to_the_ids_with_other_decoders(dtype):
    import io

    import pyspng

    from mask2former.utils.panoptic_png import id2rgb

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (60, 80), (7, 1)]:
        ids = rng.integers(0, 256**3, shape).astype(dtype)
        ids.flat[0] = 256**3 - 1
        png = pq.encode_panoptic_png(ids)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), id2rgb(ids))
        assert np.array_equal(pyspng.load(png), id2rgb(ids))
    with pytest.raises(ValueError, match=r"\[0, 256\^3\)"):
        pq.encode_panoptic_png(np.array([[256**3]]))


@pytest.mark.parametrize("size", [1, 7, 600, 2**16, 2**16 + 1])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int64])
def test_histogram_equals_bincount(size, dtype):
    """OpenCV's float32 counts where they are exact (uint16 values), bincount elsewhere."""
    rng = np.random.default_rng(size)
    values = rng.integers(0, size, size=(48, 64))
    values[0, :3] = [0, size - 1, size - 1]
    if np.iinfo(dtype).max < size - 1:
        return
    got = histogram(values.astype(dtype), size)
    assert got.dtype == np.int64 and got.shape == (size,)
    assert np.array_equal(got, np.bincount(values.ravel(), minlength=size))
    assert histogram(np.zeros((0, 5), dtype=dtype), size).tolist() == [0] * size


def test_histogram_counts_millions_exactly():
    values = np.zeros((2001, 3001), dtype=np.uint16)  # one bin holds ~6M counts
    values[-1, -1] = 4
    assert histogram(values, 5).tolist() == [2001 * 3001 - 1, 0, 0, 0, 1]
