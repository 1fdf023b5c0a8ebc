"""The device check: the same bytes on CUDA and on the CPU, both ways, and the speed of each; then,
optionally, a few minutes of bf16 training on the GPU. One call on a lent GPU machine:

    python benchmarks/gpu_check.py --out "$OUT"                      # check + timing, about 5 minutes
    python benchmarks/gpu_check.py --out "$OUT" --train-minutes 5    # ... then train, EMA weights to $OUT

(a) codes the first --cifar CIFAR-10 test images and the first --kodak Kodak photos on --device
    (cuda) and on the CPU (worker processes, one thread each, all cores), compares the bytes, and
    decodes the device's files on the CPU and the CPU's files on the device, checking every pixel;
(b) times encoding and decoding on the device against one CPU core (the CPU times are per process);
(c) writes gpu-check.json to --out (JSON; the device tool brings $OUT back).
With --device cpu it runs anywhere (CPU against CPU): the way to try the script without a GPU.
Nothing here needs the network; the data come from --data (default: pxzip's shared data folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_job(args: tuple[str, list, list[bytes] | None]) -> tuple[list[bytes], list[np.ndarray] | None, float, float]:
    """Worker: encode `images` on the CPU (one thread), and decode `datas` (files made elsewhere)."""
    import torch

    import pxzip

    torch.set_num_threads(1)
    _, images, datas = args
    t0 = time.perf_counter()
    out = [pxzip.compress(im, device="cpu") for im in images]
    t1 = time.perf_counter()
    dec = None if datas is None else pxzip.codec.decompress_many(datas, device="cpu")
    return out, dec, t1 - t0, time.perf_counter() - t1


def _chunks(seq: list, n: int) -> list[list]:
    k = max(1, -(-len(seq) // n))
    return [seq[i : i + k] for i in range(0, len(seq), k)]


def _on_cpu(images: list, datas: list[bytes] | None, procs: int) -> tuple[list[bytes], list | None, float, float]:
    """Encode images (and decode datas) on the CPU across processes: (files, decoded, encode s, decode s)
    with the seconds summed over processes (so, one core's time)."""
    parts = _chunks(list(range(len(images))), procs)
    jobs = [("cpu", [images[i] for i in p], None if datas is None else [datas[i] for i in p]) for p in parts]
    files, decoded, enc, dec = [], [] if datas is not None else None, 0.0, 0.0
    with ProcessPoolExecutor(min(procs, len(jobs))) as pool:
        for f, d, e, t in pool.map(_cpu_job, jobs):
            files += f
            enc += e
            dec += t
            if decoded is not None:
                decoded += d
    return files, decoded, enc, dec


def check(args) -> dict:
    import torch

    import pxzip
    from pxzip import data as pdata
    from pxzip import device as devices

    dev = devices.resolve(args.device)
    root = Path(args.data) if args.data else pdata.shared_data_dir()
    if root is None:
        raise SystemExit("no data: pass --data (a folder with cifar10/ and kodak/)")
    sets = {}
    if args.cifar:
        imgs, _ = pdata.load_cifar10(root / "cifar10", "test", limit=args.cifar)
        sets["cifar10"] = [np.ascontiguousarray(im) for im in imgs]
    if args.kodak:
        from PIL import Image

        paths = sorted((root / "kodak").glob("kodim*.png"))[: args.kodak]
        sets["kodak"] = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    report: dict = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_processes": args.procs,
        "machine": platform.platform(),
        "sets": {},
    }
    for name, images in sets.items():
        t0 = time.perf_counter()
        dev_files = [pxzip.compress(im, device=str(dev)) for im in images]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        cpu_files, cpu_decoded, cpu_enc, cpu_dec = _on_cpu(images, dev_files, args.procs)  # device files on the CPU
        t2 = time.perf_counter()
        batch = 256 if name == "cifar10" else 1
        dev_decoded = []
        for k in range(0, len(cpu_files), batch):  # the CPU's files on the device, in lockstep batches
            dev_decoded += pxzip.codec.decompress_many(cpu_files[k : k + batch], device=str(dev))
        t3 = time.perf_counter()
        same = [a == b for a, b in zip(dev_files, cpu_files)]
        exact_cpu = [np.array_equal(a, b) for a, b in zip(cpu_decoded, images)]
        exact_dev = [np.array_equal(a, b) for a, b in zip(dev_decoded, images)]
        dims = sum(im.size for im in images)
        report["sets"][name] = {
            "images": len(images),
            "identical_bytes": int(sum(same)),
            "first_differing": [i for i, s in enumerate(same) if not s][:10],
            "device_files_exact_on_cpu": int(sum(exact_cpu)),
            "cpu_files_exact_on_device": int(sum(exact_dev)),
            "bits_per_dim": 8 * sum(map(len, cpu_files)) / dims,
            "device_encode_s": round(t1 - t0, 2),
            "device_decode_s": round(t3 - t2, 2),
            "cpu_one_core_encode_s": round(cpu_enc, 2),
            "cpu_one_core_decode_s": round(cpu_dec, 2),
            "cpu_wall_s": round(t2 - t1, 2),
        }
        print(name, json.dumps(report["sets"][name]), flush=True)
    report["all_identical"] = all(s["identical_bytes"] == s["images"] for s in report["sets"].values())
    report["all_exact"] = all(
        s["device_files_exact_on_cpu"] == s["cpu_files_exact_on_device"] == s["images"] for s in report["sets"].values()
    )
    return report


def train(args, out: Path) -> dict:
    """A bigger model trained for --train-minutes on the device (bf16 autocast), exported with its
    exact weights; copied to --out when it fits the 16 MiB a returned file may take."""
    run = Path(args.train_dir)
    cmd = [sys.executable, "-m", "pxzip", "train", "--cifar10", "--device", args.device, "--bf16", "--out", str(run)]
    cmd += ["--filters", str(args.filters), "--blocks", str(args.blocks), "--mix", str(args.mix)]
    cmd += ["--minutes", str(args.train_minutes), "--steps", "10000000", "--batch", str(args.batch)]
    cmd += ["--eval-every", "500", "--name", run.name]
    if args.data:
        cmd += ["--data-dir", str(Path(args.data) / "cifar10")]
    if (run / "checkpoint.safetensors").exists():
        cmd.append("--resume")
    elif args.train_init:
        cmd += ["--init", args.train_init]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    res = {"command": cmd, "rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    res["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
    model = run / "model.safetensors"
    if model.exists():
        size = model.stat().st_size
        res["model_bytes"] = size
        if size <= 16 * 2**20:
            (out / model.name).write_bytes(model.read_bytes())
        for extra in ("train.log", "log.jsonl"):
            if (run / extra).exists():
                (out / extra).write_bytes((run / extra).read_bytes()[-(2**20) :])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="the device to check against the CPU (cpu: a dry run)")
    ap.add_argument("--data", help="folder with cifar10/ and kodak/ [default: pxzip's shared data folder]")
    ap.add_argument("--cifar", type=int, default=1000, help="first N CIFAR-10 test images")
    ap.add_argument("--kodak", type=int, default=4, help="first N Kodak photos")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="CPU worker processes")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-check"), help="report folder [default: $OUT]")
    ap.add_argument("--train-minutes", type=float, default=0.0, help="then train this long (0: no training)")
    ap.add_argument("--train-dir", default="runs/gpu-train", help="checkpoints (outside git; --resume if present)")
    ap.add_argument("--train-init", help="start from this model file's float weights (same config only)")
    ap.add_argument("--filters", type=int, default=96)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--mix", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = check(args) if args.cifar or args.kodak else {}
    if args.train_minutes > 0:
        report["train"] = train(args, out)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "train"}))
    if report.get("sets") and not (report["all_identical"] and report["all_exact"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
