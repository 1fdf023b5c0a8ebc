"""Bilevel images: the Bernoulli-head model, its exact tables, mode "1" coding, MNIST, generated pages."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import pxzip
from pxzip import baselines, codec, container, documents, mnist, tables, zoo
from pxzip.cli import cli
from pxzip.config import ModelConfig
from pxzip.errors import UsageError
from pxzip.exact import make_luts
from pxzip.model import PixelCNN

BILEVEL = ModelConfig(arch="gated", in_channels=1, head="bernoulli", num_filters=8, num_resnet=1, kernel_size=5)


def blobs(h: int, w: int, seed: int) -> np.ndarray:
    """A bilevel test image with structure (thresholded smooth noise), (h, w) bool."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2))
    big = np.kron(small, np.ones((4, 4)))[:h, :w]
    return big > 0.5


# -- config and float model --------------------------------------------------------------------


def test_config_head_checks_and_json():
    assert BILEVEL.bilevel and BILEVEL.num_params_out == 1
    assert ModelConfig.from_json(BILEVEL.to_json()) == BILEVEL
    assert "head" not in json.loads(ModelConfig().to_json())  # older configs keep their JSON (and hashes)
    with pytest.raises(ValueError, match="unknown head"):
        ModelConfig(head="softmax2")
    with pytest.raises(ValueError, match="gated"):
        ModelConfig(arch="pixelcnnpp", in_channels=1, head="bernoulli")
    with pytest.raises(ValueError, match="in_channels 1"):
        ModelConfig(arch="gated", in_channels=3, head="bernoulli")


def test_float_nll_is_binary_cross_entropy():
    torch.manual_seed(0)
    m = PixelCNN(BILEVEL).requires_grad_(False)
    x = torch.from_numpy(blobs(12, 10, 1)[None, None].astype(np.uint8) * 255)
    logit = m(x).double()
    p = torch.sigmoid(logit)
    white = x == 255
    want = -torch.where(white, p.log2(), (1 - p).log2()).mean()
    assert abs(float(m.nll(x)) - float(want)) < 1e-5


# -- exact tables ------------------------------------------------------------------------------


def test_bernoulli_freqs_are_a_valid_two_symbol_table():
    luts = make_luts(10)
    logits = np.array([-(10**9), -30 * 1024, -5000, -1, 0, 1, 5000, 30 * 1024, 10**9])
    f = tables.bernoulli_freqs(logits, luts)
    assert f.shape == (len(logits), 256)
    assert (f.sum(1) == 1 << tables.PRECISION).all() and (f >= 1).all()
    assert (f[:, 1:255] == 1).all()  # every symbol but black and white keeps the floor only
    assert (np.diff(f[:, 255]) >= 0).all() and (np.diff(f[:, 0]) <= 0).all()  # monotone in the logit
    mid = f[4]
    assert abs(int(mid[255]) - int(mid[0])) <= 2  # logit 0: an even split
    p_white = f[6, 255] / 2**24
    # the sigmoid, at 2**-24, less the 256 / 2**24 the other symbols' floors take
    assert abs(p_white - 1 / (1 + np.exp(-5000 / 1024))) < 3e-5


def test_exact_tables_follow_the_float_model(tiny_bilevel, network_only):
    """The ideal code length of the exact tables is the float NLL up to rounding."""
    img = blobs(20, 24, 2)
    trace: list[np.ndarray] = []
    data = pxzip.compress(img, tiny_bilevel, trace=trace)
    ideal = codec.ideal_bits(trace)
    fm = tiny_bilevel.float_model()
    x = torch.from_numpy(img[None, None].astype(np.uint8) * 255)
    with torch.no_grad():
        nll = float(fm.nll(x)) * img.size
    assert abs(ideal - nll) / nll < 0.01
    assert 8 * len(container.unpack(data)[1]) <= ideal + 64


# -- coding mode "1" ---------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["raster", "wavefront"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (28, 28), (33, 70)])
def test_round_trip_both_orders(tiny_bilevel, network_only, order, shape):
    img = blobs(*shape, seed=shape[0] * 100 + shape[1])
    data = pxzip.compress(img, tiny_bilevel, order=order)
    h = container.unpack(data)[0]
    assert h.mode == "1" and h.model_ids == (tiny_bilevel.id,)
    out = pxzip.decompress(data, [tiny_bilevel])
    assert np.array_equal(out.astype(bool), img)


def test_tiles_and_lockstep_batches_give_the_same_pixels(tiny_bilevel, network_only):
    imgs = [blobs(40, 36, s) for s in range(5)]
    files = [pxzip.compress(im, tiny_bilevel, tile=16) for im in imgs]
    files += [pxzip.compress(im, tiny_bilevel) for im in imgs]
    outs = codec.decompress_many(files, [tiny_bilevel])
    for im, out in zip(imgs + imgs, outs):
        assert np.array_equal(out.astype(bool), im)


def test_bilevel_beats_gray_model_on_its_own_symbols(tiny_bilevel, tiny_models, network_only):
    """Two symbols instead of 256: even untrained, the bilevel head costs about 1 bit a pixel at most."""
    img = blobs(32, 32, 5)
    trace: list[np.ndarray] = []
    pxzip.compress(img, tiny_bilevel, trace=trace)
    assert codec.ideal_bits(trace) < 2.0 * img.size
    trace = []
    pxzip.compress(img, tiny_models["gated_gray"], trace=trace)
    assert codec.ideal_bits(trace) > 3.0 * img.size


def test_gray_models_still_code_and_decode_mode_1(tiny_bilevel, tiny_models, network_only):
    """Files from before bilevel models (a gray model in the slot) decode; a named gray model is used."""
    gray = tiny_models["pp_gray"]
    img = blobs(9, 13, 3)
    data = pxzip.compress(img, gray)
    assert container.unpack(data)[0].model_ids == (gray.id,)
    assert np.array_equal(pxzip.decompress(data, [gray]).astype(bool), img)
    both = pxzip.compress(img, [gray, tiny_bilevel])  # a bilevel model given too: it codes the 1-bit plane
    assert container.unpack(both)[0].model_ids == (tiny_bilevel.id,)


def test_slots_accept_only_fitting_models():
    assert container.slot_accepts("bilevel", "bilevel") and container.slot_accepts("bilevel", "gray")
    assert not container.slot_accepts("gray", "bilevel") and not container.slot_accepts("bilevel", "rgb")
    assert container.model_slots("1") == ("bilevel",) and container.plane_slots("1") == ("bilevel",)


def test_a_bilevel_model_is_not_used_for_gray_planes(tiny_bilevel, tiny_models, network_only):
    gray_img = (blobs(8, 8, 4) * 255).astype(np.uint8)
    data = pxzip.compress(gray_img, [tiny_bilevel, tiny_models["pp_gray"]])
    assert container.unpack(data)[0].model_ids == (tiny_models["pp_gray"].id,)


def test_default_model_for_mode_1_is_bilevel():
    assert zoo.default_name("bilevel", 28, 28) == "pxz-bilevel"
    assert zoo.default_name("bilevel", 2000, 3000) == "pxz-bilevel"


# -- MNIST -------------------------------------------------------------------------------------


def write_fake_mnist(root: Path, n_train: int = 600, n_test: int = 100) -> None:
    """IDX files of the official layout with random digits (and fewer of them)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, _, lab_name, _ = mnist.FILES[split]
        imgs = (rng.random((n, 28, 28)) ** 4 * 255).astype(np.uint8)
        head = np.array([2051, n, 28, 28], ">u4").tobytes()
        (root / img_name).write_bytes(gzip.compress(head + imgs.tobytes(), compresslevel=1))
        labs = rng.integers(0, 10, n).astype(np.uint8)
        (root / lab_name).write_bytes(gzip.compress(np.array([2049, n], ">u4").tobytes() + labs.tobytes()))


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_fake_mnist(root)
    return root


def test_load_and_binarize(fake_mnist):
    x, y = mnist.load(fake_mnist, "test", limit=7)
    assert x.shape == (7, 28, 28) and x.dtype == np.uint8 and y.shape == (7,)
    b = mnist.binarize(x)
    assert b.dtype == np.bool_ and np.array_equal(b, x >= 128)
    assert mnist.load(fake_mnist, "train")[0].shape == (600, 28, 28)


def test_load_errors(tmp_path, fake_mnist):
    with pytest.raises(UsageError, match="MNIST not found"):
        mnist.load(tmp_path, "test")
    with pytest.raises(UsageError, match="split"):
        mnist.load(fake_mnist, "valid")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in mnist.FILES["test"][::2]:
        (bad / name).write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 40))
    with pytest.raises(UsageError, match="not the MNIST file"):
        mnist.load(bad, "test")
    (bad / mnist.FILES["test"][0]).write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match="cannot read"):
        mnist.load(bad, "test")


def test_download_checks_md5_and_leaves_nothing_behind(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    for name in ("train-images-idx3-ubyte.gz",):
        (src / name).write_bytes(b"an impostor")
    dest = tmp_path / "dl"
    with pytest.raises(UsageError, match="md5 mismatch"):
        mnist.download(dest, url=src.as_uri(), progress=False)
    assert list(dest.iterdir()) == []


def test_download_real_files_from_a_local_mirror(tmp_path, shared_data):
    src = shared_data / "mnist"
    if not src.is_dir():
        pytest.skip("no mnist/ in the shared data folder")
    dest = mnist.download(tmp_path / "dl", url=src.as_uri(), progress=False)
    x, y = mnist.load(dest, "test")
    assert x.shape == (10_000, 28, 28) and sorted(set(y.tolist())) == list(range(10))


def test_shared_mnist_is_the_official_data(shared_data):
    root = shared_data / "mnist"
    if not root.is_dir():
        pytest.skip("no mnist/ in the shared data folder")
    from pxzip import data

    for img_name, img_md5, lab_name, lab_md5 in mnist.FILES.values():
        assert data.md5_of(root / img_name) == img_md5 and data.md5_of(root / lab_name) == lab_md5
    _, y = mnist.load(root, "train")
    assert np.bincount(y).tolist()[:3] == [5923, 6742, 5958]


# -- generated pages ---------------------------------------------------------------------------


def test_pages_are_seeded_bilevel_documents():
    a, b, c = documents.page(5, 200, 160), documents.page(5, 200, 160), documents.page(6, 200, 160)
    assert a.shape == (160, 200) and a.dtype == np.bool_
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.5 < a.mean() < 0.999  # mostly paper, some ink
    assert not set(documents.TRAIN_SEEDS) & set(documents.BENCH_SEEDS[:10])
    assert documents.fonts()[0] == ""  # Pillow's own font is always there


# -- baselines, bench, train -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["png", "tiff-g4"])
def test_bilevel_baselines_round_trip(name):
    if name not in baselines.CODECS:
        pytest.skip(f"{name} not available here")
    img = blobs(30, 45, 9)
    codec_ = baselines.CODECS[name]
    out = codec_.decode(codec_.encode(img))
    assert baselines.same_pixels(img, out)
    if name == "png":
        with Image.open(io.BytesIO(codec_.encode(img))) as im:
            assert im.mode == "1"


def test_bench_mnist(fake_mnist, tiny_bilevel, tmp_path):
    out = tmp_path / "r.json"
    args = ["bench", "mnist", "--data-dir", str(fake_mnist), "--limit", "4", "-m", str(tiny_bilevel.path)]
    res = CliRunner().invoke(cli, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "binarised MNIST test" in res.output and "tiff-g4" in res.output and "webp" not in res.output
    r = json.loads(out.read_text())
    assert r["dataset"] == "mnist-test" and r["n_exact"] == 4
    assert r["models"]["tiny-bilevel"]["kind"] == "bilevel"
    nats = r["nll_nats_per_image"]
    assert nats == pytest.approx(np.mean(r["images"]["nll_bpd"]) * 784 * np.log(2))
    assert f"{nats:.2f} nats" in res.output


def test_bench_folder_of_1_bit_files(tmp_path, tiny_bilevel):
    for i in range(3):
        Image.fromarray(blobs(20, 30, i)).convert("1").save(tmp_path / f"p{i}.png")
    res = CliRunner().invoke(cli, ["bench", str(tmp_path), "-m", str(tiny_bilevel.path)])
    assert res.exit_code == 0, res.output
    assert "3/3 bit-exact" in res.output and "tiff-g4" in res.output


def test_train_bilevel(tmp_path, fake_mnist):
    out = tmp_path / "run"
    args = ["train", "--bilevel", "--mnist", "--data-dir", str(fake_mnist), "--pages", "4", "--crop", "16"]
    args += ["--filters", "8", "--blocks", "1", "--kernel", "5", "--batch", "4", "--steps", "2"]
    args += ["--eval-every", "1", "--no-bf16", "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    m = zoo.load_file(out / "model.safetensors")
    assert m.kind == "bilevel" and m.cfg.kernel_size == 5
    assert np.array_equal(pxzip.decompress(pxzip.compress(blobs(9, 9, 1), m), [m]).astype(bool), blobs(9, 9, 1))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mnist"], "add --bilevel"),
        (["--bilevel"], "needs data"),
        (["--bilevel", "--cifar10"], "not --cifar10"),
    ],
)
def test_train_bilevel_usage_errors(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and message in res.output
