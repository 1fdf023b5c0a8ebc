"""The `pxzip` command line: round trips per mode, several inputs, stdin/stdout, overwrite rules,
one-line errors with the exit codes of pxzip/errors.py, and decoder robustness to damaged files.

Images are tiny (decoding costs a few ms per pixel and channel) and the models are the random-weight
ones of the `tiny_models` fixture, found by name through $PXZIP_MODELS.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import pxzip
from pxzip import cli as cli_mod
from pxzip import codec, container, zoo
from pxzip.cli import cli
from pxzip.errors import ChecksumError, FormatError, ModelNotFoundError, PxzError

# the network's own path (the fallback coders' CLI and library tests: tests/test_fallback.py)
pytestmark = pytest.mark.usefixtures("network_only")

REPO = Path(__file__).resolve().parent.parent
PP = ["-m", "tiny-pp-rgb", "-m", "tiny-pp-gray"]  # resolved through $PXZIP_MODELS
GATED = ["-m", "tiny-gated-rgb", "-m", "tiny-gated-gray"]


@pytest.fixture(autouse=True)
def models_env(tiny_models, monkeypatch) -> Path:
    """Every test sees exactly the tiny models as installed (whatever the caller's environment says)."""
    monkeypatch.setenv("PXZIP_MODELS", str(tiny_models["dir"]))
    return tiny_models["dir"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny convolutions on a busy 2-core machine run ~30x faster on one thread than on two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- helpers


def run(*args: str | Path, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_ok(res: Result) -> None:
    assert res.exit_code == 0, (res.output, res.exception)
    assert "Traceback" not in res.output


def assert_fails(res: Result, code: int) -> str:
    """The documented exit code, exactly one `pxzip: ...` line on stderr, no traceback; returns the line."""
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    # anything but SystemExit means an exception escaped the CLI's error handling
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxzip: "), res.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry of a folder, hidden temp files included, with the bytes of plain files."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in folder.iterdir()}


def rand(shape: tuple[int, ...], seed: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape, dtype=np.uint8)


def make_image(kind: str, w: int = 5, h: int = 4, seed: int = 0) -> Image.Image:
    """A small random image; "P" has a distinct-color palette with partial transparency (coded as RGB),
    "P-dup" repeats colors and has one transparent index (coded as a gray index plane)."""
    if kind == "1":
        return Image.fromarray(rand((h, w), seed, 2).astype(bool))
    if kind in ("L", "LA", "RGB", "RGBA"):
        c = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[kind]
        return Image.frombytes(kind, (w, h), rand((h, w, c), seed).tobytes())
    img = Image.frombytes("P", (w, h), rand((h, w), seed, 6).tobytes())
    if kind == "P":
        img.putpalette(bytes([10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200, 255, 255, 255, 1, 2, 3]))
        img.info["transparency"] = b"\x00\x80\xff\x40"
    else:  # "P-dup"
        img.putpalette(bytes([9, 9, 9] * 3 + [70, 80, 90] * 3))
        img.info["transparency"] = 2
    return img


def save_png(folder: Path, name: str, img: Image.Image) -> Path:
    path = folder / name
    img.save(path)
    return path


def assert_same_image(a: Path | bytes, b: Path | bytes) -> None:
    """Same pixels, mode, palette and transparency, as a user reopening both files would see them."""
    ia = Image.open(a if isinstance(a, Path) else io.BytesIO(a))
    ib = Image.open(b if isinstance(b, Path) else io.BytesIO(b))
    assert ia.mode == ib.mode
    assert ia.size == ib.size
    assert np.array_equal(np.asarray(ia), np.asarray(ib))
    assert ia.getpalette() == ib.getpalette()
    assert ia.info.get("transparency") == ib.info.get("transparency")


def png_chunks(width: int, height: int, depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB, absurd sizes)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def rgb_pxz(tmp_path) -> tuple[Path, Path]:
    """A 5x4 RGB PNG and its .pxz (made with the pp models)."""
    png = save_png(tmp_path, "img.png", make_image("RGB"))
    assert_ok(run("compress", png, *PP, "-q"))
    return png, tmp_path / "img.pxz"


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA", "P", "P-dup", "1"])
def test_every_mode_round_trips_through_png_files(tmp_path, kind):
    src = save_png(tmp_path, "in.png", make_image(kind))
    res = run("compress", src, "-o", tmp_path / "in.pxz", *PP)
    assert_ok(res)
    assert "in.png -> " in res.stderr and "bits/dim" in res.stderr  # per-file summary goes to stderr
    assert res.stdout == ""
    assert_ok(run("decompress", tmp_path / "in.pxz", "-o", tmp_path / "out.png", "-q"))
    assert_same_image(src, tmp_path / "out.png")
    if kind.startswith("P"):  # the fixture really exercises palette and transparency
        assert Image.open(src).info.get("transparency") is not None


def test_gated_models_and_default_output_names(tmp_path):
    src = save_png(tmp_path, "pic.png", make_image("RGBA", 4, 5, seed=1))
    assert_ok(run("compress", src, *GATED, "-q"))  # -> pic.pxz next to the input
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    shutil.move(tmp_path / "pic.pxz", out_dir / "pic.pxz")
    assert_ok(run("decompress", out_dir / "pic.pxz", "-q"))  # -> pic.png next to it
    assert_same_image(src, out_dir / "pic.png")


def test_tiles_option_round_trips_and_shows_in_info(tmp_path):
    src = save_png(tmp_path, "wide.png", make_image("L", 18, 2))
    assert_ok(run("compress", src, *PP, "--tile", "16", "-q"))
    res = run("info", tmp_path / "wide.pxz")
    assert_ok(res)
    assert "tiles 16x16" in res.stdout
    assert_ok(run("decompress", tmp_path / "wide.pxz", "-o", tmp_path / "back.png", "-q"))
    assert_same_image(src, tmp_path / "back.png")


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".ppm"])
def test_decompress_to_other_lossless_formats(rgb_pxz, suffix):
    png, pxz = rgb_pxz
    out = pxz.with_name("out" + suffix)
    assert_ok(run("decompress", pxz, "-o", out, "-q"))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(png)))


def test_verify_passes_on_a_good_encoding(tmp_path):
    src = save_png(tmp_path, "v.png", make_image("P"))
    assert_ok(run("compress", src, *PP, "--verify", "-q"))
    assert np.array_equal(pxzip.decompress((tmp_path / "v.pxz").read_bytes()), np.asarray(Image.open(src)))


def test_verify_failure_writes_nothing(tmp_path, monkeypatch):
    src = save_png(tmp_path, "v.png", make_image("RGB"))
    before = snapshot(tmp_path)
    # a decoder that gets one pixel wrong: --verify must catch it before anything is written
    real = codec.decompress
    monkeypatch.setattr(codec, "decompress", lambda data, model=None, progress=None, **kw: real(data, model) ^ 1)
    line = assert_fails(run("compress", src, *PP, "--verify"), 1)
    assert "verification failed" in line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- several files, stdin/stdout


def test_several_inputs_write_one_output_each(tmp_path):
    a = save_png(tmp_path, "a.png", make_image("RGB", seed=1))
    b = save_png(tmp_path, "b.png", make_image("L", seed=2))
    res = run("compress", a, b, *PP)
    assert_ok(res)
    lines = res.stderr.splitlines()
    assert len(lines) == 3  # one line per file, then the totals
    assert lines[-1].startswith("2 files:") and "bits/dim" in lines[-1]
    dec = tmp_path / "dec"
    dec.mkdir()
    for name in ("a.pxz", "b.pxz"):
        shutil.copy(tmp_path / name, dec / name)
    assert_ok(run("decompress", dec / "a.pxz", dec / "b.pxz", "-q"))
    assert_same_image(a, dec / "a.png")
    assert_same_image(b, dec / "b.png")
    # decompressing next to the originals would overwrite a.png and b.png: refused, originals kept
    before = snapshot(tmp_path)
    res = run("decompress", tmp_path / "a.pxz", tmp_path / "b.pxz", "-q")
    assert res.exit_code == 2 and len(res.stderr.splitlines()) == 2
    assert snapshot(tmp_path) == before


def test_one_bad_input_among_several_does_not_stop_the_others(tmp_path):
    a = save_png(tmp_path, "a.png", make_image("L", seed=3))
    b = save_png(tmp_path, "b.png", make_image("L", seed=4))
    res = run("compress", a, tmp_path / "missing.png", b, *PP, "-q")
    line = assert_fails(res, 2)
    assert "missing.png" in line
    assert container.unpack((tmp_path / "a.pxz").read_bytes())[0].mode == "L"
    assert container.unpack((tmp_path / "b.pxz").read_bytes())[0].mode == "L"
    assert not (tmp_path / "missing.pxz").exists()


def test_the_first_failure_decides_the_exit_code(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    res = run("compress", tmp_path / "text.png", tmp_path / "missing.png", *PP, "-q")
    assert res.exit_code == 5  # unreadable image (5) came before missing file (2)
    assert len(res.stderr.splitlines()) == 2


def test_stdin_to_stdout_in_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = save_png(tmp_path, "s.png", make_image("RGBA", seed=5))
    before = snapshot(tmp_path)
    res = run("compress", "-", *PP, input=src.read_bytes())
    assert_ok(res)
    pxz = res.stdout_bytes
    assert container.unpack(pxz)[0].mode == "RGBA"
    res = run("decompress", "-", "-q", input=pxz)
    assert_ok(res)
    assert_same_image(src.read_bytes(), res.stdout_bytes)
    res = run("info", "-", input=pxz)
    assert_ok(res)
    assert "5x4 RGBA" in res.stdout
    assert snapshot(tmp_path) == before  # nothing written to disk


def test_real_pipes_through_python_m(tmp_path, models_env):
    """`python -m pxzip` works, and `-` really reads stdin and writes stdout of a process."""
    src = save_png(tmp_path, "p.png", make_image("P-dup", seed=6))
    env = {**os.environ, "PXZIP_MODELS": str(models_env), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pxzip"]
    with open(src, "rb") as stdin:
        enc = subprocess.Popen([*cmd, "compress", "-", *PP, "-q"], stdin=stdin, stdout=subprocess.PIPE, env=env)
        dec = subprocess.run(
            [*cmd, "decompress", "-", "-o", "-", "-q"], stdin=enc.stdout, capture_output=True, env=env, timeout=120
        )
        enc.stdout.close()
        assert enc.wait(timeout=120) == 0
    assert dec.returncode == 0, dec.stderr
    assert b"Traceback" not in dec.stderr
    assert_same_image(src.read_bytes(), dec.stdout)
    assert sorted(os.listdir(tmp_path)) == ["p.png"]


# ---------------------------------------------------------------- overwriting


def test_existing_output_needs_force(tmp_path):
    src = save_png(tmp_path, "f.png", make_image("L"))
    (tmp_path / "f.pxz").write_bytes(b"keep me")
    before = snapshot(tmp_path)
    line = assert_fails(run("compress", src, *PP), 2)
    assert "already exists" in line and "--force" in line
    assert snapshot(tmp_path) == before
    assert_ok(run("compress", src, *PP, "--force", "-q"))
    assert container.unpack((tmp_path / "f.pxz").read_bytes())[0].mode == "L"
    # the same for decompress
    (tmp_path / "out.png").write_bytes(b"keep me too")
    before = snapshot(tmp_path)
    assert_fails(run("decompress", tmp_path / "f.pxz", "-o", tmp_path / "out.png"), 2)
    assert snapshot(tmp_path) == before
    assert_ok(run("decompress", tmp_path / "f.pxz", "-o", tmp_path / "out.png", "-f", "-q"))
    assert_same_image(src, tmp_path / "out.png")


@pytest.mark.parametrize(
    "args",
    [
        ["compress", "img.png", "-o", "img.png", "--force"],
        ["decompress", "img.pxz", "-o", "img.pxz", "--force"],
        ["decompress", "img.pxz", "-o", "link.png", "--force"],  # a symlink to the input
        ["compress", "img.png", "img.pxz", "--force"],  # a.png's output is the other input
        ["decompress", "img.pxz", "img.png", "--force"],  # img.png (not a pxz) is an input too
    ],
    ids=["compress-onto-self", "decompress-onto-self", "via-symlink", "compress-onto-other", "decompress-onto-other"],
)
def test_an_input_is_never_overwritten(rgb_pxz, monkeypatch, args):
    folder = rgb_pxz[0].parent
    monkeypatch.chdir(folder)
    (folder / "link.png").symlink_to("img.pxz")
    before = snapshot(folder)
    res = run(*args, *(PP if args[0] == "compress" else []), "-q")
    assert res.exit_code == 2, res.output
    assert "refusing to overwrite the input" in res.stderr
    assert "Traceback" not in res.output
    assert snapshot(folder) == before


def test_two_inputs_with_the_same_output_name(tmp_path):
    a = save_png(tmp_path, "x.png", make_image("L", seed=7))
    make_image("L", seed=8).save(tmp_path / "x.bmp")
    for force in ([], ["--force"]):  # even with --force, the second must not replace the first
        res = run("compress", a, tmp_path / "x.bmp", *PP, *force, "-q")
        line = assert_fails(res, 2)
        assert "x.bmp" in line
        assert np.array_equal(pxzip.decompress((tmp_path / "x.pxz").read_bytes()), np.asarray(Image.open(a)))
        (tmp_path / "x.pxz").unlink()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_outputs_get_normal_permissions(rgb_pxz):
    # the temp file behind the atomic write is created 0600; the result must follow the umask instead
    umask = os.umask(0o022)
    os.umask(umask)
    png, pxz = rgb_pxz
    assert pxz.stat().st_mode & 0o777 == 0o666 & ~umask
    assert_ok(run("decompress", pxz, "-o", pxz.with_name("o.png"), "-q"))
    assert pxz.with_name("o.png").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- info, help, version


def test_info_shows_format_model_size_payload_bits(rgb_pxz):
    _, pxz = rgb_pxz
    data = pxz.read_bytes()
    header, payload = container.unpack(data)
    model_id = zoo.load_model("tiny-pp-rgb").id.hex()
    res = run("info", pxz, pxz)  # several files: one line each
    assert_ok(res)
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    line = lines[0]
    assert "pxz format 1" in line
    assert f"tiny-pp-rgb ({model_id})" in line
    assert "5x4 RGB" in line
    assert f"payload {len(payload)} B" in line
    assert f"{8 * len(data) / (5 * 4 * 3):.4f} bits/dim" in line
    assert pxz.read_bytes() == data


def test_info_on_a_file_whose_model_is_not_installed(rgb_pxz, monkeypatch):
    monkeypatch.delenv("PXZIP_MODELS")
    res = run("info", rgb_pxz[1])
    assert_ok(res)  # info only reads the header: no model needed
    assert "not installed" in res.stdout


def test_help_on_every_command():
    res = run("-h")
    assert_ok(res)
    assert "Usage:" in res.stdout
    assert cli.commands, "no commands registered"
    for name in cli.commands:
        res = run(name, "-h")
        assert_ok(res)
        assert "Usage:" in res.stdout and name in res.stdout
        assert_ok(run(name, "--help"))


def test_version():
    res = run("--version")
    assert_ok(res)
    assert pxzip.__version__ in res.stdout


def test_models_lists_the_installed_ones():
    res = run("models")
    assert_ok(res)
    for name in ("tiny-pp-rgb", "tiny-pp-gray", "tiny-gated-rgb", "tiny-gated-gray"):
        assert name in res.stdout
    rows = {line.split()[0]: line for line in res.stdout.splitlines()}
    for kind in ("rgb", "gray"):
        assert rows[zoo.DEFAULTS[kind]].endswith(f"[default {kind} (sides <= {zoo.LARGE_SIDE})]")
        assert rows[zoo.LARGE_DEFAULTS[kind]].endswith(f"[default {kind} (a side > {zoo.LARGE_SIDE})]")


# ---------------------------------------------------------------- bad inputs: one line, exit code, no output


def _bad_image(folder: Path, case: str) -> Path:
    path = folder / f"bad-{case}.png"
    if case == "text":
        path.write_text("hello, I am not an image\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated-png":
        make_image("RGB", 12, 9).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif case == "16-bit-gray":
        Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 999).save(path)
        assert Image.open(path).mode == "I;16"
    elif case == "16-bit-rgb-png":  # Pillow would load it as 8-bit RGB: lossy if accepted
        rows = b"".join(b"\x00" + bytes(range(i, i + 24)) for i in range(3))
        path.write_bytes(png_chunks(4, 3, 16, 2, rows))
    elif case == "16-bit-ppm":
        path = path.with_suffix(".ppm")
        path.write_bytes(b"P6\n4 3\n65535\n" + bytes(range(72)))
    elif case == "cmyk":
        path = path.with_suffix(".tif")
        Image.new("CMYK", (4, 3), (1, 2, 3, 4)).save(path)
    elif case == "float":
        path = path.with_suffix(".tif")
        Image.fromarray(np.ones((3, 4), np.float32)).save(path)
        assert Image.open(path).mode == "F"
    elif case == "animated-gif":  # only the first frame would survive
        path = path.with_suffix(".gif")
        frames = [make_image("L", seed=s).convert("P") for s in (1, 2)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif case == "bomb":  # a 30000x30000 header: Pillow refuses it as a decompression bomb
        path.write_bytes(png_chunks(30000, 30000, 8, 0, b""))
    elif case == "pxz-as-image":
        path.write_bytes(pxzip.compress(make_image("L"), "tiny-pp-gray"))
    elif case == "directory":
        path.mkdir()
    elif case == "missing":
        pass
    return path


@pytest.mark.parametrize(
    "case, code",
    [
        ("text", 5),
        ("empty", 5),
        ("truncated-png", 5),
        ("16-bit-gray", 5),
        ("16-bit-rgb-png", 5),
        ("16-bit-ppm", 5),
        ("cmyk", 5),
        ("float", 5),
        ("animated-gif", 5),
        ("bomb", 5),
        ("pxz-as-image", 5),
        ("directory", 2),
        ("missing", 2),
    ],
)
def test_compress_refuses_bad_inputs(tmp_path, case, code):
    bad = _bad_image(tmp_path, case)
    before = snapshot(tmp_path)
    assert_fails(run("compress", bad, *PP), code)  # default output name
    assert_fails(run("compress", bad, *PP, "-o", tmp_path / "out.pxz"), code)
    assert snapshot(tmp_path) == before


def _bad_pxz(good: bytes, case: str) -> bytes:
    header, payload = container.unpack(good)
    head = good[: len(good) - len(payload)]
    if case == "garbage":
        return bytes(range(7, 200, 3))
    if case == "empty":
        return b""
    if case == "png":
        return png_chunks(2, 2, 8, 0, b"\x00\x01\x02\x00\x03\x04")
    if case == "truncated-header":
        return good[:5]
    if case == "truncated-payload":
        return good[:-3]
    if case == "newer-version":
        return good[:2] + bytes([(container.FORMAT_VERSION + 1) << 4 | good[2] & 0x0F]) + good[3:]
    if case == "unknown-model":
        return good[:4] + bytes(b ^ 0xFF for b in good[4:6]) + good[6:]
    if case == "bad-checksum":  # pixels decode fine, but do not match the stored CRC
        return head[:-4] + bytes(b ^ 0x55 for b in head[-4:]) + payload
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, codes",
    [
        ("garbage", {3}),
        ("empty", {3}),
        ("png", {3}),
        ("truncated-header", {3}),
        ("truncated-payload", {3, 6}),  # the coder either runs dry (3) or decodes wrong pixels (6)
        ("newer-version", {3}),
        ("unknown-model", {4}),
        ("bad-checksum", {6}),
    ],
)
def test_decompress_refuses_bad_files(rgb_pxz, case, codes):
    folder = rgb_pxz[0].parent
    bad = folder / "bad.pxz"
    bad.write_bytes(_bad_pxz(rgb_pxz[1].read_bytes(), case))
    before = snapshot(folder)
    for out in ([], ["-o", folder / "out.png"], ["-o", "-"]):
        res = run("decompress", bad, *out)
        assert res.exit_code in codes, res.output
        assert_fails(res, res.exit_code)
        assert res.stdout_bytes == b""
    assert snapshot(folder) == before


@pytest.mark.parametrize("case", ["missing", "directory"])
def test_decompress_and_info_on_missing_or_directory(tmp_path, case):
    path = _bad_image(tmp_path, case)
    before = snapshot(tmp_path)
    assert_fails(run("decompress", path), 2)
    assert_fails(run("info", path), 2)
    assert snapshot(tmp_path) == before


def test_info_refuses_a_non_pxz_but_still_reports_the_good_ones(rgb_pxz):
    png, pxz = rgb_pxz
    res = run("info", pxz, png)
    assert res.exit_code == 3
    assert "5x4 RGB" in res.stdout
    assert res.stderr.count("\n") == 1 and "wrong magic" in res.stderr


def test_file_made_with_a_model_that_is_not_installed(tmp_path, tiny_models, monkeypatch):
    src = save_png(tmp_path, "g.png", make_image("RGB", seed=9))
    gated = tiny_models["dir"] / "tiny-gated-rgb.safetensors"
    assert_ok(run("compress", src, "-m", gated, "-q"))
    only_pp = tmp_path / "only-pp"
    only_pp.mkdir()
    for name in ("tiny-pp-rgb.safetensors", "tiny-pp-gray.safetensors"):
        shutil.copy(tiny_models["dir"] / name, only_pp / name)
    monkeypatch.setenv("PXZIP_MODELS", str(only_pp))
    before = snapshot(tmp_path)
    line = assert_fails(run("decompress", tmp_path / "g.pxz", "-o", tmp_path / "back.png"), 4)
    assert tiny_models["gated_rgb"].id.hex() in line
    assert snapshot(tmp_path) == before
    # naming the model file is enough to decode it
    assert_ok(run("decompress", tmp_path / "g.pxz", "-o", tmp_path / "back.png", "-m", gated, "-q"))
    assert_same_image(src, tmp_path / "back.png")


def test_no_models_given_and_no_default_models_installed(tmp_path, monkeypatch):
    # pretend the shipped defaults are absent, as they are until models/ holds them
    empty = tmp_path / "no-zoo"
    empty.mkdir()
    monkeypatch.setattr(zoo, "models_dir", lambda: empty)
    monkeypatch.setattr(zoo, "REGISTRY", {})
    src = save_png(tmp_path, "d.png", make_image("RGB"))
    line = assert_fails(run("compress", src), 2)
    assert zoo.DEFAULTS["rgb"] in line
    # a gray model alone does not cover an RGBA image's color plane either
    rgba = save_png(tmp_path, "e.png", make_image("RGBA"))
    before = snapshot(tmp_path)
    assert zoo.DEFAULTS["rgb"] in assert_fails(run("compress", rgba, "-m", "tiny-pp-gray"), 2)
    assert snapshot(tmp_path) == before


def test_bad_model_arguments(tmp_path):
    src = save_png(tmp_path, "m.png", make_image("L"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    before = snapshot(tmp_path)
    assert_fails(run("compress", src, "-m", tmp_path / "missing.safetensors"), 2)
    assert_fails(run("compress", src, "-m", "no-such-model"), 2)
    assert_fails(run("compress", src, "-m", tmp_path / "junk.safetensors"), 7)
    assert_fails(run("decompress", tmp_path / "whatever.pxz", "-m", tmp_path / "junk.safetensors"), 7)
    assert snapshot(tmp_path) == before


def test_bad_output_arguments(rgb_pxz, tmp_path):
    png, pxz = rgb_pxz
    la = save_png(tmp_path, "la.png", make_image("LA"))
    assert_ok(run("compress", la, *PP, "-q"))
    (tmp_path / "adir").mkdir()
    before = snapshot(tmp_path)
    assert "cannot write" in assert_fails(run("compress", png, *PP, "-o", tmp_path / "nodir" / "x.pxz"), 2)
    assert "directory" in assert_fails(run("compress", png, *PP, "-o", tmp_path / "adir", "-f"), 2)
    assert_fails(run("decompress", pxz, "-o", tmp_path / "out.jpg"), 2)  # lossy/unknown format
    assert_fails(run("decompress", pxz, "-o", tmp_path / "noext"), 2)
    assert "LA" in assert_fails(run("decompress", tmp_path / "la.pxz", "-o", tmp_path / "la.bmp"), 2)
    assert_fails(run("compress", png, la, *PP, "-o", tmp_path / "one.pxz"), 2)  # -o with several inputs
    assert_fails(run("compress", png, *PP, "--tile", "3", "-o", tmp_path / "t.pxz"), 2)
    assert snapshot(tmp_path) == before
    assert snapshot(tmp_path / "adir") == {}


def test_click_usage_errors_exit_2(tmp_path):
    for args in (["compress"], ["decompress"], ["info"], ["compress", "x.png", "--tile", "big"], ["frobnicate"]):
        res = run(*args)
        assert res.exit_code == 2, args
        assert "Traceback" not in res.output and "Error" in res.stderr


# ---------------------------------------------------------------- the real entry point, main()


def run_main(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    """Run pxzip.cli.main() as the console script does (its own error handling, not CliRunner's)."""
    monkeypatch.setattr(sys, "argv", ["pxzip", *map(str, args)])
    try:
        cli_mod.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_main_exit_codes(tmp_path, monkeypatch, capsys, rgb_pxz):
    png, pxz = rgb_pxz
    code, out, _ = run_main(monkeypatch, capsys, "--version")
    assert code == 0 and pxzip.__version__ in out
    code, out, _ = run_main(monkeypatch, capsys, "info", pxz)
    assert code == 0 and "5x4 RGB" in out
    assert run_main(monkeypatch, capsys, "compress")[0] == 2
    code, _, err = run_main(monkeypatch, capsys, "compress", png, "-m", tmp_path / "nope.safetensors")
    assert code == 2 and err.count("\n") == 1 and err.startswith("pxzip: ")
    code, _, err = run_main(monkeypatch, capsys, "decompress", png)
    assert code == 3 and err.count("\n") == 1
    monkeypatch.delenv("PXZIP_MODELS")
    code, _, err = run_main(monkeypatch, capsys, "decompress", pxz, "-o", tmp_path / "o.png")
    assert code == 4 and err.count("\n") == 1


@pytest.mark.parametrize(
    "failure, code",
    [(KeyboardInterrupt(), 130), (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 1)],
    ids=["ctrl-c", "disk-full"],
)
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_failed_write_leaves_no_temp_file(rgb_pxz, monkeypatch, capsys, failure, code, command):
    png, pxz = rgb_pxz
    pxz.rename(pxz.with_name("in.pxz"))  # so that decompress has no existing img.png in its way
    before = snapshot(png.parent)

    def failing_rename(*args, **kwargs):
        raise failure  # after the temp file is fully written, before it is renamed into place

    monkeypatch.setattr(cli_mod.os, "replace", failing_rename)
    src = png if command == "compress" else pxz.with_name("in.pxz")
    out = png.with_name("out.pxz" if command == "compress" else "out.png")
    got, _, err = run_main(monkeypatch, capsys, command, src, "-o", out, *(PP if command == "compress" else []))
    assert got == code
    assert err.strip().splitlines()[-1].startswith("pxzip: ")
    assert snapshot(png.parent) == before


# ---------------------------------------------------------------- library: damaged files never decode silently


ALLOWED = (FormatError, ChecksumError)


@pytest.fixture(scope="module")
def small_files(tiny_models) -> dict[str, tuple[bytes, np.ndarray]]:
    """Small .pxz files (one with a palette section) and their pixels, for the damage loops."""
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    out = {}
    for kind, w, h in (("RGB", 3, 2), ("P-dup", 3, 3), ("L", 4, 3)):
        img = make_image(kind, w, h, seed=11)
        out[kind] = (codec.compress(img, models, fallback=False), np.asarray(img))
    return out


@pytest.mark.parametrize("kind", ["RGB", "P-dup"])
def test_truncation_at_every_length_raises_a_pxzip_error(small_files, tiny_models, kind):
    data, _ = small_files[kind]
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    header_len = len(data) - len(container.unpack(data)[1])
    for n in range(len(data)):
        with pytest.raises(ALLOWED) as info:  # anything else (IndexError, PanicException...) fails here
            pxzip.decompress(data[:n], models)
        if n < header_len:
            assert info.type is FormatError, n
        assert "\n" not in str(info.value)


def test_flipped_payload_bits_never_give_wrong_pixels(small_files, tiny_models):
    data, pixels = small_files["L"]
    models = [tiny_models["pp_gray"]]
    start = len(data) - len(container.unpack(data)[1])
    caught = 0
    for bit in range(8 * start, 8 * len(data)):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            out = pxzip.decompress(bytes(bad), models)
        except ALLOWED:
            caught += 1
            continue
        # an undetected flip is only acceptable if it did not matter (e.g. coder slack in the last bits)
        assert np.array_equal(out, pixels), bit
    assert caught >= (8 * (len(data) - start)) // 2  # the checksum really catches damage


def test_flipped_header_bits_give_pxzip_errors_or_the_right_pixels(small_files, tiny_models):
    data, pixels = small_files["P-dup"]
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    n_ids = 1
    size_bytes = range(4 + 2 * n_ids, 4 + 2 * n_ids + 2)  # width, height: one varint byte each here
    header_len = len(data) - len(container.unpack(data)[1])
    for pos in range(header_len):
        if pos in size_bytes:
            continue  # a bigger declared size just means a (slow) decode of a bigger image
        for b in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << b
            try:
                out = pxzip.decompress(bytes(bad), models)
            except PxzError as e:  # wrong model id: ModelNotFoundError; everything else Format/Checksum
                assert isinstance(e, (*ALLOWED, ModelNotFoundError)), (pos, b, e)
                continue
            assert np.array_equal(out, pixels), (pos, b)


def test_unknown_model_id_in_the_library(small_files, tiny_models):
    data, _ = small_files["RGB"]
    bad = data[:4] + bytes(b ^ 0xFF for b in data[4:6]) + data[6:]
    with pytest.raises(ModelNotFoundError, match="not installed"):
        pxzip.decompress(bad, [tiny_models["pp_rgb"]])


# ---------------------------------------------------------------- directory mode


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_recursive_directory_mode(tmp_path, jobs):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    imgs = {
        root / "a.png": make_image("RGB", seed=1),
        root / "sub" / "b.png": make_image("L", seed=2),
        root / "sub" / "c.png": make_image("RGBA", seed=3),
    }
    for path, img in imgs.items():
        img.save(path)
    (root / "notes.txt").write_text("not an image")
    res = run("compress", "-r", str(root), *PP, "-j", jobs)
    assert_ok(res)
    assert res.stderr.splitlines()[-1].startswith("3 files:")
    for path in imgs:
        assert path.with_suffix(".pxz").is_file()
        path.unlink()  # decompress -r must never overwrite: remove the originals first
    res = run("decompress", "-r", str(root), *PP, "-j", jobs)
    assert_ok(res)
    for path, img in imgs.items():
        with Image.open(path) as back:
            assert back.mode == img.mode and np.array_equal(np.asarray(back), np.asarray(img))


def test_recursive_refuses_to_overwrite_and_reports_per_file(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    make_image("RGB", seed=4).save(root / "a.png")
    assert_ok(run("compress", "-r", str(root), *PP))
    res = run("decompress", "-r", str(root), *PP)  # a.png exists: refused, not overwritten
    assert res.exit_code == 2 and "already exists" in res.stderr


# ---------------------------------------------------------------- terminals, stdin twice, progress


def test_stdin_can_be_read_once(tmp_path):
    src = save_png(tmp_path, "s.png", make_image("RGB"))
    line = assert_fails(run("compress", "-", "-", *PP, input=src.read_bytes()), 2)
    assert "'-' (stdin) can only be read once" in line


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_binary_output_to_a_terminal_is_refused(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    src = save_png(tmp_path, "s.png", make_image("RGB"))
    data = src.read_bytes() if command == "compress" else pxzip.compress(make_image("RGB"), "tiny-pp-rgb")
    monkeypatch.setattr(cli_mod, "_is_terminal", lambda stream: stream is sys.stdout)
    line = assert_fails(run(command, "-", *(PP if command == "compress" else []), input=data), 2)
    assert "refusing to write binary data to a terminal" in line
    # a file output is fine, stdout being a terminal or not
    assert_ok(run(command, "-", "-o", "out.bin" if command == "compress" else "out.png", *PP, input=data))


def test_stdin_from_a_terminal_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_mod, "_is_terminal", lambda stream: stream is sys.stdin)
    line = assert_fails(run("decompress", "-", "-o", tmp_path / "x.png"), 2)
    assert "stdin is a terminal" in line
    assert not (tmp_path / "x.png").exists()


def test_progress_bars(tmp_path, monkeypatch):
    """--progress draws a pixel bar per stage on stderr; by default (no terminal) nothing is drawn."""
    monkeypatch.setattr(cli_mod, "PROGRESS_DELAY_S", 0.0)
    src = save_png(tmp_path, "p.png", make_image("RGBA", w=9, h=7))
    res = run("compress", src, *PP, "--verify", "--progress")
    assert_ok(res)
    assert "encode" in res.stderr and "verify" in res.stderr and "px" in res.stderr
    res = run("decompress", tmp_path / "p.pxz", "-o", tmp_path / "p2.png", *PP, "--progress")
    assert_ok(res)
    assert "decode" in res.stderr and "/126" in res.stderr  # of 9 x 7 pixels x 2 planes (RGB + alpha)
    assert_same_image(src, tmp_path / "p2.png")
    res = run("decompress", tmp_path / "p.pxz", "-o", tmp_path / "p3.png", *PP)
    assert_ok(res)
    assert "decode:" not in res.stderr  # CliRunner's stderr is no terminal: auto means off


def test_library_progress_callback(tiny_models):
    """compress/decompress_many report (done, total) pixel counts: from 0, growing, ending at total."""
    calls: list[tuple[int, int]] = []
    img = make_image("RGBA", w=20, h=11)
    data = codec.compress(
        img, [tiny_models["pp_rgb"], tiny_models["pp_gray"]], tile=16, progress=lambda *a: calls.append(a)
    )
    total = 20 * 11 * 2
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and {t for _, t in calls} == {total}
    calls.clear()
    models = [tiny_models["pp_rgb"], tiny_models["pp_gray"]]
    out = codec.decompress_many([data, data], models, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 2 * total) and calls[-1] == (2 * total, 2 * total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and len(calls) > 4
    assert np.array_equal(out[0], np.asarray(img))


def test_many_files_decode_in_lockstep_and_a_bad_one_is_isolated(tmp_path, monkeypatch):
    """Several .pxz files (mixed modes and sizes) are decoded together; a damaged one fails alone."""
    images = {"a": make_image("RGB", 5, 4, 1), "b": make_image("L", 7, 3, 2), "c": make_image("RGBA", 3, 6, 3)}
    images |= {"d": make_image("P", 4, 4, 4), "e": make_image("RGB", 6, 2, 5)}
    for name, img in images.items():
        assert_ok(run("compress", save_png(tmp_path, f"{name}.png", img), *PP, "-q"))
        (tmp_path / f"{name}.png").unlink()
    bad = tmp_path / "c.pxz"
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0x40  # payload damage: found by the checksum after decoding
    bad.write_bytes(bytes(raw))
    calls = []
    real = codec.decompress_images
    monkeypatch.setattr(
        codec, "decompress_images", lambda datas, *a, **k: calls.append(len(datas)) or real(datas, *a, **k)
    )
    res = run("decompress", *sorted(tmp_path.glob("*.pxz")), *PP)
    assert res.exit_code == ChecksumError.exit_code, res.output
    assert calls == [5, 1, 1, 1, 1, 1]  # one lockstep batch of all five files; it failed: one by one
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("pxzip: ")]
    assert len(lines) == 1 and "c.pxz" in lines[0] and "checksum" in lines[0]
    for name, img in images.items():
        if name != "c":
            assert_same_image(img_bytes(img), tmp_path / f"{name}.png")
    assert not (tmp_path / "c.png").exists()
    res = run("decompress", *[tmp_path / f"{n}.pxz" for n in "abde"], *PP, "-f", "-q")
    assert_ok(res)
    assert calls[-1] == 4


def img_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
