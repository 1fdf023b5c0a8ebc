"""Launch a training run on CIFAR-10 train (binary layout) from the shared data; used for the shipped models."""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pxzip.config import ModelConfig
from pxzip.train import TrainConfig, Trainer, batches_from_array, build

p = argparse.ArgumentParser()
p.add_argument("--data", default="../shared/data/cifar10/cifar-10-batches-bin")
p.add_argument("--gray", action="store_true")
p.add_argument("--filters", type=int, default=48)
p.add_argument("--blocks", type=int, default=4)
p.add_argument("--mix", type=int, default=5)
p.add_argument("--arch", default="pixelcnnpp")
p.add_argument("--steps", type=int, default=20000)
p.add_argument("--minutes", type=float, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", default="runs/rgb")
p.add_argument("--bs", type=int, default=32)
p.add_argument("--resume", action="store_true")
p.add_argument("--bench", type=int, default=0)
p.add_argument("--conditional", action="store_true", help="class-conditional (labels shown half of the time)")
p.add_argument("--label-dropout", type=float, default=0.5)
p.add_argument("--lr-decay", type=float, default=0.99995, help="per step, from this run on (also when resuming)")
a = p.parse_args()
torch.set_num_threads(a.threads)
recs = [np.fromfile(f"{a.data}/data_batch_{i}.bin", np.uint8).reshape(-1, 3073) for i in range(1, 6)]
x = np.concatenate(recs)[:, 1:].reshape(-1, 3, 32, 32)
y = torch.from_numpy(np.concatenate(recs)[:, 0].astype(np.int64))
if a.gray:
    from PIL import Image

    x = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in x])[:, None]
x = torch.from_numpy(np.ascontiguousarray(x))
train, held = x[:-1000], x[-1000:]  # last 1000 train images held out; never the test set
ytrain, yheld = y[:-1000], y[-1000:]
mc = ModelConfig(
    arch=a.arch,
    in_channels=x.shape[1],
    num_filters=a.filters,
    num_resnet=a.blocks,
    num_logistic_mix=a.mix,
    num_classes=10 if a.conditional else 0,
)
tc = TrainConfig(
    out_dir=a.out,
    batch_size=a.bs,
    max_steps=a.steps,
    max_minutes=a.minutes,
    lr_decay=a.lr_decay,
    bf16=True,
    channels_last=True,
    eval_every=1000,
    eval_images=500,
    ckpt_minutes=4,
)
model = build(mc, 0)
print("params", model.num_parameters(), file=sys.stderr)
if a.bench:
    import time

    tr = Trainer(model, tc, batches_from_array(train, a.bs, 0), None)
    it = batches_from_array(train, a.bs, 0)
    for i in range(a.bench + 2):
        if i == 2:
            t = time.time()
        xb = next(it).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.nll(xb)
        loss.backward()
    print("img/s", a.bench * a.bs / (time.time() - t), float(loss), file=sys.stderr)
    sys.exit()
if a.conditional:
    batches = batches_from_array(train, a.bs, 0, ytrain, mc.null_label, a.label_dropout)
    tr = Trainer(model, tc, batches, (held[:500], yheld[:500]))
else:
    tr = Trainer(model, tc, batches_from_array(train, a.bs, 0), held[:500])

if a.resume and (Path(a.out) / "checkpoint.safetensors").exists():
    tr.resume(Path(a.out) / "checkpoint.safetensors")
tr.fit()
