"""read_image on grayscale / RGBA / 16-bit / EXIF-rotated files, and its errors."""

import numpy as np
import pytest
from PIL import Image

from mask2former.data import BadSampleError, read_image
from mask2former.data.detection_utils import check_image_size, read_label_map

RNG = np.random.default_rng(0)


def test_rgb_png_in_each_format(tmp_path):
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_image(str(tmp_path / "a.png"), "RGB"), rgb)
    assert np.array_equal(read_image(str(tmp_path / "a.png"), "BGR"), rgb[:, :, ::-1])
    gray = read_image(str(tmp_path / "a.png"), "L")
    # ITU-R 601-2 luma, as PIL defines "L": independent formula, rounding tolerance 1.
    luma = rgb @ np.array([299, 587, 114]) / 1000
    assert gray.shape == (5, 7, 1) and np.abs(gray[:, :, 0] - luma).max() <= 1


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, (6, 4), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = read_image(str(tmp_path / "g.png"), "BGR")
    assert image.shape == (6, 4, 3) and image.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(image[:, :, c], gray)


def test_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(str(tmp_path / "a.png"), "RGB"), rgba[:, :, :3])


def test_16bit_image_scales_to_8bit_and_label_map_keeps_values(tmp_path):
    values = np.array([[0, 257, 65535], [1000, 40000, 12850]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")  # a 16-bit grayscale PNG
    image = read_image(str(tmp_path / "d.png"), "RGB")
    assert image.shape == (2, 3, 3)
    assert np.array_equal(image[:, :, 0], np.round(values / 257.0).astype(np.uint8))
    labels = read_label_map(str(tmp_path / "d.png"))  # e.g. ADE20K-full's 847 classes
    # float64, as the published mappers read label maps (exact below 2**53)
    assert labels.dtype == np.float64 and np.array_equal(labels, values)


def test_exif_rotation_is_applied(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)  # stored landscape, a white block top-left
    stored[:20, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display = stored rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=100)
    image = read_image(str(tmp_path / "r.jpg"), "RGB")
    expected = np.rot90(stored, k=-1)
    assert image.shape == expected.shape == (60, 40, 3)
    assert np.abs(image.astype(int) - expected).max() < 40  # JPEG ringing at the block edge
    assert image[5, 35].min() > 200 and image[5, 5].max() < 50  # block now top-right


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(BadSampleError, match=r"nothing\.jpg: file not found"):
        read_image(str(tmp_path / "nothing.jpg"), "RGB")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(BadSampleError, match=r"junk\.png: cannot decode"):
        read_image(str(tmp_path / "junk.png"), "RGB")
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSampleError, match=r"cut\.png: cannot decode"):
        read_image(str(tmp_path / "cut.png"), "RGB")


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="HSV"):
        read_image(str(tmp_path / "x.png"), "HSV")


def test_size_mismatch_names_file_and_both_sizes():
    record = {"file_name": "img_7.jpg", "height": 30, "width": 40}
    with pytest.raises(BadSampleError, match=r"img_7\.jpg: image is 41x30 .* says 40x30"):
        check_image_size(record, np.zeros((30, 41, 3), np.uint8))
    check_image_size(record, np.zeros((30, 40, 3), np.uint8))


def test_label_map_must_have_one_channel(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb_label.png")
    with pytest.raises(BadSampleError, match=r"rgb_label\.png: a label map must have one channel"):
        read_label_map(str(tmp_path / "rgb_label.png"))
