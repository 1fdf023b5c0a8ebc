"""Never bigger than PNG: pxzip against PNG (optimize), WebP lossless and TIFF Group 4 on generated images.

    python benchmarks/never_bigger.py --n 200 --jobs 2 --out benchmarks/results/never-bigger.json

Images: benchmarks/synthetic.py's collection (every mode, sides 1..512: photo crops of the training
photos, flat graphics, palettes of 16, 64 and 256 colours, 1-bit pages, drawings and scans, noise,
gradients, repeated tiles). Every file is decoded again and compared with the image. Reported per
image and per kind: pxz bytes (shipped models, default options), PNG optimize=True, WebP lossless
(method 6; RGB or RGBA), TIFF Group 4 for 1-bit images, which coder took each plane, and the
worst pxz - PNG difference (issue 19 bounds it by 32 bytes).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402


def _size(img: Image.Image, fmt: str, **kw) -> int:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return len(buf.getvalue())


def _webp(img: Image.Image) -> int:
    alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
    return _size(img.convert("RGBA" if alpha else "RGB"), "WEBP", lossless=True, quality=100, method=6)


def _one(item: tuple[str, Image.Image]) -> dict:
    import torch

    import pxzip
    from pxzip import container

    torch.set_num_threads(1)
    name, img = item
    t0 = time.perf_counter()
    data = pxzip.compress(img)
    t1 = time.perf_counter()
    back = pxzip.decompress_image(data)
    t2 = time.perf_counter()
    ok = back.mode == img.mode and np.array_equal(np.asarray(back), np.asarray(img))
    h, _ = container.unpack(data)
    coders = [container.METHODS[c.method] for c in h.coders] or ["network"] * len(container.plane_slots(h.mode))
    row = {
        "name": name,
        "kind": name.split("-", 1)[1].rsplit("-", 1)[0],
        "mode": img.mode,
        "size": [img.width, img.height],
        "pxz": len(data),
        "png": _size(img, "PNG", optimize=True),
        "webp": _webp(img),
        "coders": coders,
        "exact": bool(ok),
        "encode_s": round(t1 - t0, 3),
        "decode_s": round(t2 - t1, 3),
    }
    if img.mode == "1":
        row["g4"] = _size(img, "TIFF", compression="group4")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images (cycling through synthetic.KINDS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--jobs", type=int, default=2, help="processes (one torch thread each)")
    ap.add_argument("--out", type=Path, help="JSON report")
    args = ap.parse_args()
    items = synthetic.collection(args.n, args.seed, args.max_side)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_one, items, chunksize=1))
    wall = time.perf_counter() - t0
    kinds: dict[str, dict] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"images": 0, "pxz": 0, "png": 0, "webp": 0, "g4": 0, "worst_over_png": -1e9})
        k["images"] += 1
        for f in ("pxz", "png", "webp", "g4"):
            k[f] += r.get(f, 0)
        k["worst_over_png"] = max(k["worst_over_png"], r["pxz"] - r["png"])
    print(
        f"{'kind':18s} {'n':>3s} {'pxz':>9s} {'png':>9s} {'webp':>9s} "
        f"{'pxz/png':>8s} {'pxz/webp':>8s} {'worst-png':>9s}"
    )
    for name, k in kinds.items():
        print(
            f"{name:18s} {k['images']:3d} {k['pxz']:9d} {k['png']:9d} {k['webp']:9d} {k['pxz'] / k['png']:8.3f} "
            f"{k['pxz'] / k['webp']:8.3f} {k['worst_over_png']:9d}" + (f"  g4 {k['g4']}" if k["g4"] else "")
        )
    over = max(r["pxz"] - r["png"] for r in rows)
    summary = {
        "images": len(rows),
        "all_exact": all(r["exact"] for r in rows),
        "worst_pxz_minus_png_bytes": over,
        "images_over_png_plus_32": sum(r["pxz"] > r["png"] + 32 for r in rows),
        "images_over_png": sum(r["pxz"] > r["png"] for r in rows),
        "pxz_bytes": sum(r["pxz"] for r in rows),
        "png_bytes": sum(r["png"] for r in rows),
        "webp_bytes": sum(r["webp"] for r in rows),
        "palette_images": len(pal := [r for r in rows if r["mode"] == "P"]),
        "palette_smaller_than_png": sum(r["pxz"] < r["png"] for r in pal),
        "palette_pxz_over_webp_bytes": round(sum(r["pxz"] for r in pal) / max(1, sum(r["webp"] for r in pal)), 4),
        "palette_pxz_over_webp_mean": round(float(np.mean([r["pxz"] / r["webp"] for r in pal])) if pal else 0, 4),
        "bilevel_images": len(one := [r for r in rows if r["mode"] == "1"]),
        "bilevel_pxz_over_png_bytes": round(sum(r["pxz"] for r in one) / max(1, sum(r["png"] for r in one)), 4),
        "bilevel_pxz_over_g4_bytes": round(sum(r["pxz"] for r in one) / max(1, sum(r["g4"] for r in one)), 4),
        "bilevel_smaller_than_g4": sum(r["pxz"] < r["g4"] for r in one),
        "wall_s": round(wall, 1),
        "jobs": args.jobs,
    }
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "kinds": kinds, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
