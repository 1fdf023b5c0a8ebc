"""Datasets for training and benchmarking: CIFAR-10 loading/download, image files, random crops."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BIN_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_PY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_PY_MD5 = "c58f30108f718f92721af3b95e74349a"

BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
_SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_CHUNK = 1 << 20


def shared_data_dir() -> Path | None:
    """The shared data folder: $PXZIP_DATA; else shared/data beside the checkout this package runs from
    (an editable install); else ../shared/data or ./shared/data from the current folder (a `pip install .`
    puts the package in site-packages, far from any checkout); else None."""
    env = os.environ.get("PXZIP_DATA")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for path in (Path(__file__).resolve().parent.parent.parent, Path.cwd().parent, Path.cwd()):
        if (path / "shared" / "data").is_dir():
            return path / "shared" / "data"
    return None


def _batches_dir(root: Path) -> tuple[Path, str] | None:
    """Locate a CIFAR-10 batches folder under root, returning it and its layout ("bin"/"py")."""
    # root/cifar10/ is accepted too, so the shared data folder itself can be passed.
    for base in (root, root / "cifar10"):
        for name, kind in ((BIN_DIR, "bin"), (PY_DIR, "py")):
            if _has_batches(base / name, kind):
                return base / name, kind
    for kind in ("bin", "py"):
        if _has_batches(root, kind):
            return root, kind
    return None


def _has_batches(folder: Path, kind: str) -> bool:
    suffix = ".bin" if kind == "bin" else ""
    return any((folder / f"{n}{suffix}").is_file() for n in ("test_batch", "data_batch_1"))


def _not_found(root: Path) -> Exception:
    from pxzip.errors import UsageError

    return UsageError(f"no CIFAR-10 found under {root} (expected {BIN_DIR}/ or {PY_DIR}/); use --download")


def _read_bin(path: Path, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    from pxzip.errors import UsageError

    size = path.stat().st_size
    if size % _RECORD:
        raise UsageError(f"{path}: size {size} is not a multiple of {_RECORD}-byte CIFAR records")
    n = size // _RECORD if count is None else min(count, size // _RECORD)
    # Read only the records asked for, so a small limit does not read 30 MB.
    raw = np.fromfile(path, dtype=np.uint8, count=n * _RECORD).reshape(n, _RECORD)
    return raw[:, 1:], raw[:, 0].astype(np.int64)


def _read_py(path: Path, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    # pickle is unsafe on untrusted input; it is accepted here only because the official
    # CIFAR-10 python archive is distributed in this format (md5-checked when downloaded).
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3 * 32 * 32)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if count is not None:
        data, labels = data[:count], labels[:count]
    return data, labels


def load_cifar10(root: str | Path, split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR-10 split as uint8 images (N, 32, 32, 3) HWC and int64 labels (N,)."""
    from pxzip.errors import UsageError

    if split not in _SPLITS:
        raise UsageError(f"unknown CIFAR-10 split {split!r} (expected 'train' or 'test')")
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
    root = Path(root)
    found = _batches_dir(root)
    if found is None:
        raise _not_found(root)
    folder, kind = found
    planes, labels = [], []
    remaining = limit
    for name in _SPLITS[split]:
        if remaining == 0:
            break
        path = folder / (f"{name}.bin" if kind == "bin" else name)
        if not path.is_file():
            raise UsageError(f"CIFAR-10 {split} file missing: {path}")
        data, lab = (_read_bin if kind == "bin" else _read_py)(path, remaining)
        planes.append(data)
        labels.append(lab)
        if remaining is not None:
            remaining -= len(lab)
    data = np.concatenate(planes) if planes else np.zeros((0, 3072), np.uint8)
    # Records hold whole R, G, B planes (CHW); convert to HWC for PIL/numpy users.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    label_arr = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return images, label_arr


def _check_members(members: Iterable[tarfile.TarInfo]) -> None:
    from pxzip.errors import UsageError

    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or m.name.startswith(("/", "\\")) or ".." in p.parts or ":" in m.name:
            raise UsageError(f"unsafe path in archive: {m.name!r}")
        # Links and device files could point outside root; the archive has none.
        if not (m.isfile() or m.isdir()):
            raise UsageError(f"unsupported member type in archive: {m.name!r}")


def md5_of(path: Path) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str | None, progress: bool, desc: str = "CIFAR-10") -> None:
    """Stream url into dest, checking md5; raises UsageError on failure."""
    from pxzip.errors import UsageError

    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            total = resp.headers.get("Content-Length") if resp.headers else None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(
                    total=int(total) if total else None,
                    unit="B",
                    unit_scale=True,
                    desc=desc,
                    file=sys.stderr,
                )
            try:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UsageError(f"download of {url} failed: {e}") from e
    if md5 is not None and digest.hexdigest() != md5.lower():
        raise UsageError(f"md5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}")


def download_cifar10(
    root: str | Path,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_BIN_MD5,
    progress: bool = True,
) -> Path:
    """Download, verify and extract CIFAR-10 into root; returns the batches folder."""
    from pxzip.errors import UsageError

    root = Path(root)
    found = _batches_dir(root)
    if found is not None:
        return found[0]
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".cifar10-", suffix=".part", dir=root)
    os.close(fd)
    tmp = Path(tmp_name)
    # extracted into a staging folder and moved into place whole: an extraction that fails midway
    # (disk full) leaves no partial batches folder that a later run would take for the data set
    staging = Path(tempfile.mkdtemp(prefix=".cifar10-extract-", dir=root))
    try:
        fetch(url, tmp, md5, progress)
        try:
            with tarfile.open(tmp, "r:*") as tar:
                members = tar.getmembers()
                # Check every member before writing anything, so a bad archive leaves no files.
                _check_members(members)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(staging, members=members)
        except tarfile.TarError as e:
            raise UsageError(f"{url} is not a readable tar archive: {e}") from e
        except OSError as e:
            raise UsageError(f"cannot extract CIFAR-10 into {root}: {e.strerror or e}") from None
        found = _batches_dir(staging)
        if found is None or found[0] == staging:
            raise UsageError(f"{url}: the archive holds no {BIN_DIR}/ or {PY_DIR}/ folder of CIFAR-10 batches")
        target = root / found[0].name
        if target.exists():
            raise UsageError(f"{target} exists but holds no CIFAR-10 batches: remove it and download again")
        os.replace(found[0], target)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    found = _batches_dir(root)
    if found is None:
        raise _not_found(root)
    return found[0]


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among paths (files, or folders searched recursively), sorted, deduplicated."""
    from pxzip.errors import UsageError

    result: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            result.update(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            # .pxz and other non-image files are skipped even when named explicitly.
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                result.add(p)
        else:
            raise UsageError(f"no such file or folder: {p}")
    return sorted(result)


def load_image(path: Path, gray: bool) -> np.ndarray:
    from pxzip.errors import UsageError, describe

    try:
        with Image.open(path) as im:
            if im.mode.startswith(("I", "F")):  # 16/32-bit: convert() would clip, not what pxzip codes
                raise UsageError(f"training image {path} is {im.mode} (16/32-bit): pxzip models 8-bit images")
            arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8)
    except UsageError:
        raise
    except Exception as e:  # Pillow raises anything on a damaged file (truncated, not an image, ...)
        raise UsageError(f"cannot read training image {path}: {describe(e)}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


class ArrayCrops(torch.utils.data.IterableDataset):
    """Random (size x size) crops, with random horizontal flips, of (H, W, C) uint8 arrays, as
    (C, size, size) tensors.

    Images are chosen with probability proportional to their area, so every pixel is about
    equally likely to be sampled. With a seed, each iteration yields the same sequence
    (DataLoader workers get distinct streams). ``length=None`` iterates forever.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        size: int,
        *,
        seed: int | None = None,
        flip: bool = True,
        length: int | None = None,
    ) -> None:
        from pxzip.errors import UsageError

        super().__init__()
        if size < 1:
            raise UsageError(f"crop size must be >= 1, got {size}")
        self.size = size
        self.seed = seed
        self.flip = flip
        self.length = length
        # Images smaller than the crop cannot give one; skip them rather than pad.
        self.images = [im for im in images if im.shape[0] >= size and im.shape[1] >= size]
        if not self.images:
            raise UsageError(f"no image of at least {size}x{size} among {len(images)}")
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self._weights = areas / areas.sum()

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("crops without a length are endless")
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        entropy = None if self.seed is None else [self.seed, worker]
        rng = np.random.default_rng(entropy)
        count = None if self.length is None else len(range(worker, self.length, workers))
        s = self.size
        produced = 0
        while count is None or produced < count:
            im = self.images[rng.choice(len(self.images), p=self._weights)]
            y = int(rng.integers(0, im.shape[0] - s + 1))
            x = int(rng.integers(0, im.shape[1] - s + 1))
            crop = im[y : y + s, x : x + s]
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            yield torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
            produced += 1


class RandomCrops(ArrayCrops):
    """`ArrayCrops` of image files, read as RGB (or gray with ``gray=True``)."""

    def __init__(
        self,
        files: Sequence[str | Path],
        size: int,
        *,
        gray: bool = False,
        seed: int | None = None,
        flip: bool = True,
        length: int | None = None,
    ) -> None:
        from pxzip.errors import UsageError

        if size < 1:
            raise UsageError(f"crop size must be >= 1, got {size}")
        self.gray = gray
        images = [load_image(Path(f), gray) for f in files]
        try:
            super().__init__(images, size, seed=seed, flip=flip, length=length)
        except UsageError:
            raise UsageError(f"no image of at least {size}x{size} among {len(images)} files") from None


def to_gray(images_nhwc: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (N, H, W, 1) of RGB images (N, H, W, 3), identical to PIL convert("L")."""
    images = np.asarray(images_nhwc)
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[3] == 1:
        return images.copy()
    n, h, w, _ = images.shape
    if n == 0 or h == 0 or w == 0:
        return np.zeros((n, h, w, 1), np.uint8)
    # Luma is per pixel, so stacking all images into one tall picture needs one PIL call only.
    tall = Image.fromarray(np.ascontiguousarray(images.reshape(n * h, w, 3)), "RGB")
    return np.asarray(tall.convert("L"), dtype=np.uint8).reshape(n, h, w, 1)
