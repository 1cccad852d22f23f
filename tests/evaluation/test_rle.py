"""encode_masks is byte-identical to pycocotools.mask.encode, through the compiled codec and
through the numpy path used without it (every test runs on both)."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from mask2former.structures.rle import encode_label_map, encode_masks
from mask2former.utils import native


@pytest.fixture(autouse=True, params=["codec", "numpy"])
def encoder(request, monkeypatch):
    if request.param == "codec" and native.codec() is None:
        pytest.skip("mask2former._codec is not built")
    if request.param == "numpy":
        monkeypatch.setattr(native, "_CODEC", None)
        monkeypatch.setattr(native, "_LOGGED", True)
    return request.param


def _reference(masks: np.ndarray) -> list[str]:
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return [r["counts"].decode("ascii") for r in mask_util.encode(fortran)]


def test_random_masks_match_pycocotools():
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = rng.integers(1, 13, size=2)
        masks = rng.random((int(rng.integers(1, 5)), h, w)) < rng.random()
        got = encode_masks(masks)
        assert [r["counts"] for r in got] == _reference(masks), (trial, masks.astype(int))
        assert all(r["size"] == [h, w] for r in got)


@pytest.mark.parametrize(
    "case",
    ["empty", "full", "pixel_top_left", "pixel_bottom_right", "full_height_band", "border"],
)
def test_edge_cases_match_pycocotools(case):
    masks = np.zeros((1, 6, 7), dtype=bool)
    if case == "full":
        masks[:] = True
    elif case == "pixel_top_left":
        masks[0, 0, 0] = True
    elif case == "pixel_bottom_right":
        masks[0, -1, -1] = True
    elif case == "full_height_band":  # runs continue from one column into the next
        masks[0, :, 2:5] = True
    elif case == "border":
        masks[0, [0, -1], :] = True
        masks[0, :, [0, -1]] = True
    assert [r["counts"] for r in encode_masks(masks)] == _reference(masks)


def test_tensor_inputs_float_binarised_at_half():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 30, 40)).astype(np.float32)
    got = encode_masks(torch.from_numpy(masks))
    assert [r["counts"] for r in got] == _reference(masks >= 0.5)
    assert encode_masks(torch.zeros(0, 30, 40, dtype=torch.bool)) == []
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        encode_masks(np.zeros((30, 40), dtype=bool))


def test_image_sized_masks_of_several_parts_match_pycocotools():
    """Ellipses and bands touching every border, several parts per mask, empty masks."""
    rng = np.random.default_rng(2)
    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((40, h, w), dtype=bool)
    for k in range(1, 40):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(-10, h + 10), rng.uniform(-10, w + 10)
            ry, rx = rng.uniform(2, h), rng.uniform(2, w)
            masks[k] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        if k % 5 == 0:
            masks[k, :, int(rng.integers(0, w)) :] = True  # full-height columns to the right
    assert [r["counts"] for r in encode_masks(masks)] == _reference(masks)


def test_label_map_encoding_equals_encoding_each_label_mask():
    rng = np.random.default_rng(3)
    maps = [rng.integers(0, int(rng.integers(1, 5)), rng.integers(1, 9, 2)) for _ in range(200)]
    # image-sized: blocks of labels, a label only at the last pixel, one covering everything
    blocks = rng.integers(0, 20, (6, 8)).repeat(10, 0).repeat(10, 1)
    blocks[-1, -1] = 99
    maps += [blocks, np.full((5, 7), 3), np.array([[255, 0], [255, 7]])]
    # 8-bit maps (the semantic evaluator's, which the codec encodes) and int64 ones
    for label_map in maps + [m.astype(np.uint8) for m in maps]:
        labels, rles = encode_label_map(label_map)
        expected = np.unique(label_map)
        assert labels == expected.tolist()
        masks = label_map[None] == expected[:, None, None]
        assert [r["counts"] for r in rles] == _reference(masks), label_map
        assert all(r["size"] == list(label_map.shape) for r in rles)
