"""Tests for pxzip.bench and `pxzip bench`: tiny images, tiny random-weight models."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pxzip import baselines, bench, codec, container, tables, zoo
from pxzip.cli import cli
from pxzip.errors import ChecksumError, UsageError
from pxzip.exact import tile_params

# the network's own path: tiny untrained models would lose to the fallback coders (conftest.network_only)
pytestmark = pytest.mark.usefixtures("network_only")

CODER_SLACK_BITS = 64  # payload - ideal per image: the range coder's final flush, whole bytes


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # two torch threads on a busy 2-core machine slow the step-by-step decoder down tenfold
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _smooth(h: int, w: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 5 + y * 3, y * 4, x + y * 2][:c], axis=-1) + rng.integers(0, 8, (h, w, c))
    img = (base % 256).astype(np.uint8)
    return img[:, :, 0] if c == 1 else img


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A fake CIFAR-10 binary layout with 3 test records (label byte + R, G, B planes)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    images = np.stack([_smooth(32, 32, 3, i) for i in range(3)])
    records = np.concatenate(
        [np.arange(3, dtype=np.uint8)[:, None], images.transpose(0, 3, 1, 2).reshape(3, -1)], axis=1
    )
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    return root


@pytest.fixture(scope="module")
def cifar_run(cifar_root, tiny_models, tmp_path_factory):
    """One CLI run on the fake CIFAR: (click result, parsed JSON)."""
    out = tmp_path_factory.mktemp("out") / "bench.json"
    model = str(tiny_models["pp_rgb"].path)
    args = ["bench", "cifar10", "--data-dir", str(cifar_root), "--model", model, "--baselines", "png", "--no-fallback"]
    result = CliRunner().invoke(cli, [*args, "--json", str(out), "--batch", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result, json.loads(out.read_text())


def _check_report(r: dict) -> None:
    """Schema keys present and the numbers consistent with each other."""
    n = r["n"]
    assert r["schema"] == bench.SCHEMA
    for key in ("dataset", "source", "machine", "models", "n_exact", "n_errors", "errors", "images", "rates"):
        assert key in r, key
    for key in ("overheads", "timing", "memory", "baselines", "baselines_skipped"):
        assert key in r, key
    assert r["n_exact"] == n and r["n_errors"] == 0 and r["errors"] == []
    im = r["images"]
    for key in ("name", "height", "width", "channels", "dims", "nll_bpd", "ideal_bpd", "payload_bpd", "file_bpd"):
        assert len(im[key]) == n, key
    for key in ("model", "payload_bytes", "file_bytes", "exact"):
        assert len(im[key]) == n, key
    assert all(im["exact"])
    for k in range(n):
        dims = im["dims"][k]
        assert dims == im["height"][k] * im["width"][k] * im["channels"][k]
        assert im["file_bpd"][k] >= im["payload_bpd"][k]
        assert im["file_bpd"][k] == pytest.approx(8 * im["file_bytes"][k] / dims)
        assert im["payload_bpd"][k] == pytest.approx(8 * im["payload_bytes"][k] / dims)
        slack = (im["payload_bpd"][k] - im["ideal_bpd"][k]) * dims  # bits
        if not im["fallback"][k]:  # else the payload holds only the planes the network kept
            assert -1e-6 <= slack <= CODER_SLACK_BITS, (k, slack)
        # exact integer tables track the float model closely
        assert im["ideal_bpd"][k] == pytest.approx(im["nll_bpd"][k], abs=0.05)
    dims = np.array(im["dims"], float)
    for stage in bench.STAGES:
        per = np.array(im[f"{stage}_bpd"])
        assert r["rates"][stage]["mean"] == pytest.approx(per.mean())
        assert r["rates"][stage]["pooled"] == pytest.approx((per * dims).sum() / dims.sum())
    ov, rates = r["overheads"], r["rates"]
    for name, (hi, lo) in {"coder": ("payload", "ideal"), "header": ("file", "payload")}.items():
        assert ov[name]["mean_bpd"] == pytest.approx(rates[hi]["mean"] - rates[lo]["mean"])
        assert ov[name]["mean_pct"] == pytest.approx(100 * ov[name]["mean_bpd"] / rates[lo]["mean"])
        assert ov[name]["pooled_bpd"] >= 0
    assert ov["total"]["mean_bpd"] == pytest.approx(rates["file"]["mean"] - rates["nll"]["mean"])
    t = r["timing"]
    assert t["encode_s"] > 0 and t["decode_s"] > 0
    assert t["encode_images_per_s"] == pytest.approx(n / t["encode_s"])
    assert t["decode_ms_per_image"] == pytest.approx(1000 * t["decode_s"] / n)
    assert r["memory"]["peak_rss_mb"] >= r["memory"]["peak_rss_mb_after_encode"] > 10
    for b in r["baselines"].values():
        assert b["n"] == n and b["n_exact"] == n and len(b["bpd"]) == n


def test_cifar_cli_report(cifar_run, tiny_models) -> None:
    result, r = cifar_run
    _check_report(r)
    assert r["n"] == 3 and r["dataset"] == "cifar10-test"
    assert r["source"]["split"] == "test" and r["timing"]["decode_batch"] == 2
    assert r["images"]["name"] == ["test[0]", "test[1]", "test[2]"]
    assert set(r["images"]["height"]) == {32} and set(r["images"]["channels"]) == {3}
    m = tiny_models["pp_rgb"]
    assert r["models"] == {
        m.name: {
            "kind": "rgb",
            "id": m.id.hex(),
            "sha256": m.sha256,
            "path": str(m.path),
            "config": m.cfg.to_json(),
            "members": 1,
        }
    }
    assert r["images"]["model"] == [m.name] * 3
    assert list(r["baselines"]) == ["png"]
    for text in ("float model NLL", "exact tables (ideal)", "payload (coded bits)", "whole .pxz file"):
        assert text in result.output
    assert "3/3 bit-exact, 0 errors" in result.output and "images/s" in result.output
    assert "peak memory" in result.output and "\npng " in result.output


def test_cifar_nll_matches_float_model(cifar_root, cifar_run, tiny_models) -> None:
    _, r = cifar_run
    images = np.stack([_smooth(32, 32, 3, i) for i in range(3)])
    fm = tiny_models["pp_rgb"].float_model()
    with torch.no_grad():
        whole = float(fm.nll(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())))
    assert r["rates"]["nll"]["mean"] == pytest.approx(whole, rel=1e-5)


def test_jobs_give_the_same_report(cifar_root, cifar_run, tiny_models, tmp_path) -> None:
    """--jobs 2: chunks coded in spawned workers, merged in image order, the same numbers."""
    _, one = cifar_run
    out = tmp_path / "bench.json"
    model = str(tiny_models["pp_rgb"].path)
    args = ["bench", "cifar10", "--data-dir", str(cifar_root), "--model", model, "--baselines", "none", "--no-fallback"]
    result = CliRunner().invoke(cli, [*args, "--json", str(out), "--batch", "2", "--jobs", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    two = json.loads(out.read_text())
    _check_report(two)
    assert two["timing"]["jobs"] == 2 and one["timing"]["jobs"] == 1
    assert "with 2 job(s)" in result.output
    for key in ("name", "file_bytes", "payload_bytes", "ideal_bpd", "exact"):
        assert two["images"][key] == one["images"][key], key
    assert two["images"]["nll_bpd"] == pytest.approx(one["images"]["nll_bpd"], rel=1e-6)


def test_files_report(tmp_path, tiny_models) -> None:
    """A folder of 2 PNGs (RGB and gray) through the library API, other architectures."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(_smooth(8, 8, 3, 1)).save(folder / "a.png")
    Image.fromarray(_smooth(8, 16, 1, 2)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    items, dataset, source = bench.load_sources([str(folder)])
    assert dataset == "files" and [Path(it.name).name for it in items] == ["a.png", "b.png"]
    assert [it.kind for it in items] == ["rgb", "gray"]
    models = [tiny_models["gated_rgb"], tiny_models["pp_gray"].path]
    r = bench.run(items, models, ["png"], dataset=dataset, source=source, batch=8, progress=False)
    _check_report(r)
    assert r["n"] == 2 and r["images"]["model"] == ["tiny-gated-rgb", "tiny-pp-gray"]
    assert {name: m["kind"] for name, m in r["models"].items()} == {"tiny-gated-rgb": "rgb", "tiny-pp-gray": "gray"}
    assert r["images"]["channels"] == [3, 1] and r["images"]["dims"] == [192, 128]
    text = bench.format_report(r)
    assert "a.png" in text and "b.png" in text and "16x8x1" in text  # per-image rows for files
    json.dumps(r, allow_nan=False)  # strict JSON: no NaN anywhere


def test_trace_is_the_exact_tables(tiny_models) -> None:
    """The traced frequencies are what tile_params + head_freqs_all give; bytes unchanged."""
    m = tiny_models["pp_rgb"]
    img = _smooth(8, 8, 3, 5)
    trace: list[np.ndarray] = []
    data = codec.compress(img, m, trace=trace)
    assert data == codec.compress(img, m)
    params = tile_params(m.exact, torch.from_numpy(img.transpose(2, 0, 1)[None].copy()))
    prm = params[0].to(torch.int64).numpy().transpose(1, 2, 0).reshape(64, -1)
    fr = tables.head_freqs_all(prm, img.reshape(64, 3), m.cfg, m.exact.luts)
    f = np.take_along_axis(fr, img.reshape(64, 3, 1).astype(np.int64), 2)
    expected = float(np.sum(24 - np.log2(f.astype(np.float64))))
    assert codec.ideal_bits(trace) == pytest.approx(expected, abs=1e-9)
    assert sum(t.size for t in trace) == img.size
    payload_bits = 8 * len(container.unpack(data)[1])
    assert 0 <= payload_bits - expected <= CODER_SLACK_BITS
    assert codec.ideal_bits([]) == 0.0


def _two_pngs(tmp_path: Path) -> Path:
    folder = tmp_path / "two"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_smooth(8, 8, 3, 10 + i)).save(folder / f"{i}.png")
    return folder


def test_mismatch_is_counted_and_fails(tmp_path, tiny_models, monkeypatch) -> None:
    real = codec.decompress_many

    def corrupt(datas, model=None, max_lanes=1024, **kw):
        out = real(datas, model, max_lanes, **kw)
        out[-1] = out[-1].copy()
        out[-1][0, 0, 0] ^= 1
        return out

    monkeypatch.setattr(codec, "decompress_many", corrupt)
    folder = _two_pngs(tmp_path)
    out = tmp_path / "r.json"
    args = ["bench", str(folder), "-m", str(tiny_models["pp_rgb"].path), "--baselines", "none", "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    r = json.loads(out.read_text())
    assert r["n"] == 2 and r["n_exact"] == 1 and r["n_errors"] == 1
    assert r["images"]["exact"] == [True, False]
    assert r["errors"] == [
        {"index": 1, "name": str(folder / "1.png"), "stage": "compare", "error": "decoded: 1 values differ"}
    ]
    assert "1/2 bit-exact, 1 errors" in result.output and "NOT EXACT" in result.output
    assert r["baselines"] == {}


def test_decode_error_is_found_per_image(tmp_path, tiny_models, monkeypatch) -> None:
    """A batch that fails is decoded image by image, so the failing image is named."""
    folder = _two_pngs(tmp_path)
    items, _, _ = bench.load_sources([str(folder)])
    bad = codec.compress(items[0].pixels, tiny_models["pp_rgb"])

    def fail_many(datas, model=None, max_lanes=1024, **kw):
        raise ChecksumError("decoded image is corrupt")

    def one(data, model=None, **kw):
        if data == bad:
            raise ChecksumError("decoded image is corrupt (checksum mismatch): the file is damaged")
        return items[1].pixels.copy()

    monkeypatch.setattr(codec, "decompress_many", fail_many)
    monkeypatch.setattr(codec, "decompress", one)
    r = bench.run(items, [tiny_models["pp_rgb"]], [], progress=False)
    assert r["n_exact"] == 1 and r["n_errors"] == 1
    assert r["errors"][0]["index"] == 0 and r["errors"][0]["stage"] == "decode"
    assert "ChecksumError" in r["errors"][0]["error"]


def test_plot(tmp_path, tiny_models) -> None:
    pytest.importorskip("matplotlib")
    items = [bench.Item(f"x{i}", _smooth(8, 8, 3, i)) for i in range(2)]
    r = bench.run(items, [tiny_models["pp_rgb"]], ["png"], progress=False)
    bench.plot(r, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_usage_errors(tmp_path, cifar_root, monkeypatch) -> None:
    runner = CliRunner()

    def usage(args: list[str], match: str) -> None:
        result = runner.invoke(cli, ["bench", *args])
        assert result.exit_code == UsageError.exit_code, (args, result.output, result.exception)
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pxzip: ") and match in lines[0], lines

    usage(["cifar10", "--data-dir", str(tmp_path), "--baselines", "gif"], "unknown baseline gif")
    usage(["cifar10", "--data-dir", str(tmp_path / "none")], "use --download")
    usage(["cifar10", str(tmp_path)], "cannot be mixed")
    usage([str(tmp_path), "--split", "train"], "--split can only be used with `pxzip bench cifar10`")
    usage([str(tmp_path / "missing")], "no such file or folder")
    usage([str(tmp_path)], "no images to benchmark")
    c = ["cifar10", "--data-dir", str(cifar_root), "--limit", "1", "--baselines", "none"]
    usage([*c, "--tile", "3"], "--tile 3: tile size must be 0 or a power of two")
    usage([*c, "--json", str(tmp_path / "no" / "r.json")], "no such folder")
    if importlib.util.find_spec("matplotlib"):
        usage([*c, "--plot", str(tmp_path / "r.xyz")], "use a .png, .pdf or .svg file name")
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a broken PNG
    result = runner.invoke(cli, ["bench", str(tmp_path / "bomb.png")])
    assert result.exit_code != 0 and "Traceback" not in result.output and "cannot read image" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    usage(["cifar10", "--data-dir", str(cifar_root), "--plot", str(tmp_path / "p.png")], "--plot needs matplotlib")
    assert bench.parse_baselines("none") == [] and bench.parse_baselines("png, webp") == ["png", "webp"]


def test_a_baseline_that_cannot_code_an_image_is_skipped_whole() -> None:
    """WebP refuses sides above 16383 pixels: the codec is left out of the report (with a warning),
    not averaged over the images it could code, and nothing raises."""
    images = [np.zeros((2, 3, 3), np.uint8), np.zeros((1, 16384, 3), np.uint8)]
    with pytest.warns(UserWarning, match="codec webp skipped: it cannot code image 1"):
        res = baselines.run_baselines(images, ["png", "webp"])
    assert sorted(res) == ["png"] and res["png"]["n"] == 2 and res["png"]["n_exact"] == 2


def test_default_models_missing(cifar_root) -> None:
    if zoo.registry():
        pytest.skip("shipped models are installed")
    items, _, _ = bench.load_sources(["cifar10"], cifar_root, limit=1)
    with pytest.raises(UsageError, match="pxz-rgb-cifar"):
        bench.resolve_models(items, None)


def test_nan_free_rates() -> None:
    rates = {s: {"mean": 1.0, "pooled": 1.0} for s in bench.STAGES}
    rates["nll"] = {"mean": 0.0, "pooled": 0.0}
    ov = bench._overheads(rates)
    assert ov["total"]["mean_pct"] is None and math.isclose(ov["total"]["mean_bpd"], 1.0)


def test_label_auto_reports_what_labels_gain(cifar_root, cond_models, tmp_path) -> None:
    """--label auto with a conditional model: each file takes its best label (or none), the NLL stage
    uses that label, and the report adds the NLL without a label and given the true label."""
    out = tmp_path / "bench.json"
    model = str(cond_models["pixelcnnpp"].path)
    args = ["bench", "cifar10", "--data-dir", str(cifar_root), "--model", model, "--baselines", "none"]
    result = CliRunner().invoke(cli, [*args, "--json", str(out), "--label", "auto"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    r = json.loads(out.read_text())
    _check_report(r)
    im, lr = r["images"], r["label_rates"]
    assert r["label"] == "auto" and lr["nll_no_label"]["n"] == 3 and lr["nll_true_label"]["n"] == 3
    m = cond_models["pixelcnnpp"]
    images = [_smooth(32, 32, 3, i) for i in range(3)]
    for k, img in enumerate(images):
        sizes = [len(codec.compress(img, m, label=lab)) for lab in [None, *range(4)]]
        assert im["file_bytes"][k] == min(sizes)
        assert im["label"][k] == [None, *range(4)][sizes.index(min(sizes))]
        fm = m.float_model()
        x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            assert im["nll_true_label_bpd"][k] == pytest.approx(float(fm.nll(x, torch.tensor([k]))), rel=1e-5)
            assert im["nll_no_label_bpd"][k] == pytest.approx(float(fm.nll(x)), rel=1e-5)
    assert "given the true label" in result.output
    # without --label: no label columns filled, no extra passes
    plain = bench.run([bench.Item("a", images[0], 1)], [m], [], batch=1)
    assert plain["label_rates"] is None and plain["images"]["label"] == [None]
