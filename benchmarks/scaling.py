"""Encode / decode time against image size (square crops of a Kodak image) with a shipped model.

python benchmarks/scaling.py --sizes 32 64 128 256 --threads 1
"""

from __future__ import annotations

import argparse
import time

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
    full = np.asarray(Image.open(shared_data_dir() / "kodak" / a.image).convert("RGB"))
    print(f"{'size':>6} {'bits/dim':>9} {'encode s':>9} {'decode s':>9} {'enc us/px':>10} {'dec us/px':>10}")
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
        print(f"{s:>6} {8 * len(data) / img.size:9.3f} {te:9.2f} {td:9.2f} {1e6 * te / px:10.1f} {1e6 * td / px:10.1f}")


if __name__ == "__main__":
    main()
