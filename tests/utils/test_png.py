"""decode_png / encode_png against libspng (pyspng) and Pillow, on PNGs whose rows use every
filter type, and their errors on damaged files."""

import io
import struct
import zlib

import numpy as np
import pyspng
import pytest
from PIL import Image

from mask2former.evaluation.panoptic_quality import read_panoptic_png
from mask2former.evaluation.sem_seg_evaluation import read_label_png
from mask2former.utils import native
from mask2former.utils.png import decode_png, encode_png

needs_codec = pytest.mark.skipif(native.codec() is None, reason="mask2former._codec not built")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filtered_png(image: np.ndarray, filters: list[int], color_type: int) -> bytes:
    """A PNG of ``image`` (H, W, C) whose row y uses filter type filters[y], filtered by the
    definitions of the PNG specification (section 9), pixel by pixel."""
    height, width, bpp = image.shape
    rows = image.reshape(height, width * bpp).astype(int)
    stream = bytearray()
    for y in range(height):
        prior = rows[y - 1] if y else np.zeros(width * bpp, int)
        stream.append(filters[y])
        for i in range(width * bpp):
            left = rows[y, i - bpp] if i >= bpp else 0
            corner = prior[i - bpp] if i >= bpp else 0
            predictor = [0, left, prior[i], (left + prior[i]) // 2, _paeth(left, prior[i], corner)]
            stream.append((rows[y, i] - predictor[filters[y]]) % 256)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(bytes(stream))),
            _chunk(b"IEND", b""),
        ]
    )


@needs_codec
@pytest.mark.parametrize("channels, color_type", [(1, 0), (3, 2), (4, 6)])
def test_every_row_filter_decodes_as_libspng_does(channels, color_type):
    rng = np.random.default_rng(channels)
    for height, width in [(1, 1), (10, 1), (10, 7), (25, 33)]:
        # runs of equal pixels (what label maps hold) and noise, so that sums wrap around
        image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image[:, width // 2 :] = image[:, :1]
        filters = [int(f) for f in rng.integers(0, 5, height)]
        filters[: min(5, height)] = [4, 3, 2, 1, 0][: min(5, height)]  # each type on row 0
        png = _filtered_png(image, filters, color_type)
        got = decode_png(png, "x.png")
        expected = pyspng.load(png)
        assert np.array_equal(got, expected.reshape(got.shape)), (height, width, filters)
        assert np.array_equal(got.reshape(image.shape), image)
        padded = decode_png(png, "x.png", pad_to=4)  # RGB as 32-bit words: zeros added
        assert padded.shape == (height, width, 4)
        assert np.array_equal(padded[..., :channels], image) and not padded[..., channels:].any()


@pytest.mark.parametrize("with_codec", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (1, 9), (48, 64), (48, 64, 3), (5, 6, 4)])
def test_encoded_png_decodes_to_the_image_with_pillow_and_libspng(shape, with_codec, monkeypatch):
    """Filtered by the codec or by numpy: the same pixels."""
    if with_codec and native.codec() is None:
        pytest.skip("mask2former._codec is not built")
    if not with_codec:
        monkeypatch.setattr(native, "_CODEC", None)
        monkeypatch.setattr(native, "_LOGGED", True)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] = 17  # a constant half, as in label maps
    png = encode_png(image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    assert np.array_equal(pyspng.load(png).reshape(image.shape), image)
    if with_codec:
        assert np.array_equal(decode_png(png, "x.png"), image)
    if image.ndim == 3 and image.shape[2] == 4:  # the first three channels only
        rgb = np.asarray(Image.open(io.BytesIO(encode_png(image, channels=3))))
        assert np.array_equal(rgb, image[..., :3])


def test_encode_png_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="1, 3 or 4 channels of the image's 2; got 2"):
        encode_png(np.zeros((4, 4, 2), np.uint8))


@needs_codec
@pytest.mark.parametrize("mode", ["P", "I;16", "LA", "interlaced", "tRNS"])
def test_other_formats_are_left_to_the_libraries(mode, tmp_path):
    path = tmp_path / "x.png"
    image = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(4, 6))
    if mode == "interlaced":  # Pillow writes no interlaced PNG: set IHDR's interlace byte
        png = encode_png(np.asarray(image))
        header = png[16:28] + b"\x01"
        png = png[:8] + _chunk(b"IHDR", header) + png[33:]
        assert decode_png(png, str(path)) is None
        return
    if mode == "tRNS":
        image.save(path, transparency=3)
    else:
        image.convert(mode).save(path)
    assert decode_png(path.read_bytes(), str(path)) is None


def test_without_the_codec_the_readers_give_the_same_arrays(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (30, 40), dtype=np.uint8)
    ids = rng.integers(0, 256**3, (30, 40)).astype(np.uint32)
    (tmp_path / "l.png").write_bytes(encode_png(labels))
    Image.fromarray(ids.view(np.uint8).reshape(30, 40, 4)[..., :3]).save(tmp_path / "p.png")
    with_codec = read_label_png(str(tmp_path / "l.png")), read_panoptic_png(str(tmp_path / "p.png"))
    monkeypatch.setattr(native, "_CODEC", None)
    monkeypatch.setattr(native, "_LOGGED", True)
    assert decode_png(encode_png(labels), "l.png") is None
    without = read_label_png(str(tmp_path / "l.png")), read_panoptic_png(str(tmp_path / "p.png"))
    for a, b, expected in zip(with_codec, without, (labels, ids)):
        assert np.array_equal(a, expected) and np.array_equal(b, expected)


def _damaged(kind: str) -> bytes:
    png = bytearray(_filtered_png(np.full((6, 5, 3), 9, np.uint8), [1] * 6, 2))
    idat = png.index(b"IDAT")
    if kind == "truncated":
        return bytes(png[: len(png) // 2])
    if kind == "crc":
        png[idat + 6] ^= 0xFF
        return bytes(png)
    if kind == "filter":  # an unknown filter type (7), with a correct zlib stream and CRC
        stream = bytearray(zlib.decompress(png[idat + 4 : idat + 4 + _length(png, idat)]))
        stream[0] = 7
        return _rebuild(png, idat, zlib.compress(bytes(stream)))
    if kind == "short":  # one row too few
        stream = zlib.decompress(png[idat + 4 : idat + 4 + _length(png, idat)])
        return _rebuild(png, idat, zlib.compress(stream[:-16]))
    return _rebuild(png, idat, b"\x78\x9c not deflate data")  # "zlib"


def _length(png: bytes, idat: int) -> int:
    return struct.unpack(">I", png[idat - 4 : idat])[0]


def _rebuild(png: bytes, idat: int, payload: bytes) -> bytes:
    end = idat + 4 + _length(png, idat) + 4
    return bytes(png[: idat - 4]) + _chunk(b"IDAT", payload) + bytes(png[end:])


@needs_codec
@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "truncated"),
        ("crc", "CRC mismatch in chunk b'IDAT'"),
        ("zlib", "image data"),
        ("filter", "row 0 has unknown filter type 7"),
        ("short", "inflates to 80 bytes, not the 96"),
    ],
)
def test_damaged_files_are_named_in_the_error(kind, message, tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(_damaged(kind))
    with pytest.raises(ValueError, match=f"cannot decode PNG .*bad.png.*{message}"):
        decode_png(path.read_bytes(), str(path))
    with pytest.raises(ValueError, match="bad.png"):
        read_panoptic_png(str(path))


def test_a_missing_codec_is_reported_once_naming_why(monkeypatch, caplog):
    monkeypatch.setattr(native, "_CODEC", None)
    monkeypatch.setattr(native, "_LOGGED", False)
    monkeypatch.setattr(native, "_WHY", "ModuleNotFoundError: no _codec")
    with caplog.at_level("WARNING", logger="mask2former.utils.native"):
        assert native.codec() is None and native.codec() is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "mask2former.utils.native"]
    assert len(warnings) == 1 and "no _codec" in warnings[0]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="panoptic PNG not found: .*gone.png"):
        read_panoptic_png(str(tmp_path / "gone.png"))
    with pytest.raises(FileNotFoundError, match="semantic label image not found: .*gone.png"):
        read_label_png(str(tmp_path / "gone.png"))
