"""Convert between PIL image modes and the uint8 planes the entropy coder works on."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pxzip import container
from pxzip.errors import ChecksumError, UnsupportedImageError

SUPPORTED_MODES = ("L", "LA", "RGB", "RGBA", "P", "1")
_SUPPORTED_TEXT = "pxzip codes 8-bit L, LA, RGB, RGBA, P and 1"
_CHANNELS_TO_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# Same test Pillow's PNG reader uses to turn a tRNS chunk back into an int index.
_SINGLE_TRANSPARENT = re.compile(b"^\xff*\x00\xff*$")


@dataclass
class Split:
    """An image as coded planes plus what is needed to rebuild it exactly."""

    mode: str
    planes: list[np.ndarray]  # each (H, W, C) uint8, C-contiguous, C in {1, 3}
    kinds: list[str]  # per plane "rgb" or "gray": which model slot codes it
    pixels: np.ndarray  # original pixels in their own mode, as covered by the CRC
    palette: bytes | None = None
    transparency: bytes | None = None
    palette_as_rgb: bool = False


def _refuse_mode(mode: str) -> UnsupportedImageError:
    return UnsupportedImageError(f"unsupported image mode {mode!r} ({_SUPPORTED_TEXT})")


def to_image(obj: object) -> Image.Image:
    """Accept a PIL image or a uint8/bool numpy array and return a PIL image pxzip can code."""
    if isinstance(obj, Image.Image):
        if obj.mode not in SUPPORTED_MODES:
            raise _refuse_mode(obj.mode)
        img = obj
    elif isinstance(obj, np.ndarray):
        img = _array_to_image(obj)
    else:
        raise UnsupportedImageError(
            f"unsupported input type {type(obj).__name__} (expected a PIL image or numpy array)"
        )
    if img.width < 1 or img.height < 1:
        raise UnsupportedImageError(f"empty image ({img.width}x{img.height})")
    return img


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype == np.bool_:
        if arr.ndim != 2:
            raise UnsupportedImageError(f"unsupported bool array shape {arr.shape} (1-bit images must be (H, W))")
        return to_pil("1", arr.astype(np.uint8))
    if arr.dtype != np.uint8:
        raise UnsupportedImageError(
            f"unsupported array dtype {arr.dtype} ({_SUPPORTED_TEXT}: use uint8, or bool for 1-bit)"
        )
    if arr.ndim == 2:
        return to_pil("L", arr)
    if arr.ndim == 3 and arr.shape[2] in _CHANNELS_TO_MODE:
        mode = _CHANNELS_TO_MODE[arr.shape[2]]
        return to_pil(mode, arr[:, :, 0] if mode == "L" else arr)
    raise UnsupportedImageError(f"unsupported array shape {arr.shape} (expected (H, W) or (H, W, C) with C in 1..4)")


def _transparency_bytes(img: Image.Image) -> bytes | None:
    """PIL's P-mode transparency normalised to one alpha byte per palette entry."""
    trns = img.info.get("transparency")
    if trns is None:
        if img.palette is not None and img.palette.mode == "RGBA":
            # Alpha kept inside the palette: store it as transparency, as PNG does.
            alpha = bytes(img.getpalette("RGBA") or [])[3::4]
            return alpha if alpha.strip(b"\xff") else None
        return None
    if isinstance(trns, int):
        # An int names the one fully transparent entry. Expand it the way Pillow's
        # PNG writer does (clamped to 0..255, 255 before it) so to_pil can restore it.
        t = max(0, min(255, trns))
        return b"\xff" * t + b"\x00"
    if isinstance(trns, (bytes, bytearray)):
        if len(trns) > 256:
            raise UnsupportedImageError(f"palette transparency has {len(trns)} entries (max 256)")
        return bytes(trns) or None
    raise UnsupportedImageError(f"unsupported palette transparency {type(trns).__name__}")


def _palette_lookup(palette: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct 24-bit palette colors and, for each, its lowest palette index."""
    pal = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    uniq, first = np.unique(keys, return_index=True)
    return uniq, first.astype(np.uint8)


def _colors_identify_indices(indices: np.ndarray, palette: bytes) -> bool:
    """True when every used index is the first palette entry with its color.

    Then the color alone tells the decoder the index, so the image can be coded
    as RGB; duplicate colors among used entries (or out-of-palette indices) cannot.
    """
    n = len(palette) // 3
    used = np.unique(indices)
    if n == 0 or int(used[-1]) >= n:
        return False
    uniq, first = _palette_lookup(palette)
    pal = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    keys = (pal[used, 0] << 16) | (pal[used, 1] << 8) | pal[used, 2]
    return bool(np.array_equal(first[np.searchsorted(uniq, keys)], used))


def _read_pixels(img: Image.Image) -> np.ndarray:
    try:
        return np.array(img)
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow reports truncated/corrupt files lazily, on first pixel access.
        detail = " ".join(str(exc).split())
        raise UnsupportedImageError(f"cannot read image: {detail}") from exc


def plane_kinds(mode: str, palette_as_rgb: bool = False) -> list[str]:
    """The coded planes of a mode, in order, by the kind of model that codes them."""
    return list(container.plane_slots(mode, palette_as_rgb))


def split(img: Image.Image) -> Split:
    """Split ``img`` into coded planes (each (H, W, C) uint8, C in {1, 3})."""
    img = to_image(img)
    mode = img.mode
    pixels = _read_pixels(img)
    if mode == "1":
        pixels = pixels.astype(np.uint8)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)

    def gray(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, :, None])

    palette = transparency = None
    palette_as_rgb = False
    if mode == "L":
        planes = [gray(pixels)]
    elif mode == "LA":
        planes = [gray(pixels[:, :, 0]), gray(pixels[:, :, 1])]
    elif mode == "RGB":
        planes = [pixels]
    elif mode == "RGBA":
        planes = [np.ascontiguousarray(pixels[:, :, :3]), gray(pixels[:, :, 3])]
    elif mode == "1":
        # 0/255 rather than 0/1 so the gray model sees black and white as such.
        planes = [gray(pixels * np.uint8(255))]
    else:  # "P"
        palette = bytes(img.getpalette("RGB") or [])
        transparency = _transparency_bytes(img)
        palette_as_rgb = _colors_identify_indices(pixels, palette)
        if palette_as_rgb:
            pal = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3)
            planes = [np.ascontiguousarray(pal[pixels])]
        else:
            planes = [gray(pixels)]
    return Split(mode, planes, plane_kinds(mode, palette_as_rgb), pixels, palette, transparency, palette_as_rgb)


def _check_planes(planes: list[np.ndarray], channels: list[int]) -> tuple[int, int]:
    if len(planes) != len(channels):
        raise ValueError(f"expected {len(channels)} planes, got {len(planes)}")
    shape = planes[0].shape[:2]
    for plane, c in zip(planes, channels, strict=True):
        if plane.dtype != np.uint8 or plane.shape != (*shape, c):
            raise ValueError(f"bad plane {plane.dtype} {plane.shape}, expected uint8 (H, W, {c})")
    return shape


def merge(
    mode: str,
    planes: list[np.ndarray],
    palette: bytes | None = None,
    transparency: bytes | None = None,
    palette_as_rgb: bool = False,
) -> np.ndarray:
    """Rebuild the original pixel array (as in ``Split.pixels``) from decoded planes.

    ``transparency`` is accepted for symmetry with :func:`split`; it does not affect pixels.
    Raises ChecksumError when the planes hold values the original could not have had.
    """
    del transparency
    if mode == "L":
        _check_planes(planes, [1])
        out = planes[0][:, :, 0]
    elif mode == "LA":
        _check_planes(planes, [1, 1])
        out = np.concatenate(planes, axis=2)
    elif mode == "RGB":
        _check_planes(planes, [3])
        out = planes[0]
    elif mode == "RGBA":
        _check_planes(planes, [3, 1])
        out = np.concatenate(planes, axis=2)
    elif mode == "1":
        _check_planes(planes, [1])
        plane = planes[0][:, :, 0]
        if np.any((plane != 0) & (plane != 255)):
            raise ChecksumError("decoded 1-bit plane holds values other than 0 and 255")
        out = (plane == 255).astype(np.uint8)
    elif mode == "P":
        out = _merge_palette(planes, palette or b"", palette_as_rgb)
    else:
        raise _refuse_mode(mode)
    return np.ascontiguousarray(out, dtype=np.uint8)


def _merge_palette(planes: list[np.ndarray], palette: bytes, palette_as_rgb: bool) -> np.ndarray:
    if not palette_as_rgb:
        _check_planes(planes, [1])
        return planes[0][:, :, 0]
    _check_planes(planes, [3])
    if not palette:
        raise ChecksumError("palette image coded as RGB has an empty palette")
    rgb = planes[0].astype(np.uint32)
    keys = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    uniq, first = _palette_lookup(palette)
    pos = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
    if not np.array_equal(uniq[pos], keys):
        raise ChecksumError("decoded palette image holds colors that are not in its palette")
    return first[pos]


def to_pil(
    mode: str,
    pixels: np.ndarray,
    palette: bytes | None = None,
    transparency: bytes | None = None,
) -> Image.Image:
    """Build the PIL image for ``pixels`` (as in ``Split.pixels``); exact inverse of split.

    For P, transparency bytes of the form 255..255 0 255..255 become an int index in
    ``info["transparency"]`` and anything else stays bytes, mirroring Pillow's PNG reader.
    """
    if mode not in SUPPORTED_MODES:
        raise _refuse_mode(mode)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim < 2:
        raise ValueError(f"pixel array needs at least 2 dimensions, got {pixels.shape}")
    size = (pixels.shape[1], pixels.shape[0])
    if mode == "1":
        # "1;8" reads one byte per pixel, any nonzero byte being white.
        return Image.frombytes("1", size, pixels.tobytes(), "raw", "1;8")
    img = Image.frombytes(mode, size, pixels.tobytes())
    if mode == "P":
        if palette:
            img.putpalette(palette, "RGB")
        if transparency:
            if _SINGLE_TRANSPARENT.match(transparency):
                img.info["transparency"] = transparency.index(b"\x00")
            else:
                img.info["transparency"] = transparency
    return img
