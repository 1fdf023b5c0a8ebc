"""The README's examples are tested: its Python blocks run, its command lines parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

from pxzip.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def _pxzip_lines() -> list[list[str]]:
    """Every `pxzip ...` command in the bash blocks (torchrun's `-m pxzip ...` too), as argv[1:]."""
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if "<" in words:
                words = words[: words.index("<")]
            if words[:1] == ["pxzip"]:
                out.append(words[1:])
            elif words[:1] == ["torchrun"] and "pxzip" in words:
                out.append(words[words.index("pxzip") + 1 :])
    return out


def test_python_examples_run(tmp_path, monkeypatch) -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"  # the folder the Ray example codes: a reader's own images
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8 + i, 3), dtype=np.uint8)).save(images / f"{i}.png")
    namespace: dict = {}
    for code in blocks:  # one namespace: later blocks use names from earlier ones, as a reader would
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "a.pxz").exists() and (tmp_path / "a.png").exists()
    assert sorted(p.name for p in (tmp_path / "images-pxz").glob("*.pxz")) == ["0.pxz", "1.pxz", "2.pxz"]


@pytest.mark.parametrize("argv", _pxzip_lines(), ids=lambda a: " ".join(a)[:50])
def test_command_lines_parse(argv) -> None:
    """Each documented command names a real subcommand with real options and valid values."""
    cmd = cli.get_command(click.Context(cli), argv[0])
    assert cmd is not None, f"README names an unknown command: pxzip {argv[0]}"
    try:
        cmd.make_context(argv[0], list(argv[1:]))
    except click.UsageError as e:
        pytest.fail(f"README command `pxzip {' '.join(argv)}` does not parse: {e}")


def test_readme_has_the_commands() -> None:
    names = {argv[0] for argv in _pxzip_lines()}
    assert {"compress", "decompress", "info", "models", "bench", "train", "sample"} <= names
