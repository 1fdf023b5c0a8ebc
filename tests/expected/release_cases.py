"""Images and options whose files must stay byte-identical to what release 3fb0a0f writes with the
shipped models (tests/test_release_bytes.py). `python tests/expected/release_cases.py` under a given
pxzip prints their sha256 as JSON: release-3fb0a0f.json was written by 3fb0a0f itself."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB image with texture and noise (the shipped models' everyday input), (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def cases() -> dict[str, tuple[Image.Image, dict]]:
    """name -> (image, compress options)."""
    small, wide = photo_like(24, 20, 1), photo_like(72, 90, 2)
    pal = Image.fromarray(small).quantize(12)
    return {
        "rgb-raster": (Image.fromarray(small), {}),
        "rgb-wave": (Image.fromarray(wide), {}),
        "rgb-raster-big": (Image.fromarray(wide), {"order": "raster"}),
        "rgb-wave-small": (Image.fromarray(small), {"order": "wavefront"}),
        "l-raster": (Image.fromarray(small).convert("L"), {}),
        "l-wave": (Image.fromarray(wide).convert("L"), {"tile": 32}),
        "rgba": (Image.fromarray(np.dstack([small, small[..., :1]])), {}),
        "la-wave": (Image.fromarray(wide).convert("LA"), {"order": "wavefront"}),
        "p": (pal, {}),
        # 3fb0a0f coded mode "1" with its gray default; pxzip now defaults to pxz-bilevel (issue 18),
        # and the gray model, named, still gives the release's bytes
        "one": (Image.fromarray(small[..., 0] > 128).convert("1"), {"model": "pxz-gray-cifar"}),
        "rgb-label": (Image.fromarray(small), {"label": 3}),
        "rgb-adapt": (Image.fromarray(photo_like(128, 136, 3)), {}),  # format 5: head offsets fitted
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    import pxzip

    print(json.dumps({name: digest(pxzip.compress(img, **opts)) for name, (img, opts) in cases().items()}, indent=1))
