"""`pxzip bench`: measure pxzip (and classical baselines) on CIFAR-10, binarised MNIST or image files.

Every image is really compressed to .pxz bytes (`codec.compress`) and really decoded again
(`codec.decompress_many`, many images per batch); the decoded pixels are compared with the
originals. A mismatch or a coding error is counted, listed and makes the command exit non-zero;
it is never skipped silently.

Rates are in bits/dim = bits / (H * W * C), reported as the mean over images and "pooled"
(total bits / total dims), at four stages:

* ``nll``: the float model's NLL (`Model.float_model().nll`), evaluated on the same tiles the
  codec codes (tiles are independent contexts), so the next stage differs only by the integer
  arithmetic;
* ``ideal``: the ideal code length of the exact integer tables the encoder really used,
  sum of -log2(freq / 2**24) over all coded subpixels (traced by `codec.compress(trace=...)`);
* ``payload``: the range-coded bits (file minus header, as `container.unpack` splits it);
* ``file``: the whole .pxz file.

Images are benchmarked as 8-bit RGB, or L when the source is gray (L, I;16, ...), or bilevel (bool,
coded as mode "1") when the source is 1-bit (mode "1" files, binarised MNIST); alpha and palettes are
dropped, so pxzip and the baselines code exactly the same pixels.

JSON schema (``--json FILE``; every rate in bits/dim; ``null`` where undefined)::

    {
      "schema": "pxzip-bench-1",
      "dataset": "cifar10-test" | "cifar10-train" | "mnist-test" | "mnist-train" | "files",
      "source": {"data_dir", "split", "limit"}  (cifar10; mnist adds "binarized")  |  {"paths", "limit"}  (files),
      "machine": {"platform", "machine", "python", "torch", "numpy", "cpu_count", "torch_threads"},
      "models": {name: {"kind", "id", "sha256", "path", "config"}},  # every model used
      "n": images,  "n_exact": bit-exact round trips,  "n_errors": n - n_exact,
      "errors": [{"index", "name", "stage": "encode"|"decode"|"compare", "error"}],
      "images": {                        # per-image arrays, all of length n, in image order
        "name", "height", "width", "channels", "model", "dims",  # dims = H * W * C
        "nll_bpd", "ideal_bpd", "payload_bpd", "file_bpd",  # null where encoding failed
        "payload_bytes", "file_bytes", "exact",
        "fallback",  # a fallback coder took a plane (format 6): the payload holds the network's planes only
        "label",  # the class label the file was coded with (null: none)
        "nll_no_label_bpd", "nll_true_label_bpd"  # conditional models with label "auto", else null
      },
      "label": null | "auto",
      "order": "auto" | "wavefront" | "raster",  # the coding order asked for (`codec.compress`)
      "adapt": true | false,              # head offsets fitted per unit (format 5; `codec.compress`)
      "fallback": true | false,           # fallback plane coders tried (format 6; `codec.compress`)
      "device": "cpu" | "cuda:N",         # where the network ran (`pxzip.device`)
      "fallback_files": files where a fallback coder took a plane (their payload is the network's planes only),
      "label_rates": null | {"nll_no_label", "nll_true_label": {"mean", "pooled", "n"}, "labelled_files"},
      "rates": {stage: {"mean", "pooled"}}  for stage in nll, ideal, payload, file,
      "nll_nats_per_image": the float NLL summed over an image, in nats, mean over images,
      "overheads": {name: {"mean_bpd", "mean_pct", "pooled_bpd", "pooled_pct"}} with
          exact_tables = ideal - nll   (pct of nll; negative where head offsets gain more than exactness costs)
          coder        = payload - ideal (pct of ideal)
          header       = file - payload  (pct of payload)
          total        = file - nll     (pct of nll),
      "timing": {"encode_s", "decode_s", "nll_s", "encode_images_per_s", "encode_ms_per_image",
                 "decode_images_per_s", "decode_ms_per_image", "decode_batch",
                 "jobs", "wall_s", "round_trip_images_per_s"},
      "memory": {"peak_rss_mb_after_encode", "peak_rss_mb"},   # getrusage max RSS of the largest process
      "baselines": {codec: {"bpd": [...], "mean", "pooled", "enc_ms", "dec_ms", "n_exact", "n"}},
      "baselines_skipped": [codec names not available on this machine]
    }

Means and overheads are over the images that encoded (all of them, unless errors are listed).
Encode time covers `codec.compress` per image (tracing included; it is one gather per row);
decode time covers `codec.decompress_many` over batches of ``decode_batch`` images. Both are
summed over the ``jobs`` worker processes, so the ms/image figures are the cost on one worker;
``wall_s`` is the elapsed time of the whole measurement (encode, decode, compare, NLL) and
``round_trip_images_per_s`` = n / wall_s is the throughput with all jobs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pxzip import baselines as baselines_mod
from pxzip import codec, container, data, zoo
from pxzip import device as devices
from pxzip.errors import UsageError, describe

SCHEMA = "pxzip-bench-1"
DEFAULT_BASELINES = ("png", "webp", "jxl-e7")
BILEVEL_BASELINES = ("png", "tiff-g4")  # the default when every image is bilevel
DATASETS = ("cifar10", "mnist")  # `pxzip bench NAME`
DEFAULT_BATCH = 256
NLL_POSITIONS = 1 << 16  # pixels per float forward pass (bounds the NLL pass's memory)
STAGES = ("nll", "ideal", "payload", "file")
_OVERHEADS = {  # name: (higher stage, lower stage = the reference of the percentage)
    "exact_tables": ("ideal", "nll"),
    "coder": ("payload", "ideal"),
    "header": ("file", "payload"),
    "total": ("file", "nll"),
}
_GRAY_MODES = {"L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class Item:
    """One benchmark image: a name and its pixels, (H, W, 3) RGB or (H, W) gray, uint8, or (H, W)
    bool for a bilevel image (mode "1", True = white)."""

    name: str
    pixels: np.ndarray
    label: int | None = None  # the dataset's class label (CIFAR-10), for conditional models' reports

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else self.pixels.shape[2]

    @property
    def kind(self) -> str:
        if self.pixels.dtype == np.bool_:
            return "bilevel"
        return "gray" if self.channels == 1 else "rgb"

    @property
    def plane(self) -> np.ndarray:
        """The pixels as the coded plane (H, W, C) uint8 (bilevel: 0 and 255, as planes.split makes them)."""
        px = self.pixels.astype(np.uint8) * np.uint8(255) if self.kind == "bilevel" else self.pixels
        return px if px.ndim == 3 else px[:, :, None]


# -- sources -----------------------------------------------------------------------------------


def default_cifar_dir() -> Path:
    """The shared data folder's cifar10/ when there is one, else ./data/cifar10."""
    shared = data.shared_data_dir()
    if shared is not None and (shared / "cifar10").is_dir():
        return shared / "cifar10"
    return Path("data") / "cifar10"


def cifar_items(
    data_dir: str | Path | None = None, split: str = "test", limit: int | None = None, download: bool = False
) -> tuple[list[Item], dict]:
    root = Path(data_dir) if data_dir is not None else default_cifar_dir()
    if download:
        data.download_cifar10(root)
    images, labels = data.load_cifar10(root, split, limit)
    items = [Item(f"{split}[{i}]", im, int(lab)) for i, (im, lab) in enumerate(zip(images, labels))]
    return items, {"data_dir": str(root), "split": split, "limit": limit}


def mnist_items(
    data_dir: str | Path | None = None, split: str = "test", limit: int | None = None, download: bool = False
) -> tuple[list[Item], dict]:
    """Binarised MNIST (`mnist.binarize`: ink >= 128 is white) as bilevel items."""
    from pxzip import mnist

    root = Path(data_dir) if data_dir is not None else mnist.default_dir()
    if download:
        mnist.download(root)
    images, labels = mnist.load(root, split, limit)
    bits = mnist.binarize(images)
    items = [Item(f"{split}[{i}]", im, int(lab)) for i, (im, lab) in enumerate(zip(bits, labels))]
    return items, {"data_dir": str(root), "split": split, "limit": limit, "binarized": f">= {mnist.THRESHOLD}"}


def _load_file(path: Path) -> np.ndarray:
    from PIL import Image

    from pxzip.errors import UnsupportedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "1":  # bilevel: coded as such by pxzip, and by the bilevel baselines
                return np.asarray(im, dtype=np.bool_).copy()
            if im.mode in _GRAY_MODES:
                if im.mode.startswith("I") or im.mode == "F":
                    raise UnsupportedImageError(f"{path}: {im.mode} images are not 8-bit")
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnsupportedImageError:
        raise
    except Exception as e:  # Pillow raises anything on hostile files (bomb errors, struct.error, ...)
        raise UnsupportedImageError(f"cannot read image {path}: {describe(e)}") from None


def file_items(paths: Sequence[str | Path], limit: int | None = None) -> tuple[list[Item], dict]:
    files = data.image_files(paths)
    if limit is not None:
        files = files[:limit]
    return [Item(str(f), _load_file(f)) for f in files], {"paths": [str(p) for p in paths], "limit": limit}


def load_sources(
    sources: Sequence[str],
    data_dir: str | Path | None = None,
    download: bool = False,
    split: str = "test",
    limit: int | None = None,
    cifar_options: Sequence[str] = (),
) -> tuple[list[Item], str, dict]:
    """CLI sources -> (items, dataset name, source description).

    ("cifar10",) selects the dataset; anything else is image files or folders, for which
    cifar_options (names of CIFAR-only options the user set) are an error.
    """
    if tuple(sources) == ("cifar10",):
        items, source = cifar_items(data_dir, split, limit, download)
        return items, f"cifar10-{split}", source
    if tuple(sources) == ("mnist",):
        items, source = mnist_items(data_dir, split, limit, download)
        return items, f"mnist-{split}", source
    for name in DATASETS:
        if name in sources:
            raise UsageError(f"{name} cannot be mixed with paths (for a folder named {name}, write ./{name})")
    if cifar_options:
        opts = ", ".join("--" + o.replace("_", "-") for o in cifar_options)
        raise UsageError(f"{opts} can only be used with `pxzip bench cifar10` or `pxzip bench mnist`")
    items, source = file_items(sources, limit)
    return items, "files", source


# -- measuring ---------------------------------------------------------------------------------


def parse_baselines(spec: str | Sequence[str] | None) -> list[str]:
    """'png,webp,jxl-e7' (or a list) -> names; 'none' or '' -> []."""
    if spec is None:
        return list(DEFAULT_BASELINES)
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in baselines_mod.KNOWN_CODECS]
    if unknown:
        raise UsageError(
            f"unknown baseline {', '.join(unknown)} (known: {', '.join(baselines_mod.KNOWN_CODECS)}, or none)"
        )
    return names


def resolve_models(items: Sequence[Item], models=None) -> list[zoo.Model]:
    """The model coding each item: the given one of its kind, else the zoo default that
    `codec.compress` would pick for it (which may depend on the image size)."""
    chosen: dict[str, zoo.Model] = {}
    for m in [zoo.load_model(m) for m in (models or [])]:
        if m.kind in chosen and chosen[m.kind].sha256 != m.sha256:
            raise UsageError(f"two {m.kind} models given ({chosen[m.kind].name}, {m.name}): give one per kind")
        chosen[m.kind] = m
    chosen = container.fill_slots(chosen)  # as codec.compress: a gray model codes 1-bit planes too
    return [chosen.get(it.kind) or zoo.default_model(it.kind, *it.pixels.shape[:2]) for it in items]


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def _tiles(pixels: np.ndarray, tile: int | None, order: str = "auto") -> list[np.ndarray]:
    """The tiles the codec codes the image (an `Item.plane`, (H, W, C)) in, each (th, tw, C)."""
    plane = pixels
    h, w = plane.shape[:2]
    log2 = codec.choose_tile_log2(h, w, tile, codec.choose_order(h, w, order))
    out = []
    for unit in codec.units_for(h, w, log2, 1):
        th, tw = unit.shape
        out += [plane[y : y + th, x : x + tw] for y, x in unit.origins]
    return out


def _loss(cfg):
    from pxzip.model import bernoulli_nll, logistic_mixture_nll, softmax_nll

    if cfg.bilevel:
        return bernoulli_nll
    if cfg.arch == "gated":
        return softmax_nll
    return lambda out, px: logistic_mixture_nll(out, px, cfg)


def float_nll_bits(
    items: Sequence[Item],
    models: Sequence[zoo.Model],
    tile: int | None = None,
    labels: Sequence[int | None] | None = None,
    order: str = "auto",
) -> np.ndarray:
    """Float-model NLL of each item (models[i] for items[i]) in bits, summed over its tiles.

    labels: the class label each item is coded with (None: no label); conditional models only.
    order: the coding order (`codec.compress`), which sets the default tile size.
    """
    bits = np.zeros(len(items))
    groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
    floats = {}
    for idx, (it, m) in enumerate(zip(items, models)):
        if m.sha256 not in floats:
            floats[m.sha256] = m.float_model()
        lab = labels[idx] if labels is not None and m.cfg.num_classes else None
        for t in _tiles(it.plane, tile, order):
            groups.setdefault((m.sha256, t.shape, lab), []).append((idx, t))
    with torch.no_grad():
        for (sha, shape, lab), jobs in groups.items():
            fm = floats[sha]
            loss = _loss(fm.cfg)
            per = max(1, NLL_POSITIONS // (shape[0] * shape[1]))
            dims = int(np.prod(shape))
            for k in range(0, len(jobs), per):
                chunk = jobs[k : k + per]
                x = torch.from_numpy(np.stack([t for _, t in chunk]).transpose(0, 3, 1, 2).copy())
                out = fm(x, None if lab is None else torch.full((len(chunk),), lab)).float()
                for b, (idx, _) in enumerate(chunk):
                    bits[idx] += float(loss(out[b : b + 1], x[b : b + 1])) * dims
    return bits


def _mean_pooled(per_image_bits: np.ndarray, dims: np.ndarray) -> dict:
    if len(dims) == 0:
        return {"mean": None, "pooled": None}
    return {"mean": float(np.mean(per_image_bits / dims)), "pooled": float(per_image_bits.sum() / dims.sum())}


def _pct(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else 100.0 * num / den


def _overheads(rates: dict) -> dict:
    out = {}
    for name, (hi, lo) in _OVERHEADS.items():
        row = {}
        for agg in ("mean", "pooled"):
            a, b = rates[hi][agg], rates[lo][agg]
            d = None if a is None or b is None else a - b
            row[f"{agg}_bpd"] = d
            row[f"{agg}_pct"] = _pct(d, b)
        out[name] = row
    return out


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None if enabled is None else not enabled)


def _measure(
    items: Sequence[Item],
    models: Sequence[zoo.Model],
    tile: int | None,
    batch: int,
    label: str | None = None,
    order: str = "auto",
    adapt: bool = True,
    fallback: bool = True,
    device: str = "auto",
) -> dict:
    """Encode, decode, compare and float-NLL one chunk of items (models[i] codes items[i]).

    Returns per-item arrays (file_bytes, payload_bytes, ideal, exact, nll, label) and the chunk's
    errors (indices local to the chunk), seconds spent and this process's peak RSS.
    label: None, or "auto" (conditional models: the shortest of all labels and none); then also
    the float NLL without a label and with the item's own label (nll_no_label, nll_true_label).
    """
    n = len(items)
    given = list({m.sha256: m for m in models}.values())
    errors: list[dict] = []

    # 1. encode every image, tracing the exact frequencies of the coded symbols
    blobs: list[bytes | None] = [None] * n
    ideal = np.full(n, np.nan)
    payload_bytes = np.zeros(n, np.int64)
    headers: list[container.Header | None] = [None] * n  # each file's header, read once
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        trace: list[np.ndarray] = []
        try:
            opts = {"label": label, "order": order, "adapt": adapt, "fallback": fallback, "device": device}
            blobs[i] = codec.compress(it.pixels, models[i], tile=tile, trace=trace, **opts)
        except Exception as e:  # counted and reported, never hidden
            errors.append({"index": i, "name": it.name, "stage": "encode", "error": f"{type(e).__name__}: {e}"})
            continue
        ideal[i] = codec.ideal_bits(trace)
        headers[i], payload = container.unpack(blobs[i])
        payload_bytes[i] = len(payload)
    enc_s = time.perf_counter() - t0
    rss_after_encode = peak_rss_mb()

    # 2. decode in batches with the batched decoder; compare with the originals
    exact = np.zeros(n, bool)
    coded = [i for i in range(n) if blobs[i] is not None]
    dec_s = 0.0
    for k in range(0, len(coded), batch):
        idx = coded[k : k + batch]
        t0 = time.perf_counter()
        try:
            decoded = codec.decompress_many([blobs[i] for i in idx], given, device=device)
        except Exception:
            decoded = None
        dec_s += time.perf_counter() - t0
        if decoded is None:  # find out which images fail, one by one
            decoded = []
            for i in idx:
                try:
                    decoded.append(codec.decompress(blobs[i], given, device=device))
                except Exception as e:
                    decoded.append(None)
                    errors.append(
                        {"index": i, "name": items[i].name, "stage": "decode", "error": f"{type(e).__name__}: {e}"}
                    )
        for i, dec in zip(idx, decoded):
            if dec is None:
                continue
            orig = items[i].pixels
            if orig.dtype == np.bool_ and dec.dtype == np.uint8 and dec.shape == orig.shape:  # mode "1" as 0/1
                dec = dec.astype(np.bool_) if bool((dec <= 1).all()) else dec
            exact[i] = dec.shape == orig.shape and dec.dtype == orig.dtype and bool(np.array_equal(dec, orig))
            if not exact[i]:
                diff = "shape differs" if dec.shape != orig.shape else f"{int((dec != orig).sum())} values differ"
                errors.append({"index": i, "name": items[i].name, "stage": "compare", "error": f"decoded: {diff}"})

    # 3. the float model's NLL on the same tiles, with the label each file was coded with
    t0 = time.perf_counter()
    used = [h.label if h is not None else None for h in headers]
    nll = float_nll_bits(items, models, tile, used, order)
    no_label = true_label = np.full(n, np.nan)
    if label is not None:  # what labels gain: the same model without a label, and given the dataset's label
        cond = np.array([m.cfg.num_classes > 0 for m in models])
        no_label = np.where(cond, float_nll_bits(items, models, tile, order=order), np.nan)
        if all(it.label is not None for it in items):
            true_label = np.where(cond, float_nll_bits(items, models, tile, [it.label for it in items], order), np.nan)
    nll_s = time.perf_counter() - t0
    return {
        "label": np.array([-1 if lab is None else lab for lab in used], np.int64),
        "nll_no_label": no_label,
        "nll_true_label": true_label,
        "file_bytes": np.array([len(b) if b is not None else 0 for b in blobs], np.int64),
        "fallback": np.array([h is not None and bool(h.coders) for h in headers]),
        "ok": np.array([b is not None for b in blobs]),
        "payload_bytes": payload_bytes,
        "ideal": ideal,
        "exact": exact,
        "nll": nll,
        "errors": errors,
        "encode_s": enc_s,
        "decode_s": dec_s,
        "nll_s": nll_s,
        "rss_after_encode": rss_after_encode,
        "rss": peak_rss_mb(),
    }


_WORKER_MODELS: dict[str, zoo.Model] = {}


def _measure_in_worker(
    items: list[Item],
    model_paths: list[str],
    tile: int | None,
    batch: int,
    threads: int,
    label: str | None,
    order: str = "auto",
    adapt: bool = True,
    fallback: bool = True,
    device: str = "auto",
) -> dict:
    """Worker-process side of --jobs: models loaded once per process (from their files, hash-checked)."""
    torch.set_num_threads(threads)
    for p in set(model_paths):
        if p not in _WORKER_MODELS:
            _WORKER_MODELS[p] = zoo.load_model(Path(p))
    models = [_WORKER_MODELS[p] for p in model_paths]
    return _measure(items, models, tile, batch, label, order, adapt, fallback, device)


def _chunks(n: int, size: int) -> list[range]:
    return [range(k, min(n, k + size)) for k in range(0, n, size)]


def run(
    items: Sequence[Item],
    models=None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    *,
    batch: int = DEFAULT_BATCH,
    tile: int | None = None,
    dataset: str = "files",
    source: dict | None = None,
    progress: bool | None = None,
    jobs: int = 1,
    label: str | None = None,
    order: str = "auto",
    adapt: bool = True,
    fallback: bool = True,
    device: str = "auto",
) -> dict:
    """Benchmark items; returns the report (the JSON schema in the module docstring).

    progress: a tqdm bar on stderr (None: only when stderr is a terminal).
    jobs: worker processes (spawned, one torch thread each) that take chunks of at most `batch`
    images; 1 measures in this process, with torch's current thread count.
    label: None (no labels), or "auto": conditional models code each image with the label (or
    none) that gives the shortest file, and the report adds the float NLL without a label and
    with the dataset's own label.
    order: the coding order of every file (`codec.compress`).
    adapt: head offsets fitted per unit (`codec.compress`); the float NLL is the model's without.
    fallback: fallback plane coders tried per plane (`codec.compress`); the ideal bits stay the network's.
    device: where the network runs (`pxzip.device`), for encoding and decoding.
    """
    if label not in (None, "auto"):
        raise UsageError(f"bench label must be None or 'auto', not {label!r}")
    if not items:
        raise UsageError("no images to benchmark")
    if batch < 1:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    for it in items:  # a bad --tile or --order fails now, not after every image has been coded
        h, w = it.pixels.shape[:2]
        try:
            wave = codec.choose_order(h, w, order)
        except ValueError as e:
            raise UsageError(f"--order: {e}") from None
        try:
            codec.choose_tile_log2(h, w, tile, wave)
        except ValueError as e:
            raise UsageError(f"--tile {tile}: {e} ({it.name})") from None
    per_item = resolve_models(items, models)
    given = list({m.sha256: m for m in per_item}.values())
    n = len(items)
    dims = np.array([it.pixels.size for it in items], np.float64)

    # chunks small enough that every job gets work, large enough to batch the decoder
    chunks = _chunks(n, max(1, min(batch, -(-n // jobs))))
    parts: list[dict] = []
    wall0 = time.perf_counter()
    with _progress(n, "encode+decode", progress) as bar:
        if jobs == 1:
            for ch in chunks:
                chunk = [items[i] for i in ch]
                parts.append(
                    _measure(chunk, [per_item[i] for i in ch], tile, batch, label, order, adapt, fallback, device)
                )
                bar.update(len(ch))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            if any(m.path is None for m in given):
                raise UsageError("--jobs needs models loaded from files")
            # spawn: torch and its thread pools do not survive fork safely
            with ProcessPoolExecutor(min(jobs, len(chunks)), mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [
                    pool.submit(
                        _measure_in_worker,
                        [items[i] for i in ch],
                        [str(per_item[i].path) for i in ch],
                        tile,
                        batch,
                        1,
                        label,
                        order,
                        adapt,
                        fallback,
                        device,
                    )
                    for ch in chunks
                ]
                for fut, ch in zip(futures, chunks):
                    parts.append(fut.result())
                    bar.update(len(ch))
    wall_s = time.perf_counter() - wall0

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    errors = [e | {"index": e["index"] + ch.start} for p, ch in zip(parts, chunks) for e in p["errors"]]
    errors.sort(key=lambda e: e["index"])
    exact, nll, ideal, ok = cat("exact"), cat("nll"), cat("ideal"), cat("ok")
    payload_bytes, file_bytes = cat("payload_bytes"), cat("file_bytes")
    enc_s, dec_s, nll_s = (sum(p[k] for p in parts) for k in ("encode_s", "decode_s", "nll_s"))
    rss_after_encode = max(p["rss_after_encode"] for p in parts)
    rss = max(max(p["rss"] for p in parts), peak_rss_mb())
    stage_bits = {"nll": nll, "ideal": ideal, "payload": 8.0 * payload_bytes, "file": 8.0 * file_bytes}
    rates = {s: _mean_pooled(stage_bits[s][ok], dims[ok]) for s in STAGES}
    labels_used, no_label, true_label = cat("label"), cat("nll_no_label"), cat("nll_true_label")
    label_rates = None
    if label is not None:
        label_rates = {}
        for key, bits in (("nll_no_label", no_label), ("nll_true_label", true_label)):
            keep = ok & np.isfinite(bits)
            label_rates[key] = _mean_pooled(bits[keep], dims[keep]) | {"n": int(keep.sum())}
        label_rates["labelled_files"] = int((labels_used[ok] >= 0).sum())

    def per_image(bits: np.ndarray) -> list:
        return [float(b / d) if good else None for b, d, good in zip(bits, dims, ok)]

    # 4. baselines on the same pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = baselines_mod.run_baselines([it.pixels for it in items], list(baselines))
    skipped = [name for name in baselines if name not in base]
    for w in caught:
        if "not available" not in str(w.message):
            warnings.warn(w.message, stacklevel=2)

    n_coded = int(ok.sum())
    return {
        "schema": SCHEMA,
        "dataset": dataset,
        "source": source or {},
        "machine": _machine(),
        "models": {
            m.name: {
                "kind": m.kind,
                "id": m.id.hex(),
                "sha256": m.sha256,
                "path": str(m.path),
                "config": m.cfg.to_json(),
                "members": m.members,  # networks per step (an ensemble's config is its combined head)
            }
            for m in given
        },
        "n": n,
        "n_exact": int(exact.sum()),
        "n_errors": n - int(exact.sum()),
        "errors": errors,
        "images": {
            "name": [it.name for it in items],
            "height": [int(it.pixels.shape[0]) for it in items],
            "width": [int(it.pixels.shape[1]) for it in items],
            "channels": [it.channels for it in items],
            "model": [m.name for m in per_item],
            "dims": [int(d) for d in dims],
            "nll_bpd": per_image(nll),
            "ideal_bpd": per_image(ideal),
            "payload_bpd": per_image(8.0 * payload_bytes),
            "file_bpd": per_image(8.0 * file_bytes),
            "payload_bytes": [int(b) if good else None for b, good in zip(payload_bytes, ok)],
            "file_bytes": [int(b) if good else None for b, good in zip(file_bytes, ok)],
            "exact": [bool(e) for e in exact],
            "fallback": [bool(f) for f in cat("fallback")],
            "label": [int(lab) if lab >= 0 else None for lab in labels_used],
            "nll_no_label_bpd": [float(b / d) if np.isfinite(b) else None for b, d in zip(no_label, dims)],
            "nll_true_label_bpd": [float(b / d) if np.isfinite(b) else None for b, d in zip(true_label, dims)],
        },
        "label": label,
        "order": order,
        "adapt": adapt,
        "fallback": fallback,
        "device": str(devices.resolve(device)),
        "fallback_files": int(cat("fallback")[ok].sum()),
        "label_rates": label_rates,
        "rates": rates,
        # the float NLL summed over each image, in nats, as papers report MNIST (mean over images)
        "nll_nats_per_image": float(np.mean(nll[ok]) * math.log(2)) if ok.any() else None,
        "overheads": _overheads(rates),
        "timing": {
            "encode_s": enc_s,
            "decode_s": dec_s,
            "nll_s": nll_s,
            "encode_images_per_s": n / enc_s if enc_s > 0 else None,
            "encode_ms_per_image": 1000.0 * enc_s / n,
            "decode_images_per_s": n_coded / dec_s if dec_s > 0 else None,
            "decode_ms_per_image": 1000.0 * dec_s / n_coded if n_coded else None,
            "decode_batch": batch,
            "jobs": jobs,
            "wall_s": wall_s,
            "round_trip_images_per_s": n / wall_s if wall_s > 0 else None,
        },
        "memory": {"peak_rss_mb_after_encode": rss_after_encode, "peak_rss_mb": rss},
        "baselines": base,
        "baselines_skipped": skipped,
    }


# -- output ------------------------------------------------------------------------------------


def _f(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _signed(x: float | None, pct: float | None) -> str:
    return "-" if x is None else f"{x:+.4f} ({_f(pct, '+.2f')}%)"


def format_report(r: dict) -> str:
    """The human-readable report (stdout of `pxzip bench`)."""
    im = r["images"]
    shapes = sorted({(h, w, c) for h, w, c in zip(im["height"], im["width"], im["channels"])})
    shape_text = f"{shapes[0][0]}x{shapes[0][1]}x{shapes[0][2]}" if len(shapes) == 1 else f"{len(shapes)} sizes"
    src = r["source"]
    what = "files"
    if r["dataset"].startswith("cifar10"):
        what = f"CIFAR-10 {src.get('split')} from {src.get('data_dir')}"
    elif r["dataset"].startswith("mnist"):
        what = f"binarised MNIST {src.get('split')} (ink {src.get('binarized')}) from {src.get('data_dir')}"
    models = ", ".join(f"{name} ({m['kind']}, id {m['id']})" for name, m in r["models"].items())
    lines = [f"pxzip bench: {what}, {r['n']} images ({shape_text}); models {models}", ""]

    if r["dataset"] == "files":
        base_names = list(r["baselines"])
        head = f"{'image':<28} {'size':>11} {'nll':>7} {'ideal':>7} {'pxzip':>7}" + "".join(
            f" {b:>7}" for b in base_names
        )
        lines += [head]
        for k, name in enumerate(im["name"]):
            short = name if len(name) <= 28 else "..." + name[-25:]
            size = f"{im['width'][k]}x{im['height'][k]}x{im['channels'][k]}"
            row = f"{short:<28} {size:>11} {_f(im['nll_bpd'][k], '7.3f')} {_f(im['ideal_bpd'][k], '7.3f')}"
            row += f" {_f(im['file_bpd'][k], '7.3f')}" + "".join(
                f" {r['baselines'][b]['bpd'][k]:7.3f}" for b in base_names
            )
            if not im["exact"][k]:
                row += "  NOT EXACT"
            lines.append(row)
        lines.append("")

    rates, ov = r["rates"], r["overheads"]
    lines.append(f"{'bits/dim':<26} {'mean':>8} {'pooled':>8}   overhead (mean)")
    labels = {
        "nll": ("float model NLL", None),
        "ideal": ("exact tables (ideal)", "exact_tables"),
        "payload": ("payload (coded bits)", "coder"),
        "file": ("whole .pxz file", "header"),
    }
    for stage, (label, over) in labels.items():
        extra = f"   {_signed(ov[over]['mean_bpd'], ov[over]['mean_pct'])} {over}" if over else ""
        lines.append(f"{label:<26} {_f(rates[stage]['mean']):>8} {_f(rates[stage]['pooled']):>8}{extra}")
    t = ov["total"]
    lines.append(f"{'total: file vs NLL':<26} {'':>8} {'':>8}   {_signed(t['mean_bpd'], t['mean_pct'])}")
    if r["dataset"].startswith("mnist") and r.get("nll_nats_per_image") is not None:
        lines.append(f"float model NLL per image: {r['nll_nats_per_image']:.2f} nats (as papers report MNIST)")
    if r.get("fallback_files"):
        lines.append(f"fallback coders (format 6) took a plane in {r['fallback_files']}/{r['n']} files")
    lr = r.get("label_rates")
    if lr:
        chose = f"{lr['labelled_files']}/{r['n']} files chose a label"
        lines.append(f"labels ('auto'): {chose}; float NLL of the same model")
        for key, text in (("nll_no_label", "  without a label"), ("nll_true_label", "  given the true label")):
            if lr[key]["n"]:
                lines.append(f"{text:<26} {_f(lr[key]['mean']):>8} {_f(lr[key]['pooled']):>8}")
    lines.append("")

    tm, mem = r["timing"], r["memory"]
    lines.append(
        f"round trips: {r['n_exact']}/{r['n']} bit-exact, {r['n_errors']} errors"
        + ("" if not r["n_errors"] else "  <-- FAILED")
    )
    for e in r["errors"][:20]:
        lines.append(f"  error: {e['name']} ({e['stage']}): {e['error']}")
    if len(r["errors"]) > 20:
        lines.append(f"  ... and {len(r['errors']) - 20} more (see --json)")
    lines.append(
        f"encode: {_f(tm['encode_images_per_s'], '.2f')} images/s ({_f(tm['encode_ms_per_image'], '.1f')} ms/image); "
        f"decode: {_f(tm['decode_images_per_s'], '.2f')} images/s ({_f(tm['decode_ms_per_image'], '.1f')} ms/image, "
        f"batches of {tm['decode_batch']}); float NLL pass {tm['nll_s']:.1f} s"
    )
    lines.append(
        f"wall time: {tm['wall_s']:.1f} s with {tm['jobs']} job(s), "
        f"{_f(tm['round_trip_images_per_s'], '.2f')} images/s round trip"
    )
    lines.append(
        f"peak memory (max RSS): {mem['peak_rss_mb']:.0f} MB "
        f"(after encoding {mem['peak_rss_mb_after_encode']:.0f} MB); "
        f"{r['machine']['cpu_count']} CPUs, {r['machine']['torch_threads']} torch threads"
    )
    lines.append("")

    lines.append(f"{'codec':<10} {'mean bpd':>9} {'pooled bpd':>11} {'enc ms/img':>11} {'dec ms/img':>11}  exact")
    lines.append(
        f"{'pxzip':<10} {_f(rates['file']['mean']):>9} {_f(rates['file']['pooled']):>11} "
        f"{_f(tm['encode_ms_per_image'], '.2f'):>11} {_f(tm['decode_ms_per_image'], '.2f'):>11} "
        f" {r['n_exact']}/{r['n']}"
    )
    for name, b in r["baselines"].items():
        lines.append(
            f"{name:<10} {_f(b['mean']):>9} {_f(b['pooled']):>11} {b['enc_ms']:>11.2f} {b['dec_ms']:>11.2f} "
            f" {b['n_exact']}/{b['n']}"
        )
    if r["baselines_skipped"]:
        lines.append(f"(not available here: {', '.join(r['baselines_skipped'])})")
    return "\n".join(lines)


def report_json(report: dict) -> bytes:
    """The report as JSON bytes (what --json writes)."""
    return (json.dumps(report, indent=1, allow_nan=False) + "\n").encode()


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_bytes(report_json(report))


PLOT_FORMATS = ("png", "pdf", "svg")  # --plot file types (by suffix)


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install matplotlib, or pxzip[bench])") from None


def plot(report: dict, path: str | Path, fmt: str | None = None) -> None:
    """Histogram of per-image bits/dim (whole files) for pxzip and each baseline, saved to path
    (fmt: one of PLOT_FORMATS; default: the path's suffix)."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"pxzip": [b for b in report["images"]["file_bpd"] if b is not None]}
    series |= {name: b["bpd"] for name, b in report["baselines"].items()}
    values = np.concatenate([np.asarray(v, float) for v in series.values() if len(v)])
    bins = np.linspace(values.min(), values.max(), 41) if values.max() > values.min() else 10
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, v in series.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (mean {np.mean(v):.3f})")
    ax.set_xlabel("bits/dim (whole file)")
    ax.set_ylabel("images")
    ax.set_title(f"pxzip bench: {report['dataset']}, {report['n']} images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    plt.close(fig)


__all__ = [
    "DEFAULT_BASELINES",
    "Item",
    "SCHEMA",
    "cifar_items",
    "file_items",
    "format_report",
    "load_sources",
    "parse_baselines",
    "plot",
    "run",
    "write_json",
]
