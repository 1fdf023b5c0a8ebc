"""Head offsets (format 5): per unit, the encoder fits integers added to every head output.

A model trained on one set of photos is a little off on any other image: its colours, its noise,
its sharpness. Shifting each of the head's P outputs (PixelCNN++: the mixture logits, means,
log-scales and colour coefficients) by a constant per unit of tiles takes much of that back for a
few header bytes (kodim02: -0.052 bits/dim for 84 bytes). The decoder only adds the stored
integers to the exact head outputs, so the tables stay a deterministic function of the decoded
pixels. Only the encoder's choice of offsets is a float optimisation: it may differ between
machines, which changes the file's size by a hair, never whether it decodes.

Offsets q are in head units (2**-act_bits; means in "u" units, see exact.py), applied as
``clip(params + q, -CLAMP, CLAMP)``. A coarser grid would cost fewer header bytes, but the RGB
coefficients multiply pixel values up to 255: rounding them to 1/64 moved means by up to two
levels and gave back a quarter of kodim02's gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pxzip import container
from pxzip.config import LOG_SCALE_MAX, LOG_SCALE_MIN, ModelConfig
from pxzip.exact import CLAMP
from pxzip.model import logistic_mixture_nll

MIN_FIT_PIXELS = 1 << 14  # smaller units are not fitted: ~80 header bytes would cost more than they gain
FIT_POSITIONS = 1 << 16  # positions of a unit the fit reads (a fixed pseudo-random sample)
FIT_STEPS = 30  # Newton steps at most (kodim02 converges in about 15)


def apply(params: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Integer head outputs (N, P) plus offsets (P,) or one row per output (N, P); None: unchanged."""
    if offsets is None:
        return params
    return np.clip(params.astype(np.int64) + offsets.astype(np.int64), -CLAMP, CLAMP)


def cost_bits(offsets: np.ndarray) -> int:
    """Header bits of a unit's record: varint count, then one zigzag varint per offset."""
    return 8 * len(container.offset_record(tuple(int(q) for q in offsets)))


def fittable(cfg: ModelConfig) -> bool:
    """Offsets are fitted for mixture heads (P = 10 K for RGB). A 256-way softmax head has 256 C
    outputs: its record alone would cost about as much as a photo unit gains."""
    return cfg.arch == "pixelcnnpp"


@dataclass
class Fit:
    offsets: np.ndarray  # (P,) int64 offsets chosen (all 0: none)
    bits_before: float  # estimated code length of the unit without offsets (float analogue of the tables)
    bits_after: float  # the same with the offsets

    @property
    def worth_it(self) -> bool:
        """Whether the offsets save more than their record costs (against one byte for "none", and a
        section's unit count when it is the only unit with offsets: both a few bits)."""
        return bool(self.offsets.any()) and self.bits_before - self.bits_after > cost_bits(self.offsets)


def sample(n: int) -> np.ndarray:
    """Sorted indices of the positions (of n) the fit reads: all, or a fixed pseudo-random subset
    (a stride reads some columns only, and photos have column patterns: kodim02's even columns cost
    0.04 bits/dim more than its odd ones)."""
    if n <= FIT_POSITIONS:
        return np.arange(n)
    return np.sort(np.random.default_rng(n).choice(n, FIT_POSITIONS, replace=False))


def fit(params: np.ndarray, pixels: np.ndarray, cfg: ModelConfig, dims: int, prior: np.ndarray | None = None) -> Fit:
    """Offsets for one unit from a sample of its positions.

    params (N, P) integer head outputs, pixels (N, C) uint8 at the same positions; dims: subpixels
    of the whole unit (the estimates are scaled to it); prior: an ensemble's member weights.
    Runs on one thread, so a machine always picks the same offsets for the same unit. The estimates
    are those of the float analogue of the tables (kodim02: within 0.001 bits/dim of the exact
    tables' ideal length).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # process-wide: the fit is short, and its sums then have one order
    try:
        # autograd even when the caller runs under torch.inference_mode() or no_grad()
        with torch.inference_mode(False), torch.enable_grad():
            scale = _head_scale(cfg)  # (P,)
            base = torch.from_numpy(params.astype(np.float32)) / scale  # (N, P) in the float model's units
            px = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.int64)  # (N, C)
            z = _newton(base, px, cfg, prior)
            q = torch.round(z * scale).clamp(-CLAMP, CLAMP).detach()
            before = float(_loss(torch.zeros_like(z), base, px, cfg, prior))
            after = float(_loss(q / scale, base, px, cfg, prior))
    finally:
        torch.set_num_threads(threads)
    if not (math.isfinite(before) and math.isfinite(after) and after < before):
        q, after = torch.zeros_like(q), before
    return Fit(q.to(torch.int64).numpy(), before * dims, after * dims)


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


def _newton(base: torch.Tensor, px: torch.Tensor, cfg: ModelConfig, prior) -> torch.Tensor:
    """Minimise the sample's loss over z (P,): Newton steps on the empirical Fisher matrix.

    z adds to every position's head output, so one backward pass gives every position's gradient
    (its output's gradient); their outer products are the Fisher information, a good curvature for
    a log-likelihood (Gauss-Newton, BHHH). A backtracking line search keeps each step a descent.
    L-BFGS crawled here (60 iterations reached half the gain): logits, means, scales and colour
    coefficients differ in curvature by orders of magnitude.
    """
    n, p = base.shape
    to_nats = n * cfg.in_channels * math.log(2)  # loss (bits per subpixel) -> total nats
    z = torch.zeros(p)
    for _ in range(FIT_STEPS):
        out = (base + z).requires_grad_(True)
        value = _loss(0, out, px, cfg, prior)
        (grad,) = torch.autograd.grad(value, out)  # (N, P): each position's gradient, / total
        cur = float(value.detach())
        per = grad * to_nats  # (N, P) each position's gradient of its nats
        fisher = per.T @ per  # (P, P)
        damp = 1e-6 * float(fisher.diagonal().mean()) + 1e-12
        delta = torch.linalg.solve(fisher + damp * torch.eye(p), -per.sum(0))
        t = 1.0
        while t > 1e-4:
            trial = z + t * delta
            with torch.no_grad():
                val = float(_loss(trial, base, px, cfg, prior))
            if val < cur:
                break
            t /= 2
        else:
            break  # no descent along the Newton direction: converged as far as float32 tells
        z = trial
        if cur - val < 1e-7 * cur:
            break
    return z
