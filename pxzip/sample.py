"""Draw images from a model with the exact cached decoder (the same tables the coder uses)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from PIL import Image

from pxzip import device as devices
from pxzip import engines, tables
from pxzip.exact import ExactModel
from pxzip.zoo import Model


def _draw(freqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One symbol per row of integer frequencies (N, 256)."""
    cum = np.cumsum(freqs, 1)
    u = rng.integers(0, cum[:, -1:], size=(len(freqs), 1))
    return (cum <= u).sum(1)


def sample(
    model: Model | ExactModel,
    n: int,
    height: int = 32,
    width: int = 32,
    seed: int = 0,
    labels: np.ndarray | None = None,
    device: str | None = "cpu",
) -> np.ndarray:
    """n images (n, H, W, C) uint8 drawn in raster order from the exact model.

    labels: (n,) class labels for a class-conditional model (None: no label).
    device: where a zoo Model's network runs ("auto", "cpu", "cuda[:N]"; the same images on each).
    An ExactModel runs where its tensors are.
    """
    em = model.on(devices.resolve(device)).exact if isinstance(model, Model) else model
    cfg = em.cfg
    rng = np.random.default_rng(seed)
    c = cfg.in_channels
    out = np.zeros((n, height, width, c), np.uint8)
    lab = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    st = engines.stepper(em, n, height, width, device=em.device, labels=lab)
    for i in range(height):
        st.start_row(i)
        for j in range(width):
            steps = tables.PixelSteps(cfg, em.luts, partial(st.params_int, j), em.prior)
            for ch in range(c):
                v = _draw(steps.freqs(ch), rng)
                out[:, i, j, ch] = v
                st.set_pixel(j, ch, torch.from_numpy(v))
                steps.observe(ch, v)
    return out


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> Image.Image:
    """(N, H, W, C) uint8 -> one PIL image with the images in a grid."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for k in range(n):
        y, x = divmod(k, cols)
        canvas[pad + y * (h + pad) : pad + y * (h + pad) + h, pad + x * (w + pad) : pad + x * (w + pad) + w] = images[k]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas, "L" if c == 1 else "RGB")
