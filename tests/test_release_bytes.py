"""Files written now are byte-identical to release 3fb0a0f's with the shipped models: every mode,
both orders, a label, head offsets (tests/expected/release_cases.py; the hashes were written by
3fb0a0f itself). The speed work (compiled kernels) must change no output byte; each file also
decodes back to its pixels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import pxzip
from pxzip import container

HERE = Path(__file__).resolve().parent / "expected"
sys.path.insert(0, str(HERE))
from release_cases import cases, digest  # noqa: E402

# 3fb0a0f has no fallback coders: what must match is the network's coding (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

EXPECTED = json.loads((HERE / "release-3fb0a0f.json").read_text())
CASES = cases()


def test_every_case_has_a_release_hash():
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_bytes_as_release(name):
    img, opts = CASES[name]
    data = pxzip.compress(img, **opts)
    assert digest(data) == EXPECTED[name]
    assert np.array_equal(pxzip.decompress(data), np.asarray(img))
    header = container.unpack(data)[0]
    if name == "rgb-adapt":
        assert any(header.offsets), "the case meant to cover head offsets (format 5) has none"
    assert header.wavefront == ("wave" in name or name == "rgb-adapt")
