"""Pinned .pxz files (tests/expected/) must decode identically, and re-encode to the same bytes,
in every later version. If this fails, the format changed: bump FORMAT_VERSION and keep a
decoder for the old one, never regenerate these files silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pxzip
from pxzip import zoo

# pinned files of the network's path (format 6's fallback planes: tests/test_fallback.py; conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

HERE = Path(__file__).resolve().parent / "expected"
NAMES = ["rgb", "rgba", "l", "la", "one", "p"]


@pytest.fixture(scope="module")
def pinned_models():
    return [zoo.load_file(HERE / "pinned-pp-rgb.safetensors"), zoo.load_file(HERE / "pinned-gated-gray.safetensors")]


@pytest.mark.parametrize("name", NAMES)
def test_pinned_file_decodes_to_pinned_pixels(name, pinned_models):
    expected = Image.open(HERE / f"{name}.png")
    back = pxzip.decompress_image((HERE / f"{name}.pxz").read_bytes(), pinned_models)
    assert back.mode == expected.mode
    assert np.array_equal(np.asarray(back), np.asarray(expected))


@pytest.mark.parametrize("name", NAMES)
def test_encoder_reproduces_pinned_bytes(name, pinned_models):
    img = Image.open(HERE / f"{name}.png")
    assert pxzip.compress(img, pinned_models) == (HERE / f"{name}.pxz").read_bytes()


WAVE = {"wave-rgb": {"tile": 16, "order": "wavefront"}, "wave-l": {"order": "wavefront"}}


@pytest.mark.parametrize("name", WAVE)
def test_pinned_wavefront_files(name, pinned_models):
    """Format 4 (wavefront order): decodes to the pinned pixels, re-encodes to the pinned bytes."""
    data = (HERE / f"{name}.pxz").read_bytes()
    assert data[2] >> 4 == 4
    img = Image.open(HERE / f"{name}.png")
    assert np.array_equal(np.asarray(pxzip.decompress_image(data, pinned_models)), np.asarray(img))
    assert pxzip.compress(img, pinned_models, **WAVE[name]) == data


def test_pinned_format5_file(pinned_models, monkeypatch):
    """Format 5 (head offsets): decodes to the pinned pixels; and coding the image with the pinned
    file's records reproduces its bytes. (Which record the encoder picks is a float fit that may
    differ between machines, so the fit itself is replaced by the stored records here.)"""
    from pxzip import adapt, codec, container

    data = (HERE / "adapt-rgb.pxz").read_bytes()
    h = container.unpack(data)[0]
    assert data[2] >> 4 == 5 and h.wavefront and len(h.offsets) == 4 and any(h.offsets)
    img = Image.open(HERE / "adapt-rgb.png")
    assert np.array_equal(np.asarray(pxzip.decompress_image(data, pinned_models)), np.asarray(img))
    stored = iter(h.offsets)

    def replay(model, tiles_px, label, params):
        rec = next(stored)
        return np.array(rec, np.int64) if rec else None

    monkeypatch.setattr(adapt, "MIN_FIT_PIXELS", 1)
    monkeypatch.setattr(codec, "_fit_offsets", replay)
    assert pxzip.compress(img, pinned_models, tile=16, order="wavefront") == data


@pytest.mark.parametrize("name", ["bl-page", "bl-page-wave"])
def test_pinned_bilevel_files(name):
    """Mode "1" through a bilevel model (Bernoulli head): decodes to the pinned pixels, re-encodes to
    the pinned bytes, in raster and wavefront order (make_expected.py bilevel)."""
    import sys

    sys.path.insert(0, str(HERE))
    from make_expected import BILEVEL

    model = zoo.load_file(HERE / "pinned-bilevel.safetensors")
    assert model.kind == "bilevel"
    data = (HERE / f"{name}.pxz").read_bytes()
    img = Image.open(HERE / "bl-page.png")
    back = pxzip.decompress_image(data, [model])
    assert back.mode == "1" and np.array_equal(np.asarray(back), np.asarray(img))
    assert pxzip.compress(img, [model], **BILEVEL[name]) == data
