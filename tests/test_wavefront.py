"""Wavefront order: the decoder's lagged, ring-buffered steps give exactly the parallel pass's integers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import pxzip
from pxzip import codec, container, engines, network, wavefront, zoo
from pxzip.config import ModelConfig
from pxzip.exact import ExactModel, tile_params
from pxzip.model import PixelCNN

# the network's own path: tiny untrained models would lose to the fallback coders (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

NETS = [("pixelcnnpp", 3, 3), ("pixelcnnpp", 1, 3), ("gated", 3, 3), ("gated", 1, 3)]
NETS += [("pixelcnnpp", 3, 5), ("gated", 1, 5)]  # 5x5 kernels: reach 2 per convolution


def exact(arch: str, c: int, k: int, seed: int = 5, **kw) -> ExactModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, in_channels=c, num_filters=8, num_resnet=2, num_logistic_mix=2, kernel_size=k, **kw)
    return ExactModel.from_float(PixelCNN(cfg).eval())


def wave_params(em, x: torch.Tensor, labels=None) -> torch.Tensor:
    """Decoder-side head outputs (n, P, H, W) from a WaveStepper fed the true pixels in wavefront order.

    For gated models the channel c logits are taken after channels < c are set, as the decoder does.
    """
    n, c, h, w = x.shape
    ws = engines.wave_stepper(em, n, h, w, labels=labels)
    out = torch.zeros(n, em.cfg.num_params_out, h, w, dtype=torch.float64)
    gated = em.cfg.arch == "gated"
    for t in range(ws.start, wavefront.num_steps(h, w, ws.lag)):
        rows = ws.advance(t)
        if not len(rows):
            continue
        r = torch.arange(rows.start, rows.stop)
        j = t - ws.lag * r
        for ch in range(c):
            if ch == 0 or gated:
                p = ws.params().view(n, len(r), -1).permute(0, 2, 1)  # (n, P, rows)
                if gated:
                    out[:, ch * 256 : (ch + 1) * 256, r, j] = p[:, ch * 256 : (ch + 1) * 256]
                else:
                    out[:, :, r, j] = p
            ws.set_pixel(ch, x[:, ch, r, j].reshape(-1))
    return out


@pytest.mark.parametrize("arch,c,k", NETS, ids=lambda v: str(v))
@pytest.mark.parametrize("n,h,w", [(2, 9, 13), (1, 1, 1), (3, 5, 30), (1, 23, 4), (2, 1, 17), (1, 12, 1)])
def test_wave_stepper_equals_parallel_pass(arch, c, k, n, h, w):
    em = exact(arch, c, k)
    x = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(h * 100 + w))
    assert torch.equal(wave_params(em, x), tile_params(em, x))


def test_wave_stepper_extreme_pixels_and_labels(cond_models):
    """Saturated images (all 0 / all 255) and per-tile labels of a conditional model."""
    for model in cond_models.values():
        em = model.exact
        x = torch.zeros(4, 3, 7, 11, dtype=torch.int64)
        x[1] = 255
        x[2, :, ::2] = 255
        x[3] = torch.randint(0, 256, (3, 7, 11))
        labels = torch.tensor([0, 3, em.cfg.null_label, 1])
        assert torch.equal(wave_params(em, x, labels), tile_params(em, x, labels))


def test_ensemble_wave_equals_parallel_pass(tmp_path):
    from pxzip.ensemble import ExactEnsemble

    members = [exact("pixelcnnpp", 3, 3, seed=s) for s in (1, 2)]
    ens = ExactEnsemble(members, [3, 1])
    x = torch.randint(0, 256, (2, 3, 6, 9))
    assert torch.equal(wave_params(ens, x), ens.tile_params(x))


@pytest.mark.parametrize("h,w,lag", [(1, 1, 10), (5, 3, 10), (7, 40, 6), (30, 2, 4)])
def test_order_covers_every_position_once_and_respects_context(h, w, lag):
    rows, cols = wavefront.order(h, w, lag)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(i, j) for i in range(h) for j in range(w)]
    t = cols + lag * rows
    assert (np.diff(t) >= 0).all()
    # the steps agree with rows_at (a tile narrower than the lag has steps without a pixel)
    for step in range(wavefront.num_steps(h, w, lag)):
        assert rows[t == step].tolist() == list(wavefront.rows_at(step, h, w, lag))
    assert t[-1] == wavefront.num_steps(h, w, lag) - 1
    assert not len(wavefront.rows_at(-1, h, w, lag))
    assert not len(wavefront.rows_at(wavefront.num_steps(h, w, lag), h, w, lag))


@pytest.mark.parametrize("arch,c,k", NETS[:4] + NETS[4:5], ids=lambda v: str(v))
def test_lag_is_one_more_than_the_reach_to_the_right(arch, c, k):
    """The plan's reach is the vertical stream's: one column of convolution reach per v-stream conv."""
    em = exact(arch, c, k)
    reach = (k // 2) * (1 + em.cfg.num_resnet * (1 if arch == "gated" else 2))
    assert wavefront.lag_for(em.cfg) == reach + 1 == network.receptive_rows(em.cfg) + 1
    # and the reach is real: the pixel at (i-1, j+reach) changes the output at (i, j)
    x = torch.randint(0, 256, (1, c, 3, 2 * reach + 3))
    y = x.clone()
    y[0, 0, 0, 1 + reach] ^= 0x55
    assert not torch.equal(tile_params(em, x)[0, :, 1, 1], tile_params(em, y)[0, :, 1, 1])
    y = x.clone()
    y[0, 0, 0, 2 + reach] ^= 0x55
    assert torch.equal(tile_params(em, x)[0, :, 1, 1], tile_params(em, y)[0, :, 1, 1])


def test_strip_pass_equals_whole_tile(tiny_models, monkeypatch):
    """The encoder's strips (with receptive_rows of context above) give the whole tile's integers."""
    rng = np.random.default_rng(0)
    for key in ("pp_rgb", "gated_gray"):
        model = tiny_models[key]
        px = rng.integers(0, 256, (2, 37, 11, model.cfg.in_channels), dtype=np.uint8)
        whole = codec.unit_params(model, px)
        monkeypatch.setattr(codec, "PASS_POSITIONS", 3 * 11)  # strips of 3 rows, 1 tile per pass
        assert np.array_equal(codec.unit_params(model, px), whole)
        monkeypatch.undo()


@pytest.mark.parametrize("key", ["pp_rgb", "pp_gray", "gated_rgb", "gated_gray"])
@pytest.mark.parametrize("shape,tile", [((70, 45), 16), ((33, 90), 32), ((20, 20), 0), ((1, 70), 0)])
def test_round_trip_and_same_tables_as_raster(tiny_models, key, shape, tile):
    """Wavefront files decode exactly; they code the very same tables as raster order (permuted)."""
    model = tiny_models[key]
    c = model.cfg.in_channels
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, (*shape, c), dtype=np.uint8) if c == 3 else rng.integers(0, 256, shape, dtype=np.uint8)
    tw, tr = [], []
    wave = pxzip.compress(img, model, tile=tile, order="wavefront", trace=tw)
    raster = pxzip.compress(img, model, tile=tile, order="raster", trace=tr)
    assert container.unpack(wave)[0].wavefront and not container.unpack(raster)[0].wavefront
    assert np.array_equal(pxzip.decompress(wave, model), img)
    assert np.array_equal(np.sort(np.concatenate(tw)), np.sort(np.concatenate(tr)))
    assert abs(len(wave) - len(raster)) <= 8  # same ideal length; coder rounding and the header differ


def test_auto_order_by_size(tiny_models):
    model = tiny_models["pp_gray"]
    small = np.zeros((64, 64), np.uint8)
    large = np.zeros((65, 3), np.uint8)
    assert not container.unpack(pxzip.compress(small, model))[0].wavefront
    h = container.unpack(pxzip.compress(large, model))[0]
    assert h.wavefront and h.tile_log2 == 0  # a side up to 256 is one tile
    h = container.unpack(pxzip.compress(np.zeros((300, 5), np.uint8), model))[0]
    assert h.wavefront and h.tile_log2 == codec.DEFAULT_WAVE_TILE_LOG2
    h = container.unpack(pxzip.compress(np.zeros((300, 5), np.uint8), model, order="raster"))[0]
    assert not h.wavefront and h.tile_log2 == codec.DEFAULT_TILE_LOG2
    with pytest.raises(ValueError, match="order must be one of"):
        pxzip.compress(small, model, order="diagonal")


def test_wave_with_label_and_rgba_and_palette(cond_models, tiny_models):
    """Format 4 holds a label too; alpha planes and palettes go through the same order."""
    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    model = cond_models["pixelcnnpp"]
    data = pxzip.compress(img, model, label=2, order="wavefront")
    h = container.unpack(data)[0]
    assert h.wavefront and h.label == 2 and data[2] >> 4 == container.WAVEFRONT_VERSION
    assert np.array_equal(pxzip.decompress(data, model), img)
    rgba = Image.fromarray(np.random.default_rng(2).integers(0, 256, (18, 70, 4), dtype=np.uint8), "RGBA")
    models = [tiny_models["pp_rgb"], tiny_models["gated_gray"]]
    back = pxzip.decompress_image(pxzip.compress(rgba, models, tile=16), models)
    assert np.array_equal(np.asarray(back), np.asarray(rgba))
    pal = rgba.convert("RGB").quantize(7)
    data = pxzip.compress(pal, models, order="wavefront")
    assert np.array_equal(np.asarray(pxzip.decompress_image(data, models)), np.asarray(pal))


@pytest.mark.parametrize("budget", [9, 25, 4096])
def test_many_files_of_both_orders_decode_in_lockstep(tiny_models, cond_models, monkeypatch, budget):
    """Several wavefront files share decoder batches (parts with their own tiles and labels)."""
    model, cond = tiny_models["pp_rgb"], cond_models["pixelcnnpp"]
    rng = np.random.default_rng(3)
    sizes = [(8, 11), (30, 33), (30, 33), (30, 33), (17, 20), (40, 33), (30, 33), (30, 33)]
    imgs = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
    kw = [dict(order="raster"), dict(order="wavefront"), dict(order="raster"), dict(order="wavefront", tile=16)]
    kw += [dict(order="wavefront"), dict(order="wavefront", tile=16), dict(order="wavefront", label=2)]
    kw += [dict(order="wavefront")]
    models = [model] * 6 + [cond, cond]
    datas = [pxzip.compress(im, m, **k) for im, m, k in zip(imgs, models, kw)]
    monkeypatch.setattr(codec, "MAX_WAVE_LANES", budget)  # 9: one file per batch; more: files share steps
    for im, back in zip(imgs, pxzip.decompress_many(datas, [model, cond])):
        assert np.array_equal(im, back)


@pytest.mark.parametrize("table,passes,unit", [(1, 16, 1 << 20), (7, 40, 300), (50, 10**6, 256)])
def test_encoder_batching_does_not_change_the_file(tiny_models, monkeypatch, table, passes, unit):
    """Table batches cut at step boundaries, network strips as the wavefront reaches them, units
    of few tiles: all give a file that decodes (and the same bytes for the same units)."""
    model = tiny_models["gated_rgb"]
    img = np.random.default_rng(6).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    ref = pxzip.compress(img, model, order="wavefront", tile=16)
    monkeypatch.setattr(codec, "TABLE_POSITIONS", table)
    monkeypatch.setattr(codec, "PASS_POSITIONS", passes)
    monkeypatch.setattr(codec, "WAVE_UNIT_PIXELS", unit)
    data = pxzip.compress(img, model, order="wavefront", tile=16)
    assert np.array_equal(pxzip.decompress(data, model), img)
    if unit >= 1 << 20:
        assert data == ref
    monkeypatch.undo()
    one = pxzip.compress(img, model, order="wavefront", tile=0)
    monkeypatch.setattr(codec, "TABLE_POSITIONS", table)
    monkeypatch.setattr(codec, "PASS_POSITIONS", passes)
    assert pxzip.compress(img, model, order="wavefront", tile=0) == one


def test_ensemble_file_in_wavefront_order(tmp_path):
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        cfg = ModelConfig(num_filters=6, num_resnet=1, num_logistic_mix=2)
        zoo.save_model(tmp_path / f"m{seed}.safetensors", PixelCNN(cfg), f"m{seed}")
        members.append(zoo.load_file(tmp_path / f"m{seed}.safetensors"))
    zoo.save_ensemble(tmp_path / "ens.safetensors", members, [1, 2], "ens")
    ens = zoo.load_file(tmp_path / "ens.safetensors")
    img = np.random.default_rng(4).integers(0, 256, (21, 40, 3), dtype=np.uint8)
    data = pxzip.compress(img, ens, order="wavefront", tile=16)
    assert np.array_equal(pxzip.decompress(data, ens), img)


def test_truncated_wave_payload_is_a_clean_error(tiny_models):
    model = tiny_models["pp_rgb"]
    img = np.random.default_rng(5).integers(0, 256, (20, 70, 3), dtype=np.uint8)
    data = pxzip.compress(img, model)
    with pytest.raises((pxzip.FormatError, pxzip.ChecksumError)):
        pxzip.decompress(data[: len(data) // 2], model)


@pytest.mark.parametrize("key", ["pp_rgb", "gated_gray"])
def test_rows_split_across_threads_give_the_same_file(tiny_models, key, monkeypatch):
    """threads.split_rows (the mixture tables) on every call: the same bytes as one thread,
    and the file decodes exactly with and without the split."""
    from pxzip import threads

    model = tiny_models[key]
    c = model.cfg.in_channels
    img = np.random.default_rng(3).integers(0, 256, (40, 37, c)[: 3 if c == 3 else 2], dtype=np.uint8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pxzip.compress(img, model, tile=16, order="wavefront")
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "MIN_ROWS", 1)
        assert pxzip.compress(img, model, tile=16, order="wavefront") == one
        assert np.array_equal(pxzip.decompress(one, model), img)
        monkeypatch.setattr(threads, "MIN_ROWS", 1 << 30)
        assert np.array_equal(pxzip.decompress(one, model), img)
    finally:
        torch.set_num_threads(before)
