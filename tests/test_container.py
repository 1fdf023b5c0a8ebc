"""Tests for the .pxz container layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxzip import container
from pxzip.container import Header, bytes_to_words, fields, join, pack, unpack, words_to_bytes
from pxzip.errors import FormatError

ID_RGB, ID_GRAY = b"\xab\xcd", b"\x01\x02"


def _headers() -> list[Header]:
    pal = bytes(range(30))
    return [
        Header("L", 3, 5, 0, (ID_GRAY,), 1),
        Header("LA", 17, 9, 4, (ID_GRAY,), 0xFFFFFFFF),
        Header("RGB", 32, 32, 0, (ID_RGB,), 12345),
        Header("RGBA", 1, 1, 12, (ID_RGB, ID_GRAY), 7),
        Header("1", 200, 3, 5, (ID_GRAY,), 8),
        Header("P", 4, 4, 0, (ID_GRAY,), 9, palette=pal),
        Header("P", 4, 4, 0, (ID_RGB,), 9, palette=pal, palette_as_rgb=True, transparency=b"\x00\x80"),
        Header("P", 2**24, 1, 6, (ID_GRAY,), 0, palette=bytes(768), transparency=bytes(256)),
        Header("P", 1, 2**24, 0, (ID_GRAY,), 0, palette=b""),
    ]


@pytest.mark.parametrize("header", _headers(), ids=lambda h: h.mode)
def test_pack_unpack_round_trip(header: Header) -> None:
    payload = b"\x05\x00\x07"
    data = pack(header, payload)
    assert data[:2] == container.MAGIC
    assert unpack(data) == (header, payload)
    assert unpack(pack(header, b"")) == (header, b"")


def test_small_rgb_header_is_compact() -> None:
    header = Header("RGB", 32, 32, 0, (ID_RGB,), 42)
    assert len(pack(header, b"")) <= 12


def test_pack_rejects_inconsistent_header() -> None:
    with pytest.raises(ValueError):
        pack(Header("RGBA", 1, 1, 0, (ID_RGB,), 0), b"")
    with pytest.raises(ValueError):
        pack(Header("L", 1, 1, 0, (ID_GRAY,), 0, palette=b"abc"), b"")
    with pytest.raises(ValueError):
        pack(Header("L", 1, 1, 3, (ID_GRAY,), 0), b"")


def test_every_truncation_is_format_error() -> None:
    header = Header(
        "P",
        300,
        7,
        4,
        (ID_RGB,),
        99,
        palette=bytes(range(12)),
        transparency=b"\x10",
        palette_as_rgb=True,
    )
    data = pack(header, b"")
    for n in range(len(data)):
        with pytest.raises(FormatError):
            unpack(data[:n])


def test_wrong_magic() -> None:
    with pytest.raises(FormatError, match="not a pxz file"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(20))


def test_newer_version_message() -> None:
    data = bytearray(pack(Header("L", 2, 2, 0, (ID_GRAY,), 0), b""))
    data[2] = (7 << 4) | (data[2] & 0x0F)
    with pytest.raises(FormatError, match=r"newer pxzip \(format 7\); this one reads format 6"):
        unpack(bytes(data))


META = (("icc_profile", b"\x00" * 300), ("exif", b"Exif\x00\x00MM"), ("text", b'{"Source":"Kodak"}'))


def test_metadata_round_trip_and_versions() -> None:
    """No metadata: format 1 (byte-identical to files of pxzip 0.1). Metadata: format 2, under the CRC."""
    plain = pack(Header("RGB", 3, 2, 0, (ID_RGB,), 5), b"xyz")
    assert plain[2] >> 4 == 1
    meta = Header("RGB", 3, 2, 0, (ID_RGB,), 5, metadata=META)
    data = pack(meta, b"xyz")
    assert data[2] >> 4 == 2
    assert unpack(data) == (meta, b"xyz")
    assert container.join(container.fields(data)) == data
    assert container.checksum(meta, 0) != container.checksum(Header("RGB", 3, 2, 0, (ID_RGB,), 5), 0)


@pytest.mark.parametrize(
    "section, message",
    [
        (b"\x00", "0 metadata entries"),
        (b"\x05", "5 metadata entries"),
        (b"\x01\x09\x01a", "key code 9"),
        (b"\x02\x02\x01a\x01\x01b", "key code 1 unknown, repeated or out of order"),
        (b"\x02\x01\x01a\x01\x01b", "key code 1 unknown, repeated or out of order"),
        (b"\x01\x01\x00", "entry of 0 bytes"),
        (b"\x01\x01\x80\x80\x80\x10", "entry of 33554432 bytes"),
        (b"\x01\x01\x05ab", "truncated"),
    ],
)
def test_bad_metadata_sections(section: bytes, message: str) -> None:
    body = ID_RGB + container.varint(3) + container.varint(2) + section + bytes(4)
    data = container.MAGIC + bytes([(2 << 4) | container.MODE_CODES["RGB"], 0]) + body
    with pytest.raises(FormatError, match=message):
        unpack(data)
    with pytest.raises(ValueError):
        pack(Header("RGB", 3, 2, 0, (ID_RGB,), 5, metadata=(("exif", b"a"), ("icc_profile", b"b"))), b"")


def _raw(mode_code: int, tile_flags: int, body: bytes) -> bytes:
    return container.MAGIC + bytes([(1 << 4) | mode_code, tile_flags]) + body


def test_absurd_sizes() -> None:
    big = container.varint(2**30)
    with pytest.raises(FormatError, match="declared size"):
        unpack(_raw(0, 0, ID_GRAY + big + big + bytes(4)))
    side = container.varint(2**24)
    with pytest.raises(FormatError, match="declared size 16777216x16777216 is too large"):
        unpack(_raw(0, 0, ID_GRAY + side + side + bytes(4)))
    with pytest.raises(FormatError):
        unpack(_raw(0, 0, ID_GRAY + b"\x00\x01" + bytes(4)))
    with pytest.raises(FormatError):  # endless varint
        unpack(_raw(0, 0, ID_GRAY + b"\xff" * 20))


@pytest.mark.parametrize("tile_flags", [0x02, 0x04, 0x06, 0x08, 0x01, 0x10, 0x30, 0xD0])
def test_reserved_flags_and_bad_tiles(tile_flags: int) -> None:
    # 0x01 (palette-as-RGB) is only valid for mode P; this file is mode L.
    with pytest.raises(FormatError):
        unpack(_raw(0, tile_flags, ID_GRAY + b"\x01\x01" + bytes(4)))


def test_unknown_mode_and_palette_bounds() -> None:
    with pytest.raises(FormatError, match="mode code"):
        unpack(_raw(9, 0, bytes(12)))
    with pytest.raises(FormatError, match="palette"):
        unpack(_raw(4, 0, ID_GRAY + b"\x01\x01" + b"\x81\x02" + bytes(800)))
    with pytest.raises(FormatError, match="transparency"):
        unpack(_raw(4, 0, ID_GRAY + b"\x01\x01\x01abc" + b"\x81\x02" + bytes(800)))


@pytest.mark.parametrize(
    "words",
    [[], [0], [1, 0, 0], [0x01000000], [0xFFFFFFFF, 0x00000100], [0x12345678, 0xAB, 0]],
)
def test_words_bytes_round_trip(words: list[int]) -> None:
    arr = np.array(words, dtype=np.uint32)
    data = words_to_bytes(arr)
    assert not data.endswith(b"\x00")
    back = bytes_to_words(data)
    assert back.dtype == np.uint32 and back.flags.c_contiguous
    # Trailing zero words vanish; the decoder reads missing words as zero anyway.
    n = len(back)
    assert np.array_equal(back, arr[:n]) and not arr[n:].any()


def test_words_little_endian() -> None:
    assert words_to_bytes(np.array([0x04030201, 0x05], dtype=np.uint32)) == b"\x01\x02\x03\x04\x05"


def test_pixel_crc() -> None:
    import zlib

    px = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert container.pixel_crc(px) == zlib.crc32(px.tobytes())
    assert container.pixel_crc(px[:, ::-1]) == zlib.crc32(px[:, ::-1].copy().tobytes())
    assert container.pixel_crc(px, b"xy") == zlib.crc32(px.tobytes() + b"xy")
    bits = np.array([[True, False]])
    assert container.pixel_crc(bits) == zlib.crc32(b"\x01\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_unpack_random_bytes_only_format_error(body: bytes, with_magic: bool) -> None:
    data = (container.MAGIC + body) if with_magic else body
    try:
        header, payload = unpack(data)
    except FormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert pack(header, payload) == data


def test_label_is_format_3_with_a_flag_and_one_byte() -> None:
    h = Header("RGB", 3, 2, 0, (ID_RGB,), 7, label=9)
    data = pack(h, b"\x01")
    assert data[2] >> 4 == 3 and data[3] & 0x02 and data[6] == 9  # after magic, 2 bytes, one 2-byte id
    back, payload = unpack(data)
    assert back == h and payload == b"\x01"
    assert fields(data)["label"] == b"\x09" and join(fields(data)) == data
    both = Header("RGB", 3, 2, 0, (ID_RGB,), 7, metadata=META, label=0)
    assert unpack(pack(both, b""))[0] == both


def test_label_encodings_that_are_refused() -> None:
    plain = pack(Header("RGB", 3, 2, 0, (ID_RGB,), 7), b"")
    with_label = pack(Header("RGB", 3, 2, 0, (ID_RGB,), 7, label=1), b"")
    # the label flag in a format 1 file (older readers refuse it as a reserved bit)
    bad = bytearray(plain)
    bad[3] |= 0x02
    with pytest.raises(FormatError, match="reserved flag"):
        unpack(bytes(bad))
    # format 3 without a label: not canonical
    bad = bytearray(with_label)
    bad[3] &= ~0x02
    del bad[6]
    with pytest.raises(FormatError, match="format 3 for a header that format 1 holds"):
        unpack(bytes(bad))
    bad = bytearray(with_label)
    bad[6] = 255
    with pytest.raises(FormatError, match="class label 255"):
        unpack(bytes(bad))
    with pytest.raises(ValueError, match="class label"):
        pack(Header("RGB", 3, 2, 0, (ID_RGB,), 7, label=255), b"")


def test_wavefront_is_format_4_with_a_flag() -> None:
    h = Header("RGB", 300, 200, 8, (ID_RGB,), 7, wavefront=True)
    data = pack(h, b"\x01")
    assert data[2] >> 4 == 4 and data[3] == (8 << 4) | 0x04
    back, payload = unpack(data)
    assert back == h and payload == b"\x01"
    both = Header("RGB", 3, 2, 0, (ID_RGB,), 7, metadata=META, label=4, wavefront=True)
    data = pack(both, b"")
    assert data[2] >> 4 == 4 and data[3] & 0x06 == 0x06 and unpack(data)[0] == both
    # the flag in a format 3 file (older readers refuse it as a reserved bit)
    bad = bytearray(pack(Header("RGB", 3, 2, 0, (ID_RGB,), 7, label=1), b""))
    bad[3] |= 0x04
    with pytest.raises(FormatError, match="reserved flag"):
        unpack(bytes(bad))
    # format 4 without the flag: not canonical
    bad = bytearray(pack(Header("RGB", 3, 2, 0, (ID_RGB,), 7, wavefront=True), b""))
    bad[3] &= ~0x04
    with pytest.raises(FormatError, match="format 4 for a header that format 1 holds"):
        unpack(bytes(bad))
