"""Fuzzing the decoder and the header parser (quick enough for CI; the long campaign is
benchmarks/fuzz_campaign.py).

Property, for every input: ``pxzip.decompress`` either raises a pxzip error (a ``PxzError``
subclass, with a one-line message) or returns exactly the original pixels of the file that was
mutated, with the original mode, size and palette. Never another exception type, never wrong
pixels, within the hypothesis deadline, and without a large jump in peak memory.

Inputs: random bytes, random bytes behind a valid magic and format byte, truncations, bit flips,
byte overwrites, insertions and deletions, header-field rewrites (mode, tile/flag byte, model ids,
sizes incl. huge and malformed varints, palette section, checksum), unknown or mismatched model
ids, splices of two files, over a small corpus of valid files of every mode made with the tiny
random-weight models.

The decoder's pixel limit ($PXZIP_MAX_PIXELS) is set to FUZZ_MAX_PIXELS here so a mutated size field
cannot send one example into a long (legitimate) decode; the default limit's rejections of huge
sizes are tested separately in test_huge_declared_sizes.

All-zero images have an empty payload, which decodes to zeros under any model and shape: only the
CRC's coverage of the header catches a size or mode rewrite there (test_header_fields_are_checksummed).
"""

from __future__ import annotations

import dataclasses
import os
import resource
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pxzip
from pxzip import container, planes
from pxzip.errors import FormatError, ModelNotFoundError, PxzError

FUZZ_MAX_PIXELS = 256  # decoder limit while fuzzing: any example decodes in well under a second
PEAK_RSS_GROWTH_MB = 1024  # peak RSS may not grow by more than this while the module runs

FUZZ = settings(
    max_examples=100,
    deadline=None,  # time is bounded structurally (PXZIP_MAX_PIXELS); wall-clock limits flake on busy CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUICK = settings(FUZZ, max_examples=200)  # inputs that die in the header parser
SLOW = settings(FUZZ, max_examples=60)  # inputs that mostly decode a whole payload

# name, mode, height, width, model set ("pp" or "gated" for both kinds, "mixed": pp rgb + gated gray)
SPECS = [
    ("l-8x8", "L", 8, 8, "pp"),
    ("l-3x5", "L", 3, 5, "gated"),
    ("la-4x6", "LA", 4, 6, "mixed"),
    ("rgb-8x8", "RGB", 8, 8, "pp"),
    ("rgb-1x1", "RGB", 1, 1, "gated"),
    ("rgb-2x7", "RGB", 2, 7, "mixed"),
    ("rgba-5x3", "RGBA", 5, 3, "mixed"),
    ("rgba-8x8", "RGBA", 8, 8, "gated"),
    ("p-gray-6x4", "P", 6, 4, "pp"),  # duplicate palette colours: indices coded as gray
    ("p-rgb-7x7", "P", 7, 7, "mixed"),  # distinct colours: coded as RGB through the palette
    ("one-7x5", "1", 7, 5, "gated"),
    ("one-8x8", "1", 8, 8, "pp"),
    ("rgb-wave-3x70", "RGB", 3, 70, "pp"),  # a side above 64: wavefront order, a format 4 file
    ("l-wave-66x3", "L", 66, 3, "gated"),
    ("rgb-meta-6x5", "RGB", 6, 5, "pp"),  # with ICC profile, EXIF and PNG text: a format 2 file
    ("rgb-label-6x5", "RGB", 6, 5, "cond"),  # a class-conditional model and a stored label: format 3
    ("rgba-adapt-10x20", "RGBA", 10, 20, "pp"),  # head offsets for both planes: a format 5 file
    ("p-fb-9x12", "P", 9, 12, "pp"),  # the fallback coders: indices by context mixing, a format 6 file
    ("rgba-fb-6x9", "RGBA", 6, 9, "mixed"),  # noise: the RGB plane by a fallback coder, its slot without a model
]
N = len(SPECS)
INTERESTING_SIZES = [
    0, 1, 2, 7, 8, 9, 16, 127, 128, 255, 256, 4095, 4096, 4097, 2**14, 2**21 - 1, 2**21,
    2**24 - 1, 2**24, 2**24 + 1, 2**27, 2**31, 2**31 + 1, 2**35 - 1,
]  # fmt: skip


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    pixels: np.ndarray  # what decompress must return
    header: container.Header


def _image(mode: str, h: int, w: int, rng: np.random.Generator, name: str) -> Image.Image:
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool)).convert("1")
    if mode == "P":
        if "gray" in name:
            img = Image.fromarray(rng.integers(0, 6, (h, w), dtype=np.uint8), "L").convert("P")
            img.putpalette([10, 20, 30] * 3 + [40, 50, 60] * 3)  # duplicates
            img.info["transparency"] = 1
        else:
            img = Image.fromarray(rng.integers(0, 5, (h, w), dtype=np.uint8), "L").convert("P")
            img.putpalette(list(rng.integers(0, 256, 5 * 3)))
            img.info["transparency"] = bytes([0, 128, 255, 7])
        return img
    c = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if "adapt" in name:  # smooth, so that offsets pay even for the tiny random models
        arr = (np.add.outer(np.arange(h) * 9, np.arange(w) * 3)[..., None] + np.arange(c) * 50 + arr % 4) % 256
        arr = arr.astype(np.uint8)
    arr[0, 0] |= 1  # never all zero (see the module docstring)
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode)
    if "meta" in name:
        img.info["icc_profile"] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        img.info["exif"] = b"Exif\x00\x00" + rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
        img.text = {"Source": "fuzz"}
    return img


def _model_set(tiny_models, which: str, cond_models=None) -> list:
    if which == "cond":
        return [cond_models["pixelcnnpp"], tiny_models["pp_gray"]]
    if which == "mixed":
        return [tiny_models["pp_rgb"], tiny_models["gated_gray"]]
    return [tiny_models[f"{which}_rgb"], tiny_models[f"{which}_gray"]]


@contextmanager
def _env(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def _fit_units_of_any_size(on: bool):
    from pxzip import adapt

    old = adapt.MIN_FIT_PIXELS
    adapt.MIN_FIT_PIXELS = 1 if on else old
    try:
        yield
    finally:
        adapt.MIN_FIT_PIXELS = old


@pytest.fixture(scope="module")
def fuzz(tiny_models, cond_models):
    """Corpus, the models every decode gets (the four tiny ones, one conditional) and the RSS baseline."""
    rng = np.random.default_rng(20240601)
    corpus = []
    for name, mode, h, w, which in SPECS:
        img = _image(mode, h, w, rng, name)
        models = _model_set(tiny_models, which, cond_models)
        with _fit_units_of_any_size("adapt" in name):
            label = 2 if which == "cond" else None
            data = pxzip.compress(img, models, label=label, fallback="fb" in name)
        pixels = planes.split(img).pixels
        corpus.append(Sample(name, data, pixels, container.unpack(data)[0]))
    models = [tiny_models[k] for k in ("pp_rgb", "pp_gray", "gated_rgb", "gated_gray")] + [cond_models["pixelcnnpp"]]
    assert container.unpack(corpus[9].data)[0].palette_as_rgb  # both P paths are covered
    assert not container.unpack(corpus[8].data)[0].palette_as_rgb
    assert container.unpack(corpus[-5].data)[0].metadata and corpus[-5].data[2] >> 4 == 2  # format 2 covered
    assert container.unpack(corpus[-4].data)[0].label == 2 and corpus[-4].data[2] >> 4 == 3  # format 3 covered
    assert sum(s.header.wavefront and s.data[2] >> 4 == 4 for s in corpus) == 2  # format 4 covered
    assert all(corpus[-3].header.offsets) and corpus[-3].data[2] >> 4 == 5  # format 5, both planes
    assert [s.data[2] >> 4 for s in corpus[-2:]] == [6, 6] and corpus[-1].header.model_ids[0] == b"\0\0"
    with _env("PXZIP_MAX_PIXELS", str(FUZZ_MAX_PIXELS)):
        for s in corpus:  # the corpus is valid (and the decoder is warm before any deadline)
            assert _outcome(s.data, models, s) is None, s.name
        yield {"corpus": corpus, "models": models, "rss0": _peak_rss_mb()}


@pytest.fixture(scope="module")
def corpus(fuzz) -> list[Sample]:
    return fuzz["corpus"]


@pytest.fixture(scope="module")
def models(fuzz) -> list:
    return fuzz["models"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _outcome(data: bytes, models, sample: Sample | None, rss0: float | None = None):
    """The property. Returns the pxzip error class raised, or None after a correct decode."""
    try:
        out = pxzip.decompress(data, models)
    except PxzError as e:  # anything else propagates and fails the test
        assert "\n" not in str(e), f"multi-line error message: {e!r}"
        assert str(e), "empty error message"
        return type(e)
    finally:
        if rss0 is not None:
            grew = _peak_rss_mb() - rss0
            assert grew < PEAK_RSS_GROWTH_MB, f"peak RSS grew by {grew:.0f} MB"
    assert sample is not None, f"accepted bytes that never were a pxz file: {data.hex()}"
    assert out.dtype == sample.pixels.dtype and out.shape == sample.pixels.shape, (
        f"WRONG PIXELS: {sample.name} decoded to {out.dtype}{out.shape}, expected "
        f"{sample.pixels.dtype}{sample.pixels.shape}; input {data.hex()}"
    )
    assert np.array_equal(out, sample.pixels), f"WRONG PIXELS from {sample.name}; input {data.hex()}"
    h, o = container.unpack(data)[0], sample.header
    got = (h.mode, h.width, h.height, h.palette, h.transparency)
    assert got == (o.mode, o.width, o.height, o.palette, o.transparency), f"WRONG IMAGE from {sample.name}: {h}"
    return None


def check(fuzz, data: bytes, sample: Sample | None = None):
    return _outcome(bytes(data), fuzz["models"], sample, fuzz["rss0"])


# ---------------------------------------------------------------- header layout and raw rewrites


varint, fields, join = container.varint, container.fields, container.join


def header_len(data: bytes) -> int:
    return len(data) - len(container.unpack(data)[1])


sizes = st.one_of(st.sampled_from(INTERESTING_SIZES), st.integers(0, 2**35 - 1), st.integers(1, 32))
varint_fields = st.one_of(
    sizes.map(varint),
    st.binary(min_size=1, max_size=7),  # malformed: unterminated, over-long, ...
    sizes.map(lambda v: varint(v)[:-1] + bytes([varint(v)[-1] | 0x80, 0])),  # non-minimal encoding
)


@st.composite
def field_rewrite(draw, model_ids: list[bytes]):
    """(field, new raw bytes-or-transform) for one header field."""
    field = draw(st.sampled_from(["vm", "tf", "ids", "label", "width", "height", "swap", "pal", "meta", "crc"]))
    if field == "vm":
        return field, bytes([draw(st.one_of(st.integers(0x10, 0x2F), st.integers(0, 255)))])
    if field == "tf":
        return field, bytes([draw(st.one_of(st.sampled_from([0x00, 0x01, 0x40, 0x41, 0xC0, 0xD0, 0xF0]),
                                            st.integers(0, 255)))])  # fmt: skip
    if field == "ids":
        ids = st.one_of(st.sampled_from(model_ids), st.binary(min_size=2, max_size=2))
        return field, b"".join(draw(st.lists(ids, min_size=0, max_size=3)))
    if field in ("width", "height"):
        return field, draw(varint_fields)
    if field == "pal":
        n = draw(st.one_of(st.integers(0, 3), st.integers(0, 300)))
        t = draw(st.one_of(st.integers(0, 3), st.integers(0, 300)))
        pal = draw(st.binary(min_size=max(0, 3 * n - 2), max_size=3 * n + 2))
        trns = draw(st.binary(min_size=max(0, t - 1), max_size=t + 1))
        return field, varint(n) + pal[: 3 * 256 + 2] + varint(t) + trns[:258]
    if field == "meta":  # structured entries (right or wrong codes, sizes, order) or junk
        entry = st.tuples(st.integers(0, 6), st.one_of(sizes, st.integers(0, 40)), st.binary(max_size=48))
        entries = draw(st.lists(entry, max_size=5))
        section = varint(draw(st.one_of(st.just(len(entries)), st.integers(0, 9)))) + b"".join(
            bytes([code]) + varint(n) + body for code, n, body in entries
        )
        return field, draw(st.one_of(st.just(section), st.binary(max_size=24)))
    if field == "crc":
        return field, draw(st.binary(min_size=4, max_size=4))
    if field == "label":  # none, one byte (any value: 0..3 known, 4 = "no label", 255 invalid) or two
        return field, draw(st.binary(min_size=0, max_size=2))
    return field, None  # swap width and height


def apply_rewrite(data: bytes, rewrite) -> bytes:
    f = fields(data)
    field, value = rewrite
    if field == "swap":
        f["width"], f["height"] = f["height"], f["width"]
    else:
        f[field] = value
    return join(f)


# ---------------------------------------------------------------- tests


@QUICK
@given(data=st.binary(max_size=300))
def test_random_bytes(fuzz, data):
    assert check(fuzz, data) is not None


@QUICK
@given(
    version_mode=st.one_of(st.integers(0x10, 0x15), st.integers(0, 255)),
    tile_flags=st.one_of(st.sampled_from([0x00, 0x01, 0x40, 0x60]), st.integers(0, 255)),
    rest=st.binary(max_size=200),
)
def test_random_bytes_after_magic(fuzz, version_mode, tile_flags, rest):
    data = container.MAGIC + bytes([version_mode, tile_flags]) + rest
    assert check(fuzz, data) is not None


def test_every_header_truncation_is_format_error(fuzz, corpus):
    for s in corpus:
        for cut in range(header_len(s.data)):
            with pytest.raises(FormatError):
                pxzip.decompress(s.data[:cut], fuzz["models"])


@SLOW
@given(i=st.integers(0, N - 1), frac=st.floats(0, 1, exclude_max=True))
def test_payload_truncation(fuzz, corpus, i, frac):
    s = corpus[i]
    hl = header_len(s.data)
    cut = hl + int(frac * (len(s.data) - hl))
    check(fuzz, s.data[:cut], s)


@st.composite
def positions(draw, size: int, header: int, max_n: int):
    """1..max_n positions, half the time all inside the header."""
    hi = header - 1 if draw(st.booleans()) else size - 1
    return draw(st.lists(st.integers(0, hi), min_size=1, max_size=max_n))


@FUZZ
@given(i=st.integers(0, N - 1), data=st.data())
def test_bit_flips(fuzz, corpus, i, data):
    s = corpus[i]
    buf = bytearray(s.data)
    for p in data.draw(positions(len(buf), header_len(s.data), 8)):
        bit = data.draw(st.integers(0, 7))
        buf[p] ^= 1 << bit
    check(fuzz, buf, s)


@FUZZ
@given(i=st.integers(0, N - 1), data=st.data())
def test_byte_overwrites(fuzz, corpus, i, data):
    s = corpus[i]
    buf = bytearray(s.data)
    for p in data.draw(positions(len(buf), header_len(s.data), 4)):
        buf[p] = data.draw(st.one_of(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]), st.integers(0, 255)))
    check(fuzz, buf, s)


@SLOW
@given(i=st.integers(0, N - 1), data=st.data())
def test_insertions_and_deletions(fuzz, corpus, i, data):
    s = corpus[i]
    buf = bytearray(s.data)
    p = data.draw(positions(len(buf), header_len(s.data), 1))[0]
    if data.draw(st.booleans()):
        buf[p:p] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        del buf[p : p + data.draw(st.integers(1, 16))]
    check(fuzz, buf, s)


@FUZZ
@given(i=st.integers(0, N - 1), data=st.data())
def test_header_field_rewrites(fuzz, corpus, models, i, data):
    s = corpus[i]
    rewrite = data.draw(field_rewrite([m.id for m in models]))
    check(fuzz, apply_rewrite(s.data, rewrite), s)


@SLOW
@given(i=st.integers(0, N - 1), data=st.data())
def test_unknown_and_mismatched_model_ids(fuzz, corpus, models, i, data):
    s = corpus[i]
    f = fields(s.data)
    k = len(f["ids"]) // 2
    choices = st.one_of(st.sampled_from([m.id for m in models]), st.binary(min_size=2, max_size=2))
    f["ids"] = b"".join(data.draw(st.lists(choices, min_size=k, max_size=k)))
    check(fuzz, join(f), s)


def test_missing_model_is_model_not_found(corpus, models):
    with _env("PXZIP_MODELS", None):
        for s in corpus:
            if not container.used_slots(s.header):  # every plane by a fallback coder: no model is needed
                assert np.array_equal(pxzip.decompress(s.data, []), s.pixels)
                continue
            with pytest.raises(ModelNotFoundError):
                pxzip.decompress(s.data)
            others = [m for m in models if m.id not in s.header.model_ids]  # models of both kinds, other ids
            with pytest.raises(ModelNotFoundError):
                pxzip.decompress(s.data, others)


@QUICK
@given(
    i=st.integers(0, N - 1),
    width=st.one_of(st.sampled_from(INTERESTING_SIZES), st.integers(0, 2**35 - 1)),
    height=st.one_of(st.sampled_from(INTERESTING_SIZES), st.integers(0, 2**35 - 1)),
    tile_log2=st.sampled_from([0, 4, 6, 12]),
)
def test_huge_declared_sizes(fuzz, corpus, i, width, height, tile_log2):
    """Sizes the format or the decoder's default limit refuses fail fast with FormatError."""
    s = corpus[i]
    f = fields(s.data)
    f["width"], f["height"] = varint(width), varint(height)
    f["tf"] = bytes([tile_log2 << 4 | (f["tf"][0] & 0x0F)])
    data = join(f)
    refused = (
        not (1 <= width <= container.MAX_SIDE and 1 <= height <= container.MAX_SIDE)
        or width * height > 2**27  # the decoder's default limit
        or (tile_log2 == 0 and max(width, height) > 4096)  # one tile may not be larger
    )
    if refused:
        with _env("PXZIP_MAX_PIXELS", None), pytest.raises(FormatError):
            pxzip.decompress(data, fuzz["models"])
    else:  # legal but (maybe) big: a real decode of that size; bounded here by FUZZ_MAX_PIXELS
        outcome = check(fuzz, data, s)
        if width * height > FUZZ_MAX_PIXELS:
            assert outcome is FormatError


@SLOW
@given(i=st.integers(0, N - 1), j=st.integers(0, N - 1), a=st.floats(0, 1), b=st.floats(0, 1))
def test_splices(fuzz, corpus, i, j, a, b):
    """A prefix of one file followed by a suffix of another (or the same) file."""
    x, y = corpus[i].data, corpus[j].data
    spliced = x[: int(a * len(x))] + y[int(b * len(y)) :]
    check(fuzz, spliced, claimed(corpus, spliced))


def claimed(corpus: list[Sample], data: bytes) -> Sample | None:
    """The corpus image whose checksum a (spliced) header carries: what a successful decode must give."""
    try:
        crc = container.unpack(data)[0].crc32
    except FormatError:
        return None
    return next((s for s in corpus if s.header.crc32 == crc), None)


@SLOW
@given(i=st.integers(0, N - 1), data=st.data())
def test_batched_decode_of_a_corrupt_file(fuzz, corpus, models, i, data):
    """decompress_many: one damaged file in a batch is an error for the batch, never wrong pixels."""
    s, other = corpus[i], corpus[(i + 1) % N]
    buf = bytearray(s.data)
    p = data.draw(st.integers(0, len(buf) - 1))
    buf[p] ^= 1 << data.draw(st.integers(0, 7))
    try:
        outs = pxzip.decompress_many([bytes(buf), other.data], models)
    except PxzError:
        return
    check(fuzz, buf, s)
    assert np.array_equal(outs[1], other.pixels)


@pytest.mark.parametrize("rewrite", ["swap", "mode-1", "width-32-height-1"])
def test_header_fields_are_checksummed(fuzz, tiny_models, rewrite):
    """An all-zero image has an empty payload that decodes to zeros under any shape, mode or model:
    only the header's share of the CRC catches a rewritten size or mode there."""
    gray = tiny_models["pp_gray"]
    zeros = np.zeros((4, 8), np.uint8)
    data = pxzip.compress(zeros, [gray])
    sample = Sample("zeros-4x8", data, zeros, container.unpack(data)[0])
    h = sample.header
    if rewrite == "swap":
        h = dataclasses.replace(h, width=h.height, height=h.width)
    elif rewrite == "mode-1":
        h = dataclasses.replace(h, mode="1")
    else:
        h = dataclasses.replace(h, width=32, height=1)
    check(fuzz, container.pack(h, container.unpack(data)[1]), sample)


def test_regression_invalid_payload_assertion_is_format_error():
    """constriction reports data that is invalid for the entropy model as a bare AssertionError;
    the decoder must turn it into FormatError (one bit flip of a pinned file, byte 13 bit 0)."""
    from pathlib import Path

    from pxzip import zoo

    here = Path(__file__).resolve().parent / "expected"
    models = [zoo.load_file(here / "pinned-pp-rgb.safetensors"), zoo.load_file(here / "pinned-gated-gray.safetensors")]
    data = bytearray((here / "l.pxz").read_bytes())
    data[13] ^= 0x01
    with pytest.raises(FormatError, match="corrupt payload"):
        pxzip.decompress(bytes(data), models)
