"""Head offsets (format 5, pxzip/adapt.py): the fit, the header section, and exact round trips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pxzip
from pxzip import adapt, codec, container, tables, zoo
from pxzip.cli import cli
from pxzip.errors import FormatError

# the network's own path: tiny untrained models would lose to the fallback coders (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")


@pytest.fixture
def small_fit(monkeypatch):
    """Fit units of any size, so that small test images exercise format 5."""
    monkeypatch.setattr(adapt, "MIN_FIT_PIXELS", 1)


def _photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB image with a colour cast and mild noise: offsets have something to correct."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 90 + 40 * np.sin(yy / 5.0) + 30 * np.cos(xx / 7.0)
    img = np.stack([base + 60, base, base * 0.5], -1) + rng.normal(0, 2, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _bits(model, px: np.ndarray, offsets) -> float:
    """Ideal code length of px (whole image, one tile) under the exact tables plus offsets."""
    prm = codec.unit_params(model, px[None])[0]  # (P, H, W)
    flat = prm.reshape(prm.shape[0], -1).T
    pix = px.reshape(-1, px.shape[2])
    fr = tables.head_freqs_all(adapt.apply(flat, offsets), pix, model.exact.cfg, model.exact.luts, model.exact.prior)
    f = np.take_along_axis(fr, pix[:, :, None].astype(np.int64), 2)
    return float(np.sum(tables.PRECISION - np.log2(f.astype(np.float64))))


def test_apply_scales_offsets_and_clamps():
    params = np.array([[0, 5, -(2**20)], [2**20 - 1, 0, 7]], np.int64)
    out = adapt.apply(params, np.array([0, 0, 0, 3, -5, -1]))  # offsets only
    assert out.tolist() == [[3, 0, -(2**20)], [2**20, -5, 6]]
    half = 2**15  # a scale of +1/2
    out = adapt.apply(params, np.array([half, half, -half, 0, 1, 0]))
    # p + round(p / 2) (halves up, also for negatives: floor(p / 2 + 1/2)), then the offset
    assert out.tolist() == [[0, 5 + 3 + 1, -(2**20) + 2**19], [2**20, 1, 7 - 3]]
    rows = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2]])  # one record per row
    assert adapt.apply(params[:, :3] * 0, rows).tolist() == [[1, 1, 1], [2, 2, 2]]
    assert adapt.apply(params, None) is params


def test_cost_bits_is_the_record_size():
    q = np.array([0, -1, 63, -64, 64, 8191, -8193, 2**20])
    assert adapt.cost_bits(q) == 8 * len(container.offset_record(tuple(int(v) for v in q)))
    assert adapt.cost_bits(q) == 8 * (1 + 1 + 1 + 1 + 1 + 2 + 2 + 3 + 4)  # count, then zigzag varints


def test_sample_is_fixed_and_spread():
    assert adapt.sample(10).tolist() == list(range(10))
    a, b = adapt.sample(10**6), adapt.sample(10**6)
    assert len(a) == adapt.FIT_POSITIONS and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    cols = a % 768  # a 768-wide image: every column parity is sampled about equally
    assert abs(np.mean(cols % 2) - 0.5) < 0.02


def test_fit_finds_a_planted_shift_and_it_saves_real_bits(tiny_models):
    """Shift the exact head outputs' means by a known amount; the fit must take its cost back, and
    the exact tables must code the image in fewer bits with the fitted record than without."""
    m = tiny_models["pp_rgb"]
    cfg = m.exact.cfg
    px = _photo_like(24, 32)
    prm = codec.unit_params(m, px[None])[0]
    flat = prm.reshape(prm.shape[0], -1).T.astype(np.int64)
    pix = px.reshape(-1, 3)
    f0 = adapt.fit(flat, pix, cfg, pix.size)
    assert f0.worth_it and f0.bits_after < f0.bits_before
    good = adapt.apply(flat, f0.record)  # the random model made sensible: a baseline worth shifting
    k, c = cfg.num_logistic_mix, cfg.in_channels
    planted = np.zeros(cfg.num_params_out, np.int64)
    planted[k : k + c * k] = -40 * 2**cfg.act_bits  # every mean 40 "u" units (20 pixel levels) too low
    f1 = adapt.fit(good + planted, pix, cfg, pix.size)
    # the planted shift costs a lot, and the fit takes (almost) all of it back
    assert f1.bits_before > f0.bits_after + 0.5 * pix.size
    assert f1.bits_before - f1.bits_after > 0.95 * (f1.bits_before - f0.bits_after)
    assert len(f1.record) == 2 * cfg.num_params_out
    # real exact-table bits, not the float estimate
    assert _bits(m, px, f0.record) < _bits(m, px, None) - adapt.cost_bits(f0.record)


def test_fit_for_an_ensemble(ens_model):
    px = _photo_like(20, 24, seed=3)
    prm = codec.unit_params(ens_model, px[None])[0]
    flat = prm.reshape(prm.shape[0], -1).T
    f = adapt.fit(flat, px.reshape(-1, 3), ens_model.exact.cfg, px.size, ens_model.exact.prior)
    assert f.record.shape == (2 * ens_model.exact.cfg.num_params_out,)
    assert _bits(ens_model, px, f.record) < _bits(ens_model, px, None)


@pytest.fixture(scope="module")
def ens_model(tiny_models, tmp_path_factory):
    import torch

    from pxzip.model import PixelCNN

    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("ens") / "b.safetensors"
    a = tiny_models["pp_rgb"]
    zoo.save_model(path, PixelCNN(a.cfg), "tiny-pp-rgb-b")
    out = path.parent / "ens.safetensors"
    zoo.save_ensemble(out, [a, zoo.load_file(path)], [2, 1], "tiny-ens")
    return zoo.load_file(out)


@pytest.mark.parametrize("order,tile", [("wavefront", None), ("wavefront", 16), ("raster", None), ("raster", 16)])
def test_round_trip_with_offsets(tiny_models, small_fit, order, tile):
    px = _photo_like(40, 70)
    models = [tiny_models["pp_rgb"]]
    data = pxzip.compress(px, models, tile=tile, order=order)
    h, _ = container.unpack(data)
    assert data[2] >> 4 == 5 and h.offsets and h.wavefront == (order == "wavefront")
    assert len(h.offsets) == len(codec.units_for(40, 70, h.tile_log2, 1, h.wavefront))
    assert np.array_equal(pxzip.decompress(data, models), px)
    plain = pxzip.compress(px, models, tile=tile, order=order, adapt=False)
    assert plain[2] >> 4 in (1, 4) and not container.unpack(plain)[0].offsets
    assert len(data) < len(plain)


def test_trace_is_the_tables_of_params_and_record(tiny_models, small_fit):
    """The encoder codes with the tables of params + the stored offsets (one tile: the whole image)."""
    px = _photo_like(30, 66)
    m = tiny_models["pp_rgb"]
    trace: list = []
    data = pxzip.compress(px, [m], trace=trace)
    h, payload = container.unpack(data)
    assert h.tile_log2 == 0 and len(h.offsets) == 1 and h.offsets[0]
    with_offsets = _bits(m, px, np.array(h.offsets[0]))
    assert codec.ideal_bits(trace) == pytest.approx(with_offsets, rel=1e-9)
    assert with_offsets < _bits(m, px, None)
    assert abs(8 * len(payload) - with_offsets) < 64


def test_rgba_planes_and_lockstep_files_with_different_offsets(tiny_models, small_fit):
    """RGBA: two planes whose models have different head sizes; and several files (with and without
    offsets) decoded in one lockstep batch, each lane with its own file's offsets."""
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    rgba = np.concatenate([_photo_like(20, 70, 1), np.full((20, 70, 1), 200, np.uint8)], -1)
    rgba[..., 3] = rgba[..., 3] - (np.arange(70) % 3).astype(np.uint8)
    imgs = [rgba, np.ascontiguousarray(rgba[::-1]), rgba[:, ::-1].copy()]
    datas = [pxzip.compress(Image.fromarray(im, "RGBA"), models) for im in imgs]
    datas.append(pxzip.compress(Image.fromarray(imgs[0], "RGBA"), models, adapt=False))
    recs = container.unpack(datas[0])[0].offsets
    assert [len(r) for r in recs] == [2 * models[0].cfg.num_params_out, 2 * models[1].cfg.num_params_out]  # RGB, A
    assert len({container.unpack(d)[0].offsets for d in datas}) == 4  # all different
    outs = codec.decompress_many(datas, models)
    for out, im in zip(outs, imgs + imgs[:1]):
        assert np.array_equal(out, im)


def test_strip_sampling_gives_the_same_file(tiny_models, small_fit, monkeypatch):
    """A unit too large to keep whole is sampled strip by strip: the fit sees the same integers,
    so the offsets and the bytes are the same."""
    seen = []
    real_fit = adapt.fit
    monkeypatch.setattr(adapt, "fit", lambda prm, px, *a: seen.append((prm.copy(), px.copy())) or real_fit(prm, px, *a))
    px = _photo_like(48, 70, 4)
    kept = pxzip.compress(px, [tiny_models["pp_rgb"]])
    assert container.unpack(kept)[0].offsets
    monkeypatch.setattr(codec, "KEEP_PARAMS", 0)
    monkeypatch.setattr(codec, "PASS_POSITIONS", 16 * 70)  # strips of 16 rows
    assert pxzip.compress(px, [tiny_models["pp_rgb"]]) == kept
    assert len(seen) == 2 and all(np.array_equal(a, b) for a, b in zip(seen[0], seen[1]))


def test_ensemble_round_trip_with_offsets(ens_model, small_fit):
    px = _photo_like(30, 70, 6)
    data = pxzip.compress(px, ens_model)
    (rec,) = container.unpack(data)[0].offsets
    assert len(rec) == 2 * ens_model.exact.cfg.num_params_out == 2 * 40  # 2 members x 10 K (K = 2)
    assert np.array_equal(pxzip.decompress(data, ens_model), px)


@pytest.mark.parametrize("order", ["raster", "wavefront"])
def test_lockstep_labels_and_offsets(cond_models, small_fit, order):
    """Conditional model, files with different labels and offsets (one without) in one batch."""
    m = cond_models["pixelcnnpp"]
    imgs = [_photo_like(20, 66, s) for s in range(3)]
    datas = [pxzip.compress(im, m, label=lab, order=order) for im, lab in zip(imgs, [0, 3, None])]
    datas.append(pxzip.compress(imgs[0], m, label=1, order=order, adapt=False))
    heads = [container.unpack(d)[0] for d in datas]
    assert [bool(h.offsets) for h in heads] == [True, True, True, False]
    assert [h.label for h in heads] == [0, 3, None, 1]
    for out, im in zip(codec.decompress_many(datas, m), imgs + imgs[:1]):
        assert np.array_equal(out, im)


def test_compress_under_inference_mode(tiny_models, small_fit):
    import torch

    px = _photo_like(20, 70)
    with torch.inference_mode():
        data = pxzip.compress(px, [tiny_models["pp_rgb"]])
    assert container.unpack(data)[0].offsets
    assert np.array_equal(pxzip.decompress(data, [tiny_models["pp_rgb"]]), px)


def test_a_failed_fit_codes_without_offsets(tiny_models, small_fit, monkeypatch):
    def singular(*a):
        raise torch.linalg.LinAlgError("singular")

    import torch

    monkeypatch.setattr(adapt, "fit", singular)
    data = pxzip.compress(_photo_like(20, 70), [tiny_models["pp_rgb"]])
    assert data[2] >> 4 == 4


def test_unit_count_matches_units_for():
    for h, w in [(1, 1), (16, 16), (17, 33), (40, 70), (300, 513), (1024, 1030), (5000, 70)]:
        for log2 in (0, 4, 6, 8):
            if log2 == 0 and max(h, w) > 4096:
                continue
            for planes, wave in [(1, False), (2, True), (1, True)]:
                expected = len(codec.units_for(h, w, log2, planes, wave))
                assert container.unit_count(h, w, log2, planes, wave) == expected, (h, w, log2, planes, wave)


def test_constants_agree():
    from pxzip import exact, planes

    assert container.MAX_OFFSET == exact.CLAMP
    assert container.PLANES == {m: len(planes.plane_kinds(m)) for m in container.MODE_CODES}
    assert (codec.MAX_LANES, codec.WAVE_UNIT_PIXELS) == (container.UNIT_TILES, container.WAVE_UNIT_PIXELS)


def test_heads_too_large_for_a_record_are_not_fitted():
    from pxzip.config import ModelConfig

    assert adapt.fittable(ModelConfig(num_logistic_mix=204))  # P = 2040: a record of 4080 integers
    assert not adapt.fittable(ModelConfig(num_logistic_mix=205))  # P = 2050: 4100 > MAX_OFFSET_RECORD


def test_small_units_and_softmax_heads_are_not_fitted(tiny_models):
    px = _photo_like(30, 70)
    assert 30 * 70 < adapt.MIN_FIT_PIXELS
    assert container.unpack(pxzip.compress(px, [tiny_models["pp_rgb"]]))[0].offsets == ()
    assert not adapt.fittable(tiny_models["gated_rgb"].cfg) and adapt.fittable(tiny_models["pp_rgb"].cfg)


def test_offsets_that_do_not_pay_are_dropped(tiny_models, small_fit, monkeypatch):
    monkeypatch.setattr(adapt, "cost_bits", lambda q: 10**12)
    data = pxzip.compress(_photo_like(30, 70), [tiny_models["pp_rgb"]])
    assert data[2] >> 4 == 4 and container.unpack(data)[0].offsets == ()


# -- the header section ---------------------------------------------------------------------------


def _header(**kw) -> container.Header:
    base = dict(mode="RGB", width=70, height=40, tile_log2=0, model_ids=(b"ab",), crc32=5, wavefront=True)
    return container.Header(**(base | kw))


def test_header_round_trip_and_version():
    h = _header(tile_log2=4, offsets=((1, -2, 0, 2**20), (), (), ()))  # 16x16 tiles: 4 units (shapes)
    data = container.pack(h, b"xyz")
    assert data[2] >> 4 == 5 and data[3] & container.FLAG_OFFSETS
    assert container.unpack(data) == (h, b"xyz")
    assert container.fields(data)["offsets"] == container.offsets_section(h.offsets)
    raster = _header(offsets=((3,),), wavefront=False)
    assert container.unpack(container.pack(raster, b""))[0] == raster
    assert container.version_of(_header()) == 4


@pytest.mark.parametrize("offsets", [((0, 0),), ((),), ((2**20 + 1,),)])
def test_pack_refuses_non_canonical_offsets(offsets):
    with pytest.raises(ValueError):
        container.pack(_header(offsets=offsets), b"")


def _with_section(section: bytes) -> bytes:
    """A valid format-5 file whose offsets section is replaced by `section` (checksum not fixed)."""
    f = container.fields(container.pack(_header(offsets=((1,),)), b""))
    f["offsets"] = section
    return container.join(f)


@pytest.mark.parametrize(
    "section,match",
    [
        (container.varint(0), "head offsets for 0 units, the image has 1"),
        (container.varint(2) + container.offset_record((1,)) + container.offset_record(()), "for 2 units"),
        (container.varint(1) + container.offset_record(()), "without offsets"),
        (container.varint(1) + container.varint(2) + b"\x00\x00", "record of zeros"),
        (container.varint(1) + container.varint(1) + container.varint(2 * 2**20 + 2), "out of range"),
        (container.varint(1) + container.varint(4097), "head offsets in one unit"),
        (container.varint(10**6), "for 1000000 units"),
        (container.varint(1) + container.varint(3) + b"\x02", "truncated"),
    ],
)
def test_unpack_refuses_bad_sections(section, match):
    with pytest.raises(FormatError, match=match):
        container.unpack(_with_section(section))


def test_offsets_flag_in_an_older_version_is_refused():
    data = bytearray(container.pack(_header(offsets=((1,),)), b""))  # 70x40, one tile, one plane: one unit
    data[2] = (4 << 4) | (data[2] & 0x0F)
    with pytest.raises(FormatError, match="reserved flag"):
        container.unpack(bytes(data))


def _reseal(data: bytes, pixels: np.ndarray, **changes) -> bytes:
    """The file with header fields changed and its checksum recomputed (a well-formed lie)."""
    h, payload = container.unpack(data)
    h = dataclasses.replace(h, **changes)
    h = dataclasses.replace(h, crc32=container.checksum(h, container.pixel_crc(pixels)))
    return container.pack(h, payload)


def test_decoder_checks_offsets_against_units_and_models(tiny_models, small_fit):
    px = _photo_like(40, 70)
    models = [tiny_models["pp_rgb"]]
    data = pxzip.compress(px, models, tile=16)
    recs = container.unpack(data)[0].offsets
    with pytest.raises(FormatError, match="head offsets for 1 units"):
        pxzip.decompress(_reseal(data, px, offsets=recs[:1]), models)
    bad = (recs[0][:-1] or (1,),) + recs[1:]
    with pytest.raises(FormatError, match="head outputs"):
        pxzip.decompress(_reseal(data, px, offsets=bad), models)

    # other offsets under a valid checksum: the payload decodes to other pixels, the CRC catches it
    def shift(r):  # offsets moved by 500 towards 0 and beyond (never past the +-2**20 bound)
        half = len(r) // 2
        return r[:half] + tuple(q - 500 if q > 0 else q + 500 for q in r[half:])

    other = tuple(shift(r) if r else r for r in recs)
    with pytest.raises(pxzip.PxzError):
        pxzip.decompress(_reseal(data, px, offsets=other), models)


def test_cli_flags_and_info(tiny_models, small_fit, tmp_path):
    Image.fromarray(_photo_like(40, 70)).save(tmp_path / "a.png")
    model = str(tiny_models["dir"] / "tiny-pp-rgb.safetensors")
    r = CliRunner()
    res = r.invoke(cli, ["compress", str(tmp_path / "a.png"), "-m", model, "-o", str(tmp_path / "a.pxz")])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["compress", str(tmp_path / "a.png"), "-m", model, "--no-adapt", "-o", str(tmp_path / "b.pxz")])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["info", str(tmp_path / "a.pxz"), str(tmp_path / "b.pxz")])
    assert res.exit_code == 0, res.output
    a, b = res.output.strip().splitlines()
    assert "pxz format 5" in a and "head offsets in 1 of 1 units" in a and "order wavefront" in a
    assert "pxz format 4" in b and "head offsets" not in b
    res = r.invoke(cli, ["decompress", str(tmp_path / "a.pxz"), "-m", model, "-o", str(tmp_path / "a2.png")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a2.png")), _photo_like(40, 70))


def test_pil_plugin_adapt_option(tiny_models, small_fit, tmp_path):
    img = Image.fromarray(_photo_like(40, 70))
    img.save(tmp_path / "a.pxz", model=[tiny_models["pp_rgb"]])
    img.save(tmp_path / "b.pxz", model=[tiny_models["pp_rgb"]], adapt=False)
    assert (tmp_path / "a.pxz").read_bytes()[2] >> 4 == 5
    assert (tmp_path / "b.pxz").read_bytes()[2] >> 4 == 4


def test_concurrent_compress_in_threads_is_safe(tiny_models, small_fit):
    """compress calls in threads (each fitting records on one thread) give the bytes of a lone call,
    and the process's torch thread count is what it was."""
    import threading

    import torch

    models = [tiny_models["pp_rgb"]]
    images = [_photo_like(40, 70, seed) for seed in range(4)]
    alone = [pxzip.compress(px, models) for px in images]
    before = torch.get_num_threads()
    out: dict[int, bytes] = {}
    threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, pxzip.compress(images[k], models)))
               for k in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[k] for k in range(4)] == alone
    assert all(container.unpack(d)[0].offsets for d in alone)
    assert torch.get_num_threads() == before
