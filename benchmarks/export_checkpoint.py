"""Export a training checkpoint's EMA weights as a model file (float + exact), with its history.

    python benchmarks/export_checkpoint.py runs/rgb/checkpoint.safetensors models/pxz-rgb-cifar.safetensors \
        --name pxz-rgb-cifar

Log minutes that restart at a resume (runs made before the Trainer kept them cumulative) are
made cumulative here, so the card's training curve and wall time add up; `--add` covers a run
that was stopped before it logged anything of its own.
"""

from __future__ import annotations

import argparse
import json

from safetensors import safe_open
from safetensors.torch import load_file

from pxzip import zoo
from pxzip.config import ModelConfig
from pxzip.model import PixelCNN


def cumulative(history: list[dict]) -> list[dict]:
    out, offset, last = [], 0.0, 0.0
    for rec in history:
        if rec["minutes"] + offset < last:  # a resumed run counted from 0 again
            offset = last
        out.append(rec | {"minutes": rec["minutes"] + offset})
        last = out[-1]["minutes"]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="STEP:MIN",
        help="add MIN minutes to the records from STEP on (a stopped run whose own log records were lost)",
    )
    a = p.parse_args()
    with safe_open(a.checkpoint, "pt") as f:
        meta = f.metadata()
    cfg = ModelConfig.from_json(meta["model_config"])
    model = PixelCNN(cfg)
    t = load_file(a.checkpoint)
    model.load_state_dict({k[4:]: v.float() for k, v in t.items() if k.startswith("ema.")})
    history = cumulative(json.loads(meta["history"]))
    for spec in a.add:
        step, extra = spec.split(":")
        history = [r | {"minutes": r["minutes"] + float(extra) * (r["step"] >= int(step))} for r in history]
    minutes = history[-1]["minutes"] if history else 0.0
    extra = {"history": history, "train_seconds": 60 * minutes, "final_step": int(meta["step"])}
    sha = zoo.save_model(a.out, model.eval(), a.name, extra)
    print(f"{a.out}: step {meta['step']}, {minutes:.0f} min, sha256 {sha}")


if __name__ == "__main__":
    main()
