"""ICC profile, EXIF, XMP and PNG text survive pxzip (format 2 header entries), through the
library, the CLI and the Pillow plugin; --strip and metadata=False drop them; formats that cannot
hold an entry say so."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import pxzip
from pxzip import container, metadata
from pxzip.cli import cli

# the network's own path (the fallback coders' CLI and library tests: tests/test_fallback.py)
pytestmark = pytest.mark.usefixtures("network_only")

ICC = bytes(range(256)) * 3  # any bytes: pxzip stores the profile verbatim, Pillow does not parse it
XMP = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
TEXT = {"Source": "Kodak PCD0992", "Comment": "naïve café"}  # Latin-1 and not


@pytest.fixture(autouse=True)
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("PXZIP_MODELS", str(tiny_models["dir"]))


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "pxzip camera"  # Make
    exif[0x0110] = "model 1"  # Model
    return exif.tobytes()


def _png_with_metadata(path) -> Image.Image:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    info = PngInfo()
    for k, v in TEXT.items():
        info.add_text(k, v)
    info.add_itxt(metadata.XMP_PNG_KEY, XMP)
    img.save(path, icc_profile=ICC, exif=_exif(), pnginfo=info)
    return Image.open(path)


def _check(img: Image.Image, text: bool = True) -> None:
    assert img.info["icc_profile"] == ICC
    exif = img.getexif()
    assert exif[0x010F] == "pxzip camera" and exif[0x0110] == "model 1"
    xmp = img.info.get("xmp")
    assert xmp is not None and XMP.encode() in (xmp if isinstance(xmp, bytes) else xmp.encode())
    if text:
        assert {k: img.text[k] for k in TEXT} == TEXT


def test_library_round_trip(tmp_path, tiny_models):
    src = _png_with_metadata(tmp_path / "m.png")
    models = [tiny_models["pp_rgb"]]
    data = pxzip.compress(src, models)
    header, _ = container.unpack(data)
    assert data[2] >> 4 == 2 and [k for k, _ in header.metadata] == ["icc_profile", "exif", "xmp", "text"]
    out = pxzip.decompress_image(data, models)
    assert np.array_equal(np.asarray(out), np.asarray(src))
    _check(out)
    assert pxzip.compress(out, models) == data  # decoded image -> same entries -> same file
    plain = pxzip.compress(src, models, keep_metadata=False)
    assert plain[2] >> 4 == 1 and container.unpack(plain)[0].metadata == ()
    assert pxzip.compress(np.asarray(src), models) == plain  # arrays carry no metadata


def test_cli_round_trip_info_and_strip(tmp_path):
    _png_with_metadata(tmp_path / "m.png")
    run = CliRunner().invoke
    res = run(cli, ["compress", str(tmp_path / "m.png"), "-m", "tiny-pp-rgb", "-q"])
    assert res.exit_code == 0, res.output
    res = run(cli, ["info", str(tmp_path / "m.pxz")])
    assert "pxz format 2" in res.output and "ICC profile 768 B" in res.output and "PNG text" in res.output
    res = run(cli, ["decompress", str(tmp_path / "m.pxz"), "-o", str(tmp_path / "back.png")])
    assert res.exit_code == 0 and "note" not in res.stderr, res.output
    with Image.open(tmp_path / "back.png") as back:
        back.load()
        _check(back)
    res = run(cli, ["compress", str(tmp_path / "m.png"), "-o", str(tmp_path / "s.pxz"), "--strip", "-q"])
    assert res.exit_code == 0
    assert container.unpack((tmp_path / "s.pxz").read_bytes())[0].metadata == ()


def test_formats_that_cannot_hold_an_entry_say_so(tmp_path):
    _png_with_metadata(tmp_path / "m.png")
    run = CliRunner().invoke
    assert run(cli, ["compress", str(tmp_path / "m.png"), "-m", "tiny-pp-rgb", "-q"]).exit_code == 0
    res = run(cli, ["decompress", str(tmp_path / "m.pxz"), "-o", str(tmp_path / "back.bmp")])
    assert res.exit_code == 0
    assert "note: ICC profile, EXIF, XMP, PNG text not written (BMP cannot hold it" in res.stderr
    res = run(cli, ["decompress", str(tmp_path / "m.pxz"), "-o", str(tmp_path / "back.webp")])
    assert res.exit_code == 0 and "note: PNG text not written (WEBP" in res.stderr
    with Image.open(tmp_path / "back.webp") as webp:
        webp.load()
        _check(webp, text=False)


def test_pillow_plugin(tmp_path, tiny_models):
    src = _png_with_metadata(tmp_path / "m.png")
    src.save(tmp_path / "a.pxz", model=tiny_models["pp_rgb"])
    with Image.open(tmp_path / "a.pxz") as im:
        assert im.info["icc_profile"] == ICC  # from the header, before load()
        im.load()
        _check(im)
    src.save(tmp_path / "b.pxz", model=tiny_models["pp_rgb"], metadata=False)
    with Image.open(tmp_path / "b.pxz") as im:
        assert "icc_profile" not in im.info


def test_huge_entries_are_refused(tiny_models):
    img = Image.new("RGB", (2, 2))
    img.info["icc_profile"] = b"\x00" * (container.MAX_METADATA_ENTRY + 1)
    with pytest.raises(pxzip.UnsupportedImageError, match="ICC profile of 16777217 bytes is too large"):
        pxzip.compress(img, tiny_models["pp_rgb"])


def test_damaged_metadata_is_caught_by_the_checksum(tmp_path, tiny_models):
    src = _png_with_metadata(tmp_path / "m.png")
    data = bytearray(pxzip.compress(src, tiny_models["pp_rgb"]))
    at = bytes(data).index(ICC[:16]) + 5  # a byte inside the stored ICC profile
    data[at] ^= 0x01
    with pytest.raises(pxzip.ChecksumError):
        pxzip.decompress_image(bytes(data), tiny_models["pp_rgb"])


def _with_text_entry(data: bytes, pixels: np.ndarray, value: bytes) -> bytes:
    """`data` with its PNG text entry replaced by raw `value` and a checksum that matches again (a
    foreign writer's file: the CRC is no proof that an entry is well formed)."""
    header, payload = container.unpack(data)
    f = container.fields(data)
    entries = tuple((k, value if k == "text" else v) for k, v in header.metadata)
    f["meta"] = container.metadata_section(entries)
    prefix = container.MAGIC + b"".join(f[k] for k in container.FIELDS[: container.FIELDS.index("crc")])
    crc = zlib.crc32(prefix, container.pixel_crc(pixels))
    return prefix + crc.to_bytes(4, "little") + payload


@pytest.mark.parametrize(
    "value",
    [
        b"\xff",
        b"[1]",
        b'{"k": 5}',
        b'{"": "x"}',
        b'{"\\u20ac": "x"}',
        ("{" + '"a' * 50 + '": "b"}').encode(),
        b'{"k": "\\ud800"}',
        b"[" * 100000,
    ],
)
def test_malformed_text_entries_are_format_errors(tmp_path, tiny_models, value):
    """Whatever a text entry holds, a reader says "corrupt" in one line: no traceback from JSON,
    Unicode or Pillow, in the library, the CLI or the Pillow plugin."""
    src = _png_with_metadata(tmp_path / "m.png")
    data = _with_text_entry(pxzip.compress(src, tiny_models["pp_rgb"]), np.asarray(src), value)
    with pytest.raises(pxzip.FormatError, match="corrupt pxz file: PNG text entry"):
        pxzip.decompress_image(data, tiny_models["pp_rgb"])
    (tmp_path / "bad.pxz").write_bytes(data)
    res = CliRunner().invoke(cli, ["decompress", str(tmp_path / "bad.pxz")])
    assert res.exit_code == pxzip.FormatError.exit_code and isinstance(res.exception, SystemExit), res.output
    assert res.stderr.count("\n") == 1 and "PNG text entry" in res.stderr
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(Image.UnidentifiedImageError):  # the plugin's "corrupt": Pillow's "not my format"
        Image.open(tmp_path / "bad.pxz")


def test_the_reader_accepts_what_the_writer_writes(tmp_path, tiny_models):
    """Keywords PNG cannot hold (set by hand on .text) are left out when compressing, not stored
    for readers to refuse."""
    img = Image.new("RGB", (2, 2))
    img.text = {"ok": "kept", "": "empty", "x" * 80: "long", "\u20ac": "not Latin-1"}
    data = pxzip.compress(img, tiny_models["pp_rgb"])
    assert pxzip.decompress_image(data, tiny_models["pp_rgb"]).text == {"ok": "kept"}


def test_webp_output_keeps_the_colour_of_transparent_pixels(tmp_path):
    """libwebp zeroes fully transparent pixels unless told `exact`: pxzip writes WebP losslessly."""
    rgba = np.random.default_rng(5).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # a transparent row with colours
    Image.fromarray(rgba).save(tmp_path / "a.png")
    run = CliRunner().invoke
    assert (
        run(cli, ["compress", str(tmp_path / "a.png"), "-m", "tiny-pp-rgb", "-m", "tiny-pp-gray", "-q"]).exit_code == 0
    )
    res = run(cli, ["decompress", str(tmp_path / "a.pxz"), "-o", str(tmp_path / "b.webp")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "b.webp") as back:
        assert np.array_equal(np.asarray(back.convert("RGBA")), rgba)


def test_image_writer_errors_are_one_line(tmp_path, monkeypatch):
    """WebP's size limit is refused before the (slow) decode; any other error of a Pillow encoder
    is one line too, with no output left behind."""
    wide = np.random.default_rng(6).integers(0, 256, (1, 16384), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "w.png")
    run = CliRunner().invoke
    assert run(cli, ["compress", str(tmp_path / "w.png"), "-m", "tiny-pp-gray", "-q"]).exit_code == 0
    res = run(cli, ["decompress", str(tmp_path / "w.pxz"), "-o", str(tmp_path / "w.webp")])
    assert res.exit_code == 2 and "cannot write a 16384x1 image as WEBP" in res.stderr, res.output
    assert not (tmp_path / "w.webp").exists()

    real_save = Image.Image.save

    def broken_save(self, *args, **kw):  # the 1x1 probe saves; the real image fails
        if self.size != (1, 1):
            raise ValueError("encoder exploded")
        return real_save(self, *args, **kw)

    Image.fromarray(wide[:, :40]).save(tmp_path / "src.png")
    assert (
        run(cli, ["compress", str(tmp_path / "src.png"), "-o", str(tmp_path / "s.pxz"), "-m", "tiny-pp-gray"]).exit_code
        == 0
    )
    monkeypatch.setattr(Image.Image, "save", broken_save)
    for out in [tmp_path / "out.png", "-"]:
        res = run(cli, ["decompress", str(tmp_path / "s.pxz"), "-o", str(out)])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
        assert res.stderr.strip().endswith("as PNG: encoder exploded") and res.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pxz", "src.png", "w.png", "w.pxz"]
