"""Model-agnostic training loop: Adam + decay, EMA weights, bf16/channels_last, checkpoints, resume, DDP.

Under `torchrun` (WORLD_SIZE > 1) the same code trains data-parallel: gradients are averaged by
DistributedDataParallel, every rank draws its own batches, and rank 0 alone evaluates, logs,
writes checkpoints and exports.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pxzip.config import ModelConfig
from pxzip.model import PixelCNN


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"  # checkpoints, logs, exported model
    batch_size: int = 32  # images (or crops) per step
    lr: float = 2e-3  # Adam learning rate at step 0
    lr_decay: float = 0.99995  # multiplicative decay per step
    ema: float = 0.999  # Polyak averaging of weights; the EMA copy is evaluated and exported
    max_steps: int = 10_000  # stop after this many optimiser steps
    max_minutes: float = 0.0  # stop after this wall time (0 = no limit)
    ckpt_minutes: float = 5.0  # write a checkpoint this often
    eval_every: int = 1000  # steps between held-out evaluations
    eval_images: int = 500  # held-out images per evaluation
    seed: int = 0  # torch/numpy seed
    bf16: bool = False  # bf16 autocast on CPU/CUDA (faster here; weights stay float32)
    channels_last: bool = False  # NHWC memory format
    device: str = "cpu"  # "cpu" or "cuda"
    grad_clip: float = 1.0  # global gradient-norm clip


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, this rank's device): starts the process group when run by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world, device


class _NLL(torch.nn.Module):
    """model.nll as a forward(), so that DistributedDataParallel sees (and syncs) the call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.nll(x, labels)


def _split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch is pixels (B, C, H, W) or (pixels, labels (B,)) for conditional models."""
    return (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)


class Trainer:
    """Trains any model with `.nll(pixels, labels) -> bits/dim` on uint8 NCHW batches from an iterator."""

    def __init__(
        self,
        model: PixelCNN,
        cfg: TrainConfig,
        train_batches,
        eval_data: torch.Tensor | None,
        on_eval: Callable[[Trainer], None] | None = None,
    ):
        """train_batches: endless iterator of uint8 (B, C, H, W) batches (this rank's share under DDP),
        or of (pixels, labels) pairs for a conditional model.
        eval_data: held-out pixels, or (pixels, labels): then evaluations also report the NLL given
        the true labels (`eval_cond_bpd`) beside the unconditional one (`eval_bpd`).
        on_eval: called (rank 0 only) after each held-out evaluation, e.g. to draw a sample grid."""
        self.model, self.cfg = model, cfg
        self.train_batches, self.eval_data, self.on_eval = train_batches, eval_data, on_eval
        self.rank, self.world, device = init_distributed(cfg.device)
        self.dev = torch.device(device)
        self.model.to(self.dev)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn: torch.nn.Module = _NLL(model)
        if self.world > 1:  # broadcasts rank 0's weights, then averages gradients in backward()
            from torch.nn.parallel import DistributedDataParallel

            self.loss_fn = DistributedDataParallel(
                self.loss_fn, device_ids=[self.dev] if self.dev.type == "cuda" else None
            )
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=cfg.lr_decay)
        self.step = 0
        self.history: list[dict] = []
        self.minutes_before = 0.0  # wall time of the runs this one resumes (log minutes are cumulative)
        self.out = Path(cfg.out_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

    # -- checkpoints: safetensors for every tensor, JSON metadata for the rest (no pickle) --
    def save(self) -> Path:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()}
        sd = self.opt.state_dict()
        for pid, st in sd["state"].items():
            for name, val in st.items():
                tensors[f"opt.{pid}.{name}"] = torch.as_tensor(val).detach().cpu().contiguous()
        meta = {
            "model_config": self.model.cfg.to_json(),
            "train_config": json.dumps(asdict(self.cfg)),
            "step": str(self.step),
            "history": json.dumps(self.history),
            "param_groups": json.dumps(sd["param_groups"]),
            "sched": json.dumps(self.sched.state_dict()),
        }
        path = self.out / "checkpoint.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)  # atomic: a stopped run never leaves a half checkpoint
        return path

    def resume(self, path: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        have, want = ModelConfig.from_json(meta["model_config"]), self.model.cfg
        # the one change a resume may make: an unconditional run goes on as a conditional one
        if have != want and (have.num_classes or replace(have, num_classes=want.num_classes) != want):
            diff = ", ".join(
                f"{k} {v} (this run {getattr(want, k)})" for k, v in asdict(have).items() if v != getattr(want, k)
            )
            raise ValueError(f"checkpoint {path} is another model: {diff}")
        t = load_file(str(path))
        saved = {k[6:]: v for k, v in t.items() if k.startswith("model.")}
        # an unconditional checkpoint resumed as a conditional model: the class biases (registered
        # last, so the optimiser's parameter numbers of the others are unchanged) start at zero
        new = [k for k in self.model.state_dict() if k not in saved]
        if new and not all(k.startswith("class_bias.") for k in new):
            raise ValueError(f"checkpoint {path} lacks {new[:3]}: it is not this model's")
        self.model.load_state_dict(saved, strict=not new)
        self.ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")}, strict=not new)
        state: dict[int, dict] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(self.dev)
        groups = json.loads(meta["param_groups"])
        if new:
            groups[0]["params"] = list(range(len(list(self.model.parameters()))))
            _log(f"{len(new)} class-bias tensors not in the checkpoint: they start at zero")
        self.opt.load_state_dict({"state": state, "param_groups": groups})
        self.sched.load_state_dict(json.loads(meta["sched"]))
        self.sched.gamma = self.cfg.lr_decay  # this run's decay from here on (e.g. a faster anneal at the end)
        self.step = int(meta["step"])
        self.history = json.loads(meta["history"])
        self.minutes_before = self.history[-1]["minutes"] if self.history else 0.0
        _log(f"resumed from {path} at step {self.step}")

    @torch.no_grad()
    def evaluate(self) -> float:
        if self.eval_data is None:
            return float("nan")
        return self._eval_nll(None)

    @torch.no_grad()
    def _eval_nll(self, use_labels: bool | None) -> float:
        x, y = _split(self.eval_data)
        x = x[: self.cfg.eval_images]
        total, n = 0.0, 0
        for i in range(0, len(x), 100):
            xb = x[i : i + 100].to(self.dev)
            yb = y[i : i + 100].to(self.dev) if use_labels else None
            with self._autocast():
                total += float(self.ema.nll(xb, yb)) * len(xb)
            n += len(xb)
        return total / n

    def _agree(self, flag: bool) -> bool:
        """Under DDP every rank stops at the same step (wall-time limits differ per process)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    @torch.no_grad()
    def _update_ema(self) -> None:
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(pm, 1 - self.cfg.ema)

    def fit(self) -> list[dict]:
        cfg = self.cfg
        from tqdm import tqdm

        t0 = time.time()
        last_ckpt = time.time()
        quiet = self.rank != 0
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, file=sys.stderr, dynamic_ncols=True, mininterval=2, disable=quiet
        )
        running = None
        self.model.train()
        while self.step < cfg.max_steps:
            xb, yb = _split(next(self.train_batches))
            xb, yb = xb.to(self.dev), None if yb is None else yb.to(self.dev)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                loss = self.loss_fn(xb, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self._update_ema()
            self.step += 1
            lv = float(loss.detach())
            running = lv if running is None or not math.isfinite(running) else 0.98 * running + 0.02 * lv
            bar.update(1)
            bar.set_postfix(bpd=f"{running:.3f}", lr=f"{self.sched.get_last_lr()[0]:.2e}")
            done = self.step >= cfg.max_steps or (cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes)
            done = self._agree(bool(done))
            if self.rank == 0 and (self.step % cfg.eval_every == 0 or done):
                ev = self.evaluate()
                minutes = self.minutes_before + (time.time() - t0) / 60
                rec = {"step": self.step, "train_bpd": running, "eval_bpd": ev, "minutes": minutes}
                cond = ""
                if isinstance(self.eval_data, (tuple, list)):
                    rec["eval_cond_bpd"] = self._eval_nll(True)
                    cond = f", given the labels {rec['eval_cond_bpd']:.4f} bpd"
                self.history.append(rec)
                _log(f"step {self.step}: train {running:.4f} bpd, held-out (EMA) {ev:.4f} bpd{cond}")
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if self.on_eval is not None:
                    self.on_eval(self)
            if self.rank == 0 and (done or time.time() - last_ckpt > 60 * cfg.ckpt_minutes):
                self.save()
                last_ckpt = time.time()
            if done:
                break
        bar.close()
        return self.history


def batches_from_array(
    images_nchw: torch.Tensor,
    batch_size: int,
    seed: int,
    labels: torch.Tensor | None = None,
    null_label: int = 0,
    label_dropout: float = 0.0,
):
    """Endless shuffled mini-batches (B, C, H, W) uint8 from an in-memory array.

    With labels (N,), yields (pixels, labels) pairs; a fraction `label_dropout` of the labels is
    replaced by `null_label`, so that one conditional model also learns to code without a label.
    """
    g = np.random.default_rng(seed)
    n = len(images_nchw)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be 1..{n} (the training images)")
    while True:
        perm = torch.from_numpy(g.permutation(n))
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            if labels is None:
                yield images_nchw[idx]
                continue
            drop = torch.from_numpy(g.random(batch_size) < label_dropout)
            yield images_nchw[idx], torch.where(drop, null_label, labels[idx].long())


def checkpoint_step(path: str | Path) -> int:
    """The optimiser step a checkpoint was written at (read from its header alone)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the batch stream (and dropout) of a run starting at `step`: a resumed run must not
    replay the batches its first run began with, and each rank draws its own."""
    if step == 0:
        return seed + rank
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def build(model_cfg: ModelConfig, seed: int) -> PixelCNN:
    torch.manual_seed(seed)
    return PixelCNN(model_cfg)
