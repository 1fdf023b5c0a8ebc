"""Coders besides the network for one plane (context mixing, indexed colours, PNG's deflate); the encoder
keeps the cheapest.

The network codes photographs far better than any classical codec, but a plane it never learned
(palette indices, 1-bit scans, flat graphics, noise) can cost more than its PNG. Format 6 lets each
plane name its coder (docs/FORMAT.md "Plane coders"):

- NETWORK: the plane's units are in the range coder's payload, as in formats 1 to 5;
- CMIX: `pxzip.cmix`'s adaptive context mixing of the plane's symbols (param: bits per symbol);
- INDEXED: the plane's distinct colours (sorted by luminance), then CMIX of each pixel's colour index:
  what a few-colour RGB plane (a drawing, a screenshot) needs, and WebP's colour-indexing transform does;
- DEFLATE: the plane's rows as PNG stores them (a filter byte per row, then the row packed at the
  param's bit depth), in a zlib stream. The encoder takes that stream from Pillow's PNG writer
  (optimize=True), so this candidate is the plane's PNG without its chunk framing: with it no plane
  ever costs more than its PNG plus a few header bytes.

Symbols: a plane's values, except mode "1" (0/1, not 0/255) and palette indices (the index plane).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from numba import njit
from PIL import Image

from pxzip import cmix
from pxzip.container import CMIX, DEFLATE, INDEXED, PNG_DEPTHS, PlaneCode, _Reader, varint
from pxzip.errors import FormatError

_PNG_COLOR = {1: (0, 3), 3: (2,)}  # channels -> PNG colour types the plane may be written as


def symbols_of(plane: np.ndarray, mode: str) -> np.ndarray:
    """A coded plane (H, W, C) uint8 -> the symbols the fallback coders see (mode "1": 0/1)."""
    return plane // np.uint8(255) if mode == "1" else plane


def plane_of(symbols: np.ndarray, mode: str) -> np.ndarray:
    """Inverse of `symbols_of`."""
    return symbols * np.uint8(255) if mode == "1" else symbols


def bits_for(symbols: np.ndarray) -> int:
    """Bits per symbol that hold every symbol of the plane (1..8)."""
    return max(1, int(symbols.max(initial=0)).bit_length())


def encode_cmix(symbols: np.ndarray) -> PlaneCode:
    """The plane's symbols by context mixing, in as few bits per symbol as hold them."""
    nbits = bits_for(symbols)
    return PlaneCode(CMIX, nbits, cmix.encode(symbols, nbits))


MAX_INDEXED = 256  # colours an INDEXED plane may have (its indices are coded in at most 8 bits)
MAX_INDEXED_GRAY = 16  # ... and for a one-channel plane, where context mixing of the values does nearly as well


def encode_indexed(symbols: np.ndarray) -> PlaneCode | None:
    """The plane as its distinct colours plus context mixing of the colour indices; None when it has more
    colours than an index holds (or, one channel, more levels than pay)."""
    h, w, c = symbols.shape
    flat = symbols.reshape(-1, c)
    weights = np.array([1 << 16, 1 << 8, 1], np.uint32)[-c:]  # one integer per colour (c is 1 or 3)
    limit = MAX_INDEXED if c > 1 else MAX_INDEXED_GRAY
    if len(np.unique(flat[:: max(1, len(flat) // 4096)].astype(np.uint32) @ weights)) > limit:
        return None  # a photo: a sample of its pixels already has too many colours
    uniq, index = np.unique(flat.astype(np.uint32) @ weights, return_inverse=True)
    if len(uniq) > limit:
        return None
    colours = ((uniq[:, None] >> np.array([16, 8, 0], np.uint32)[-c:]) & 255).astype(np.uint8)  # (n, c)
    # luminance order (ties by colour): neighbouring indices are alike, which the tree's upper bits share
    luma = colours.astype(np.int64) @ (np.array([299, 587, 114]) if c == 3 else np.ones(c, np.int64))
    order = np.lexsort((*(colours[:, k] for k in range(c - 1, -1, -1)), luma))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    idx = rank[index.reshape(-1)].astype(np.uint8).reshape(h, w, 1)
    nbits = max(1, int(len(colours) - 1).bit_length())
    table = varint(len(colours)) + colours[order].astype(np.uint8).tobytes()
    return PlaneCode(INDEXED, nbits, table + cmix.encode(idx, nbits))


def decode_indexed(code: PlaneCode, shape: tuple[int, int, int]) -> np.ndarray:
    """An INDEXED entry -> symbols (H, W, C) uint8; FormatError when its colour table or indices are bad."""
    h, w, c = shape
    data = code.data
    reader = _Reader(data)  # the header's bounds-checked varint reader (shortest form only)
    n = reader.varint("indexed plane colour count")
    pos = reader.pos
    if not 1 <= n <= MAX_INDEXED or n > 1 << code.param or len(data) < pos + n * c:
        raise FormatError(f"corrupt pxz file: an indexed plane with {n} colours for {code.param}-bit indices")
    colours = np.frombuffer(data[pos : pos + n * c], np.uint8).reshape(n, c)
    idx, used = cmix.decode(data[pos + n * c :], (h, w, 1), code.param)
    if used > len(data) - pos - n * c + 4 or int(idx.max(initial=0)) >= n:
        raise FormatError("corrupt pxz file: an indexed plane's indices are damaged")
    return np.ascontiguousarray(colours[idx[:, :, 0]])


def _png_chunks(png: bytes) -> tuple[bytes, bytes]:
    """(IHDR payload, concatenated IDAT payloads) of a PNG Pillow wrote."""
    pos, ihdr, idat = 8, b"", []
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    return ihdr, b"".join(idat)


def encode_deflate(symbols: np.ndarray, mode: str, palette: bytes | None = None) -> PlaneCode | None:
    """The plane's PNG (Pillow, optimize=True) as a DEFLATE entry; None when Pillow's PNG does not
    give the plane back exactly (checked here by decoding it)."""
    h, w, c = symbols.shape
    if mode == "1":
        img = Image.fromarray(symbols[:, :, 0].astype(bool))
    elif c == 3:
        img = Image.fromarray(symbols, "RGB")
    elif palette is not None:
        img = Image.fromarray(symbols[:, :, 0], "P")
        img.putpalette(palette or b"\0\0\0", "RGB")  # its length sets Pillow's bit depth (1, 2, 4 or 8)
    else:
        img = Image.fromarray(symbols[:, :, 0], "L")
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    ihdr, idat = _png_chunks(buf.getvalue())
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (width, height) != (w, h) or interlace or depth not in PNG_DEPTHS or color not in _PNG_COLOR[c]:
        return None
    code = PlaneCode(DEFLATE, depth, idat)
    try:
        ok = np.array_equal(decode_deflate(code, (h, w, c)), symbols)
    except FormatError:
        ok = False
    return code if ok else None


@njit(cache=True, nogil=True)
def _unfilter(raw, h, stride, bpp):
    """PNG's five row filters undone in place on raw (h * (1 + stride),); returns 0, or 1 on a bad filter."""
    for y in range(h):
        f = raw[y * (stride + 1)]
        row = y * (stride + 1) + 1
        up = row - stride - 1
        if f > 4:
            return 1
        for i in range(stride):
            a = raw[row + i - bpp] if i >= bpp else 0
            b = raw[up + i] if y > 0 else 0
            cc = raw[up + i - bpp] if y > 0 and i >= bpp else 0
            if f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) >> 1
            elif f == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            else:
                pred = 0
            raw[row + i] = (raw[row + i] + pred) & 255
    return 0


def decode_deflate(code: PlaneCode, shape: tuple[int, int, int]) -> np.ndarray:
    """A DEFLATE entry -> symbols (H, W, C) uint8; FormatError when the stream does not hold such rows."""
    h, w, c = shape
    depth = code.param
    stride = (w * c * depth + 7) // 8
    size = h * (stride + 1)
    inflate = zlib.decompressobj()
    try:
        # at most one byte past the plane: a hostile stream cannot blow up memory, and the stream's end is read
        raw = inflate.decompress(code.data, size + 1)
    except zlib.error:
        raise FormatError("corrupt pxz file: a deflate plane does not inflate") from None
    if len(raw) != size or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise FormatError("corrupt pxz file: a deflate plane holds the wrong number of bytes")
    buf = np.frombuffer(raw, np.uint8).astype(np.int64)
    if _unfilter(buf, h, stride, max(1, c * depth // 8)):
        raise FormatError("corrupt pxz file: a deflate plane has an unknown PNG filter")
    rows = buf.reshape(h, stride + 1)[:, 1:].astype(np.uint8)
    if depth < 8:
        bits = np.unpackbits(rows, axis=1)[:, : w * depth].reshape(h, w, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        return np.ascontiguousarray((bits * weights).sum(axis=2, dtype=np.uint8)[:, :, None])
    return np.ascontiguousarray(rows[:, : w * c].reshape(h, w, c))


def decode(code: PlaneCode, shape: tuple[int, int, int]) -> np.ndarray:
    """A CMIX, INDEXED or DEFLATE entry -> symbols (H, W, C) uint8."""
    if code.method == INDEXED:
        return decode_indexed(code, shape)
    if code.method == CMIX:
        symbols, used = cmix.decode(code.data, shape, code.param)
        if used > len(code.data) + 4:  # the decoder reads 0xFF past the end: more than 4 means the data ran out
            raise FormatError("corrupt pxz file: a context-mixing plane ends early")
        return symbols
    return decode_deflate(code, shape)


def candidates(symbols: np.ndarray, mode: str, palette: bytes | None = None) -> list[PlaneCode]:
    """Every fallback coding of a plane, cheapest first (CMIX always; INDEXED for few colours; DEFLATE where
    Pillow's PNG fits)."""
    out = [encode_cmix(symbols)]
    if mode not in ("P", "1"):  # palette indices and 1-bit symbols are indices already
        indexed = encode_indexed(symbols)
        if indexed is not None:
            out.append(indexed)
    d = encode_deflate(symbols, mode, palette)
    if d is not None:
        out.append(d)
    return sorted(out, key=lambda p: len(p.data))
