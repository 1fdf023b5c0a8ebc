"""pxzip.dataset without Ray: one worker's groups, tar shards, names, stores and the resume check."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

import pxzip
from pxzip import codec, container, dataset, imagefile
from pxzip.dataset import Coder, Options, Store


def _png(path, seed: int, mode: str = "RGB", size: int = 10) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path.read_bytes()


def _items(src: Store, names):
    return [(n, lambda n=n: imagefile.open_image(src.read(n))) for n in names]


def test_names_keys_groups_and_clashes():
    assert dataset.pxz_name("a/b.png") == "a/b.pxz"
    assert dataset.member_key("a/b.v2.png") == "a/b_v2" and dataset.member_key("x.png") == "x"
    assert dataset.shard_name(3) == "shard-000003.tar"
    assert dataset.groups_of(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert dataset.groups_of(list("abcd"), 64, workers=2) == [["a", "b"], ["c", "d"]]  # every worker gets one
    assert dataset.groups_of([], 4) == []
    assert dataset.clashes(["a.bmp", "a.png", "b.png"], dataset.pxz_name) == {
        "a.png": "its output a.pxz is already the output of a.bmp"
    }


def test_shards_are_reproducible_bytes():
    members = [("a.pxz", b"one"), ("b/c.pxz", b"two" * 100)]
    blob = dataset.write_tar(members)
    assert blob == dataset.write_tar(members)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert [(m.name, m.mtime, m.uid, m.mode) for m in tar] == [("a.pxz", 0, 0, 0o644), ("b/c.pxz", 0, 0, 0o644)]


def test_store_lists_reads_and_writes_atomically(tmp_path):
    store = Store(tmp_path)
    store.write("x/y/z.pxz", b"abc")
    assert store.read("x/y/z.pxz") == b"abc" and store.exists("x/y/z.pxz") and not store.exists("nope")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "x" / "a.PNG").write_bytes(b"")
    assert store.list({".pxz", ".png"}) == ["x/a.PNG", "x/y/z.pxz"]
    with pytest.raises(pxzip.PxzError, match="cannot read nope"):
        store.read("nope")
    with pytest.raises(pxzip.UsageError, match="no such folder"):
        Store(tmp_path / "missing").list({".png"})
    uri = Store(tmp_path.as_uri())  # the pyarrow.fs path
    uri.write("u/v.pxz", b"def")
    assert (tmp_path / "u" / "v.pxz").read_bytes() == b"def" and uri.list({".pxz"}) == ["u/v.pxz", "x/y/z.pxz"]
    with pytest.raises(pxzip.UsageError):
        Store("nosuchscheme://bucket/x").list({".png"})


def test_a_group_codes_to_the_single_process_bytes_and_rows(tmp_path):
    src, out = Store(tmp_path / "in"), Store(tmp_path / "out")
    raws = {f"{m}.png": _png(tmp_path / "in" / f"{m}.png", k, m) for k, m in enumerate(("RGB", "L", "RGBA", "1"))}
    (tmp_path / "in" / "bad.png").write_bytes(b"nope")
    rows = Coder(Options()).compress_files(_items(src, list(raws) + ["bad.png"]), out)
    for r, (name, raw) in zip(rows, raws.items()):
        data = (tmp_path / "out" / dataset.pxz_name(name)).read_bytes()
        assert data == pxzip.compress(imagefile.open_image(raw))
        assert r["status"] == "coded" and r["bytes"] == len(data) and r["output"] == dataset.pxz_name(name)
        assert r["sha256"] == dataset.pixels_sha256(pxzip.decompress(data)) and r["mode"] == name[:-4]
        assert set(r) == set(dataset.ROW_KEYS)
    assert rows[-1]["status"] == "error" and "not an image file" in rows[-1]["error"]
    assert set(rows[-1]) == set(dataset.ROW_KEYS)


def test_an_internal_error_is_a_row_not_a_crash(tmp_path):
    rows = Coder(Options()).compress_files([("x.png", lambda: 1 / 0)], Store(tmp_path))
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("internal error (ZeroDivisionError)")


def test_holds_pixels_and_matches(tmp_path, tiny_models):
    img = Image.fromarray(np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    data = pxzip.compress(img)
    assert codec.holds_pixels(data, img) and codec.matches(data, img)
    other = np.asarray(img).copy()
    other[0, 0, 0] ^= 1
    assert not codec.holds_pixels(data, other) and not codec.matches(data, other)
    assert not codec.holds_pixels(data, np.asarray(img.convert("L")))
    net = pxzip.compress(img, fallback=False)
    assert codec.matches(net, img) and not codec.matches(net, img, tiny_models["pp_rgb"])  # another model
    assert codec.matches(data, img, tiny_models["pp_rgb"]) == (container.unpack(data)[0].coders != ())
    assert not codec.holds_pixels(b"garbage", img) and not codec.holds_pixels(data[:10], img)
    pal = img.quantize(8)
    assert codec.holds_pixels(pxzip.compress(pal), pal)


def test_a_shard_keeps_or_refuses_but_never_rewrites(tmp_path):
    src, out = Store(tmp_path / "in"), Store(tmp_path / "out")
    for k in range(3):
        _png(tmp_path / "in" / f"{k}.png", k)
    coder = Coder(Options())
    rows = coder.compress_shard(_items(src, ["0.png", "1.png", "2.png"]), out, "s.tar")
    assert [r["output"] for r in rows] == ["s.tar/0.pxz", "s.tar/1.pxz", "s.tar/2.pxz"]
    blob = (tmp_path / "out" / "s.tar").read_bytes()
    again = coder.compress_shard(_items(src, ["0.png", "1.png", "2.png"]), out, "s.tar")
    assert [r["status"] for r in again] == ["kept"] * 3
    _png(tmp_path / "in" / "1.png", 99)  # an input changed since
    changed = coder.compress_shard(_items(src, ["0.png", "1.png", "2.png"]), out, "s.tar")
    assert [r["status"] for r in changed] == ["kept", "error", "kept"] and "--force" in changed[1]["error"]
    assert (tmp_path / "out" / "s.tar").read_bytes() == blob
    forced = Coder(Options(force=True)).compress_shard(_items(src, ["0.png", "1.png", "2.png"]), out, "s.tar")
    assert [r["status"] for r in forced] == ["coded"] * 3 and (tmp_path / "out" / "s.tar").read_bytes() != blob
    (tmp_path / "out" / "t.tar").write_bytes(b"x" * 700)
    with pytest.raises(pxzip.FormatError, match="damaged tar shard"):
        dataset.read_items(out, "t.tar")


def test_decoding_a_group_isolates_a_bad_file_and_refuses_to_clobber(tmp_path):
    coder = Coder(Options())
    imgs = [Image.fromarray(np.full((6, 7, 3), k * 40, np.uint8)) for k in range(3)]
    datas = [pxzip.compress(i) for i in imgs]
    bad = bytearray(datas[1])
    bad[-1] ^= 0xFF
    items = [("a.pxz", datas[0]), ("b.pxz", bytes(bad)), ("c.pxz", datas[2]), ("d.pxz", b"junk")]
    out = Store(tmp_path)
    rows = coder.decompress_items(items, out)
    assert [r["status"] for r in rows] == ["coded", "error", "coded", "error"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), np.asarray(imgs[2]))
    imgs[1].save(tmp_path / "b.png")  # an unrelated image where b's output goes
    Image.new("RGB", (6, 7)).save(tmp_path / "a.png")  # and one that differs from a's pixels
    rows = coder.decompress_items([("a.pxz", datas[0]), ("c.pxz", datas[2])], out)
    assert rows[0]["status"] == "error" and "--force" in rows[0]["error"] and rows[1]["status"] == "kept"
    arrays = coder.to_arrays(items)
    assert [a is None for _, a in arrays] == [False, True, False, True]
    assert np.array_equal(arrays[0][1], np.asarray(imgs[0]))


def test_finish_deduplicates_and_writes_the_manifest(tmp_path):
    rows = [dataset.make_row("b", error="x"), dataset.make_row("a", status="coded", bytes=3, dims=6)]
    summary = dataset.finish(rows + [rows[1]], 0.0, True, Store(tmp_path))
    assert [r["name"] for r in summary.rows] == ["a", "b"]
    assert dataset.read_manifest(Store(tmp_path)) == summary.rows
    assert summary.bits_per_dim == 4.0 and summary.count("coded") == 1 and len(summary.errors) == 1


def test_without_ray_the_extra_is_named(tmp_path, monkeypatch):
    import importlib
    import sys

    from click.testing import CliRunner

    from pxzip.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    monkeypatch.delitem(sys.modules, "pxzip.ray", raising=False)
    monkeypatch.delattr(pxzip, "ray", raising=False)  # else `from pxzip import ray` finds the loaded module
    with pytest.raises(pxzip.UsageError, match=r'pip install "pxzip\[ray\]"'):
        importlib.import_module("pxzip.ray")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    r = CliRunner().invoke(cli, ["compress", "-r", "in", "--ray", "-o", "out"])
    assert r.exit_code == 2 and "pxzip[ray]" in r.stderr and "Traceback" not in r.output


def test_names_never_leave_the_output_folder(tmp_path):
    assert dataset.relative_name("/data/x/a.png") == "data/x/a.png"
    assert dataset.relative_name("a//./b.png") == "a/b.png"
    for bad in ("../a.png", "a/../../b.png", "", "/"):
        with pytest.raises(pxzip.UsageError, match="not a name inside the output folder"):
            dataset.relative_name(bad)
    out = Store(tmp_path / "out")
    img = np.zeros((4, 4, 3), np.uint8)
    rows = Coder(Options()).compress_files([("../escape.png", lambda: img), ("/abs/ok.png", lambda: img)], out)
    assert [r["status"] for r in rows] == ["error", "coded"] and (tmp_path / "out" / "abs" / "ok.pxz").exists()
    hostile = dataset.write_tar([("../../evil.pxz", pxzip.compress(img)), ("fine.pxz", pxzip.compress(img))])
    (tmp_path / "s.tar").write_bytes(hostile)
    items = dataset.read_items(Store(tmp_path), "s.tar")
    rows = Coder(Options()).decompress_items(items, Store(tmp_path / "dec"))
    assert [r["status"] for r in rows] == ["error", "coded"]
    assert not list(tmp_path.glob("evil*")) and (tmp_path / "dec" / "s" / "fine.png").exists()
