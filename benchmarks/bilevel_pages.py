"""Write the bilevel benchmark pages: generated documents never seen in training, as 1-bit PNG files.

    python benchmarks/bilevel_pages.py --out runs/pages --count 12
    pxzip bench runs/pages --json benchmarks/results/bilevel-pages.json

Pages come from `pxzip.documents.page` with seeds from `documents.BENCH_SEEDS` (the training pages use
`TRAIN_SEEDS`, a disjoint range), in three sizes; the fonts found are listed in OUT/manifest.json
beside each page's seed, size and sha256 of its pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from PIL import Image

from pxzip import documents

SIZES = ((512, 640), (384, 512), (800, 600))  # (width, height)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the pages and manifest.json")
    ap.add_argument("--count", type=int, default=12, help="pages to write")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(a.count):
        seed = documents.BENCH_SEEDS[k]
        w, h = SIZES[k % len(SIZES)]
        px = documents.page(seed, w, h)
        name = f"page-{seed}-{w}x{h}.png"
        Image.fromarray(px).convert("1").save(out / name)
        rows.append({"file": name, "seed": seed, "width": w, "height": h, "sha256": hashlib.sha256(px).hexdigest()})
    manifest = {"generator": "pxzip.documents.page", "fonts": list(documents.fonts()), "pages": rows}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(rows)} pages to {out}")


if __name__ == "__main__":
    main()
