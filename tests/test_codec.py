"""Round trips through the library API: every mode, odd sizes, tiles, batches, real images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pxzip
from pxzip import codec, container

# the network's own path (the fallback coders' CLI and library tests: tests/test_fallback.py)
pytestmark = pytest.mark.usefixtures("network_only")


@pytest.fixture(params=["pp", "gated"])
def models(request, tiny_models):
    return [tiny_models[f"{request.param}_rgb"], tiny_models[f"{request.param}_gray"]]


def rand(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (3, 5, 3), (5, 3, 1), (4, 7, 2), (6, 5, 4), (2, 9)])
def test_arrays_round_trip(models, shape):
    img = rand(shape)
    data = pxzip.compress(img, models)
    out = pxzip.decompress(data, models)
    assert np.array_equal(out.reshape(img.shape), img)


def test_every_pil_mode_round_trips(tiny_models):
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    rng = np.random.default_rng(3)
    pal = Image.fromarray(rng.integers(0, 8, (5, 6), dtype=np.uint8), "L").convert("P")
    pal.putpalette(list(rng.integers(0, 256, 8 * 3)))
    pal.info["transparency"] = 2
    dup = Image.fromarray(rng.integers(0, 4, (4, 5), dtype=np.uint8), "L").convert("P")
    dup.putpalette([9, 9, 9] * 4)  # duplicate colours: indices are coded as a gray plane
    images = [
        Image.fromarray(rand((5, 6)), "L"),
        Image.fromarray(rand((5, 6, 2)), "LA"),
        Image.fromarray(rand((5, 6, 3)), "RGB"),
        Image.fromarray(rand((5, 6, 4)), "RGBA"),
        Image.fromarray(rand((5, 6)) > 128).convert("1"),
        pal,
        dup,
    ]
    for img in images:
        data = pxzip.compress(img, models)
        back = pxzip.decompress_image(data, models)
        assert back.mode == img.mode
        assert np.array_equal(np.asarray(back), np.asarray(img)), img.mode
        if img.mode == "P":
            assert back.getpalette() == img.getpalette()
            assert back.info.get("transparency") == img.info.get("transparency")


def test_tiles_odd_sizes_and_chunked_encoder_pass(models, monkeypatch):
    img = rand((21, 37, 3), seed=5)
    data = pxzip.compress(img, models, tile=16)
    header, _ = container.unpack(data)
    assert header.tile_log2 == 4
    assert np.array_equal(pxzip.decompress(data, models), img)
    # evaluating the encoder's parallel pass in smaller chunks gives the very same bytes
    monkeypatch.setattr(codec, "PASS_POSITIONS", 64)
    assert pxzip.compress(img, models, tile=16) == data
    # and so does a decoder with very few lanes per batch
    monkeypatch.setattr(codec, "MAX_LANES", 128)
    assert np.array_equal(codec.decompress_many([data], models, max_lanes=1)[0], img)


def test_batched_decode_of_different_images(models):
    imgs = [rand((6, 5, 3), seed=s) for s in range(4)] + [rand((3, 4), seed=9), rand((6, 5, 3), seed=11)]
    datas = [pxzip.compress(im, models) for im in imgs]
    outs = codec.decompress_many(datas, models)
    for im, out in zip(imgs, outs):
        assert np.array_equal(out.reshape(im.shape), im)


def test_tile_choice():
    assert codec.choose_tile_log2(32, 32, None) == 0
    assert codec.choose_tile_log2(64, 64, None) == 0
    assert codec.choose_tile_log2(65, 10, None) == codec.DEFAULT_TILE_LOG2
    assert codec.choose_tile_log2(100, 100, 0) == 0
    assert codec.choose_tile_log2(100, 100, 32) == 5
    with pytest.raises(ValueError):
        codec.choose_tile_log2(100, 100, 33)


def test_cifar_images_round_trip(shared_data, tiny_models):
    from pxzip.data import load_cifar10

    imgs, _ = load_cifar10(shared_data / "cifar10", "test", limit=3)
    models = [tiny_models["pp_rgb"]]
    datas = [pxzip.compress(im, models) for im in imgs]
    for im, out in zip(imgs, codec.decompress_many(datas, models)):
        assert np.array_equal(out, im)
    assert all(len(d) - len(container.unpack(d)[1]) <= 12 for d in datas)  # 32x32 RGB header


def test_kodak_crop_round_trips(shared_data, tiny_models):
    img = np.asarray(Image.open(shared_data / "kodak" / "kodim23.png").convert("RGB"))[200:218, 300:333]
    models = [tiny_models["gated_rgb"]]
    data = pxzip.compress(img, models, tile=16)
    assert np.array_equal(pxzip.decompress(data, models), img)


def test_absurd_declared_sizes_are_refused_before_decoding(tiny_models, monkeypatch):
    models = [tiny_models["pp_gray"]]
    data = pxzip.compress(rand((4, 4)), models)
    header, payload = container.unpack(data)
    big = container.Header(**{**header.__dict__, "width": 1 << 20, "height": 1 << 10, "tile_log2": 6})
    with pytest.raises(pxzip.FormatError, match="exceeds this decoder's limit"):
        pxzip.decompress(container.pack(big, payload), models)
    one_tile = container.Header(**{**header.__dict__, "width": 5000, "height": 2})
    with pytest.raises(pxzip.FormatError, match="single tile"):
        pxzip.decompress(container.pack(one_tile, payload), models)
    monkeypatch.setenv("PXZIP_MAX_PIXELS", "10")
    with pytest.raises(pxzip.FormatError):
        pxzip.decompress(data, models)
    monkeypatch.setenv("PXZIP_MAX_PIXELS", "lots")
    with pytest.raises(pxzip.UsageError, match="PXZIP_MAX_PIXELS='lots': expected a whole number"):
        pxzip.decompress(data, models)
    with pytest.raises(ValueError):
        codec.choose_tile_log2(5000, 3, 0)


def test_thread_count_gives_identical_bytes_and_decodes(models):
    import torch

    img = rand((9, 11, 3), seed=21)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pxzip.compress(img, models, tile=16)
        torch.set_num_threads(2)
        two = pxzip.compress(img, models, tile=16)
        assert one == two
        assert np.array_equal(pxzip.decompress(one, models), img)  # decoded with 2 threads
    finally:
        torch.set_num_threads(before)
