"""What averaging two models gains: float NLL of w * A + (1 - w) * B for a grid of weights w.

python benchmarks/ensemble_weights.py pxz-rgb-photo runs/photo2/model.safetensors \
    [--heldout | --images kodim01.png ...] [--limit N] [--threads 1] [--json OUT]

Images: the Kodak suite (default), or with --heldout the held-out photos of photos-train (every
10th file, as `pxzip train --images` holds them out; 512x512 centre crops, so at least 512 a side), the set to choose an
ensemble on. Images are cut into 64x64 tiles as the codec codes them. For each weight this is
exactly the float NLL of `pxzip ensemble A B -w W_A,W_B` with W_A / (W_A + W_B) = w (both models
evaluated once; the mixture is formed per pixel). Prints per image and over all images (pooled),
and the best weight per image and per tile (what an encoder choosing a weight per image or tile
could get, before the cost of signalling it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pxzip import data, zoo
from pxzip.config import LOG_SCALE_MIN
from pxzip.ensemble import check_members
from pxzip.model import split_mixture

WEIGHTS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]  # weight of the first model


def pixel_loglik(out: torch.Tensor, pixels: torch.Tensor, cfg) -> torch.Tensor:
    """Natural-log likelihood of each RGB pixel (B, H, W) under a PixelCNN++ head output (B, P, H, W)."""
    pi, mu, log_s, coeffs = split_mixture(out, cfg)
    x = ((pixels.float() * 2 - 255) / 255).unsqueeze(2)  # (B, C, 1, H, W)
    log_s = log_s.clamp(min=LOG_SCALE_MIN)
    a, b, g = torch.tanh(coeffs).unbind(1)
    mu = torch.stack([mu[:, 0], mu[:, 1] + a * x[:, 0], mu[:, 2] + b * x[:, 0] + g * x[:, 1]], 1)
    c = x - mu
    inv = torch.exp(-log_s)
    plus, minus, mid = inv * (c + 1 / 255), inv * (c - 1 / 255), inv * c
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_mid = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        mid - log_s - 2 * F.softplus(mid) + math.log(2 / 255),
    )
    lp = torch.where(x < -0.999, plus - F.softplus(plus), torch.where(x > 0.999, -F.softplus(minus), log_mid))
    return torch.logsumexp(lp.sum(1) + F.log_softmax(pi, 1), 1)


def tiles_of(a: np.ndarray, t: int = 64) -> torch.Tensor:
    h, w = a.shape[:2]
    full = [a[y : y + t, x : x + t] for y in range(0, h - t + 1, t) for x in range(0, w - t + 1, t)]
    if len(full) * t * t != h * w:
        raise SystemExit("images must be multiples of 64 on both sides")
    return torch.from_numpy(np.stack(full).transpose(0, 3, 1, 2).copy())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs=2)
    p.add_argument("--heldout", action="store_true", help="the held-out photos of photos-train instead of Kodak")
    p.add_argument("--images", nargs="*", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = [zoo.load_model(m) for m in a.models]
    check_members([m.cfg for m in models], [1, 1])  # a pair `pxzip ensemble` accepts
    if models[0].cfg.in_channels != 3:
        raise SystemExit("RGB models only")
    fms = [m.float_model() for m in models]
    if a.heldout:
        files = data.image_files([str(data.shared_data_dir() / "photos-train")])[::10]
    else:
        kodak = data.shared_data_dir() / "kodak"
        files = [kodak / n for n in a.images] if a.images else sorted(kodak.glob("kodim*.png"))
    files = files[: a.limit]
    per_image, per_tile, dims = [], [], []
    print("image " + " ".join(f"w={w:.1f}" for w in WEIGHTS))
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        if a.heldout:  # the 512x512 centre crop
            y, x = (img.shape[0] - 512) // 2, (img.shape[1] - 512) // 2
            img = img[y : y + 512, x : x + 512]
        tiles, rows = tiles_of(img), []
        with torch.no_grad():
            for k in range(0, len(tiles), 16):
                xb = tiles[k : k + 16]
                l1, l2 = (pixel_loglik(fm(xb).float(), xb, fm.cfg) for fm in fms)
                bits = [
                    -torch.logaddexp(l1 + math.log(max(w, 1e-30)), l2 + math.log(max(1 - w, 1e-30))).sum((1, 2))
                    / math.log(2)
                    for w in WEIGHTS
                ]
                rows.append(torch.stack(bits, 1))
        r = torch.cat(rows).double().numpy()  # (tiles, weights) bits
        per_tile.append(r)
        per_image.append(r.sum(0))
        dims.append(img.size)
        print(Path(f).name, " ".join(f"{v / img.size:.4f}" for v in r.sum(0)), flush=True)
    total = float(sum(dims))
    pooled = np.sum(per_image, 0) / total
    best_image = sum(v.min() for v in per_image) / total
    best_tile = sum(t.min(1).sum() for t in per_tile) / total
    print("pooled " + " ".join(f"{v:.4f}" for v in pooled))
    print(f"best weight per image {best_image:.4f}, per tile {best_tile:.4f}")
    if a.json:
        out = {
            "models": a.models,
            "images": [str(f) for f in files],
            "heldout": a.heldout,
            "weights": WEIGHTS,
            "pooled_bpd": pooled.tolist(),
            "best_per_image_bpd": best_image,
            "best_per_tile_bpd": best_tile,
            "per_image_bpd": [(v / d).tolist() for v, d in zip(per_image, dims)],
        }
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
