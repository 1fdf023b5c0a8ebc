"""Dataset jobs without a scheduler: storage, groups, tar shards and manifest rows (used by `pxzip.ray`).

A job codes a dataset in *groups* of files; each group is independent (one call of a worker), so a
scheduler may run, lose and rerun groups in any order on any machine: a group's outputs are written
atomically and a rerun keeps every output that already holds its image (`codec.matches`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pxzip import codec, container, data, files, imagefile, planes, zoo
from pxzip.errors import FormatError, PxzError, UsageError, describe

MANIFEST = "manifest.jsonl"  # one JSON object per image, sorted by name, at the output's root
SHARD_SUFFIX = ".tar"
# a manifest row: every key is present in every row (Ray Data needs one schema for all batches)
ROW_KEYS = ("name", "output", "status", "bytes", "dims", "bits_per_dim", "mode", "width", "height", "sha256", "error")
STATUSES = ("coded", "kept", "error")  # coded now; kept: an earlier run's output holds it; error: see "error"


@dataclass(frozen=True)
class Options:
    """How every image of a dataset job is coded (the `pxzip.compress` keywords, plus the job's own)."""

    model: tuple[str, ...] = ()  # model names or .safetensors paths, one per plane kind; () = shipped defaults
    tile: int | None = None  # tile side as for compress (None: the order's default)
    order: str = "auto"  # symbol order as for compress
    adapt: bool = True  # head offsets as for compress
    fallback: bool = True  # fallback plane coders as for compress
    keep_metadata: bool = True  # store ICC profile, EXIF, XMP and PNG text
    label: int | str | None = None  # class label, "auto" or None, as for compress
    verify: bool = False  # decode every new file and compare it with its image before writing it
    force: bool = False  # code every image again, even where an earlier output already holds it
    device: str = "cpu"  # where each worker's network runs ("cuda" needs GPUs on the workers)
    image_format: str = ".png"  # decompression: the suffix (format) images are written in
    convert: str | None = None  # decompression into arrays: a PIL mode to convert every image to ("RGB", "L")


class Store:
    """A folder: a local path, or any URI pyarrow.fs understands (s3://, gs://, hdfs://, file://).

    Names are relative, '/'-separated. Writes are atomic: on a local disk by a temp file and a rename
    (`files.write_atomic` for plain paths; a hidden temp name and `move` for file:// URIs), while
    object stores publish an object only when its upload completes. Picklable, so workers on other
    machines open the same folder.
    """

    def __init__(self, where: str | Path) -> None:
        where = str(where)
        self.uri = where
        self.local = "://" not in where  # a plain path; a URI (file:// too) goes through pyarrow.fs
        self.root = where
        self._fs = None

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __getstate__(self):
        return {"uri": self.uri, "local": self.local, "root": self.root, "_fs": None}

    def _remote(self):
        """(pyarrow filesystem, root path inside it), opened once per process."""
        if self._fs is None:
            try:
                import pyarrow.fs as pafs
            except ImportError:
                raise UsageError(f"{self.uri}: URIs need pyarrow (pip install 'pxzip[ray]')") from None
            try:
                self._fs = pafs.FileSystem.from_uri(self.uri)
            except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for unknown schemes or buckets
                raise UsageError(f"{self.uri}: {describe(e)}") from None
        return self._fs

    def path(self, name: str) -> str:
        if self.local:
            return str(Path(self.root) / name)
        return posixpath.join(self._remote()[1], name)

    def is_folder(self) -> bool:
        if self.local:
            return Path(self.root).is_dir()
        import pyarrow.fs as pafs

        fs, root = self._remote()
        return fs.get_file_info(root).type == pafs.FileType.Directory

    def list(self, suffixes) -> list[str]:
        """Names of the files under the folder whose suffix (lower case) is in suffixes, sorted."""
        if self.local:
            root = Path(self.root)
            if not root.is_dir():
                raise UsageError(f"no such folder: {self.root}")
            found = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        else:
            import pyarrow.fs as pafs

            fs, root = self._remote()
            if fs.get_file_info(root).type != pafs.FileType.Directory:
                raise UsageError(f"no such folder: {self.uri}")
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            found = (posixpath.relpath(i.path, root) for i in infos if i.type == pafs.FileType.File)
        # names starting with '.' are hidden files, and our own temp files while a write is under way
        return sorted(n for n in found if posixpath.splitext(n)[1].lower() in suffixes and not _hidden(n))

    def exists(self, name: str) -> bool:
        if self.local:
            return Path(self.path(name)).is_file()
        import pyarrow.fs as pafs

        return self._remote()[0].get_file_info(self.path(name)).type == pafs.FileType.File

    def read(self, name: str) -> bytes:
        try:
            if self.local:
                return Path(self.path(name)).read_bytes()
            with self._remote()[0].open_input_stream(self.path(name)) as f:
                return f.read()
        except OSError as e:
            raise PxzError(f"cannot read {name}: {e.strerror or describe(e)}") from None

    def write(self, name: str, payload: bytes) -> None:
        if self.local:
            dest = Path(self.path(name))
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise PxzError(f"cannot write {name}: {e.strerror or e}") from None
            files.write_atomic(str(dest), payload, force=True)
            return
        fs, dest = self._remote()[0], self.path(name)
        # a local disk would show a partial file while it is written; object stores never do
        tmp = posixpath.join(posixpath.dirname(dest), f".{posixpath.basename(dest)}.{uuid.uuid4().hex}.tmp")
        staged = fs.type_name == "local"
        try:
            fs.create_dir(posixpath.dirname(dest), recursive=True)
            with fs.open_output_stream(tmp if staged else dest) as f:
                f.write(payload)
            if staged:
                fs.move(tmp, dest)
        except OSError as e:
            if staged:
                with contextlib.suppress(OSError):
                    fs.delete_file(tmp)
            raise PxzError(f"cannot write {name}: {describe(e)}") from None


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


# ---- what a job does: groups of names ----------------------------------------------------------


def relative_name(name: str) -> str:
    """A name made safe to join to an output folder: '/'-separated, leading '/' dropped (an absolute
    path from a Ray Dataset's "path" column is mirrored below the output); '..' is refused, so
    no name (a hostile tar member, say) writes outside the output folder."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UsageError(f"{name!r}: not a name inside the output folder")
    return "/".join(parts)


def pxz_name(name: str) -> str:
    """Output name of an image in a mirrored tree: 'a/b.png' -> 'a/b.pxz'."""
    return posixpath.splitext(name)[0] + ".pxz"


def member_key(name: str) -> str:
    """WebDataset sample key of an image: its name without suffix, dots in the file name made '_'
    (WebDataset takes everything after the first dot of a member's name as its extension)."""
    head, tail = posixpath.split(posixpath.splitext(name)[0])
    return posixpath.join(head, tail.replace(".", "_"))


def shard_name(k: int) -> str:
    return f"shard-{k:06d}{SHARD_SUFFIX}"


def groups_of(names: list[str], size: int, workers: int = 1) -> list[list[str]]:
    """Consecutive groups of at most size names, small enough that each of workers gets one."""
    size = max(1, min(size, -(-len(names) // workers)))
    return [names[k : k + size] for k in range(0, len(names), size)]


def clashes(names: list[str], out_name) -> dict[str, str]:
    """name -> error for names whose output name an earlier name already takes ('a.png', 'a.bmp')."""
    taken: dict[str, str] = {}
    bad = {}
    for n in names:
        o = out_name(n)
        if o in taken:
            bad[n] = f"its output {o} is already the output of {taken[o]}"
        else:
            taken[o] = n
    return bad


def make_row(name: str, **kw) -> dict:
    """A manifest row; with only error=... an error row."""
    r = {"name": name, "output": "", "status": "error", "bytes": 0, "dims": 0}
    r |= {"bits_per_dim": 0.0, "mode": "", "width": 0, "height": 0, "sha256": "", "error": ""}
    r.update(kw)
    r["bits_per_dim"] = 8 * r["bytes"] / r["dims"] if r["dims"] else 0.0  # of the .pxz file
    return r


def pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 of a pixel array as `pxzip.decompress` returns it (C order, 1-bit as 0/1 bytes)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def _image_facts(img) -> dict:
    pixels = planes.split(img).pixels
    dims = img.width * img.height * imagefile.MODE_CHANNELS[img.mode]
    return {"mode": img.mode, "width": img.width, "height": img.height, "dims": dims, "sha256": pixels_sha256(pixels)}


def _error_text(e: BaseException) -> str:
    # a PxzError is a user-facing message; anything else is a bug in pxzip: say which exception it was
    return str(e) if isinstance(e, PxzError) else f"internal error ({type(e).__name__}): {describe(e)}"


@dataclass
class Coder:
    """One worker's models and options: loads the models once, then codes group after group."""

    opts: Options
    models: list[zoo.Model] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.models = [zoo.load_model(m) for m in self.opts.model] or None

    # -- compression --

    def _compress(self, img, existing: bytes | None, target: str) -> tuple[bytes, str]:
        """(.pxz bytes, status) for an opened image; existing: the output an earlier run left, if any."""
        o = self.opts
        if existing is not None and not o.force:
            if codec.matches(existing, img, self.models):
                return existing, "kept"
            raise PxzError(f"{target} exists and does not hold this image with these models (--force replaces it)")
        try:
            out = codec.compress(
                img,
                self.models,
                tile=o.tile,
                keep_metadata=o.keep_metadata,
                label=o.label,
                order=o.order,
                adapt=o.adapt,
                fallback=o.fallback,
                device=o.device,
            )
        except ValueError as e:  # a bad tile or label for this image: the cli's usage errors
            raise UsageError(str(e)) from None
        decoded = codec.decompress(out, self.models, device=o.device) if o.verify else None
        if decoded is not None and not np.array_equal(decoded, planes.split(img).pixels):
            raise PxzError("verification failed: the decoded image differs; nothing written")
        return out, "coded"

    def compress_item(self, name: str, load, existing: bytes | None, target: str) -> tuple[dict, bytes | None]:
        """(manifest row, .pxz bytes or None) for one image; load() returns the image (PIL or array)."""
        try:
            img = planes.to_image(load())
            facts = _image_facts(img)
            out, status = self._compress(img, existing, target)
        except Exception as e:  # one bad image is a row of the manifest, never a failed job
            return make_row(name, error=_error_text(e)), None
        return make_row(name, output=target, status=status, bytes=len(out), **facts), out

    def compress_files(self, items, out: Store) -> list[dict]:
        """Code (name, load) items to .pxz files in out named after them (`pxz_name`)."""
        rows = []
        for name, load in items:
            try:
                target = pxz_name(relative_name(name))
                existing = out.read(target) if not self.opts.force and out.exists(target) else None
            except PxzError as e:
                rows.append(make_row(name, error=str(e)))
                continue
            row, payload = self.compress_item(name, load, existing, target)
            if payload is not None and row["status"] == "coded":
                try:
                    out.write(target, payload)
                except PxzError as e:
                    row = make_row(name, error=str(e))
            rows.append(row)
        return rows

    def compress_shard(self, items, out: Store, shard: str) -> list[dict]:
        """Code (name, load) items into one tar shard of .pxz members (WebDataset layout), written at once.

        An existing shard is kept when every member holds its image, and is an error for all of its
        images otherwise (--force replaces it)."""
        try:
            old = _read_shard(out, shard) if not self.opts.force and out.exists(shard) else None
        except PxzError as e:
            return [make_row(name, error=str(e)) for name, _ in items]
        rows, members = [], []
        for name, load in items:
            try:
                member = member_key(relative_name(name)) + ".pxz"
            except PxzError as e:
                rows.append(make_row(name, error=str(e)))
                continue
            existing = None if old is None else old.get(member, b"")  # b"": missing, never matches
            row, payload = self.compress_item(name, load, existing, f"{shard}/{member}")
            if payload is not None:
                members.append((member, payload))
            rows.append(row)
        if old is None:  # an existing shard is never rewritten without --force: each row says kept or why not
            try:
                out.write(shard, write_tar(members))
            except PxzError as e:
                return [make_row(r["name"], error=str(e)) if r["status"] != "error" else r for r in rows]
        return rows

    # -- decompression --

    def decode(self, items: list[tuple[str, bytes]]) -> list[tuple[object, str]]:
        """(PIL image or None, error) per (name, .pxz bytes), decoded in lockstep; a bad file only fails itself."""
        good, results = [], [(None, "")] * len(items)
        for k, (_, payload) in enumerate(items):
            try:
                container.unpack(payload)
                good.append(k)
            except FormatError as e:
                results[k] = (None, str(e))
        try:
            images = codec.decompress_images([items[k][1] for k in good], self.models, device=self.opts.device)
            for k, img in zip(good, images):
                results[k] = (img, "")
        except Exception:  # find out which file is bad: one at a time
            for k in good:
                try:
                    results[k] = (codec.decompress_image(items[k][1], self.models, device=self.opts.device), "")
                except Exception as e:
                    results[k] = (None, _error_text(e))
        return results

    def decompress_items(self, items: list[tuple[str, bytes]], out: Store) -> list[dict]:
        """Decode (name, .pxz bytes) items to images in out, named after them with opts.image_format.

        An image already in out that holds the file's pixels is kept (not decoded again)."""
        o = self.opts
        fmt, kw = imagefile.output_format("x" + o.image_format)
        rows: list[dict | None] = [None] * len(items)
        todo = []
        for k, (name, payload) in enumerate(items):
            try:
                target = posixpath.splitext(relative_name(name))[0] + o.image_format
                header, _ = container.unpack(payload)
                imagefile.check_can_save(header.mode, fmt, kw, header.width, header.height)
                if not o.force and out.exists(target):
                    img = imagefile.open_image(out.read(target))
                    if not codec.holds_pixels(payload, img):
                        raise PxzError(f"{target} exists and holds another image (--force replaces it)")
                    rows[k] = make_row(name, output=target, status="kept", bytes=len(payload), **_image_facts(img))
                    continue
                todo.append((k, name, payload, header, target))
            except Exception as e:
                rows[k] = make_row(name, error=_error_text(e))
        decoded = self.decode([(name, payload) for _, name, payload, _, _ in todo])
        for (k, name, payload, header, target), (img, error) in zip(todo, decoded):
            if img is None:
                rows[k] = make_row(name, error=error)
                continue
            try:
                buf = io.BytesIO()
                imagefile.save(img, buf, fmt, kw, header.metadata, target)
                out.write(target, buf.getvalue())
                rows[k] = make_row(name, output=target, status="coded", bytes=len(payload), **_image_facts(img))
            except Exception as e:
                rows[k] = make_row(name, error=_error_text(e))
        return rows  # type: ignore[return-value]

    def to_arrays(self, items: list[tuple[str, bytes]]) -> list[tuple[dict, np.ndarray | None]]:
        """(manifest row, pixel array or None) per (name, .pxz bytes): for a training job's dataset."""
        out = []
        for (name, payload), (img, error) in zip(items, self.decode(items)):
            if img is None:
                out.append((make_row(name, error=error), None))
                continue
            facts = _image_facts(img)  # dims and bits/dim of the file's own image, before any conversion
            if self.opts.convert is not None and img.mode != self.opts.convert:
                img = img.convert(self.opts.convert)
            arr = np.asarray(img, dtype=np.uint8)  # H x W (L, P, 1 as 0/1) or H x W x C
            facts |= {"mode": img.mode, "sha256": pixels_sha256(arr)}
            out.append((make_row(name, status="coded", bytes=len(payload), **facts), arr))
        return out


def read_items(src: Store, name: str) -> list[tuple[str, bytes]]:
    """(name, .pxz bytes) items of an input: one .pxz file, or every .pxz member of a tar shard."""
    if name.lower().endswith(SHARD_SUFFIX):
        return [(posixpath.join(posixpath.splitext(name)[0], m), b) for m, b in _read_shard(src, name).items()]
    return [(name, src.read(name))]


# ---- tar shards ---------------------------------------------------------------------------------


def write_tar(members: list[tuple[str, bytes]]) -> bytes:
    """A tar archive of (name, bytes) members, the same bytes for the same members (no times, owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _read_shard(store: Store, name: str) -> dict[str, bytes]:
    """.pxz members of a tar shard, in order; a damaged shard is a FormatError."""
    try:
        with tarfile.open(fileobj=io.BytesIO(store.read(name)), mode="r:") as tar:
            found = {}
            for m in tar:
                f = tar.extractfile(m) if m.isfile() and m.name.endswith(".pxz") else None
                if f is not None:
                    found[m.name] = f.read()
            return found
    except (tarfile.TarError, EOFError) as e:
        raise FormatError(f"{name}: damaged tar shard ({describe(e)})") from None


# ---- the job's result ----------------------------------------------------------------------------


@dataclass
class Summary:
    """What a dataset job did, from its manifest rows."""

    rows: list[dict]  # one per image, sorted by name
    seconds: float  # wall time of the job
    compressing: bool  # True: bytes are the .pxz outputs; False: the .pxz inputs

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "error"]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def bytes(self) -> int:
        return sum(r["bytes"] for r in self.rows if r["status"] != "error")

    @property
    def dims(self) -> int:
        return sum(r["dims"] for r in self.rows if r["status"] != "error")

    @property
    def bits_per_dim(self) -> float:
        return 8 * self.bytes / max(self.dims, 1)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        n = len(self.rows) - len(self.errors)
        rate = n / max(self.seconds, 1e-9)
        s = f"{n} images ({self.count('coded')} coded, {self.count('kept')} kept), {self.bytes} bytes of .pxz, "
        s += f"{self.bits_per_dim:.3f} bits/dim, {rate:.1f} images/s"
        return s + (f", {len(self.errors)} errors" if self.errors else "")


def finish(rows, started: float, compressing: bool, out: Store | None) -> Summary:
    """Deduplicate (a retried group reports again), sort and write the manifest."""
    by_name = {}
    for r in rows:
        by_name[r["name"]] = {k: _plain(r[k]) for k in ROW_KEYS}
    ordered = [by_name[n] for n in sorted(by_name)]
    if out is not None:
        out.write(MANIFEST, "".join(json.dumps(r) + "\n" for r in ordered).encode())
    return Summary(ordered, time.perf_counter() - started, compressing)


def _plain(v):
    """numpy scalars (as Ray Data hands rows back) to JSON-able Python values."""
    return v.item() if isinstance(v, np.generic) else v


def read_manifest(store: Store) -> list[dict]:
    """The rows of a job's manifest.jsonl."""
    return [json.loads(line) for line in store.read(MANIFEST).decode().splitlines() if line.strip()]


def image_names(src: Store) -> list[str]:
    """Images a compression job reads from a folder (the suffixes `pxzip compress -r` reads)."""
    return src.list(data.IMAGE_EXTENSIONS)


def pxz_inputs(src: Store) -> list[str]:
    """.pxz files and tar shards a decompression job reads from a folder."""
    return src.list({".pxz", SHARD_SUFFIX})
