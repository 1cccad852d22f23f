"""Transforms and augmentations, checked against torch / numpy references and their rules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mask2former.data import transforms as T

RNG = np.random.default_rng(0)


def test_resize_matches_torch_bilinear_and_nearest_exact():
    image = RNG.uniform(0, 255, (13, 17, 3)).astype(np.float32)
    labels = RNG.integers(0, 9, (13, 17)).astype(np.int64)
    for new_h, new_w in ((29, 31), (7, 9), (13, 40)):
        tfm = T.ResizeTransform(13, 17, new_h, new_w)
        ours = tfm.apply_image(image)
        theirs = (
            F.interpolate(
                torch.from_numpy(image).permute(2, 0, 1)[None],
                (new_h, new_w),
                mode="bilinear",
                align_corners=False,
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
        if new_h >= 13 and new_w >= 17:  # upsampling: no antialiasing on either side
            assert np.abs(ours - theirs).max() < 1e-3
        nearest = (
            F.interpolate(
                torch.from_numpy(labels)[None, None].float(), (new_h, new_w), mode="nearest-exact"
            )[0, 0]
            .long()
            .numpy()
        )
        assert np.array_equal(tfm.apply_segmentation(labels), nearest)


def test_resize_uint8_keeps_flat_regions_exact():
    image = np.full((48, 64, 3), (40, 190, 40), np.uint8)
    out = T.ResizeTransform(48, 64, 40, 53).apply_image(image)
    assert out.dtype == np.uint8 and (out == np.array([40, 190, 40], np.uint8)).all()


def test_resize_coords_scale_with_the_image():
    tfm = T.ResizeTransform(10, 20, 25, 30)
    coords = tfm.apply_coords(np.array([[20.0, 10.0], [4.0, 2.0]]))
    assert np.allclose(coords, [[30.0, 25.0], [6.0, 5.0]])
    assert np.allclose(tfm.inverse().apply_coords(coords), [[20.0, 10.0], [4.0, 2.0]])


@pytest.mark.parametrize("style,lengths", [("choice", (20, 35, 50)), ("range", (20, 50))])
def test_resize_shortest_edge_sampling_and_max_size(style, lengths):
    aug = T.ResizeShortestEdge(lengths, max_size=90, sample_style=style)
    image = np.zeros((30, 60, 3), np.uint8)
    shorts = set()
    np.random.seed(0)
    for _ in range(300):
        tfm = aug.get_transform(image)
        h, w = tfm.new_h, tfm.new_w
        assert w <= 90 and abs(w / h - 2.0) < 0.05
        shorts.add(h if w < 90 else None)
    expected = set(lengths[:2] if style == "choice" else range(20, 45))  # >= 45 hits max_size
    assert {s for s in shorts if s is not None} >= expected
    assert None in shorts  # short side 50 would make the long side 100 > 90


def test_resize_shortest_edge_zero_is_identity():
    tfm = T.ResizeShortestEdge(0, 100, "choice").get_transform(np.zeros((5, 6, 3)))
    assert isinstance(tfm, T.NoOpTransform)


def test_flips_move_image_labels_and_points_together():
    image = RNG.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    labels = RNG.integers(0, 5, (4, 6))
    for aug, axis in (
        (T.RandomFlip(1.0), 1),
        (T.RandomFlip(1.0, horizontal=False, vertical=True), 0),
    ):
        tfm = aug.get_transform(image)
        assert np.array_equal(tfm.apply_image(image), np.flip(image, axis))
        assert np.array_equal(tfm.apply_segmentation(labels), np.flip(labels, axis))
        point = tfm.apply_coords(np.array([[1.0, 1.0]]))[0]
        assert point.tolist() == ([5.0, 1.0] if axis == 1 else [1.0, 3.0])
    assert isinstance(T.RandomFlip(0.0).get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError):
        T.RandomFlip(horizontal=True, vertical=True)


@pytest.mark.parametrize(
    "crop_type,size,check",
    [
        ("relative", (0.5, 0.25), lambda h, w: (h, w) == (50, 50)),
        ("relative_range", (0.5, 0.25), lambda h, w: 50 <= h <= 100 and 50 <= w <= 200),
        ("absolute", (30, 300), lambda h, w: (h, w) == (30, 200)),
        ("absolute_range", (20, 150), lambda h, w: 20 <= h <= 100 and 20 <= w <= 150),
    ],
)
def test_random_crop_sizes_and_windows(crop_type, size, check):
    image = RNG.integers(0, 255, (100, 200, 3), dtype=np.uint8)
    aug = T.RandomCrop(crop_type, size)
    np.random.seed(1)
    for _ in range(50):
        tfm = aug.get_transform(image)
        assert check(tfm.h, tfm.w), (tfm.h, tfm.w)
        out = tfm.apply_image(image)
        assert np.array_equal(out, image[tfm.y0 : tfm.y0 + tfm.h, tfm.x0 : tfm.x0 + tfm.w])
        assert out.shape[:2] == (tfm.h, tfm.w)


def test_crop_clips_polygons_to_the_window():
    tfm = T.CropTransform(2, 2, 4, 4)
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    (clipped,) = tfm.apply_polygons([square])
    assert clipped.min() == 0.0 and clipped.max() == 4.0
    outside = np.array([[8.0, 8.0], [9.0, 8.0], [9.0, 9.0]])
    assert tfm.apply_polygons([outside]) == []


def test_category_area_constraint_rejects_dominated_windows():
    labels = np.zeros((100, 100), np.int64)
    labels[:, 90:] = 1  # only windows reaching x >= 90 hold two categories
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), 0.9)
    np.random.seed(0)
    image = np.zeros((100, 100, 3), np.uint8)
    found = 0
    for _ in range(30):
        window = aug.get_transform(image, labels).apply_segmentation(labels)
        values, counts = np.unique(window, return_counts=True)
        found += len(values) > 1 and counts.max() < 0.9 * counts.sum()
    # A random window qualifies with p ~= 0.1; ten tries give ~0.65 per sample.
    assert found >= 12


def test_category_area_constraint_tries_ten_windows_and_skips_ignore(monkeypatch):
    labels = np.full((50, 50), 255, np.int64)
    labels[:25] = 3  # one category plus ignore: never qualifies
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (30, 30), 0.5, ignored_category=255)
    calls = []
    original = aug.crop.sample_window
    monkeypatch.setattr(aug.crop, "sample_window", lambda h, w: calls.append(1) or original(h, w))
    aug.get_transform(np.zeros((50, 50, 3)), labels)
    assert len(calls) == 10
    assert isinstance(
        T.RandomCrop_CategoryAreaConstraint("absolute", (30, 30), 1.0).get_transform(
            np.zeros((50, 50, 3)), labels
        ),
        T.CropTransform,
    )


def test_color_aug_ssd_is_image_only_and_matches_numpy():
    image = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    labels = RNG.integers(0, 5, (8, 9))
    kwargs = {
        "contrast_alpha": None,
        "saturation_alpha": None,
        "hue_shift": None,
        "contrast_first": True,
    }
    tfm = T.ColorAugSSDTransform(img_format="RGB", brightness_beta=20.5, **kwargs)
    expected = np.clip(image.astype(float) + 20.5, 0, 255).astype(np.uint8)
    assert np.array_equal(tfm.apply_image(image), expected)
    assert tfm.apply_segmentation(labels) is labels
    coords = np.array([[1.0, 2.0]])
    assert np.array_equal(tfm.apply_coords(coords.copy()), coords)
    # Hue acts on BGR input: the same change whichever channel order the image is in.
    hue = {
        "brightness_beta": None,
        "contrast_alpha": 1.3,
        "saturation_alpha": 0.7,
        "hue_shift": 9,
        "contrast_first": False,
    }
    rgb = T.ColorAugSSDTransform(img_format="RGB", **hue).apply_image(image)
    bgr = T.ColorAugSSDTransform(img_format="BGR", **hue).apply_image(image[:, :, ::-1].copy())
    assert np.array_equal(rgb, bgr[:, :, ::-1])
    gray = np.full((4, 4, 3), 100, np.uint8)  # no saturation: hue and saturation do nothing
    out = T.ColorAugSSDTransform(
        img_format="RGB",
        brightness_beta=None,
        contrast_alpha=None,
        saturation_alpha=1.5,
        hue_shift=40,
        contrast_first=True,
    )
    assert np.array_equal(out.apply_image(gray), gray)


def test_color_aug_ssd_sampling_covers_every_step():
    aug = T.ColorAugSSD(img_format="BGR")
    np.random.seed(0)
    draws = [aug.get_transform(np.zeros((2, 2, 3), np.uint8)) for _ in range(200)]
    for name, bound in (("brightness_beta", 32), ("hue_shift", 18)):
        values = [getattr(t, name) for t in draws]
        present = [v for v in values if v is not None]
        assert 60 < len(present) < 140 and max(abs(v) for v in present) <= bound
    alphas = [t.contrast_alpha for t in draws if t.contrast_alpha is not None]
    assert min(alphas) >= 0.5 and max(alphas) <= 1.5


def test_resize_scale_fits_the_scaled_target():
    aug = T.ResizeScale(0.1, 2.0, 64, 64)
    np.random.seed(0)
    for _ in range(50):
        tfm = aug.get_transform(np.zeros((30, 80, 3), np.uint8))
        assert abs(tfm.new_h - tfm.new_w * 30 / 80) <= 1  # aspect kept up to rounding
        assert tfm.new_w <= 128 and tfm.new_h <= 128 * 30 / 80 + 1


def test_fixed_size_crop_crops_larger_and_pads_smaller():
    aug = T.FixedSizeCrop((16, 20), seg_pad_value=254)
    image = RNG.integers(0, 100, (10, 30, 3), dtype=np.uint8)  # taller crop, narrower image
    labels = RNG.integers(0, 5, (10, 30))
    mask = np.ones((10, 30), np.uint8)
    np.random.seed(3)
    tfm = aug.get_transform(image)
    out, seg, m = tfm.apply_image(image), tfm.apply_segmentation(labels), tfm.apply_mask(mask)
    assert out.shape == (16, 20, 3) and seg.shape == m.shape == (16, 20)
    assert (out[10:] == 128).all() and (seg[10:] == 254).all() and (m[10:] == 0).all()
    assert m[:10].all()
    x0 = tfm.transforms[0].x0
    assert np.array_equal(out[:10], image[:, x0 : x0 + 20])
    assert np.array_equal(seg[:10], labels[:, x0 : x0 + 20])


def test_apply_augmentations_keeps_image_and_labels_aligned():
    labels = np.arange(12 * 16).reshape(12, 16)
    image = np.stack([labels % 256, labels // 256, np.zeros_like(labels)], -1).astype(np.uint8)
    augs = [
        T.ResizeShortestEdge((24,), 100, "choice"),
        T.RandomCrop("absolute", (10, 10)),
        T.RandomFlip(1.0),
        T.FixedSizeCrop((16, 16)),
    ]
    np.random.seed(0)
    aug_input = T.AugInput(image, sem_seg=labels)
    T.apply_augmentations(augs, aug_input)
    valid = aug_input.sem_seg != 255
    decoded = aug_input.image[..., 0].astype(int) + 256 * aug_input.image[..., 1].astype(int)
    # Each label pixel came from the nearest source pixel; the image, bilinear at 2x, lies
    # within one source step (1 column: 1 level, 1 row: 16 levels) of it.
    assert valid.sum() == 100
    assert np.abs(decoded[valid] - aug_input.sem_seg[valid]).max() <= 17
    with pytest.raises(ValueError, match="label map shape"):
        T.AugInput(image, sem_seg=labels[:5])
