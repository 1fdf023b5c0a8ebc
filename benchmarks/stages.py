"""Where coding time goes, per stage, for whichever pxzip this interpreter imports (kodim23, one thread).

    python benchmarks/stages.py [--image PATH] [--crop HxW]

Stages (exclusive times, measured by wrapping the functions in the running install, so it works
on release 3fb0a0f as on this checkout):
  gemm      every float64 matrix product (torch.mm, addmm_, @): the arithmetic exactness needs
  tables    exact probability tables (tables.head_freqs_all, PixelSteps.freqs / observe)
  fit       the head-offsets fit (adapt.fit, float32; its own GEMMs are counted here, not in gemm)
  other     the rest: Python glue, element-wise integer ops, gathers, ring buffers, the range coder
The wrappers cost a few microseconds a call, so "other" is a slight overestimate.
"""

from __future__ import annotations

import argparse
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
