"""The shipped models: installed with the package, hash-checked, usable as defaults."""

from __future__ import annotations

import numpy as np
import pytest

import pxzip
from pxzip import zoo

# files of the models themselves: the fallback coders would take some planes (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")


def test_registry_models_are_installed_and_pass_their_hash_check():
    reg = zoo.registry()
    assert set(zoo.DEFAULTS.values()) <= set(reg), "every default model must be shipped"
    for name, sha in reg.items():
        m = zoo.load_model(name)
        assert m.sha256 == sha and m.id == bytes.fromhex(sha[:4])
    assert len({sha[:4] for sha in reg.values()}) == len(reg), "a file names its model by 2 bytes: keep them distinct"


@pytest.mark.parametrize("shape", [(3, 4, 3), (4, 3), (2, 3, 4)])
def test_default_models_round_trip(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = pxzip.compress(img)  # no model given: the shipped defaults
    assert np.array_equal(pxzip.decompress(data), img)


def test_the_default_model_depends_on_the_image_size():
    """Small images (CIFAR-10 sized, one tile) take the CIFAR-10 models, larger ones the photo
    models; the file names the model it was coded with, so decoding needs no such rule."""
    from pxzip import container

    assert set(zoo.LARGE_DEFAULTS.values()) <= set(zoo.registry()), "every default model must be shipped"
    side = zoo.LARGE_SIDE
    assert zoo.default_name("rgb", side, side) == zoo.DEFAULTS["rgb"]
    assert zoo.default_name("rgb", side + 1, 1) == zoo.default_name("rgb", 1, side + 1) == zoo.LARGE_DEFAULTS["rgb"]
    assert zoo.LARGE_DEFAULTS["rgb"] != zoo.DEFAULTS["rgb"]
    assert zoo.default_name("gray", side, side) == zoo.DEFAULTS["gray"]
    assert zoo.default_name("gray", 1, side + 1) == zoo.LARGE_DEFAULTS["gray"] != zoo.DEFAULTS["gray"]
    rng = np.random.default_rng(1)
    cases = [((side, 3, 3), "rgb"), ((3, side + 1, 3), "rgb"), ((side, 3), "gray"), ((side + 1, 2), "gray")]
    for shape, kind in cases:
        name = zoo.default_name(kind, *shape[:2])
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        data = pxzip.compress(img)
        assert container.unpack(data)[0].model_ids == (zoo.load_model(name).id,)
        assert np.array_equal(pxzip.decompress(data), img)


def test_a_tampered_shipped_model_is_refused(tmp_path):
    name = zoo.DEFAULTS["gray"]
    raw = bytearray(zoo.installed()[name].read_bytes())
    raw[-3] ^= 0x10
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(pxzip.ModelFileError):
        zoo.load_file(bad, expected_sha256=zoo.registry()[name])


def test_a_model_file_rewritten_in_place_is_hashed_again(tmp_path, monkeypatch):
    """Loads are cached by the file's stat (inode, size, mtime, ctime): a rewrite changes the ctime,
    so the new bytes are hashed, even with the old mtime put back."""
    import os

    gray, rgb = (zoo.installed()[zoo.DEFAULTS[k]] for k in ("gray", "rgb"))
    f = tmp_path / "m.safetensors"
    f.write_bytes(gray.read_bytes())
    first = zoo.load_file(f)
    assert str(f.resolve()) not in zoo._SEEN  # just written: too recent to trust its stat ("racy")
    monkeypatch.setattr(zoo, "RACY_NS", -(1 << 62))  # from here on, every stat is trusted
    assert zoo.load_file(f) is first
    assert zoo._SEEN[str(f.resolve())][1] == first.sha256
    assert zoo.load_file(f) is first  # unchanged: the cached model, by its stat
    st = os.stat(f)
    with open(f, "r+b") as fh:  # same inode, new content
        fh.write(rgb.read_bytes())
        fh.truncate()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zoo.load_file(f).sha256 == zoo.registry()[zoo.DEFAULTS["rgb"]]
    # a cached model's bytes under a name that expects another hash are refused, cache or not
    with pytest.raises(pxzip.ModelFileError):
        zoo.load_file(f, expected_sha256=zoo.registry()[zoo.DEFAULTS["gray"]])  # known by its stat
    zoo._SEEN.pop(str(f.resolve()))
    with pytest.raises(pxzip.ModelFileError):
        zoo.load_file(f, expected_sha256=zoo.registry()[zoo.DEFAULTS["gray"]])  # read and hashed


@pytest.mark.parametrize("model_id", ["98c9", "9667", "9048", "1315"])
def test_files_of_superseded_shipped_models_still_decode(model_id):
    """A shipped model (current or, once replaced, installed under a new name with bytes and id
    unchanged) decodes every .pxz made with it. shipped-rgb-ID.pxz was made by
    `pxzip.compress(Image.open("tests/expected/rgb.png"), NAME)` while NAME was the model with that
    id: pxz-rgb-cifar (98c9, 9667) or pxz-rgb-photo (9048, 1315); it must keep decoding to the same
    pixels in every later version."""
    from pathlib import Path

    from PIL import Image

    from pxzip import container

    here = Path(__file__).resolve().parent / "expected"
    data = (here / f"shipped-rgb-{model_id}.pxz").read_bytes()
    assert container.unpack(data)[0].model_ids == (bytes.fromhex(model_id),)
    expected = np.asarray(Image.open(here / "rgb.png"))
    assert np.array_equal(pxzip.decompress(data), expected)  # found by id among the shipped models
    m = zoo.find_by_id(bytes.fromhex(model_id))
    assert m.name in zoo.registry()  # reported under its zoo name
    assert pxzip.compress(Image.open(here / "rgb.png"), m.name) == data  # and it still encodes the same bytes


def test_files_of_the_superseded_gray_model_still_decode():
    """shipped-gray-47d8.pxz: `pxzip.compress(Image.open("tests/expected/l.png"), "pxz-gray-cifar")`
    with the session-1 gray model (id 47d8): it must decode, and encode, the same in every later version."""
    from pathlib import Path

    from PIL import Image

    from pxzip import container

    here = Path(__file__).resolve().parent / "expected"
    data = (here / "shipped-gray-47d8.pxz").read_bytes()
    assert container.unpack(data)[0].model_ids == (bytes.fromhex("47d8"),)
    assert np.array_equal(pxzip.decompress(data), np.asarray(Image.open(here / "l.png")))
    m = zoo.find_by_id(bytes.fromhex("47d8"))
    assert m.name in zoo.registry()
    assert pxzip.compress(Image.open(here / "l.png"), m.name) == data


def test_the_default_rgb_model_codes_real_cifar_images_well(shared_data):
    """The shipped default really is the trained model: real files on the first 50 CIFAR-10 test
    images (3.31 bits/dim over all 10,000; JPEG-XL 4.09), every one decoded bit-exact."""
    from pxzip.data import load_cifar10

    images, _ = load_cifar10(shared_data / "cifar10", "test", limit=50)
    datas = [pxzip.compress(im) for im in images]
    assert all(np.array_equal(a, b) for a, b in zip(pxzip.decompress_many(datas), images))
    bpd = np.mean([8 * len(d) / im.size for d, im in zip(datas, images)])
    assert 2.8 < bpd < 3.5, bpd


def test_format_3_file_of_the_shipped_conditional_model_still_decodes():
    """shipped-rgb-1459-label3.pxz: `pxzip.compress(Image.open("tests/expected/rgb.png"),
    "pxz-rgb-cifar", label=3)` with the session-3 default (id 1459): a format-3 file with a class
    label; it must decode to the same pixels, and encode to the same bytes, in every later version."""
    from pathlib import Path

    from PIL import Image

    from pxzip import container

    here = Path(__file__).resolve().parent / "expected"
    data = (here / "shipped-rgb-1459-label3.pxz").read_bytes()
    h = container.unpack(data)[0]
    assert data[2] >> 4 == 3 and h.label == 3 and h.model_ids == (bytes.fromhex("1459"),)
    expected = np.asarray(Image.open(here / "rgb.png"))
    assert np.array_equal(pxzip.decompress(data), expected)
    m = zoo.find_by_id(bytes.fromhex("1459"))
    assert pxzip.compress(Image.open(here / "rgb.png"), m.name, label=3) == data


def test_files_of_the_shipped_bilevel_model_still_decode():
    """shipped-bilevel-a318.pxz was made by `pxzip.compress(Image.open("tests/expected/bl-page.png"),
    "pxz-bilevel", fallback=False)` while pxz-bilevel had id a318; it must keep decoding to the same
    pixels in every later version (a replaced model stays installed under a new name)."""
    from pathlib import Path

    from PIL import Image

    from pxzip import container

    here = Path(__file__).resolve().parent / "expected"
    data = (here / "shipped-bilevel-a318.pxz").read_bytes()
    assert container.unpack(data)[0].model_ids == (bytes.fromhex("a318"),)
    expected = np.asarray(Image.open(here / "bl-page.png"))
    assert np.array_equal(np.asarray(pxzip.decompress_image(data)), expected)
