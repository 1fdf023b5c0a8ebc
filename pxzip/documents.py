"""Synthetic bilevel document pages (text in several fonts and sizes, tables, line drawings), seeded.

Training data for bilevel models and, from a disjoint range of seeds, the benchmark pages they are
measured on. Pages are drawn in gray with antialiasing and thresholded at 128, as a scanner's
bilevel mode would, so glyph edges have the irregularities of real scans rather than the clean
steps of an aliased renderer. A page is a pure function of (seed, size, fonts found): the fonts
used are recorded by `fonts()` so that a manifest can name them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
TRAIN_SEEDS = range(0, 100_000)  # pages for training
BENCH_SEEDS = range(1_000_000, 1_100_000)  # pages for benchmarks: never seen in training
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_P = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
                      1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])  # fmt: skip
_LETTER_P = _LETTER_P / _LETTER_P.sum()


@lru_cache(maxsize=1)
def fonts() -> tuple[str, ...]:
    """Scalable font files on this machine (sorted paths), plus "" for Pillow's built-in font."""
    found: set[str] = set()
    for d in FONT_DIRS:
        p = Path(d)
        if p.is_dir():
            found.update(str(f) for f in p.rglob("*") if f.suffix.lower() in (".ttf", ".otf"))
    return ("", *sorted(found))


def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size) if not path else ImageFont.truetype(path, size)


def _word(rng: np.random.Generator) -> str:
    n = int(rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11]))
    w = "".join(rng.choice(list(_LETTERS), n, p=_LETTER_P))
    r = rng.random()
    if r < 0.08:
        w = w.capitalize()
    elif r < 0.1:
        w = str(int(rng.integers(0, 10_000)))
    if rng.random() < 0.1:
        w += str(rng.choice(list(",.;:")))
    return w


def _text_block(draw: ImageDraw.ImageDraw, rng, box: tuple[int, int, int, int], font, size: int) -> int:
    """Paragraph lines of pseudo-words inside box (x0, y0, x1, y1); returns the y below the last line."""
    x0, y, x1, y1 = box
    lead = int(size * rng.uniform(1.15, 1.6))
    while y + lead <= y1:
        x = x0 + (2 * size if rng.random() < 0.1 else 0)  # an indented first line now and then
        words: list[str] = []
        while True:
            w = _word(rng)
            width = draw.textlength(" ".join([*words, w]), font=font)
            if x + width > x1:
                break
            words.append(w)
        if words:
            draw.text((x, y), " ".join(words), fill=0, font=font)
        y += lead
        if rng.random() < 0.08:  # paragraph break
            y += lead // 2
    return y


def _table(draw: ImageDraw.ImageDraw, rng, box, font, size: int) -> None:
    x0, y0, x1, y1 = box
    cols = int(rng.integers(2, 7))
    row_h = int(size * rng.uniform(1.4, 2.0))
    rows = max(1, (y1 - y0) // row_h)
    xs = np.linspace(x0, x1, cols + 1).astype(int)
    width = int(rng.integers(1, 3))
    for r in range(rows + 1):
        draw.line([(x0, y0 + r * row_h), (x1, y0 + r * row_h)], fill=0, width=width)
    for x in xs:
        draw.line([(x, y0), (x, y0 + rows * row_h)], fill=0, width=width)
    for r in range(rows):
        for c in range(cols):
            text = _word(rng) if rng.random() < 0.6 else f"{rng.uniform(0, 1000):.{int(rng.integers(0, 3))}f}"
            if draw.textlength(text, font=font) < xs[c + 1] - xs[c] - 4:
                draw.text((xs[c] + 3, y0 + r * row_h + (row_h - size) // 2), text, fill=0, font=font)


def _drawing(draw: ImageDraw.ImageDraw, rng, box) -> None:
    x0, y0, x1, y1 = box
    for _ in range(int(rng.integers(3, 15))):
        kind = rng.integers(0, 4)
        a = (int(rng.integers(x0, x1)), int(rng.integers(y0, y1)))
        b = (int(rng.integers(x0, x1)), int(rng.integers(y0, y1)))
        xy = [min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])]
        width = int(rng.integers(1, 4))
        if kind == 0:
            draw.line([a, b], fill=0, width=width)
        elif kind == 1:
            draw.rectangle(xy, outline=0, width=width)
        elif kind == 2:
            draw.ellipse(xy, outline=0, width=width)
        else:
            pts = [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(int(rng.integers(3, 7)))]
            draw.line(pts, fill=0, width=width, joint="curve")


def page(seed: int, width: int = 512, height: int = 640) -> np.ndarray:
    """One page, (height, width) bool, True = paper (white), False = ink: text columns, maybe a
    heading, a table and a drawing, in one font family and size per page."""
    rng = np.random.default_rng([seed, width, height])
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    family = fonts()
    path = family[int(rng.integers(0, len(family)))]
    size = int(rng.integers(8, 25))
    font = _font(path, size)
    margin = int(rng.integers(4, max(5, width // 10)))
    y = margin
    if rng.random() < 0.6:  # heading
        big = _font(path, min(int(size * rng.uniform(1.4, 2.2)), 48))
        draw.text((margin, y), " ".join(_word(rng) for _ in range(int(rng.integers(1, 5)))), fill=0, font=big)
        y += int(size * 2.6)
    cols = 1 if width < 400 or rng.random() < 0.6 else 2
    gap = size * 2
    col_w = (width - 2 * margin - gap * (cols - 1)) // cols
    for c in range(cols):
        x0 = margin + c * (col_w + gap)
        yy = y
        while yy < height - margin - size * 3:
            r = rng.random()
            h = int(rng.integers(size * 3, max(size * 4, (height - yy) // 2)))
            box = (x0, yy, x0 + col_w, min(height - margin, yy + h))
            if r < 0.7:
                yy = _text_block(draw, rng, box, font, size)
            elif r < 0.85:
                _table(draw, rng, box, font, size)
                yy = box[3]
            else:
                _drawing(draw, rng, box)
                yy = box[3]
            yy += size
    return np.asarray(img) >= 128


def pages(seeds, width: int = 512, height: int = 640) -> list[np.ndarray]:
    """`page` for each seed."""
    return [page(int(s), width, height) for s in seeds]
