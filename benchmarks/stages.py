"""Where coding time goes, per stage, for whichever pxzip this interpreter imports (kodim23, one thread).

    python benchmarks/stages.py [--image PATH] [--crop HxW]

Stages (exclusive times, measured by wrapping the functions in the running install, so it works
on release 3fb0a0f as on this checkout; a stage the install lacks is left out):
  gemm      every matrix product of the exact network: float64 (torch.mm, addmm_, @) and int8
            (torch._int_mm, pxzip/igemm.py)
  limbs     splitting integers into int8 limbs and recombining the limb products (igemm's kernels)
  network   the rest of the network's evaluation: element-wise integer ops, gathers, ring buffers,
            the Python that drives them (the decoders' steppers, the encoder's parallel pass)
  tables    exact probability tables (tables.head_freqs_all, PixelSteps.freqs / observe)
  fit       the head-offsets fit (adapt.fit, float32; its own GEMMs are counted here, not in gemm)
  other     the rest: the range coder, the plane coders' choice, file assembly, glue
The wrappers cost a few microseconds a call, so "other" and "network" are slight overestimates.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_stack: list[list] = []
totals: dict[str, float] = {}


def timed(stage: str, fn):
    def wrapper(*args, **kw):
        start = time.perf_counter()
        _stack.append([stage, 0.0])
        try:
            return fn(*args, **kw)
        finally:
            _, inner = _stack.pop()
            spent = time.perf_counter() - start
            totals[stage] = totals.get(stage, 0.0) + spent - inner
            if _stack:
                _stack[-1][1] += spent

    return wrapper


def wrap_all(stage: str, module: str, *names: str) -> None:
    """Time the module's functions `names` (module attributes, so callers in the module see the
    wrapper) as `stage`; those the install lacks are skipped."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    for name in names:
        if hasattr(mod, name):
            setattr(mod, name, timed(stage, getattr(mod, name)))


def wrap_methods(stage: str, module: str, cls: str, *names: str) -> None:
    """wrap_all for the methods of a class."""
    try:
        klass = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return
    for name in names:
        if hasattr(klass, name):
            setattr(klass, name, timed(stage, getattr(klass, name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared/data/kodak/kodim23.png"))
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import pxzip
    from pxzip import adapt, tables

    img = np.asarray(Image.open(a.image).convert("RGB"))
    pxzip.decompress(pxzip.compress(img[:70, :70]))  # warm-up: model load, compiled kernels
    torch.mm = timed("gemm", torch.mm)
    torch.Tensor.addmm_ = timed("gemm", torch.Tensor.addmm_)
    torch.Tensor.__matmul__ = timed("gemm", torch.Tensor.__matmul__)
    if hasattr(torch, "_int_mm"):
        torch._int_mm = timed("gemm", torch._int_mm)
    limb_kernels = ("_to_limbs", "_limbs_padded", "_combine_rows_finish", "_combine_finish")
    wrap_all("limbs", "pxzip.igemm", *limb_kernels)
    wrap_all("network", "pxzip.codec", "unit_params")
    wrap_methods("network", "pxzip.wavefront", "WaveStepper", "advance", "params", "params_int")
    wrap_methods("network", "pxzip.raster", "Stepper", "start_row", "params", "params_int")
    tables.head_freqs_all = timed("tables", tables.head_freqs_all)
    tables.PixelSteps.freqs = timed("tables", tables.PixelSteps.freqs)
    tables.PixelSteps.observe = timed("tables", tables.PixelSteps.observe)
    adapt.fit = timed("fit", adapt.fit)
    report = {"pxzip": str(Path(pxzip.__file__).parent), "image": a.image}
    files: list[bytes] = []
    for name in ("encode", "decode"):
        totals.clear()
        t = time.perf_counter()
        out = pxzip.compress(img) if name == "encode" else pxzip.decompress(files[0])
        wall = time.perf_counter() - t
        if name == "encode":
            files.append(out)
        else:
            assert np.array_equal(out, img)
        report[name] = {"wall_s": wall, **totals, "other": wall - sum(totals.values())}
        print(name, json.dumps(report[name]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
