"""Tests for pxzip.data: CIFAR-10 loading and download, image file lists, crops, gray."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pxzip import data
from pxzip.errors import UsageError


def _fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    return images, labels


def _planes(images: np.ndarray) -> np.ndarray:
    """(N, 3072) rows of whole R, G, B planes, the CIFAR record order."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _write_bin(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    records = np.concatenate([labels.astype(np.uint8)[:, None], _planes(images)], axis=1)
    path.write_bytes(records.tobytes())


def _write_py(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {b"batch_label": b"fake", b"labels": labels.tolist(), b"data": _planes(images)}
    path.write_bytes(pickle.dumps(batch))


def _make_layout(root: Path, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny CIFAR folder: 2 records per train batch, 5 test records."""
    folder = root / (data.BIN_DIR if kind == "bin" else data.PY_DIR)
    folder.mkdir(parents=True)
    write, suffix = (_write_bin, ".bin") if kind == "bin" else (_write_py, "")
    batches = {f"data_batch_{i}": _fake_images(2, i) for i in range(1, 6)}
    batches["test_batch"] = _fake_images(5, 99)
    for name, (imgs, labs) in batches.items():
        write(folder / f"{name}{suffix}", imgs, labs)
    return batches


@pytest.mark.parametrize("kind", ["bin", "py"])
def test_load_fake_layouts(tmp_path: Path, kind: str) -> None:
    batches = _make_layout(tmp_path, kind)
    folder = tmp_path / (data.BIN_DIR if kind == "bin" else data.PY_DIR)
    for root in (tmp_path, folder):
        images, labels = data.load_cifar10(root, "test")
        assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
        assert images.flags.c_contiguous
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, batches["test_batch"][0])
        np.testing.assert_array_equal(labels, batches["test_batch"][1])
    train, train_labels = data.load_cifar10(tmp_path, "train")
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train, expected)
    assert train_labels.shape == (10,)
    # A limit that crosses a file boundary: both records of batch 1 then one of batch 2.
    part, part_labels = data.load_cifar10(tmp_path, "train", limit=3)
    np.testing.assert_array_equal(part, expected[:3])
    np.testing.assert_array_equal(part_labels, train_labels[:3])
    assert data.load_cifar10(tmp_path, "test", limit=0)[0].shape == (0, 32, 32, 3)


def test_bin_plane_order(tmp_path: Path) -> None:
    folder = tmp_path / data.BIN_DIR
    folder.mkdir()
    record = bytes([7]) + bytes([10]) * 1024 + bytes([20]) * 1024 + bytes([30]) * 1024
    # Second record: a gradient in the R plane only, to pin row-major order.
    ramp = bytes([3]) + bytes(i % 256 for i in range(1024)) + bytes(2048)
    (folder / "test_batch.bin").write_bytes(record + ramp)
    images, labels = data.load_cifar10(tmp_path, "test")
    assert labels.tolist() == [7, 3]
    assert (images[0] == np.array([10, 20, 30], np.uint8)).all()
    assert images[1, 0, 5, 0] == 5 and images[1, 1, 0, 0] == 32 and images[1, 2, 3, 0] == 67
    assert images[1, ..., 1:].max() == 0


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no CIFAR-10 found under .*use --download"):
        data.load_cifar10(tmp_path)
    _make_layout(tmp_path, "bin")
    with pytest.raises(UsageError, match="split"):
        data.load_cifar10(tmp_path, "valid")
    (tmp_path / data.BIN_DIR / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(UsageError, match="multiple"):
        data.load_cifar10(tmp_path, "test")
    (tmp_path / data.BIN_DIR / "data_batch_3.bin").unlink()
    with pytest.raises(UsageError, match="missing"):
        data.load_cifar10(tmp_path, "train")


def test_shared_cifar10(shared_data: Path) -> None:
    cifar = shared_data / "cifar10"
    if not (cifar / data.BIN_DIR).is_dir():
        pytest.skip("no CIFAR-10 in the shared data")
    images, labels = data.load_cifar10(cifar, "test", limit=10)
    assert images.shape == (10, 32, 32, 3) and labels.shape == (10,)
    assert set(labels.tolist()) <= set(range(10))
    assert 60 < images.mean() < 190
    raw = np.fromfile(cifar / data.BIN_DIR / "test_batch.bin", np.uint8, count=3073)
    np.testing.assert_array_equal(images[0, :, :, 1].ravel(), raw[1 + 1024 : 1 + 2048])
    # The shared folder itself is accepted as root too.
    np.testing.assert_array_equal(data.load_cifar10(shared_data, "test", limit=10)[0], images)


def _archive(tmp_path: Path, members: dict[str, bytes] | None = None) -> tuple[Path, str]:
    """A .tar.gz in the official binary layout (or of the given members); returns path, md5."""
    if members is None:
        imgs, labs = _fake_images(4, 5)
        records = np.concatenate([labs.astype(np.uint8)[:, None], _planes(imgs)], axis=1)
        members = {f"{data.BIN_DIR}/test_batch.bin": records.tobytes()}
    path = tmp_path / "src" / "cifar-10-binary.tar.gz"
    path.parent.mkdir(exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_file_url(tmp_path: Path) -> None:
    archive, md5 = _archive(tmp_path)
    root = tmp_path / "dl"
    folder = data.download_cifar10(root, url=archive.as_uri(), md5=md5, progress=False)
    assert folder == root / data.BIN_DIR
    assert data.load_cifar10(root, "test")[0].shape == (4, 32, 32, 3)
    assert sorted(p.name for p in root.iterdir()) == [data.BIN_DIR]  # temp file gone
    # Already there: no download is attempted, so a dead URL is fine.
    again = data.download_cifar10(root, url="file:///nonexistent.tgz", md5=md5, progress=False)
    assert again == folder


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/src; yields (folder, base URL)."""
    src = tmp_path / "src"
    src.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(src))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield src, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_http(tmp_path: Path, http_dir: tuple[Path, str], capsys) -> None:
    src, base = http_dir
    archive, md5 = _archive(tmp_path)
    assert archive.parent == src
    root = tmp_path / "dl"
    folder = data.download_cifar10(root, url=f"{base}/{archive.name}", md5=md5, progress=True)
    assert data.load_cifar10(folder, "test")[1].shape == (4,)
    assert capsys.readouterr().out == ""  # the progress bar goes to stderr only
    with pytest.raises(UsageError, match="failed"):
        data.download_cifar10(tmp_path / "dl2", url=f"{base}/missing.tgz", progress=False)
    assert list((tmp_path / "dl2").iterdir()) == []


def test_download_md5_mismatch(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    root = tmp_path / "dl"
    with pytest.raises(UsageError, match="md5 mismatch"):
        data.download_cifar10(root, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.bin", "/tmp/evil.bin", "a/../../evil.bin"])
def test_download_unsafe_member(tmp_path: Path, name: str) -> None:
    members = {f"{data.BIN_DIR}/test_batch.bin": bytes(3073), name: b"x"}
    archive, md5 = _archive(tmp_path, members)
    root = tmp_path / "dl"
    with pytest.raises(UsageError, match="unsafe"):
        data.download_cifar10(root, url=archive.as_uri(), md5=md5, progress=False)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "evil.bin").exists()


def test_a_failed_extraction_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    """Disk full halfway through: no partial batches folder that a later run would take for the
    data set (it would skip the download and fail, or train on part of CIFAR-10)."""
    archive, md5 = _archive(tmp_path)
    root = tmp_path / "dl"
    real = tarfile.TarFile.extractall

    def disk_full(self, path, *args, **kw):
        real(self, path, *args, **kw)  # the files are written ... then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_full)
    with pytest.raises(UsageError, match="cannot extract CIFAR-10 into .*No space left on device"):
        data.download_cifar10(root, url=archive.as_uri(), md5=md5, progress=False)
    assert list(root.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extractall", real)
    folder = data.download_cifar10(root, url=archive.as_uri(), md5=md5, progress=False)
    assert folder == root / data.BIN_DIR and sorted(p.name for p in root.iterdir()) == [data.BIN_DIR]


def test_unreadable_training_images_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(UsageError, match="cannot read training image .*empty.png"):
        data.RandomCrops([tmp_path / "empty.png"], 2)
    with pytest.raises(UsageError, match="deep.png is I;16 .16/32-bit."):
        data.RandomCrops([tmp_path / "deep.png"], 2)


def test_download_symlink_member(tmp_path: Path) -> None:
    path = tmp_path / "src" / "link.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{data.BIN_DIR}/test_batch.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UsageError, match="member type"):
        data.download_cifar10(tmp_path / "dl", url=path.as_uri(), md5=None, progress=False)


def test_shared_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXZIP_DATA", str(tmp_path))
    assert data.shared_data_dir() == tmp_path
    monkeypatch.setenv("PXZIP_DATA", str(tmp_path / "nope"))
    assert data.shared_data_dir() is None


def test_image_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ["a/x.png", "a/deep/y.JPG", "a/z.pxz", "a/notes.txt", "b.webp", "c.pxz"]:
        (tmp_path / name).write_bytes(b"")
    got = data.image_files([tmp_path / "b.webp", tmp_path / "a", tmp_path / "c.pxz", tmp_path / "a"])
    assert got == sorted([tmp_path / "a/x.png", tmp_path / "a/deep/y.JPG", tmp_path / "b.webp"])
    with pytest.raises(UsageError, match="no such"):
        data.image_files([tmp_path / "missing.png"])


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def test_random_crops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = [
        _png(tmp_path / "big.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)),
        _png(tmp_path / "tall.png", rng.integers(0, 256, (64, 16, 3), dtype=np.uint8)),
        _png(tmp_path / "tiny.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
    ]
    ds = data.RandomCrops(files, 16, seed=3, length=20)
    assert len(ds.images) == 2  # the 8x8 image cannot give a 16x16 crop
    crops = list(ds)
    assert len(crops) == len(ds) == 20
    assert all(c.shape == (3, 16, 16) and c.dtype == torch.uint8 for c in crops)
    assert all(torch.equal(a, b) for a, b in zip(crops, list(ds), strict=True))  # same seed
    other = list(data.RandomCrops(files, 16, seed=4, length=20))
    assert not all(torch.equal(a, b) for a, b in zip(crops, other, strict=True))
    gray = next(iter(data.RandomCrops(files, 16, gray=True, seed=3)))
    assert gray.shape == (1, 16, 16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 16, 16)
    with pytest.raises(UsageError, match="no image"):
        data.RandomCrops(files[2:], 16)


def test_random_crops_flip(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ds = data.RandomCrops([_png(tmp_path / "i.png", img)], 8, seed=0, length=40)
    chw = torch.from_numpy(img.transpose(2, 0, 1).copy())
    plain = [torch.equal(c, chw) for c in ds]
    flipped = [torch.equal(c, chw.flip(2)) for c in ds]
    assert all(p or f for p, f in zip(plain, flipped, strict=True))
    assert any(plain) and any(flipped)
    no_flip = data.RandomCrops([tmp_path / "i.png"], 8, flip=False, seed=0, length=5)
    assert all(torch.equal(c, chw) for c in no_flip)


def test_to_gray_matches_pil() -> None:
    imgs = np.random.default_rng(2).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    gray = data.to_gray(imgs)
    assert gray.shape == (3, 5, 7, 1) and gray.dtype == np.uint8
    for img, g in zip(imgs, gray, strict=True):
        np.testing.assert_array_equal(g[:, :, 0], np.asarray(Image.fromarray(img).convert("L")))
    # PIL's fixed-point ITU-R 601 formula, as a cross-check.
    r, g, b = (imgs[..., i].astype(np.int64) for i in range(3))
    np.testing.assert_array_equal(gray[..., 0], (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
    with pytest.raises(ValueError):
        data.to_gray(imgs[0])
