"""The .pxz byte layout: header packing/unpacking, payload words and the pixel checksum."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np

from pxzip.errors import FormatError

MAGIC = b"\x89X"
FORMAT_VERSION = 6  # the newest version this reader reads; files are written in the oldest version that holds them
METADATA_VERSION = 2  # the first version with a metadata section
LABEL_VERSION = 3  # the first version with a class label (for class-conditional models)
WAVEFRONT_VERSION = 4  # the first version whose tiles are coded in wavefront order (pxzip/wavefront.py)
OFFSETS_VERSION = 5  # the first version with per-unit head offsets (pxzip/adapt.py)
CODERS_VERSION = 6  # the first version where a plane may be coded by a fallback coder (pxzip/fallback.py)

# Metadata kept beside the pixels (format 2): key -> code byte, written in code order.
# "text" is the PNG text chunks as a UTF-8 JSON object {keyword: text} with sorted keys.
METADATA_CODES: dict[str, int] = {"icc_profile": 1, "exif": 2, "xmp": 3, "text": 4}
_CODE_METADATA = {code: key for key, code in METADATA_CODES.items()}
MAX_METADATA_ENTRY = 2**24  # bytes per entry (an ICC profile or EXIF block is far smaller)


def png_keyword_ok(key: str) -> bool:
    """Whether PNG can hold `key` as a text chunk keyword: 1..79 Latin-1 characters, no NUL."""
    try:
        return 1 <= len(key.encode("latin-1")) <= 79 and "\0" not in key
    except UnicodeEncodeError:
        return False


def png_text(value: bytes) -> dict[str, str]:
    """A "text" metadata entry -> {keyword: text}; ValueError unless it is a UTF-8 JSON object of
    strings with PNG keywords (what writers store, and what readers may hand to Pillow)."""
    try:
        text = json.loads(value.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd nesting
        raise ValueError("PNG text entry is not UTF-8 JSON") from None
    if not isinstance(text, dict) or not all(isinstance(v, str) and png_keyword_ok(k) for k, v in text.items()):
        raise ValueError("PNG text entry is not an object of PNG keywords to strings")
    try:
        "".join(text.values()).encode("utf-8")  # JSON escapes can spell lone surrogates
    except UnicodeEncodeError:
        raise ValueError("PNG text entry holds invalid Unicode") from None
    return text


MODE_CODES: dict[str, int] = {"L": 0, "LA": 1, "RGB": 2, "RGBA": 3, "P": 4, "1": 5}
_CODE_MODES = {code: mode for mode, code in MODE_CODES.items()}

MAX_SIDE = 2**24
MAX_PIXELS = 2**31
TILE_LOG2_MIN = 4
TILE_LOG2_MAX = 12
MODEL_ID_SIZE = 2
FLAG_PALETTE_AS_RGB = 0x01
FLAG_LABEL = 0x02  # format 3: one class-label byte follows the model ids
FLAG_WAVEFRONT = 0x04  # format 4: symbols in wavefront order (else raster order)
FLAG_OFFSETS = 0x08  # format 5: a head-offsets section follows the metadata section
MAX_OFFSET = 2**20  # |scale| and |offset| bound of head-offset records: the range of a head output (exact.CLAMP)
MAX_OFFSET_RECORD = 4096  # integers per record (2P: 100 for the RGB PixelCNN++ models, so P <= 2048)
# Units (docs/FORMAT.md "Coding order"): tiles of one plane and shape, at most UNIT_TILES of them,
# in wavefront order at most max(1, WAVE_UNIT_PIXELS // tile area) (the coders' memory grows with a unit)
UNIT_TILES = 128
WAVE_UNIT_PIXELS = 2**20
PLANES = {"L": 1, "LA": 2, "RGB": 1, "RGBA": 2, "P": 1, "1": 1}  # coded planes of each mode (planes.py)
# A side is at most 2**24, which fits in 4 LEB128 bytes; 5 leaves room to report
# "too large" for slightly bigger values instead of a vaguer varint error.
_MAX_VARINT_BYTES = 5


# Plane coders (format 6): how each plane is stored
NETWORK = 0  # the plane's units are in the range coder's payload (formats 1 to 5: every plane)
CMIX = 1  # pxzip.cmix's context mixing of the plane's symbols; param: bits per symbol 1..8
DEFLATE = 2  # the plane's PNG rows (filter byte + packed row) in a zlib stream; param: PNG bit depth
INDEXED = 3  # the plane's distinct colours, then context mixing of its colour indices; param: bits per index
METHODS = {NETWORK: "network", CMIX: "context mixing", DEFLATE: "deflate", INDEXED: "indexed colours"}
PNG_DEPTHS = (1, 2, 4, 8)
NO_MODEL = b"\0\0"  # the model id of a slot no plane of the file is coded with (format 6)


@dataclass(frozen=True)
class PlaneCode:
    """How one plane is stored (a format-6 plane-coders entry): method, its parameter, its bytes."""

    method: int  # NETWORK, CMIX, DEFLATE or INDEXED
    param: int = 0  # CMIX: bits per symbol 1..8; INDEXED: bits per index 1..8; DEFLATE: a PNG bit depth; NETWORK: 0
    data: bytes = b""  # the coded plane (NETWORK: empty, its symbols are in the payload)


def plane_slots(mode: str, palette_as_rgb: bool = False) -> tuple[str, ...]:
    """The model kind ("rgb"/"gray"/"bilevel") of each coded plane of ``mode``, in coding order
    (planes.plane_kinds)."""
    if mode == "P":
        return ("rgb",) if palette_as_rgb else ("gray",)
    return {"L": ("gray",), "LA": ("gray", "gray"), "RGB": ("rgb",), "RGBA": ("rgb", "gray"), "1": ("bilevel",)}[mode]


def slot_accepts(slot: str, kind: str) -> bool:
    """Whether a model of ``kind`` may code the planes of a ``slot``: its own kind, and for the
    bilevel slot of mode "1" also a gray model (how pxzip coded 1-bit images before bilevel models)."""
    return kind == slot or (slot == "bilevel" and kind == "gray")


def fill_slots(by_kind: dict) -> dict:
    """Models chosen per kind, plus the gray one for the bilevel slot where no bilevel model is
    chosen (`slot_accepts`): what a user who names only a gray model gets for 1-bit images."""
    if "bilevel" not in by_kind and "gray" in by_kind:
        return by_kind | {"bilevel": by_kind["gray"]}
    return by_kind


def used_slots(h: Header) -> set[str]:
    """Model kinds some plane of the file is coded with by the network (format 6 may leave a slot unused)."""
    kinds = plane_slots(h.mode, h.palette_as_rgb)
    if not h.coders:
        return set(kinds)
    return {k for k, c in zip(kinds, h.coders) if c.method == NETWORK}


def model_slots(mode: str, palette_as_rgb: bool = False) -> tuple[str, ...]:
    """Model kinds ("rgb"/"gray"/"bilevel") whose ids the header stores for ``mode``, in order."""
    if mode == "RGB":
        return ("rgb",)
    if mode == "RGBA":
        return ("rgb", "gray")
    if mode == "P":
        return ("rgb",) if palette_as_rgb else ("gray",)
    if mode in ("L", "LA"):
        return ("gray",)
    if mode == "1":
        return ("bilevel",)
    raise ValueError(f"unknown mode {mode!r}")


@dataclass(frozen=True)
class Header:
    """Everything in a .pxz file before the payload.

    ``transparency`` is None when the palette has no transparency; :func:`unpack`
    never returns ``b""`` for it (both are written the same way).
    """

    mode: str
    width: int
    height: int
    tile_log2: int
    model_ids: tuple[bytes, ...]
    crc32: int
    palette: bytes | None = None
    transparency: bytes | None = None
    palette_as_rgb: bool = False
    metadata: tuple[tuple[str, bytes], ...] = ()  # (key, value) in METADATA_CODES order, values non-empty
    label: int | None = None  # class label 0..254 the conditional model(s) coded with; None: no label
    wavefront: bool = False  # symbols in wavefront order (format 4), else raster order
    # format 5: per coding unit, the integers added to every head output of its tiles (pxzip/adapt.py),
    # () for a unit coded without; an empty tuple here means no section (no unit has offsets)
    offsets: tuple[tuple[int, ...], ...] = ()
    # format 6: per coded plane, how it is stored; () means every plane by the network (formats 1 to 5)
    coders: tuple[PlaneCode, ...] = ()


def varint(value: int) -> bytes:
    """Unsigned LEB128, shortest form (the only form `unpack` accepts)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def palette_section(palette: bytes | None, transparency: bytes | None) -> bytes:
    """The palette section exactly as stored in the file (also fed to the CRC)."""
    pal, trns = palette or b"", transparency or b""
    return varint(len(pal) // 3) + pal + varint(len(trns)) + trns


def label_section(label: int | None) -> bytes:
    """The label field exactly as stored: one byte after the model ids, or nothing."""
    return b"" if label is None else bytes([label])


def metadata_section(metadata: tuple[tuple[str, bytes], ...]) -> bytes:
    """The metadata section exactly as stored (format 2): varint count, then code, varint length, bytes."""
    out = [varint(len(metadata))]
    for key, value in metadata:
        out += [bytes([METADATA_CODES[key]]), varint(len(value)), value]
    return b"".join(out)


def zigzag(q: int) -> int:
    """Signed -> unsigned for varints: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ..."""
    return 2 * q if q >= 0 else -2 * q - 1


def unzigzag(z: int) -> int:
    return z >> 1 if z % 2 == 0 else -((z + 1) >> 1)


def unit_count(height: int, width: int, tile_log2: int, n_planes: int, wave: bool) -> int:
    """How many units an image has (codec.units_for lists them), in closed form: no loop over tiles."""
    t = 1 << tile_log2 if tile_log2 else max(height, width)
    per = max(1, min(UNIT_TILES, WAVE_UNIT_PIXELS // (t * t))) if wave else UNIT_TILES
    full_r, part_r = divmod(height, t)
    full_c, part_c = divmod(width, t)
    # tiles per shape: full, right edge column, bottom edge row, bottom-right corner
    counts = [full_r * full_c, full_r * bool(part_c), bool(part_r) * full_c, bool(part_r) * bool(part_c)]
    return n_planes * sum(-(-n // per) for n in counts)


def offset_record(rec: tuple[int, ...]) -> bytes:
    """One unit's head offsets as stored: varint n (0: none), then n zigzag varints."""
    return b"".join([varint(len(rec)), *(varint(zigzag(q)) for q in rec)])


def offsets_section(offsets: tuple[tuple[int, ...], ...]) -> bytes:
    """The head-offsets section exactly as stored (format 5): varint unit count, then each unit's record."""
    return varint(len(offsets)) + b"".join(offset_record(rec) for rec in offsets)


def coders_section(coders: tuple[PlaneCode, ...]) -> bytes:
    """The plane-coders section exactly as stored (format 6): per plane a method byte, and for a
    fallback coder its parameter byte, varint size and bytes."""
    out = []
    for c in coders:
        out.append(bytes([c.method]))
        if c.method != NETWORK:
            out += [bytes([c.param]), varint(len(c.data)), c.data]
    return b"".join(out)


def _coders_problem(h: Header) -> str | None:
    """Why the header's plane coders are not canonical (None when they are); shared by pack and unpack."""
    kinds = plane_slots(h.mode, h.palette_as_rgb)
    if len(h.coders) != len(kinds) or all(c.method == NETWORK for c in h.coders):
        return "a plane-coders section needs one entry per plane and at least one fallback coder"
    for c, kind in zip(h.coders, kinds):
        if c.method == NETWORK:
            if c.param or c.data:
                return "a network plane has a parameter or data"
        elif c.method == CMIX:
            if not 1 <= c.param <= 8 or not c.data:
                return f"context-mixing plane with {c.param} bits per symbol (1..8) or no data"
        elif c.method == DEFLATE:
            if c.param not in PNG_DEPTHS or (c.param < 8 and kind == "rgb") or not c.data:
                return f"deflate plane with bit depth {c.param} or no data"
        elif c.method == INDEXED:
            if not 1 <= c.param <= 8 or not c.data:
                return f"indexed plane with {c.param} bits per index (1..8) or no data"
        else:
            return f"unknown plane coder {c.method}"
    if h.palette_as_rgb and h.coders[0].method != NETWORK:
        return "a palette image coded as RGB by a fallback coder (fallback coders code its indices)"
    used = used_slots(h)
    for kind, mid in zip(model_slots(h.mode, h.palette_as_rgb), h.model_ids):
        if kind not in used and mid != NO_MODEL:
            return f"model id {mid.hex()} for a {kind} slot no plane uses (must be {NO_MODEL.hex()})"
    if h.offsets:
        per = len(h.offsets) // len(kinds)
        for p, c in enumerate(h.coders):
            if c.method != NETWORK and any(h.offsets[p * per : (p + 1) * per]):
                return "head offsets for a plane the network does not code"
    return None


def _check_header(h: Header) -> None:
    # pack() only sees headers built by our own code, so a bad one is a bug: ValueError.
    if h.mode not in MODE_CODES:
        raise ValueError(f"unknown mode {h.mode!r}")
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise ValueError(f"image size {h.width}x{h.height} out of range")
    if h.width * h.height > MAX_PIXELS:
        raise ValueError(f"image size {h.width}x{h.height} is too large")
    if h.tile_log2 != 0 and not TILE_LOG2_MIN <= h.tile_log2 <= TILE_LOG2_MAX:
        raise ValueError(f"tile_log2 {h.tile_log2} out of range")
    n_ids = len(model_slots(h.mode, h.palette_as_rgb))
    if len(h.model_ids) != n_ids or any(len(m) != MODEL_ID_SIZE for m in h.model_ids):
        raise ValueError(f"mode {h.mode} needs {n_ids} model ids of {MODEL_ID_SIZE} bytes")
    if not 0 <= h.crc32 < 2**32:
        raise ValueError("crc32 out of range")
    if h.mode == "P":
        pal = h.palette if h.palette is not None else b""
        if len(pal) % 3 or len(pal) > 768:
            raise ValueError("palette must be 0..256 RGB entries")
        if len(h.transparency or b"") > 256:
            raise ValueError("transparency longer than 256 bytes")
    elif h.palette is not None or h.transparency is not None or h.palette_as_rgb:
        raise ValueError(f"palette fields set for mode {h.mode}")
    codes = [METADATA_CODES.get(k, 0) for k, _ in h.metadata]
    if 0 in codes or codes != sorted(set(codes)):
        raise ValueError(f"metadata keys must be distinct, known and in order: {[k for k, _ in h.metadata]}")
    if any(not 0 < len(v) <= MAX_METADATA_ENTRY for _, v in h.metadata):
        raise ValueError("metadata values must be 1..2**24 bytes")
    for k, v in h.metadata:
        if k == "text":
            png_text(v)
    if h.label is not None and not 0 <= h.label <= 254:
        raise ValueError(f"class label {h.label} out of range 0..254")
    if h.offsets:
        if not any(h.offsets):
            raise ValueError("an offsets section needs at least one unit with offsets")
        for rec in h.offsets:
            if len(rec) > MAX_OFFSET_RECORD or any(abs(q) > MAX_OFFSET for q in rec) or (rec and not any(rec)):
                raise ValueError("head offsets out of range (or an all-zero record)")
    if h.coders and (problem := _coders_problem(h)):
        raise ValueError(problem)


def version_of(header: Header) -> int:
    """The format version a header is written in: the oldest that holds it (older readers read it)."""
    if header.coders:
        return CODERS_VERSION
    if header.offsets:
        return OFFSETS_VERSION
    if header.wavefront:
        return WAVEFRONT_VERSION
    if header.label is not None:
        return LABEL_VERSION
    return METADATA_VERSION if header.metadata else 1


def _prefix(header: Header) -> bytes:
    """The header bytes before the checksum field (canonical: unpack accepts only this encoding)."""
    _check_header(header)
    flags = (FLAG_PALETTE_AS_RGB if header.palette_as_rgb else 0) | (FLAG_LABEL if header.label is not None else 0)
    flags |= (FLAG_WAVEFRONT if header.wavefront else 0) | (FLAG_OFFSETS if header.offsets else 0)
    parts = [
        MAGIC,
        bytes([(version_of(header) << 4) | MODE_CODES[header.mode], (header.tile_log2 << 4) | flags]),
        *header.model_ids,
        label_section(header.label),
        varint(header.width),
        varint(header.height),
    ]
    if header.mode == "P":
        parts.append(palette_section(header.palette or b"", header.transparency))
    if version_of(header) >= METADATA_VERSION:  # format 3 always has the section, maybe with 0 entries
        parts.append(metadata_section(header.metadata))
    if header.offsets:
        parts.append(offsets_section(header.offsets))
    if header.coders:
        parts.append(coders_section(header.coders))
    return b"".join(parts)


def checksum(header: Header, pixels_crc: int) -> int:
    """The stored CRC-32: over the pixels (``pixel_crc``), continued over the header bytes.

    Covering the header too means a damaged size, mode, tile or model field is caught even when
    the payload would decode under it (an all-black image has an empty payload, for example).
    """
    return zlib.crc32(_prefix(header), pixels_crc)


def pack(header: Header, payload: bytes) -> bytes:
    """Serialize ``header`` followed by ``payload`` into .pxz file bytes.

    ``header.crc32`` is stored as is: build it with ``checksum(header, pixel_crc(...))``.
    """
    return b"".join([_prefix(header), header.crc32.to_bytes(4, "little"), payload])


class _Reader:
    """Bounds-checked cursor over the file bytes; every overrun is a FormatError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FormatError(
                f"truncated pxz file: {what} needs bytes {self.pos}..{end - 1} but the file has only {len(self.data)}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                # Reject padded encodings so every value has exactly one byte form.
                if byte == 0 and i > 0:
                    raise FormatError(f"corrupt pxz file: {what} has a non-minimal encoding")
                return value
        raise FormatError(f"corrupt pxz file: {what} is longer than {_MAX_VARINT_BYTES} bytes")


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse .pxz file bytes into ``(header, payload)``; any problem is a FormatError."""
    data = bytes(data)
    if not data:
        raise FormatError("empty input: not a pxz file")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise FormatError("not a pxz file (wrong magic bytes)")
    r = _Reader(data)
    r.take(len(MAGIC), "magic")
    version_mode, tile_flags = r.take(2, "format byte and tile byte")
    version, mode_code = version_mode >> 4, version_mode & 0x0F
    if version > FORMAT_VERSION:
        raise FormatError(f"made by a newer pxzip (format {version}); this one reads format {FORMAT_VERSION}")
    if version < 1:
        raise FormatError(f"corrupt pxz file: invalid format version {version}")
    if mode_code not in _CODE_MODES:
        raise FormatError(f"corrupt pxz file: unknown image mode code {mode_code}")
    mode = _CODE_MODES[mode_code]
    tile_log2, flags = tile_flags >> 4, tile_flags & 0x0F
    too_new = flags & FLAG_LABEL and version < LABEL_VERSION
    too_new = too_new or (flags & FLAG_WAVEFRONT and version < WAVEFRONT_VERSION)
    too_new = too_new or (flags & FLAG_OFFSETS and version < OFFSETS_VERSION)
    if too_new:
        raise FormatError(f"corrupt pxz file: reserved flag bits set (0x{flags:x})")
    palette_as_rgb = bool(flags & FLAG_PALETTE_AS_RGB)
    if palette_as_rgb and mode != "P":
        raise FormatError(f"corrupt pxz file: palette flag set for mode {mode}")
    if tile_log2 != 0 and not TILE_LOG2_MIN <= tile_log2 <= TILE_LOG2_MAX:
        raise FormatError(
            f"corrupt pxz file: tile size 2**{tile_log2} is outside 2**{TILE_LOG2_MIN}..2**{TILE_LOG2_MAX}"
        )
    n_ids = len(model_slots(mode, palette_as_rgb))
    model_ids = tuple(r.take(MODEL_ID_SIZE, "model id") for _ in range(n_ids))
    label = r.take(1, "class label")[0] if flags & FLAG_LABEL else None
    if label == 255:
        raise FormatError("corrupt pxz file: class label 255 (labels are 0..254)")
    width = r.varint("width")
    height = r.varint("height")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FormatError(f"corrupt pxz file: declared size {width}x{height} (each side must be 1..{MAX_SIDE})")
    if width * height > MAX_PIXELS:
        raise FormatError(f"declared size {width}x{height} is too large")
    palette = transparency = None
    if mode == "P":
        n_entries = r.varint("palette size")
        # 0 entries is legal: Pillow allows P images with an empty palette.
        if n_entries > 256:
            raise FormatError(f"corrupt pxz file: palette has {n_entries} entries (max 256)")
        palette = r.take(3 * n_entries, "palette")
        n_trns = r.varint("transparency size")
        if n_trns > 256:
            raise FormatError(f"corrupt pxz file: transparency has {n_trns} entries (max 256)")
        transparency = r.take(n_trns, "transparency") or None
    metadata = _read_metadata(r, empty_ok=version >= LABEL_VERSION) if version >= METADATA_VERSION else ()
    units = unit_count(height, width, tile_log2, PLANES[mode], bool(flags & FLAG_WAVEFRONT))
    offsets = _read_offsets(r, units) if flags & FLAG_OFFSETS else ()
    coders = _read_coders(r, PLANES[mode]) if version >= CODERS_VERSION else ()
    crc = int.from_bytes(r.take(4, "checksum"), "little")
    header = Header(
        mode=mode,
        width=width,
        height=height,
        tile_log2=tile_log2,
        model_ids=model_ids,
        crc32=crc,
        palette=palette,
        transparency=transparency,
        palette_as_rgb=palette_as_rgb,
        metadata=metadata,
        label=label,
        wavefront=bool(flags & FLAG_WAVEFRONT),
        offsets=offsets,
        coders=coders,
    )
    if coders and (problem := _coders_problem(header)):
        raise FormatError(f"corrupt pxz file: {problem}")
    if version_of(header) != version:  # one canonical encoding per header: no needless newer versions
        raise FormatError(f"corrupt pxz file: format {version} for a header that format {version_of(header)} holds")
    return header, data[r.pos :]


def _read_offsets(r: _Reader, units: int) -> tuple[tuple[int, ...], ...]:
    """The head-offsets section of an image with `units` units (checked before any record is read,
    so a hostile count costs nothing)."""
    count = r.varint("head offsets unit count")
    if count != units:
        raise FormatError(f"corrupt pxz file: head offsets for {count} units, the image has {units}")
    if count > len(r.data) - r.pos:  # every record takes at least one byte
        raise FormatError(f"truncated pxz file: {count} head-offset records in {len(r.data) - r.pos} bytes")
    out = []
    for _ in range(count):
        n = r.varint("head offsets count")
        if n > MAX_OFFSET_RECORD:
            raise FormatError(f"corrupt pxz file: {n} head offsets in one unit (at most {MAX_OFFSET_RECORD})")
        rec = tuple(unzigzag(r.varint("head offset")) for _ in range(n))
        if any(abs(q) > MAX_OFFSET for q in rec) or (rec and not any(rec)):
            raise FormatError("corrupt pxz file: a head offset out of range, or a record of zeros")
        out.append(rec)
    if not any(out):
        raise FormatError("corrupt pxz file: a head-offsets section without offsets")
    return tuple(out)


def _read_coders(r: _Reader, n_planes: int) -> tuple[PlaneCode, ...]:
    """The plane-coders section (format 6): one entry per coded plane."""
    out = []
    for _ in range(n_planes):
        method = r.take(1, "plane coder")[0]
        if method == NETWORK:
            out.append(PlaneCode(NETWORK))
            continue
        if method not in METHODS:
            raise FormatError(f"corrupt pxz file: unknown plane coder {method}")
        param = r.take(1, "plane coder parameter")[0]
        size = r.varint("plane coder size")
        out.append(PlaneCode(method, param, r.take(size, "plane data")))
    return tuple(out)


def _read_metadata(r: _Reader, empty_ok: bool) -> tuple[tuple[str, bytes], ...]:
    count = r.varint("metadata count")
    # a version-2 file exists only to carry metadata: zero entries is not a canonical file
    if not int(not empty_ok) <= count <= len(METADATA_CODES):
        most = len(METADATA_CODES)
        raise FormatError(f"corrupt pxz file: {count} metadata entries (at most {most}, 0 only in formats 3 and later)")
    out, last = [], 0
    for _ in range(count):
        code = r.take(1, "metadata key")[0]
        if code not in _CODE_METADATA or code <= last:
            raise FormatError(f"corrupt pxz file: metadata key code {code} unknown, repeated or out of order")
        last = code
        size = r.varint("metadata size")
        if not 1 <= size <= MAX_METADATA_ENTRY:
            raise FormatError(f"corrupt pxz file: metadata entry of {size} bytes (1..{MAX_METADATA_ENTRY})")
        key, value = _CODE_METADATA[code], r.take(size, "metadata")
        if key == "text":
            try:
                png_text(value)
            except ValueError as e:
                raise FormatError(f"corrupt pxz file: {e}") from None
        out.append((key, value))
    return tuple(out)


# the byte fields after MAGIC
FIELDS = ("vm", "tf", "ids", "label", "width", "height", "pal", "meta", "offsets", "coders", "crc", "payload")


def fields(data: bytes) -> dict[str, bytes]:
    """A valid file's raw byte fields by name; `join(fields(data)) == data` (for tools that dissect
    or mutate files: the fuzz tests, the fuzz campaign)."""
    h, payload = unpack(data)
    return {
        "vm": data[2:3],
        "tf": data[3:4],
        "ids": b"".join(h.model_ids),
        "label": label_section(h.label),
        "width": varint(h.width),
        "height": varint(h.height),
        "pal": palette_section(h.palette, h.transparency) if h.mode == "P" else b"",
        "meta": metadata_section(h.metadata) if version_of(h) >= METADATA_VERSION else b"",
        "offsets": offsets_section(h.offsets) if h.offsets else b"",
        "coders": coders_section(h.coders),
        "crc": h.crc32.to_bytes(4, "little"),
        "payload": payload,
    }


def join(f: dict[str, bytes]) -> bytes:
    """Inverse of `fields` (any field may have been replaced by arbitrary bytes)."""
    return MAGIC + b"".join(f[k] for k in FIELDS)


def words_to_bytes(words: np.ndarray) -> bytes:
    """uint32 coder words as little-endian bytes, trailing zero bytes dropped."""
    words = np.asarray(words)
    if words.dtype != np.uint32:
        raise TypeError(f"expected uint32 words, got {words.dtype}")
    # The decoder pads with zeros again, so trailing zero bytes carry no information.
    return words.astype("<u4").tobytes().rstrip(b"\x00")


def bytes_to_words(data: bytes) -> np.ndarray:
    """Inverse of :func:`words_to_bytes`: zero-pad to whole words, native uint32 array."""
    padded = bytes(data) + b"\x00" * (-len(data) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


def pixel_crc(pixels: np.ndarray, extra: bytes = b"") -> int:
    """CRC32 of the C-order uint8 pixel bytes, continued over ``extra`` (palette section)."""
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"pixel checksum needs uint8 pixels, got {pixels.dtype}")
    # bool ("1" mode) becomes 0/1 bytes, matching the format's definition.
    raw = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return zlib.crc32(extra, zlib.crc32(raw)) & 0xFFFFFFFF
