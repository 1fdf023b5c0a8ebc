"""Tests for benchmarks/photo_data.py: exact box downscale, test-image refusal, JPEG grid score, sources."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "photo_data.py"


def _load():
    """The script as a module (registered in sys.modules, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location("photo_data", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["photo_data"] = module
    spec.loader.exec_module(module)
    return module


pd = _load()


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB field with mild noise: photo-like, no block grid."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 220, (h // 50 + 2, w // 50 + 2, 3))
    ys, xs = np.linspace(0, coarse.shape[0] - 1.001, h), np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    c = coarse
    img = (
        c[y0][:, x0] * (1 - fy) * (1 - fx)
        + c[y0 + 1][:, x0] * fy * (1 - fx)
        + c[y0][:, x0 + 1] * (1 - fy) * fx
        + c[y0 + 1][:, x0 + 1] * fy * fx
    )
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def test_box_downscale_is_exact_mean_rounded_half_up():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    for f in (2, 3):
        got = pd.box_downscale(a, f)
        assert got.shape == (7 // f, 11 // f, 3) and got.dtype == np.uint8
        for y in range(got.shape[0]):
            for x in range(got.shape[1]):
                for c in range(3):
                    block = [int(v) for v in a[y * f : (y + 1) * f, x * f : (x + 1) * f, c].ravel()]
                    # floor(mean + 1/2) in exact integers
                    assert got[y, x, c] == (2 * sum(block) + f * f) // (2 * f * f)
    halves = np.array([[[0], [1]], [[0], [0]]], np.uint8)  # mean 0.25 -> 0
    assert pd.box_downscale(halves, 2).item() == 0
    halves[1, 0, 0] = 1  # mean 0.5 -> 1 (half up)
    assert pd.box_downscale(halves, 2).item() == 1
    assert pd.box_downscale(np.full((6, 6, 3), 255, np.uint8), 3).min() == 255


def test_grid_score_high_for_blocky_low_for_smooth():
    rng = np.random.default_rng(1)
    blocky = np.kron(rng.integers(0, 256, (32, 32, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    blocky = np.clip(blocky.astype(int) + rng.integers(-2, 3, blocky.shape), 0, 255).astype(np.uint8)
    smooth = _smooth(256, 256, 2)
    assert pd.grid_score(blocky) > 1.0
    assert abs(pd.grid_score(smooth)) < pd.GRID_THRESHOLD
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, format="JPEG", quality=15)
    assert pd.grid_score(np.asarray(Image.open(buf).convert("RGB"))) > pd.GRID_THRESHOLD


def test_factor_and_periods():
    assert pd.candidate_factors(2160, 3840, 512, 256) == [4, 5, 6, 7, 8, 3, 2]
    assert pd.candidate_factors(600, 900, 512, 256) == [2]
    assert pd.candidate_factors(500, 900, 512, 256) == []
    assert pd.output_periods(2) == [4, 8]
    assert pd.output_periods(3) == [8, 16]
    assert pd.output_periods(6) == [4, 8]
    assert pd.output_periods(8) == [2, 8]


def _png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB array."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _git(*args: str, cwd: Path) -> str:
    """Run git quietly with a fixed identity; its stdout."""
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _fake_mirror(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, list[dict]]:
    """A bare repository tmp/mirror/test+photos/repo holding files; its pinned source entries."""
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "-q", cwd=work)
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "photos", cwd=work)
    commit = _git("rev-parse", "HEAD", cwd=work)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _git("clone", "-q", "--bare", str(work), str(mirror / "test+photos" / "repo"), cwd=tmp_path)
    entries = [
        {
            "set": "fake",
            "repo": "test/photos",
            "commit": commit,
            "path": name,
            "blob": _git("rev-parse", f"HEAD:{name}", cwd=work),
            "sha256": hashlib.sha256(data).hexdigest(),
            "licence": "CC0-1.0",
        }
        for name, data in files.items()
    ]
    return mirror, entries


def _run(tmp_path: Path, mirror: Path, entries: list[dict], debs: dict | None = None) -> dict:
    """Write the sources JSON and run the script on it; the summary."""
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"debs": debs or {}, "sources": entries}))
    argv = ["--out", str(tmp_path / "out"), "--mirror", str(mirror), "--debs", str(tmp_path / "debs")]
    return pd.run(pd.parse_args(argv + ["--sources", str(sources), "--quiet"]))


def test_kodak_refused_by_pixels_rotation_and_downscale(tmp_path, shared_data):
    kodak = shared_data / "kodak" / "kodim07.png"
    if not kodak.is_file():
        pytest.skip(f"no Kodak image to test the refusal with: {kodak} not found")
    k = np.asarray(Image.open(kodak).convert("RGB"))
    files = {
        "a.png": kodak.read_bytes(),
        "b.png": _png(np.ascontiguousarray(np.rot90(k))),
        "c.png": _png(pd.box_downscale(k, 2)),
        "d.png": _png(_smooth(520, 700, 3)),
        "photos/Lena.png": _png(_smooth(520, 700, 4)),
    }
    mirror, entries = _fake_mirror(tmp_path, files)
    summary = _run(tmp_path, mirror, entries)
    assert summary["written"] == 1 and summary["refused"] == 4
    refused = {r["source_path"]: r["reason"] for r in pd.read_tsv(tmp_path / "out" / "REFUSED.tsv")}
    assert refused["a.png"].startswith("test image pixels: kodak/kodim07")
    assert refused["b.png"].startswith("test image pixels: kodak/kodim07")
    assert refused["c.png"].startswith("near-duplicate of test image: kodak/kodim07")
    assert refused["photos/Lena.png"].startswith("test image name")
    (row,) = pd.read_tsv(tmp_path / "out" / "MANIFEST.tsv")
    out = np.asarray(Image.open(tmp_path / "out" / row["file"]))
    assert row["factor"] == "2" and out.shape == (260, 350, 3)
    assert pd.pixel_sha256(out) == row["out_sha256_pixels"]
    assert np.array_equal(out, pd.box_downscale(_smooth(520, 700, 3), 2))
    assert _run(tmp_path, mirror, entries)["reused"] == 5  # a rerun keeps everything


def test_duplicate_and_missing_commit(tmp_path):
    img = _smooth(520, 700, 5)
    mirror, entries = _fake_mirror(tmp_path, {"x.png": _png(img), "y.png": _png(img)})
    summary = _run(tmp_path, mirror, entries)
    assert (
        summary["written"] == 1
        and "duplicate: same pixels" in pd.read_tsv(tmp_path / "out" / "REFUSED.tsv")[0]["reason"]
    )
    entries[0]["commit"] = "0" * 40
    with pytest.raises(SystemExit, match="missing commit 0000"):
        _run(tmp_path, mirror, entries)


def test_deb_member_is_read_and_pinned(tmp_path):
    payload = _png(_smooth(16, 16, 6))
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/share/backgrounds/p.png")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    members = [(b"debian-binary", b"2.0\n"), (b"data.tar.xz", tar_buf.getvalue())]
    deb = b"!<arch>\n" + b"".join(
        n.ljust(16)
        + b"0".ljust(12)
        + b"0".ljust(6)
        + b"0".ljust(6)
        + b"100644".ljust(8)
        + str(len(d)).encode().ljust(10)
        + b"`\n"
        + d
        + (b"\n" if len(d) % 2 else b"")
        for n, d in members
    )
    (tmp_path / "x_1_all.deb").write_bytes(deb)
    pinned = {"x": {"file": "x_1_all.deb", "version": "1", "sha256": hashlib.sha256(deb).hexdigest()}}
    src = pd.Source(set="s", path="usr/share/backgrounds/p.png", sha256="", licence="", deb="x")
    store = pd.DebStore(tmp_path, pinned)
    assert store.check([src]) is None and store.read(src) == payload
    assert "missing" in pd.DebStore(tmp_path / "none", pinned).check([src])
