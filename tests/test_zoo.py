"""The shipped models: installed with the package, hash-checked, usable as defaults."""

from __future__ import annotations

import numpy as np
import pytest

import pxzip
from pxzip import zoo


def test_registry_models_are_installed_and_pass_their_hash_check():
    reg = zoo.registry()
    assert set(zoo.DEFAULTS.values()) <= set(reg), "every default model must be shipped"
    for name, sha in reg.items():
        m = zoo.load_model(name)
        assert m.sha256 == sha and m.id == bytes.fromhex(sha[:4])


@pytest.mark.parametrize("shape", [(3, 4, 3), (4, 3), (2, 3, 4)])
def test_default_models_round_trip(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = pxzip.compress(img)  # no model given: the shipped defaults
    assert np.array_equal(pxzip.decompress(data), img)


def test_a_tampered_shipped_model_is_refused(tmp_path):
    name = zoo.DEFAULTS["gray"]
    raw = bytearray(zoo.installed()[name].read_bytes())
    raw[-3] ^= 0x10
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(pxzip.ModelFileError):
        zoo.load_file(bad, expected_sha256=zoo.registry()[name])
