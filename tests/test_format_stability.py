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
