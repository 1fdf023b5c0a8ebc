"""The compiled kernels (pxzip/kernels.py) and engines (raster.Stepper, wavefront.WaveStepper) give
exactly the integers of their numpy / torch references (tables.NumpyMixture, exact.TorchStepper,
wavefront.TorchWaveStepper), including at the ends of every range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pxzip import engines, kernels, raster, tables, wavefront
from pxzip.config import ModelConfig
from pxzip.exact import CLAMP, ExactModel, TorchStepper, make_luts
from pxzip.model import PixelCNN

LUTS = make_luts(10)


def head_params(rng, n: int, cfg: ModelConfig, spread: int) -> np.ndarray:
    """Integer head outputs (n, P): mostly moderate, some at the clamps (|v| = 2**20)."""
    p = rng.integers(-spread, spread, (n, cfg.num_params_out))
    edge = rng.random(p.shape) < 0.02
    p[edge] = rng.choice([-CLAMP, CLAMP], edge.sum())
    return p


@pytest.mark.parametrize("c,k,prior", [(3, 5, None), (1, 4, None), (3, 6, [3, 1]), (1, 2, [1, 255])])
@pytest.mark.parametrize("spread", [3000, CLAMP])
def test_mixture_equals_numpy_reference(c, k, prior, spread):
    cfg = ModelConfig(in_channels=c, num_logistic_mix=k)
    rng = np.random.default_rng(c * 100 + k + spread)
    params = head_params(rng, 700, cfg, spread)
    pixels = rng.integers(0, 256, (700, c))
    pixels[:50] = 0
    pixels[50:100] = 255
    pr = None if prior is None else np.array(prior)
    ref, fast = tables.NumpyMixture(params, cfg, LUTS, pr), tables.Mixture(params, cfg, LUTS, pr)
    assert np.array_equal(ref.weights, fast.weights)
    for ch in range(c):
        a, b = ref.freqs(ch), fast.freqs(ch)
        assert np.array_equal(a, b)
        assert (b >= 1).all() and (b.sum(1) == 1 << tables.PRECISION).all()
        ref.observe(ch, pixels[:, ch])
        fast.observe(ch, pixels[:, ch])
        assert np.array_equal(ref.weights, fast.weights)


def test_softmax_and_to_freqs_equal_numpy_reference():
    rng = np.random.default_rng(3)
    logits = rng.integers(-40000, 40000, (300, 256))
    logits[0] = 0  # uniform
    logits[1, 7] = CLAMP  # one symbol takes (nearly) everything
    assert np.array_equal(tables.softmax_freqs(logits, LUTS), tables.softmax_freqs_numpy(logits, LUTS))
    mass = rng.integers(0, 2**41, (200, 256))
    mass[0] = 0  # all-zero row: uniform
    mass[1] = 0
    mass[1, 3] = 2**48  # a total far above 2**38: shifted down
    out = np.empty_like(mass)
    kernels.to_freqs(mass.copy(), out)
    assert np.array_equal(out, tables.to_freqs(mass))


def exact(arch: str, c: int, k: int, classes: int = 0, seed: int = 3) -> ExactModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, in_channels=c, num_filters=8, num_resnet=2, num_logistic_mix=2, kernel_size=k,
                      num_classes=classes)  # fmt: skip
    model = PixelCNN(cfg).eval()
    with torch.no_grad():  # large weights: activations reach the clamps and the tables' flat ends
        for p in model.parameters():
            p.mul_(4)
    return ExactModel.from_float(model)


NETS = [
    ("pixelcnnpp", 3, 3, 0),
    ("pixelcnnpp", 1, 5, 0),
    ("gated", 3, 3, 0),
    ("gated", 1, 3, 4),
    ("pixelcnnpp", 3, 3, 5),
]


def _labels(em, b):
    return torch.arange(b) % (em.cfg.num_classes + 1) if em.cfg.num_classes else None


@pytest.mark.parametrize("b", [3, raster.GEMM_LANES + 1])  # per-lane products; one GEMM per conv
@pytest.mark.parametrize("arch,c,k,classes", NETS, ids=str)
def test_compiled_raster_stepper_equals_torch_stepper(arch, c, k, classes, b):
    em = exact(arch, c, k, classes)
    h, w = 6, 7
    x = torch.randint(0, 256, (b, c, h, w), generator=torch.Generator().manual_seed(1))
    x[0] = 255
    labels = _labels(em, b)
    fast, ref = raster.Stepper(em, b, h, w, labels), TorchStepper(em, b, h, w, labels=labels)
    for i in range(h):
        fast.start_row(i)
        ref.start_row(i)
        for j in range(w):
            for ch in range(c):
                assert np.array_equal(fast.params_int(j), ref.params_int(j))
                fast.set_pixel(j, ch, x[:, ch, i, j].numpy())
                ref.set_pixel(j, ch, x[:, ch, i, j])


@pytest.mark.parametrize("arch,c,k,classes", NETS, ids=str)
def test_compiled_wave_stepper_equals_torch_wave_stepper(arch, c, k, classes):
    em = exact(arch, c, k, classes)
    n, h, w = 2, 9, 12
    x = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(2))
    labels = _labels(em, n)
    fast, ref = wavefront.WaveStepper(em, n, h, w, labels), wavefront.TorchWaveStepper(em, n, h, w, labels=labels)
    for t in range(fast.start, wavefront.num_steps(h, w, fast.lag)):
        rows = fast.advance(t)
        assert ref.advance(t) == rows
        if not len(rows):
            continue
        r = torch.arange(rows.start, rows.stop)
        for ch in range(c):
            assert np.array_equal(fast.params_int(), ref.params_int())
            v = x[:, ch, r, t - fast.lag * r].reshape(-1)
            fast.set_pixel(ch, v.numpy())
            ref.set_pixel(ch, v)


def test_stepper_choice_follows_the_device():
    em = exact("pixelcnnpp", 3, 3)
    assert isinstance(engines.stepper(em, 1, 2, 2), raster.Stepper)
    assert isinstance(engines.wave_stepper(em, 1, 2, 2), wavefront.WaveStepper)
    assert isinstance(engines.stepper(em, 1, 2, 2, device="meta"), TorchStepper)


def test_unsaturated_edges_are_exact_bounds():
    """kernels._unsaturated: below lo the CDF index is < 0, from hi on >= the table's end, and the
    edges next to the bounds are inside (so only saturated edges skip the lookup)."""
    cdf = LUTS["cdf"]
    half, top, s = (len(cdf) - 1) // 2, len(cdf) - 1, 1024
    rng = np.random.default_rng(0)
    for _ in range(3000):
        m = int(rng.integers(-512 * s, 512 * s))
        inv = int(rng.choice([0, 1, int(rng.integers(1, 2**27)), 2**27]))
        lo, hi = kernels._unsaturated(cdf, s, m, inv)
        e = np.arange(255)
        idx = (((2 * e - 254) * s - m) * inv + (1 << 23) + (half << 24)) >> 24
        assert (idx[:lo] < 0).all() and (idx[hi:] >= top).all()
        assert lo == 255 or idx[lo] >= 0 or lo >= hi
        assert hi == 0 or hi <= lo or idx[hi - 1] < top
