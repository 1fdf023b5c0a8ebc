"""Exact probability tables: integer head outputs -> integer symbol frequencies for the coder.

Everything here is numpy int64 arithmetic with lookup tables shipped in the model file, so the
tables are a pure function of the integer head outputs on every machine. Bounds are noted where
a product could get near 2**63.
"""

from __future__ import annotations

import numpy as np

from pxzip import kernels, threads
from pxzip.config import LOG_SCALE_MAX, LOG_SCALE_MIN, ModelConfig

PRECISION = 24  # frequencies of one table sum to 2**PRECISION (constriction's default precision)
CDF_BITS = 24  # the logistic CDF table is scaled by 2**CDF_BITS
WEIGHT_BITS = 15  # mixture weights are renormalised to sum to about 2**WEIGHT_BITS
MEAN_CLAMP_UNITS = 512  # means are clamped to +-512 "u" units (pixels span -255..255)
_EDGES_U = np.arange(1, 256, dtype=np.int64) * 2 - 256  # the 255 bin edges between pixel values, in u units


def to_freqs(mass: np.ndarray) -> np.ndarray:
    """Non-negative integer masses (N, 256) -> frequencies >= 1 summing to 2**PRECISION per row."""
    mass = mass.astype(np.int64)
    total = mass.sum(1)
    mass = np.where(total[:, None] > 0, mass, 1)  # an all-zero row becomes uniform
    total = mass.sum(1)
    # keep mass * 2**PRECISION below 2**63: bring every row's total under 2**38
    _, bits = np.frexp(total.astype(np.float64))  # exact: totals are integers < 2**53
    shift = np.maximum(bits - 38, 0).astype(np.int64)
    mass = mass >> shift[:, None]
    total = mass.sum(1)
    mass = np.where(total[:, None] > 0, mass, 1)
    total = mass.sum(1)
    n = mass.shape[1]
    freqs = 1 + (mass * ((1 << PRECISION) - n)) // total[:, None]
    rest = (1 << PRECISION) - freqs.sum(1)  # >= 0 by construction, < n
    freqs[np.arange(len(freqs)), freqs.argmax(1)] += rest
    return freqs


def softmax_freqs_numpy(logits: np.ndarray, luts: dict[str, np.ndarray]) -> np.ndarray:
    """256-way softmax head: integer logits (N, 256) at 2**-act_bits -> frequencies (numpy reference)."""
    exp = luts["exp"]
    d = logits - logits.max(1, keepdims=True)  # <= 0
    idx = np.clip(d + (len(exp) - 1), 0, None)
    return to_freqs(exp[idx])  # each <= 2**24, totals <= 2**32


def bernoulli_freqs(logits: np.ndarray, luts: dict[str, np.ndarray]) -> np.ndarray:
    """Bernoulli head: integer logits (N,) or (N, 1) of "white" at 2**-act_bits -> frequencies (N, 256).

    The two-symbol table sits in the coder's 256-symbol alphabet: symbol 255 (white) and 0 (black)
    share the mass, every other symbol keeps the floor of 1 (254 / 2**24 of the range, 2e-5 bits a
    pixel), so bilevel planes use the same coder, decoders and batching as every other plane.
    P(white) is the logistic CDF table at the logit, which is exactly the sigmoid the float model
    trains with, at 2**-24 (clipped to its +-24 range, where it is flat).
    """
    cdf = luts["cdf"]
    half = (len(cdf) - 1) // 2
    lg = np.asarray(logits, np.int64).reshape(-1)
    p_white = cdf[np.clip(lg + half, 0, len(cdf) - 1)]  # (N,) in 0..2**24
    out = np.ones((len(lg), 256), np.int64)
    out[:, 255] = 1 + ((p_white * ((1 << PRECISION) - 256)) >> CDF_BITS)  # <= 2**24 - 255
    out[:, 0] = (1 << PRECISION) - 254 - out[:, 255]  # >= 1: the row sums to 2**PRECISION
    return out


class NumpyMixture:
    """Discretised logistic mixture (PixelCNN++) for one batch of pixels, channel by channel, in numpy:
    the readable definition that `Mixture` (compiled, kernels.py; same interface and arguments,
    documented there) is tested against."""

    def __init__(
        self, params: np.ndarray, cfg: ModelConfig, luts: dict[str, np.ndarray], prior: np.ndarray | None = None
    ):
        self.cfg, self.luts = cfg, luts
        self.s = 2**cfg.act_bits
        k, c = cfg.num_logistic_mix, cfg.in_channels
        n = len(params)
        p = params.astype(np.int64)
        self.mu = p[:, k : k + c * k].reshape(n, c, k).copy()
        ls = np.clip(p[:, k + c * k : k + 2 * c * k].reshape(n, c, k), LOG_SCALE_MIN * self.s, LOG_SCALE_MAX * self.s)
        self.inv = luts["inv_scale"][ls - LOG_SCALE_MIN * self.s]  # (N, C, K) at 2**-24, <= 2**26.1
        tanh = luts["tanh"]
        co = p[:, k + 2 * c * k :].reshape(n, -1, k)
        half = (len(tanh) - 1) // 2
        self.coef = tanh[np.clip(co + half, 0, len(tanh) - 1)]  # (N, 3, K) at 2**-act_bits, |.| <= s
        self.weights = self._weights(p[:, :k], prior)
        self.u: list[np.ndarray] = []  # observed channels, as u = 2p - 255

    def _weights(self, logits: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        """Mixture weights (N, K) summing to about 2**WEIGHT_BITS, from integer logits (N, K)."""
        if prior is None:
            return self._normalise(self._exp(logits))
        groups = np.split(logits, len(prior), axis=1)  # (N, K / G) each: one member's components
        # each member's weights sum to about 2**15, times its prior weight (<= 255): <= 2**23
        w = np.concatenate([self._normalise(self._exp(g)) * int(p) for g, p in zip(groups, prior)], 1)
        return self._normalise(w)

    def _exp(self, logits: np.ndarray) -> np.ndarray:
        exp = self.luts["exp"]
        d = logits - logits.max(1, keepdims=True)
        return exp[np.clip(d + (len(exp) - 1), 0, None)]

    @staticmethod
    def _normalise(w: np.ndarray) -> np.ndarray:
        """Weights (N, K) <= 2**39 -> weights summing to about 2**15 (rows of zeros are kept)."""
        total = w.sum(1, keepdims=True)
        return np.where(total > 0, (w << WEIGHT_BITS) // np.maximum(total, 1), 0)

    def _mean(self, c: int) -> np.ndarray:
        m = self.mu[:, c].copy()  # (N, K) at 2**-act_bits, "u" units
        if c == 1:
            m += self.coef[:, 0] * self.u[0][:, None]
        elif c == 2:
            m += self.coef[:, 1] * self.u[0][:, None] + self.coef[:, 2] * self.u[1][:, None]
        lim = MEAN_CLAMP_UNITS * self.s
        return np.clip(m, -lim, lim)

    def _cdf(self, c: int) -> np.ndarray:
        """CDF of each component at the 255 bin edges: (N, K, 255) at 2**-CDF_BITS.

        Edge j lies between pixel values j and j + 1 (u = 2j - 254); pixel 0 and 255 take the tails.
        """
        cdf = self.luts["cdf"]
        half = (len(cdf) - 1) // 2
        d = _EDGES_U[None, None, :] * self.s - self._mean(c)[:, :, None]  # |d| <= 2**20
        d *= self.inv[:, c][:, :, None]
        d += (1 << 23) + (half << 24)
        d >>= 24  # (N, K, E): the logistic's argument at 2**-act_bits, shifted to a table index
        return cdf.take(d, mode="clip")  # clip: beyond the table the CDF is flat at 0 or 2**24

    def freqs(self, c: int) -> np.ndarray:
        cdf = self._cdf(c)  # (N, K, 255)
        self._last = (c, cdf)
        # the mixture's CDF, then its bin masses: the same integers as mixing the components' bin
        # masses (linearity), but one difference over 256 bins instead of K
        mix_cdf = np.einsum("nk,nke->ne", self.weights, cdf)  # <= 2**15 * 2**24 * K
        n = len(cdf)
        top = self.weights.sum(1, keepdims=True) << CDF_BITS  # the mixture CDF at +infinity
        full = np.concatenate([np.zeros((n, 1), np.int64), mix_cdf, top], 1)
        return to_freqs(np.diff(full, axis=1))

    def observe(self, c: int, values: np.ndarray) -> None:
        values = values.astype(np.int64)
        cdf = self._last[1] if getattr(self, "_last", (None,))[0] == c else self._cdf(c)
        # value v's mass is cdf[v] - cdf[v - 1], with cdf[-1] = 0 and cdf[255] = 2**24 (the tails)
        v = values[:, None, None]
        hi = np.take_along_axis(cdf, np.minimum(v, 254), 2)[:, :, 0]
        lo = np.take_along_axis(cdf, np.maximum(v - 1, 0), 2)[:, :, 0]
        hi[values == 255] = 1 << CDF_BITS
        lo[values == 0] = 0
        m = hi - lo  # (N, K) each component's mass of the observed value, <= 2**24
        post = self.weights * m  # <= 2**39
        self.weights = np.where(post.sum(1, keepdims=True) > 0, self._normalise(post), self.weights)
        self.u.append(values * 2 - 255)


def softmax_freqs(logits: np.ndarray, luts: dict[str, np.ndarray]) -> np.ndarray:
    """256-way softmax head: integer logits (N, 256) at 2**-act_bits -> frequencies (N, 256) int64."""
    out = np.empty(logits.shape, np.int64)
    kernels.softmax_freqs(np.ascontiguousarray(logits, dtype=np.int64), luts["exp"], out)
    return out


class Mixture:
    """Discretised logistic mixture (PixelCNN++) for one batch of pixels, channel by channel (compiled).

    params: (N, P) integers from the head. Call `freqs(c)` for channel c = 0, 1, 2 in order, and
    `observe(c, values)` after channel c is known: later channels' means and the mixture weights
    (the posterior given the earlier channels) depend on it.
    prior: None, or the integer weights of G member models whose K / G components each lie side by
    side (an ensemble, see ensemble.py): each member's logits are normalised on their own, then
    weighted, so the table is the weighted average of the members' distributions.
    The same integers as `NumpyMixture` (the readable definition), in one pass per table without
    the (N, K, 255) temporaries (kernels.py).
    """

    def __init__(
        self, params: np.ndarray, cfg: ModelConfig, luts: dict[str, np.ndarray], prior: np.ndarray | None = None
    ):
        self.luts, self.s = luts, 2**cfg.act_bits
        k, c = cfg.num_logistic_mix, cfg.in_channels
        n = len(params)
        p = np.ascontiguousarray(params, dtype=np.int64)
        self.mu = np.empty((n, c, k), np.int64)  # means at 2**-act_bits, "u" units
        self.inv = np.empty((n, c, k), np.int64)  # inverse scales at 2**-24
        self.coef = np.empty((n, 3 if c == 3 else 0, k), np.int64)  # RGB coefficients at 2**-act_bits
        self.weights = np.empty((n, k), np.int64)  # mixture weights, about 2**15 in all
        self.u = np.zeros((n, c), np.int64)  # observed channels as u = 2p - 255
        pr = np.zeros(0, np.int64) if prior is None else np.asarray(prior, np.int64)
        kernels.mixture_setup(
            p, k, c, self.s, LOG_SCALE_MIN, LOG_SCALE_MAX, luts["inv_scale"], luts["tanh"], luts["exp"], pr,
            self.mu, self.inv, self.coef, self.weights,
        )  # fmt: skip

    def freqs(self, c: int) -> np.ndarray:
        out = np.empty((len(self.mu), 256), np.int64)
        if len(out) < threads.MIN_ROWS:  # the common small call without the split's Python overhead
            kernels.mixture_freqs(self.mu, self.inv, self.coef, self.weights, self.u, c, self.s, self.luts["cdf"], out)
            return out

        def rows(a: int, b: int) -> None:  # row slices of C arrays: C arrays again, no copies
            sl = slice(a, b)
            kernels.mixture_freqs(
                self.mu[sl], self.inv[sl], self.coef[sl], self.weights[sl], self.u[sl], c, self.s, self.luts["cdf"],
                out[sl],
            )  # fmt: skip

        threads.split_rows(len(out), rows)
        return out

    def observe(self, c: int, values: np.ndarray) -> None:
        v = np.ascontiguousarray(values, dtype=np.int64)
        kernels.mixture_observe(self.mu, self.inv, self.coef, self.weights, self.u, c, v, self.s, self.luts["cdf"])


class PixelSteps:
    """Frequencies of one pixel's channels in coding order, for step-by-step users (decoder, sampler).

    params: a callable returning the head output (N, P) at the current position, as integers. The
    Gated PixelCNN's channel masks make its output depend on the channels already set, so it is
    asked again for every channel; PixelCNN++ is asked once and couples channels in the mixture.
    Call `freqs(c)`, then `observe(c, values)` once channel c is known, for c = 0, 1, ...
    """

    def __init__(self, cfg: ModelConfig, luts: dict[str, np.ndarray], params, prior: np.ndarray | None = None):
        self.cfg, self.luts, self.params, self.prior = cfg, luts, params, prior
        self.mix: Mixture | None = None

    def freqs(self, c: int) -> np.ndarray:
        if self.cfg.bilevel:
            return bernoulli_freqs(self.params()[:, :1], self.luts)
        if self.cfg.arch == "gated":
            return softmax_freqs(self.params()[:, c * 256 : (c + 1) * 256], self.luts)
        if self.mix is None:
            self.mix = Mixture(self.params(), self.cfg, self.luts, self.prior)
        return self.mix.freqs(c)

    def observe(self, c: int, values: np.ndarray) -> None:
        if self.mix is not None:
            self.mix.observe(c, values)


def head_freqs_all(
    params: np.ndarray, pixels: np.ndarray, cfg: ModelConfig, luts, prior: np.ndarray | None = None
) -> np.ndarray:
    """Encoder side: params (N, P), the known pixels (N, C) -> frequencies (N, C, 256).

    prior: an ensemble's member weights (see `Mixture`), else None."""
    n, c = pixels.shape
    out = np.empty((n, c, 256), np.int64)
    if cfg.bilevel:
        out[:, 0] = bernoulli_freqs(params[:, :1], luts)
        return out
    if cfg.arch == "gated":
        for ch in range(c):
            out[:, ch] = softmax_freqs(params[:, ch * 256 : (ch + 1) * 256], luts)
        return out
    mix = Mixture(params, cfg, luts, prior)
    for ch in range(c):
        out[:, ch] = mix.freqs(ch)
        mix.observe(ch, pixels[:, ch])
    return out
