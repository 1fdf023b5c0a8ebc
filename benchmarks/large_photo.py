"""A large RGB photo (a mosaic of training-photo crops, never a test image) round trip: time and peak RSS.

    python benchmarks/large_photo.py --threads 2 --out benchmarks/results/large-photo.json
    python benchmarks/large_photo.py --size 2000x1500 ...

Each stage (encode, decode) runs in a process of its own, so its peak resident memory is its own.
The mosaic: 500x500 centre crops of the photos in ../shared/data/photos-train (no resampling, so
the pixels are real photo pixels; 48 crops for 4000x3000, each photo used at most twice).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(os.environ.get("PXZIP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def mosaic(width: int, height: int, cell: int = 500) -> np.ndarray:
    """(height, width, 3) uint8: cell x cell centre crops of the training photos, row by row, cycling
    through them (mirrored on the second pass, so no crop repeats exactly)."""
    files = sorted(f for f in (DATA / "photos-train").rglob("*.png") if min(Image.open(f).size) >= cell)
    out = np.zeros((height, width, 3), np.uint8)
    k = 0
    for y0 in range(0, height, cell):
        for x0 in range(0, width, cell):
            im = np.asarray(Image.open(files[k % len(files)]).convert("RGB"))
            if (k // len(files)) % 2:
                im = im[:, ::-1]
            y, x = (im.shape[0] - cell) // 2, (im.shape[1] - cell) // 2
            h, w = min(cell, height - y0), min(cell, width - x0)
            out[y0 : y0 + h, x0 : x0 + w] = im[y : y + h, x : x + w]
            k += 1
    return out


def stage(name: str, work: Path, threads: int) -> dict:
    import torch

    import pxzip

    torch.set_num_threads(threads)
    t = time.perf_counter()
    if name == "encode":
        data = pxzip.compress(np.asarray(Image.open(work / "mosaic.png")))
        (work / "mosaic.pxz").write_bytes(data)
        w, h = Image.open(work / "mosaic.png").size
        extra = {"bytes": len(data), "bits_per_dim": 8 * len(data) / (w * h * 3)}
    else:
        pixels = pxzip.decompress((work / "mosaic.pxz").read_bytes())
        assert np.array_equal(pixels, np.asarray(Image.open(work / "mosaic.png"))), "decoded image differs"
        extra = {"sha256_pixels": hashlib.sha256(pixels.tobytes()).hexdigest()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": peak, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/pxzip-large")
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    ap.add_argument("--out")
    ap.add_argument("--stage", choices=["encode", "decode"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = Path(a.work)
    if a.stage:
        print(json.dumps(stage(a.stage, work, a.threads)))
        return
    work.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in a.size.split("x"))
    Image.fromarray(mosaic(width, height)).save(work / "mosaic.png")
    report = {"image": f"{a.size} RGB mosaic of 500x500 crops of the training photos", "threads": a.threads}
    for name in ("encode", "decode"):
        cmd = [sys.executable, __file__, "--stage", name, "--work", str(work), "--threads", str(a.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        report[name] = json.loads(out.strip().splitlines()[-1])
        print(name, report[name], flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
