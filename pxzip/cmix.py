"""Context-mixing coder: a compiled, adaptive binary arithmetic coder for planes the network codes badly.

The network is trained on photographs; flat graphics, palette indices and 1-bit scans are not what
it predicts well (a 64-colour drawing coded through the photo model came out 2.4x its PNG). This
coder learns from the image itself as it goes, as PNG, JBIG2 and WebP do, and so bounds the cost
of images the network never saw. Symbols (nbits <= 8 bits each: plane values, palette indices or
0/1) go in raster order, channel innermost, bit by bit (most significant first, a binary tree):

- each context (the neighbours' symbols, hashed with the tree node) owns an adaptive bit
  probability (16 bits) and a hit count that sets its learning rate;
- a logistic mixer (weights chosen by a small context) combines their stretched probabilities;
- a carry-less 32-bit binary arithmetic coder (the PAQ family's) codes the bit with the mixed
  12-bit probability.

Everything is integer arithmetic (no floats, no platform-dependent rounding): the encoder and the
decoder run the same function (`_run`, `decode=False/True`) and so make the same predictions on any
machine. The model state is sized from the image shape alone (both sides know it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True)

N_CONTEXTS = 9  # contexts per bit (both symbol kinds use 9); the mixer has one more input, a bias
LIMIT = 255  # hit count cap: learning rate 1/(n + 1.5) until then (stationary statistics)
MIX_SHIFT = 16  # mixer weights are 16.16 fixed point
MIX_LR = 10  # mixer learning rate: weight += stretch * error * MIX_LR >> 14 (tuned on generated images)
MAX_TABLE_BITS = 22  # at most 2**22 table entries per context: bounds memory


def _squash_table() -> np.ndarray:
    """squash(d) = 4096 / (1 + e^(-d/256)) for d in -2047..2047, by integer interpolation of 33 knots."""
    knots = [1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549,
             2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094]  # fmt: skip
    out = np.empty(4095, np.int64)
    for i, d in enumerate(range(-2047, 2048)):
        w = d & 127
        k = (d >> 7) + 16
        out[i] = (knots[k] * (128 - w) + knots[k + 1] * w + 64) >> 7
    return out


SQUASH = _squash_table()  # index d + 2047 -> 12-bit probability


def _stretch_table() -> np.ndarray:
    """stretch(p) = ln(p / (1 - p)) * 256 for 12-bit p: the inverse of SQUASH (the smallest d reaching p)."""
    out = np.empty(4096, np.int64)
    pi = 0
    for d in range(-2047, 2048):
        v = int(SQUASH[d + 2047])
        for j in range(pi, v + 1):
            out[j] = d
        pi = max(pi, v + 1)
    out[pi:] = 2047
    return out


STRETCH = _stretch_table()
RATES = np.array([65536 * 2 // (2 * n + 3) for n in range(LIMIT + 1)], np.int64)  # 65536 / (n + 1.5)


def table_bits(height: int, width: int, channels: int, nbits: int) -> int:
    """log2 of each context's table entries for an image: about 2x its coded bits, 2**10..2**MAX_TABLE_BITS
    (at most 2**22 x 3 bytes x N_CONTEXTS = 113 MB for large images)."""
    bits = height * width * channels * nbits
    return max(10, min(MAX_TABLE_BITS, int(bits).bit_length() + 1))


@_jit
def _squash(d):
    if d > 2047:
        d = 2047
    if d < -2047:
        d = -2047
    return SQUASH[d + 2047]


@_jit
def _mix32(h):
    """A 32-bit integer hash step (multiply, xor-shift) of h's low 32 bits. The product is taken in two
    16-bit halves so that no int64 overflows (whose wrapping the language does not promise)."""
    h &= 0xFFFFFFFF
    h = ((h & 0xFFFF) * 0x9E3779B1 + ((((h >> 16) * 0x9E3779B1) & 0xFFFF) << 16)) & 0xFFFFFFFF
    return h ^ (h >> 15)


@_jit
def _hash(a, b, c, d, e):
    h = _mix32(a + 0x3C6EF372)
    h = _mix32(h ^ (b + 0x1000))
    h = _mix32(h ^ (c + 0x2000))
    h = _mix32(h ^ (d + 0x3000))
    return _mix32(h ^ (e + 0x4000))


@_jit
def _at(sym, y, x, c):
    """The symbol at (y, x, c), 0 outside the image (as int64: no uint8 wrap-around in the arithmetic)."""
    if y < 0 or x < 0 or x >= sym.shape[1]:
        return np.int64(0)
    return np.int64(sym[y, x, c])


@_jit
def _bilevel_contexts(sym, y, x, hashes):
    """Context hashes of a 1-bit pixel: templates of its causal neighbours (JBIG-like); returns the
    mixer context (the 4 nearest neighbours)."""
    w1, w2, w3, w4, w5 = (
        _at(sym, y, x - 1, 0),
        _at(sym, y, x - 2, 0),
        _at(sym, y, x - 3, 0),
        _at(sym, y, x - 4, 0),
        _at(sym, y, x - 5, 0),
    )
    n = 0  # row above, x-4 .. x+4 (9 bits)
    for dx in range(-4, 5):
        n = (n << 1) | _at(sym, y - 1, x + dx, 0)
    nn = 0  # two rows above, x-3 .. x+3 (7 bits)
    for dx in range(-3, 4):
        nn = (nn << 1) | _at(sym, y - 2, x + dx, 0)
    n3 = 0  # three rows above, x-2 .. x+2 (5 bits)
    for dx in range(-2, 3):
        n3 = (n3 << 1) | _at(sym, y - 3, x + dx, 0)
    near = (w1 << 3) | (((n >> 5) & 1) << 2) | (((n >> 4) & 1) << 1) | ((n >> 3) & 1)  # W, NW, N, NE
    w = (w1 << 4) | (w2 << 3) | (w3 << 2) | (w4 << 1) | w5
    hashes[0] = _hash(0, near, 0, 0, 0)
    hashes[1] = _hash(1, (n >> 2) & 31, w & 3, (nn >> 2) & 7, 0)  # JBIG's 10-pixel template
    hashes[2] = _hash(2, (n >> 1) & 127, w & 15, (nn >> 1) & 31, 0)  # JBIG2's 16-pixel template
    hashes[3] = _hash(3, n, w, nn, n3)  # 26 pixels
    hashes[4] = _hash(4, n, w & 7, 0, 0)
    hashes[5] = _hash(5, nn, n3, (n >> 3) & 7, w1)  # the rows above, for vertical structure
    hashes[6] = _hash(6, w, (n >> 2) & 31, 0, 0)
    hashes[7] = _hash(7, n & 0x1F0, w & 3, nn & 0x7C, 0)  # left-leaning: what was to the left above
    hashes[8] = _hash(8, n & 0x1F, w1, nn & 0x1F, 0)  # right-leaning: what is coming up on the right
    return near


@_jit
def _value_contexts(sym, y, x, c, hashes):
    """Context hashes of a multi-bit symbol from its causal neighbours in the same channel (and, after
    the first channel, the pixel's earlier channels); returns a mixer context (0..3)."""
    a = _at(sym, y, x - 1, c)  # W
    b = _at(sym, y - 1, x, c)  # N
    nw = _at(sym, y - 1, x - 1, c)
    ne = _at(sym, y - 1, x + 1, c)
    ww = _at(sym, y, x - 2, c)
    nn = _at(sym, y - 2, x, c)
    grad = a + b - nw  # gradient predictor (meaningful for values, harmless for indices)
    if grad < 0:
        grad = 0
    if grad > 255:
        grad = 255
    u = 0  # the pixel's previous channel, and how it moved from its left neighbour
    du = 0
    if c > 0:
        u = np.int64(sym[y, x, c - 1])
        du = u - _at(sym, y, x - 1, c - 1) + 256
    hashes[0] = _hash(10, c, 0, 0, 0)
    hashes[1] = _hash(11, c, a, 0, 0)
    hashes[2] = _hash(12, c, b, 0, 0)
    hashes[3] = _hash(13, c, a, b, 0)
    hashes[4] = _hash(14, c, a, b, nw)
    hashes[5] = _hash(15, c, a, b, ne)
    hashes[6] = _hash(16, c, (a << 8) | b, (nw << 8) | ne, (ww << 8) | nn)
    hashes[7] = _hash(17, c, grad, u, du)
    hashes[8] = _hash(18, c, b, ne, nn)
    return (a == b) * 2 + (b == ne)


@_jit
def _run(sym, nbits, tbits, decode, data):
    """Code `sym` (H, W, C) uint8 symbols of `nbits` bits; decode: fill `sym` from `data` (uint8).

    Returns (the coded bytes, 0) encoding and (nothing, the number of bytes read) decoding.
    One function for both directions, so that predictions cannot differ between them.
    """
    h, w, ch = sym.shape
    block = 16 if nbits > 1 else 1  # a context slot holds the 15 nodes of a <= 4-bit group of the tree
    mask = (1 << tbits) // block - 1
    # One flat table for all contexts, context i's entries at i << tbits. With block 1 (1-bit symbols)
    # the node offset 1 can reach entry 1 << tbits of context i: that is entry 0 of context i + 1 (how
    # files were always coded), and, for the last context, the one extra entry at the end. (Until
    # 2026-12 that entry lay outside the table: the coder read and wrote memory that was not its own,
    # so a 1-bit plane whose last context hit it could code differently run to run, and not decode.)
    prob = np.full((N_CONTEXTS << tbits) + 1, 32768, np.uint16)  # P(bit = 1) * 65536
    hits = np.zeros((N_CONTEXTS << tbits) + 1, np.uint8)
    n_sel = 16 * 8 if nbits == 1 else 4 * 8 * 16
    weights = np.full((n_sel, N_CONTEXTS + 1), (1 << MIX_SHIFT) * 3 // 20, np.int64)
    hashes = np.zeros(N_CONTEXTS, np.int64)
    base = np.zeros(N_CONTEXTS, np.int64)
    st = np.zeros(N_CONTEXTS + 1, np.int64)
    idx = np.zeros(N_CONTEXTS, np.int64)
    out = np.empty(max(64, h * w * ch * nbits // 4), np.uint8)  # grown when full
    n_out = 0
    pos = 0  # next byte of `data` to read
    x1 = 0
    x2 = 0xFFFFFFFF
    xv = 0
    if decode:
        for _ in range(4):
            byte = data[pos] if pos < data.shape[0] else 255
            pos += 1
            xv = (xv << 8) | byte
    st[N_CONTEXTS] = 256  # the bias input
    hi_bits = nbits - 4 if nbits > 4 else nbits  # the tree's first group; the rest (4 bits) is the second
    for y in range(h):
        for x in range(w):
            for c in range(ch):
                if nbits == 1:
                    msel = _bilevel_contexts(sym, y, x, hashes)
                else:
                    msel = _value_contexts(sym, y, x, c, hashes)
                value = 0 if decode else np.int64(sym[y, x, c])
                node = 1
                got = 0
                for k in range(nbits):
                    if k == 0 or k == hi_bits:  # a new group: new slots (the second hashed with the first's bits)
                        for i in range(N_CONTEXTS):
                            base[i] = (_mix32(hashes[i] ^ (got * 0x2F0B3A49 + k)) & mask) * block
                        node = 1
                    for i in range(N_CONTEXTS):
                        idx[i] = (i << tbits) + base[i] + node
                        st[i] = STRETCH[prob[idx[i]] >> 4]
                    sel = msel * 8 + (k if k < 8 else 7)
                    if nbits > 1:
                        sel = sel * 16 + (node if node < 16 else 15)
                    dot = 0
                    for i in range(N_CONTEXTS + 1):
                        dot += weights[sel, i] * st[i]
                    p_mix = _squash(dot >> MIX_SHIFT)
                    p = p_mix
                    if p < 1:
                        p = 1
                    if p > 4095:
                        p = 4095
                    xmid = x1 + ((x2 - x1) >> 12) * p
                    if decode:
                        bit = 1 if xv <= xmid else 0
                    else:
                        bit = (value >> (nbits - 1 - k)) & 1
                    if bit:
                        x2 = xmid
                    else:
                        x1 = xmid + 1
                    while ((x1 ^ x2) & 0xFF000000) == 0:
                        if decode:
                            byte = data[pos] if pos < data.shape[0] else 255
                            pos += 1
                            xv = ((xv << 8) & 0xFFFFFFFF) | byte
                        else:
                            if n_out == out.shape[0]:
                                bigger = np.empty(2 * out.shape[0], np.uint8)
                                bigger[:n_out] = out
                                out = bigger
                            out[n_out] = x2 >> 24
                            n_out += 1
                        x1 = (x1 << 8) & 0xFFFFFFFF
                        x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
                    # learn: the mixer from its error, each context's probability from the bit
                    err = ((bit << 12) - p_mix) * MIX_LR
                    for i in range(N_CONTEXTS + 1):
                        weights[sel, i] += (st[i] * err) >> 14
                    target = 65535 if bit else 0
                    for i in range(N_CONTEXTS):
                        j = idx[i]
                        n = hits[j]
                        prob[j] += ((target - prob[j]) * RATES[n]) >> 16
                        if n < LIMIT:
                            hits[j] = n + 1
                    node = node * 2 + bit
                    got = got * 2 + bit
                if decode:
                    sym[y, x, c] = got
    if decode:
        return out[:0].copy(), pos
    if n_out == out.shape[0]:
        bigger = np.empty(out.shape[0] + 1, np.uint8)
        bigger[:n_out] = out
        out = bigger
    out[n_out] = x1 >> 24  # any value from here on (the decoder reads 0xFF past the end) is inside [x1, x2]
    n_out += 1
    return out[:n_out].copy(), pos


def encode(symbols: np.ndarray, nbits: int) -> bytes:
    """Code a (H, W, C) plane of symbols below 2**nbits (1 <= nbits <= 8) -> bytes."""
    if not 1 <= nbits <= 8:
        raise ValueError(f"nbits {nbits} out of range 1..8")
    sym = np.require(symbols, np.uint8, ["C", "W"])  # writable: the kernel is one function for both ways
    if sym.ndim != 3 or (sym.size and int(sym.max()) >> nbits):
        raise ValueError(f"symbols must be (H, W, C) below 2**{nbits}")
    h, w, c = sym.shape
    return _run(sym, nbits, table_bits(h, w, c, nbits), False, np.zeros(0, np.uint8))[0].tobytes()


def decode(data: bytes, shape: tuple[int, int, int], nbits: int) -> tuple[np.ndarray, int]:
    """Inverse of `encode`: (symbols (H, W, C) uint8, bytes the decoder consumed).

    Any bytes decode to some plane (a damaged stream is caught by the file's checksum); the decoder
    reads 0xFF past the end, so the caller can check that it consumed at most len(data) + 4 bytes.
    """
    sym = np.zeros(shape, np.uint8)
    _, used = _run(sym, nbits, table_bits(*shape, nbits), True, np.frombuffer(bytes(data), np.uint8))
    return sym, int(used)
