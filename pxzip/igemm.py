"""Exact integer matrix products as int8 GEMMs on 7-bit limbs: float64's integers, faster on one core.

Why: the exact network's convolutions are sums of integer products (activations |a| <= 2**20,
weights |w| < 2**11). float64 GEMMs give those integers exactly (export proves every partial sum
< 2**52) but run at ~20 GMAC/s a core here; int8 GEMMs with int32 sums (torch._int_mm, oneDNN)
run at ~180. Writing every integer in balanced base-128 digits (limbs), v = sum_i d_i 128**i with
d_i in [-64, 63], a product x @ w is the sum over limb pairs of 128**(i+j) * (x_i @ w_j): weights
take two limbs and activations two or three, so four to six int8 products replace one float64
product, 1.2-1.6x net on one thread (measured: benchmarks/README.md, session 13).

Each limb product is exact in int32 in any summation order: |d| <= 64 gives |x_i . w_j| <= K * 2**12
< 2**31 for K < 2**19. Limbs of at most 64 (not 127) also keep clear of the int16 saturation of
AVX2's vpmaddubsw path (u8 * s8 pairs: 2 * 192 * 64 < 2**15), and the self-check at import tries
the extremes, so a backend that rounded or saturated anyway would be caught and not used. The limb
results are combined in int64 (exact) and the result, < 2**52 by export's bound, is exact in
float64. So the integers are the same as float64's whatever the limb count, backend, blocking or
thread count; the limb count is chosen per call from the data. Which path runs is therefore only a
question of speed: the decoders' small per-step products always take the limbs; the encoder's
whole-tile products take them on one torch thread only (`whole_tiles`), since on more the
multi-threaded float64 GEMM was faster (the limb splitting and recombining run on one core).

Where torch._int_mm is missing or fails its self-check, the float64 GEMM runs instead: the same
integers, only slower. PXZIP_GEMM=float64 forces that path (the reference, for tests and benchmarks).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from numba import njit

from pxzip import kernels
from pxzip.kernels import _rq

LIMB_BITS = 7  # base 128 digits ...
LIMB_MAX = 64  # ... in [-64, 63]
CHUNK = 2048  # output columns per GEMM of conv_finish (its int8 im2col stays in cache)
MAX_K = 1 << 19  # inner dimension bound for exact int32 limb sums: K * 64 * 64 < 2**31

_jit = njit(cache=True, nogil=True)


@_jit
def limbs_for(amax: int) -> int:
    """Limbs needed for integers |v| <= amax: the smallest n with amax <= 128**n - 1 - bias(n)."""
    n = 1
    while amax > (1 << (LIMB_BITS * n)) - 1 - _bias(n):
        n += 1
    return n


@_jit
def _bias(n: int) -> int:
    """64 * (1 + 128 + ... + 128**(n-1)): v + bias(n) has n unsigned base-128 digits, each 64 above
    v's balanced digit."""
    return LIMB_MAX * (((1 << (LIMB_BITS * n)) - 1) // ((1 << LIMB_BITS) - 1))


@_jit
def _digit(v, bias, sh):
    """Limb sh / 7 of the integer v (a float64), in [-64, 63]: digit of v + bias, less 64."""
    return (((np.int64(v) + bias) >> sh) & 127) - LIMB_MAX


@_jit
def _bound(x):
    """An upper bound on max |x| (2-D float64 integers), below 2 * max |x|: the OR of all |x|. An OR
    vectorises without fast-math (a max reduction did not, 5x slower measured); at worst it asks
    for one limb more than the values need, never fewer."""
    m = np.int64(0)
    for i in range(x.shape[0]):
        r = x[i]
        for k in range(r.size):
            m |= abs(np.int64(r[k]))
    return m


@_jit
def _to_limbs(base, c0, k):
    """(n, (n * M, k) int8 limbs) of the float64 integers base[:, c0 : c0 + k] of a C-contiguous
    (M, W) array, n as few as the values allow: limb i of row m at row i * M + m. The same
    loops on a strided view compile to scalar code (5x slower, measured); on row slices of a
    C-contiguous array they vectorise (indexing base[r, c0 + c] did not: negative-index checks)."""
    m = base.shape[0]
    b = np.int64(0)
    for r in range(m):
        row = base[r, c0 : c0 + k]
        for c in range(k):
            b |= abs(np.int64(row[c]))
    n = limbs_for(b)
    bias = _bias(n)
    out = np.empty((n * m, k), np.int8)
    for r in range(m):
        row = base[r, c0 : c0 + k]
        for i in range(n):
            sh = LIMB_BITS * i
            o = out[i * m + r]
            for c in range(k):
                o[c] = _digit(row[c], bias, sh)
    return n, out


def _limbs_of(x: np.ndarray) -> tuple[int, np.ndarray]:
    """(n, (n * M, K) int8 limbs) of x (M, K) float64 integers: a C-contiguous array, or a block of
    whole-height columns of one (the raster decoder's views into its row buffers)."""
    if x.flags.c_contiguous:
        return _to_limbs(x, 0, x.shape[1])
    base = x.base
    if isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous and base.dtype == x.dtype:
        off, rem = divmod(x.__array_interface__["data"][0] - base.__array_interface__["data"][0], x.itemsize)
        if rem == 0 and x.strides == base.strides and x.shape[0] == base.shape[0] and 0 <= off < base.shape[1]:
            return _to_limbs(base, off, x.shape[1])
    x = np.ascontiguousarray(x)
    return _to_limbs(x, 0, x.shape[1])


@_jit
def _split_cols(w, n, bias, out):
    """w (K, N) float64 integers -> out (K, n * N) int8: limb j of column o at column j * N + o."""
    k, m = w.shape
    for r in range(k):
        for j in range(n):
            sh = LIMB_BITS * j
            for c in range(m):
                out[r, j * m + c] = _digit(w[r, c], bias, sh)


@_jit
def _limb_sums(r, na, nw, row0, ri, rj, ci, cj, s):
    """s (L,) int64 = one row or column of a product from its limb products r (int32): the sum over
    activation limbs i and weight limbs j of 128**(i+j) r[row0 + i*ri + j*rj, i*ci + j*cj + (0..L)].
    Activations on the left, r (na * M, nw * N): row a is (a, M, 0, 0, N); weights on the left,
    r (nw * C, na * m): channel o is (o, 0, C, m, 0)."""
    n = s.shape[0]
    s[:] = 0
    for i in range(na):
        for j in range(nw):
            sh = LIMB_BITS * (i + j)
            rr = r[row0 + i * ri + j * rj, i * ci + j * cj : i * ci + j * cj + n]
            for o in range(n):
                s[o] += np.int64(rr[o]) << sh


@_jit
def _limbs_padded(x, pt, pl, hp, wp):
    """x (B, Cin, H, W) float64 integers -> (n, limbs (n, Cin, B * Hp * Wp) int8) of x zero-padded
    by pt rows on top and pl columns on the left inside (Hp, Wp) (zero's limbs are all zero)."""
    b, cin, h, w = x.shape
    m = np.int64(0)
    for q in range(b):
        for c in range(cin):
            for i in range(h):
                r = x[q, c, i]
                for j in range(w):
                    m |= abs(np.int64(r[j]))
    n = limbs_for(m)
    bias = _bias(n)
    out = np.zeros((n, cin, b * hp * wp), np.int8)
    for q in range(b):
        for c in range(cin):
            for i in range(h):
                r = x[q, c, i]
                base = (q * hp + pt + i) * wp + pl
                for li in range(n):  # each input row read once, its limbs written from it
                    o = out[li, c, base : base + w]
                    sh = LIMB_BITS * li
                    for j in range(w):
                        o[j] = _digit(r[j], bias, sh)
    return n, out


@_jit
def _combine_finish(r, na, nw, p0, hp, wp, ho, wo, bias, mult, clamp, out):
    """Limb products r (nw * C, na * m) int32 of output columns p0 .. p0 + m - 1 (flat (B, Hp, Wp)
    positions) -> activations out[b, o, i, j] = rq((sum + bias[b or 0, o]) * mult[o]) (exact.IntArith
    ._finish) for the columns inside (ho, wo); the others (windows across a row or tile end) are
    dropped. Written a padded row's run of columns at a time, so the inner loop vectorises."""
    c = out.shape[1]
    m = r.shape[1] // na
    shared = bias.shape[0] == 1
    s = np.empty(m, np.int64)
    for o in range(c):
        _limb_sums(r, na, nw, o, 0, c, m, 0, s)
        mo = mult[o]
        p = 0
        q, rem = divmod(p0, hp * wp)
        y, x = divmod(rem, wp)
        while p < m:  # one run: padded row y of tile q from column x, as far as the chunk goes
            run = min(wp - x, m - p)
            if y < ho and x < wo:
                bq = bias[0 if shared else q, o]
                dst = out[q, o, y, x : min(wo, x + run)]
                src = s[p : p + len(dst)]
                for k in range(len(dst)):
                    dst[k] = _rq((src[k] + bq) * mo, clamp)
            p += run
            x += run
            if x == wp:
                x, y = 0, y + 1
                if y == hp:
                    y, q = 0, q + 1


@_jit
def _combine_rows_finish(r, na, nw, bias, tile, mult, clamp, out):
    """Limb products r (na * M, nw * N) int32 -> activations out (M, N) = rq((sum + bias[tile[a] or
    0]) * mult) per row a, as kernels.finish computes them from float64 sums."""
    m, n = out.shape
    shared = bias.shape[0] == 1
    s = np.empty(n, np.int64)
    for a in range(m):
        _limb_sums(r, na, nw, a, m, 0, 0, n, s)
        b = 0 if shared else tile[a]
        for o in range(n):
            out[a, o] = _rq((s[o] + bias[b, o]) * mult[o], clamp)


def _self_check() -> bool:
    """Whether torch._int_mm runs here and gives exact int32 sums at the limb bounds."""
    if os.environ.get("PXZIP_GEMM", "") == "float64" or not hasattr(torch, "_int_mm"):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        for m, k, n in ((1, 1, 1), (5, 37, 3), (67, 300, 40)):
            a = torch.randint(-LIMB_MAX, LIMB_MAX + 1, (m, k), generator=g, dtype=torch.int8)
            b = torch.randint(-LIMB_MAX, LIMB_MAX + 1, (k, n), generator=g, dtype=torch.int8)
            a[0, :] = LIMB_MAX  # the extremes: every product at the bound, same and opposite signs
            b[:, 0] = LIMB_MAX
            b[:, -1] = -LIMB_MAX
            if not torch.equal(torch._int_mm(a, b).to(torch.int64), a.to(torch.int64) @ b.to(torch.int64)):
                return False
        return True
    except (RuntimeError, NotImplementedError):
        return False


INT8 = _self_check()  # int8 limb GEMMs in use (else the float64 GEMM)


class Weights:
    """A layer's integer weight matrix (K, N) for `matmul_finish` / `conv_finish`: the float64 one and
    its int8 limbs."""

    def __init__(self, w: torch.Tensor):
        self.f64 = w.to(torch.float64).contiguous()  # (K, N) integers, the float64 path's operand
        k, n = self.f64.shape
        self.n_limbs = 1
        self.limbs = None  # (K, n_limbs * N) int8, or None where the float64 path is used
        if INT8 and self.f64.device.type == "cpu" and 0 < k <= MAX_K:  # other devices: their float64 GEMM
            wn = self.f64.numpy()
            self.n_limbs = limbs_for(_bound(wn))
            out = np.empty((k, self.n_limbs * n), np.int8)
            _split_cols(wn, self.n_limbs, _bias(self.n_limbs), out)
            self.limbs = torch.from_numpy(out)
        self._limbs_t: torch.Tensor | None = None

    @property
    def limbs_t(self) -> torch.Tensor:
        """The limbs as (n_limbs * N, K) rows (weights on the left: the encoder's whole-tile products)."""
        if self._limbs_t is None:
            self._limbs_t = self.limbs.T.contiguous()
        return self._limbs_t


def whole_tiles() -> bool:
    """Whether the encoder's whole-tile convolutions take the int8 path: on one torch thread only
    (kodim23, 2 threads: 22-26 s encode against 20 s on float64; 1 thread: 23 s against 28 s)."""
    return INT8 and torch.get_num_threads() == 1


def matmul_finish(
    x: np.ndarray, w: Weights, bias: np.ndarray, tile: np.ndarray, mult: np.ndarray, clamp: float, out: np.ndarray
) -> np.ndarray:
    """The decoders' per-step convolutions: out (M, N) = rq((x @ w + bias[tile[m] or 0]) * mult),
    clamped, for x (M, K) float64 integers (as kernels.finish after the float64 product)."""
    if w.limbs is None or not len(x):
        acc = torch.mm(torch.from_numpy(x), w.f64).numpy()  # exact: partial sums < 2**52
        kernels.finish(acc, bias, tile, mult, clamp, out)  # (out may be a strided view)
        return out
    na, xl = _limbs_of(x)
    r = torch._int_mm(torch.from_numpy(xl), w.limbs).numpy()  # (na * M, nw * N) int32
    _combine_rows_finish(r, na, w.n_limbs, bias, tile, mult, clamp, out)
    return out


def conv_finish(
    x: np.ndarray,
    w: Weights,
    kh: int,
    kw: int,
    pad: tuple[int, int, int, int],
    h_out: int,
    bias: np.ndarray,
    mult: np.ndarray,
    clamp: float,
) -> np.ndarray:
    """A whole-tile convolution and its requantisation, as exact.TileOps.conv then _finish:
    x (B, Cin, H, W) float64 integers, padded by pad = (left, right, top, bottom) as F.pad pads
    (zeros; a negative amount crops) ->
    (B, Cout, h_out, Wo) float64 activations. The padding goes straight into the int8 limbs (no
    padded float64 copy), the sums straight through the requantisation into the output (no
    float64 sums array): the same integers, fewer passes over memory (module docstring)."""
    left, right, top, bottom = pad
    if min(pad) < 0:  # F.pad's negative amounts crop (the horizontal stream's 1x1 input conv)
        h, wd = x.shape[2:]
        x = x[:, :, max(0, -top) : h - max(0, -bottom), max(0, -left) : wd - max(0, -right)]
        left, right, top, bottom = (max(0, v) for v in pad)
    b, cin, h, wd = x.shape
    hp, wp = h + top + bottom, wd + left + right
    wo = wp - kw + 1
    size = b * hp * wp
    n = size - (kh - 1) * wp - (kw - 1)  # columns up to the last valid output's
    na, xl = _limbs_padded(x, top, left, hp, wp)  # (na, Cin, size)
    wl = w.limbs_t  # (nw * Cout, kh * kw * Cin)
    cout = wl.shape[0] // w.n_limbs
    out = np.empty((b, cout, h_out, wo))
    buf = np.empty(kh * kw * cin * na * min(n, CHUNK), np.int8)
    for p0 in range(0, n, CHUNK):
        m = min(CHUNK, n - p0)
        col = buf[: kh * kw * cin * na * m].reshape(kh * kw, cin, na, m)
        for a in range(kh):
            for k in range(kw):
                off = p0 + a * wp + k
                col[a * kw + k] = xl[:, :, off : off + m].transpose(1, 0, 2)
        r = torch._int_mm(wl, torch.from_numpy(col.reshape(kh * kw * cin, na * m))).numpy()  # (nw * Cout, na * m)
        _combine_finish(r, na, w.n_limbs, p0, hp, wp, h_out, wo, bias, mult, clamp, out)
    return out
