"""The `pxzip` command line: a thin layer over the library API (exit codes: pxzip/errors.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from pathlib import Path

import click
import numpy as np

from pxzip import codec, container, imagefile, metadata, zoo
from pxzip import device as devices
from pxzip.errors import PxzError, UsageError
from pxzip.files import check_output, write_atomic
from pxzip.imagefile import MODE_CHANNELS, check_can_save, open_image, output_format
from pxzip.train_cli import ensemble as ensemble_cmd
from pxzip.train_cli import sample as sample_cmd
from pxzip.train_cli import train as train_cmd

DECODE_GROUP_FILES = 64  # .pxz files decoded in lockstep by one process
DECODE_GROUP_PIXELS = 1 << 24  # ... holding at most this many pixels at once
PROGRESS_DELAY_S = 1.0  # files coded faster than this never show a bar
_PROGRESS_HELP = "progress bar per file, not with -j [default: when stderr is a terminal]"


def _device_option(f):
    """--device on every command that runs the network (each checks it first: exit 2 for a missing GPU)."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="where the network runs: auto (CUDA when present), cpu, cuda or cuda:N (the same bytes on each)",
    )(f)


def _ray_option(f):
    """--ray [ADDRESS] on compress and decompress: code a folder on a Ray cluster (`pxzip.ray`)."""
    return click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        callback=_check_ray_address,
        help="code the folder (or URI) on Ray: with ADDRESS (host:port, ray://host:port, auto) join that "
        "cluster, without it start a local Ray instance; -o names the output folder, -j the workers "
        "[default: every CPU]; a rerun keeps outputs that already hold their image",
    )(f)


def _check_ray_address(_ctx, _param, value: str | None) -> str | None:
    # `--ray DIR` would take the folder for the address: refuse anything that is not one
    if value is None or value in ("local", "auto") or ":" in value:
        return value
    raise UsageError(
        f"--ray {value}: not a Ray address (host:port, ray://host:port or auto); for a local Ray instance "
        "write --ray last or before another option"
    )


def _err(msg: str) -> None:
    click.echo(f"pxzip: {msg}", err=True)


def _is_terminal(stream) -> bool:
    """True when a standard stream is an interactive terminal (a separate function so tests can fake one)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _check_std_streams(inputs, outputs) -> None:
    """Refuse, before any work, what zstd and gzip refuse: '-' read twice, binary to or from a terminal."""
    if list(inputs).count("-") > 1:
        raise UsageError("'-' (stdin) can only be read once")
    if "-" in inputs and _is_terminal(sys.stdin):
        raise UsageError("stdin is a terminal: pipe a file in, or name one")
    if "-" in outputs and _is_terminal(sys.stdout):
        raise UsageError("refusing to write binary data to a terminal: redirect stdout, or use -o FILE")


@contextlib.contextmanager
def _progress(enabled: bool, desc: str):
    """Yields a codec progress callback drawing a tqdm bar of pixels on stderr (or None when disabled).

    The bar appears only for files that take over a second, and is erased when done."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc=desc, unit="px", unit_scale=True, file=sys.stderr, leave=False, delay=PROGRESS_DELAY_S) as bar:

        def update(done: int, total: int) -> None:
            if bar.total != total:  # known once the file's header or image is read
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        yield update


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


def _run_each(
    inputs, outputs, work, quiet: bool, force: bool = False, jobs: int = 1, opts=None, group: int = 1
) -> None:
    """Run work per file; report each failure in one line; exit with the first code.

    outputs[i] is None for commands that write no file (info). work returns a message, or a dict
    with "msg", "bytes_in", "bytes_out", "dims" (summed into a summary line for several files).
    group == 1: work(inp, out, opts) per file. group > 1: work(pairs, opts) takes up to `group`
    (inp, out) pairs at once and returns a (result, PxzError or None) per pair (the decoder codes
    many files in lockstep). With jobs > 1 the groups run in that many worker processes (work
    must be picklable).
    """
    code = 0
    taken: set[str] = set()
    todo = []
    _check_std_streams(inputs, [o for o in outputs if o is not None])
    if opts is not None and "progress" in opts:
        # auto: a bar per file on an interactive stderr unless quiet; never from several processes at once
        wanted = _is_terminal(sys.stderr) and not quiet if opts["progress"] is None else opts["progress"]
        opts["progress"] = wanted and jobs == 1
    for inp, out in zip(inputs, outputs):
        try:
            if out is not None and out != "-":
                # any input, not only this one: `compress a.png a.pxz -f` must not clobber a.pxz
                clobbered = next((i for i in inputs if _same_file(i, out)), None)
                if clobbered is not None:
                    raise UsageError(f"refusing to overwrite the input {clobbered}")
                key = os.path.abspath(out)
                if key in taken:  # `compress a.png a.bmp` -> a.pxz twice: never overwrite our own output
                    raise UsageError(f"{out} is already the output of an earlier input")
                taken.add(key)
                check_output(out, force)  # fail before the slow coding, not after
            todo.append((inp, out))
        except PxzError as e:
            _err(f"{inp}: {e}")
            code = code or e.exit_code
    totals = [0, 0, 0, 0]  # files, bytes in, bytes out, dims

    def report(inp, result=None, error=None):
        nonlocal code
        if error is not None:
            _err(f"{inp}: {error}")
            code = code or error.exit_code
            return
        if isinstance(result, dict):
            for k, key in enumerate(("bytes_in", "bytes_out", "dims"), 1):
                totals[k] += result[key]
            totals[0] += 1
            result = result["msg"]
        if result and not quiet:
            click.echo(result, err=True)

    size = max(1, min(group, -(-len(todo) // jobs)))  # every job gets a share
    groups = [todo[k : k + size] for k in range(0, len(todo), size)]
    if jobs > 1 and len(groups) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: torch and its thread pools do not survive fork safely
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(pairs, pool.submit(_in_worker, work, pairs, opts, group > 1)) for pairs in groups]
            for pairs, fut in futures:
                for (inp, _), (result, error) in zip(pairs, fut.result()):
                    report(inp, result, error)
    else:
        for pairs in groups:
            for (inp, _), (result, error) in zip(pairs, _run_group(work, pairs, opts, group > 1)):
                report(inp, result, error)
    if totals[0] > 1 and not quiet:
        n, bin_, bout, dims = totals
        click.echo(
            f"{n} files: {bin_} -> {bout} bytes ({bout / max(bin_, 1):.1%}), "
            f"{8 * (bout if work is _compress_one else bin_) / max(dims, 1):.3f} bits/dim",  # of the .pxz side
            err=True,
        )
    if code:
        sys.exit(code)


def _run_group(work, pairs, opts, grouped: bool) -> list[tuple[object, PxzError | None]]:
    """(result, error) per (inp, out) pair: errors are returned, not raised, so one bad file
    never stops the others."""
    if grouped:
        return work(pairs, opts)
    out = []
    for inp, dest in pairs:
        try:
            out.append((work(inp, dest, opts), None))
        except PxzError as e:
            out.append((None, e))
    return out


def _in_worker(work, pairs, opts, grouped: bool):
    """Worker-process side of --jobs: one torch thread each."""
    import torch

    torch.set_num_threads(1)
    return _run_group(work, pairs, opts, grouped)


def _expand(inputs: tuple[str, ...], recursive: bool, suffix: str | None) -> tuple[str, ...]:
    """With -r, folders become the files under them: images (suffix None) or *.pxz."""
    if not recursive:
        folder = next((p for p in inputs if p != "-" and Path(p).is_dir()), None)
        if folder is not None:
            raise UsageError(f"{folder} is a folder: use -r to code every file under it")
        return inputs
    from pxzip import data

    out: list[str] = []
    for p in inputs:
        path = Path(p)
        if p != "-" and path.is_dir():
            files = sorted(path.rglob(f"*{suffix}")) if suffix else data.image_files([path])
            out.extend(str(f) for f in files if f.is_file())
        else:
            out.append(p)
    if not out:
        raise UsageError("no input files found")
    return tuple(out)


def _model_names() -> dict[bytes, str]:
    """Model id -> name for the zoo and $PXZIP_MODELS; hashes files instead of loading them."""
    reg = zoo.registry()
    names = {bytes.fromhex(sha[:4]): n for n, sha in reg.items()}
    for name, path in zoo.installed().items():
        if name in reg:
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
        names.setdefault(bytes.fromhex(digest[:4]), name)
    return names


def _models(names: tuple[str, ...]) -> list[zoo.Model]:
    return [zoo.load_model(n) for n in names]


class _Group(click.Group):
    """Turns a PxzError raised outside the per-file loop (bad -m, -o with several inputs, ...) into
    its one-line message and exit code, whether run by main() or by click's test runner."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PxzError as e:
            _err(str(e))
            ctx.exit(e.exit_code)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import constriction
    import torch

    from pxzip import __version__
    from pxzip.container import FORMAT_VERSION

    cv = getattr(constriction, "__version__", None)
    if cv is None:
        from importlib.metadata import version

        cv = version("constriction")
    click.echo(f"pxzip {__version__} (format {FORMAT_VERSION}), torch {torch.__version__}, constriction {cv}")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version, help="Show versions, exit."
)
def cli() -> None:
    """Lossless image compression with an exact PixelCNN entropy model."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="output file ('-' for stdout); default: INPUT with .pxz")
@click.option("-m", "--model", "model_names", multiple=True, help="model name or .safetensors file (per plane kind)")
@click.option(
    "--tile",
    type=int,
    default=None,
    help="tile side (power of two, 0 = one tile); default 256 in wavefront order, 64 in raster order",
)
@click.option(
    "--order",
    type=click.Choice(codec.ORDERS),
    default="auto",
    help="symbol order: wavefront (format 4), raster (with --no-adapt, readable by pxzip before format 4), "
    "auto (wavefront for images with a side above 64)",
)
@click.option(
    "--adapt/--no-adapt",
    default=True,
    help="fit head offsets to each unit of at least 16,384 pixels and store them where they pay "
    "(format 5); --no-adapt writes files that pxzip before format 5 reads",
)
@click.option(
    "--fallback/--no-fallback",
    default=True,
    help="also code each plane by context mixing (of values or indexed colours) and by its PNG deflate stream, "
    "keep the smallest "
    "(format 6 where a fallback wins: no image costs more than its PNG plus a few bytes); "
    "--no-fallback writes files that pxzip before format 6 reads",
)
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("--verify", is_flag=True, help="decode after encoding and fail (writing nothing) on any difference")
@click.option("-q", "--quiet", is_flag=True, help="no per-file summary")
@click.option("-r", "--recursive", is_flag=True, help="folders stand for every image file under them")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, help="files coded in parallel processes")
@click.option("--progress/--no-progress", default=None, help=_PROGRESS_HELP)
@click.option("--strip", is_flag=True, help="do not keep the ICC profile, EXIF, XMP and PNG text")
@click.option(
    "--label",
    callback=lambda _c, _p, v: _parse_label(v),
    help="class-conditional models: code with class label N, or 'auto': try every label, keep the shortest",
)
@_ray_option
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="with --ray: write WebDataset-style tar shards of N .pxz files instead of a mirrored tree",
)
@_device_option
def compress(
    inputs,
    output,
    model_names,
    tile,
    order,
    adapt,
    fallback,
    force,
    verify,
    quiet,
    recursive,
    jobs,
    progress,
    strip,
    label,
    ray_address,
    shards,
    device,
) -> None:
    """Compress images (PNG, BMP, TIFF, ...; '-' = stdin) to .pxz files.

    The pixels are coded losslessly; an ICC profile, EXIF, XMP and PNG text are kept beside them
    unless --strip.
    """
    devices.resolve(device)  # fail early on a missing GPU
    _models(model_names)  # fail early on a bad --model
    if ray_address is not None or shards is not None:
        opts = {"model": model_names, "tile": tile, "order": order, "adapt": adapt, "fallback": fallback}
        opts |= {"keep_metadata": not strip, "label": label, "verify": verify, "force": force, "device": device}
        _ray_job(True, inputs, output, ray_address, jobs, progress, quiet, recursive, opts, shards=shards)
        return
    inputs = _expand(inputs, recursive, None)
    opts = {"models": model_names, "tile": tile, "order": order, "adapt": adapt, "force": force, "verify": verify}
    opts["progress"], opts["fallback"], opts["device"] = progress, fallback, device
    opts["keep_metadata"] = not strip
    opts["label"] = label
    _run_each(inputs, _outputs(inputs, output, ".pxz"), _compress_one, quiet, force, jobs, opts)


def _ray_job(compressing: bool, inputs, output, address, jobs, progress, quiet, recursive, opts, shards=None) -> None:
    """compress/decompress --ray: one folder or URI in, one out; a line per failed image and a summary."""
    if address is None:
        raise UsageError("--shards writes a dataset on Ray: add --ray")
    if len(inputs) != 1 or output is None:
        raise UsageError("--ray codes one folder (or URI) into another: give one input and -o OUTPUT")
    if "://" not in inputs[0] and not Path(inputs[0]).is_dir():
        raise UsageError(f"{inputs[0]}: not a folder (--ray takes a folder or a URI)")
    if "://" not in inputs[0] and not recursive:
        raise UsageError(f"{inputs[0]} is a folder: use -r to code every file under it")
    from pxzip import ray as pxray  # a UsageError saying how to install it where Ray is missing

    workers = jobs if jobs > 1 else None  # -j 1 is the default: every CPU of the cluster
    bar = _is_terminal(sys.stderr) and not quiet if progress is None else progress
    kw = {"workers": workers, "address": None if address == "local" else address, "progress": bar}
    if compressing:
        summary = pxray.compress_dataset(inputs[0], output, shard_size=shards, **kw, **opts)
    else:
        summary = pxray.decompress_dataset(inputs[0], output, **kw, **opts)
    for r in summary.errors:
        _err(f"{r['name']}: {r['error']}")
    if not quiet:
        click.echo(summary.line(), err=True)
    if summary.errors:
        sys.exit(1)


def _parse_label(value: str | None) -> int | str | None:
    """--label: None, "auto" or a class number (range checked against the model when coding)."""
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--label {value!r}: expected a class number or 'auto'") from None


def _compress_one(inp: str, out: str, opts: dict) -> dict:
    models = _models(opts["models"]) or None
    raw = _read_input(inp)
    img = open_image(raw)
    try:
        with _progress(opts["progress"], f"{inp}: encode") as progress:
            keep = opts["keep_metadata"]
            tile, order, label, adapt = opts["tile"], opts["order"], opts["label"], opts["adapt"]
            data = codec.compress(
                img,
                models,
                tile=tile,
                progress=progress,
                keep_metadata=keep,
                label=label,
                order=order,
                adapt=adapt,
                fallback=opts["fallback"],
                device=opts["device"],
            )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if opts["verify"]:
        from pxzip import planes

        with _progress(opts["progress"], f"{inp}: verify") as progress:
            decoded = codec.decompress(data, models, progress=progress, device=opts["device"])
        if not np.array_equal(decoded, planes.split(img).pixels):
            raise PxzError("verification failed: the decoded image differs; nothing written")
    write_atomic(out, data, opts["force"])
    dims = img.width * img.height * MODE_CHANNELS[img.mode]
    msg = f"{inp} -> {out}: {len(raw)} -> {len(data)} bytes, {8 * len(data) / dims:.3f} bits/dim"
    label = container.unpack(data)[0].label
    if opts["label"] is not None and label is not None:
        msg += f" (label {label})"
    return {"msg": msg, "bytes_in": len(raw), "bytes_out": len(data), "dims": dims}


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="output image ('-' for stdout, PNG); default: INPUT with .png")
@click.option("-m", "--model", "model_names", multiple=True, help="model files to look in besides the installed ones")
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("-q", "--quiet", is_flag=True, help="no per-file summary")
@click.option("-r", "--recursive", is_flag=True, help="folders stand for every .pxz file under them")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, help="files decoded in parallel processes")
@click.option("--progress/--no-progress", default=None, help=_PROGRESS_HELP)
@_ray_option
@click.option("--format", "image_format", default=".png", help="with --ray: the suffix of the images written")
@_device_option
def decompress(
    inputs, output, model_names, force, quiet, recursive, jobs, progress, ray_address, image_format, device
) -> None:
    """Decompress .pxz files ('-' = stdin) to images (PNG unless -o names another lossless format).

    With --ray, tar shards of .pxz files under the folder are decoded too."""
    devices.resolve(device)
    _models(model_names)
    if ray_address is not None:
        suffix = image_format if image_format.startswith(".") else "." + image_format
        output_format("x" + suffix.lower())  # fail early on a format pxzip cannot write losslessly
        opts = {"model": model_names, "force": force, "device": device, "image_format": suffix.lower()}
        _ray_job(False, inputs, output, ray_address, jobs, progress, quiet, recursive, opts)
        return
    inputs = _expand(inputs, recursive, ".pxz")
    opts = {"models": model_names, "force": force, "progress": progress, "device": device}
    outputs = _outputs(inputs, output, ".png")
    _run_each(inputs, outputs, _decompress_group, quiet, force, jobs, opts, group=DECODE_GROUP_FILES)


def _decompress_group(pairs: list[tuple[str, str]], opts: dict) -> list[tuple[dict | None, PxzError | None]]:
    """Decode several .pxz files in lockstep (their tiles share decoder steps: a folder of small
    images decodes many times faster than file by file), then write each image."""
    results: list[tuple[dict | None, PxzError | None]] = [(None, None)] * len(pairs)
    ready = []  # (index, data, header, format, save options)
    for k, (inp, out) in enumerate(pairs):
        try:
            fmt, kw = output_format(out)
            data = _read_input(inp)
            header, _ = container.unpack(data)
            check_can_save(header.mode, fmt, kw, header.width, header.height)
            ready.append((k, data, header, fmt, kw))
        except PxzError as e:
            results[k] = (None, e)
    models = _models(opts["models"]) or None
    start = 0
    while start < len(ready):  # sub-groups of at most DECODE_GROUP_PIXELS pixels (memory)
        end, pixels = start, 0
        while end < len(ready) and (end == start or pixels + _pixels(ready[end][2]) <= DECODE_GROUP_PIXELS):
            pixels += _pixels(ready[end][2])
            end += 1
        part = ready[start:end]
        start = end
        what = pairs[part[0][0]][0] if len(part) == 1 else f"{len(part)} files"
        try:
            with _progress(opts["progress"], f"{what}: decode") as progress:
                images = codec.decompress_images([r[1] for r in part], models, progress, opts["device"])
        except PxzError:
            images = [None] * len(part)  # find out which file is bad: one at a time
        for (k, data, header, fmt, kw), img in zip(part, images):
            inp, out = pairs[k]
            try:
                if img is None:
                    img = codec.decompress_image(data, models, device=opts["device"])
                results[k] = (_write_image(inp, out, img, data, header, fmt, kw, opts["force"]), None)
            except PxzError as e:
                results[k] = (None, e)
    return results


def _pixels(header: container.Header) -> int:
    return header.width * header.height


def _write_image(inp, out, img, data: bytes, header, fmt: str, kw: dict, force: bool) -> dict:
    dropped: list[str] = []

    def save(dest) -> None:
        dropped.extend(imagefile.save(img, dest, fmt, kw, header.metadata, out))

    if out == "-":
        buf = io.BytesIO()
        save(buf)
        write_atomic(out, buf.getvalue(), force)
    else:
        write_atomic(out, None, force, save=save)
    if dropped:  # the pixels are all there; say what the chosen format could not carry
        _err(f"{inp}: note: {', '.join(dropped)} not written ({fmt} cannot hold it; .png keeps everything)")
    dims = img.width * img.height * MODE_CHANNELS[img.mode]
    msg = f"{inp} -> {out}: {img.width}x{img.height} {img.mode}"
    return {"msg": msg, "bytes_in": len(data), "bytes_out": Path(out).stat().st_size if out != "-" else 0, "dims": dims}


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--verify/--no-verify",
    default=False,
    help="Also decode each file and check its checksum (exit codes as for decompress). Without it only "
    "the header is read: a damaged or truncated payload is not noticed, and the line says 'not verified'.",
)
def info(inputs, verify: bool) -> None:
    """Show the header of .pxz files: format, model, size, mode, payload, bits/dim."""

    names: dict[bytes, str] | None = None

    def work(inp: str, _out: None, _opts) -> str:
        nonlocal names
        data = _read_input(inp)
        h, payload = container.unpack(data)
        version = data[len(container.MAGIC)] >> 4  # the file's own version, not the newest this build reads
        dims = h.width * h.height * MODE_CHANNELS[h.mode]
        if names is None:
            names = _model_names()
        used = container.used_slots(h)
        ids = (
            ", ".join(
                f"{names[i]} ({i.hex()})" if i in names else f"{i.hex()} (not installed)"
                for k, i in zip(container.model_slots(h.mode, h.palette_as_rgb), h.model_ids)
                if k in used
            )
            or "none"
        )
        if verify:
            codec.decompress(data)  # raises (FormatError, ChecksumError, ...) exactly as decompress does
        tile = f"{1 << h.tile_log2}x{1 << h.tile_log2}" if h.tile_log2 else "none"
        click.echo(
            f"{inp}: pxz format {version}, {h.width}x{h.height} {h.mode}, models {ids}, tiles {tile}, "
            f"header {len(data) - len(payload)} B, payload {len(payload)} B, {8 * len(data) / dims:.4f} bits/dim"
            + (f", class label {h.label}" if h.label is not None else "")
            + (f", order {'wavefront' if h.wavefront else 'raster'}")
            + (f", head offsets in {sum(map(bool, h.offsets))} of {len(h.offsets)} units" if h.offsets else "")
            + "".join(f", {metadata.LABELS[k]} {len(v)} B" for k, v in h.metadata)
            + (f", planes {' + '.join(_plane_coder(c) for c in h.coders)}" if h.coders else "")
            + (", verified" if verify else ", not verified (--verify decodes it)")
        )
        return ""

    # info writes no file: no output to check against the inputs (it used to refuse every real file)
    _run_each(inputs, [None] * len(inputs), work, quiet=True)


def _plane_coder(c: container.PlaneCode) -> str:
    """How a format-6 plane is stored, for `info`."""
    if c.method == container.CMIX:
        return f"context mixing ({c.param} bit{'s' if c.param > 1 else ''} per symbol, {len(c.data)} B)"
    if c.method == container.INDEXED:
        return f"indexed colours ({c.param}-bit indices, {len(c.data)} B)"
    if c.method == container.DEFLATE:
        return f"deflate ({c.param}-bit PNG rows, {len(c.data)} B)"
    return "network"


@cli.command(name="models")
def list_models() -> None:
    """List installed models (name, id, kind, parameters, which images they are the default for)."""
    roles: dict[str, list[str]] = {}
    for kind, name in zoo.DEFAULTS.items():
        small = f" (sides <= {zoo.LARGE_SIDE})" if kind in zoo.LARGE_DEFAULTS else ""
        roles.setdefault(name, []).append(f"default {kind}{small}")
    for kind, name in zoo.LARGE_DEFAULTS.items():
        roles.setdefault(name, []).append(f"default {kind} (a side > {zoo.LARGE_SIDE})")
    for name, path in sorted(zoo.installed().items()):
        try:
            m = zoo.load_model(name)
            c = m.cfg
            arch = f"{c.arch} F={c.num_filters} blocks={c.num_resnet}"
            arch += f" classes={c.num_classes}" if c.num_classes else ""
            arch += f" x{m.members} (ensemble)" if m.members > 1 else ""
            role = f"  [{', '.join(roles[name])}]" if name in roles else ""
            click.echo(f"{name:20s} id {m.id.hex()}  {m.kind:4s}  {arch}  {path}{role}")
        except PxzError as e:
            click.echo(f"{name:20s} BROKEN: {e}")


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="CIFAR-10 (MNIST) folder [default: $PXZIP_DATA/cifar10 (mnist), else ../shared/data/cifar10 or "
    "./shared/data/cifar10 from the current folder, else ./data/cifar10]",
)
@click.option("--download", is_flag=True, help="download CIFAR-10 or MNIST into --data-dir first (md5-checked)")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", help="CIFAR-10 or MNIST split")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="only the first N images")
@click.option("-m", "--model", "model_names", multiple=True, help="model name or file (one per plane kind)")
@click.option(
    "--baselines",
    default=None,
    help="comma list of png, webp, jxl-e7, jxl-e9, tiff-g4; or none "
    "[default: png,webp,jxl-e7; png,tiff-g4 for 1-bit images]",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write every number as JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="per-image bits/dim histogram (PNG)")
@click.option("--batch", type=click.IntRange(min=1), default=256, help="images per decompress_many call")
@click.option("--tile", type=int, default=None, help="tile side, as for compress")
@click.option("--order", type=click.Choice(codec.ORDERS), default="auto", help="symbol order, as for compress")
@click.option("--adapt/--no-adapt", default=True, help="head offsets, as for compress")
@click.option("--fallback/--no-fallback", default=True, help="fallback plane coders, as for compress")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads [default: torch's choice]")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, help="worker processes, one thread each")
@click.option(
    "--label",
    type=click.Choice(["auto"]),
    default=None,
    help="class-conditional models: code each image with its best label; report the NLL with and without labels",
)
@_device_option
def bench(
    sources,
    data_dir,
    download,
    split,
    limit,
    model_names,
    baselines,
    json_path,
    plot_path,
    batch,
    tile,
    order,
    adapt,
    fallback,
    threads,
    jobs,
    label,
    device,
) -> None:
    """Benchmark on CIFAR-10 (`bench cifar10`), binarised MNIST (`bench mnist`) or image files and
    folders (`bench PATH...`).

    Every image is compressed and decoded again; a failed or inexact round trip exits 1.
    Reports bits/dim (float NLL, exact tables' ideal length, payload, whole file), speed,
    memory and baselines. To bench a folder named cifar10, write ./cifar10.
    """
    import torch

    from pxzip import bench as B

    devices.resolve(device)  # a missing GPU fails now, not after loading the data
    if threads:
        torch.set_num_threads(threads)
    names = B.parse_baselines(baselines)
    plot_fmt = Path(plot_path).suffix.lower()[1:] if plot_path else None
    if plot_path:
        B.check_plot_available()
        if plot_fmt not in B.PLOT_FORMATS:
            raise UsageError(f"--plot {plot_path}: use a .png, .pdf or .svg file name")
    for path in (json_path, plot_path):  # before the long run, not after it
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: no such folder")
    ctx = click.get_current_context()
    cifar_opts = [o for o in ("data_dir", "download", "split") if ctx.get_parameter_source(o).name == "COMMANDLINE"]
    items, dataset, source = B.load_sources(sources, data_dir, download, split, limit, cifar_opts)
    if baselines is None and all(it.kind == "bilevel" for it in items):
        names = list(B.BILEVEL_BASELINES)
    report = B.run(
        items,
        list(model_names),
        names,
        batch=batch,
        tile=tile,
        dataset=dataset,
        source=source,
        jobs=jobs,
        label=label,
        order=order,
        adapt=adapt,
        fallback=fallback,
        device=device,
    )
    click.echo(B.format_report(report))
    if json_path:  # temp file + rename: never a partial report
        write_atomic(json_path, B.report_json(report), force=True)
    if plot_path:
        write_atomic(plot_path, None, force=True, save=lambda tmp: B.plot(report, tmp, plot_fmt))
    if report["n_errors"]:
        _err(f"{report['n_errors']} of {report['n']} images did not round-trip exactly")
        sys.exit(1)


cli.add_command(train_cmd)
cli.add_command(sample_cmd)
cli.add_command(ensemble_cmd)


def main() -> None:
    try:
        # without standalone mode click returns (not raises) the code of ctx.exit(n)
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
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
