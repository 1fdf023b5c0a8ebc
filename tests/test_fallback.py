"""Fallback plane coders (format 6): context mixing, PNG deflate, the per-plane choice, never bigger than PNG."""

from __future__ import annotations

import io
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pxzip
from pxzip import cmix, codec, container, fallback
from pxzip.errors import FormatError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import synthetic  # noqa: E402


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 1), (17, 9, 3), (40, 33, 1)])
def test_cmix_round_trip(nbits, shape):
    rng = np.random.default_rng(nbits * 100 + shape[0])
    sym = rng.integers(0, 1 << nbits, shape).astype(np.uint8)
    sym[: shape[0] // 2] = sym[0, 0]  # a flat part and a noisy part
    data = cmix.encode(sym, nbits)
    back, used = cmix.decode(data, shape, nbits)
    assert np.array_equal(back, sym)
    assert used <= len(data) + 4


def test_cmix_takes_read_only_arrays():
    sym = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    sym.flags.writeable = False  # as np.asarray(a PIL image) gives
    assert cmix.encode(sym, 4) == cmix.encode(sym.copy(), 4)


def test_cmix_pinned_bytes():
    """The coder's bytes for fixed planes never change (a changed predictor would break old files)."""
    y, x = np.mgrid[0:24, 0:20]
    values = (((x // 3) ^ (y // 4)) % 5).astype(np.uint8)[:, :, None]
    bilevel = (((x * 7 + y * 3) % 11) < 3).astype(np.uint8)[:, :, None]
    for sym, nbits, crc, size in ((values, 3, 4096198998, 41), (bilevel, 1, 4151377000, 9)):
        data = cmix.encode(sym, nbits)
        assert (zlib.crc32(data), len(data)) == (crc, size)


def test_cmix_bilevel_last_context_stays_in_its_table():
    """A 1-bit plane where the last context reaches the entry after its table's end: that entry was
    once outside the coder's memory (run-to-run different bytes that did not decode); now it is the
    table's own, the same bytes every time."""
    sym = (np.random.default_rng(39).random((12, 10, 1)) < 0.3).astype(np.uint8)
    mask = (1 << cmix.table_bits(12, 10, 1, 1)) - 1
    hashes = np.zeros(cmix.N_CONTEXTS, np.int64)
    reach = 0
    for y in range(12):
        for x in range(10):
            cmix._bilevel_contexts(sym, y, x, hashes)
            reach += (cmix._mix32(hashes[cmix.N_CONTEXTS - 1]) & mask) == mask
    assert reach == 1  # the plane exercises that entry
    data = cmix.encode(sym, 1)
    assert data.hex() == "9ba20a5645b087a4e967acfa94e2f705"
    assert all(cmix.encode(sym.astype(bool), 1) == data for _ in range(5))
    assert np.array_equal(cmix.decode(data, sym.shape, 1)[0], sym)


def test_cmix_hash_is_the_32_bit_product():
    for h in (0, 1, 2**31, 2**32 - 1, 12345678901, 2**40 + 5):
        ref = ((h & 0xFFFFFFFF) * 0x9E3779B1) & 0xFFFFFFFF
        assert cmix._mix32(h) == ref ^ (ref >> 15)


def test_cmix_learns_structure():
    """A flat 1-bit page costs a small fraction of a bit per pixel; noise costs at most about its entropy."""
    page = np.asarray(synthetic.page(np.random.default_rng(0), 200, 150), np.uint8)[:, :, None]
    assert 8 * len(cmix.encode(page, 1)) < 0.15 * page.size
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 1)).astype(np.uint8)
    assert len(cmix.encode(noise, 8)) < 1.1 * noise.size


def _png_rows(sym: np.ndarray, filters: list[int], depth: int = 8) -> bytes:
    """PNG rows filtered by our own hand (every filter type), as a zlib stream: a DEFLATE plane."""
    h, w, c = sym.shape
    bpp = max(1, c * depth // 8)
    if depth < 8:
        packed = np.packbits(np.unpackbits(sym.reshape(h, w, 1), axis=2)[:, :, 8 - depth :].reshape(h, -1), axis=1)
    else:
        packed = sym.reshape(h, w * c)
    raw, prev = [], np.zeros(packed.shape[1], np.int64)
    for y in range(h):
        row = packed[y].astype(np.int64)
        f = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        if f == 0:
            pred = np.zeros_like(row)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) >> 1
        else:
            pred = np.zeros_like(row)
            for i in range(len(row)):  # Paeth needs the reconstructed left neighbour: row[i - bpp]
                a, b, cc = (row[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred[i] = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
        raw.append(bytes([f]) + ((row - pred) & 255).astype(np.uint8).tobytes())
        prev = row
    return zlib.compress(b"".join(raw))


@pytest.mark.parametrize("channels,depth", [(1, 8), (3, 8), (1, 1), (1, 2), (1, 4)])
def test_deflate_every_filter(channels, depth):
    rng = np.random.default_rng(depth)
    sym = rng.integers(0, 1 << depth, (11, 13, channels)).astype(np.uint8)
    code = container.PlaneCode(container.DEFLATE, depth, _png_rows(sym, [0, 1, 2, 3, 4], depth))
    assert np.array_equal(fallback.decode(code, sym.shape), sym)


@pytest.mark.parametrize("channels,colours", [(3, 1), (3, 2), (3, 7), (3, 256), (1, 3), (1, 16)])
def test_indexed_round_trip(channels, colours):
    rng = np.random.default_rng(colours)
    table = rng.choice(256, (colours, channels))
    sym = table[rng.integers(0, colours, (13, 11))].astype(np.uint8)
    code = fallback.encode_indexed(sym)
    assert code is not None and code.method == container.INDEXED
    assert np.array_equal(fallback.decode(code, sym.shape), sym)


def test_indexed_is_only_for_few_colours():
    rng = np.random.default_rng(0)
    assert fallback.encode_indexed(rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)) is None  # 1,600 colours
    assert fallback.encode_indexed(np.arange(17, dtype=np.uint8).reshape(1, 17, 1)) is None  # 17 gray levels


def test_indexed_damage_is_a_format_error():
    sym = np.array([[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [1, 2, 3]]], np.uint8)
    code = fallback.encode_indexed(sym)
    assert code.param == 1 and code.data[0] == 2
    for data in (b"", b"\x80", b"\x03" + code.data[1:], code.data[:5], b"\x00" + code.data[1:]):
        with pytest.raises(FormatError):
            fallback.decode(container.PlaneCode(container.INDEXED, 1, data), sym.shape)


def test_deflate_hostile_streams():
    sym = np.zeros((8, 8, 1), np.uint8)
    good = _png_rows(sym, [0])
    bad = [
        zlib.compress(b"\0" * 10_000_000),  # inflates far past the plane: stopped at the plane's size
        zlib.compress(b"\0" * 10),  # too short
        good[:-3],  # truncated
        zlib.compress(b"\7" + b"\0" * 8 + b"\0" * 9 * 7),  # filter type 7
        b"not zlib at all",
    ]
    for data in bad:
        with pytest.raises(FormatError):
            fallback.decode(container.PlaneCode(container.DEFLATE, 8, data), (8, 8, 1))


def test_deflate_is_pngs_own_stream():
    """The DEFLATE candidate is what Pillow's PNG writer (optimize=True) stores, so never bigger than it."""
    img = synthetic.make("palette-flat-16", np.random.default_rng(2), 70, 50)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    code = fallback.encode_deflate(np.asarray(img)[:, :, None], "P", bytes(img.getpalette("RGB")))
    assert code is not None and code.data in buf.getvalue() and code.param == 4


def _png_size(img: Image.Image) -> int:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return len(buf.getvalue())


def test_never_bigger_than_png(tiny_models):
    """A subset of benchmarks/never_bigger.py's 200 images: every mode, sides 1..64, even with a tiny
    (untrained) network: every file decodes exactly and is at most its PNG (optimize) + 32 bytes."""
    for name, img in synthetic.collection(n=40, seed=5, max_side=64):
        models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
        data = pxzip.compress(img, models)
        back = pxzip.decompress_image(data, models)
        assert back.mode == img.mode and np.array_equal(np.asarray(back), np.asarray(img)), name
        assert len(data) <= _png_size(img) + 32, (name, len(data), _png_size(img))


def test_palette_as_indices_beats_png_and_needs_no_model():
    img = synthetic.make("palette-flat-64", np.random.default_rng(7), 100, 80)
    data = pxzip.compress(img)
    h, _ = container.unpack(data)
    assert data[2] >> 4 == 6 and h.coders[0].method == container.CMIX and not h.palette_as_rgb
    assert h.model_ids == (container.NO_MODEL,)
    assert len(data) < _png_size(img)
    assert np.array_equal(np.asarray(pxzip.decompress_image(data, [])), np.asarray(img))  # no model needed


def test_no_fallback_is_the_old_format():
    img = synthetic.make("page", np.random.default_rng(1), 60, 40)
    gray = "pxz-gray-cifar"  # context mixing beats it on 1-bit pages (the bilevel default often does not lose)
    assert pxzip.compress(img, gray, fallback=False)[2] >> 4 < 6
    assert pxzip.compress(img, gray)[2] >> 4 == 6


def test_fallback_thread_writes_the_same_bytes(monkeypatch):
    """Large planes run their fallback coders on a second thread: the same choice, the same file,
    whether the fallback or the network wins, and for every plane of an RGBA image."""
    from pxzip import codec

    rng = np.random.default_rng(8)
    rgb = synthetic.photo(rng, 48, 40)
    alpha = Image.fromarray(np.where(np.arange(48)[None, :] < 20, 255, 0).repeat(40, 0).astype(np.uint8))
    images = [synthetic.make("page", rng, 60, 40), Image.merge("RGBA", (*rgb.split(), alpha)), rgb]
    for img in images:
        monkeypatch.setattr(codec, "FALLBACK_THREAD_PIXELS", 1 << 40)
        inline = pxzip.compress(img)
        monkeypatch.setattr(codec, "FALLBACK_THREAD_PIXELS", 1)
        assert pxzip.compress(img) == inline


def test_mixed_planes_rgba():
    """RGBA: the network keeps the photo's colours while indexed colours take a two-level alpha."""
    rgb = synthetic.photo(np.random.default_rng(3), 48, 40)
    alpha = Image.fromarray(np.where(np.arange(48)[None, :] < 20, 255, 0).repeat(40, 0).astype(np.uint8))
    img = Image.merge("RGBA", (*rgb.split(), alpha))
    data = pxzip.compress(img)
    h, _ = container.unpack(data)
    assert [c.method for c in h.coders] == [container.NETWORK, container.INDEXED]
    assert h.model_ids[1] == container.NO_MODEL and h.model_ids[0] != container.NO_MODEL
    assert np.array_equal(pxzip.decompress(data), np.asarray(img))


def _v6(img) -> bytes:
    # 1-bit images through the gray model (the trained bilevel default often beats context mixing)
    data = pxzip.compress(img, "pxz-gray-cifar" if img.mode == "1" else None)
    assert data[2] >> 4 == 6
    return data


def test_v6_header_is_canonical():
    img = synthetic.make("page", np.random.default_rng(4), 40, 30)
    data = _v6(img)
    f = container.fields(data)
    assert container.join(f) == data
    variants = {
        "unknown coder": f["coders"][:0] + b"\x07" + f["coders"][1:],
        "network with data": b"\x00\x01",
        "bits 0": f["coders"][:1] + b"\x00" + f["coders"][2:],
        "bits 9": f["coders"][:1] + b"\x09" + f["coders"][2:],
        "size past the end": f["coders"][:2] + container.varint(10**6) + f["coders"][2:],
    }
    for what, coders in variants.items():
        bad = container.join(f | {"coders": coders})
        with pytest.raises(FormatError):
            codec.decompress(bad)
        assert what
    # a model id in a slot no plane uses is refused
    with pytest.raises(FormatError, match="no plane uses"):
        container.unpack(container.join(f | {"ids": b"\x13\x15"}))


def test_v6_damage_is_caught():
    img = synthetic.make("palette-flat-16", np.random.default_rng(6), 50, 40)
    data = _v6(img)
    f = container.fields(data)
    n = len(f["coders"])
    for k in (3, n // 2, n - 1):  # bytes inside the coded plane
        c = bytearray(f["coders"])
        c[k] ^= 0x40
        with pytest.raises((FormatError, pxzip.ChecksumError)):
            codec.decompress(container.join(f | {"coders": bytes(c)}))
    for cut in (len(data) - 1, len(data) - 5, len(data) // 2):
        with pytest.raises(FormatError):
            codec.decompress(data[:cut])


# ---------------------------------------------------------------- CLI, info, rough edges


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_cli_info_names_the_plane_coders_and_verifies(tmp_path):
    from click.testing import CliRunner

    from pxzip.cli import cli

    src = _save(synthetic.make("drawing", np.random.default_rng(8), 60, 50), tmp_path / "d.png")
    runner = CliRunner()
    assert runner.invoke(cli, ["compress", str(src), "-o", str(tmp_path / "d.pxz")]).exit_code == 0
    r = runner.invoke(cli, ["info", str(tmp_path / "d.pxz")])
    assert r.exit_code == 0 and "pxz format 6" in r.output and "planes context mixing (1 bit per symbol" in r.output
    assert "models none" in r.output and "not verified" in r.output
    r = runner.invoke(cli, ["info", "--verify", str(tmp_path / "d.pxz")])
    assert r.exit_code == 0 and ", verified" in r.output
    assert runner.invoke(cli, ["compress", str(src), "-o", str(tmp_path / "n.pxz"), "--no-fallback"]).exit_code == 0
    assert "pxz format 1" in runner.invoke(cli, ["info", str(tmp_path / "n.pxz")]).output


def test_info_on_a_truncated_file_reports_the_damage(tmp_path):
    """Without --verify info says it did not verify; with it, the damage exits as decompress does."""
    from click.testing import CliRunner

    from pxzip.cli import cli

    img = Image.fromarray(np.asarray(synthetic.photo(np.random.default_rng(9), 24, 20)))
    data = pxzip.compress(img, fallback=False)
    bad = tmp_path / "cut.pxz"
    bad.write_bytes(data[: len(data) - 40])
    runner = CliRunner()
    plain = runner.invoke(cli, ["info", str(bad)])
    assert plain.exit_code == 0 and "not verified" in plain.output
    checked = runner.invoke(cli, ["info", "--verify", str(bad)])
    dec = runner.invoke(cli, ["decompress", str(bad), "-o", str(tmp_path / "x.png")])
    assert checked.exit_code == dec.exit_code != 0
    assert "damaged" in checked.output or "corrupt" in checked.output
    assert not (tmp_path / "x.png").exists()


def test_a_folder_without_r_says_use_r(tmp_path):
    from click.testing import CliRunner

    from pxzip.cli import cli

    (tmp_path / "photos").mkdir()
    for cmd in ("compress", "decompress"):
        r = CliRunner().invoke(cli, [cmd, str(tmp_path / "photos")])
        assert r.exit_code == 2 and "is a folder: use -r" in r.output


def test_pillow_plugin_fallback_option(tmp_path):
    img = synthetic.make("palette-flat-16", np.random.default_rng(10), 40, 30)
    img.save(tmp_path / "a.pxz")
    img.save(tmp_path / "b.pxz", fallback=False)
    assert (tmp_path / "a.pxz").read_bytes()[2] >> 4 == 6 and (tmp_path / "b.pxz").read_bytes()[2] >> 4 < 6
    with Image.open(tmp_path / "a.pxz") as back:
        assert back.mode == "P" and np.array_equal(np.asarray(back), np.asarray(img))
        assert back.getpalette() == img.getpalette()


def test_shared_data_found_from_the_current_folder(tmp_path, monkeypatch):
    """After `pip install .` the package is not in the checkout: ../shared/data from the cwd is found."""
    from pxzip import data

    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.delenv("PXZIP_DATA", raising=False)
    monkeypatch.setattr(data, "__file__", str(tmp_path / "site-packages" / "pxzip" / "data.py"))
    monkeypatch.chdir(tmp_path / "repo")
    assert data.shared_data_dir() == tmp_path / "shared" / "data"


# ---------------------------------------------------------------- pinned format-6 files

EXPECTED = Path(__file__).resolve().parent / "expected"
PINNED = {
    "fb-p": container.CMIX,
    "fb-one": container.CMIX,
    "fb-rgba": container.NETWORK,
    "fb-repeats": container.DEFLATE,
}
PINNED_SECOND = {"fb-rgba": container.INDEXED}  # the second plane's coder, where there is one


@pytest.mark.parametrize("name", PINNED)
def test_pinned_format6_files(name):
    """tests/expected/fb-*.pxz (make_expected.py fallback) decode to their pixels in every later version;
    those of our own coders (context mixing, the network) re-encode to the same bytes. A deflate plane's
    bytes are zlib's and Pillow's, which may change between their versions: pinned for decoding only."""
    from pxzip import zoo

    data = (EXPECTED / f"{name}.pxz").read_bytes()
    h, _ = container.unpack(data)
    assert data[2] >> 4 == 6 and h.coders[0].method == PINNED[name]
    assert name not in PINNED_SECOND or h.coders[1].method == PINNED_SECOND[name]
    models = (
        None
        if name == "fb-rgba"
        else [zoo.load_file(EXPECTED / f"pinned-{n}.safetensors") for n in ("pp-rgb", "gated-gray")]
    )
    img = Image.open(EXPECTED / f"{name}.png")
    back = pxzip.decompress_image(data, models)
    assert back.mode == img.mode and np.array_equal(np.asarray(back), np.asarray(img))
    if PINNED[name] != container.DEFLATE:
        assert pxzip.compress(img, models) == data
