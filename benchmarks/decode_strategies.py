"""Compare decode strategies on CIFAR-10 test images with a shipped model (ms per 32x32 image).

* naive: one full exact network pass over the image per subpixel (what a decoder without a cache
  must do); measured on the first --naive-rows rows and scaled to the whole image (labelled so);
* cached, one image: `pxzip.decompress` (cached vertical rows + per-position horizontal steps);
* cached, batched: `pxzip.decompress_many` on --batch images in lockstep.

    python benchmarks/decode_strategies.py --images 64 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import pxzip
from pxzip import tables, zoo
from pxzip.data import load_cifar10, shared_data_dir
from pxzip.exact import tile_params


def naive_ms(model: zoo.Model, img: np.ndarray, rows: int) -> float:
    """Time a decoder that re-runs the whole network for each subpixel; scaled to the full image."""
    h, w, c = img.shape
    x = torch.zeros(1, c, h, w, dtype=torch.int64)
    t0 = time.perf_counter()
    for i in range(rows):
        for j in range(w):
            for ch in range(c):
                prm = tile_params(model.exact, x)[0, :, i, j].to(torch.int64).numpy()[None]
                tables.head_freqs_all(prm, img[i, j][None].astype(np.int64), model.cfg, model.exact.luts)
                x[0, ch, i, j] = int(img[i, j, ch])  # the "decoded" value
    return (time.perf_counter() - t0) * 1000 * h / rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="pxz-rgb-cifar")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--naive-rows", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    m = zoo.load_model(a.model)
    imgs, _ = load_cifar10(shared_data_dir() / "cifar10", "test", limit=a.images)
    datas = [pxzip.compress(im, m) for im in imgs]
    naive = naive_ms(m, imgs[0], a.naive_rows)
    t0 = time.perf_counter()
    for d in datas[:4]:
        pxzip.decompress(d, m)
    one = (time.perf_counter() - t0) * 1000 / 4
    t0 = time.perf_counter()
    outs = pxzip.decompress_many(datas, m)
    many = (time.perf_counter() - t0) * 1000 / len(datas)
    assert all(np.array_equal(o, i) for o, i in zip(outs, imgs))
    print(f"model {m.name}, torch threads {a.threads}, 32x32 RGB images")
    print(f"naive (full pass per subpixel; {a.naive_rows} row(s) timed, scaled): {naive:10.1f} ms/image")
    print(f"cached, one image at a time:                       {one:10.1f} ms/image")
    print(f"cached, {len(datas)} images in lockstep:                   {many:10.1f} ms/image")
    print(f"speed-up cached-batched vs naive: {naive / many:.0f}x; vs cached-single: {one / many:.1f}x")


if __name__ == "__main__":
    main()
