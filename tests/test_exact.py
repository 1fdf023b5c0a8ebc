"""Causality of every architecture, and exactness of the integer model in every evaluation order."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pxzip import engines, tables
from pxzip.config import ModelConfig
from pxzip.exact import ExactModel, tile_params
from pxzip.model import PixelCNN

ARCHS = [("pixelcnnpp", 3), ("pixelcnnpp", 1), ("gated", 3), ("gated", 1)]


def small(arch: str, c: int, **kw) -> PixelCNN:
    torch.manual_seed(7)
    cfg = ModelConfig(arch=arch, in_channels=c, num_filters=kw.pop("f", 12), num_resnet=2, num_logistic_mix=3, **kw)
    return PixelCNN(cfg).double().eval()


@pytest.mark.parametrize("arch,c", ARCHS)
def test_causality_by_perturbation(arch, c):
    """No output depends on its own or a later (sub)pixel, and the context has no blind spot."""
    m = small(arch, c)
    h, w = 7, 7
    x = torch.randint(0, 256, (1, c, h, w))
    base = m(x)[0]  # (P, H, W)
    p = base.shape[0]
    seen = torch.zeros(h, w, dtype=torch.bool)  # which earlier pixels influence the centre
    for i in range(h):
        for j in range(w):
            for ch in range(c):
                y = x.clone()
                y[0, ch, i, j] = (y[0, ch, i, j] + 101) % 256
                changed = (m(y)[0] - base).abs() > 0
                flat = changed.reshape(p, -1)
                assert not flat[:, : i * w + j].any(), f"output before ({i},{j}) depends on it"
                at = changed[:, i, j]
                if arch == "gated":  # logits of channels <= ch must not see channel ch
                    assert not at.view(c, 256)[: ch + 1].any()
                else:  # PixelCNN++ sees nothing of the current pixel (channels are coupled in the head)
                    assert not at.any()
                if changed[:, 3, 3].any():
                    seen[i, j] = True
    # every pixel in the rows above within reach, and to the left, influences the centre (3, 3)
    assert seen[:3, :].all() and seen[3, :3].all()


@pytest.mark.parametrize("arch,c", ARCHS)
def test_causality_by_gradient(arch, c):
    m = small(arch, c).float()
    x = torch.randint(0, 256, (1, c, 6, 6)).float().requires_grad_(True)
    # gradients flow through a float copy of the input (the model casts pixels itself)
    from pxzip import network

    inp = network.pixels_to_input(x).float() / 255
    from pxzip.model import FloatOps

    ops = FloatOps(m, inp)
    network.v_stream(m.cfg, ops)
    out = network.h_stream(m.cfg, ops)
    out[0, :, 2, 3].sum().backward()
    g = x.grad[0].abs().sum(0)
    assert g[2, 4:].sum() == 0 and g[3:].sum() == 0
    assert g[2, 3] == 0 or arch == "gated"


@pytest.fixture(scope="module", params=ARCHS, ids=lambda a: f"{a[0]}-{a[1]}")
def exact_model(request):
    arch, c = request.param
    return ExactModel.from_float(small(arch, c).float())


def test_integer_model_close_to_float(exact_model):
    em = exact_model
    m = small(em.cfg.arch, em.cfg.in_channels)
    x = torch.randint(0, 256, (2, em.cfg.in_channels, 6, 5))
    with torch.no_grad():
        diff = (m(x) - tile_params(em, x) / 2**em.cfg.act_bits).abs()
    # means of the mixture head are in "u" units (x255): compare the others only
    if em.cfg.arch == "pixelcnnpp":
        k, c = em.cfg.num_logistic_mix, em.cfg.in_channels
        diff = torch.cat([diff[:, :k], diff[:, k + c * k :]], 1)
    assert float(diff.max()) < 0.05


def test_batch_size_does_not_change_values(exact_model):
    x = torch.randint(0, 256, (5, exact_model.cfg.in_channels, 6, 7))
    whole = tile_params(exact_model, x)
    for i in range(5):
        assert torch.equal(tile_params(exact_model, x[i : i + 1])[0], whole[i])
    assert torch.equal(tile_params(exact_model, x[1:4]), whole[1:4])


def test_thread_count_does_not_change_values(exact_model):
    x = torch.randint(0, 256, (3, exact_model.cfg.in_channels, 9, 8))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tile_params(exact_model, x)
        torch.set_num_threads(2)
        two = tile_params(exact_model, x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def _decoder_tables(em: ExactModel, pixels: np.ndarray) -> np.ndarray:
    """Tables as the decoder builds them: cached stepper, one position at a time. pixels (B,H,W,C)."""
    b, h, w, c = pixels.shape
    st = engines.stepper(em, b, h, w)
    out = np.zeros((b, h, w, c, 256), np.int64)
    for i in range(h):
        st.start_row(i)
        for j in range(w):
            steps = tables.PixelSteps(em.cfg, em.luts, partial(st.params_int, j))
            for ch in range(c):
                out[:, i, j, ch] = steps.freqs(ch)
                v = pixels[:, i, j, ch].astype(np.int64)
                st.set_pixel(j, ch, torch.from_numpy(v))
                steps.observe(ch, v)
    return out


def _encoder_tables(em: ExactModel, pixels: np.ndarray) -> np.ndarray:
    b, h, w, c = pixels.shape
    prm = tile_params(em, torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).to(torch.int64).numpy()
    prm = prm.transpose(0, 2, 3, 1).reshape(b * h * w, -1)
    fr = tables.head_freqs_all(prm, pixels.reshape(-1, c), em.cfg, em.luts)
    return fr.reshape(b, h, w, c, 256)


def test_parallel_pass_equals_cached_decoder(exact_model):
    """The encoder's one parallel pass and the decoder's cached steps give identical tables."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (3, 5, 6, exact_model.cfg.in_channels), dtype=np.uint8)
    enc = _encoder_tables(exact_model, px)
    dec = _decoder_tables(exact_model, px)
    assert np.array_equal(enc, dec)
    assert (enc.sum(-1) == 1 << tables.PRECISION).all() and (enc >= 1).all()
    # and batch 1 in the decoder equals batch 3
    assert np.array_equal(_decoder_tables(exact_model, px[1:2])[0], dec[1])


def test_luts_are_monotone_and_bounded():
    from pxzip.exact import make_luts

    luts = make_luts(10)
    for k in ("tanh", "sig", "cdf", "exp"):
        assert (np.diff(luts[k]) >= 0).all(), k
    assert luts["cdf"][0] >= 0 and luts["cdf"][-1] <= 1 << 24
    assert luts["exp"][-1] == 1 << 24


def test_to_freqs_properties():
    rng = np.random.default_rng(1)
    mass = np.concatenate(
        [
            rng.integers(0, 2**40, (50, 256)),  # large masses: exercises the overflow guard
            np.zeros((1, 256), np.int64),  # all zero -> uniform
            np.eye(256, dtype=np.int64)[:3] * (2**45),  # one-hot
        ]
    )
    f = tables.to_freqs(mass)
    assert (f >= 1).all() and (f.sum(1) == 1 << tables.PRECISION).all()
    assert (f[50] == (1 << tables.PRECISION) // 256).all()


def test_export_rejects_weights_that_could_overflow():
    m = small("pixelcnnpp", 1, f=8).float()
    em = ExactModel.from_float(m)
    em.layers["v_in"].w[0, 0, 0, 0] = 2.0**45
    with pytest.raises(ValueError, match="2\\*\\*52"):
        em.check_bounds()


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda t: t["lut.cdf"].__setitem__(len(t["lut.cdf"]) // 2, 5), "cdf is not non-decreasing"),
        (lambda t: t["lut.cdf"].__setitem__(-1, (1 << 24) + 1), "cdf leaves"),
        (lambda t: t["lut.inv_scale"].__setitem__(3, -1), "inv_scale leaves"),
        (lambda t: t["lut.exp"].__setitem__(0, -2), "exp leaves"),
        (lambda t: t["lut.tanh"].__setitem__(0, -(1 << 12)), "tanh leaves"),
        (lambda t: t["lut.elu"].__setitem__(-1, 1), "elu leaves|elu is not 0"),
        (lambda t: t["exact.v_in.shift"].__setitem__(0, 99), "scale exponents"),
    ],
)
def test_a_model_file_with_damaged_tables_is_refused(damage, match):
    """A model file is data: tables that would give negative symbol frequencies (which the coder
    accepts, writing a file that cannot be decoded) or inexact scales are refused at load."""
    em = ExactModel.from_float(small("pixelcnnpp", 3, f=8).float())
    state = {k: v.clone() for k, v in em.state().items()}
    ExactModel.from_state(em.cfg, state)  # intact: loads
    damage(state)
    with pytest.raises(ValueError, match=match):
        ExactModel.from_state(em.cfg, state)


def test_gated_weights_must_respect_the_causal_mask():
    """The Gated PixelCNN is causal through zero weights at the current pixel's tap: a model file
    whose red outputs read the current pixel's blue channel would make the encoder's tables differ
    from the decoder's, so it is refused."""
    from pxzip import network

    em = ExactModel.from_float(small("gated", 3, f=6).float())
    spec = em.specs["h_in"]
    mask = network.conv_mask(spec, em.cfg)
    co, ci = [int(v) for v in (mask[:, :, spec.top, spec.left] == 0).nonzero()[0]]
    em.layers["h_in"].w[co, ci, spec.top, spec.left] = 5.0
    with pytest.raises(ValueError, match="h_in: weights break the causal mask"):
        em.check_bounds()


def test_model_file_round_trip(tmp_path, tiny_models):
    from pxzip import zoo

    m = tiny_models["pp_rgb"]
    again = zoo.load_file(m.path)
    assert again.id == m.id and again.cfg == m.cfg
    fm = m.float_model()
    assert fm.cfg == m.cfg
    # a tampered file is refused when its expected hash is known
    bad = tmp_path / "bad.safetensors"
    raw = bytearray(m.path.read_bytes())
    raw[-1] ^= 1
    bad.write_bytes(bytes(raw))
    with pytest.raises(zoo.ModelFileError):
        zoo.load_file(bad, expected_sha256=m.sha256)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(zoo.ModelFileError):
        zoo.load_file(tmp_path / "junk.safetensors")
