"""Rate and decode time against tile size: what the 64x64 default costs on full-size photos.

python benchmarks/tile_size.py --tiles 32 64 128 256 0 --threads 1 \
    [--model pxz-rgb-cifar] [--files 1] [--images kodim01.png ...]

Tiles are independent contexts (zero padding outside each), so a smaller tile loses context on
its first rows and columns; a larger tile leaves the decoder fewer tiles to advance per step.
For each tile size this prints the float model's NLL on the Kodak suite (all 24 images unless
--images names some; tile 0 = the whole image as one tile). With --files N it also codes the
first N images into real .pxz files and times encode and decode (one process, --threads torch
threads), checking every decode bit-exact.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pxzip
from pxzip import zoo
from pxzip.bench import Item, float_nll_bits
from pxzip.data import shared_data_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="pxz-rgb-cifar")
    p.add_argument("--tiles", type=int, nargs="+", default=[32, 64, 128, 256, 0])
    p.add_argument("--images", nargs="*", default=None, help="Kodak names or paths (default: all 24)")
    p.add_argument("--files", type=int, default=0, help="also code the first N images into real files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = zoo.load_model(a.model)
    kodak = shared_data_dir() / "kodak"
    names = a.images or sorted(f.name for f in kodak.glob("kodim*.png"))
    paths = [Path(n) if Path(n).exists() else kodak / n for n in names]
    items = [Item(str(f), np.asarray(Image.open(f).convert("RGB"))) for f in paths]
    dims = np.array([it.pixels.size for it in items])
    print(f"model {model.name} ({model.sha256[:4]}), {len(items)} images, torch threads {a.threads}")
    print("| tile | float NLL bits/dim | vs 64 | file bits/dim | encode s/image | decode s/image |")
    print("|---|---|---|---|---|---|")
    rows = []
    for t in a.tiles:
        start = time.perf_counter()
        bits = float_nll_bits(items, [model] * len(items), tile=t)
        nll = float(bits.sum() / dims.sum())
        row = {"tile": t, "float_nll_bpd": nll, "float_seconds": time.perf_counter() - start}
        if a.files:
            enc = dec = 0.0
            size = 0
            for it in items[: a.files]:
                t0 = time.perf_counter()
                blob = pxzip.compress(it.pixels, model, tile=t)
                t1 = time.perf_counter()
                out = pxzip.decompress(blob)
                t2 = time.perf_counter()
                if not np.array_equal(out, it.pixels):
                    raise SystemExit(f"{it.name}: tile {t}: decode differs")
                enc, dec, size = enc + t1 - t0, dec + t2 - t1, size + len(blob)
            n = min(a.files, len(items))
            row |= {
                "files": n,
                "file_bpd": 8 * size / float(dims[:n].sum()),
                "encode_s": enc / n,
                "decode_s": dec / n,
            }
        rows.append(row)
        base = next((r["float_nll_bpd"] for r in rows if r["tile"] == 64), None)
        vs = f"{nll - base:+.4f}" if base is not None else ""
        fb = f"{row['file_bpd']:.4f}" if "file_bpd" in row else ""
        es = f"{row['encode_s']:.1f}" if "encode_s" in row else ""
        ds = f"{row['decode_s']:.1f}" if "decode_s" in row else ""
        print(f"| {t or 'whole'} | {nll:.4f} | {vs} | {fb} | {es} | {ds} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"model": model.name, "images": names, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
