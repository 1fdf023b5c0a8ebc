"""Shared pytest fixtures: the optional shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent


def find_shared_data() -> Path | None:
    """$PXZIP_DATA, else ../shared/data next to the repo; None if neither exists."""
    env = os.environ.get("PXZIP_DATA")
    path = Path(env).expanduser() if env else _REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or skip the test when it is not there."""
    path = find_shared_data()
    if path is None:
        pytest.skip("shared data not found (set PXZIP_DATA or clone next to ../shared/data)")
    return path
