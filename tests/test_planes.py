"""Tests for image modes <-> coded planes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pxzip import planes
from pxzip.errors import ChecksumError, UnsupportedImageError

SIZES = [(1, 1), (3, 5), (17, 9)]
rng = np.random.default_rng(0)


def _random_image(mode: str, w: int, h: int) -> Image.Image:
    if mode == "1":
        return planes.to_image(rng.integers(0, 2, (h, w)).astype(bool))
    if mode == "P":
        img = Image.frombytes("P", (w, h), rng.integers(0, 16, (h, w), dtype=np.uint8).tobytes())
        img.putpalette(rng.permutation(256)[:48].astype(np.uint8).tobytes())  # 16 distinct colors
        return img
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    return planes.to_image(rng.integers(0, 256, (h, w, channels), dtype=np.uint8))


def _assert_same(a: Image.Image, b: Image.Image) -> None:
    assert a.mode == b.mode and a.size == b.size
    assert np.array_equal(np.asarray(a), np.asarray(b))
    if a.mode == "P":
        assert a.getpalette() == b.getpalette()
        assert a.info.get("transparency") == b.info.get("transparency")


def _round_trip(img: Image.Image) -> planes.Split:
    s = planes.split(img)
    assert len(s.planes) == len(s.kinds)
    for plane, kind in zip(s.planes, s.kinds, strict=True):
        assert plane.dtype == np.uint8 and plane.flags.c_contiguous
        assert plane.shape == (img.height, img.width, 3 if kind == "rgb" else 1)
    # Decoded planes arrive as fresh arrays, so merge from copies.
    pixels = planes.merge(s.mode, [p.copy() for p in s.planes], s.palette, s.transparency, s.palette_as_rgb)
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, s.pixels)
    _assert_same(planes.to_pil(s.mode, pixels, s.palette, s.transparency), img)
    return s


@pytest.mark.parametrize("mode", planes.SUPPORTED_MODES)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_every_mode(mode: str, size: tuple[int, int], tmp_path: Path) -> None:
    img = _random_image(mode, *size)
    s = _round_trip(img)
    expected = {
        "L": ["gray"],
        "LA": ["gray", "gray"],
        "RGB": ["rgb"],
        "RGBA": ["rgb", "gray"],
        "P": ["rgb"],
        "1": ["bilevel"],
    }[mode]
    assert s.kinds == expected
    # Through a PNG file and back, as the CLI will see it.
    path = tmp_path / "img.png"
    img.save(path)
    with Image.open(path) as reopened:
        reopened.load()
        _round_trip(reopened)
        _assert_same(reopened, img)


def test_pixels_layout() -> None:
    s = planes.split(planes.to_image(np.array([[True, False, True]])))
    assert s.pixels.tolist() == [[1, 0, 1]] and s.planes[0][..., 0].tolist() == [[255, 0, 255]]
    rgba = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)
    s = planes.split(planes.to_image(rgba))
    assert np.array_equal(s.pixels, rgba)
    assert np.array_equal(s.planes[1][..., 0], rgba[..., 3])


def test_palette_duplicate_colors_fall_back_to_gray(tmp_path: Path) -> None:
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.frombytes("P", (3, 2), idx.tobytes())
    img.putpalette(bytes([10, 20, 30, 10, 20, 30, 5, 5, 5]))  # entries 0 and 1 equal
    s = _round_trip(img)
    assert not s.palette_as_rgb and s.kinds == ["gray"]
    assert np.array_equal(s.planes[0][..., 0], idx)
    img.save(tmp_path / "dup.png")
    with Image.open(tmp_path / "dup.png") as reopened:
        _round_trip(reopened)


def test_palette_unused_duplicate_after_used_color_stays_rgb() -> None:
    # Entry 2 repeats entry 0's color but is unused: the color still names index 0.
    img = Image.frombytes("P", (2, 1), bytes([0, 1]))
    img.putpalette(bytes([1, 2, 3, 4, 5, 6, 1, 2, 3]))
    assert _round_trip(img).palette_as_rgb


def test_palette_used_entry_shadowed_by_earlier_duplicate_is_gray() -> None:
    # Entry 2 is used but entry 0 has the same color, so RGB could not say which.
    img = Image.frombytes("P", (2, 1), bytes([2, 1]))
    img.putpalette(bytes([1, 2, 3, 4, 5, 6, 1, 2, 3]))
    assert not _round_trip(img).palette_as_rgb


def test_palette_index_beyond_palette_and_empty_palette() -> None:
    img = Image.frombytes("P", (2, 1), bytes([0, 9]))
    img.putpalette(bytes(range(6)))
    assert not _round_trip(img).palette_as_rgb
    s = _round_trip(Image.frombytes("P", (2, 2), bytes([0, 1, 2, 3])))
    assert s.palette == b"" and not s.palette_as_rgb


@pytest.mark.parametrize("trns", [0, 3, b"\x00\x80\xff\x10", b"\xff\xff\xff\xff", b"\x80"])
def test_palette_transparency_png_round_trip(trns: int | bytes, tmp_path: Path) -> None:
    img = _random_image("P", 5, 3)
    img.info["transparency"] = trns
    s = _round_trip(img)
    assert s.transparency is not None
    path = tmp_path / "t.png"
    img.save(path)
    with Image.open(path) as reopened:
        reopened.load()
        assert reopened.info.get("transparency") == trns
        s2 = _round_trip(reopened)
        back = planes.to_pil(s2.mode, s2.pixels, s2.palette, s2.transparency)
        back.save(tmp_path / "back.png")
    assert (tmp_path / "back.png").read_bytes() == path.read_bytes()


def test_int_transparency_normalised() -> None:
    img = _random_image("P", 3, 3)
    img.info["transparency"] = 2
    s = planes.split(img)
    assert s.transparency == b"\xff\xff\x00"
    assert planes.to_pil("P", s.pixels, s.palette, s.transparency).info["transparency"] == 2


def test_rgba_palette_alpha_becomes_transparency() -> None:
    img = Image.frombytes("P", (2, 1), bytes([0, 1]))
    img.putpalette(bytes([1, 2, 3, 0, 4, 5, 6, 200]), "RGBA")
    s = planes.split(img)
    assert s.palette == bytes([1, 2, 3, 4, 5, 6]) and s.transparency == b"\x00\xc8"


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "CMYK", "YCbCr", "LAB", "HSV", "PA", "La"])
def test_refused_modes(mode: str) -> None:
    img = Image.new(mode, (2, 2))
    with pytest.raises(UnsupportedImageError, match=f"unsupported image mode '{mode}'"):
        planes.split(img)
    with pytest.raises(UnsupportedImageError):
        planes.to_image(img)


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((3, 4), "L"), ((3, 4, 1), "L"), ((3, 4, 2), "LA"), ((3, 4, 3), "RGB"), ((3, 4, 4), "RGBA")],
)
def test_numpy_inputs(shape: tuple[int, ...], mode: str) -> None:
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    img = planes.to_image(arr)
    assert img.mode == mode and img.size == (4, 3)
    expected = arr[:, :, 0] if shape == (3, 4, 1) else arr
    assert np.array_equal(planes.split(img).pixels, expected)


def test_numpy_bool_is_1bit() -> None:
    bits = rng.integers(0, 2, (3, 4)).astype(bool)
    img = planes.to_image(bits)
    assert img.mode == "1" and np.array_equal(np.asarray(img), bits)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 2), np.float32),
        np.zeros((2, 2), np.uint16),
        np.zeros((2, 2, 5), np.uint8),
        np.zeros((2,), np.uint8),
        np.zeros((2, 2, 3), bool),
        np.zeros((0, 3), np.uint8),
        "x.png",
    ],
)
def test_refused_inputs(bad: object) -> None:
    with pytest.raises(UnsupportedImageError) as info:
        planes.to_image(bad)
    assert "\n" not in str(info.value)


def test_merge_rejects_impossible_planes() -> None:
    with pytest.raises(ChecksumError):
        planes.merge("1", [np.full((1, 2, 1), 7, np.uint8)])
    img = Image.frombytes("P", (1, 1), b"\x00")
    img.putpalette(bytes([1, 2, 3]))
    s = planes.split(img)
    with pytest.raises(ChecksumError):
        planes.merge("P", [np.zeros((1, 1, 3), np.uint8)], s.palette, None, True)
    with pytest.raises(ValueError):
        planes.merge("RGB", [np.zeros((1, 1, 1), np.uint8)])


def test_truncated_file_is_unsupported_image(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    _random_image("RGB", 17, 9).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with Image.open(path) as img, pytest.raises(UnsupportedImageError, match="cannot read image"):
        planes.split(img)
