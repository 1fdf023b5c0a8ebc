"""Coding speed of whichever pxzip this interpreter imports, as JSON (run it under two venvs to compare).

    python benchmarks/speed.py --out results/speed-new.json [--cases kodim23,cifar1,cifar64] [--threads 1]

Cases: kodim23 (768x512 RGB photo, default options), kodim23-gray, cifar1 (one 32x32 CIFAR-10 test
image alone), cifar64 (64 images decoded in lockstep, time per image), palette (a 128x96 P image).
Every decode is checked against the input; the sha256 of every file is recorded so that two runs
can be compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path(os.environ.get("PXZIP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cifar(n: int) -> list[np.ndarray]:
    raw = np.fromfile(DATA / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin", np.uint8, count=n * 3073)
    return [r[1:].reshape(3, 32, 32).transpose(1, 2, 0).copy() for r in raw.reshape(n, 3073)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_case(pxzip, name: str) -> dict:
    if name.startswith("kodim"):
        stem, _, mode = name.partition("-")
        im = Image.open(DATA / "kodak" / f"{stem}.png")
        img = np.asarray(im.convert("L") if mode == "gray" else im.convert("RGB"))
        data, te = timed(lambda: pxzip.compress(img))
        out, td = timed(lambda: pxzip.decompress(data))
        assert np.array_equal(out, img), "decoded image differs"
        return {
            "encode_s": te,
            "decode_s": td,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bits_per_dim": 8 * len(data) / img.size,
        }
    if name == "cifar1":
        img = cifar(1)[0]
        pxzip.decompress(pxzip.compress(img))  # warm-up (model load, compilation caches)
        data, te = timed(lambda: pxzip.compress(img))
        out, td = timed(lambda: pxzip.decompress(data))
        assert np.array_equal(out, img)
        return {"encode_s": te, "decode_s": td, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if name == "cifar64":
        imgs = cifar(64)
        datas, te = timed(lambda: [pxzip.compress(x) for x in imgs])
        outs, td = timed(lambda: pxzip.decompress_many(datas))
        assert all(np.array_equal(a, b) for a, b in zip(outs, imgs))
        h = hashlib.sha256(b"".join(datas)).hexdigest()
        return {"encode_s_per_image": te / 64, "decode_s_per_image": td / 64, "sha256": h}
    if name == "palette":
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).quantize(64)
        data, te = timed(lambda: pxzip.compress(img))
        out, td = timed(lambda: pxzip.decompress(data))
        assert np.array_equal(out, np.asarray(img))
        return {"encode_s": te, "decode_s": td, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    raise SystemExit(f"unknown case {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default="cifar1,cifar64,palette,kodim23")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import pxzip

    report = {
        "pxzip": str(Path(pxzip.__file__).parent),
        "threads": a.threads,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cases": {},
    }
    for name in a.cases.split(","):
        report["cases"][name] = run_case(pxzip, name)
        print(name, report["cases"][name], flush=True)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
