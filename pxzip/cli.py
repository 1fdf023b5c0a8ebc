"""The `pxzip` command line: a thin layer over the library API (exit codes: pxzip/errors.py)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from pxzip import codec, container, zoo
from pxzip.errors import PxzError, UnsupportedImageError, UsageError

MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 1, "1": 1}
IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".webp"}


def _err(msg: str) -> None:
    click.echo(f"pxzip: {msg}", err=True)


def write_atomic(path: str, data: bytes | None, force: bool, save=None) -> None:
    """Write `data` (or call save(tmp_path)) to path via a temp file + rename: never a partial file."""
    if path == "-":
        sys.stdout.buffer.write(data if data is not None else b"")
        sys.stdout.buffer.flush()
        return
    out = Path(path)
    if out.exists() and not force:
        raise UsageError(f"{path} already exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
        if save is not None:
            save(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _same_file(a: str, b: str) -> bool:
    try:
        return a != "-" and b != "-" and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _outputs(inputs: tuple[str, ...], output: str | None, suffix: str) -> list[str]:
    if output is not None:
        if len(inputs) > 1:
            raise UsageError("-o/--output takes one input; with several inputs outputs are named after them")
        return [output]
    outs = []
    for p in inputs:
        if p == "-":
            outs.append("-")
        else:
            base = Path(p)
            new = base.with_suffix(suffix)
            if new == base:  # decompressing x.png? never reuse the input's name
                new = base.with_name(base.name + suffix)
            outs.append(str(new))
    return outs


def _run_each(inputs, outputs, work, quiet: bool) -> None:
    """Run work(inp, out) per file; report each failure in one line; exit with the first code."""
    code = 0
    for inp, out in zip(inputs, outputs):
        try:
            if _same_file(inp, out):
                raise UsageError(f"refusing to overwrite the input {inp}")
            msg = work(inp, out)
            if msg and not quiet:
                click.echo(msg, err=True)
        except PxzError as e:
            _err(f"{inp}: {e}")
            code = code or e.exit_code
    if code:
        sys.exit(code)


def _models(names: tuple[str, ...]) -> list[zoo.Model]:
    return [zoo.load_model(n) for n in names]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="pxzip", message="%(prog)s %(version)s")
def cli() -> None:
    """Lossless image compression with an exact PixelCNN entropy model."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="output file ('-' for stdout); default: INPUT with .pxz")
@click.option("-m", "--model", "model_names", multiple=True, help="model name or .safetensors file (per plane kind)")
@click.option(
    "--tile", type=int, default=None, help="tile side (power of two, 0 = one tile); default 64 for large images"
)
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("--verify", is_flag=True, help="decode after encoding and fail (writing nothing) on any difference")
@click.option("-q", "--quiet", is_flag=True, help="no per-file summary")
def compress(inputs, output, model_names, tile, force, verify, quiet) -> None:
    """Compress images (PNG, BMP, TIFF, ...; '-' = stdin) to .pxz files."""
    from PIL import Image, UnidentifiedImageError

    models = _models(model_names)

    def work(inp: str, out: str) -> str:
        raw = _read_input(inp)
        import io

        try:
            img = Image.open(io.BytesIO(raw))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise UnsupportedImageError(f"cannot read image: {e}") from None
        try:
            data = codec.compress(img, models or None, tile=tile)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if verify:
            from pxzip import planes

            if not np.array_equal(codec.decompress(data, models or None), planes.split(img).pixels):
                raise PxzError("verification failed: the decoded image differs; nothing written")
        write_atomic(out, data, force)
        dims = img.width * img.height * MODE_CHANNELS[img.mode]
        return f"{inp} -> {out}: {len(raw)} -> {len(data)} bytes, {8 * len(data) / dims:.3f} bits/dim"

    _run_each(inputs, _outputs(inputs, output, ".pxz"), work, quiet)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="output image ('-' for stdout, PNG); default: INPUT with .png")
@click.option("-m", "--model", "model_names", multiple=True, help="model files to look in besides the installed ones")
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("-q", "--quiet", is_flag=True, help="no per-file summary")
def decompress(inputs, output, model_names, force, quiet) -> None:
    """Decompress .pxz files ('-' = stdin) to images (PNG unless -o names another lossless format)."""
    models = _models(model_names)

    def work(inp: str, out: str) -> str:
        img = codec.decompress_image(_read_input(inp), models or None)
        suffix = Path(out).suffix.lower() if out != "-" else ".png"
        if suffix not in IMAGE_SUFFIXES:
            raise UsageError(
                f"cannot write {suffix or 'an image without suffix'}: use one of {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        fmt = {".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM", ".pbm": "PPM"}.get(suffix, suffix[1:].upper())
        kw = {"lossless": True} if fmt == "WEBP" else {}
        if out == "-":
            import io

            buf = io.BytesIO()
            img.save(buf, format=fmt, **kw)
            write_atomic(out, buf.getvalue(), force)
        else:
            write_atomic(out, None, force, save=lambda tmp: img.save(tmp, format=fmt, **kw))
        return f"{inp} -> {out}: {img.width}x{img.height} {img.mode}"

    _run_each(inputs, _outputs(inputs, output, ".png"), work, quiet)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
def info(inputs) -> None:
    """Show the header of .pxz files: format, model, size, mode, payload, bits/dim."""

    def work(inp: str, _out: str) -> str:
        data = _read_input(inp)
        h, payload = container.unpack(data)
        dims = h.width * h.height * MODE_CHANNELS[h.mode]
        names = {bytes.fromhex(sha[:4]): n for n, sha in zoo.registry().items()}
        ids = ", ".join(f"{names[i]} ({i.hex()})" if i in names else i.hex() for i in h.model_ids)
        tile = f"{1 << h.tile_log2}x{1 << h.tile_log2}" if h.tile_log2 else "none"
        click.echo(
            f"{inp}: pxz format {container.FORMAT_VERSION}, {h.width}x{h.height} {h.mode}, models {ids}, tiles {tile}, "
            f"header {len(data) - len(payload)} B, payload {len(payload)} B, {8 * len(data) / dims:.4f} bits/dim"
        )
        return ""

    _run_each(inputs, list(inputs), work, quiet=True)


@cli.command(name="models")
def list_models() -> None:
    """List installed models (name, id, kind, parameters)."""
    for name, path in sorted(zoo.installed().items()):
        try:
            m = zoo.load_model(name)
            c = m.cfg
            click.echo(
                f"{name:20s} id {m.id.hex()}  {m.kind:4s}  {c.arch} F={c.num_filters} blocks={c.num_resnet}  {path}"
            )
        except PxzError as e:
            click.echo(f"{name:20s} BROKEN: {e}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        _err("interrupted")
        sys.exit(130)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except PxzError as e:
        _err(str(e))
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(1)
