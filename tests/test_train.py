"""`pxzip train` reproduces a small model end to end (a few steps on tiny data), resumes, samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pxzip
from pxzip import zoo
from pxzip.cli import cli

TINY = ["--filters", "8", "--blocks", "1", "--mix", "2", "--batch", "4", "--eval-every", "2", "--no-bf16"]


def fake_cifar(root, n=1004):
    """A CIFAR-10 binary layout with n random records per file (the last 1000 train images are held out)."""
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        recs = rng.integers(0, 256, (n if name == "data_batch_1" else 1, 3073), dtype=np.uint8)
        recs[:, 0] %= 10
        (d / f"{name}.bin").write_bytes(recs.tobytes())
    return root


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("arch", ["pixelcnnpp", "gated"])
def test_train_cifar_then_code_with_the_model(tmp_path, arch):
    data = fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    invoke("train", "--cifar10", "--data-dir", data, "--arch", arch, "--steps", "3", "--out", out, *TINY)
    m = zoo.load_file(out / "model.safetensors")
    assert m.cfg.arch == arch and m.cfg.num_filters == 8
    meta = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert meta[-1]["step"] == 3 and np.isfinite(meta[-1]["eval_bpd"])
    img = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    assert np.array_equal(pxzip.decompress(pxzip.compress(img, m), m), img)


def test_train_resumes_from_checkpoint(tmp_path):
    data = fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    invoke("train", "--cifar10", "--data-dir", data, "--steps", "2", "--out", out, *TINY)
    invoke("train", "--cifar10", "--data-dir", data, "--steps", "4", "--out", out, "--resume", *TINY)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # the second run went on from step 2, it did not start over
    assert log[1]["minutes"] >= log[0]["minutes"] > 0  # wall time adds up across runs


def test_train_gray_on_image_folder_and_sample(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    invoke("train", "--images", folder, "--crop", "8", "--gray", "--steps", "2", "--out", out, *TINY)
    m = zoo.load_file(out / "model.safetensors")
    assert m.kind == "gray"
    invoke("sample", "-m", out / "model.safetensors", "-n", "2", "--size", "4", "-o", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size[0] > 8


def test_train_needs_one_data_source(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2


def test_a_resumed_run_draws_new_batches(tmp_path, monkeypatch):
    """A resumed run must not replay the batches its first run began with (short sessions would
    train on the same opening batches again and again); the same resume draws the same ones."""
    from pxzip import train as train_mod

    seeds = []
    real = train_mod.batches_from_array
    monkeypatch.setattr(
        train_mod, "batches_from_array", lambda x, b, seed, *a: seeds.append(seed) or real(x, b, seed, *a)
    )
    data = fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    invoke("train", "--cifar10", "--data-dir", data, "--steps", "2", "--out", out, *TINY)
    ckpt = (out / "checkpoint.safetensors").read_bytes()
    for _ in range(2):
        (out / "checkpoint.safetensors").write_bytes(ckpt)
        invoke("train", "--cifar10", "--data-dir", data, "--steps", "4", "--out", out, "--resume", *TINY)
    assert seeds[0] == 0 and seeds[1] == seeds[2] != seeds[0]
    first = next(real(torch_x := train_mod.torch.arange(1000).view(1000, 1, 1, 1), 4, seeds[0]))
    assert not train_mod.torch.equal(first, next(real(torch_x, 4, seeds[1])))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "Invalid value for '--batch'"),
        (["--eval-every", "0"], "Invalid value for '--eval-every'"),
        (["--dropout", "1.5"], "Invalid value for '--dropout'"),
        (["--samples", "-1"], "Invalid value for '--samples'"),
        (["--batch", "9"], "--batch 9 is more than the 8 training images"),
        (["--device", "nonsense"], "--device 'nonsense': not a torch device"),
    ],
)
def test_bad_training_options_are_one_line_errors(tmp_path, args, message):
    data = fake_cifar(tmp_path / "data")
    res = CliRunner().invoke(cli, ["train", "--cifar10", "--data-dir", str(data), "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert message in res.stderr and "Traceback" not in res.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu(tmp_path):
    data = fake_cifar(tmp_path / "data")
    res = CliRunner().invoke(cli, ["train", "--cifar10", "--data-dir", str(data), "--device", "cuda"])
    assert res.exit_code == 2 and "no CUDA GPU" in res.stderr, res.output


def test_resuming_another_models_checkpoint_is_a_usage_error(tmp_path):
    data = fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    invoke("train", "--cifar10", "--data-dir", data, "--steps", "2", "--out", out, *TINY)
    args = ["train", "--cifar10", "--data-dir", str(data), "--steps", "4", "--out", str(out), "--resume", *TINY]
    res = CliRunner().invoke(cli, [*args, "--filters", "12"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert "is another model: num_filters 8 (this run 12)" in res.stderr
    (out / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and res.stderr.startswith("pxzip: cannot resume from") and res.stderr.count("\n") == 1


def test_sample_output_errors(tmp_path, tiny_models):
    model = str(tiny_models["dir"] / "tiny-pp-rgb.safetensors")
    for out, message in [(tmp_path / "x.xyz", "use an image file name"), (tmp_path / "no" / "x.png", "cannot write")]:
        res = CliRunner().invoke(cli, ["sample", "-m", model, "-n", "1", "--size", "2", "-o", str(out)])
        assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.output
    res = CliRunner().invoke(cli, ["sample", "-m", model, "-n", "0"])
    assert res.exit_code == 2 and "Invalid value for '-n'" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _photo_folder(path, n=3):
    path.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def test_training_on_kodak_images_warns(tmp_path):
    folder = _photo_folder(tmp_path / "imgs")
    (folder / "0.png").rename(folder / "kodim01.png")
    args = ["--images", folder, "--crop", "6", "--steps", "1", "--out", tmp_path / "run", *TINY]
    res = invoke("train", *args)
    assert "warning: training on 1 Kodak test images" in res.stderr


def test_sample_grid_at_each_evaluation(tmp_path):
    folder = _photo_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    invoke("train", "--images", folder, "--crop", "6", "--steps", "4", "--samples", "4", "--out", out, *TINY)
    grids = sorted(p.name for p in (out / "samples").iterdir())
    assert grids == ["step-000002.png", "step-000004.png"]
    with Image.open(out / "samples" / grids[-1]) as im:
        assert im.mode == "RGB" and im.size == (2 + 2 * (6 + 2), 2 + 2 * (6 + 2))  # 2x2 grid of 6x6 crops


def test_torchrun_ddp_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 -m pxzip train ...` (gloo on CPU): one log, one export."""
    folder = _photo_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pxzip"]
    cmd += ["train", "--images", str(folder), "--crop", "6", "--steps", "4", "--out", str(out), *TINY]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes" in res.stderr and res.stderr.count("exported") == 1
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # rank 0 alone evaluates and logs
    m = zoo.load_file(out / "model.safetensors")
    img = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(pxzip.decompress(pxzip.compress(img, m), m), img)


def test_conditional_training_logs_both_rates_and_codes_with_labels(tmp_path):
    data = fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    invoke("train", "--cifar10", "--data-dir", data, "--conditional", "--steps", "2", "--out", out, *TINY)
    m = zoo.load_file(out / "model.safetensors")
    assert m.cfg.num_classes == 10
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(log[-1]["eval_bpd"]) and np.isfinite(log[-1]["eval_cond_bpd"])
    img = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for label in (None, 7, "auto"):
        assert np.array_equal(pxzip.decompress(pxzip.compress(img, m, label=label), m), img)
    invoke("sample", "-m", out / "model.safetensors", "-n", "2", "--size", "4", "--per-class", "-o", tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (2 + 2 * (4 + 2), 2 + 10 * (4 + 2))  # one row per class
    res = CliRunner().invoke(cli, ["sample", "-m", str(out / "model.safetensors"), "--label", "10"])
    assert res.exit_code == 2 and "0..9" in res.output


def test_unconditional_checkpoint_resumes_as_conditional(tmp_path):
    """A trained unconditional run continues as a conditional one: same weights, class biases at zero,
    and (at the start) the same rate with or without labels."""
    import torch

    from pxzip.config import ModelConfig
    from pxzip.train import TrainConfig, Trainer, batches_from_array, build

    x = torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8)
    y = torch.randint(0, 10, (40,))
    base = ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2)
    tc = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=2, eval_every=2, eval_images=8)
    Trainer(build(base, 0), tc, batches_from_array(x, 4, 0), x[:8]).fit()
    cond = build(ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2, num_classes=10), 1)
    tc4 = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=4, eval_every=2, eval_images=8, lr_decay=0.5)
    tr = Trainer(cond, tc4, batches_from_array(x, 4, 0, y, 10, 0.5), (x[:8], y[:8]))
    tr.resume(tmp_path / "checkpoint.safetensors")
    lr = tr.sched.get_last_lr()[0]
    assert lr == pytest.approx(tc.lr * tc.lr_decay**2)  # the schedule goes on where it was
    assert tr.sched.gamma == 0.5  # with this run's decay from here on
    assert tr.step == 2 and all(float(p.detach().abs().max()) == 0 for p in cond.class_bias.values())
    assert tr.evaluate() == pytest.approx(tr._eval_nll(True))
    tr.fit()
    assert tr.sched.get_last_lr()[0] == pytest.approx(lr * 0.25)
    assert tr.step == 4 and any(float(p.detach().abs().max()) > 0 for p in cond.class_bias.values())
    broken = build(ModelConfig(num_filters=12, num_resnet=1, num_logistic_mix=2), 0)
    with pytest.raises(ValueError, match=r"is another model: num_filters 8 \(this run 12\)"):
        Trainer(broken, tc4, batches_from_array(x, 4, 0), x[:8]).resume(tmp_path / "checkpoint.safetensors")


def test_fine_tune_a_conditional_model_on_unlabelled_images(tmp_path, cond_models):
    """--init with a class-conditional model on an image folder: an unconditional model starts
    from its "no label" path (the photo fine-tune of the shipped default)."""
    folder = _photo_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    src = str(cond_models["pixelcnnpp"].path)
    args = ["--filters", "8", "--blocks", "2", "--mix", "2", "--batch", "2", "--eval-every", "1", "--no-bf16"]
    invoke("train", "--images", folder, "--crop", "6", "--steps", "1", "--init", src, "--out", out, *args)
    m = zoo.load_file(out / "model.safetensors")
    assert m.cfg.num_classes == 0


def test_gray_model_from_an_rgb_model(tmp_path, cond_models):
    """gray_from_rgb: on a gray image the transplanted gray model predicts what the RGB model
    predicts for red on that image as RGB (same mixture logits, means, log-scales), and
    `pxzip train --gray --init RGB` starts from it."""
    import dataclasses

    import torch

    from pxzip.model import PixelCNN, split_mixture
    from pxzip.train_cli import gray_from_rgb

    rgb = cond_models["pixelcnnpp"].float_model()
    cfg = dataclasses.replace(rgb.cfg, num_classes=0, in_channels=1)
    gray = PixelCNN(cfg).eval()
    gray.load_state_dict(gray_from_rgb(rgb.unconditional_state(), rgb.cfg))
    g = torch.randint(0, 256, (2, 1, 5, 6))
    with torch.no_grad():
        pi, mu, ls, _ = split_mixture(rgb(g.expand(2, 3, 5, 6)), rgb.cfg)  # "no label": the folded path
        gpi, gmu, gls, _ = split_mixture(gray(g), cfg)
    assert torch.allclose(gpi, pi, atol=1e-4) and torch.allclose(gmu[:, 0], mu[:, 0], atol=1e-4)
    assert torch.allclose(gls[:, 0], ls[:, 0], atol=1e-4)
    folder = _photo_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    src = str(cond_models["pixelcnnpp"].path)
    c = rgb.cfg
    args = ["--filters", c.num_filters, "--blocks", c.num_resnet, "--mix", c.num_logistic_mix, "--batch", "2"]
    invoke("train", "--images", folder, "--gray", "--crop", "6", "--steps", "1", "--init", src, "--out", out, *args)
    assert zoo.load_file(out / "model.safetensors").cfg.in_channels == 1
    bad = ["train", "--images", str(folder), "--gray", "--crop", "6", "--init", src, "--filters", "4"]
    bad += ["--out", str(out)]
    res = CliRunner().invoke(cli, bad)
    assert res.exit_code != 0 and "same network" in res.output
