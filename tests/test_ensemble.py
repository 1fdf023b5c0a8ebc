"""Ensembles: exact tables in every evaluation order, the float average, files, refusals, the CLI."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pxzip
from pxzip import engines, tables, zoo
from pxzip.cli import cli
from pxzip.config import ModelConfig
from pxzip.ensemble import ExactEnsemble, FloatEnsemble, combine_heads
from pxzip.errors import ModelFileError
from pxzip.model import PixelCNN

# the network's own path: tiny untrained models would lose to the fallback coders (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

CFG = ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2)


def _member(tmp_path, seed: int, cfg: ModelConfig = CFG, name: str | None = None) -> zoo.Model:
    torch.manual_seed(seed)
    m = PixelCNN(cfg)
    with torch.no_grad():  # random biases too, so that members differ in every head output
        for b in m.biases.values():
            b.normal_(0, 0.5)
    path = tmp_path / f"{name or f'member{seed}'}.safetensors"
    zoo.save_model(path, m, path.stem)
    return zoo.load_file(path)


@pytest.fixture()
def ens(tmp_path) -> zoo.Model:
    a, b = _member(tmp_path, 1), _member(tmp_path, 2)
    zoo.save_ensemble(tmp_path / "ens.safetensors", [a, b], [3, 1], "ens")
    return zoo.load_file(tmp_path / "ens.safetensors")


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_file_round_trip(ens, tmp_path):
    """An ensemble file rebuilds itself alone: members, weights, the combined head, provenance."""
    assert ens.members == 2 and ens.cfg.num_logistic_mix == 4 and ens.exact.prior.tolist() == [3, 1]
    raw = (tmp_path / "ens.safetensors").read_bytes()
    meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert [m["name"] for m in json.loads(meta["members"])] == ["member1", "member2"]
    assert ens.id != zoo.load_file(tmp_path / "member1.safetensors").id


def test_encoder_and_decoder_tables_identical(ens):
    """The encoder's one parallel pass and the decoder's cached steps give identical integer tables."""
    em = ens.exact
    px = _images((3, 5, 6, 3))
    b, h, w, c = px.shape
    prm = em.tile_params(torch.from_numpy(px.transpose(0, 3, 1, 2).copy())).to(torch.int64).numpy()
    prm = prm.transpose(0, 2, 3, 1).reshape(b * h * w, -1)
    enc = tables.head_freqs_all(prm, px.reshape(-1, c), em.cfg, em.luts, em.prior).reshape(b, h, w, c, 256)
    st = engines.stepper(em, b, h, w)
    for i in range(h):
        st.start_row(i)
        for j in range(w):
            steps = tables.PixelSteps(em.cfg, em.luts, partial(st.params_int, j), em.prior)
            for ch in range(c):
                assert np.array_equal(steps.freqs(ch), enc[:, i, j, ch]), (i, j, ch)
                v = px[:, i, j, ch].astype(np.int64)
                st.set_pixel(j, ch, torch.from_numpy(v))
                steps.observe(ch, v)


def test_round_trip_and_rate(ens, tmp_path):
    """Bit-exact round trip; the coded size follows the float ensemble's NLL, which lies between
    what the weighted average of the members' likelihoods allows."""
    img = _images((12, 10, 3), seed=3)
    trace: list = []
    blob = pxzip.compress(img, ens, trace=trace)
    assert np.array_equal(pxzip.decompress(blob, ens), img)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        nll = float(ens.float_model().nll(x)) * img.size
    assert abs(pxzip.codec.ideal_bits(trace) - nll) < 0.01 * nll
    # the ensemble is never worse than its worst member, up to the rounding of the exact tables
    members = [zoo.load_file(tmp_path / f"member{s}.safetensors") for s in (1, 2)]
    with torch.no_grad():
        single = [float(m.float_model().nll(x)) * img.size for m in members]
    assert nll <= max(single) + 1e-3 * nll


def test_identical_members_equal_one_model(tmp_path):
    """A mixture of one distribution with itself is that distribution: the float NLL is unchanged
    (this checks the re-laid head; test_each_member_is_normalised_alone the normalisation)."""
    a = _member(tmp_path, 5)
    zoo.save_ensemble(tmp_path / "twin.safetensors", [a, a], [1, 7], "twin")
    twin = zoo.load_file(tmp_path / "twin.safetensors")
    x = torch.from_numpy(_images((2, 3, 7, 6)))
    with torch.no_grad():
        assert float(twin.float_model().nll(x)) == pytest.approx(float(a.float_model().nll(x)), abs=1e-5)


def test_each_member_is_normalised_alone(ens):
    """Adding a constant to one member's logits changes nothing (its own softmax absorbs it); a
    softmax over all M*K logits together would shift weight between the members."""
    em = ens.exact
    px = _images((1, 4, 5, 3), seed=7)
    prm = em.tile_params(torch.from_numpy(px.transpose(0, 3, 1, 2).copy())).to(torch.int64).numpy()
    prm = prm.transpose(0, 2, 3, 1).reshape(20, -1)
    k = em.member_cfg.num_logistic_mix
    shifted = prm.copy()
    shifted[:, k : 2 * k] += 5000  # member 1's logits (the combined head's first block is [m0 K | m1 K])
    flat = px.reshape(-1, 3)
    same = tables.head_freqs_all(shifted, flat, em.cfg, em.luts, em.prior)
    assert np.array_equal(same, tables.head_freqs_all(prm, flat, em.cfg, em.luts, em.prior))
    pooled = tables.head_freqs_all(shifted, flat, em.cfg, em.luts)  # one softmax over all: not the same
    assert not np.array_equal(pooled, tables.head_freqs_all(prm, flat, em.cfg, em.luts))


def test_combine_heads_layout():
    """Component m*K + k of the combined head is member m's component k, in every block."""
    k, c = CFG.num_logistic_mix, CFG.in_channels
    p = CFG.num_params_out
    outs = [torch.arange(p).float()[None] + 1000 * m for m in range(3)]  # (1, P) per member
    out = combine_heads(outs, CFG)[0]
    assert out.shape == (3 * p,)
    kk = 3 * k
    logits = out[:kk].view(3, k)
    means = out[kk : kk + c * kk].view(c, 3, k)
    for m in range(3):
        assert torch.equal(logits[m], outs[m][0, :k])
        assert torch.equal(means[:, m], outs[m][0, k : k + c * k].view(c, k))


def test_prior_weights_the_members(tmp_path):
    """A heavy weight on one member makes the tables nearly that member's own."""
    a, b = _member(tmp_path, 1), _member(tmp_path, 2)
    px = torch.from_numpy(_images((1, 3, 4, 4)))
    flat = px.numpy().transpose(0, 2, 3, 1).reshape(16, 3)
    freqs = {}
    for w in ([255, 1], [1, 255]):
        e = ExactEnsemble([a.exact, b.exact], w)
        prm = e.tile_params(px).to(torch.int64).numpy().transpose(0, 2, 3, 1).reshape(16, -1)
        freqs[w[0]] = tables.head_freqs_all(prm, flat, e.cfg, e.luts, e.prior)
    for m, key in ((a, 255), (b, 1)):
        prm = m.exact.tile_params(px).to(torch.int64).numpy().transpose(0, 2, 3, 1).reshape(16, -1)
        own = tables.head_freqs_all(prm, flat, m.cfg, m.exact.luts)
        p_own, p_ens = own / 2**tables.PRECISION, freqs[key] / 2**tables.PRECISION
        assert np.abs(p_own - p_ens).max() < 0.02


@pytest.mark.parametrize(
    "members, prior, message",
    [
        ([1], [1], "2..8 members"),
        ([1, 2], [1], "weights for"),
        ([1, 2], [0, 1], "whole numbers"),
        ([1, 2], [1, 256], "whole numbers"),
        ([1, 2], [1.5, 1], "whole numbers"),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1] * 9, "2..8 members"),
    ],
)
def test_bad_ensembles_refused(tmp_path, members, prior, message):
    models = [_member(tmp_path, s) for s in members]
    with pytest.raises(ValueError, match=message):
        zoo.save_ensemble(tmp_path / "bad.safetensors", models, prior, "bad")


def test_numpy_weights_and_dropout(tmp_path):
    """Weights may be numpy integers; members that differ only in (training-time) dropout match."""
    a = _member(tmp_path, 1)
    b = _member(tmp_path, 2, ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2, dropout_p=0.5), "drop")
    zoo.save_ensemble(tmp_path / "np.safetensors", [a, b], list(np.array([2, 1])), "np")
    assert zoo.load_file(tmp_path / "np.safetensors").exact.prior.tolist() == [2, 1]


def test_members_must_match(tmp_path, ens):
    a = _member(tmp_path, 1)
    other = _member(tmp_path, 2, ModelConfig(num_filters=6, num_resnet=1, num_logistic_mix=2), "small")
    with pytest.raises(ValueError, match="share one config"):
        zoo.save_ensemble(tmp_path / "bad.safetensors", [a, other], [1, 1], "bad")
    cond = _member(tmp_path, 3, ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2, num_classes=2), "c")
    with pytest.raises(ValueError, match="unconditional"):
        zoo.save_ensemble(tmp_path / "bad.safetensors", [cond, cond], [1, 1], "bad")
    with pytest.raises(ValueError, match="single networks"):
        zoo.save_ensemble(tmp_path / "bad.safetensors", [a, ens], [1, 1], "bad")
    with pytest.raises(ValueError, match="no label"):
        engines.stepper(ens.exact, 1, 2, 2, labels=torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="no label"):
        FloatEnsemble([a.float_model(), a.float_model()], [1, 1])(torch.zeros(1, 3, 2, 2), torch.zeros(1))


def _rewrite_meta(src, dst, **changes) -> None:
    """Copy a model file with metadata entries replaced (a hand-made or damaged file)."""
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8 : 8 + n])
    head["__metadata__"].update(changes)
    new = json.dumps(head).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])


@pytest.mark.parametrize(
    "prior",
    ['"1,1"', "[1, 1, 1]", "[1]", "[0, 1]", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]", "not json"],
)
def test_damaged_ensemble_file(ens, tmp_path, prior):
    """A wrong weight list (or one naming members that are not in the file) is a ModelFileError."""
    bad = tmp_path / "damaged.safetensors"
    _rewrite_meta(tmp_path / "ens.safetensors", bad, prior=prior)
    with pytest.raises(ModelFileError):
        zoo.load_file(bad)


def test_cli_ensemble(tmp_path):
    a, b = _member(tmp_path, 1), _member(tmp_path, 2)
    out = tmp_path / "e.safetensors"
    run = CliRunner().invoke
    r = run(cli, ["ensemble", str(a.path), str(b.path), "-w", "2,1", "--name", "e", "-o", str(out)])
    assert r.exit_code == 0, r.output
    e = zoo.load_file(out)
    assert e.members == 2 and e.exact.prior.tolist() == [2, 1] and e.name == "e"
    before = out.read_bytes()
    for args, message in [
        ([str(a.path), str(b.path), "--name", "e", "-o", str(out)], "already exists"),
        ([str(a.path), str(b.path), "-w", "1,x", "--name", "e", "-o", str(tmp_path / "x.safetensors")], "whole"),
        ([str(a.path), "--name", "e", "-o", str(tmp_path / "x.safetensors")], "2..8 members"),
        ([str(a.path), str(b.path), "--name", "e", "-o", str(tmp_path / "x.pxz")], "ends in .safetensors"),
    ]:
        r = run(cli, ["ensemble", *args])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    assert out.read_bytes() == before
    assert not (tmp_path / "x.safetensors").exists()
    # an ensemble codes through the CLI like any model, and cannot start a fine-tune
    img = tmp_path / "i.png"
    from PIL import Image

    Image.fromarray(_images((9, 7, 3))).save(img)
    r = run(cli, ["compress", str(img), "-m", str(out), "-o", str(tmp_path / "i.pxz")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["decompress", str(tmp_path / "i.pxz"), "-m", str(out), "-o", str(tmp_path / "back.png")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(Image.open(img)))
    for k in range(3):  # training images enough for the data checks, so that --init is what fails
        Image.fromarray(_images((9, 7, 3), seed=k)).save(tmp_path / f"t{k}.png")
    paths = [a for k in range(3) for a in ("--images", str(tmp_path / f"t{k}.png"))]
    r = run(cli, ["train", "--init", str(out), *paths, "--crop", "4", "--steps", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code != 0 and "is an ensemble of 2 networks" in r.output


def test_pinned_ensemble_file():
    """ens-rgb.pxz was coded with pinned-ens-rgb (tests/expected/make_expected.py ensemble): every
    later version must decode it to the same pixels and encode the image to the same bytes."""
    from pathlib import Path

    from PIL import Image

    here = Path(__file__).resolve().parent / "expected"
    ens = zoo.load_file(here / "pinned-ens-rgb.safetensors")
    assert ens.members == 2 and ens.exact.prior.tolist() == [2, 1]
    data = (here / "ens-rgb.pxz").read_bytes()
    expected = np.asarray(Image.open(here / "rgb.png"))
    assert np.array_equal(pxzip.decompress(data, ens), expected)
    assert pxzip.compress(Image.open(here / "rgb.png"), ens) == data


def test_ensemble_files_are_canonical(ens, tmp_path):
    """The same members and weights give the same bytes, hence the same id."""
    members = [zoo.load_file(tmp_path / f"member{s}.safetensors") for s in (1, 2)]
    again = zoo.save_ensemble(tmp_path / "again.safetensors", members, [3, 1], "ens")
    assert again == ens.sha256
