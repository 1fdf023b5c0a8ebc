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
