"""Compiled (numba) integer kernels of the exact path: probability tables and the decoders' per-step glue.

Why numba: the exact coder's work between the float64 GEMMs is many small integer operations per
pixel (mixture CDFs over 255 bin edges, lookup tables, ring-buffer gathers). As numpy or torch
calls each of them costs microseconds of dispatch and a temporary array; compiled, a table or a
whole chain of element-wise ops is one call. numba installs from a wheel (no compiler on the
user's machine) and `cache=True` keeps the machine code beside this file after the first run.

Every kernel computes exactly the integers of its numpy / torch reference (tables.py's `Mixture`,
`softmax_freqs`, `to_freqs`; exact.py's `IntArith`): the same integer operations, and for the
float64 requantisation the same IEEE operations in the same order (numba compiles without
fast-math, so nothing is reassociated or fused into an FMA). tests/test_kernels.py checks them
against the references. All kernels release the GIL (`nogil`), so threads can run them at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PRECISION = 24  # frequencies of one table sum to 2**PRECISION (as tables.PRECISION)
CDF_BITS = 24
WEIGHT_BITS = 15
MEAN_CLAMP_UNITS = 512

_jit = njit(cache=True, nogil=True)


# -- tables --------------------------------------------------------------------------------------


@_jit
def _to_freqs_row(mass, out):
    """One row of tables.to_freqs: non-negative masses (256,) -> frequencies >= 1 summing to 2**24."""
    n = mass.shape[0]
    total = 0
    for e in range(n):
        total += mass[e]
    if total <= 0:
        for e in range(n):
            mass[e] = 1
        total = n
    bits = 0
    t = total
    while t > 0:
        t >>= 1
        bits += 1
    shift = bits - 38
    if shift > 0:
        total = 0
        for e in range(n):
            mass[e] >>= shift
            total += mass[e]
        if total <= 0:
            for e in range(n):
                mass[e] = 1
            total = n
    room = (1 << PRECISION) - n
    s = 0
    best, arg = -1, 0
    for e in range(n):
        f = 1 + (mass[e] * room) // total
        out[e] = f
        s += f
        if f > best:
            best, arg = f, e
    out[arg] += (1 << PRECISION) - s


@_jit
def to_freqs(mass, out):
    """tables.to_freqs for (N, 256) int64 masses (changed in place) into out (N, 256) int64."""
    for i in range(mass.shape[0]):
        _to_freqs_row(mass[i], out[i])


@_jit
def softmax_freqs(logits, exp_lut, out):
    """tables.softmax_freqs: integer logits (N, 256) -> frequencies out (N, 256)."""
    n, m = logits.shape
    top = len(exp_lut) - 1
    mass = np.empty(m, np.int64)
    for i in range(n):
        mx = logits[i, 0]
        for e in range(1, m):
            if logits[i, e] > mx:
                mx = logits[i, e]
        for e in range(m):
            d = logits[i, e] - mx + top
            mass[e] = exp_lut[d if d > 0 else 0]
        _to_freqs_row(mass, out[i])


@_jit
def _normalise(w, lo, hi):
    """tables.Mixture._normalise on w[lo:hi] in place: weights summing to about 2**15 (zeros kept)."""
    total = 0
    for k in range(lo, hi):
        total += w[k]
    if total > 0:
        for k in range(lo, hi):
            w[k] = (w[k] << WEIGHT_BITS) // total
    else:
        for k in range(lo, hi):
            w[k] = 0


@_jit
def mixture_setup(params, k, c, s, ls_min, ls_max, inv_lut, tanh_lut, exp_lut, prior, mu, inv, coef, weights):
    """tables.Mixture.__init__: head outputs (N, P) -> mu, inv (N, C, K), coef (N, 3, K), weights (N, K).

    prior: (G,) member weights of an ensemble (G components groups of K / G), or an empty array."""
    n = params.shape[0]
    half = (len(tanh_lut) - 1) // 2
    top = len(exp_lut) - 1
    g = len(prior)
    per = k // g if g else k
    for i in range(n):
        for ch in range(c):
            for j in range(k):
                mu[i, ch, j] = params[i, k + ch * k + j]
                ls = params[i, k + c * k + ch * k + j]
                ls = min(max(ls, ls_min * s), ls_max * s)
                inv[i, ch, j] = inv_lut[ls - ls_min * s]
        for r in range(coef.shape[1]):
            for j in range(k):
                t = params[i, k + 2 * c * k + r * k + j] + half
                coef[i, r, j] = tanh_lut[min(max(t, 0), len(tanh_lut) - 1)]
        groups = g if g else 1
        for gi in range(groups):
            lo, hi = gi * per, (gi + 1) * per
            mx = params[i, lo]
            for j in range(lo + 1, hi):
                if params[i, j] > mx:
                    mx = params[i, j]
            for j in range(lo, hi):
                d = params[i, j] - mx + top
                weights[i, j] = exp_lut[d if d > 0 else 0]
            _normalise(weights[i], lo, hi)
            if g:
                for j in range(lo, hi):
                    weights[i, j] *= prior[gi]
        if g:
            _normalise(weights[i], 0, k)


@_jit
def _mean(mu, coef, u, i, c, j, lim):
    m = mu[i, c, j]
    if c == 1:
        m += coef[i, 0, j] * u[i, 0]
    elif c == 2:
        m += coef[i, 1, j] * u[i, 0] + coef[i, 2, j] * u[i, 1]
    return min(max(m, -lim), lim)


@_jit
def _cdf_at(cdf_lut, edge_u, s, mean, inv):
    """The logistic CDF at a bin edge (u units), as tables.Mixture._cdf: index into the table, clipped."""
    half = (len(cdf_lut) - 1) // 2
    d = (edge_u * s - mean) * inv + (1 << 23) + (half << 24)
    d >>= 24
    return cdf_lut[min(max(d, 0), len(cdf_lut) - 1)]


@_jit
def _unsaturated(cdf_lut, s, mean, inv):
    """Bin edges lo .. hi-1 where a component's CDF index (see _cdf_at) lies inside the table: below
    lo it is < 0, from hi on >= len - 1, so the CDF is the table's first or last entry there. The
    index is (a * e + d0) >> 24 with a = 2 s inv >= 0: both bounds are exact ceilings. (A sharp
    component reaches the table over a few edges only: most of its 255 edges need no lookup.)"""
    half = (len(cdf_lut) - 1) // 2
    d0 = (-254 * s - mean) * inv + (1 << 23) + (half << 24)  # the index's numerator at edge 0
    top = (len(cdf_lut) - 1) << 24
    a = 2 * s * inv
    if a == 0:
        return 0, 255  # a constant index: the general path
    lo = 0 if d0 >= 0 else min((-d0 + a - 1) // a, 255)
    hi = 0 if d0 >= top else min((top - d0 + a - 1) // a, 255)
    return lo, max(lo, hi)


@_jit
def mixture_freqs(mu, inv, coef, weights, u, c, s, cdf_lut, out):
    """tables.Mixture.freqs(c): frequencies (N, 256) of channel c given the channels observed in u."""
    n, _, k = mu.shape
    lim = MEAN_CLAMP_UNITS * s
    mix = np.empty(255, np.int64)
    mass = np.empty(256, np.int64)
    for i in range(n):
        for e in range(255):
            mix[e] = 0
        wsum = 0
        for j in range(k):
            w = weights[i, j]
            wsum += w
            if w == 0:
                continue  # a zero weight adds nothing to the mixture CDF
            m = _mean(mu, coef, u, i, c, j, lim)
            iv = inv[i, c, j]
            lo, hi = _unsaturated(cdf_lut, s, m, iv)
            flat0, flat1 = w * cdf_lut[0], w * cdf_lut[len(cdf_lut) - 1]
            for e in range(lo):  # the table index clips at 0 here
                mix[e] += flat0
            for e in range(lo, hi):
                mix[e] += w * _cdf_at(cdf_lut, 2 * e - 254, s, m, iv)
            for e in range(hi, 255):  # ... and at its end here
                mix[e] += flat1
        prev = 0
        for e in range(255):
            mass[e] = mix[e] - prev
            prev = mix[e]
        mass[255] = (wsum << CDF_BITS) - prev
        _to_freqs_row(mass, out[i])


@_jit
def mixture_observe(mu, inv, coef, weights, u, c, values, s, cdf_lut):
    """tables.Mixture.observe(c, values): the posterior mixture weights, and u[:, c] = 2 v - 255."""
    n, _, k = mu.shape
    lim = MEAN_CLAMP_UNITS * s
    post = np.empty(k, np.int64)
    for i in range(n):
        v = values[i]
        total = 0
        for j in range(k):
            m = _mean(mu, coef, u, i, c, j, lim)
            iv = inv[i, c, j]
            hi = (1 << CDF_BITS) if v == 255 else _cdf_at(cdf_lut, 2 * min(v, 254) - 254, s, m, iv)
            lo = 0 if v == 0 else _cdf_at(cdf_lut, 2 * max(v - 1, 0) - 254, s, m, iv)
            post[j] = weights[i, j] * (hi - lo)
            total += post[j]
        if total > 0:
            for j in range(k):
                weights[i, j] = post[j]
            _normalise(weights[i], 0, k)
        u[i, c] = 2 * v - 255


# -- element-wise integer ops (exact.IntArith), float64 integers -----------------------------------


@_jit
def _rq(y, clamp):
    """exact.IntArith._rq: floor(y + 0.5), clamped to +-clamp."""
    r = np.floor(y + 0.5)
    return min(max(r, -clamp), clamp)


@_jit
def _lut(table, x, lo):
    i = min(max(x, lo), lo + len(table) - 1) - lo
    return table[np.int64(i)]


@_jit
def finish(acc, bias, tile, mult, clamp, out):
    """Integer sums acc (N, Cout) -> activations out (N, Cout): add each row's bias (bias[tile[n]],
    or bias[0] where bias has one row), scale by mult (Cout,), round half up, clamp."""
    n, m = acc.shape
    shared = bias.shape[0] == 1
    for i in range(n):
        b = 0 if shared else tile[i]
        for j in range(m):
            out[i, j] = _rq((acc[i, j] + bias[b, j]) * mult[j], clamp)


@_jit
def celu(t, elu_lut, lo, out):
    """exact.IntArith.celu: t (N, C) -> out (N, 2C) = [elu(t), elu(-t)]."""
    n, c = t.shape
    for i in range(n):
        for j in range(c):
            x = t[i, j]
            out[i, j] = _lut(elu_lut, x, lo) + max(x, 0.0)
            out[i, c + j] = _lut(elu_lut, -x, lo) + max(-x, 0.0)


@_jit
def gate_sig(t, sig_lut, lo, s, clamp, out):
    """exact.IntArith.gate_sig: t (N, 2C) -> out (N, C) = rq(a * sig(b) / s)."""
    n, c2 = t.shape
    c = c2 // 2
    for i in range(n):
        for j in range(c):
            out[i, j] = _rq(t[i, j] * _lut(sig_lut, t[i, c + j], lo) / s, clamp)


@_jit
def gate_tanh(t, tanh_lut, tlo, sig_lut, slo, s, clamp, out):
    """exact.IntArith.gate_tanh: t (N, 2C) -> out (N, C) = rq(tanh(a) * sig(b) / s)."""
    n, c2 = t.shape
    c = c2 // 2
    for i in range(n):
        for j in range(c):
            out[i, j] = _rq(_lut(tanh_lut, t[i, j], tlo) * _lut(sig_lut, t[i, c + j], slo) / s, clamp)


@_jit
def add(a, b, clamp, out):
    n, c = a.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = min(max(a[i, j] + b[i, j], -clamp), clamp)


@_jit
def relu(t, out):
    n, c = t.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = max(t[i, j], 0.0)


# -- the wavefront decoder's ring buffers (wavefront.WaveStepper) ----------------------------------


@_jit
def wave_lanes(t, reach, lag, slots, height, width, lane, row, front, tile):
    """The lanes whose vertical stream is computed at step t: fills lane, row, front (the row's pixel
    column), tile (each (L,)) and returns their count A (wavefront.WaveStepper.advance)."""
    newest = (t + reach) // lag
    a = 0
    for ln in range(len(lane)):
        r = newest - (newest - ln % slots) % slots
        f = t - lag * r
        if r >= 0 and r < height and f > -reach and f < width:
            lane[a], row[a], front[a], tile[a] = ln, r, f, ln // slots
            a += 1
    return a


@_jit
def gather(data, cols, slots, height, width, row, front, tile, a, lag, top, left, kh, kw, out):
    """A window per lane, channels last: out[n] (kh*kw*C,) holds rows row-top .. of lane n's tile at
    columns front+lag-left .., read from a ring buffer data ((lanes + 2) * cols, C); zero outside the
    tile (the zero padding of the parallel pass)."""
    c = data.shape[1]
    for n in range(a):
        for dr in range(kh):
            r = row[n] - top + dr
            for dc in range(kw):
                col = front[n] + lag - left + dc
                base = (dr * kw + dc) * c
                if r < 0 or r >= height or col < 0 or col >= width:
                    for ch in range(c):
                        out[n, base + ch] = 0.0
                else:
                    src = (tile[n] * slots + r % slots) * cols + col % cols
                    for ch in range(c):
                        out[n, base + ch] = data[src, ch]


@_jit
def ring_write(data, cols, width, lane, front, a, lag, values):
    """Each lane's values (A, C) at its column front + lag (columns outside the tile are not kept)."""
    for n in range(a):
        col = front[n] + lag
        if col >= 0 and col < width:
            dst = lane[n] * cols + col % cols
            for ch in range(values.shape[1]):
                data[dst, ch] = values[n, ch]


@_jit
def gather_row(data, cols, lane, col0, left, kw, out):
    """The horizontal stream's windows: out[n] (kw*C,) = row lane[n] at columns col0[n]-left ..
    (zero left of the tile), from a ring of `cols` columns per lane."""
    c = data.shape[1]
    for n in range(len(lane)):
        for dc in range(kw):
            col = col0[n] - left + dc
            base = dc * c
            if col < 0:
                for ch in range(c):
                    out[n, base + ch] = 0.0
            else:
                src = lane[n] * cols + col % cols
                for ch in range(c):
                    out[n, base + ch] = data[src, ch]


@_jit
def row_write(data, cols, lane, col0, values):
    for n in range(len(lane)):
        dst = lane[n] * cols + col0[n] % cols
        for ch in range(values.shape[1]):
            data[dst, ch] = values[n, ch]


@_jit
def lut(x, table, lo, out):
    """exact.IntArith._lut: table[clamp(x, lo, lo + len - 1) - lo] for x (N, C)."""
    n, c = x.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = _lut(table, x[i, j], lo)


# -- the raster decoder: rows of the vertical stream, an interpreted horizontal stream ------------


@_jit
def gather_rows(data, i, top, left, kh, kw, out):
    """Row i's windows, channels last: out[b * W + j] (kh*kw*C,) holds rows i-top .. of lane b at
    columns j-left .., from data (R, B, W, C), a ring of R rows (row r at r % R); zero outside."""
    rr, nb, w, c = data.shape
    for b in range(nb):
        for j in range(w):
            n = b * w + j
            for dr in range(kh):
                r = i - top + dr
                for dc in range(kw):
                    col = j - left + dc
                    base = (dr * kw + dc) * c
                    if r < 0 or col < 0 or col >= w:
                        for ch in range(c):
                            out[n, base + ch] = 0.0
                    else:
                        for ch in range(c):
                            out[n, base + ch] = data[r % rr, b, col, ch]


# opcodes of a traced horizontal stream (raster.HProgram); an instruction is one int64 row:
# [op, dst, dst channels, a, a channels, b, kw, weights, bias, K]
OP_CONV_V, OP_CONV_ROW, OP_PUT, OP_ADD, OP_CELU, OP_RELU, OP_GATE_TANH, OP_GATE_SIG = range(8)


@_jit
def _matvec(x, start, w, wo, kk, cd, acc):
    """acc[:cd] = x[start : start + kk] @ w[wo : wo + kk*cd].reshape(kk, cd): integer sums, exact in
    any order (export's 2**52 bound). The sums go to a fresh local array, which LLVM knows aliases
    nothing, so it vectorises the inner loop (into acc directly: 1.6x slower, measured)."""
    a = np.zeros(cd)
    for k in range(kk):
        v = x[start + k]
        if v != 0.0:
            wr = w[wo + k * cd : wo + (k + 1) * cd]
            for o in range(cd):
                a[o] += v * wr[o]
    acc[:cd] = a


@_jit
def run_hstream(prog, j, r, regs, rowbuf, vbuf, wflat, bflat, mult, tanh_lut, sig_lut, elu_lut, lut_lo, s, clamp, acc):
    """One position j of the horizontal stream for every lane, as exact.PosOps computes it.

    regs (B, R) holds every instruction's output; rowbuf (B, .) the current row of every put
    tensor and of the input, each (r + W, C) channels-last with r zero columns on the left; vbuf
    (B, .) the vertical stream's row (W, C) of every tensor the stream reads; wflat the weight
    matrices (K, Cout) row-major, bflat (B, .) each lane's biases, mult the channel scales; lut_lo
    (3,) the lowest inputs of the tanh, sig and elu tables; acc (Cout_max,) scratch.
    """
    nb = regs.shape[0]
    for q in range(prog.shape[0]):
        op, dst, cd, a, ca, b2, kw, wo, bo, kk = prog[q]
        if op == OP_CONV_V or op == OP_CONV_ROW:
            for ln in range(nb):
                src = vbuf[ln] if op == OP_CONV_V else rowbuf[ln]
                start = a + j * ca if op == OP_CONV_V else a + (r + j - b2) * ca  # the window is contiguous
                _matvec(src, start, wflat, wo, kk, cd, acc)
                for o in range(cd):
                    regs[ln, dst + o] = _rq((acc[o] + bflat[ln, bo + o]) * mult[bo + o], clamp)
        elif op == OP_PUT:
            for ln in range(nb):
                for ch in range(ca):
                    rowbuf[ln, wo + (r + j) * ca + ch] = regs[ln, a + ch]
        elif op == OP_ADD:
            for ln in range(nb):
                for ch in range(cd):
                    regs[ln, dst + ch] = min(max(regs[ln, a + ch] + regs[ln, b2 + ch], -clamp), clamp)
        elif op == OP_CELU:
            for ln in range(nb):
                for ch in range(ca):
                    x = regs[ln, a + ch]
                    regs[ln, dst + ch] = _lut(elu_lut, x, lut_lo[2]) + max(x, 0.0)
                    regs[ln, dst + ca + ch] = _lut(elu_lut, -x, lut_lo[2]) + max(-x, 0.0)
        elif op == OP_RELU:
            for ln in range(nb):
                for ch in range(cd):
                    regs[ln, dst + ch] = max(regs[ln, a + ch], 0.0)
        elif op == OP_GATE_TANH:
            for ln in range(nb):
                for ch in range(cd):
                    t = _lut(tanh_lut, regs[ln, a + ch], lut_lo[0])
                    regs[ln, dst + ch] = _rq(t * _lut(sig_lut, regs[ln, a + cd + ch], lut_lo[1]) / s, clamp)
        elif op == OP_GATE_SIG:
            for ln in range(nb):
                for ch in range(cd):
                    g = _lut(sig_lut, regs[ln, a + cd + ch], lut_lo[1])
                    regs[ln, dst + ch] = _rq(regs[ln, a + ch] * g / s, clamp)


@_jit
def set_pixel(x, rowbuf, i, j, c, r, x_off, cx, values):
    """raster.Stepper.set_pixel: channel c of pixel (i, j) of every lane, as u = 2 p - 255, into the
    input rows x (H, B, W, C+1) and the input row buffer in rowbuf (at offset x_off, channels cx)."""
    for b in range(len(values)):
        u = values[b] * 2.0 - 255.0
        x[i, b, j, c] = u
        rowbuf[b, x_off + (r + j) * cx + c] = u


# -- the encoder's parallel pass (exact.CompiledTileOps) --------------------------------------------


@_jit
def finish_nchw(acc, bias, mult, clamp, out):
    """exact.IntArith._finish for whole tiles: integer sums acc (B, Cout, H, W) (any strides) ->
    out (B, Cout, H, W) = rq((acc + bias[b or 0, o]) * mult[o]), clamped."""
    nb, m, h, w = acc.shape
    shared = bias.shape[0] == 1
    for b in range(nb):
        bb = 0 if shared else b
        for o in range(m):
            bo, mo = bias[bb, o], mult[o]
            for i in range(h):
                for j in range(w):
                    out[b, o, i, j] = _rq((acc[b, o, i, j] + bo) * mo, clamp)
