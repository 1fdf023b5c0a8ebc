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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Tiny random-weight models of every architecture and kind, saved as real model files.

    Keys: "pp_rgb", "pp_gray", "gated_rgb", "gated_gray" -> pxzip.zoo.Model; "dir" -> their folder.
    Random weights give poor rates but exercise exactly the same code paths as trained ones.
    """
    import torch

    from pxzip import zoo
    from pxzip.config import ModelConfig
    from pxzip.model import PixelCNN

    folder = tmp_path_factory.mktemp("models")
    out: dict = {"dir": folder}
    torch.manual_seed(1234)
    for arch, short in (("pixelcnnpp", "pp"), ("gated", "gated")):
        for kind, c in (("rgb", 3), ("gray", 1)):
            cfg = ModelConfig(arch=arch, in_channels=c, num_filters=8, num_resnet=1, num_logistic_mix=2)
            path = folder / f"tiny-{short}-{kind}.safetensors"
            zoo.save_model(path, PixelCNN(cfg), f"tiny-{short}-{kind}")
            out[f"{short}_{kind}"] = zoo.load_file(path)
    return out


@pytest.fixture(scope="session")
def tiny_bilevel(tmp_path_factory):
    """A tiny random-weight bilevel model (gated, Bernoulli head, kernel 5) saved as a real model file."""
    import torch

    from pxzip import zoo
    from pxzip.config import ModelConfig
    from pxzip.model import PixelCNN

    torch.manual_seed(77)
    cfg = ModelConfig(arch="gated", in_channels=1, head="bernoulli", num_filters=8, num_resnet=2, kernel_size=5)
    path = tmp_path_factory.mktemp("bilevel") / "tiny-bilevel.safetensors"
    zoo.save_model(path, PixelCNN(cfg), "tiny-bilevel")
    return zoo.load_file(path)


COND_CLASSES = 4  # labels of the tiny conditional models


@pytest.fixture(scope="session")
def cond_models(tmp_path_factory) -> dict:
    """Tiny class-conditional RGB models ("pixelcnnpp", "gated" -> pxzip.zoo.Model) with COND_CLASSES
    labels, whose class biases are far from zero (so that the label changes the tables a lot)."""
    import torch

    from pxzip import zoo
    from pxzip.config import ModelConfig
    from pxzip.model import PixelCNN

    folder = tmp_path_factory.mktemp("cond-models")
    out = {}
    for arch in ("pixelcnnpp", "gated"):
        torch.manual_seed(3)
        cfg = ModelConfig(arch=arch, num_filters=8, num_resnet=2, num_logistic_mix=2, num_classes=COND_CLASSES)
        m = PixelCNN(cfg)
        with torch.no_grad():
            for p in m.class_bias.values():
                p.normal_(0, 1.0)
        zoo.save_model(folder / f"cond-{arch}.safetensors", m, f"tiny-cond-{arch}")
        out[arch] = zoo.load_file(folder / f"cond-{arch}.safetensors")
    return out


@pytest.fixture
def network_only(monkeypatch):
    """`compress` without the fallback coders (as `fallback=False`), for tests of the network's own path:
    their tiny untrained models lose to context mixing and PNG's deflate, which would then code the
    planes instead (tests/test_fallback.py tests the choice itself)."""
    import functools

    import pxzip
    from pxzip import codec

    real = codec.compress

    @functools.wraps(real)
    def network(*args, **kw):
        return real(*args, **(kw | {"fallback": False}))  # also when a caller (the CLI) passes fallback

    monkeypatch.setattr(codec, "compress", network)
    monkeypatch.setattr(pxzip, "compress", network)
