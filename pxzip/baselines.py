"""Classical lossless codecs (PNG, WebP, JPEG XL; TIFF Group 4 for bilevel images) as baselines, each
image coded on its own."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, features

from pxzip.errors import describe

# Every name run_baselines understands, available or not on this machine.
KNOWN_CODECS = ("png", "webp", "jxl-e7", "jxl-e9", "tiff-g4")
BILEVEL_ONLY = ("tiff-g4",)  # codecs of bilevel (bool) images only


def _bilevel_image(img: np.ndarray) -> Image.Image:
    """A bool (H, W) array as a mode "1" PIL image."""
    h, w = img.shape
    return Image.frombytes("1", (w, h), np.packbits(img, axis=1).tobytes())


def _as_8bit(img: np.ndarray) -> np.ndarray:
    """Bilevel pixels as gray 0/255 (for codecs without a 1-bit mode), anything else as it is."""
    img = _as_2d_or_rgb(img)
    return img.astype(np.uint8) * np.uint8(255) if img.dtype == np.bool_ else img


def _as_2d_or_rgb(img: np.ndarray) -> np.ndarray:
    """Validate a uint8 (H, W), (H, W, 1) or (H, W, 3) image; gray comes back as (H, W).
    A bool (H, W) image (bilevel, True = white) comes back as it is."""
    img = np.asarray(img)
    if img.dtype == np.bool_ and img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    return np.ascontiguousarray(img)


class Codec:
    """A lossless codec: decode(encode(img)) gives the pixels back, gray as (H, W)."""

    name: str = "codec"

    def encode(self, img: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class PNG(Codec):
    """Pillow PNG with optimize=True (zlib level 9)."""

    name = "png"

    def encode(self, img: np.ndarray) -> bytes:
        arr = _as_2d_or_rgb(img)
        pil = _bilevel_image(arr) if arr.dtype == np.bool_ else Image.fromarray(arr)  # 1-bit PNG for bilevel
        buf = io.BytesIO()
        pil.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode == "1":
                return np.asarray(im, dtype=np.bool_)
            return np.asarray(im.convert("L" if im.mode == "L" else "RGB"))


class TiffG4(Codec):
    """CCITT Group 4 (T.6) in TIFF through Pillow's libtiff: the fax and document codec, bilevel only."""

    name = "tiff-g4"

    def encode(self, img: np.ndarray) -> bytes:
        arr = _as_2d_or_rgb(img)
        if arr.dtype != np.bool_:
            raise ValueError("Group 4 codes bilevel images only")
        buf = io.BytesIO()
        _bilevel_image(arr).save(buf, format="TIFF", compression="group4")
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im, dtype=np.bool_)


class WebP(Codec):
    """Lossless WebP through Pillow's libwebp: quality=100, method=6 (= level 100, method 6).

    WebP has no gray mode: gray images are coded as RGB and come back as (H, W, 3).
    """

    name = "webp"

    def encode(self, img: np.ndarray) -> bytes:
        arr = _as_8bit(img)
        im = Image.fromarray(arr).convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="WEBP", lossless=True, quality=100, method=6)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


class JXL(Codec):
    """Lossless JPEG XL through imagecodecs (libjxl), one thread, configurable effort."""

    def __init__(self, effort: int = 7) -> None:
        self.effort = effort
        self.name = f"jxl-e{effort}"

    def encode(self, img: np.ndarray) -> bytes:
        import imagecodecs

        arr = _as_8bit(img)
        return bytes(imagecodecs.jpegxl_encode(arr, lossless=True, effort=self.effort, numthreads=1))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))


def _jxl_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(getattr(imagecodecs, "JPEGXL", None), "available", False))


def _available_codecs() -> dict[str, Codec]:
    codecs: dict[str, Codec] = {"png": PNG()}
    if features.check("libtiff"):
        codecs["tiff-g4"] = TiffG4()
    if features.check("webp"):
        codecs["webp"] = WebP()
    # imagecodecs is an optional extra: without it the JPEG XL rows are simply absent.
    if _jxl_available():
        codecs["jxl-e7"] = JXL(7)
        codecs["jxl-e9"] = JXL(9)
    return codecs


CODECS: dict[str, Codec] = _available_codecs()


def bits_per_dim(n_bytes: int, img: np.ndarray) -> float:
    """8 * bytes / number of sub-pixels (H * W * C)."""
    return 8.0 * n_bytes / np.asarray(img).size


def same_pixels(original: np.ndarray, decoded: np.ndarray) -> bool:
    """True if decoded holds exactly the original pixels (gray may come back as equal RGB)."""
    orig = _as_2d_or_rgb(original)
    dec = np.asarray(decoded)
    if orig.dtype == np.bool_ and dec.dtype != np.bool_:  # a bilevel image through an 8-bit codec: 0 / 255
        orig = _as_8bit(orig)
    if dec.ndim == 3 and dec.shape[2] == 1:
        dec = dec[:, :, 0]
    if orig.ndim == 2 and dec.ndim == 3 and dec.shape[2] == 3:
        return bool((dec == orig[:, :, None]).all())
    return dec.shape == orig.shape and dec.dtype == orig.dtype and bool(np.array_equal(dec, orig))


def run_baselines(images: Sequence[np.ndarray], names: Iterable[str] = ("png", "webp", "jxl-e7")) -> dict[str, dict]:
    """Code every image alone with each named codec; bpd, timings and exactness per codec.

    Per codec: "bpd" (list, one per image), "mean" (over images), "pooled" (total bits /
    total sub-pixels), "enc_ms" / "dec_ms" (mean per image), "n_exact", "n".
    Known codecs missing on this machine are skipped with a warning.
    """
    results: dict[str, dict] = {}
    total_dims = sum(int(np.asarray(im).size) for im in images)
    for name in names:
        if name not in KNOWN_CODECS:
            raise ValueError(f"unknown codec {name!r} (known: {', '.join(KNOWN_CODECS)})")
        codec = CODECS.get(name)
        if codec is None:
            warnings.warn(f"codec {name} is not available here (library missing)", stacklevel=2)
            continue
        bpd: list[float] = []
        enc_s = dec_s = 0.0
        n_exact = total_bytes = 0
        for k, img in enumerate(images):
            t0 = time.perf_counter()
            try:
                data = codec.encode(img)
                t1 = time.perf_counter()
                decoded = codec.decode(data)
            except Exception as e:  # a codec's own limit (WebP: 16383 pixels a side): no partial mean
                warnings.warn(f"codec {name} skipped: it cannot code image {k} ({describe(e)})", stacklevel=2)
                break
            t2 = time.perf_counter()
            enc_s += t1 - t0
            dec_s += t2 - t1
            total_bytes += len(data)
            bpd.append(bits_per_dim(len(data), img))
            n_exact += same_pixels(img, decoded)
        else:
            n = len(images)
            results[name] = {
                "bpd": bpd,
                "mean": float(np.mean(bpd)) if n else float("nan"),
                "pooled": 8.0 * total_bytes / total_dims if total_dims else float("nan"),
                "enc_ms": 1000.0 * enc_s / n if n else float("nan"),
                "dec_ms": 1000.0 * dec_s / n if n else float("nan"),
                "n_exact": n_exact,
                "n": n,
            }
    return results
