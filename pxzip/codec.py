"""compress / decompress: planes -> tiles -> exact tables -> range coder, and back.

Coding order (the decoder reproduces it step by step). An image is split into planes (planes.py),
each coded by the model of its kind. A plane is cut into square tiles of 2**tile_log2 (one tile
for small images); tiles are independent contexts, which is what lets the decoder advance many
tiles per step. Tiles are grouped into *units*: per plane, by tile shape (largest first), in
raster order, at most MAX_LANES tiles per unit (wavefront order: at most WAVE_UNIT_PIXELS of tiles).
Within a unit the symbols go in one of two orders:

* raster (formats 1-3, and 5 without the wavefront flag): row i, column j, channel c, then tile:
  each decoder step decodes one subpixel of every tile of the unit at once;
* wavefront (format 4, and 5 with the flag; pxzip/wavefront.py): step t, channel c, tile, then row i (column
  j = t - D*i): each step decodes one pixel of every row in flight of every tile, so tiles can
  be large (256 by default: fewer borders without context, smaller files) and still decode fast.

All units of one image go into one range-coder stream. The tables are the same integers in both
orders (one exact model); only the order of the symbols, and so the tiles the decoder can afford,
differ. Format 5 adds head offsets per unit (pxzip/adapt.py): a scale and an offset per head
output that the encoder fits to the unit and stores in the header, applied (in integers) to every
head output of the unit before its tables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import constriction
import numpy as np
import torch
from PIL import Image

from pxzip import adapt as head_offsets
from pxzip import container, engines, fallback, metadata, network, planes, tables, wavefront, zoo
from pxzip import device as devices
from pxzip.errors import ChecksumError, FormatError, UsageError

MAX_LANES = container.UNIT_TILES  # tiles per unit: bounds the decoder's memory for huge images
MAX_SINGLE_TILE = 1 << container.TILE_LOG2_MAX  # an untiled image may not exceed this side
DEFAULT_TILE_LOG2 = 6  # raster order: 64x64 tiles for images larger than that in either dimension
DEFAULT_WAVE_TILE_LOG2 = 8  # wavefront order: 256x256 tiles (see benchmarks/README.md, session 6)
SMALL_SIDE = 64  # order "auto": images with both sides up to this are one tile in raster order
ORDERS = ("auto", "wavefront", "raster")
MAX_WAVE_LANES = 4096  # rows in flight (per member) the decoder batches across files (bounds its memory)
WAVE_UNIT_PIXELS = container.WAVE_UNIT_PIXELS  # wavefront order: tiles per unit up to this many pixels (at least one)
PASS_POSITIONS = 16384  # positions per chunk of the encoder's parallel pass (bounds its memory)
TABLE_POSITIONS = 8192  # positions per batch of exact tables in the encoder (bounds its memory)
FALLBACK_THREAD_PIXELS = 1 << 16  # planes from this size get their fallback coders on a second thread
KEEP_PARAMS = 1 << 26  # head outputs (int32) of a unit the encoder keeps between fitting offsets and coding
FAMILY = constriction.stream.model.Categorical(perfect=False)
SCALE = 2.0**-tables.PRECISION


def _probs(freqs: np.ndarray) -> np.ndarray:
    """Exact integer frequencies -> the float64 C-contiguous table constriction reads."""
    return np.ascontiguousarray(freqs.reshape(-1, 256), dtype=np.float64) * SCALE


@dataclass
class Unit:
    """Tiles of one plane with one shape, coded together."""

    plane: int  # index into the image's planes
    shape: tuple[int, int]  # tile (height, width)
    origins: list[tuple[int, int]]  # (y, x) of each tile, in order


def units_for(height: int, width: int, tile_log2: int, n_planes: int, wave: bool = False) -> list[Unit]:
    """The units of an image, in coding order. In wavefront order a unit holds at most
    WAVE_UNIT_PIXELS of tiles (the encoder's and decoder's memory grows with the unit)."""
    t = 1 << tile_log2 if tile_log2 else max(height, width)
    per = max(1, min(MAX_LANES, WAVE_UNIT_PIXELS // (t * t))) if wave else MAX_LANES
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y in range(0, height, t):
        for x in range(0, width, t):
            by_shape.setdefault((min(t, height - y), min(t, width - x)), []).append((y, x))
    out = []
    for p in range(n_planes):
        for shape in sorted(by_shape, reverse=True):
            tiles = by_shape[shape]
            for k in range(0, len(tiles), per):
                out.append(Unit(p, shape, tiles[k : k + per]))
    return out


Progress = Callable[[int], None]  # internal: called with pixels done since the last call
ProgressBar = Callable[[int, int], None]  # public: called with (pixels done, pixels in all)


def _counter(progress: ProgressBar | None, total: int) -> Progress | None:
    """Turn a (done, total) callback into the increment callback the coding loops call."""
    if progress is None:
        return None
    done = 0
    progress(0, total)

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return step


def choose_order(height: int, width: int, order: str) -> bool:
    """Whether an image is coded in wavefront order: `order` "auto" picks it for images with a side
    above SMALL_SIDE (a small image is one tile, where raster order costs nothing and decodes in
    large batches; its file stays readable by pxzip before format 4)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    return order == "wavefront" or (order == "auto" and max(height, width) > SMALL_SIDE)


def choose_tile_log2(height: int, width: int, tile: int | None, wave: bool = False) -> int:
    if tile is not None:
        if tile == 0:
            if max(height, width) > MAX_SINGLE_TILE:
                raise ValueError(f"--tile 0 (one tile) needs both sides <= {MAX_SINGLE_TILE}")
            return 0
        log2 = int(tile).bit_length() - 1
        if 1 << log2 != tile or not container.TILE_LOG2_MIN <= log2 <= container.TILE_LOG2_MAX:
            lo, hi = 1 << container.TILE_LOG2_MIN, 1 << container.TILE_LOG2_MAX
            raise ValueError(f"tile size must be 0 or a power of two from {lo} to {hi}")
        return 0 if height <= tile and width <= tile else log2
    log2 = DEFAULT_WAVE_TILE_LOG2 if wave else DEFAULT_TILE_LOG2
    return 0 if max(height, width) <= 1 << log2 else log2


def _gather(plane: np.ndarray, unit: Unit) -> np.ndarray:
    th, tw = unit.shape
    return np.stack([plane[y : y + th, x : x + tw] for y, x in unit.origins])  # (n, th, tw, C)


def lane_labels(model: zoo.Model, label: int | None, n: int) -> torch.Tensor | None:
    """(n,) labels for a conditional model's lanes (None: "no label"); None for unconditional models."""
    if not model.cfg.num_classes:
        return None
    return torch.full((n,), model.cfg.null_label if label is None else label, dtype=torch.int64)


def _part(labels: torch.Tensor | None, start: int, size: int) -> torch.Tensor | None:
    return None if labels is None else labels[start : start + size]


def encode_unit(
    enc,
    model: zoo.Model,
    tiles_px: np.ndarray,
    trace: list | None = None,
    progress: Progress | None = None,
    label: int | None = None,
    wave: bool = False,
    fit: bool = False,
) -> tuple[int, ...]:
    """Encode tiles (n, th, tw, C) uint8 into the range coder, in the canonical order.

    trace: if a list, the frequency of each coded symbol is appended to it (see `compress`).
    progress: called with the number of pixels (per plane) coded, after each batch of rows.
    label: class label for a conditional model (None: no label); unconditional models ignore it.
    wave: wavefront order (format 4), else raster order.
    fit: fit head offsets (pxzip/adapt.py) to this unit and code with them where they pay for themselves.
    Returns the head-offsets record the unit was coded with (2P integers, adapt.py), () for none.
    """
    n, th, tw, _ = tiles_px.shape
    em = model.exact
    params = None  # the unit's head outputs (n, P, th, tw), where they are computed whole
    fit = fit and n * th * tw >= head_offsets.MIN_FIT_PIXELS and head_offsets.fittable(em.cfg)
    if not wave or (fit and n * th * tw * em.cfg.num_params_out <= KEEP_PARAMS):
        params = unit_params(model, tiles_px, label)
    offsets = _fit_offsets(model, tiles_px, label, params) if fit else None
    if wave:
        _encode_wave(enc, model, tiles_px, label, trace, progress, params, offsets)
    else:
        _encode_raster(enc, model, tiles_px, trace, progress, params, offsets)
    return () if offsets is None else tuple(int(q) for q in offsets)


def _encode_raster(enc, model: zoo.Model, tiles_px, trace, progress, params, offsets) -> None:
    """The symbols of a unit in raster order: row, column, channel, tile; params (n, P, th, tw)."""
    n, th, tw, c = tiles_px.shape
    em = model.exact
    # rows per table batch: fewer numpy calls, bounded memory (an ensemble's tables are M times wider)
    rows = max(1, TABLE_POSITIONS // (tw * n * model.members))
    for i0 in range(0, th, rows):
        r = min(rows, th - i0)
        # (n, P, r, tw) -> (r, tw, n, P): symbol order is row, column, channel, lane
        prm = params[:, :, i0 : i0 + r].transpose(2, 3, 0, 1).reshape(r * tw * n, -1)
        px = tiles_px[:, i0 : i0 + r].transpose(1, 2, 0, 3).reshape(r * tw * n, c)
        prm = head_offsets.apply(prm, offsets)
        fr = tables.head_freqs_all(prm, px, model.cfg, em.luts, em.prior)  # (r*tw*n, C, 256)
        fr = fr.reshape(r * tw, n, c, 256).transpose(0, 2, 1, 3)  # order (i, j, c, lane)
        sym = px.reshape(r * tw, n, c).transpose(0, 2, 1).reshape(-1).astype(np.int32)
        enc.encode(sym, FAMILY, _probs(fr))
        if trace is not None:  # frequency of the coded symbol, same order
            f = np.take_along_axis(fr, sym.astype(np.int64).reshape(r * tw, c, n, 1), 3)
            trace.append(f.reshape(-1))
        if progress is not None:
            progress(r * tw * n)


def _fit_offsets(model: zoo.Model, tiles_px: np.ndarray, label, params: np.ndarray | None) -> np.ndarray | None:
    """Head offsets for a unit (adapt.fit on a sample of its positions), or None where they would
    not pay for their header bytes or the fit fails (offsets are optional: a failed fit is no error).

    params: the unit's head outputs if they were computed whole; else the sampled positions'
    outputs are computed here strip by strip (the coding pass computes them again)."""
    n, th, tw, c = tiles_px.shape
    idx = head_offsets.sample(n * th * tw)
    t, i, j = np.unravel_index(idx, (n, th, tw))
    if params is not None:
        prm = params[t, :, i, j]  # (N, P)
    else:
        prm = np.empty((len(idx), model.exact.cfg.num_params_out), np.int32)
        strip = _strip_rows(model, tw)
        for s0 in range(0, th, strip):
            sel = (i >= s0) & (i < s0 + strip)
            if sel.any():
                prm[sel] = _strip(model, tiles_px, label, s0, strip)[t[sel], :, i[sel] - s0, j[sel]]
    try:
        f = head_offsets.fit(prm, tiles_px[t, i, j], model.exact.cfg, n * th * tw * c, model.exact.prior)
    except RuntimeError:  # torch.linalg's LinAlgError on a singular system, say
        return None
    return f.record if f.worth_it else None


def unit_params(
    model: zoo.Model, tiles_px: np.ndarray, label: int | None = None, rows: int | None = None
) -> np.ndarray:
    """The encoder's parallel pass over tiles (n, th, tw, C) uint8 -> int32 head outputs (n, P, th, tw).

    Bounded memory: a few tiles per pass, and a tile above PASS_POSITIONS pixels in strips of rows,
    each computed with `network.receptive_rows` rows above it as context. That gives the same
    integers as the whole tile: nothing above those rows can reach the strip, and the exact model's
    values do not depend on how the work is cut (tests/test_wavefront.py checks it).
    rows: rows per strip (default: PASS_POSITIONS worth, at least twice the halo).
    """
    n, th, tw, c = tiles_px.shape
    em = model.exact
    x = torch.from_numpy(np.ascontiguousarray(tiles_px.transpose(0, 3, 1, 2)))
    labels = lane_labels(model, label, n)
    per = max(1, PASS_POSITIONS // (th * tw))
    halo = network.receptive_rows(em.cfg)
    rows = rows or _strip_rows(model, tw)
    out = np.empty((n, em.cfg.num_params_out, th, tw), np.int32)
    for k in range(0, n, per):
        lab = _part(labels, k, per)
        for i0 in range(0, th, rows):
            top = max(0, i0 - halo)
            p = em.tile_params(x[k : k + per, :, top : i0 + rows], lab)
            # int32 holds every head output (activations are clamped to +-2**20) at half int64's memory
            out[k : k + per, :, i0 : i0 + rows] = p[:, :, i0 - top :].to(torch.int32).cpu().numpy()
    return out


def _strip_rows(model: zoo.Model, width: int) -> int:
    """Rows per network pass of a large tile: PASS_POSITIONS worth, at least twice the halo (its overhead)."""
    return max(PASS_POSITIONS // width, 2 * network.receptive_rows(model.exact.cfg))


def _strip(model: zoo.Model, tiles_px: np.ndarray, label, s0: int, rows: int) -> np.ndarray:
    """Head outputs (n, P, r, tw) of rows s0 .. s0 + rows - 1 of tiles (n, th, tw, C), computed with
    their halo of `network.receptive_rows` rows above (the same integers as the whole tile)."""
    top = max(0, s0 - network.receptive_rows(model.exact.cfg))
    return unit_params(model, tiles_px[:, top : s0 + rows], label, rows=s0 + rows - top)[:, :, s0 - top :]


def _encode_wave(enc, model: zoo.Model, tiles_px, label, trace, progress, params=None, offsets=None) -> None:
    """The symbols of a unit in wavefront order: step t, channel c, tile, row i (see wavefront.py).

    The network pass runs in strips of rows as the wavefront reaches them (`unit_params` on the
    rows plus their halo), so memory holds a band of about width / D rows, not whole tiles;
    params: the unit's head outputs (n, P, th, tw) where they are already computed whole (a unit
    whose offsets were fitted, up to KEEP_PARAMS outputs: 256 MiB of int32).
    offsets: the unit's head-offsets record (2P,), or None."""
    n, th, tw, c = tiles_px.shape
    em = model.exact
    lag = wavefront.lag_for(em.cfg)
    rows, cols = wavefront.order(th, tw, lag)  # every position, sorted by (t, i)
    steps = cols + lag * rows
    per = max(1, TABLE_POSITIONS // (n * model.members))  # positions per table batch
    strip = _strip_rows(model, tw)
    band, band_lo = np.zeros((n, em.cfg.num_params_out, 0, tw), np.int32), 0  # params of rows band_lo..
    if params is not None:
        band = params
    a = 0
    while a < len(rows):
        # cut batches at step boundaries: a step's symbols interleave channels across its rows
        b = len(rows) if a + per >= len(rows) else int(np.searchsorted(steps, steps[a + per], "left"))
        b = max(b, int(np.searchsorted(steps, steps[a], "right")))
        k = b - a
        lo, hi = int(rows[a:b].min()), int(rows[a:b].max()) + 1
        drop = min(max(0, lo - band_lo), band.shape[2])  # rows the wavefront has left behind
        band, band_lo = band[:, :, drop:], band_lo + drop
        while band_lo + band.shape[2] < hi:  # the next strip, computed with its halo of rows above
            band = np.concatenate([band, _strip(model, tiles_px, label, band_lo + band.shape[2], strip)], 2)
        prm = band[:, :, rows[a:b] - band_lo, cols[a:b]].transpose(2, 0, 1).reshape(k * n, -1)  # (k*n, P)
        px = tiles_px[:, rows[a:b], cols[a:b]].transpose(1, 0, 2)  # (k, n, C)
        fr = tables.head_freqs_all(head_offsets.apply(prm, offsets), px.reshape(k * n, c), model.cfg, em.luts, em.prior)
        fr = fr.reshape(k, n, c, 256)
        # coding order of the (position, tile, channel) grid: step, channel, tile, then position (= row)
        pos, tile, ch = np.meshgrid(np.arange(k), np.arange(n), np.arange(c), indexing="ij")
        perm = np.lexsort((pos.ravel(), tile.ravel(), ch.ravel(), steps[a:b][pos.ravel()]))
        fr = fr.reshape(-1, 256)[perm]
        sym = px.reshape(-1)[perm].astype(np.int32)
        enc.encode(sym, FAMILY, _probs(fr))
        if trace is not None:
            trace.append(fr[np.arange(len(sym)), sym])
        if progress is not None:
            progress(k * n)
        a = b


def decode_units(
    model: zoo.Model,
    shape: tuple[int, int],
    parts: list[tuple[object, int]],
    progress: Progress | None = None,
    labels: list[int | None] | None = None,
    wave: bool = False,
    offsets: list[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Decode several units of one model, shape and order in lockstep.

    parts: (decoder, number of tiles) per unit, each unit from a different stream. Returns the
    tiles (sum n, th, tw, C) uint8, units concatenated in the given order.
    labels: the class label of each unit's file (None: no label), for conditional models.
    wave: the units are in wavefront order (format 4), else raster order.
    offsets: each unit's head-offsets record (format 5: 2P integers; () for none), or None where no unit has any.
    """
    th, tw = shape
    cfg, em = model.cfg, model.exact
    c = cfg.in_channels
    total = sum(n for _, n in parts)
    bounds = np.cumsum([0] + [n for _, n in parts])
    out = np.zeros((total, th, tw, c), np.uint8)
    lanes = None
    if cfg.num_classes:  # each unit's lanes take its file's label: files with different labels share steps
        lanes = torch.cat([lane_labels(model, lab, n) for (_, n), lab in zip(parts, labels or [None] * len(parts))])
    lane_off = None  # (total, 2P): each tile's head-offsets record (scales, offsets; zeros: none)
    if offsets is not None and any(offsets):
        p = 2 * em.cfg.num_params_out
        rows = [np.broadcast_to(np.array(o or [0] * p, np.int64), (n, p)) for (_, n), o in zip(parts, offsets)]
        lane_off = np.concatenate(rows)
    if wave:
        return _decode_wave(model, shape, parts, out, progress, lanes, lane_off)
    st = engines.stepper(em, total, th, tw, device=em.device, labels=lanes)
    head = st.params_int if lane_off is None else (lambda j: head_offsets.apply(st.params_int(j), lane_off))
    vals = np.empty(total, np.int64)
    for i in range(th):
        st.start_row(i)
        for j in range(tw):
            steps = tables.PixelSteps(cfg, em.luts, partial(head, j), em.prior)
            for ch in range(c):
                probs = _probs(steps.freqs(ch))
                for (dec, _), lo, hi in zip(parts, bounds[:-1], bounds[1:]):
                    vals[lo:hi] = dec.decode(FAMILY, probs[lo:hi])
                out[:, i, j, ch] = vals
                st.set_pixel(j, ch, vals)
                steps.observe(ch, vals)
        if progress is not None:
            progress(tw * total)
    return out


def _decode_wave(model: zoo.Model, shape, parts, out: np.ndarray, progress: Progress | None, lanes, lane_off):
    """decode_units in wavefront order: each step decodes one pixel of every row in flight.

    lane_off: (tiles, 2P) head-offsets record of each tile, or None."""
    th, tw = shape
    cfg, em = model.cfg, model.exact
    total = len(out)
    bounds = np.cumsum([0] + [n for _, n in parts])
    ws = engines.wave_stepper(em, total, th, tw, device=em.device, labels=lanes)
    done, end = 0, wavefront.num_steps(th, tw, ws.lag)
    for t in range(ws.start, end):
        rows = ws.advance(t)
        k = len(rows)
        if not k:
            continue
        r = np.arange(rows.start, rows.stop)
        j = t - ws.lag * r
        head = ws.params_int
        if lane_off is not None:  # the stepper's lanes are (tile, row): each tile's offsets k times
            off = np.repeat(lane_off, k, axis=0)
            head = lambda off=off: head_offsets.apply(ws.params_int(), off)  # noqa: E731
        steps = tables.PixelSteps(cfg, em.luts, head, em.prior)
        vals = np.empty(total * k, np.int64)  # order (tile, row), as the stepper's lanes
        for ch in range(cfg.in_channels):
            probs = _probs(steps.freqs(ch))
            for (dec, _), lo, hi in zip(parts, bounds[:-1], bounds[1:]):
                vals[lo * k : hi * k] = dec.decode(FAMILY, probs[lo * k : hi * k])
            out[:, r, j, ch] = vals.reshape(total, k)
            ws.set_pixel(ch, vals)
            steps.observe(ch, vals)
        done += k
        if progress is not None and (done >= tw or t == end - 1):
            progress(done * total)  # about one row's worth of pixels at a time
            done = 0
    return out


def _models_for(slots, given: list[zoo.Model], height: int, width: int) -> dict[str, zoo.Model]:
    """Slot kind -> model for compression: a given model fills its kind (a given gray model also
    the bilevel slot, when no bilevel model is given), the defaults for an image of this size the rest."""
    chosen = container.fill_slots({m.kind: m for m in given})
    return {kind: chosen.get(kind) or zoo.default_model(kind, height, width) for kind in slots}


def _as_models(model) -> list[zoo.Model]:
    if model is None:
        return []
    if isinstance(model, (list, tuple)):
        return [zoo.load_model(m) for m in model]
    return [zoo.load_model(model)]


def compress(
    image,
    model=None,
    *,
    tile: int | None = None,
    trace: list | None = None,
    progress: ProgressBar | None = None,
    keep_metadata: bool = True,
    label: int | str | None = None,
    order: str = "auto",
    adapt: bool = True,
    fallback: bool = True,
    device: str | None = "auto",
) -> bytes:
    """Losslessly compress an image (PIL image or uint8 numpy array) to .pxz bytes.

    model: None (shipped defaults), a zoo name, a path, a loaded Model, or a list of them (one per
    plane kind, "rgb", "gray" and/or "bilevel"; a gray model also codes 1-bit planes when no bilevel
    model is given). tile: tile side (power of two) or 0 for one tile.
    trace: if a list, int64 arrays are appended to it holding, in coding order, the exact
    frequency (out of 2**tables.PRECISION) the coder used for every coded symbol: the ideal code
    length is `ideal_bits(trace)`. Tracing never changes the bytes.
    progress: called as progress(done, total) with pixel counts (summed over planes) as coding goes.
    keep_metadata: store a PIL image's ICC profile, EXIF, XMP and PNG text with it (`pxzip.metadata`).
    label: for class-conditional models: a class label 0..N-1 to code the image with (stored in the
    file), None for none, or "auto": code with every label and with none, keep the shortest file
    (ties: no label, then the smallest label). "auto" is a no-op for unconditional models.
    order: symbol order, "wavefront" (format 4: large tiles that decode fast), "raster" (files that
    pxzip before format 4 reads) or "auto" (wavefront for images with a side above 64, else raster).
    The default tile follows the order: 256 for wavefront, 64 for raster.
    adapt: fit head offsets to every unit of at least head_offsets.MIN_FIT_PIXELS pixels and store them
    (format 5) where they save more than they cost; False writes files that pxzip before format 5
    reads.
    fallback: also code every plane with the fallback coders (pxzip/fallback.py: context mixing, of the
    values or of indexed colours, and the plane's PNG deflate stream) and keep, per plane, whichever is
    smallest (format 6 when a fallback wins): no image costs more than its planes' PNGs plus a few
    header bytes. False: the
    network only (files pxzip before format 6 reads). trace covers the network's coding of every plane,
    also of those a fallback then took (so ideal_bits(trace) is the network's own code length).
    device: where the network's sums run, "auto" (CUDA when present), "cpu" or "cuda[:N]"
    (`pxzip.device`); the bytes are the same on every device.
    """
    if label == "auto":
        return _compress_auto(
            image,
            model,
            tile=tile,
            trace=trace,
            progress=progress,
            keep_metadata=keep_metadata,
            order=order,
            adapt=adapt,
            fallback=fallback,
            device=device,
        )
    dev = devices.resolve(device)
    img = planes.to_image(image)
    split = planes.split(img)
    h, w = split.pixels.shape[:2]
    wave = choose_order(h, w, order)
    tile_log2 = choose_tile_log2(h, w, tile, wave)
    slots = container.model_slots(split.mode, split.palette_as_rgb)
    models = {k: m.on(dev) for k, m in _models_for(slots, _as_models(model), h, w).items()}
    label = _check_label(label, models.values())
    extra = container.palette_section(split.palette, split.transparency) if split.mode == "P" else b""
    header = container.Header(
        mode=split.mode,
        width=w,
        height=h,
        tile_log2=tile_log2,
        model_ids=tuple(models[k].id for k in slots),
        crc32=0,  # sealed below, once the header is complete
        palette=split.palette if split.mode == "P" else None,
        transparency=split.transparency if split.mode == "P" else None,
        palette_as_rgb=split.palette_as_rgb,
        metadata=metadata.from_image(img) if keep_metadata and isinstance(image, Image.Image) else (),
        label=label,
        wavefront=wave,
    )
    enc = constriction.stream.queue.RangeEncoder()
    step = _counter(progress, h * w * len(split.planes))
    offsets: list[tuple[int, ...]] = []
    coders: list[container.PlaneCode] = []
    units = units_for(h, w, tile_log2, len(split.planes), wave)
    # a large plane's fallback coders (context mixing, PNG: compiled or C code that releases the GIL)
    # run on a second thread while the network codes it; the result is the same, only sooner
    side = ThreadPoolExecutor(1) if fallback and h * w >= FALLBACK_THREAD_PIXELS else None
    try:
        for p, plane in enumerate(split.planes):
            pending = side.submit(_fallback_for, split, p) if side is not None else None
            before, first = enc.clone(), len(offsets)
            for unit in (u for u in units if u.plane == p):
                tiles = _gather(plane, unit)
                offsets.append(encode_unit(enc, models[split.kinds[p]], tiles, trace, step, label, wave, adapt))
            best = pending.result() if pending is not None else _fallback_for(split, p) if fallback else None
            # the network's cost of this plane: its share of the stream and of the offsets section
            cost = _stream_size(enc) - _stream_size(before)
            cost += sum(len(container.offset_record(r)) - 1 for r in offsets[first:])
            if best is not None and len(container.coders_section((best,))) < cost:
                enc = before  # the plane leaves the stream: the fallback's bytes code it instead
                offsets[first:] = [()] * (len(offsets) - first)
                coders.append(best)
            else:
                coders.append(container.PlaneCode(container.NETWORK))
    finally:
        if side is not None:
            side.shutdown(wait=False, cancel_futures=True)
    if any(c.method != container.NETWORK for c in coders):
        header = _with_coders(header, split, tuple(coders))
        if header.label is not None and not _classes(models[k] for k in container.used_slots(header)):
            header = dataclasses.replace(header, label=None)  # no network plane left to take the label
    # the header holds the offsets, and the checksum covers the header: both are known only now
    header = dataclasses.replace(header, offsets=tuple(offsets) if any(offsets) else ())
    header = dataclasses.replace(header, crc32=container.checksum(header, container.pixel_crc(split.pixels, extra)))
    return container.pack(header, container.words_to_bytes(enc.get_compressed()))


def holds_pixels(data: bytes, image) -> bool:
    """True when .pxz bytes are a file of exactly this image's pixels (and palette).

    Only the header is read (its checksum covers the pixels), so this is cheap; a damaged payload is
    not noticed (every decode checks the checksum). Bytes that are not a .pxz file give False.
    """
    try:
        header, _ = container.unpack(data)
    except FormatError:
        return False
    split = planes.split(planes.to_image(image))
    h, w = split.pixels.shape[:2]
    if (header.mode, header.width, header.height) != (split.mode, w, h):
        return False
    extra = container.palette_section(split.palette, split.transparency) if split.mode == "P" else b""
    return container.checksum(header, container.pixel_crc(split.pixels, extra)) == header.crc32


def matches(data: bytes, image, model=None) -> bool:
    """`holds_pixels`, and every plane the network codes coded with the model `compress(image, model)`
    would choose for it now: how a resumed dataset job (`pxzip.ray`) keeps a file instead of coding
    it again. (Planes a fallback coder holds name no model; they match whatever the models.)"""
    if not holds_pixels(data, image):
        return False
    header, _ = container.unpack(data)
    slots, used = container.model_slots(header.mode, header.palette_as_rgb), container.used_slots(header)
    models = _models_for([k for k in slots if k in used], _as_models(model), header.height, header.width)
    return all(mid == models[k].id for k, mid in zip(slots, header.model_ids) if k in used)


def _stream_size(enc) -> int:
    """Bytes the range coder's stream would take in a file now (the encoder goes on)."""
    return len(container.words_to_bytes(enc.get_compressed()))


def _fallback_for(split: planes.Split, p: int) -> container.PlaneCode | None:
    """The cheapest fallback coding of plane p (a palette image's fallback codes its indices)."""
    if split.mode == "P":
        return fallback.candidates(split.pixels[:, :, None], "P", split.palette or b"")[0]
    return fallback.candidates(fallback.symbols_of(split.planes[p], split.mode), split.mode)[0]


def _with_coders(header: container.Header, split: planes.Split, coders) -> container.Header:
    """The header for planes stored by `coders` (format 6): slots no network plane uses hold no model,
    and a palette image whose indices a fallback codes is no longer coded as RGB."""
    header = dataclasses.replace(header, coders=coders, palette_as_rgb=header.palette_as_rgb and coders[0].method == 0)
    used = container.used_slots(header)
    slots = container.model_slots(header.mode, header.palette_as_rgb)
    ids = dict(zip(container.model_slots(split.mode, split.palette_as_rgb), header.model_ids))
    return dataclasses.replace(
        header, model_ids=tuple(ids.get(k, b"") if k in used else container.NO_MODEL for k in slots)
    )


def _check_label(label, models) -> int | None:
    """A label every conditional model accepts; a label with no conditional model is an error."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"label must be an integer, None or 'auto', not {label!r}")
    classes = _classes(models)
    if not classes:
        raise ValueError(f"model {', '.join(m.name for m in models)} is not class-conditional: it takes no label")
    if not 0 <= label < classes:
        raise ValueError(f"label {label} out of range: the model knows labels 0..{classes - 1}")
    return int(label)


def _classes(models) -> int:
    """Labels every conditional model among `models` knows; 0 if none of them is conditional."""
    return min([m.cfg.num_classes for m in models if m.cfg.num_classes], default=0)


def conditional_classes(model, image) -> int:
    """Labels the models that would code `image` know (0 if none of them is class-conditional).

    model: as for `compress` (None: the shipped defaults).
    """
    split = planes.split(planes.to_image(image))
    h, w = split.pixels.shape[:2]
    models = _models_for(container.model_slots(split.mode, split.palette_as_rgb), _as_models(model), h, w)
    return _classes(models.values())


def _compress_auto(image, model, *, trace: list | None, progress: ProgressBar | None, **kw) -> bytes:
    """`compress(label="auto")`: every candidate coded in full, the shortest kept (exact sizes, not estimates)."""
    models = _as_models(model)  # load once for all candidates
    candidates = [None, *range(conditional_classes(models, image))]
    best, best_trace = None, None
    for k, lab in enumerate(candidates):
        tr: list | None = [] if trace is not None else None
        pr = None if progress is None else (lambda d, t, k=k: progress(k * t + d, len(candidates) * t))
        data = compress(image, models or None, trace=tr, progress=pr, label=lab, **kw)
        if best is None or len(data) < len(best):
            best, best_trace = data, tr
    if trace is not None:
        trace.extend(best_trace)
    return best


def ideal_bits(trace: list[np.ndarray]) -> float:
    """Ideal code length in bits of traced symbols: sum of -log2(freq / 2**PRECISION)."""
    if not trace:
        return 0.0
    f = np.concatenate([np.asarray(t, np.int64).reshape(-1) for t in trace])
    return float(np.sum(tables.PRECISION - np.log2(f.astype(np.float64))))


@dataclass
class _Stream:
    header: container.Header
    decoder: object
    models: dict[str, zoo.Model]
    kinds: list[str]
    units: list[Unit]  # the units the network decodes (format 6: not those of fallback planes)
    planes: list[np.ndarray]
    records: list[tuple[int, ...]]  # head offsets of each of `units`, () for none
    next: int = 0  # index of the next unit to decode


def max_pixels() -> int:
    """Largest image the decoder accepts ($PXZIP_MAX_PIXELS, default 2**27 pixels)."""
    value = os.environ.get("PXZIP_MAX_PIXELS", str(2**27))
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"PXZIP_MAX_PIXELS={value!r}: expected a whole number of pixels") from None


def _open(data: bytes, given: list[zoo.Model], dev: torch.device | None = None) -> _Stream:
    header, payload = container.unpack(data)
    # a range coder can legally code a huge image in a few bytes, so a damaged size field is only
    # caught by the checksum after decoding: refuse absurd sizes before spending memory and time
    if header.width * header.height > max_pixels():
        raise FormatError(
            f"declared size {header.width}x{header.height} exceeds this decoder's limit of {max_pixels()} pixels "
            "(set PXZIP_MAX_PIXELS to raise it)"
        )
    if header.tile_log2 == 0 and max(header.width, header.height) > MAX_SINGLE_TILE:
        raise FormatError(f"declared size {header.width}x{header.height} is too large for a single tile")
    slots = container.model_slots(header.mode, header.palette_as_rgb)
    used = container.used_slots(header)  # format 6: a slot whose planes a fallback coder holds needs no model
    models = {kind: zoo.find_by_id(mid, given) for kind, mid in zip(slots, header.model_ids) if kind in used}
    models = {kind: m.on(dev or torch.device("cpu")) for kind, m in models.items()}
    for kind, m in models.items():
        if not container.slot_accepts(kind, m.kind):
            raise FormatError(f"model {m.name} codes {m.kind} planes, but this file needs a {kind} model")
    if header.label is not None:
        classes = _classes(models.values())
        if not classes:
            raise FormatError("file has a class label but its model is not class-conditional")
        if header.label >= classes:
            raise FormatError(f"corrupt pxz file: class label {header.label} unknown to the model")
    kinds = planes.plane_kinds(header.mode, header.palette_as_rgb)
    shapes = [(header.height, header.width, 3 if k == "rgb" else 1) for k in kinds]
    coders = header.coders or tuple(container.PlaneCode(container.NETWORK) for _ in kinds)
    units = units_for(header.height, header.width, header.tile_log2, len(kinds), header.wavefront)
    records = list(header.offsets) if header.offsets else [()] * len(units)
    for u, rec in zip(units, records):  # container.unpack checked their count against the image's units
        p = models[kinds[u.plane]].exact.cfg.num_params_out if rec else 0
        if rec and len(rec) != 2 * p:
            n = len(rec)
            raise FormatError(f"corrupt pxz file: {n} head offsets for a model with {p} head outputs (2P expected)")
    out = [np.zeros(s, np.uint8) for s in shapes]
    for p, c in enumerate(coders):  # fallback planes decode now; the network's units go in lockstep batches
        if c.method != container.NETWORK:
            out[p] = fallback.plane_of(fallback.decode(c, shapes[p]), header.mode)
    network_units = [(u, r) for u, r in zip(units, records) if coders[u.plane].method == container.NETWORK]
    decoder = constriction.stream.queue.RangeDecoder(container.bytes_to_words(payload))
    return _Stream(header, decoder, models, kinds, [u for u, _ in network_units], out, [r for _, r in network_units])


def _finish(s: _Stream) -> np.ndarray:
    h = s.header
    try:
        pixels = planes.merge(h.mode, s.planes, h.palette, h.transparency, h.palette_as_rgb)
    except ChecksumError:
        raise ChecksumError("decoded image is corrupt (checksum mismatch): the file is damaged") from None
    extra = container.palette_section(h.palette, h.transparency) if h.mode == "P" else b""
    if container.checksum(h, container.pixel_crc(pixels, extra)) != h.crc32:
        raise ChecksumError("decoded image is corrupt (checksum mismatch): the file is damaged")
    return pixels


def decompress_many(
    datas: list[bytes],
    model=None,
    max_lanes: int = 1024,
    progress: ProgressBar | None = None,
    device: str | None = "auto",
) -> list[np.ndarray]:
    """Decode many .pxz byte strings at once, batching their tiles into shared decoder steps.

    max_lanes: tiles per batch of raster-order units; wavefront units are batched up to
    MAX_WAVE_LANES rows in flight (tiles x slots x ensemble members) instead.

    progress: called as progress(done, total) with pixel counts (summed over planes and images).
    device: where the network's sums run, as for `compress`.
    """
    given = _as_models(model)
    dev = devices.resolve(device)
    streams = [_open(d, given, dev) for d in datas]
    step = _counter(progress, sum(s.header.width * s.header.height * len(s.kinds) for s in streams))
    while True:
        pending = [s for s in streams if s.next < len(s.units)]
        if not pending:
            break
        groups: dict[tuple, list[_Stream]] = {}
        for s in pending:
            u = s.units[s.next]
            groups.setdefault((s.models[s.kinds[u.plane]].sha256, u.shape, s.header.wavefront), []).append(s)
        for (_, shape, wave), members in groups.items():
            # a batch's lanes: tiles in raster order, rows in flight in wavefront order
            m0 = members[0].models[members[0].kinds[members[0].units[members[0].next].plane]]
            per_tile, budget = (1, max_lanes)
            if wave:
                per_tile, budget = wavefront.slots_for(m0.cfg, shape[1]) * m0.members, MAX_WAVE_LANES
            k = 0
            while k < len(members):  # fill decoder batches up to the budget
                batch, lanes = [], 0
                while k < len(members):
                    n = len(members[k].units[members[k].next].origins) * per_tile
                    if batch and lanes + n > budget:
                        break
                    batch.append(members[k])
                    lanes += n
                    k += 1
                _decode_batch(batch, shape, step)
    return [_finish(s) for s in streams]


def _decode_batch(batch: list[_Stream], shape: tuple[int, int], progress: Progress | None = None) -> None:
    units = [s.units[s.next] for s in batch]
    model = batch[0].models[batch[0].kinds[units[0].plane]]
    try:
        parts = [(s.decoder, len(u.origins)) for s, u in zip(batch, units)]
        labels = [s.header.label for s in batch]
        offsets = [s.records[s.next] for s in batch]
        tiles = decode_units(model, shape, parts, progress, labels, batch[0].header.wavefront, offsets)
    except BaseException as e:
        # constriction reports bad input with ValueError or AssertionError ("Tried to decode from compressed
        # data that is invalid for the employed entropy model"), and Rust panics as pyo3's PanicException
        # (a BaseException); anything else is a bug and must surface as itself
        if isinstance(e, (ValueError, AssertionError)) or type(e).__name__ == "PanicException":
            raise FormatError("corrupt payload: the coded data ends early or is damaged") from None
        raise
    pos = 0
    th, tw = shape
    for s, u in zip(batch, units):
        plane = s.planes[u.plane]
        for y, x in u.origins:
            plane[y : y + th, x : x + tw] = tiles[pos]
            pos += 1
        s.next += 1


def decompress(data: bytes, model=None, progress: ProgressBar | None = None, device: str | None = "auto") -> np.ndarray:
    """Decode .pxz bytes to the pixel array in the image's own mode (see planes.Split.pixels)."""
    return decompress_many([data], model, progress=progress, device=device)[0]


def decompress_image(
    data: bytes, model=None, progress: ProgressBar | None = None, device: str | None = "auto"
) -> Image.Image:
    """Decode .pxz bytes to a PIL image with the original mode, palette, transparency and metadata."""
    return decompress_images([data], model, progress, device)[0]


def decompress_images(
    datas: list[bytes], model=None, progress: ProgressBar | None = None, device: str | None = "auto"
) -> list[Image.Image]:
    """`decompress_image` for many files at once, decoded in lockstep like `decompress_many`."""
    headers = [container.unpack(d)[0] for d in datas]
    out = []
    for h, pixels in zip(headers, decompress_many(datas, model, progress=progress, device=device)):
        out.append(metadata.apply(planes.to_pil(h.mode, pixels, h.palette, h.transparency), h.metadata))
    return out
