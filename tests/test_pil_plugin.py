"""The Pillow plugin: Image.open / Image.save of .pxz files after `import pxzip`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pxzip  # noqa: F401  (registers the plugin)


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("PXZIP_MODELS", str(tiny_models["dir"]))
    return [tiny_models["pp_rgb"], tiny_models["pp_gray"]]


def _images():
    rng = np.random.default_rng(0)
    pal = Image.fromarray(rng.integers(0, 5, (4, 6), dtype=np.uint8), "L").convert("P")
    pal.putpalette(list(range(15)))
    pal.info["transparency"] = 1
    return [
        Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), "RGB"),
        Image.fromarray(rng.integers(0, 256, (5, 3), dtype=np.uint8), "L"),
        Image.fromarray(rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(rng.integers(0, 256, (3, 4, 2), dtype=np.uint8), "LA"),
        Image.fromarray(rng.integers(0, 2, (5, 7), dtype=np.uint8) * 255).convert("1"),
        pal,
    ]


@pytest.mark.parametrize("idx", range(6))
def test_save_and_open(tmp_path, models_env, idx):
    img = _images()[idx]
    path = tmp_path / "x.pxz"
    img.save(path, model=models_env)  # format chosen by the extension; model as a save option
    with Image.open(path) as back:
        assert back.format == "PXZ" and back.mode == img.mode and back.size == img.size
        back.load()
        assert np.array_equal(np.asarray(back), np.asarray(img))
        if img.mode == "P":
            assert back.getpalette()[:15] == img.getpalette()[:15]
            assert back.info.get("transparency") == 1


def test_open_refuses_foreign_files(tmp_path):
    p = tmp_path / "x.pxz"
    p.write_bytes(b"not an image at all")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(p)
