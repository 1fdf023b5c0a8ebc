"""`pxzip train`, `pxzip sample` and `pxzip ensemble`: the training front end (kept apart so models never import it)."""

from __future__ import annotations

import dataclasses
import io
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from pxzip import device as devices
from pxzip.errors import UsageError
from pxzip.files import check_output, write_atomic

CIFAR10_CLASSES = 10  # labels of a --conditional model (CIFAR-10 classes); label 10 means "no label"


def _cifar(data_dir: str | None, download: bool, gray: bool, url: str | None):
    from pxzip import data

    root = Path(data_dir) if data_dir else (data.shared_data_dir() or Path("data"))
    if download:
        data.download_cifar10(root, **({"url": url} if url else {}))
    imgs, labels = data.load_cifar10(root, "train")  # (N, 32, 32, 3), (N,); the test split is never read here
    if gray:
        imgs = data.to_gray(imgs)
    x = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    return x[:-1000], x[-1000:], y[:-1000], y[-1000:]  # the last 1000 training images are the held-out set


def _one_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _folder(paths: tuple[str, ...], crop: int, gray: bool, seed: int, batch: int, held_seed: int):
    from pxzip import data

    files = _training_files(paths)
    if len(files) < 2:
        raise UsageError("need at least 2 training images (one in ten is held out)")
    held = files[::10]
    train = [f for f in files if f not in held]
    batches = _crop_batches(data.RandomCrops(train, crop, gray=gray, seed=seed), batch)
    held_x = torch.stack(list(data.RandomCrops(held, crop, gray=gray, seed=held_seed, length=500, flip=False)))
    return batches, held_x


def _training_files(paths) -> list[Path]:
    """The image files under paths, with a warning when Kodak test images are among them."""
    from pxzip import data

    files = data.image_files(paths)
    kodak = [f for f in files if f.name.lower().startswith("kodim")]
    if kodak:  # a test set: results on it would no longer be honest
        click.echo(f"warning: training on {len(kodak)} Kodak test images ({kodak[0]}, ...)", err=True)
    return files


def _crop_batches(crops, batch: int):
    """Endless batches (B, C, size, size) of a `data.ArrayCrops` stream."""
    it = iter(crops)
    while True:
        yield torch.stack([next(it) for _ in range(batch)])


def _bilevel(o: dict, seed: int):
    """Batches (B, 1, H, W) of 0/255 and held-out pixels for a bilevel model: binarised MNIST train
    (`--mnist`, its last mnist.HELD_OUT images held out), generated document pages (`--pages N`, crops
    of side --crop) and binarised --images, one source after the other batch by batch."""
    from pxzip import documents, mnist
    from pxzip.train import batches_from_array

    sources, held = [], None
    if o["mnist"]:
        root = Path(o["data_dir"]) if o["data_dir"] else mnist.default_dir()
        if o["download"]:
            mnist.download(root, **({"url": o["url"]} if o["url"] else {}))
        imgs, _ = mnist.load(root, "train")  # the test split is never read here
        x = torch.from_numpy(mnist.binarize(imgs)[:, None].astype(np.uint8) * 255)
        n_held = min(mnist.HELD_OUT, len(x) // 10)  # a subset (tests) holds out a tenth
        if not o["batch"] <= len(x) - n_held:
            raise UsageError(f"--batch {o['batch']} is more than the {len(x) - n_held} MNIST training images")
        sources.append(batches_from_array(x[:-n_held], o["batch"], seed))
        held = x[-n_held:]
    if o["pages"] or o["images"]:
        from pxzip import data

        arrays = documents.pages(documents.TRAIN_SEEDS[: o["pages"]]) if o["pages"] else []
        arrays += [mnist.binarize(data.load_image(f, gray=True)[:, :, 0]) for f in _training_files(o["images"])]
        if len(arrays) < 2:
            raise UsageError("need at least 2 training pages or images (one in ten is held out)")
        planes = [a.astype(np.uint8)[:, :, None] * 255 for a in arrays]
        train = data.ArrayCrops([p for i, p in enumerate(planes) if i % 10], o["crop"], seed=seed)
        sources.append(_crop_batches(train, o["batch"]))
        if held is None:
            held_crops = data.ArrayCrops(planes[::10], o["crop"], seed=o["seed"] + 1, flip=False, length=500)
            held = torch.stack(list(held_crops))

    def alternate():
        while True:
            for src in sources:
                yield next(src)

    return alternate(), held


@click.command()
@click.option("--cifar10", "use_cifar", is_flag=True, help="train on CIFAR-10 train (last 1000 images held out)")
@click.option(
    "--data-dir",
    help="CIFAR-10 folder (binary or python layout), or MNIST's with --mnist; default ../shared/data or ./data",
)
@click.option("--download", is_flag=True, help="download and verify the official CIFAR-10 archive (MNIST files) first")
@click.option("--url", help="CIFAR-10 archive URL, or the MNIST files' base URL (for mirrors and tests)")
@click.option("--images", multiple=True, help="image files/folders to train on random crops of (one in ten held out)")
@click.option("--crop", type=click.IntRange(min=2), default=32, help="crop side for --images")
@click.option("--gray", is_flag=True, help="train a grayscale (1-channel) model")
@click.option("--bilevel", is_flag=True, help="train a bilevel model (gated, one logit per pixel) for mode 1 images")
@click.option("--mnist", is_flag=True, help="--bilevel: binarised MNIST train (last 5000 images held out)")
@click.option("--pages", type=click.IntRange(min=0), default=0, help="--bilevel: generated document pages to crop")
@click.option("--arch", type=click.Choice(["pixelcnnpp", "gated"]), default="pixelcnnpp")
@click.option("--filters", default=48, help="num_filters")
@click.option("--blocks", default=4, help="num_resnet")
@click.option("--mix", default=5, help="num_logistic_mix")
@click.option("--kernel", default=3, help="kernel_size (odd)")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, help="dropout_p")
@click.option("--conditional", is_flag=True, help="class-conditional on the CIFAR-10 label (labels stored in files)")
@click.option(
    "--label-dropout",
    type=click.FloatRange(0, 1),
    default=0.5,
    help="--conditional: fraction of images shown without their label",
)
@click.option("--batch", type=click.IntRange(min=1), default=32)
@click.option("--lr", default=2e-3)
@click.option("--lr-decay", default=0.99995, help="per step")
@click.option("--ema", default=0.999)
@click.option("--steps", type=click.IntRange(min=1), default=10_000, help="maximum optimiser steps")
@click.option("--minutes", type=click.FloatRange(min=0), default=0.0, help="maximum wall time (0 = none)")
@click.option("--bf16/--no-bf16", default=True, help="bf16 autocast")
@click.option("--channels-last/--no-channels-last", default=True)
@click.option("--device", default="cpu")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch threads (0 = default)")
@click.option("--seed", default=0)
@click.option("--init", "init_from", help="start from this model file's float weights (fine-tuning)")
@click.option("--out", "out_dir", default="runs/default", help="checkpoints, log and the exported model")
@click.option("--name", default=None, help="model name stored in the exported file (default: out folder name)")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint.safetensors")
@click.option("--eval-every", type=click.IntRange(min=1), default=1000)
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=0,
    help="images in a grid OUT/samples/step-N.png drawn at each evaluation (0 = none)",
)
def train(**o) -> None:
    """Train a PixelCNN and export it (float + exact integer weights) to OUT/model.safetensors."""
    from pxzip import zoo
    from pxzip.config import ModelConfig
    from pxzip.train import (
        TrainConfig,
        Trainer,
        batches_from_array,
        build,
        checkpoint_step,
        init_distributed,
        stream_seed,
    )

    if o["threads"]:
        torch.set_num_threads(o["threads"])
    if o["bilevel"]:
        if o["use_cifar"] or o["gray"] or o["conditional"]:
            raise UsageError("--bilevel trains on --mnist, --pages N, --images (not --cifar10, --gray, --conditional)")
        if not (o["mnist"] or o["pages"] or o["images"]):
            raise UsageError("--bilevel needs data: --mnist, --pages N and/or --images PATH")
    elif o["mnist"] or o["pages"]:
        raise UsageError("--mnist and --pages train bilevel models: add --bilevel")
    elif o["use_cifar"] == bool(o["images"]):
        raise UsageError("choose one data source: --cifar10 or --images PATH")
    if o["conditional"] and not o["use_cifar"]:
        raise UsageError("--conditional needs labelled data: --cifar10")
    try:
        dev = torch.device(o["device"])
    except RuntimeError:
        raise UsageError(f"--device {o['device']!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this machine has no CUDA GPU that torch can use")
    rank, world, _ = init_distributed(o["device"])  # (0, 1) unless started by torchrun
    ckpt = Path(o["out_dir"]) / "checkpoint.safetensors"
    resuming = o["resume"] and ckpt.exists()
    try:
        start = checkpoint_step(ckpt) if resuming else 0
    except Exception as e:  # not a checkpoint at all: safetensors, JSON or key errors
        raise UsageError(f"cannot resume from {ckpt}: {_one_line(e)}") from None
    # each rank draws different batches (the weights start equal: DDP); a resumed run new ones
    seed = stream_seed(o["seed"], rank, start)
    if o["bilevel"]:
        batches, held = _bilevel(o, seed)
    elif o["use_cifar"]:
        if o["download"] and world > 1:
            raise UsageError("--download once before starting torchrun")
        train_x, held, train_y, held_y = _cifar(o["data_dir"], o["download"], o["gray"], o["url"])
        if not o["batch"] <= len(train_x):
            raise UsageError(f"--batch {o['batch']} is more than the {len(train_x)} training images")
        if o["conditional"]:
            null = CIFAR10_CLASSES  # ModelConfig.null_label
            batches = batches_from_array(train_x, o["batch"], seed, train_y, null, o["label_dropout"])
        else:
            batches = batches_from_array(train_x, o["batch"], seed)
    else:  # the held-out crops stay the same in every run of a model (comparable evaluations)
        batches, held = _folder(o["images"], o["crop"], o["gray"], seed, o["batch"], held_seed=o["seed"] + 1)
    try:
        mc = ModelConfig(
            arch="gated" if o["bilevel"] else o["arch"],
            in_channels=1 if o["gray"] or o["bilevel"] else 3,
            head="bernoulli" if o["bilevel"] else "",
            num_filters=o["filters"],
            num_resnet=o["blocks"],
            num_logistic_mix=o["mix"],
            kernel_size=o["kernel"],
            dropout_p=o["dropout"],
            num_classes=CIFAR10_CLASSES if o["conditional"] else 0,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    tc = TrainConfig(
        out_dir=o["out_dir"],
        batch_size=o["batch"],
        lr=o["lr"],
        lr_decay=o["lr_decay"],
        ema=o["ema"],
        max_steps=o["steps"],
        max_minutes=o["minutes"],
        eval_every=o["eval_every"],
        seed=o["seed"],
        bf16=o["bf16"],
        channels_last=o["channels_last"],
        device=o["device"],
    )
    model = build(mc, o["seed"])
    if o["init_from"]:
        init = zoo.load_model(o["init_from"])
        if init.members > 1:
            n = init.members
            raise UsageError(f"--init {o['init_from']} is an ensemble of {n} networks: fine-tune one of its members")
        src = init.float_model()
        if src.cfg.in_channels == 3 and mc.in_channels == 1 and mc.arch == "pixelcnnpp":
            if dataclasses.replace(src.cfg, num_classes=0, in_channels=1) != dataclasses.replace(mc, num_classes=0):
                raise UsageError(f"--init model has config {src.cfg}: a gray run from it needs the same network")
            state = src.unconditional_state() if src.cfg.num_classes else src.state_dict()
            missing, unexpected = model.load_state_dict(gray_from_rgb(state, src.cfg), strict=False)
            if unexpected or any(not k.startswith("class_bias.") for k in missing):  # class biases start at 0
                raise UsageError(f"--init model {init.name} does not fit this gray network")
        elif dataclasses.replace(src.cfg, num_classes=mc.num_classes) != mc:
            raise UsageError(f"--init model has config {src.cfg}, not {mc}")
        elif src.cfg.num_classes and not mc.num_classes:  # a conditional model starts an unconditional one
            model.load_state_dict(src.unconditional_state())
        elif src.cfg.num_classes != mc.num_classes and src.cfg.num_classes:
            raise UsageError(f"--init model has {src.cfg.num_classes} classes, this run {mc.num_classes}")
        else:  # the same config, or an unconditional model starting a conditional one (class biases at 0)
            model.load_state_dict(src.state_dict(), strict=src.cfg == mc)
    on_eval = _sample_grids(o["samples"], held.shape[2], held.shape[3]) if o["samples"] else None
    held_data = (held[:500], held_y[:500]) if o["conditional"] else held[:500]
    trainer = Trainer(model, tc, batches, held_data, on_eval)
    if resuming:
        try:
            trainer.resume(ckpt)
        except Exception as e:  # another model's checkpoint (size mismatch, missing tensors), damaged file
            raise UsageError(f"cannot resume from {ckpt}: {_one_line(e)}") from None
        torch.manual_seed(seed)  # dropout, too, goes on with fresh randomness
    if rank == 0:
        what = f"{mc.arch} ({model.num_parameters():,} parameters)"
        ddp = f" on {world} processes (batch {o['batch']} each)" if world > 1 else ""
        click.echo(f"training {what}{ddp} -> {o['out_dir']}", err=True)
    t0 = time.time()
    history = trainer.fit()
    if world > 1:
        # rank 0 still evaluates and checkpoints after the last step: wait for it, so that no rank
        # tears its gloo connections down while a peer still uses them (seen once: SIGABRT at exit)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    name = o["name"] or Path(o["out_dir"]).name
    out = Path(o["out_dir"]) / "model.safetensors"
    sha = zoo.save_model(out, trainer.ema.cpu().float(), name, {"history": history, "train_seconds": time.time() - t0})
    click.echo(f"exported {out} (sha256 {sha})", err=True)


def gray_from_rgb(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """An RGB PixelCNN++'s weights (unconditional state) as a gray model of the same network: the
    start of a gray fine-tune that computes, on gray images, what the RGB model predicts for R.

    An RGB image whose three channels equal g feeds the input convolutions sum_c w_c * g, so the
    gray input weight is the sum of the three colour weights (the "inside" channel is kept). The
    head keeps the mixture logits and the red channel's means and log-scales: red is predicted
    from the context alone (green and blue lean on the channels before them, through the RGB
    coefficients, which have no gray counterpart).
    """
    k = cfg.num_logistic_mix
    out = dict(state)
    for name in ("weights.v_in", "weights.h_in"):
        w = state[name]  # (F, 4, kh, kw): R, G, B, inside
        out[name] = torch.cat([w[:, :3].sum(1, keepdim=True), w[:, 3:]], 1)  # (F, 2, kh, kw)
    rows = torch.cat([torch.arange(k), k + torch.arange(k), 4 * k + torch.arange(k)])  # logits, R means, R log-scales
    out["weights.head"] = state["weights.head"][rows]
    out["biases.head"] = state["biases.head"][rows]
    return out


def _sample_grids(count: int, height: int, width: int):
    """on_eval hook: a grid of `count` images drawn from the EMA weights' exact model, per evaluation."""

    def hook(trainer) -> None:
        import copy

        from pxzip import sample as smp
        from pxzip.exact import ExactModel

        em = ExactModel.from_float(copy.deepcopy(trainer.ema).cpu().float())
        folder = trainer.out / "samples"
        folder.mkdir(exist_ok=True)
        path = folder / f"step-{trainer.step:06d}.png"
        smp.grid(smp.sample(em, count, height, width)).save(path)
        print(f"samples -> {path}", file=sys.stderr, flush=True)

    return hook


@click.command()
@click.option("-m", "--model", "model_name", default="pxz-rgb-cifar", help="model name or file")
@click.option("-n", "--count", type=click.IntRange(min=1), default=16, help="images to draw")
@click.option("--size", type=click.IntRange(min=1), default=32, help="image side")
@click.option("--seed", default=0)
@click.option("-o", "--output", default="samples.png", help="grid PNG to write")
@click.option("--label", type=int, default=None, help="class-conditional models: draw this class")
@click.option("--per-class", is_flag=True, help="class-conditional models: one grid row per class (COUNT per row)")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="where the network runs: auto (CUDA when present), cpu, cuda or cuda:N (the same images on each)",
)
def sample(model_name, count, size, seed, output, label, per_class, device) -> None:
    """Draw images from a model (exact decoder tables) into a grid PNG."""
    from PIL import Image

    from pxzip import sample as smp
    from pxzip import zoo

    devices.resolve(device)  # a missing GPU: exit 2 before any work
    m = zoo.load_model(model_name)
    classes = m.cfg.num_classes
    if (label is not None or per_class) and not classes:
        raise UsageError(f"model {m.name} is not class-conditional: --label and --per-class need one that is")
    if label is not None and not 0 <= label < classes:
        raise UsageError(f"--label must be in 0..{classes - 1}")
    fmt = Image.registered_extensions().get(Path(output).suffix.lower())  # checked before the slow sampling
    if fmt is None:
        raise UsageError(f"-o {output}: use an image file name such as samples.png")
    t0 = time.time()
    if per_class:
        labels = np.repeat(np.arange(classes), count)
        img = smp.grid(smp.sample(m, len(labels), size, size, seed, labels=labels, device=device), cols=count)
        count = len(labels)
    else:
        labels = None if label is None else np.full(count, label)
        img = smp.grid(smp.sample(m, count, size, size, seed, labels=labels, device=device))
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except Exception as e:  # e.g. a format that cannot hold RGB
        raise UsageError(f"cannot write {output} as {fmt}: {_one_line(e)}") from None
    write_atomic(output, buf.getvalue(), force=True)  # temp file + rename: never a partial grid
    print(f"{count} samples -> {output} in {time.time() - t0:.1f}s", file=sys.stderr)


@click.command()
@click.argument("members", nargs=-1, required=True)
@click.option("-w", "--weights", default=None, help="integer weight per member, comma-separated [default: equal]")
@click.option("--name", required=True, help="model name stored in the file")
@click.option("-o", "--output", required=True, help="model file to write (.safetensors)")
@click.option("-f", "--force", is_flag=True, help="overwrite OUTPUT")
def ensemble(members, weights, name, output, force) -> None:
    """Combine trained models of one config into an ensemble: one model file whose tables are the
    weighted average of the members' (MEMBERS times the coding time; see README for when it pays)."""
    from pxzip import zoo

    if not output.endswith(".safetensors"):
        raise UsageError(f"-o {output}: a model file name ends in .safetensors")
    check_output(output, force)  # before loading and combining the members
    models = [zoo.load_model(m) for m in members]
    if weights is None:
        prior = [1] * len(models)
    else:
        try:
            prior = [int(w) for w in weights.split(",")]
        except ValueError:
            raise UsageError(f"--weights {weights!r}: expected whole numbers separated by commas") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.safetensors"
        try:
            sha = zoo.save_ensemble(path, models, prior, name)
        except ValueError as e:
            raise UsageError(f"cannot make an ensemble: {e}") from None
        write_atomic(output, path.read_bytes(), force=force)
    click.echo(f"{name}: {len(models)} members, weights {prior}, id {sha[:4]} -> {output}", err=True)
