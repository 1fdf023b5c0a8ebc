"""Class-conditional models: a label per image, exact in every evaluation order, stored in the file."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pxzip import codec, container, engines, tables, zoo
from pxzip.config import ModelConfig
from pxzip.errors import ChecksumError, FormatError
from pxzip.exact import ExactModel, tile_params
from pxzip.model import PixelCNN

# the network's own path: tiny untrained models would lose to the fallback coders (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

CLASSES = 4  # conftest.COND_CLASSES


def cond_model(arch: str, c: int = 3, seed: int = 3) -> PixelCNN:
    """A tiny conditional model whose class biases are far from zero (so labels matter a lot)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, in_channels=c, num_filters=8, num_resnet=2, num_logistic_mix=2, num_classes=CLASSES)
    m = PixelCNN(cfg)
    with torch.no_grad():
        for p in m.class_bias.values():
            p.normal_(0, 1.0)
    return m.eval()


@pytest.fixture(params=["pixelcnnpp", "gated"])
def cond_file(request, cond_models) -> zoo.Model:
    return cond_models[request.param]


def test_labels_change_the_float_model_and_none_is_the_null_label():
    m = cond_model("pixelcnnpp").double()
    x = torch.randint(0, 256, (2, 3, 5, 5))
    out = [m(x, torch.tensor([k, k])) for k in range(CLASSES + 1)]
    assert torch.equal(m(x), out[CLASSES])  # no label == the null label
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="labels must be in 0..4"):
        m(x, torch.tensor([5, 0]))


def test_unconditional_config_json_is_unchanged():
    """Models saved before labels existed keep their config text (and so their bytes and ids)."""
    assert "num_classes" not in ModelConfig().to_json()
    assert ModelConfig.from_json(ModelConfig(num_classes=10).to_json()).num_classes == 10
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=256)


@pytest.mark.parametrize("arch,c", [("pixelcnnpp", 3), ("gated", 3), ("pixelcnnpp", 1)])
def test_encoder_pass_equals_decoder_steps_with_mixed_labels(arch, c):
    """Lanes with different labels in one batch: the parallel pass and the cached steps agree exactly,
    and each lane equals the same image coded alone."""
    em = ExactModel.from_float(cond_model(arch, c))
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (5, 4, 5, c), dtype=np.uint8)
    labels = torch.tensor([0, 3, CLASSES, 1, 3])
    x = torch.from_numpy(px.transpose(0, 3, 1, 2).copy())
    whole = tile_params(em, x, labels)
    for k in range(5):
        assert torch.equal(tile_params(em, x[k : k + 1], labels[k : k + 1])[0], whole[k])
    assert not torch.equal(tile_params(em, x, torch.zeros(5, dtype=torch.int64)), whole)
    prm = whole.to(torch.int64).numpy().transpose(0, 2, 3, 1).reshape(-1, whole.shape[1])
    enc = tables.head_freqs_all(prm, px.reshape(-1, c), em.cfg, em.luts).reshape(5, 4, 5, c, 256)
    st = engines.stepper(em, 5, 4, 5, labels=labels)
    for i in range(4):
        st.start_row(i)
        for j in range(5):
            steps = tables.PixelSteps(em.cfg, em.luts, partial(st.params_int, j))
            for ch in range(c):
                assert np.array_equal(steps.freqs(ch), enc[:, i, j, ch])
                v = px[:, i, j, ch].astype(np.int64)
                st.set_pixel(j, ch, torch.from_numpy(v))
                steps.observe(ch, v)


def test_exact_model_follows_the_float_model_per_label():
    m = cond_model("pixelcnnpp").double()
    em = ExactModel.from_float(m)
    x = torch.randint(0, 256, (3, 3, 6, 6))
    labels = torch.tensor([2, 0, CLASSES])
    with torch.no_grad():
        diff = (m(x, labels) - tile_params(em, x, labels) / 2**em.cfg.act_bits).abs()
    k = em.cfg.num_logistic_mix
    diff = torch.cat([diff[:, :k], diff[:, k + 3 * k :]], 1)  # means are in "u" units (x255): the rest
    assert float(diff.max()) < 0.05


def test_exact_model_refuses_labels_it_does_not_know():
    em = ExactModel.from_float(cond_model("pixelcnnpp"))
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels must be in"):
        tile_params(em, x, torch.tensor([CLASSES + 1]))
    plain = ExactModel.from_float(PixelCNN(ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2)))
    with pytest.raises(ValueError, match="not class-conditional"):
        tile_params(plain, x, torch.tensor([0]))


def test_model_file_keeps_the_class_biases(cond_file, tmp_path):
    zoo.save_model(tmp_path / "m.safetensors", cond_file.float_model(), "x")
    again = zoo.load_file(tmp_path / "m.safetensors")
    for name, layer in cond_file.exact.layers.items():
        other = again.exact.layers[name]
        assert (layer.cb is None) == (other.cb is None)
        if layer.cb is not None:
            assert torch.equal(layer.cb, other.cb)
    assert sum(layer.cb is not None for layer in cond_file.exact.layers.values()) == 4


def test_round_trip_with_each_label_and_none(cond_file):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    sizes = {}
    for lab in [None, 0, CLASSES - 1]:
        data = codec.compress(img, cond_file, label=lab)
        h, _ = container.unpack(data)
        assert h.label == lab
        assert data[2] >> 4 == (3 if lab is not None else 1)  # format 3 only when a label is stored
        assert np.array_equal(codec.decompress(data, cond_file), img)
        sizes[lab] = data
    assert sizes[0] != sizes[CLASSES - 1]


def test_auto_keeps_the_shortest_file(cond_file):
    rng = np.random.default_rng(4)
    img = (rng.integers(0, 40, (8, 8, 3)) + np.arange(8)[:, None, None] * 20).astype(np.uint8)
    every = [codec.compress(img, cond_file, label=lab) for lab in [None, *range(CLASSES)]]
    best = codec.compress(img, cond_file, label="auto")
    assert len(best) == min(len(d) for d in every)
    assert best == every[[len(d) for d in every].index(len(best))]  # ties: no label, then the smallest
    assert np.array_equal(codec.decompress(best, cond_file), img)
    trace: list = []
    assert codec.compress(img, cond_file, label="auto", trace=trace) == best
    assert codec.ideal_bits(trace) <= 8 * len(best)


def test_files_with_different_labels_decode_in_lockstep(cond_file):
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (5, 6, 3), dtype=np.uint8) for _ in range(4)]
    labels = [None, 2, 0, 2]
    datas = [codec.compress(im, cond_file, label=lab) for im, lab in zip(imgs, labels)]
    for im, out in zip(imgs, codec.decompress_many(datas, cond_file)):
        assert np.array_equal(im, out)


def test_a_changed_label_is_caught(cond_file):
    img = np.random.default_rng(6).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    f = container.fields(codec.compress(img, cond_file, label=1))
    f["label"] = bytes([2])
    with pytest.raises((ChecksumError, FormatError)):
        codec.decompress(container.join(f), cond_file)
    f["label"] = bytes([CLASSES])  # the null label is not a label a file may store
    with pytest.raises(FormatError, match="class label 4 unknown"):
        codec.decompress(container.join(f), cond_file)


def test_labels_need_a_conditional_model(cond_file, tiny_models):
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="not class-conditional"):
        codec.compress(img, tiny_models["pp_rgb"], label=1)
    with pytest.raises(ValueError, match="out of range"):
        codec.compress(img, cond_file, label=CLASSES)
    with pytest.raises(ValueError, match="label must be"):
        codec.compress(img, cond_file, label="cat")
    # "auto" with an unconditional model is plain compression
    assert codec.compress(img, tiny_models["pp_rgb"], label="auto") == codec.compress(img, tiny_models["pp_rgb"])
    # a file that claims a label, decoded with an unconditional model
    h, payload = container.unpack(codec.compress(img, tiny_models["pp_rgb"]))
    import dataclasses

    fake = container.pack(dataclasses.replace(h, label=0), payload)
    with pytest.raises(FormatError, match="not class-conditional"):
        codec.decompress(fake, tiny_models["pp_rgb"])


def test_rgba_codes_the_label_with_the_conditional_rgb_model(cond_file, tiny_models):
    img = np.random.default_rng(7).integers(0, 256, (5, 5, 4), dtype=np.uint8)
    from PIL import Image

    pil = Image.fromarray(img, "RGBA")
    data = codec.compress(pil, [cond_file, tiny_models["pp_gray"]], label=3)
    assert container.unpack(data)[0].label == 3
    assert np.array_equal(codec.decompress(data, [cond_file, tiny_models["pp_gray"]]), img)


def test_cli_label_option(cond_file, tiny_models, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from PIL import Image

    from pxzip.cli import cli

    monkeypatch.setenv("PXZIP_MODELS", str(tiny_models["dir"]))
    img = np.random.default_rng(8).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    model = str(cond_file.path)

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    res = run("compress", tmp_path / "a.png", "-m", model, "--label", "2", "-o", tmp_path / "a.pxz")
    assert res.exit_code == 0, res.output
    assert "(label 2)" in res.output
    assert "class label 2" in run("info", tmp_path / "a.pxz").output
    res = run("decompress", tmp_path / "a.pxz", "-m", model, "-o", tmp_path / "b.png")
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)
    res = run("compress", tmp_path / "a.png", "-m", model, "--label", "auto", "-o", tmp_path / "c.pxz")
    assert res.exit_code == 0, res.output
    for bad, why in [("cat", "expected a class number"), ("9", "out of range")]:
        res = run("compress", tmp_path / "a.png", "-m", model, "--label", bad, "-o", tmp_path / "d.pxz")
        assert res.exit_code == 2 and why in res.output and len(res.output.strip().splitlines()) == 1
        assert not (tmp_path / "d.pxz").exists()
    res = run("compress", tmp_path / "a.png", "-m", "tiny-pp-rgb", "--label", "1", "-o", tmp_path / "d.pxz")
    assert res.exit_code == 2 and "not class-conditional" in res.output


def test_pillow_plugin_saves_and_reports_the_label(cond_models, tmp_path):
    from PIL import Image

    import pxzip  # noqa: F401  (registers the plugin)

    m = cond_models["pixelcnnpp"]
    img = Image.fromarray(np.random.default_rng(9).integers(0, 256, (4, 4, 3), dtype=np.uint8))
    img.save(tmp_path / "a.pxz", model=m, label=1)
    with Image.open(tmp_path / "a.pxz") as back:
        assert back.info["label"] == 1
    assert container.unpack((tmp_path / "a.pxz").read_bytes())[0].label == 1


def test_unconditional_state_is_the_model_without_a_label():
    """A conditional model's "no label" path as a plain unconditional model (fine-tuning on photos)."""
    m = cond_model("pixelcnnpp").double()
    plain = PixelCNN(ModelConfig(num_filters=8, num_resnet=2, num_logistic_mix=2)).double()
    plain.load_state_dict(m.unconditional_state())
    x = torch.randint(0, 256, (2, 3, 5, 5))
    with torch.no_grad():
        assert torch.allclose(plain(x), m(x), atol=1e-9)
