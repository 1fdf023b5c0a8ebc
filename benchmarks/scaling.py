"""Encode / decode time against image size (square top-left crops of one photo) with a shipped model.

python benchmarks/scaling.py --sizes 32 64 128 256 512 1024 --threads 1 \
    --image ../shared/data/photos-train/imagecompression-info/flower_foveon.png

Peak RSS is the process's maximum so far (sizes run in increasing order, so each row's value
is the largest of the sizes up to it). --image: a file path, or a Kodak name (default
kodim23.png, 768x512: crops up to 512). The published run uses a 2268x1512 training photo for
the 1024 crop; its bits/dim column is a timing by-product, not a test-set result.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pxzip
from pxzip import zoo
from pxzip.data import shared_data_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="default: the shipped model pxzip picks per size")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--image", default="kodim23.png")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = zoo.load_model(a.model) if a.model else None
    path = Path(a.image) if Path(a.image).exists() else shared_data_dir() / "kodak" / a.image
    full = np.asarray(Image.open(path).convert("RGB"))
    if max(a.sizes) > min(full.shape[:2]):
        p.error(f"{path} is {full.shape[1]}x{full.shape[0]}: too small for a {max(a.sizes)} crop")
    head = f"{'size':>6} {'bits/dim':>9} {'encode s':>9} {'decode s':>9} {'enc us/px':>10} {'dec us/px':>10}"
    print(head + f" {'peak RSS MB':>12}")
    for s in a.sizes:
        img = np.ascontiguousarray(full[:s, :s])
        t0 = time.perf_counter()
        data = pxzip.compress(img, model)
        te = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = pxzip.decompress(data, model)
        td = time.perf_counter() - t0
        assert np.array_equal(out, img)
        px = img.shape[0] * img.shape[1]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; the process's peak so far
        row = f"{s:>6} {8 * len(data) / img.size:9.3f} {te:9.2f} {td:9.2f} {1e6 * te / px:10.1f} {1e6 * td / px:10.1f}"
        print(row + f" {rss:12.0f}", flush=True)


if __name__ == "__main__":
    main()
