"""Transforms and augmentations with detectron2's semantics.

For fixed parameters each transform is compared with a direct computation as detectron2
defines it: PIL's ``Image.resize`` for uint8 arrays (bilinear for images, nearest for label
maps), ``F.interpolate`` for other dtypes, numpy slicing / padding / flipping, shapely for
polygon crops. Independent numpy references check what those calls mean (PIL's bilinear
antialiases when it shrinks; its nearest and torch's nearest pick different source pixels).
Random augmentations are checked against detectron2's draw protocol: the same calls on
NumPy's (or, for the SSD colour jitter, Python's) generator from the same seed.
"""

import random

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mask2former.data import transforms as T

RNG = np.random.default_rng(0)
# (h, w, new_h, new_w): enlarge, shrink, odd sizes, one axis only, extreme ratios
SIZES = [(13, 17, 29, 31), (13, 17, 7, 9), (100, 80, 37, 23), (5, 5, 5, 9), (31, 97, 200, 3)]


def pil_resize(array: np.ndarray, new_h: int, new_w: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((new_w, new_h), resample))


def triangle_filter_reference(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Float64 separable bilinear resampling whose support widens by the shrink factor
    (antialiasing), pixel centres aligned: what PIL's BILINEAR computes, up to its 8-bit
    fixed-point rounding of each pass."""

    def weights(in_size: int, out_size: int) -> np.ndarray:
        scale = in_size / out_size
        stretch = max(scale, 1.0)
        centres = (np.arange(out_size) + 0.5) * scale
        taps = np.arange(in_size) + 0.5
        w = np.maximum(0.0, 1.0 - np.abs(taps[None] - centres[:, None]) / stretch)
        return w / w.sum(1, keepdims=True)

    x = image.astype(np.float64)
    x = np.einsum("oi,ij...->oj...", weights(image.shape[0], new_h), x)
    return np.einsum("oj,ij...->io...", weights(image.shape[1], new_w), x)


# --------------------------------------------------------------------------- resize
@pytest.mark.parametrize("h, w, new_h, new_w", SIZES)
@pytest.mark.parametrize("channels", [3, 1, None])
def test_resize_uint8_is_pil_bilinear(h, w, new_h, new_w, channels):
    shape = (h, w) if channels is None else (h, w, channels)
    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    out = T.ResizeTransform(h, w, new_h, new_w).apply_image(image)
    assert out.dtype == np.uint8 and out.shape == (new_h, new_w) + shape[2:]
    # one channel goes through PIL mode "L" and keeps its channel axis
    plain = image[:, :, 0] if channels == 1 else image
    expected = pil_resize(plain, new_h, new_w, Image.BILINEAR)
    assert np.array_equal(out if channels != 1 else out[:, :, 0], expected)
    # what PIL's bilinear means: the triangle filter, widened when shrinking (1 level of
    # fixed-point rounding per pass)
    reference = triangle_filter_reference(plain, new_h, new_w)
    assert np.abs(expected - reference).max() <= 2.0


def test_resize_shrink_antialiases_unlike_opencv():
    stripes = np.zeros((30, 30), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes shrunk 3x
    out = T.ResizeTransform(30, 30, 10, 10).apply_image(stripes).astype(int)
    assert np.abs(out[:, 1:-1] - 128).max() <= 15  # each output averages ~3 columns
    cv = cv2.resize(stripes, (10, 10), interpolation=cv2.INTER_LINEAR).astype(int)
    assert set(np.unique(cv)) == {0, 255}  # OpenCV samples single columns: aliasing


@pytest.mark.parametrize("h, w, new_h, new_w", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resize_float_is_interpolate_bilinear_half_pixel(h, w, new_h, new_w, dtype):
    image = RNG.uniform(0, 255, (h, w, 3)).astype(dtype)
    out = T.ResizeTransform(h, w, new_h, new_w).apply_image(image)
    assert out.dtype == dtype and out.shape == (new_h, new_w, 3)

    def taps(in_size, out_size):  # align_corners=False, no antialiasing, edge clamped
        src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    (r0, r1, fy), (c0, c1, fx) = taps(h, new_h), taps(w, new_w)
    x = image.astype(np.float64)
    top = x[r0][:, c0] * (1 - fx)[None, :, None] + x[r0][:, c1] * fx[None, :, None]
    bottom = x[r1][:, c0] * (1 - fx)[None, :, None] + x[r1][:, c1] * fx[None, :, None]
    expected = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    # float32 computes in float32: relative 2e-5 of 0..255 values
    np.testing.assert_allclose(out, expected, atol=5e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("h, w, new_h, new_w", SIZES + [(7, 3, 1000, 999), (300, 200, 31, 97)])
def test_segmentation_resize_uint8_is_pil_nearest_float_is_torch_nearest(h, w, new_h, new_w):
    labels = RNG.integers(0, 256, (h, w)).astype(np.uint8)
    tfm = T.ResizeTransform(h, w, new_h, new_w)

    def pil_index(in_size, out_size):  # PIL: centre of each output pixel, accumulated
        index, position, step = [], 0.5 * in_size / out_size, in_size / out_size
        for _ in range(out_size):
            index.append(min(int(position), in_size - 1))
            position += step
        return np.array(index)

    def torch_index(in_size, out_size):  # torch "nearest": floor(i * in / out), float32
        scale = np.float32(in_size / out_size)
        return np.minimum(np.floor(np.arange(out_size) * scale).astype(int), in_size - 1)

    pil_expected = labels[pil_index(h, new_h)[:, None], pil_index(w, new_w)[None]]
    assert np.array_equal(tfm.apply_segmentation(labels), pil_expected)
    assert np.array_equal(pil_expected, pil_resize(labels, new_h, new_w, Image.NEAREST))
    as_float = tfm.apply_segmentation(labels.astype(np.float64))  # the published mappers' labels
    torch_expected = labels[torch_index(h, new_h)[:, None], torch_index(w, new_w)[None]]
    assert as_float.dtype == np.float64 and np.array_equal(as_float, torch_expected)
    # integer labels (torch has no integer nearest): through float64, same pixels
    assert np.array_equal(tfm.apply_segmentation(labels.astype(np.int64)), torch_expected)


def test_segmentation_resize_of_colour_ids_and_masks():
    colours = RNG.integers(0, 256, (9, 14, 3), dtype=np.uint8)  # a panoptic PNG
    tfm = T.ResizeTransform(9, 14, 20, 5)
    assert np.array_equal(
        tfm.apply_segmentation(colours), pil_resize(colours, 20, 5, Image.NEAREST)
    )
    mask = RNG.integers(0, 2, (9, 14)).astype(bool)
    out = tfm.apply_segmentation(mask)
    expected = pil_resize(mask.astype(np.uint8), 20, 5, Image.NEAREST) > 0
    assert out.dtype == bool and np.array_equal(out, expected)
    with pytest.raises(TypeError, match="int32 arrays resize only with NEAREST"):
        tfm.apply_image(np.zeros((9, 14), np.int32))
    with pytest.raises(ValueError, match=r"built for \(9, 14\)"):
        tfm.apply_image(np.zeros((10, 14), np.uint8))


def test_resize_coords_boxes_and_inverse():
    tfm = T.ResizeTransform(10, 20, 25, 30)
    coords = tfm.apply_coords(np.array([[20.0, 10.0], [4.0, 2.0]]))
    assert np.allclose(coords, [[30.0, 25.0], [6.0, 5.0]])
    assert np.allclose(tfm.inverse().apply_coords(coords), [[20.0, 10.0], [4.0, 2.0]])
    assert np.allclose(tfm.apply_box(np.array([[2.0, 4.0, 10.0, 8.0]])), [[3.0, 10.0, 15.0, 20.0]])


# --------------------------------------------------------------------------- shortest edge
def detectron2_output_shape(h, w, size, max_size):
    """detectron2's ResizeShortestEdge.get_output_shape, step by step."""
    size = float(size)
    scale = size / min(h, w)
    new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


@pytest.mark.parametrize(
    "h, w, size, max_size, expected",
    [
        (480, 640, 800, 1333, (800, 1067)),  # 640 * 800 / 480 = 1066.67
        (640, 480, 800, 1333, (1067, 800)),
        (1000, 100, 800, 1333, (1333, 133)),  # long side capped: 1333 / 8000 * 800 = 133.3
        (427, 640, 512, 2048, (512, 767)),  # 640 * 512 / 427 = 767.4
        (375, 500, 640, 2560, (640, 853)),  # 853.33
        (100, 100, 64, 64, (64, 64)),
    ],
)
def test_shortest_edge_output_shape(h, w, size, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(h, w, size, max_size) == expected


def test_shortest_edge_output_shape_follows_detectron2_arithmetic_everywhere():
    rng = np.random.default_rng(1)
    for h, w, size, max_size in zip(*(rng.integers(1, 3000, (4, 3000)))):
        assert T.ResizeShortestEdge.get_output_shape(h, w, size, max_size) == (
            detectron2_output_shape(int(h), int(w), int(size), int(max_size))
        )


@pytest.mark.parametrize("style, lengths", [("choice", (20, 35, 50)), ("range", (20, 50))])
def test_shortest_edge_sampling_is_detectron2s_draw(style, lengths):
    aug = T.ResizeShortestEdge(lengths, max_size=90, sample_style=style)
    image = np.zeros((30, 60, 3), np.uint8)
    for seed in range(20):
        np.random.seed(seed)
        if style == "range":
            size = np.random.randint(lengths[0], lengths[1] + 1)
        else:
            size = np.random.choice(lengths)
        expected = detectron2_output_shape(30, 60, size, 90)
        np.random.seed(seed)
        tfm = aug.get_transform(image)
        assert (tfm.new_h, tfm.new_w) == expected


def test_shortest_edge_zero_is_identity_and_arguments_are_checked():
    assert isinstance(
        T.ResizeShortestEdge(0, 100, "choice").get_transform(np.zeros((5, 6, 3))),
        T.NoOpTransform,
    )
    with pytest.raises(ValueError, match="'range' sampling"):
        T.ResizeShortestEdge((10, 20, 30), sample_style="range")
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge(10, sample_style="uniform")


def test_resize_fixed_shape():
    tfm = T.Resize((7, 9)).get_transform(np.zeros((20, 30, 3), np.uint8))
    assert (tfm.h, tfm.w, tfm.new_h, tfm.new_w) == (20, 30, 7, 9)
    assert T.Resize(5).shape == (5, 5)


# --------------------------------------------------------------------------- flips
def test_flips_move_image_labels_points_and_boxes_together():
    image = RNG.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    labels = RNG.integers(0, 5, (4, 6)).astype(np.float64)
    for aug, axis in (
        (T.RandomFlip(1.0), 1),
        (T.RandomFlip(1.0, horizontal=False, vertical=True), 0),
    ):
        tfm = aug.get_transform(image)
        assert np.array_equal(tfm.apply_image(image), np.flip(image, axis))
        assert np.array_equal(tfm.apply_segmentation(labels), np.flip(labels, axis))
        point = tfm.apply_coords(np.array([[1.0, 1.0]]))[0]
        assert point.tolist() == ([5.0, 1.0] if axis == 1 else [1.0, 3.0])
        box = tfm.apply_box(np.array([[1.0, 1.0, 2.0, 3.0]]))[0]
        assert box.tolist() == ([4.0, 1.0, 5.0, 3.0] if axis == 1 else [1.0, 1.0, 2.0, 3.0])
    assert isinstance(T.RandomFlip(0.0).get_transform(image), T.NoOpTransform)
    np.random.seed(5)
    draws = np.random.uniform(size=50) < 0.5
    np.random.seed(5)
    flips = [isinstance(T.RandomFlip().get_transform(image), T.HFlipTransform) for _ in range(50)]
    assert flips == draws.tolist()  # one uniform draw per call, flip when below prob
    with pytest.raises(ValueError, match="one way only"):
        T.RandomFlip(horizontal=True, vertical=True)
    with pytest.raises(ValueError, match="set horizontal or vertical"):
        T.RandomFlip(horizontal=False)


# --------------------------------------------------------------------------- crops
def detectron2_crop(crop_type, crop_size, h, w):
    """detectron2's RandomCrop draw: (y0, x0, crop_h, crop_w)."""
    if crop_type == "relative":
        ch, cw = int(h * crop_size[0] + 0.5), int(w * crop_size[1] + 0.5)
    elif crop_type == "relative_range":
        low = np.asarray(crop_size, dtype=np.float32)
        fh, fw = low + np.random.rand(2) * (1 - low)
        ch, cw = int(h * fh + 0.5), int(w * fw + 0.5)
    elif crop_type == "absolute":
        ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    else:
        ch = np.random.randint(min(h, crop_size[0]), min(h, crop_size[1]) + 1)
        cw = np.random.randint(min(w, crop_size[0]), min(w, crop_size[1]) + 1)
    return np.random.randint(h - ch + 1), np.random.randint(w - cw + 1), ch, cw


@pytest.mark.parametrize(
    "crop_type, size",
    [
        ("relative", (0.5, 0.25)),
        ("relative_range", (0.9, 0.3)),
        ("absolute", (30, 300)),
        ("absolute_range", (20, 150)),
    ],
)
def test_random_crop_is_detectron2s_draw_and_slices(crop_type, size):
    image = RNG.integers(0, 255, (101, 203, 3), dtype=np.uint8)
    aug = T.RandomCrop(crop_type, size)
    for seed in range(30):
        np.random.seed(seed)
        y0, x0, ch, cw = detectron2_crop(crop_type, size, 101, 203)
        np.random.seed(seed)
        tfm = aug.get_transform(image)
        assert (tfm.y0, tfm.x0, tfm.h, tfm.w) == (y0, x0, ch, cw)
        assert np.array_equal(tfm.apply_image(image), image[y0 : y0 + ch, x0 : x0 + cw])


def test_crop_polygons_are_clipped_like_shapely_and_split():
    tfm = T.CropTransform(2, 2, 4, 4)
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    (clipped,) = tfm.apply_polygons([square])
    assert clipped.min() == 0.0 and clipped.max() == 4.0 and len(clipped) == 4
    outside = np.array([[8.0, 8.0], [9.0, 8.0], [9.0, 9.0]])
    assert tfm.apply_polygons([outside]) == []
    # a U shape cut by the window into two pieces, each 1 x 2
    u_shape = np.array(
        [[0, 0], [7, 0], [7, 5], [5, 5], [5, 1], [3, 1], [3, 5], [0, 5]], dtype=np.float64
    )
    pieces = T.CropTransform(2, 3, 4, 2).apply_polygons([u_shape])

    def area(p):
        return 0.5 * abs(
            np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))
        )

    assert sorted(area(p) for p in pieces) == [2.0, 2.0]


def test_category_area_constraint_is_detectron2s_draw():
    labels = np.zeros((60, 70), np.float64)
    labels[:, 60:] = 1  # only windows reaching x >= 60 hold two categories
    labels[:5] = 255
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), 0.9, ignored_category=255)
    image = np.zeros((60, 70, 3), np.uint8)
    for seed in range(20):
        np.random.seed(seed)
        for tries in range(1, 11):  # up to ten windows, the first that qualifies
            ch, cw = 20, 20
            y0, x0 = np.random.randint(60 - ch + 1), np.random.randint(70 - cw + 1)
            values, counts = np.unique(labels[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
            counts = counts[values != 255]
            if len(counts) > 1 and counts.max() < counts.sum() * 0.9:
                break
        np.random.seed(seed)
        tfm = aug.get_transform(image, labels)
        assert (tfm.y0, tfm.x0, tfm.h, tfm.w) == (y0, x0, 20, 20)
    # at 1.0 it is a plain RandomCrop: no label map needed
    plain = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), 1.0)
    assert isinstance(plain.get_transform(image, None), T.CropTransform)
    with pytest.raises(ValueError, match="needs the label map"):
        aug.get_transform(image, None)


# --------------------------------------------------------------------------- large-scale jitter
def test_resize_scale_rounds_half_to_even():
    aug = T.ResizeScale(0.5, 0.5, 100, 100)
    tfm = aug.get_transform(np.zeros((25, 30, 3), np.uint8))
    # scale min(50/25, 50/30) = 5/3: 25 * 5/3 = 41.67 -> 42, 30 * 5/3 = 50
    assert (tfm.new_h, tfm.new_w) == (42, 50)
    tfm = T.ResizeScale(1.0, 1.0, 5, 100).get_transform(np.zeros((2, 3, 3), np.uint8))
    assert (tfm.new_h, tfm.new_w) == (5, 8)  # 3 * 2.5 = 7.5 rounds to the even 8
    tfm = T.ResizeScale(1.0, 1.0, 9, 100).get_transform(np.zeros((2, 1, 3), np.uint8))
    assert (tfm.new_h, tfm.new_w) == (9, 4)  # 1 * 4.5 rounds to the even 4
    for seed in range(10):
        np.random.seed(seed)
        scale = np.random.uniform(0.1, 2.0)
        np.random.seed(seed)
        tfm = T.ResizeScale(0.1, 2.0, 64, 48).get_transform(np.zeros((30, 80, 3), np.uint8))
        factor = min(64 * scale / 30, 48 * scale / 80)
        assert (tfm.new_h, tfm.new_w) == (round(30 * factor), round(80 * factor))


def test_fixed_size_crop_crops_larger_and_pads_smaller():
    aug = T.FixedSizeCrop((16, 20), seg_pad_value=254)
    image = RNG.integers(0, 100, (10, 30, 3), dtype=np.uint8)  # taller crop, narrower image
    labels = RNG.integers(0, 5, (10, 30)).astype(np.float64)
    np.random.seed(3)
    fraction = np.random.uniform(0.0, 1.0)
    np.random.seed(3)
    tfm = aug.get_transform(image)
    crop, pad = tfm.transforms
    assert (crop.y0, crop.x0) == (0, int(np.round(10 * fraction)))  # one draw, both axes
    out, seg = tfm.apply_image(image), tfm.apply_segmentation(labels)
    assert out.shape == (16, 20, 3) and seg.shape == (16, 20)
    assert (out[10:] == 128).all() and (seg[10:] == 254).all()
    x0 = crop.x0
    assert np.array_equal(out[:10], image[:, x0 : x0 + 20])
    assert np.array_equal(seg[:10], labels[:, x0 : x0 + 20])
    # the crop window is the output size, so points keep their offsets
    assert tfm.apply_coords(np.array([[x0 + 3.0, 4.0]])).tolist() == [[3.0, 4.0]]
    unpadded = T.FixedSizeCrop((16, 20), pad=False).get_transform(image)
    assert unpadded.apply_image(image).shape == (10, 20, 3)


def test_fixed_size_crop_offset_rounds_half_to_even():
    image = np.zeros((13, 40, 3), np.uint8)
    tfm = T.FixedSizeCrop((10, 10))
    np.random.seed(0)
    u = np.random.uniform(0.0, 1.0)
    np.random.seed(0)
    crop = tfm.get_transform(image).transforms[0]
    assert (crop.y0, crop.x0) == tuple(np.round(np.multiply((3, 30), u)).astype(int))


# --------------------------------------------------------------------------- SSD colour jitter
def ssd_reference(image_rgb: np.ndarray, seed: int) -> np.ndarray:
    """PointRend's ColorAugSSDTransform with Python's generator seeded at ``seed``."""
    random.seed(seed)

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def maybe_hsv(x, channel, change):
        if not random.randrange(2):
            return x
        value = change()
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        if channel == 1:
            hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=value)
        else:
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + value) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def contrast(x):
        return convert(x, alpha=random.uniform(0.5, 1.5)) if random.randrange(2) else x

    def saturation(x):
        return maybe_hsv(x, 1, lambda: random.uniform(0.5, 1.5))

    def hue(x):
        return maybe_hsv(x, 0, lambda: random.randint(-18, 18))

    x = image_rgb[:, :, [2, 1, 0]]
    if random.randrange(2):
        x = convert(x, beta=random.uniform(-32, 32))
    if random.randrange(2):
        x = hue(saturation(contrast(x)))
    else:
        x = contrast(hue(saturation(x)))
    return x[:, :, [2, 1, 0]]


def test_color_aug_ssd_equals_the_pointrend_recipe():
    image = RNG.integers(0, 256, (23, 19, 3), dtype=np.uint8)
    tfm = T.ColorAugSSDTransform(img_format="RGB")
    changed = 0
    for seed in range(40):
        expected = ssd_reference(image, seed)
        random.seed(seed)
        out = tfm.apply_image(image)
        assert out.dtype == np.uint8 and np.array_equal(out, expected)
        changed += not np.array_equal(out, image)
    assert changed > 30  # most seeds change something
    labels = RNG.integers(0, 5, (23, 19))
    assert tfm.apply_segmentation(labels) is labels
    assert np.array_equal(tfm.apply_coords(np.array([[1.0, 2.0]])), [[1.0, 2.0]])


def test_color_aug_ssd_is_float32_arithmetic():
    # 90 * 0.7 is 62.99999999999999 in float64, 63.0 in float32: truncation tells them apart
    from mask2former.data.transforms.transform import _scale_and_clip

    assert int(90 * 0.7) == 62 and int(np.float32(90) * np.float32(0.7)) == 63
    assert _scale_and_clip(np.full((1, 1, 3), 90, np.uint8), alpha=0.7)[0, 0, 0] == 63


def test_color_aug_ssd_channel_order_and_errors():
    image = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    random.seed(3)
    rgb = T.ColorAugSSDTransform(img_format="RGB").apply_image(image)
    random.seed(3)
    bgr = T.ColorAugSSDTransform(img_format="BGR").apply_image(image[:, :, ::-1].copy())
    assert np.array_equal(rgb, bgr[:, :, ::-1])
    with pytest.raises(ValueError, match="RGB or BGR"):
        T.ColorAugSSDTransform(img_format="YUV")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        T.ColorAugSSDTransform(img_format="RGB").apply_image(image.astype(np.float32))


# --------------------------------------------------------------------------- the protocol
class _LabelShift(T.Augmentation):
    """A custom augmentation reading the label map: shifts right by the top-left label."""

    def get_transform(self, image, sem_seg):
        shift = int(sem_seg[0, 0])
        return T.PadTransform(shift, 0, 0, 0, pad_value=7, seg_pad_value=9)


class _ImageOnly(T.Augmentation):
    def __init__(self, size=3):
        self._init(locals())

    def get_transform(self, image):
        return T.CropTransform(0, 0, self.size, self.size)


def test_augmentations_take_inputs_by_parameter_name():
    image = RNG.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    labels = np.full((6, 8), 2.0)
    aug_input = T.AugInput(image, sem_seg=labels)
    transforms = T.AugmentationList([_LabelShift(), _ImageOnly(4), T.HFlipTransform(4)])(aug_input)
    assert len(transforms) == 3 and isinstance(transforms, T.TransformList)
    assert aug_input.image.shape == (4, 4, 3) and aug_input.sem_seg.shape == (4, 4)
    # padded 2 columns on the left (image 7, labels 9), cropped 4x4, flipped
    assert (aug_input.image[:, 2:] == 7).all() and (aug_input.sem_seg[:, 2:] == 9).all()
    assert repr(_ImageOnly(4)) == "_ImageOnly(size=4)" and repr(_ImageOnly()) == "_ImageOnly()"
    with pytest.raises(AttributeError, match="needs the input attribute 'sem_seg'"):
        _LabelShift()(type("Only", (), {"image": image, "transform": lambda self, t: None})())


def test_apply_transform_gens_returns_input_and_transforms():
    image = RNG.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    out, transforms = T.apply_transform_gens([_ImageOnly(2)], image)
    assert np.array_equal(out, image[:2, :2]) and isinstance(transforms, T.TransformList)
    aug_input = T.AugInput(image, boxes=np.array([[1.0, 1.0, 7.0, 5.0]]))
    returned, transforms = T.apply_augmentations([T.RandomFlip(1.0)], aug_input)
    assert returned is aug_input and aug_input.boxes.tolist() == [[1.0, 1.0, 7.0, 5.0]]
    with pytest.raises(ValueError, match="label map shape"):
        T.AugInput(image, sem_seg=np.zeros((5, 8)))
    with pytest.raises(TypeError, match="uint8 or floating point"):
        T.AugInput(image.astype(np.int32))


def test_random_apply_draws_once():
    image = np.zeros((6, 8, 3), np.uint8)
    aug = T.RandomApply(_ImageOnly(2), prob=0.3)
    np.random.seed(0)
    draws = np.random.uniform(size=40) < 0.3
    np.random.seed(0)
    applied = [aug(T.AugInput(image)) for _ in range(40)]
    assert [isinstance(t, T.CropTransform) for t in applied] == draws.tolist()
    with pytest.raises(ValueError, match="prob"):
        T.RandomApply(_ImageOnly(), prob=1.5)


def test_pipeline_keeps_image_and_labels_aligned():
    labels = np.arange(12 * 16).reshape(12, 16).astype(np.float64)
    image = np.stack([labels % 256, labels // 256, np.zeros_like(labels)], -1).astype(np.uint8)
    augs = [
        T.ResizeShortestEdge((24,), 100, "choice"),
        T.RandomCrop("absolute", (10, 10)),
        T.RandomFlip(1.0),
        T.FixedSizeCrop((16, 16)),
    ]
    np.random.seed(0)
    aug_input, _ = T.apply_transform_gens(augs, T.AugInput(image, sem_seg=labels))
    valid = aug_input.sem_seg != 255
    decoded = aug_input.image[..., 0].astype(int) + 256 * aug_input.image[..., 1].astype(int)
    # Labels move by torch's nearest (floor), the image by PIL's bilinear at 2x: within one
    # source step (a column: 1 level, a row: 16 levels) of each other, plus one for rounding
    assert valid.sum() == 100
    assert np.abs(decoded[valid] - aug_input.sem_seg[valid]).max() <= 17 + 1
    assert torch.equal(
        torch.from_numpy(aug_input.sem_seg[valid]).round(),
        torch.from_numpy(aug_input.sem_seg[valid]),
    )


def test_interpolate_nearest_is_what_float_labels_get():
    labels = RNG.integers(0, 9, (13, 17)).astype(np.float64)
    out = T.ResizeTransform(13, 17, 29, 31).apply_segmentation(labels)
    expected = F.interpolate(torch.from_numpy(labels)[None, None], (29, 31), mode="nearest")[0, 0]
    assert np.array_equal(out, expected.numpy())
