"""Head offsets (format 5): per unit, the encoder fits a scale and an offset for every head output.

A model trained on one set of photos is a little off on any other image: its colours, its noise,
its sharpness. Scaling and shifting each of the head's P outputs (PixelCNN++: the mixture logits,
means, log-scales and colour coefficients) by constants per unit of tiles takes much of that back
for a few hundred header bytes (kodim02: -0.064 bits/dim; offsets alone -0.052, scales add
-0.007 to -0.012 on the three images measured). The decoder only applies the stored integers to
the exact head outputs, so the tables stay a deterministic function of the decoded pixels. Only
the encoder's choice is a float optimisation: it may differ between machines, which changes the
file's size by a hair, never whether it decodes.

A unit's record is 2P integers, scales s then offsets q, applied to each head output p (an
integer in head units, 2**-act_bits; means in "u" units, see exact.py) as
``clip(p + ((p * s + 2**15) >> 16) + q, -CLAMP, CLAMP)``: s in units of 2**-16 of p, q in head
units. A coarser grid for q would cost fewer bytes, but the RGB coefficients multiply pixel
values up to 255: rounding q to 1/64 moved means by up to two levels and gave back a quarter of
kodim02's gain.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pxzip import container
from pxzip.config import LOG_SCALE_MAX, LOG_SCALE_MIN, ModelConfig
from pxzip.exact import CLAMP
from pxzip.model import logistic_mixture_nll

MIN_FIT_PIXELS = 1 << 14  # smaller units are not fitted: ~200 header bytes would cost more than they gain
FIT_POSITIONS = 1 << 16  # positions of a unit the fit reads (a fixed pseudo-random sample)
FIT_STEPS = 30  # Newton steps at most (kodim02 converges in about 15)
SCALE_BITS = 16  # scales are integers at 2**-16


def apply(params: np.ndarray, record: np.ndarray | None) -> np.ndarray:
    """Integer head outputs (N, P) and a unit's record (2P,), or one record per row (N, 2P): scales,
    then offsets (module docstring). None: unchanged. Exact int64: |p * s| <= 2**40."""
    if record is None:
        return params
    p = params.astype(np.int64)
    rec = record.astype(np.int64)
    s, q = rec[..., : p.shape[1]], rec[..., p.shape[1] :]
    return np.clip(p + ((p * s + (1 << (SCALE_BITS - 1))) >> SCALE_BITS) + q, -CLAMP, CLAMP)


def cost_bits(record: np.ndarray) -> int:
    """Header bits of a unit's record: varint count, then one zigzag varint per integer."""
    return 8 * len(container.offset_record(tuple(int(v) for v in record)))


def fittable(cfg: ModelConfig) -> bool:
    """Records are fitted for mixture heads (P = 10 K for RGB) whose 2P integers a file may hold.
    A 256-way softmax head has 256 C outputs: its record alone would cost about as much as a photo
    unit gains."""
    return cfg.arch == "pixelcnnpp" and 2 * cfg.num_params_out <= container.MAX_OFFSET_RECORD


@dataclass
class Fit:
    record: np.ndarray  # (2P,) int64 record chosen: scales, then offsets (all 0: none)
    bits_before: float  # estimated code length of the unit without the record (float analogue of the tables)
    bits_after: float  # the same with it

    @property
    def worth_it(self) -> bool:
        """Whether the record saves more than it costs (against one byte for "none", and a section's
        unit count when it is the only unit with a record: both a few bits)."""
        return bool(self.record.any()) and self.bits_before - self.bits_after > cost_bits(self.record)


def sample(n: int) -> np.ndarray:
    """Sorted indices of the positions (of n) the fit reads: all, or a fixed pseudo-random subset
    (a stride reads some columns only, and photos have column patterns: kodim02's even columns cost
    0.04 bits/dim more than its odd ones)."""
    if n <= FIT_POSITIONS:
        return np.arange(n)
    return np.sort(np.random.default_rng(n).choice(n, FIT_POSITIONS, replace=False))


def fit(params: np.ndarray, pixels: np.ndarray, cfg: ModelConfig, dims: int, prior: np.ndarray | None = None) -> Fit:
    """A unit's record (scales, offsets) from a sample of its positions.

    params (N, P) integer head outputs, pixels (N, C) uint8 at the same positions; dims: subpixels
    of the whole unit (the estimates are scaled to it); prior: an ensemble's member weights.
    Runs on one thread, so a machine always picks the same record for the same unit. The estimates
    are those of the float analogue of the tables (kodim02: within 0.001 bits/dim of the exact
    tables' ideal length).
    """
    with _one_thread():
        # autograd even when the caller runs under torch.inference_mode() or no_grad()
        with torch.inference_mode(False), torch.enable_grad():
            scale = _head_scale(cfg)  # (P,)
            base = torch.from_numpy(params.astype(np.float32)) / scale  # (N, P) in the float model's units
            px = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.int64)  # (N, C)
            a, z = _newton(base, px, cfg, prior)
            s = torch.round(a * 2**SCALE_BITS).clamp(-CLAMP, CLAMP).detach()
            q = torch.round(z * scale).clamp(-CLAMP, CLAMP).detach()
            before = float(_loss(0, base, px, cfg, prior))
            after = float(_loss(q / scale, base * (1 + s / 2**SCALE_BITS), px, cfg, prior))
    record = torch.cat([s, q]).to(torch.int64).numpy()
    if not (math.isfinite(before) and math.isfinite(after) and after < before):
        record, after = np.zeros_like(record), before
    return Fit(record, before * dims, after * dims)


_THREADS = threading.Lock()


@contextlib.contextmanager
def _one_thread():
    """torch on one thread for the fit, so that its float32 sums (and so the record, and the file's
    bytes) do not depend on the caller's thread count. torch has no per-thread setting, so this
    sets the process's count and puts it back; the lock makes concurrent fits (compress calls in
    threads) take turns, so none restores a count another one set. The exact model's integers do
    not depend on the thread count, so other threads' coding meanwhile is only slower, never
    different. (On several threads torch's float32 sums and vectorised tails need not be the
    same, so a record could change with the caller's thread count: on a 256x512 crop of kodim23
    the 2-thread record happened to equal the 1-thread one, which proves nothing.)"""
    with _THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _head_scale(cfg: ModelConfig) -> torch.Tensor:
    """(P,) head units per float-model unit of each output: 2**act_bits, times 255 for the means."""
    s = torch.full((cfg.num_params_out,), float(2**cfg.act_bits))
    k, c = cfg.num_logistic_mix, cfg.in_channels
    s[k : k + c * k] *= 255
    return s


def _loss(z, base: torch.Tensor, px: torch.Tensor, cfg: ModelConfig, prior) -> torch.Tensor:
    """Bits per subpixel of the float analogue of the exact tables at head outputs base + z (N, P)."""
    out = base + z
    k, c = cfg.num_logistic_mix, cfg.in_channels
    ls = slice(k + c * k, k + 2 * c * k)  # the tables clamp log-scales at both ends
    out = torch.cat([out[:, : ls.start], out[:, ls].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX), out[:, ls.stop :]], 1)
    if prior is not None:
        # an ensemble: each member's logits normalised on their own, plus log(w_m / sum w), as
        # tables.Mixture mixes members
        total = float(sum(int(p) for p in prior))
        groups = out[:, :k].split(k // len(prior), 1)
        logits = [F.log_softmax(g, 1) + math.log(max(int(p), 1e-30) / total) for g, p in zip(groups, prior)]
        out = torch.cat([*logits, out[:, k:]], 1)
    return logistic_mixture_nll(out.T[None, :, None], px.T[None, :, None], cfg)  # as one (1, P, 1, N) image


def _newton(base: torch.Tensor, px: torch.Tensor, cfg: ModelConfig, prior) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise the sample's loss over scales a and offsets z (P each), outputs base * (1 + a) + z:
    Newton steps on the empirical Fisher matrix.

    One backward pass gives every position's gradient at its outputs, g (N, P); the gradient of
    its nats in (a, z) is then [g * base, g], and the outer products of those are the Fisher
    information, a good curvature for a log-likelihood (Gauss-Newton, BHHH). A backtracking line
    search keeps each step a descent. L-BFGS crawled here (60 iterations reached half the gain):
    logits, means, scales and colour coefficients differ in curvature by orders of magnitude.
    """
    n, p = base.shape
    to_nats = n * cfg.in_channels * math.log(2)  # loss (bits per subpixel) -> total nats
    theta = torch.zeros(2 * p)  # (a, z)

    def loss(th: torch.Tensor) -> float:
        with torch.no_grad():
            return float(_loss(th[p:], base * (1 + th[:p]), px, cfg, prior))

    for _ in range(FIT_STEPS):
        out = (base * (1 + theta[:p]) + theta[p:]).requires_grad_(True)
        value = _loss(0, out, px, cfg, prior)
        (grad,) = torch.autograd.grad(value, out)  # (N, P): each position's gradient, / total
        cur = float(value.detach())
        per = torch.cat([grad * base, grad], 1) * to_nats  # (N, 2P): each position's gradient of its nats
        fisher = per.T @ per  # (2P, 2P)
        damp = 1e-6 * float(fisher.diagonal().mean()) + 1e-12
        delta = torch.linalg.solve(fisher + damp * torch.eye(2 * p), -per.sum(0))
        t = 1.0
        while t > 1e-4:
            trial = theta + t * delta
            val = loss(trial)
            if val < cur:
                break
            t /= 2
        else:
            break  # no descent along the Newton direction: converged as far as float32 tells
        theta = trial
        if cur - val < 1e-7 * cur:
            break
    return theta[:p], theta[p:]
