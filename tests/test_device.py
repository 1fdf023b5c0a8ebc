"""The device path (`--device`, `pxzip.device`): errors without CUDA, the same bytes on "cpu" as by
default, and the torch engines keeping every tensor on the model's device (checked on torch's "meta"
device, where mixing in a CPU tensor raises)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import pxzip
from pxzip import codec, device, engines, wavefront
from pxzip.cli import cli
from pxzip.errors import UsageError

NO_CUDA = not torch.cuda.is_available()


def _image(h=20, w=30, seed=0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 8, (h, w, 3))
    return (np.stack([x * 7, y * 9, x + y], -1) + noise).astype(np.uint8)


def test_resolve_names():
    assert device.resolve("cpu") == torch.device("cpu")
    assert device.resolve("CPU") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cuda:-1", "tpu", ""):
        with pytest.raises(UsageError, match="expected auto, cpu, cuda or cuda:N"):
            device.resolve(bad)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_without_cuda_auto_is_the_cpu_and_cuda_is_an_error():
    assert device.resolve("auto") == device.resolve(None) == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(UsageError, match="no CUDA device"):
            device.resolve(name)


@pytest.mark.usefixtures("network_only")
def test_cpu_and_auto_give_the_default_bytes(tiny_models):
    models = [tiny_models["pp_rgb"]]
    img = _image()
    plain = pxzip.compress(img, models)
    assert pxzip.compress(img, models, device="cpu") == plain
    if NO_CUDA:
        assert pxzip.compress(img, models, device="auto") == plain
    assert np.array_equal(pxzip.decompress(plain, models, device="cpu"), img)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cli_device_cuda_is_one_line_exit_2(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_image()).save(src)
    runner = CliRunner()
    r = runner.invoke(cli, ["compress", str(src), "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "a.pxz").exists()
    assert runner.invoke(cli, ["compress", str(src), "--device", "cpu"]).exit_code == 0
    r = runner.invoke(cli, ["decompress", str(tmp_path / "a.pxz"), "--device", "cuda:1"])
    assert r.exit_code == 2 and "no CUDA device" in r.output and not (tmp_path / "a.png.png").exists()
    r = runner.invoke(cli, ["decompress", str(tmp_path / "a.pxz"), "-o", str(tmp_path / "b.png"), "--device", "auto"])
    assert r.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), _image())
    r = runner.invoke(cli, ["bench", str(src), "--device", "cuda", "--baselines", "none"])
    assert r.exit_code == 2 and "no CUDA device" in r.output
    r = runner.invoke(cli, ["sample", "-n", "1", "--size", "2", "-o", str(tmp_path / "s.png"), "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output and not (tmp_path / "s.png").exists()


def test_sample_on_cpu_is_the_default(tiny_models):
    from pxzip import sample

    m = tiny_models["pp_rgb"]
    assert np.array_equal(sample.sample(m, 2, 3, 4, seed=5, device="cpu"), sample.sample(m, 2, 3, 4, seed=5))


def test_pillow_save_device_option(tmp_path):
    Image.fromarray(_image()).save(tmp_path / "a.pxz", device="cpu")
    with Image.open(tmp_path / "a.pxz") as im:
        assert np.array_equal(np.asarray(im), _image())


@pytest.mark.parametrize("name", ["pp_rgb", "gated_gray", "pp_gray"])
def test_torch_engines_keep_every_tensor_on_the_models_device(tiny_models, name):
    """On "meta" tensors hold no values and any op that mixes in a CPU tensor raises: so the encoder's
    parallel pass and both decoders' engines run end to end there only if every tensor they make
    lives on the model's device (what a CUDA run needs)."""
    model = tiny_models[name].on("meta")
    em = model.exact
    assert em.device.type == "meta" and tiny_models[name].exact.device.type == "cpu"  # a copy, not a move
    c, h, w = em.cfg.in_channels, 6, 7
    out = em.tile_params(torch.zeros(2, c, h, w, dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, em.cfg.num_params_out, h, w)
    st = engines.stepper(em, 2, h, w, device=em.device)
    for i in range(2):
        st.start_row(i)
        for j in range(w):
            for ch in range(c):
                assert st.params(j).device.type == "meta"
                st.set_pixel(j, ch, torch.zeros(2, device="meta"))
    ws = engines.wave_stepper(em, 2, h, w, device=em.device)
    coded = 0
    for t in range(ws.start, wavefront.num_steps(h, w, ws.lag)):
        rows = ws.advance(t)
        if len(rows):
            for ch in range(c):
                assert ws.params().device.type == "meta"
                ws.set_pixel(ch, torch.zeros(2 * len(rows), device="meta"))
            coded += len(rows)
    assert coded == h * w


def test_a_model_on_a_device_is_a_cached_copy(tiny_models):
    m = tiny_models["pp_rgb"]
    assert m.on("cpu") is m and m.on(torch.device("cpu")) is m
    meta = m.on("meta")
    assert m.on("meta") is meta and meta.id == m.id and meta.exact is not m.exact


def test_codec_engines_get_the_models_device(tiny_models, monkeypatch):
    """decode_units asks engines.py for steppers on the model's own device."""
    seen = []
    real = engines.stepper

    def spy(em, *args, **kw):
        seen.append(kw.get("device"))
        return real(em, *args, **kw)

    monkeypatch.setattr(engines, "stepper", spy)
    img = _image()[:, :, 0]
    data = pxzip.compress(img, [tiny_models["gated_gray"]], fallback=False, order="raster")
    assert np.array_equal(codec.decompress(data, [tiny_models["gated_gray"]]), img)
    assert seen and all(torch.device(d).type == "cpu" for d in seen)


@pytest.mark.usefixtures("network_only")
@pytest.mark.parametrize("order", ["raster", "wavefront"])
def test_the_torch_engines_a_gpu_runs_give_the_same_files(tiny_models, monkeypatch, order):
    """A non-CPU device runs the torch engines (exact.TileOps, TorchStepper, TorchWaveStepper) in place of
    the compiled ones. Run the whole codec through them here, on the CPU: the same bytes, the same pixels."""
    from pxzip import exact, raster

    models = [tiny_models["pp_rgb"]]
    img = _image(24, 40)
    compiled = pxzip.compress(img, models, order=order, tile=16)
    monkeypatch.setattr(exact, "CompiledTileOps", exact.TileOps)
    monkeypatch.setattr(
        raster, "Stepper", lambda em, b, h, w, labels=None: exact.TorchStepper(em, b, h, w, "cpu", labels)
    )
    monkeypatch.setattr(
        wavefront,
        "WaveStepper",
        lambda em, n, h, w, labels=None: wavefront.TorchWaveStepper(em, n, h, w, "cpu", labels),
    )
    assert pxzip.compress(img, models, order=order, tile=16) == compiled
    assert np.array_equal(pxzip.decompress(compiled, models), img)
