"""Tests for pxzip.baselines: exact round trips and sane bits per sub-pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pxzip import baselines

CODECS = sorted(n for n in baselines.CODECS if n not in baselines.BILEVEL_ONLY)  # 8-bit codecs


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A compressible RGB image: gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 3, y * 2, x + y], axis=-1) + rng.integers(0, 4, (h, w, 3))
    return (base % 256).astype(np.uint8)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("shape", [(32, 32, 3), (7, 13, 3), (9, 5), (6, 4, 1)])
def test_round_trip_random(name: str, shape: tuple[int, ...]) -> None:
    codec = baselines.CODECS[name]
    img = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert baselines.same_pixels(img, codec.decode(codec.encode(img)))


def test_png_and_defaults_present() -> None:
    assert "png" in baselines.CODECS
    assert set(baselines.CODECS) <= set(baselines.KNOWN_CODECS)
    assert all(baselines.CODECS[n].name == n for n in baselines.CODECS)


def test_gray_shapes() -> None:
    img = _smooth(8, 8, 0)[:, :, 0]
    png = baselines.CODECS["png"]
    assert png.decode(png.encode(img[:, :, None])).shape == (8, 8)
    assert not baselines.same_pixels(img, np.zeros((8, 8, 3), np.uint8))


def test_run_baselines_bpd() -> None:
    images = [_smooth(32, 32, i) for i in range(3)]
    images.append(np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    res = baselines.run_baselines(images, names=CODECS)
    assert set(res) == set(CODECS)
    for name, r in res.items():
        assert r["n"] == 4 and r["n_exact"] == 4, name
        assert len(r["bpd"]) == 4
        assert all(b < 6 for b in r["bpd"][:3]), (name, r["bpd"])  # smooth: compressible
        assert 7.5 < r["bpd"][3] < 9.5, name  # noise: incompressible, plus headers
        assert r["pooled"] == pytest.approx(r["mean"])  # equal sizes
        assert r["enc_ms"] >= 0 and r["dec_ms"] >= 0


def test_run_baselines_names() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        baselines.run_baselines([_smooth(4, 4, 0)], names=["gif"])
    assert baselines.run_baselines([], names=["png"])["png"]["n"] == 0


def test_real_images(shared_data: Path) -> None:
    kodim = shared_data / "kodak" / "kodim23.png"
    if not kodim.is_file():
        pytest.skip("no Kodak in the shared data")
    with Image.open(kodim) as im:
        # A crop keeps the slow encoders (WebP method 6) fast.
        crop = np.asarray(im.convert("RGB"))[200:264, 300:396]
    names = [n for n in CODECS if n != "jxl-e9"]
    res = baselines.run_baselines([crop, np.ascontiguousarray(crop[:, :, 1])], names=names)
    for name, r in res.items():
        assert r["n_exact"] == 2, name
        assert 1.0 < r["mean"] < 7.0, (name, r["mean"])
