"""MNIST: the official IDX files (load, download with md5 checks) and their binarisation for bilevel models."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# The mirror torchvision uses (the original site now refuses scripted downloads); same files, same md5.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {  # split -> (images file, its md5, labels file, its md5): the official list
    "train": (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    "test": (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
}
COUNTS = {"train": 60_000, "test": 10_000}  # the official files' (a subset with its own count also loads)
HELD_OUT = 5_000  # the last training images: pxzip's validation set (the test split is never trained on)
THRESHOLD = 128  # binarisation: ink where the gray value is >= 128 (deterministic, the convention stated in reports)


def default_dir() -> Path:
    """The shared data folder's mnist/ when there is one, else ./data/mnist."""
    from pxzip import data

    shared = data.shared_data_dir()
    if shared is not None and (shared / "mnist").is_dir():
        return shared / "mnist"
    return Path("data") / "mnist"


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    from pxzip.errors import UsageError

    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    dims = len(item_shape) + 1
    header = 4 + 4 * dims
    if len(raw) < header:
        raise UsageError(f"{path} is not an MNIST IDX file (too short)")
    fields = np.frombuffer(raw[:header], ">u4").astype(np.int64)
    count = int(fields[1])
    if fields[0] != magic or tuple(fields[2:]) != item_shape or count < 1:
        raise UsageError(f"{path} is not the MNIST file it is named after (header {fields.tolist()})")
    size = count * int(np.prod(item_shape, dtype=np.int64))
    if len(raw) != header + size:
        raise UsageError(f"{path} holds {len(raw) - header} bytes of data, expected {size}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(count, *item_shape)


def load(
    root: str | Path | None = None, split: str = "test", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8 gray, labels (N,) uint8) of a split ("train" or "test")."""
    from pxzip.errors import UsageError

    if split not in FILES:
        raise UsageError(f"MNIST split must be train or test, not {split!r}")
    root = Path(root) if root is not None else default_dir()
    img_name, _, lab_name, _ = FILES[split]
    missing = [n for n in (img_name, lab_name) if not (root / n).is_file()]
    if missing:
        raise UsageError(f"MNIST not found in {root} (no {missing[0]}): use --download, or --data-dir")
    images = _read_idx(root / img_name, 2051, (28, 28))
    labels = _read_idx(root / lab_name, 2049, ())
    if len(images) != len(labels):
        raise UsageError(f"MNIST {split} in {root}: {len(images)} images but {len(labels)} labels")
    return images[:limit].copy(), labels[:limit].copy()


def binarize(images: np.ndarray) -> np.ndarray:
    """Gray pixels (MNIST: (N, 28, 28)) uint8 -> bool, True where >= THRESHOLD (mode "1": MNIST's ink is white)."""
    return np.asarray(images) >= THRESHOLD


def _fetch_into(dest: Path, url: str, md5: str, progress: bool) -> None:
    """url into dest, md5-checked, by a temp file and a rename (files.write_atomic): never a partial file."""
    from pxzip import data, files

    files.write_atomic(str(dest), None, True, lambda tmp: data.fetch(url, Path(tmp), md5, progress, dest.name))


def download(root: str | Path, url: str = MNIST_URL, progress: bool = True) -> Path:
    """Fetch the four official files into root (each md5-checked, written atomically); returns root."""
    from pxzip import data

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for img_name, img_md5, lab_name, lab_md5 in FILES.values():
        for name, md5 in ((img_name, img_md5), (lab_name, lab_md5)):
            if (root / name).is_file() and data.md5_of(root / name) == md5:
                continue
            _fetch_into(root / name, url.rstrip("/") + "/" + name, md5, progress)
    return root
