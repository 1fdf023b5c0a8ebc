"""Output files that never clobber and are never partial: checked before slow work, written by rename."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pxzip.errors import PxzError, UsageError


def check_output(path: str, force: bool) -> None:
    """Refuse an output that exists (without --force) or is a directory, before any slow work."""
    if path == "-":
        return
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{path} is a directory")
    if out.exists() and not force:
        raise UsageError(f"{path} already exists (use --force to overwrite)")


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str, data: bytes | None, force: bool, save=None) -> None:
    """Write `data` (or call save(tmp_path)) to path via a temp file + rename: never a partial file."""
    if path == "-":
        sys.stdout.buffer.write(data if data is not None else b"")
        sys.stdout.buffer.flush()
        return
    check_output(path, force)
    out = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:  # missing or read-only output folder: a user error, not a traceback
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
        if save is not None:
            save(tmp)
        # mkstemp creates the file 0600; give the output the permissions a plain open() would have
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except OSError as e:  # disk full, output turned into a directory meanwhile, ...
        Path(tmp).unlink(missing_ok=True)
        raise PxzError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
