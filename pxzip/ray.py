"""Coding image datasets on a Ray cluster: Ray Data pipelines of `pxzip.dataset` groups (pip install "pxzip[ray]").

    import pxzip.ray
    summary = pxzip.ray.compress_dataset("s3://bucket/images", "s3://bucket/images-pxz")
    print(summary.line())
    ds = pxzip.ray.read_dataset("s3://bucket/images-pxz")  # a Ray Dataset of {"name", "image", ...}

Each worker is a Ray actor that loads the exact models once and codes one group of files per call
(decoding a group in lockstep: its tiles share the decoder's steps). A group is the unit Ray
schedules and retries: when a worker dies, Ray runs its group again on another worker, and outputs
that the dead worker already wrote are found, checked and kept. Every output is written atomically.
An image that cannot be read or coded is a row of the manifest with its error, never a failed job.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from pxzip import dataset, imagefile
from pxzip.dataset import Options, Store, Summary
from pxzip.errors import PxzError, UsageError

try:
    import ray
    import ray.data
except ImportError:  # the extra is optional: say how to get it, once, where it is needed
    raise UsageError('pxzip.ray needs Ray Data: pip install "pxzip[ray]"') from None

__all__ = ["Options", "Summary", "compress_dataset", "connect", "decompress_dataset", "read_dataset"]

COMPRESS_GROUP = 16  # images a worker codes per call (the unit Ray schedules and retries)
DECODE_GROUP = 64  # .pxz files a worker decodes in lockstep per call (as `pxzip decompress` does)


def connect(address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None) -> None:
    """Join the Ray cluster at address ("auto": the one this machine is part of; "ray://host:10001" for
    Ray Client), or start a local Ray instance when address is None. A no-op when Ray is already
    initialised (the caller's own ray.init wins). Ray's own logging is kept to warnings."""
    # Ray Data's execution reports and the warning that its bars are off: pxzip reports in images itself
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    if ray.is_initialized():
        return
    kw = {"num_cpus": num_cpus} if address is None else {}
    ray.init(
        address=address,
        runtime_env=runtime_env,
        include_dashboard=False,
        log_to_driver=False,  # workers' prints stay in Ray's log files; errors come back in the manifest
        logging_level=logging.WARNING,
        **kw,
    )


def _workers(workers: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise UsageError(f"workers={workers}: at least one worker is needed")
        return workers
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _columns(rows: list[dict]) -> dict[str, list]:
    """Rows to the column batch Ray Data takes (every key in every row: one schema)."""
    return {k: [r[k] for r in rows] for k in dataset.ROW_KEYS}


class _Worker:
    """A Ray actor's state: one thread of torch, the models loaded once."""

    def __init__(self, opts: Options, src: Store | None, out: Store | None, shards: bool = False) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per CPU: this is the actor's own process
        self.coder = dataset.Coder(opts)
        self.src, self.out, self.shards = src, out, shards

    def _groups(self, batch) -> list[tuple[int, list[str]]]:
        return [(int(k), [str(n) for n in names]) for k, names in zip(batch["group"], batch["names"])]


class _CompressFiles(_Worker):
    """Images of a folder -> .pxz files (mirrored tree) or one tar shard per group."""

    def __call__(self, batch) -> dict[str, list]:
        rows = []
        for k, names in self._groups(batch):
            items = [(n, lambda n=n: imagefile.open_image(self.src.read(n))) for n in names]
            if self.shards:
                rows += self.coder.compress_shard(items, self.out, dataset.shard_name(k))
            else:
                rows += self.coder.compress_files(items, self.out)
        return _columns(rows)


class _CompressArrays(_Worker):
    """A batch of a Ray Dataset of images (numpy) -> .pxz files, or one tar shard per batch."""

    def __init__(self, opts: Options, out: Store, shards: bool, image_column: str, name_column: str) -> None:
        super().__init__(opts, None, out, shards)
        self.image_column, self.name_column = image_column, name_column

    def __call__(self, batch) -> dict[str, list]:
        names = [str(n) for n in batch[self.name_column]]
        items = [(n, lambda a=a: np.asarray(a)) for n, a in zip(names, batch[self.image_column])]
        if not self.shards:
            return _columns(self.coder.compress_files(items, self.out))
        # batches are not numbered: a shard is named after its images, so a rerun finds it again
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        return _columns(self.coder.compress_shard(items, self.out, f"shard-{digest}{dataset.SHARD_SUFFIX}"))


class _Decompress(_Worker):
    """.pxz files and tar shards -> images in a mirrored tree."""

    def __call__(self, batch) -> dict[str, list]:
        rows = []
        for _, names in self._groups(batch):
            items, bad = _read_inputs(self.src, names)
            rows += bad + self.coder.decompress_items(items, self.out)
        return _columns(rows)


class _Arrays(_Worker):
    """.pxz files and tar shards -> rows of a Ray Dataset: name, image (numpy), mode, bytes, sha256."""

    def __init__(self, opts: Options, src: Store, skip_errors: bool) -> None:
        super().__init__(opts, src, None)
        self.skip_errors = skip_errors

    def __call__(self, batch) -> dict[str, list]:
        out: dict[str, list] = {"name": [], "image": [], "mode": [], "bytes": [], "sha256": []}
        for _, names in self._groups(batch):
            items, bad = _read_inputs(self.src, names)
            results = [(r, None) for r in bad] + self.coder.to_arrays(items)
            for row, arr in results:
                if arr is None:
                    if self.skip_errors:
                        continue
                    raise PxzError(f"{row['name']}: {row['error']}")
                for key in ("name", "mode", "bytes", "sha256"):
                    out[key].append(row[key])
                out["image"].append(arr)
        return out


def _read_inputs(src: Store, names: list[str]) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """(name, .pxz bytes) items of the named files and shards, and error rows for those unreadable."""
    items, bad = [], []
    for n in names:
        try:
            items += dataset.read_items(src, n)
        except PxzError as e:
            bad.append(dataset.make_row(n, error=str(e)))
    return items, bad


def _group_dataset(groups: list[list[str]]) -> ray.data.Dataset:
    # one block per group, so that every worker can take one as soon as it is free
    items = [{"group": k, "names": g} for k, g in enumerate(groups)]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def _pipeline(ds: ray.data.Dataset, worker: type, workers: int, batch_size: int = 1, **args) -> ray.data.Dataset:
    """ds mapped by a pool of worker actors, one CPU each, built with args."""
    pool = ray.data.ActorPoolStrategy(size=workers)
    return ds.map_batches(worker, batch_size=batch_size, compute=pool, num_cpus=1, fn_constructor_kwargs=args)


def _run(ds: ray.data.Dataset, total: int | None, progress: bool, what: str) -> list[dict]:
    """Execute a pipeline of manifest rows, drawing a bar of images on stderr."""
    rows: list[dict] = []
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr, leave=False)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            n = len(batch["name"])
            rows += [{k: batch[k][i] for k in dataset.ROW_KEYS} for i in range(n)]
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return rows


def compress_dataset(
    source,
    output: str,
    *,
    shard_size: int | None = None,
    workers: int | None = None,
    group_size: int = COMPRESS_GROUP,
    address: str | None = None,
    progress: bool = False,
    image_column: str = "image",
    name_column: str | None = None,
    **options,
) -> Summary:
    """Compress a dataset of images on Ray; write output/manifest.jsonl and return the Summary.

    source: a folder or pyarrow URI (every image file under it, as `pxzip compress -r` finds them), or
    a Ray Dataset with an image column (uint8 arrays, HxW or HxWxC) and a name column ("name" or
    "path" when not given) naming each output.
    output: a folder or URI. Files mirror the input tree ('a/b.png' -> 'a/b.pxz'); with shard_size,
    WebDataset-style tar shards of that many images instead ('shard-000000.tar' holding 'a/b.pxz').
    workers: actors (one CPU each; default: every CPU of the cluster). address: as for `connect`.
    options: `dataset.Options` fields (model, tile, order, adapt, fallback, keep_metadata, label,
    verify, force, device). A rerun keeps each output that already holds its image.
    """
    opts = Options(**options)
    started = time.perf_counter()
    connect(address)
    n_workers = _workers(workers)
    out = Store(output)
    if group_size < 1 or (shard_size is not None and shard_size < 1):
        raise UsageError("group_size and shard_size must be at least 1")
    size = shard_size or group_size
    if isinstance(source, ray.data.Dataset):
        column = name_column or next((c for c in ("name", "path") if c in source.columns()), None)
        if column is None or column not in source.columns() or image_column not in source.columns():
            raise UsageError(f"the dataset needs an {image_column!r} column and a name column ('name' or 'path')")
        shards = shard_size is not None
        args = {"opts": opts, "out": out, "shards": shards, "image_column": image_column, "name_column": column}
        rows = _run(_pipeline(source, _CompressArrays, n_workers, size, **args), None, progress, "compress")
    else:
        src = Store(source)
        names = dataset.image_names(src)
        bad = dataset.clashes(names, dataset.pxz_name if shard_size is None else dataset.member_key)
        clash_rows = [dataset.make_row(n, error=e) for n, e in bad.items()]
        names = [n for n in names if n not in bad]
        groups = dataset.groups_of(names, size, 1 if shard_size else n_workers)
        args = {"opts": opts, "src": src, "out": out, "shards": shard_size is not None}
        ds = _pipeline(_group_dataset(groups), _CompressFiles, min(n_workers, len(groups) or 1), **args)
        rows = clash_rows + _run(ds, len(names), progress, "compress")
    return dataset.finish(rows, started, True, out)


def _pxz_groups(src: Store, group_size: int, workers: int) -> list[list[str]]:
    """Groups of inputs: each tar shard alone, the .pxz files group_size at a time."""
    names = dataset.pxz_inputs(src)
    shards = [[n] for n in names if n.lower().endswith(dataset.SHARD_SUFFIX)]
    return shards + dataset.groups_of([n for n in names if n.lower().endswith(".pxz")], group_size, workers)


def decompress_dataset(
    source: str,
    output: str,
    *,
    workers: int | None = None,
    group_size: int = DECODE_GROUP,
    address: str | None = None,
    progress: bool = False,
    **options,
) -> Summary:
    """Decompress every .pxz file and tar shard under source into images under output (mirrored:
    'a/b.pxz' -> 'a/b.png', member 'a/b.pxz' of 'shard-000000.tar' -> 'shard-000000/a/b.png');
    write output/manifest.jsonl and return the Summary.

    options: `dataset.Options` fields (model: extra model files; image_format: ".png" or another
    lossless suffix; force; device). A rerun keeps each image that already holds its file's pixels.
    """
    opts = Options(**options)
    started = time.perf_counter()
    connect(address)
    n_workers = _workers(workers)
    src, out = Store(source), Store(output)
    groups = _pxz_groups(src, group_size, n_workers)
    args = {"opts": opts, "src": src, "out": out}
    pool = ray.data.ActorPoolStrategy(size=_workers(workers))
    ds = _group_dataset(groups).map_batches(
        _Decompress, batch_size=1, compute=pool, num_cpus=1, fn_constructor_kwargs=args
    )
    total = (
        sum(len(g) for g in groups) if not any(n.endswith(dataset.SHARD_SUFFIX) for g in groups for n in g) else None
    )
    return dataset.finish(_run(ds, total, progress, "decompress"), started, False, out)


def read_dataset(
    source: str,
    *,
    workers: int | None = None,
    group_size: int = DECODE_GROUP,
    address: str | None = None,
    convert: str | None = None,
    skip_errors: bool = False,
    model=(),
    device: str = "cpu",
) -> ray.data.Dataset:
    """A lazy Ray Dataset of the images in the .pxz files and tar shards under source, for a training job.

    Columns: name, image (uint8 numpy: HxW for L, P (palette indices) and 1 (0/1), HxWxC otherwise),
    mode, bytes (the .pxz size), sha256 (of the array). convert: a PIL mode ("RGB", "L") every image
    is converted to first. A damaged file fails the read, naming the file, unless skip_errors.
    """
    connect(address)
    n_workers = _workers(workers)
    src = Store(source)
    opts = Options(model=tuple(model), convert=convert, device=device)
    groups = _pxz_groups(src, group_size, n_workers)
    args = {"opts": opts, "src": src, "skip_errors": skip_errors}
    return _pipeline(_group_dataset(groups), _Arrays, min(n_workers, len(groups) or 1), **args)
