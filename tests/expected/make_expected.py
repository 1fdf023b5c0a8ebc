"""Regenerate the pinned format-stability files. Run ONLY when the format version changes:
the whole point of these files is that every later pxzip decodes them to the same pixels and
re-encodes the same images to the same bytes.

    python tests/expected/make_expected.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pxzip
from pxzip import zoo
from pxzip.config import ModelConfig
from pxzip.model import PixelCNN

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(20261123)
    models = []
    for name, arch, c in (("pinned-pp-rgb", "pixelcnnpp", 3), ("pinned-gated-gray", "gated", 1)):
        cfg = ModelConfig(arch=arch, in_channels=c, num_filters=6, num_resnet=1, num_logistic_mix=2)
        zoo.save_model(HERE / f"{name}.safetensors", PixelCNN(cfg), name)
        models.append(zoo.load_file(HERE / f"{name}.safetensors"))
    rng = np.random.default_rng(20261123)
    # smooth-ish images so that the trained-looking path (small symbols) is exercised too
    yy, xx = np.mgrid[0:9, 0:7]
    ramp = ((yy * 20 + xx * 13) % 256).astype(np.uint8)
    pal = Image.fromarray((ramp % 5).astype(np.uint8), "L").convert("P")
    pal.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255, 33, 66, 99, 250, 250, 250])
    pal.info["transparency"] = 3
    images = {
        "rgb": Image.fromarray(np.stack([ramp, ramp[::-1], rng.integers(0, 256, ramp.shape, dtype=np.uint8)], -1)),
        "rgba": Image.fromarray(np.stack([ramp, ramp, ramp, np.full_like(ramp, 255)], -1), "RGBA"),
        "l": Image.fromarray(ramp, "L"),
        "la": Image.fromarray(np.stack([ramp, ramp[:, ::-1]], -1), "LA"),
        "one": Image.fromarray(ramp > 100).convert("1"),
        "p": pal,
    }
    for name, img in images.items():
        img.save(HERE / f"{name}.png")
        (HERE / f"{name}.pxz").write_bytes(pxzip.compress(img, models, fallback=False))


def ensemble() -> None:
    """pinned-ens-rgb: pinned-pp-rgb plus a second tiny member, weights 2:1, and ens-rgb.pxz coded
    with it (`python tests/expected/make_expected.py ensemble`; added with ensembles, format 3)."""
    torch.manual_seed(20261124)
    first = zoo.load_file(HERE / "pinned-pp-rgb.safetensors")
    zoo.save_model(HERE / "pinned-pp-rgb-b.tmp.safetensors", PixelCNN(first.cfg), "pinned-pp-rgb-b")
    second = zoo.load_file(HERE / "pinned-pp-rgb-b.tmp.safetensors")
    zoo.save_ensemble(HERE / "pinned-ens-rgb.safetensors", [first, second], [2, 1], "pinned-ens-rgb")
    (HERE / "pinned-pp-rgb-b.tmp.safetensors").unlink()
    ens = zoo.load_file(HERE / "pinned-ens-rgb.safetensors")
    (HERE / "ens-rgb.pxz").write_bytes(pxzip.compress(Image.open(HERE / "rgb.png"), ens, fallback=False))


def wave() -> None:
    """wave-rgb / wave-l: format-4 files (wavefront order) of the pinned models, several tile shapes
    (`python tests/expected/make_expected.py wavefront`; added with format 4)."""
    models = [zoo.load_file(HERE / f"{n}.safetensors") for n in ("pinned-pp-rgb", "pinned-gated-gray")]
    yy, xx = np.mgrid[0:40, 0:70]
    ramp = ((yy * 7 + xx * 3) % 256).astype(np.uint8)
    noise = np.random.default_rng(20261123).integers(0, 256, ramp.shape, dtype=np.uint8)
    rgb = Image.fromarray(np.stack([ramp, ramp[::-1], noise], -1))
    rgb.save(HERE / "wave-rgb.png")
    (HERE / "wave-rgb.pxz").write_bytes(pxzip.compress(rgb, models, tile=16, order="wavefront", fallback=False))
    gray = Image.fromarray(np.ascontiguousarray(ramp.T[:, :20]), "L")  # 70 x 20: one tile, taller than wide
    gray.save(HERE / "wave-l.png")
    (HERE / "wave-l.pxz").write_bytes(pxzip.compress(gray, models, order="wavefront", fallback=False))


def adapted() -> None:
    """adapt-rgb: a format-5 file (head offsets per unit) of pinned-pp-rgb, 16x16 tiles in wavefront
    order (`python tests/expected/make_expected.py adapted`; added with format 5). The encoder fits
    offsets to units of any size here (adapt.MIN_FIT_PIXELS = 1) so the file stays small."""
    from pxzip import adapt

    model = zoo.load_file(HERE / "pinned-pp-rgb.safetensors")
    yy, xx = np.mgrid[0:24, 0:40]
    base = 90 + 40 * np.sin(yy / 5.0) + 30 * np.cos(xx / 7.0)
    noise = np.random.default_rng(20261125).normal(0, 2, base.shape + (3,))
    rgb = np.clip(np.stack([base + 60, base, base * 0.5], -1) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(HERE / "adapt-rgb.png")
    adapt.MIN_FIT_PIXELS = 1
    (HERE / "adapt-rgb.pxz").write_bytes(pxzip.compress(rgb, [model], tile=16, order="wavefront", fallback=False))


FALLBACK = ("fb-p", "fb-one", "fb-rgba", "fb-repeats")


def fallbacks() -> None:
    """fb-*: format-6 files (plane coders) of the pinned models (`python tests/expected/make_expected.py
    fallback`; added with format 6): palette indices and a 1-bit page by context mixing, an RGBA image
    whose photo-like colours the network keeps and whose two-level alpha indexed colours take, and
    rows of noise repeated, which only PNG's deflate stream finds."""
    models = [zoo.load_file(HERE / f"{n}.safetensors") for n in ("pinned-pp-rgb", "pinned-gated-gray")]
    yy, xx = np.mgrid[0:30, 0:44]
    pal = Image.fromarray((((xx // 5) + (yy // 6) * 3) % 7).astype(np.uint8), "L").convert("P")
    pal.putpalette(list(np.random.default_rng(1).integers(0, 256, 21)))
    page = Image.fromarray((((xx * 5 + yy * 3) % 13) < 4) | (yy % 9 == 0)).convert("1")
    base = 90 + 40 * np.sin(yy / 5.0) + 30 * np.cos(xx / 7.0)
    colours = np.stack([base + 60, base, base * 0.5], -1) + np.random.default_rng(2).normal(0, 2, base.shape + (3,))
    alpha = np.where(xx < 20, 255, 0)[..., None]
    rgba = Image.fromarray(np.clip(np.concatenate([colours, alpha], -1), 0, 255).astype(np.uint8), "RGBA")
    # 8 rows of noise repeated: beyond context mixing's few rows of context, but not beyond deflate's window
    noise = Image.fromarray(np.tile(np.random.default_rng(3).integers(0, 256, (8, 20, 3), dtype=np.uint8), (4, 1, 1)))
    for name, img in zip(FALLBACK, (pal, page, rgba, noise)):
        img.save(HERE / f"{name}.png")
        # the RGBA image through the shipped models: the network keeps a plane only a trained model codes well
        (HERE / f"{name}.pxz").write_bytes(pxzip.compress(img, None if name == "fb-rgba" else models))


BILEVEL = {"bl-page": {"order": "raster"}, "bl-page-wave": {"order": "wavefront", "tile": 16}}


def bilevel() -> None:
    """bl-*: mode "1" files of a pinned bilevel model (Bernoulli head; `python tests/expected/make_expected.py
    bilevel`; added with bilevel models), network only, in both orders; pinned-bilevel.safetensors is its
    model (random weights, kernel 5)."""
    torch.manual_seed(20261203)
    cfg = ModelConfig(arch="gated", in_channels=1, head="bernoulli", num_filters=6, num_resnet=2, kernel_size=5)
    zoo.save_model(HERE / "pinned-bilevel.safetensors", PixelCNN(cfg), "pinned-bilevel")
    model = zoo.load_file(HERE / "pinned-bilevel.safetensors")
    yy, xx = np.mgrid[0:21, 0:38]
    page = Image.fromarray(((xx * 7 + yy * yy) % 11 < 5) | (xx % 13 == 0)).convert("1")
    page.save(HERE / "bl-page.png")
    for name, opts in BILEVEL.items():
        (HERE / f"{name}.pxz").write_bytes(pxzip.compress(page, [model], fallback=False, **opts))


if __name__ == "__main__":
    import sys

    steps = {"ensemble": ensemble, "wavefront": wave, "adapted": adapted, "fallback": fallbacks, "bilevel": bilevel}
    steps.get(sys.argv[1] if sys.argv[1:] else "", main)()
