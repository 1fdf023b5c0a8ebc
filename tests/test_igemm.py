"""int8 limb GEMMs (pxzip/igemm.py) give exactly the float64 GEMM's integers: limbs at every range
end, products at the bounds export allows, whole-tile convolutions, a shipped model's head outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pxzip import exact, igemm, kernels, zoo
from pxzip.exact import CLAMP

needs_int8 = pytest.mark.skipif(not igemm.INT8, reason="torch._int_mm is not available or failed its self-check here")


def digits(v: int, n: int) -> list[int]:
    """v's n balanced base-128 limbs, as igemm computes them (the bias form)."""
    u = v + igemm._bias(n)
    return [((u >> (7 * i)) & 127) - 64 for i in range(n)]


@pytest.mark.parametrize("amax", [0, 1, 63, 64, 8127, 8128, 1040319, 1040320, CLAMP, 2**26])
def test_limbs_represent_every_value_up_to_the_bound(amax):
    n = igemm.limbs_for(amax)
    assert n == 1 or amax > (1 << (7 * (n - 1))) - 1 - igemm._bias(n - 1)  # no fewer limbs would do
    for v in {-amax, -amax + 1, -1, 0, 1, amax - 1, amax}:
        d = digits(v, n)
        assert all(-64 <= x <= 63 for x in d)
        assert sum(x << (7 * i) for i, x in enumerate(d)) == v


def test_limb_count_bounds():
    assert [igemm.limbs_for(a) for a in (63, 64, 8127, 8128, CLAMP)] == [1, 2, 2, 3, 4]
    assert igemm.limbs_for(4095) == 2  # every weight of a 12-bit model: two limbs


def random_ints(rng, shape, amax):
    """Integers in [-amax, amax] as float64, with both extremes present."""
    x = rng.integers(-amax, amax + 1, shape).astype(np.float64)
    if x.size:
        x.flat[0], x.flat[-1] = amax, -amax
    return x


def exact_product(x, w, m, n):
    """x @ w through matmul_finish with an identity requantisation (no bias, scale 1, no clamp
    reached), which leaves the integer sums as they are."""
    out = np.empty((m, n))
    igemm.matmul_finish(x, w, np.zeros((1, n)), np.zeros(m, np.int64), np.ones(n), 2.0**52, out)
    return out


@needs_int8
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 7, 5), (85, 288, 96), (0, 4, 3), (300, 96, 48)])
@pytest.mark.parametrize("amax", [0, 63, 255, 8127, 8128, CLAMP])
def test_limb_product_equals_integer_product(m, k, n, amax):
    rng = np.random.default_rng(m * 1000 + k + amax)
    x, w = random_ints(rng, (m, k), amax), random_ints(rng, (k, n), 4095)
    wt = igemm.Weights(torch.from_numpy(w))
    assert wt.limbs is not None and wt.n_limbs == 2
    out = exact_product(x, wt, m, n)
    assert np.array_equal(out, x.astype(np.int64) @ w.astype(np.int64))


@needs_int8
@pytest.mark.parametrize("view", ["block", "rows", "step", "transposed"])
def test_limb_product_of_views(view):
    """Inputs the decoders pass as views (the raster decoder: whole-height column blocks of its row
    buffers, taken by the fast path) and any other layout (copied first) give the same integers."""
    rng = np.random.default_rng(5)
    base, w = random_ints(rng, (37, 300), CLAMP), random_ints(rng, (40, 6), 4095)
    x = {
        "block": base[:, 123:163],
        "rows": base[3:30, 10:50],
        "step": base[:, 0:80:2],
        "transposed": np.ascontiguousarray(base[:, :40].T).T,
    }[view]
    assert not x.flags.c_contiguous
    out = exact_product(x, igemm.Weights(torch.from_numpy(w)), *x.shape[:1], 6)
    assert np.array_equal(out, x.astype(np.int64) @ w.astype(np.int64))


def test_float64_fallback_gives_the_same_activations():
    """matmul_finish without limbs (no _int_mm, another device, PXZIP_GEMM=float64) equals the limb
    path, into a strided output view as the raster decoder passes it."""
    rng = np.random.default_rng(11)
    x, w = random_ints(rng, (40, 70), CLAMP), random_ints(rng, (70, 9), 4095)
    bias, mult, tile = random_ints(rng, (3, 9), 5000), np.full(9, 2.0**-12), rng.integers(0, 3, 40)
    outs = []
    for limbs in (True, False):
        wt = igemm.Weights(torch.from_numpy(w))
        if not limbs:
            wt.limbs = None
        regs = np.zeros((40, 20))
        igemm.matmul_finish(x, wt, bias, tile, mult, CLAMP, regs[:, 5:14])
        outs.append(regs)
    ref = np.empty((40, 9))
    kernels.finish(x.astype(np.int64) @ w.astype(np.int64) * 1.0, bias, tile, mult, CLAMP, ref)
    assert np.array_equal(outs[1][:, 5:14], ref) and np.array_equal(outs[0], outs[1])


@needs_int8
def test_limb_product_at_the_export_bound():
    """Every product at its largest (|a| = 2**20, |w| = 4095), all of one sign: the largest sums."""
    k = 512
    x = np.full((4, k), float(CLAMP))
    x[1] = -CLAMP
    w = np.full((k, 3), 4095.0)
    w[:, 1] = -4095
    out = exact_product(x, igemm.Weights(torch.from_numpy(w)), 4, 3)
    assert np.array_equal(out, x.astype(np.int64) @ w.astype(np.int64))
    assert abs(out).max() == k * CLAMP * 4095  # 2**41: far past int32, exact through the limbs


def float64_conv_finish(x, layer, kh, kw, pad, h, bias, mult):
    """The reference: F.pad, the float64 shifted-tap GEMMs (ExactLayer.conv), then finish_nchw."""
    acc = layer.conv(F.pad(torch.from_numpy(x), pad))[:, :, :h]
    out = np.empty(acc.shape)
    kernels.finish_nchw(acc.contiguous().numpy(), bias, mult, CLAMP, out)
    return out


@needs_int8
@pytest.mark.parametrize(
    "b,cin,h,w,cout,kh,kw,pad",
    [
        (1, 4, 5, 7, 6, 2, 3, (1, 1, 1, 0)),  # the down stream's 2x3
        (2, 9, 6, 9, 5, 2, 2, (1, 0, 1, 0)),  # down-right 2x2, two lanes with their own biases
        (1, 4, 5, 6, 3, 1, 1, (1, -1, 0, 0)),  # a negative pad crops (1x1 shifted input)
        (3, 8, 40, 37, 7, 1, 2, (1, 0, 0, 0)),  # many chunks (CHUNK columns each)
    ],
)
def test_conv_finish_equals_float64_path(b, cin, h, w, cout, kh, kw, pad, monkeypatch):
    monkeypatch.setattr(igemm, "CHUNK", 256)  # several chunks, and a short last one
    rng = np.random.default_rng(cin * 10 + kh)
    layer = exact.ExactLayer(
        torch.from_numpy(random_ints(rng, (cout, cin, kh, kw), 4095)),
        torch.zeros(cout),
        torch.zeros(cout, dtype=torch.int64),
    )
    x = random_ints(rng, (b, cin, h, w), CLAMP)
    bias = random_ints(rng, (b, cout), 5000)
    mult = np.array([2.0**-s for s in rng.integers(0, 14, cout)])
    got = igemm.conv_finish(x, layer.gemm, kh, kw, pad, h, bias, mult, CLAMP)
    ref = float64_conv_finish(x, layer, kh, kw, pad, h, bias, mult)
    assert np.array_equal(got, ref)


@needs_int8
@pytest.mark.parametrize("name", ["pxz-rgb-photo", "pxz-gray-cifar"])
def test_shipped_model_head_outputs_equal_float64_path(name, monkeypatch):
    monkeypatch.setattr(igemm, "whole_tiles", lambda: True)  # the encoder's int8 path whatever the thread count
    em = zoo.load_model(name).exact
    c = em.cfg.in_channels
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.integers(0, 256, (2, c, 24, 20)))
    fast = exact.tile_params(em, x)
    saved = {k: layer.gemm.limbs for k, layer in em.layers.items()}
    try:
        for layer in em.layers.values():
            layer.gemm.limbs = None
        ref = exact.tile_params(em, x)
    finally:
        for k, layer in em.layers.items():
            layer.gemm.limbs = saved[k]
    assert torch.equal(fast, ref)


def test_env_forces_float64_path():
    env = dict(os.environ, PXZIP_GEMM="float64")
    code = "from pxzip import igemm; print(igemm.INT8)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@needs_int8
@pytest.mark.parametrize("shape", [(40, 48, 3), (72, 80, 3), (70, 66)])
def test_encoder_paths_write_the_same_bytes(shape, monkeypatch):
    """The encoder's whole-tile convolutions on int8 limbs and on float64 give the same file (and
    the decoder, on limbs, reads it back); shapes: CIFAR model in raster order, photo models in
    wavefront order, RGB and gray."""
    import pxzip

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (shape[0] // 8 + 1, shape[1] // 8 + 1, *shape[2:]))
    img = np.clip(np.kron(base, np.ones((8, 8) + (1,) * (len(shape) - 2)))[: shape[0], : shape[1]], 0, 255)
    img = (img + rng.integers(-6, 7, img.shape)).clip(0, 255).astype(np.uint8)
    monkeypatch.setattr(igemm, "whole_tiles", lambda: True)
    fast = pxzip.compress(img)
    monkeypatch.setattr(igemm, "whole_tiles", lambda: False)
    assert pxzip.compress(img) == fast
    assert np.array_equal(pxzip.decompress(fast), img)
