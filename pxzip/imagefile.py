"""Image files in and out, exactly: refuse what Pillow would load or save with lost samples."""

from __future__ import annotations

import io
import re
from pathlib import Path

from pxzip import container
from pxzip.errors import PxzError, UnsupportedImageError, UsageError, describe

MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 1, "1": 1}  # samples a pixel, per coded mode
IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".webp"}  # formats decompress writes


# Raw modes with 16 bits per sample that Pillow loads into an 8-bit mode by dropping the low byte
# (16-bit RGB/RGBA/LA PNG, 16-bit RGB(A) TIFF): coding those would silently lose data.
_NARROWED_RAWMODE = re.compile(r";16[BLN]$")
_EIGHT_BIT_MODES = set(MODE_CHANNELS)


def is_narrowed(img) -> bool:
    """True when loading `img` would cut wider samples to 8 bits (must be asked before load())."""
    if img.mode not in _EIGHT_BIT_MODES:
        return False  # I;16, I, F, ... keep their depth; codec refuses those modes by name
    for tile in img.tile:
        decoder, args = tile[0], tile[3]
        raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        if isinstance(raw, str) and _NARROWED_RAWMODE.search(raw):
            return True
        # PPM/PNM with maxval > 255 is rescaled to 0..255 by the "ppm" decoders
        if decoder in ("ppm", "ppm_plain") and isinstance(args, tuple) and len(args) > 1:
            if isinstance(args[1], int) and args[1] > 255:
                return True
    return False


def open_image(raw: bytes):
    """Decode image file bytes with Pillow; anything pxzip cannot code exactly is an UnsupportedImageError."""
    from PIL import Image, UnidentifiedImageError

    if raw[: len(container.MAGIC)] == container.MAGIC:  # Pillow reads .pxz too, via our own plugin
        raise UnsupportedImageError("input is already a .pxz file")
    try:
        img = Image.open(io.BytesIO(raw))
        narrowed = is_narrowed(img)
        frames = getattr(img, "n_frames", 1)
        img.load()
    except UnidentifiedImageError:  # its message names a BytesIO object, useless to the user
        raise UnsupportedImageError("not an image file (or a format Pillow cannot read)") from None
    except Exception as e:  # Pillow's plugins raise anything on hostile input (struct.error, bomb errors, ...)
        raise UnsupportedImageError(f"cannot read image: {describe(e)}") from None
    if narrowed:
        raise UnsupportedImageError(f"{img.mode} image with 16-bit samples is not supported (pxzip codes 8-bit images)")
    if frames > 1:
        # only the current frame would be coded: refuse rather than drop the others silently
        raise UnsupportedImageError(f"image has {frames} frames (animations and multi-page files are not supported)")
    return img


def output_format(out: str) -> tuple[str, dict]:
    """Pillow format name and save options for an output path ('-' = PNG)."""
    suffix = Path(out).suffix.lower() if out != "-" else ".png"
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(
            f"cannot write {suffix or 'an image without suffix'}: use one of {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    fmt = {".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM", ".pbm": "PPM"}.get(suffix, suffix[1:].upper())
    # exact: without it libwebp zeroes the colour of fully transparent pixels (not lossless)
    return fmt, ({"lossless": True, "exact": True} if fmt == "WEBP" else {})


WEBP_MAX_SIDE = 16383  # libwebp's limit


def check_can_save(mode: str, fmt: str, kw: dict, width: int, height: int) -> None:
    """Refuse e.g. an LA image as BMP up front, by saving a 1x1 probe, instead of after the slow decode."""
    from PIL import Image

    if fmt == "WEBP" and max(width, height) > WEBP_MAX_SIDE:
        raise UsageError(f"cannot write a {width}x{height} image as WEBP (at most {WEBP_MAX_SIDE} a side): use .png")

    try:
        Image.new(mode, (1, 1)).save(io.BytesIO(), format=fmt, **kw)
    except Exception:  # Pillow says KeyError, OSError or ValueError depending on the plugin
        raise UsageError(f"cannot write a {mode} image as {fmt}: use .png") from None


def save(img, dest, fmt: str, kw: dict, stored_metadata: tuple, name: str) -> list[str]:
    """Save a decoded image to dest (a path or a binary file) as fmt with the metadata its file stored.

    Returns the metadata kinds fmt cannot carry (the pixels are all written); `name` names the output
    in errors."""
    from pxzip import metadata

    meta_kw, dropped = metadata.save_options(fmt, stored_metadata)
    try:
        img.save(dest, format=fmt, **kw, **meta_kw)
    except OSError:
        raise  # the caller reports it (disk full, ...)
    except Exception as e:  # an encoder's own limit (WebP: 16383 pixels a side, ...): one line
        raise PxzError(f"cannot write {name} as {fmt}: {describe(e)}") from None
    return dropped
