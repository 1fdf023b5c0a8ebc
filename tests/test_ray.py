"""pxzip.ray on a local Ray instance (2 CPUs): same bytes as pxzip.compress, bad inputs as rows,
resumed runs, tar shards, decoding to files and to a Ray Dataset, a killed worker, the --ray CLI."""

from __future__ import annotations

import glob
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pxzip
from pxzip import dataset, imagefile
from pxzip.cli import cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pxzip[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'pxzip[ray]')")
pxray = pytest.importorskip("pxzip.ray")

MODES = ("RGB", "L", "RGBA", "LA", "P", "1")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    pxray.connect(None, num_cpus=2)
    yield
    ray.shutdown()


def _image(k: int, size: int | None = None) -> Image.Image:
    """A small smooth-plus-noise image of mode MODES[k % 6], 8-20 pixels a side."""
    rng = np.random.default_rng(k)
    h, w = (size, size) if size else (8 + k % 13, 8 + (3 * k) % 13)
    base = np.add.outer(np.arange(h) * (k % 5 + 1), np.arange(w) * 3)
    rgba = (base[..., None] * [1, 2, 3, 5] + rng.integers(0, 12, (h, w, 4))) % 256
    img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    mode = MODES[k % len(MODES)]
    if mode == "P":
        return img.convert("RGB").quantize(16)
    return img.convert(mode)


def _folder(root: Path, n: int, size: int | None = None) -> list[str]:
    """n images under root (half in a sub folder) as PNG; their names."""
    names = []
    for k in range(n):
        name = f"{'sub/' if k % 2 else ''}img{k:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _image(k, size).save(root / name)
        names.append(name)
    return names


def _single(path: Path) -> bytes:
    """What single-process pxzip writes for an image file."""
    return pxzip.compress(imagefile.open_image(path.read_bytes()))


def test_every_file_has_the_single_process_bytes_and_a_damaged_image_is_a_row(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _folder(src, 50)
    good = (src / names[1]).read_bytes()
    (src / "sub" / "damaged.png").write_bytes(good[: len(good) // 2])  # truncated PNG among the 50
    summary = pxray.compress_dataset(str(src), str(out), workers=2, group_size=4)
    assert [r["name"] for r in summary.errors] == ["sub/damaged.png"]
    assert "cannot read image" in summary.errors[0]["error"]
    assert summary.count("coded") == 50
    for name in names:
        assert (out / dataset.pxz_name(name)).read_bytes() == _single(src / name), name
    manifest = [json.loads(line) for line in (out / dataset.MANIFEST).read_text().splitlines()]
    assert [r["name"] for r in manifest] == sorted(names + ["sub/damaged.png"])
    row = next(r for r in manifest if r["name"] == names[0])
    pixels = pxzip.decompress((out / dataset.pxz_name(names[0])).read_bytes())
    assert row["sha256"] == dataset.pixels_sha256(pixels)
    assert row["bytes"] == (out / dataset.pxz_name(names[0])).stat().st_size
    assert row["bits_per_dim"] == pytest.approx(8 * row["bytes"] / row["dims"])
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left
    assert "50 images (50 coded, 0 kept)" in summary.line() and "1 errors" in summary.line()


def test_a_rerun_keeps_outputs_that_hold_their_image_and_never_clobbers_others(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _folder(src, 6)
    pxray.compress_dataset(str(src), str(out), workers=2)
    stale = out / dataset.pxz_name(names[1])
    stale.write_bytes(_single(src / names[2]))  # a .pxz of another image
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pxz")}
    again = pxray.compress_dataset(str(src), str(out), workers=2)
    assert again.count("kept") == 5 and again.count("coded") == 0
    assert [r["name"] for r in again.errors] == [names[1]] and "--force" in again.errors[0]["error"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pxz")} == before  # nothing rewritten
    forced = pxray.compress_dataset(str(src), str(out), workers=2, force=True)
    assert forced.count("coded") == 6 and stale.read_bytes() == _single(src / names[1])


def test_a_rerun_with_another_model_is_not_kept(tmp_path, tiny_models):
    src, out = tmp_path / "in", tmp_path / "out"
    _folder(src, 1)
    pxray.compress_dataset(str(src), str(out), workers=1, fallback=False)
    tiny = str(tiny_models["dir"] / "tiny-pp-rgb.safetensors")
    other = pxray.compress_dataset(str(src), str(out), workers=1, model=(tiny,), fallback=False)
    assert other.count("error") == 1 and "these models" in other.errors[0]["error"]


def test_tar_shards_hold_the_same_bytes_and_decode(tmp_path):
    src, out, dec = tmp_path / "in", tmp_path / "shards", tmp_path / "dec"
    names = sorted(_folder(src, 7))  # shards take the images in sorted order
    summary = pxray.compress_dataset(str(src), str(out), workers=2, shard_size=3)
    assert summary.count("coded") == 7
    shards = sorted(p.name for p in out.glob("*.tar"))
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(out / shards[0]) as tar:
        members = tar.getnames()
        assert members == [dataset.member_key(n) + ".pxz" for n in names[:3]]
        assert tar.extractfile(members[1]).read() == _single(src / names[1])
    again = pxray.compress_dataset(str(src), str(out), workers=2, shard_size=3)
    assert again.count("kept") == 7
    decoded = pxray.decompress_dataset(str(out), str(dec), workers=2)
    assert decoded.count("coded") == 7 and not decoded.errors
    for n in names:
        shard = shards[names.index(n) // 3].removesuffix(".tar")
        got = Image.open(dec / shard / (dataset.member_key(n) + ".png"))
        assert np.array_equal(np.asarray(got), np.asarray(Image.open(src / n))), n


def test_names_that_would_share_an_output_are_error_rows(tmp_path):
    src = tmp_path / "in"
    _folder(src, 2)
    _image(5).save(src / "img000.bmp")  # img000.pxz, and key img000 in a shard, are img000.bmp's first
    for shards in (None, 4):
        summary = pxray.compress_dataset(str(src), str(tmp_path / f"out{shards}"), workers=1, shard_size=shards)
        assert [r["name"] for r in summary.errors] == ["img000.png"] and summary.count("coded") == 2


def test_decompress_to_images_reports_a_corrupt_file_and_decodes_the_rest(tmp_path):
    src, out, dec = tmp_path / "in", tmp_path / "out", tmp_path / "dec"
    names = _folder(src, 8)
    pxray.compress_dataset(str(src), str(out), workers=2)
    bad = out / dataset.pxz_name(names[3])
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0x5A
    bad.write_bytes(bytes(data))
    (out / "foreign.pxz").write_bytes(b"not a pxz file")
    summary = pxray.decompress_dataset(str(out), str(dec), workers=2, group_size=3)
    assert sorted(r["name"] for r in summary.errors) == ["foreign.pxz", dataset.pxz_name(names[3])]
    assert summary.count("coded") == 7
    for n in names:
        target = dec / (os.path.splitext(n)[0] + ".png")
        if n == names[3]:
            assert not target.exists()
            continue
        got, want = Image.open(target), Image.open(src / n)
        assert got.mode == want.mode and np.array_equal(np.asarray(got), np.asarray(want)), n
    again = pxray.decompress_dataset(str(out), str(dec), workers=2)
    assert again.count("kept") == 7


def test_read_dataset_gives_the_pixel_arrays(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _folder(src, 6)
    pxray.compress_dataset(str(src), str(out), workers=2)
    rows = {r["name"]: r for r in pxray.read_dataset(str(out), workers=2).take_all()}
    assert sorted(rows) == sorted(dataset.pxz_name(n) for n in names)
    for n in names:
        r = rows[dataset.pxz_name(n)]
        assert np.array_equal(r["image"], np.asarray(Image.open(src / n))), n
        assert r["mode"] == Image.open(src / n).mode
    rgb = pxray.read_dataset(str(out), workers=1, convert="RGB").take_all()
    assert all(r["image"].ndim == 3 and r["image"].shape[2] == 3 for r in rgb)
    (out / "broken.pxz").write_bytes(b"PXZ?")
    assert len(pxray.read_dataset(str(out), workers=1, skip_errors=True).take_all()) == 6
    with pytest.raises(Exception, match="broken.pxz"):
        pxray.read_dataset(str(out), workers=1).take_all()


def test_a_ray_dataset_of_arrays_codes_to_the_same_bytes(tmp_path):
    # one column holds arrays of one rank: RGB images of several sizes, then gray ones (H x W)
    for mode, n in (("RGB", 5), ("L", 2)):
        arrays = [np.asarray(_image(k).convert(mode)) for k in range(n)]
        ds = ray.data.from_items([{"name": f"{mode}/{k}.png", "image": a} for k, a in enumerate(arrays)])
        summary = pxray.compress_dataset(ds, str(tmp_path / "out"), workers=2, group_size=2)
        assert summary.count("coded") == n, summary.errors
        for k, a in enumerate(arrays):
            assert (tmp_path / "out" / mode / f"{k}.pxz").read_bytes() == pxzip.compress(a)
    with pytest.raises(pxzip.UsageError, match="name column"):
        pxray.compress_dataset(ray.data.from_items([{"image": arrays[0]}]), str(tmp_path / "o2"))


def test_file_uris_go_through_pyarrow(tmp_path):
    src = tmp_path / "in"
    names = _folder(src, 3)
    summary = pxray.compress_dataset(src.as_uri(), (tmp_path / "out").as_uri(), workers=1)
    assert summary.count("coded") == 3
    for n in names:
        assert (tmp_path / "out" / dataset.pxz_name(n)).read_bytes() == _single(src / n)
    assert not [p for p in (tmp_path / "out").rglob(".*")]
    assert dataset.read_manifest(dataset.Store((tmp_path / "out").as_uri()))[0]["name"] == names[0]


def _ray_workers(title: bytes) -> list[int]:
    """Pids of the Ray actor processes whose title says they run `title` now."""
    pids = []
    for p in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            cmd = Path(p).read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if cmd.startswith(b"ray::MapWorker") and title in cmd:
            pids.append(int(p.split("/")[2]))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's worker processes in /proc")
def test_a_killed_worker_still_ends_with_every_file_coded_once(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _folder(src, 24, size=48)  # about 0.25 s an image: the job runs for seconds after the kill
    killed: list[int] = []

    def kill_one_busy_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = _ray_workers(b"_CompressFiles)).submit")
            if busy and any(out.rglob("*.pxz")):  # work is under way: kill a worker in the middle of a group
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)

    thread = threading.Thread(target=kill_one_busy_worker, daemon=True)
    thread.start()
    summary = pxray.compress_dataset(str(src), str(out), workers=2, group_size=1)
    thread.join()
    assert killed, "no busy worker was found to kill"
    assert not summary.errors and len(summary.rows) == 24
    assert sorted(r["name"] for r in summary.rows) == sorted(names)  # each image once in the manifest
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pxz")) == sorted(map(dataset.pxz_name, names))
    for n in names:
        assert (out / dataset.pxz_name(n)).read_bytes() == _single(src / n), n


def test_cli_ray_compress_and_decompress(tmp_path):
    src = tmp_path / "in"
    names = _folder(src, 5)
    (src / "notes.png").write_bytes(b"text, not an image")
    r = CliRunner().invoke(cli, ["compress", "-r", str(src), "--ray", "-o", str(tmp_path / "out"), "-j", "2"])
    assert r.exit_code == 1, r.output
    assert "pxzip: notes.png: not an image file" in r.stderr
    assert "5 images (5 coded, 0 kept)" in r.stderr and "1 errors" in r.stderr and "images/s" in r.stderr
    for n in names:
        assert (tmp_path / "out" / dataset.pxz_name(n)).read_bytes() == _single(src / n)
    r = CliRunner().invoke(cli, ["decompress", "-r", str(tmp_path / "out"), "--ray", "-o", str(tmp_path / "dec")])
    assert r.exit_code == 0, r.output
    assert "5 images (5 coded, 0 kept)" in r.stderr
    for n in names:
        got = Image.open(tmp_path / "dec" / n)
        assert np.array_equal(np.asarray(got), np.asarray(Image.open(src / n)))
    r = CliRunner().invoke(cli, ["compress", "-r", str(src), "--ray", "-o", str(tmp_path / "sh"), "--shards", "2"])
    assert r.exit_code == 1 and len(list((tmp_path / "sh").glob("*.tar"))) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "-r", "IN", "--ray"], "give one input and -o OUTPUT"),
        (["compress", "IN/a.png", "--ray", "-o", "OUT"], "not a folder"),
        (["compress", "IN", "--ray", "-o", "OUT"], "use -r"),
        (["compress", "-r", "IN", "-o", "OUT", "--shards", "4"], "add --ray"),
        (["compress", "-r", "--ray", "IN", "-o", "OUT"], "not a Ray address"),
        (["decompress", "-r", "IN", "--ray", "-o", "OUT", "--format", "jpg"], "cannot write .jpg"),
    ],
)
def test_cli_ray_usage_errors(tmp_path, args, message):
    (tmp_path / "IN").mkdir()
    _image(0).save(tmp_path / "IN" / "a.png")
    args = [str(tmp_path / a) if a in ("IN", "OUT", "IN/a.png") else a for a in args]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "OUT").exists()
