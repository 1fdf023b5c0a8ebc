"""Generated test images of every mode (palette, 1-bit, graphics, photo crops, noise), reproducible by seed.

Used by benchmarks/never_bigger.py (pxzip against PNG and WebP on 200 images) and, on a small subset,
by tests/test_fallback.py. Photo-like images are crops of the training photos (never Kodak); where
those are absent, a smooth synthetic field stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS = sorted(Path("/usr/share/fonts/truetype/dejavu").glob("DejaVu*.ttf"))
WORDS = ("lossless pixel context model entropy coder image archive scan page table figure "
         "the of and to in is that for with as on by at from this an be are it was or").split()  # fmt: skip


def _photos() -> list[Path]:
    root = Path(os.environ.get("PXZIP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return sorted((root / "photos-train").rglob("*.png"))


def _font(rng: np.random.Generator, size: int) -> ImageFont.ImageFont:
    if FONTS:
        return ImageFont.truetype(str(FONTS[int(rng.integers(len(FONTS)))]), size)
    return ImageFont.load_default(size=size)


def photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """An RGB crop of a training photo (downscaled 2x by area averaging), or a smooth random field."""
    paths = _photos()
    if paths:
        with Image.open(paths[int(rng.integers(len(paths)))]) as im:
            im = im.convert("RGB")
            im = im.reduce(2)
            x = int(rng.integers(0, max(1, im.width - w)))
            y = int(rng.integers(0, max(1, im.height - h)))
            return im.crop((x, y, x + w, y + h))
    small = rng.integers(0, 256, (max(1, h // 16), max(1, w // 16), 3)).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def graphics(rng: np.random.Generator, w: int, h: int, colors: int = 16) -> Image.Image:
    """Flat-colour drawing: rectangles, ellipses, lines and text in `colors` random colours."""
    pal = rng.integers(0, 256, (colors, 3))
    im = Image.new("RGB", (w, h), tuple(int(v) for v in pal[0]))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 30))):
        col = tuple(int(v) for v in pal[int(rng.integers(colors))])
        x0, x1 = sorted(rng.integers(0, w + 1, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h + 1, 2).tolist())
        kind = int(rng.integers(4))
        if kind == 0:
            d.rectangle((x0, y0, x1, y1), fill=col)
        elif kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=col)
        elif kind == 2:
            d.line((x0, y0, x1, y1), fill=col, width=int(rng.integers(1, 5)))
        else:
            d.text((x0, y0), " ".join(rng.choice(WORDS, 3)), fill=col, font=_font(rng, int(rng.integers(8, 24))))
    return im


def page(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A rendered 1-bit document page: paragraphs of words in one font and size, maybe a ruled table."""
    im = Image.new("1", (w, h), 1)
    d = ImageDraw.Draw(im)
    size = int(rng.integers(9, 20))
    font = _font(rng, size)
    y = int(rng.integers(2, 10))
    while y < h - size:
        if rng.random() < 0.1:  # a table
            rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 5))
            cw = max(8, (w - 20) // cols)
            for r in range(rows + 1):
                d.line((10, y + r * (size + 6), 10 + cols * cw, y + r * (size + 6)), fill=0)
            for c in range(cols + 1):
                d.line((10 + c * cw, y, 10 + c * cw, y + rows * (size + 6)), fill=0)
            for r in range(rows):
                for c in range(cols):
                    d.text((13 + c * cw, y + r * (size + 6) + 2), str(rng.choice(WORDS)), fill=0, font=font)
            y += rows * (size + 6) + size
            continue
        line = " ".join(rng.choice(WORDS, int(rng.integers(4, 14))))
        d.text((int(rng.integers(4, 12)), y), line, fill=0, font=font)
        y += size + int(rng.integers(2, 6))
    return im


def drawing(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A 1-bit line drawing: random strokes, circles and a filled silhouette."""
    im = Image.new("1", (w, h), 1)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(5, 40))):
        pts = [tuple(rng.integers(0, max(w, h), 2).tolist()) for _ in range(int(rng.integers(2, 6)))]
        d.line(pts, fill=0, width=int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        pts = [tuple(rng.integers(0, max(w, h), 2).tolist()) for _ in range(8)]
        d.polygon(pts, fill=0)
    return im


def make(kind: str, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """One image of a named kind (see KINDS) and size."""
    if kind == "photo-rgb":
        return photo(rng, w, h)
    if kind == "photo-gray":
        return photo(rng, w, h).convert("L")
    if kind == "graphics-rgb":
        return graphics(rng, w, h, int(rng.choice([2, 8, 64])))
    if kind == "graphics-gray":
        return graphics(rng, w, h, 8).convert("L")
    if kind.startswith("palette-"):  # palette-{photo,flat}-{16,64,256}
        _, src, n = kind.split("-")
        base = photo(rng, w, h) if src == "photo" else graphics(rng, w, h, max(2, int(n) // 2))
        dither = Image.Dither.FLOYDSTEINBERG if rng.random() < 0.5 else Image.Dither.NONE
        return base.quantize(int(n), dither=dither)
    if kind == "page":
        return page(rng, w, h)
    if kind == "drawing":
        return drawing(rng, w, h)
    if kind == "silhouette":
        return (
            photo(rng, w, h).convert("L").point(lambda v: 255 if v > 110 else 0).convert("1", dither=Image.Dither.NONE)
        )
    if kind == "dithered":
        return photo(rng, w, h).convert("1")
    if kind == "rgba":
        rgb = photo(rng, w, h) if rng.random() < 0.5 else graphics(rng, w, h)
        alpha = graphics(rng, w, h, 2).convert("L")
        return Image.merge("RGBA", (*rgb.split(), alpha))
    if kind == "la":
        return Image.merge("LA", (photo(rng, w, h).convert("L"), graphics(rng, w, h, 2).convert("L")))
    if kind == "noise-rgb":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if kind == "noise-gray":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if kind == "gradient":
        y, x = np.mgrid[0:h, 0:w]
        return Image.fromarray(
            np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1).astype(np.uint8)
        )
    if kind == "tiled":  # a random 8x8 tile repeated: exact long-range repeats, where LZ77 shines
        tile = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        return Image.fromarray(np.tile(tile, (h // 8 + 1, w // 8 + 1, 1))[:h, :w])
    raise ValueError(f"unknown kind {kind!r}")


KINDS = ("photo-rgb", "photo-gray", "graphics-rgb", "graphics-gray", "palette-photo-16", "palette-photo-64",
         "palette-photo-256", "palette-flat-16", "palette-flat-64", "palette-flat-256", "page", "drawing",
         "silhouette", "dithered", "rgba", "la", "noise-rgb", "noise-gray", "gradient", "tiled")  # fmt: skip
SIDES = (1, 2, 3, 7, 16, 31, 64, 100, 200, 333, 512)


def collection(n: int = 200, seed: int = 0, max_side: int = 512) -> list[tuple[str, Image.Image]]:
    """`n` images cycling through KINDS, sides drawn from SIDES (up to max_side): (name, image)."""
    rng = np.random.default_rng(seed)
    sides = [s for s in SIDES if s <= max_side]
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        w, h = (int(rng.choice(sides)) for _ in range(2))
        out.append((f"{i:03d}-{kind}-{w}x{h}", make(kind, rng, w, h)))
    return out
