"""CIFAR-10 test images through pxzip.ray with 1 and 2 workers, and through `pxzip -j 2`, in one run.

    PXZIP_DATA=../shared/data python benchmarks/ray_cifar.py --limit 2000 --out benchmarks/results/ray-cifar.json

The first --limit test images are written as PNG files; each method compresses the folder, then
decompresses the .pxz files to PNG. Wall times include starting each method's workers (Ray
actors or processes) and loading their models, but not starting the local Ray instance (reported
apart: on a cluster it is already running). Every .pxz must be byte-identical across methods and
every decoded PNG must hold the original pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_pngs(folder: Path, limit: int) -> list[str]:
    from pxzip import bench, data

    x, _ = data.load_cifar10(bench.default_cifar_dir(), "test", limit=limit)
    names = []
    for k, a in enumerate(x):
        name = f"{k // 1000:02d}/{k:05d}.png"  # a tree, as datasets are stored
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(folder / name)
        names.append(name)
    return names


def pxzip_cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pxzip", *args], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import pxzip.ray as pxray

    tmp = Path(tempfile.mkdtemp(prefix="pxzip-ray-bench-"))
    try:
        src = tmp / "png"
        names = write_pngs(src, a.limit)
        results: dict[str, dict] = {}

        # -j 2: compress writes beside the inputs; decompress runs on a copy holding only the .pxz files
        jdir = tmp / "j2"
        shutil.copytree(src, jdir)
        t_enc = pxzip_cli("compress", "-r", str(jdir), "-j", "2", "-q", "--no-progress")
        jpxz = tmp / "j2-pxz"
        for n in names:
            p = jpxz / n
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(jdir / n.replace(".png", ".pxz"), p.with_suffix(".pxz"))
        t_dec = pxzip_cli("decompress", "-r", str(jpxz), "-j", "2", "-q", "--no-progress")
        results["-j 2"] = {"compress_s": t_enc, "decompress_s": t_dec}

        t = time.perf_counter()
        pxray.connect(None, num_cpus=os.cpu_count())
        ray_start_s = time.perf_counter() - t
        for workers in (1, 2):
            out, dec = tmp / f"ray{workers}", tmp / f"ray{workers}-png"
            enc = pxray.compress_dataset(str(src), str(out), workers=workers)
            back = pxray.decompress_dataset(str(out), str(dec), workers=workers)
            assert not enc.errors and not back.errors, (enc.errors[:3], back.errors[:3])
            results[f"ray {workers}"] = {"compress_s": enc.seconds, "decompress_s": back.seconds}
            results[f"ray {workers}"]["bits_per_dim"] = enc.bits_per_dim

        # same bytes everywhere, and the pixels back
        for n in names:
            p = n.replace(".png", ".pxz")
            ref = (jpxz / p).read_bytes()
            assert (tmp / "ray1" / p).read_bytes() == ref == (tmp / "ray2" / p).read_bytes(), n
            want = np.asarray(Image.open(src / n))
            for folder in (jpxz, tmp / "ray1-png", tmp / "ray2-png"):
                assert np.array_equal(np.asarray(Image.open(folder / n)), want), (folder, n)
        for r in results.values():
            r["round_trip_s"] = r["compress_s"] + r["decompress_s"]
            r["images_per_s"] = {k: a.limit / r[f"{k}_s"] for k in ("compress", "decompress", "round_trip")}
        one, two, jobs = results["ray 1"], results["ray 2"], results["-j 2"]
        report = {
            "images": a.limit,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "ray_start_s": ray_start_s,
            "results": results,
            "ratios": {
                "ray2_over_ray1": {k: one[f"{k}_s"] / two[f"{k}_s"] for k in ("compress", "decompress", "round_trip")},
                "ray2_over_j2": {k: jobs[f"{k}_s"] / two[f"{k}_s"] for k in ("compress", "decompress", "round_trip")},
            },
            "same_bytes": True,
            "bits_per_dim": two["bits_per_dim"],
        }
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
        for k, r in results.items():
            ips = r["images_per_s"]
            print(f"{k:>7}: compress {r['compress_s']:.1f} s ({ips['compress']:.1f} img/s), "
                  f"decompress {r['decompress_s']:.1f} s ({ips['decompress']:.1f} img/s)")  # fmt: skip
        print(json.dumps(report["ratios"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
