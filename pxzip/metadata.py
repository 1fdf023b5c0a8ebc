"""Image metadata kept beside the pixels (ICC profile, EXIF, XMP, PNG text): PIL <-> .pxz header entries.

The pixels are what pxzip codes and checks; these entries are stored verbatim in the header
(format 2, covered by the checksum) so that a photo keeps its colour profile, camera data and
text chunks. Other PIL info (gamma, sRGB intent, dpi, ...) is not kept.
"""

from __future__ import annotations

import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pxzip.container import MAX_METADATA_ENTRY, METADATA_CODES, png_keyword_ok, png_text
from pxzip.errors import UnsupportedImageError

XMP_PNG_KEY = "XML:com.adobe.xmp"  # how PNG carries XMP: an iTXt chunk with this keyword
LABELS = {"icc_profile": "ICC profile", "exif": "EXIF", "xmp": "XMP", "text": "PNG text"}
# what Pillow can write per output format (PNG takes everything)
_WRITABLE = {
    "PNG": set(METADATA_CODES),
    "WEBP": {"icc_profile", "exif", "xmp"},
    "TIFF": {"icc_profile"},
}


def _as_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Image.Exif):
        return value.tobytes()
    return bytes(value) if isinstance(value, (bytes, bytearray)) else b""


def from_image(img: Image.Image) -> tuple[tuple[str, bytes], ...]:
    """The metadata entries of a PIL image, in header order (empty ones left out)."""
    info = img.info
    found = {key: _as_bytes(info.get(key)) for key in ("icc_profile", "exif", "xmp")}
    text = getattr(img, "text", None)  # PNG text chunks (PngImageFile, or an image pxzip decoded)
    if isinstance(text, dict):
        # keywords PNG cannot hold (a hand-made .text) are not kept: readers refuse them
        text = {str(k): str(v) for k, v in text.items() if str(k) != XMP_PNG_KEY and png_keyword_ok(str(k))}
        if not found["xmp"] and XMP_PNG_KEY in img.text:
            found["xmp"] = _as_bytes(img.text[XMP_PNG_KEY])
        if text:
            found["text"] = json.dumps(text, sort_keys=True, ensure_ascii=False).encode("utf-8")
    out = tuple((k, v) for k, v in sorted(found.items(), key=lambda kv: METADATA_CODES[kv[0]]) if v)
    for key, value in out:
        if len(value) > MAX_METADATA_ENTRY:
            raise UnsupportedImageError(f"{LABELS[key]} of {len(value)} bytes is too large (max {MAX_METADATA_ENTRY})")
    return out


def apply(img: Image.Image, metadata: tuple[tuple[str, bytes], ...]) -> Image.Image:
    """Put decoded entries back where Pillow's readers put them: info[...], and .text for PNG text."""
    for key, value in metadata:
        if key == "text":
            text = png_text(value)  # validated when the header was read
            img.info.update(text)
            img.text = text  # as PngImageFile.text: from_image reads it back
        else:
            img.info[key] = value
    return img


def save_options(fmt: str, metadata: tuple[tuple[str, bytes], ...]) -> tuple[dict, list[str]]:
    """Pillow save() keyword arguments that write the entries in format `fmt`, and the labels of
    entries that format cannot hold."""
    writable = _WRITABLE.get(fmt, set())
    kw: dict = {}
    dropped = [LABELS[k] for k, _ in metadata if k not in writable]
    entries = {k: v for k, v in metadata if k in writable}
    if "icc_profile" in entries:
        kw["icc_profile"] = entries["icc_profile"]
    if "exif" in entries:
        kw["exif"] = entries["exif"]
    if fmt == "PNG" and ("text" in entries or "xmp" in entries):
        info = PngInfo()
        for k, v in (png_text(entries["text"]) if "text" in entries else {}).items():
            info.add_text(k, v)  # tEXt when Latin-1 allows, else iTXt
        if "xmp" in entries:
            info.add_itxt(XMP_PNG_KEY, entries["xmp"].decode("utf-8", "replace"))
        kw["pnginfo"] = info
    elif "xmp" in entries:
        kw["xmp"] = entries["xmp"]
    return kw, dropped
