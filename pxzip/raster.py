"""The compiled raster-order decoder engine: cached rows of the vertical stream, an interpreted horizontal stream.

In raster order every pixel waits for the one before it, so a small image decoded alone (one
32x32 tile: 1,024 positions in a row) pays for every position's horizontal stream in full, and
as Python and torch calls (about 40 ops, each a few microseconds) that cost 20 times the
arithmetic. Here the horizontal stream is traced once per model into a short program
(`HProgram`: one int64 row per op of `network.h_stream`) that one compiled call
(`kernels.run_hstream`) runs for every lane at a position. The vertical stream, one call per row,
stays a Python executor around torch's float64 GEMMs (`_RowOps`).

The integers are exact.TorchStepper's (the reference): the same windows, the same integer sums
(exact in any order, export's 2**52 bound) and the same requantisation (tests/test_kernels.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pxzip import igemm, kernels, network
from pxzip.exact import CLAMP, LUT_RANGE, ExactModel, NpArith


@dataclass
class HProgram:
    """network.h_stream as instructions for kernels.run_hstream, with the layout of its buffers."""

    rows: list[list[int]] = field(default_factory=list)  # one instruction each, see kernels.OP_*
    regs: int = 0  # channels of every instruction's output, side by side
    row_bufs: dict[str, tuple[int, int]] = field(default_factory=dict)  # put name / "x" -> (offset, C) in rowbuf
    v_bufs: dict[str, tuple[int, int]] = field(default_factory=dict)  # vertical-stream source -> (offset, C) in vbuf
    convs: list[str] = field(default_factory=list)  # the convolutions, in program order
    out: tuple[int, int] = (0, 0)  # (offset, channels) of the head output in regs


class _HTracer:
    """Runs network.h_stream on placeholders (register offset, channels) to build an HProgram."""

    def __init__(self, em: ExactModel, width: int):
        self.em, self.width, self.r = em, width, em.cfg.kernel_size // 2
        self.p = HProgram()
        self.w_off = 0  # running offset of each conv's weights in wflat
        self.b_off = 0  # running offset of each conv's channels in bflat / mult
        self.layout: dict[str, tuple[int, int]] = {}  # conv -> (weight offset, bias offset)
        self._row_buf("x", em.cfg.in_channels + 1)

    def _reg(self, channels: int) -> int:
        off = self.p.regs
        self.p.regs += channels
        return off

    def _row_buf(self, name: str, channels: int) -> tuple[int, int]:
        if name not in self.p.row_bufs:
            total = sum((self.r + self.width) * c for _, c in self.p.row_bufs.values())
            self.p.row_bufs[name] = (total, channels)
        return self.p.row_bufs[name]

    def _emit(self, op, dst, cd, a=0, ca=0, b=0, kw=0, wo=0, bo=0, kk=0):
        self.p.rows.append([op, dst, cd, a, ca, b, kw, wo, bo, kk])

    def put(self, name, t):
        off, c = t
        buf, _ = self._row_buf(name, c)
        self._emit(kernels.OP_PUT, 0, 0, off, c, wo=buf)
        return t

    def conv(self, name, src):
        spec = self.em.specs[name]
        dst = self._reg(spec.cout)
        k = spec.kw * spec.cin
        wo, bo = self.w_off, self.b_off
        self.w_off += k * spec.cout
        self.b_off += spec.cout
        self.layout[name] = (wo, bo)
        self.p.convs.append(name)
        if spec.src == "v":  # a 1x1 convolution of the vertical stream at the position
            if src not in self.p.v_bufs:
                self.p.v_bufs[src] = (sum(self.width * c for _, c in self.p.v_bufs.values()), spec.cin)
            self._emit(kernels.OP_CONV_V, dst, spec.cout, self.p.v_bufs[src][0], spec.cin, 0, 1, wo, bo, k)
        else:
            buf, c = self.p.row_bufs[src]
            self._emit(kernels.OP_CONV_ROW, dst, spec.cout, buf, c, spec.left, spec.kw, wo, bo, k)
        return (dst, spec.cout)

    def _ew(self, op, cout, a, b=(0, 0)):
        dst = self._reg(cout)
        self._emit(op, dst, cout, a[0], a[1], b[0])
        return (dst, cout)

    def add(self, a, b):
        return self._ew(kernels.OP_ADD, a[1], a, b)

    def celu(self, a):
        return self._ew(kernels.OP_CELU, 2 * a[1], a)

    def relu(self, a):
        return self._ew(kernels.OP_RELU, a[1], a)

    def gate_tanh(self, a):
        return self._ew(kernels.OP_GATE_TANH, a[1] // 2, a)

    def gate_sig(self, a):
        return self._ew(kernels.OP_GATE_SIG, a[1] // 2, a)

    def dropout(self, a):
        return a


def trace_h(em: ExactModel, width: int) -> tuple[HProgram, dict[str, tuple[int, int]]]:
    """The horizontal stream of a model for rows of `width`, and each conv's (weight, bias) offsets."""
    tr = _HTracer(em, width)
    tr.p.out = network.h_stream(em.cfg, tr)
    return tr.p, tr.layout


GEMM_LANES = 8  # lanes from which the horizontal stream's convolutions go to torch's GEMM (measured)


def _segments(code: np.ndarray, wflat: np.ndarray) -> list:
    """The program cut at its convolutions: runs of other instructions (int64 arrays) and, for each
    convolution, (its instruction, its (K, Cout) weights as igemm.Weights)."""
    out, start = [], 0
    for q, row in enumerate(code):
        if row[0] in (kernels.OP_CONV_V, kernels.OP_CONV_ROW):
            if q > start:
                out.append(np.ascontiguousarray(code[start:q]))
            cd, wo, kk = int(row[2]), int(row[7]), int(row[9])
            out.append(
                (tuple(int(v) for v in row), igemm.Weights(torch.from_numpy(wflat[wo : wo + kk * cd].reshape(kk, cd))))
            )
            start = q + 1
    if start < len(code):
        out.append(np.ascontiguousarray(code[start:]))
    return out


class _RowOps(NpArith):
    """One row i of the vertical stream for every lane and column, (B*W, C) arrays, as exact.RowOps."""

    def __init__(self, st: Stepper, i: int):
        self.st, self.em, self.i = st, st.em, i

    def put(self, name, t):
        st = self.st
        ring = st.hist.get(name)
        if ring is None:  # rows i-r .. i are read: r + 1 rows
            ring = st.hist[name] = np.zeros((st.r + 1, st.b, st.w, t.shape[1]))
        ring[self.i % (st.r + 1)] = t.reshape(st.b, st.w, -1)
        return t

    def conv(self, name, src):
        spec, st = self.em.specs[name], self.st
        data = st.x if src == "x" else st.hist[src]
        win = np.empty((st.b * st.w, spec.kh * spec.kw * spec.cin))
        kernels.gather_rows(data, self.i, spec.top, spec.left, spec.kh, spec.kw, win)
        acc = np.empty((len(win), spec.cout))
        igemm.matmul_finish(win, self.em.layers[name].gemm, st.bias[name], st.row_lane, st.mult[name], CLAMP, acc)
        return acc


class Stepper:
    """Cached raster-order evaluation for a batch of same-shape tiles (the CPU decoder's engine),
    with exact.TorchStepper's interface: per row i `start_row(i)`, then for each column j `params(j)`
    -> (B, P) integers and `set_pixel(j, c, values)` for each channel (gated models: `params(j)`
    again after each channel)."""

    def __init__(self, em: ExactModel, batch: int, height: int, width: int, labels: torch.Tensor | None = None):
        cfg = em.cfg
        self.em, self.b, self.h, self.w, self.r = em, batch, height, width, cfg.kernel_size // 2
        bias = {k: v.cpu().numpy().astype(np.float64) for k, v in em.lane_biases(labels, batch).items()}
        self.bias = bias  # (B or 1, cout) per layer
        self.mult = {k: layer.mult_np for k, layer in em.layers.items()}
        self.row_lane = np.arange(batch * width) // width  # lane of each (lane, column) row of a row op
        # the input, channels last: rows (H, B, W, C+1), the "inside the image" channel 255
        self.x = np.zeros((height, batch, width, cfg.in_channels + 1))
        self.x[..., -1] = 255.0
        self.hist: dict[str, np.ndarray] = {}  # vertical-stream tensor -> its last r + 1 rows (R, B, W, C)
        self.prog, layout = trace_h(em, width)
        p = self.prog
        self.code = np.array(p.rows, np.int64)
        self.regs = np.zeros((batch, p.regs))
        self.rowbuf = np.zeros((batch, sum((self.r + width) * c for _, c in p.row_bufs.values())))
        self.vbuf = np.zeros((batch, sum(width * c for _, c in p.v_bufs.values())))
        wflat = np.zeros(sum(em.layers[n].wwin.numel() for n in p.convs))
        nb = sum(em.specs[n].cout for n in p.convs)
        self.bflat, self.mflat = np.zeros((batch, nb)), np.zeros(nb)
        for n in p.convs:
            wo, bo = layout[n]
            wwin = em.layers[n].wwin.cpu().numpy()  # (kw*cin, cout), windows channels last
            wflat[wo : wo + wwin.size] = wwin.reshape(-1)
            self.bflat[:, bo : bo + wwin.shape[1]] = bias[n]
            self.mflat[bo : bo + wwin.shape[1]] = self.mult[n]
        self.wflat = wflat  # (int16 or float32 copies measured no faster: the stream is not memory-bound)
        self.acc = np.zeros(max(s.cout for s in em.specs.values()))
        self.lut_lo = np.array([-LUT_RANGE[k] * em.s for k in ("tanh", "sig", "elu")], np.float64)
        # many lanes: each conv as one torch GEMM over all lanes (BLAS beats the compiled per-lane
        # products from about 8 lanes on), the ops between convs as compiled program segments
        self.segments = _segments(self.code, self.wflat) if batch >= GEMM_LANES else None
        self.lanes = np.arange(batch)
        self.x_off = p.row_bufs["x"][0]
        self.i = -1

    def start_row(self, i: int) -> None:
        self.i = i
        with torch.no_grad():
            network.v_stream(self.em.cfg, _RowOps(self, i))
        for name, (off, c) in self.prog.v_bufs.items():
            self.vbuf[:, off : off + self.w * c] = self.hist[name][i % (self.r + 1)].reshape(self.b, -1)
        off, c = self.prog.row_bufs["x"]
        xrow = self.rowbuf[:, off : off + (self.r + self.w) * c].reshape(self.b, self.r + self.w, c)
        xrow[:, self.r :] = self.x[i]  # pixels of row i are set as they are decoded

    def _run(self, code: np.ndarray, j: int) -> None:
        luts = self.em.np_luts
        kernels.run_hstream(
            code, j, self.r, self.regs, self.rowbuf, self.vbuf, self.wflat, self.bflat, self.mflat,
            luts["tanh"], luts["sig"], luts["elu"], self.lut_lo, self.em.s, CLAMP, self.acc,
        )  # fmt: skip

    def _head(self, j: int) -> np.ndarray:
        if self.segments is None:
            self._run(self.code, j)
        else:
            for seg in self.segments:
                if isinstance(seg, np.ndarray):
                    self._run(seg, j)
                    continue
                (op, dst, cd, a, ca, b2, _, _, bo, kk), w = seg
                if op == kernels.OP_CONV_V:
                    x = self.vbuf[:, a + j * ca : a + j * ca + kk]  # (B, K): a strided view, no copy
                else:
                    x = self.rowbuf[:, a + (self.r + j - b2) * ca : a + (self.r + j - b2) * ca + kk]
                out = self.regs[:, dst : dst + cd]
                bias, mult = self.bflat[:, bo : bo + cd], self.mflat[bo : bo + cd]
                igemm.matmul_finish(x, w, bias, self.lanes, mult, CLAMP, out)  # exact integers (igemm)
        off, c = self.prog.out
        return self.regs[:, off : off + c]

    def params(self, j: int) -> torch.Tensor:
        return torch.from_numpy(self._head(j).copy())

    def params_int(self, j: int) -> np.ndarray:
        return self._head(j).astype(np.int64)

    def set_pixel(self, j: int, c: int, values) -> None:
        """values: (B,) pixel values, a numpy array or a tensor."""
        v = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values, np.float64)
        kernels.set_pixel(self.x, self.rowbuf, self.i, j, c, self.r, self.x_off, self.x.shape[3], v)
