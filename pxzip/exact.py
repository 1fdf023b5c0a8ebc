"""The exact integer PixelCNN: export from float, and three executors that give identical integers.

Why integers: the coder needs bit-identical probability tables in the encoder (one parallel pass)
and the decoder (one row / one position at a time, any batch, any thread count, any device).
Float32 results depend on the summation order, so they differ between those evaluation orders.

How: every activation is an integer a (the value a * 2**-act_bits, clamped to |a| <= 2**20);
every weight an integer w with |w| < 2**(weight_bits-1) and a power-of-two scale per output
channel. A convolution sums products of integers; export checks that every partial sum stays
below 2**52, so float64 arithmetic represents each of them exactly and the result is the same
integer in ANY summation order (BLAS or cuBLAS, any blocking, any thread count, the encoder's
whole-tile products or the decoder's per-row and per-position ones). The sum is then multiplied
by a power of two and rounded half up (both exact in float64). tanh, sigmoid and exp(x)-1 are
lookup tables computed once at export and stored with the weights, so no libm (which differs
between platforms) is ever called at coding time.
Convolutions are written as matrix products (`ExactLayer.conv`, one GEMM per kernel tap), never
through conv2d, so no backend can pick a Winograd or FFT algorithm, which would not sum the exact
products; `exact_mode()` also switches cuDNN off. On the CPU the products run as int8 GEMMs on
7-bit limbs of the same integers (igemm.py: exact in int32; the products about 2x faster than
float64's here); the float64 GEMM stays the reference and the path on other devices.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from pxzip import igemm, kernels, network
from pxzip.config import LOG_SCALE_MAX, LOG_SCALE_MIN, ModelConfig
from pxzip.model import PixelCNN, pad_for

CLAMP = 2**20  # |activation| bound (integers), i.e. 1024.0 at 10 fractional bits
EXACT_LIMIT = 2**52  # every partial sum must stay below this to be exact in float64
MAX_SHIFT = 24  # largest per-channel weight scale exponent at export
MIN_SHIFT = -64  # smallest one a model file may hold (export gives < 0 only for weights >= 2**10)
LUT_RANGE = {"tanh": 8, "sig": 16, "elu": 16}  # input range (in units of 1.0) beyond which the function is flat


def make_luts(act_bits: int) -> dict[str, np.ndarray]:
    """Integer lookup tables for the nonlinearities (network and coder), int64 arrays."""
    s = 2**act_bits
    luts = {}
    x = np.arange(-LUT_RANGE["tanh"] * s, LUT_RANGE["tanh"] * s + 1) / s
    luts["tanh"] = np.round(np.tanh(x) * s)
    x = np.arange(-LUT_RANGE["sig"] * s, LUT_RANGE["sig"] * s + 1) / s
    luts["sig"] = np.round(s / (1 + np.exp(-x)))
    x = np.arange(-LUT_RANGE["elu"] * s, 1) / s
    luts["elu"] = np.round((np.exp(x) - 1) * s)
    # coder tables (see tables.py): logistic CDF, inverse scale, exp for mixture weights / softmax
    t = np.arange(-24 * s, 24 * s + 1) / s
    luts["cdf"] = np.round(2.0**24 / (1 + np.exp(-t)))
    ls = np.arange(LOG_SCALE_MIN * s, LOG_SCALE_MAX * s + 1) / s
    luts["inv_scale"] = np.round(2.0**24 * np.exp(-ls) / 255)
    d = np.arange(-24 * s, 1) / s
    luts["exp"] = np.round(2.0**24 * np.exp(d))
    return {k: v.astype(np.int64) for k, v in luts.items()}


class ExactLayer:
    """One integer convolution: weight (cout, cin, kh, kw), bias (cout,), mult = 2**-shift (cout,).

    cb: for the gate inputs of a conditional model, an integer bias per label (num_classes + 1, cout)
    added to the bias (same scale), else None.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, shift: torch.Tensor, cb: torch.Tensor | None = None):
        self.w = w.to(torch.float64).contiguous()
        self.b = b.to(torch.float64).view(1, -1, 1, 1)
        self.cb = None if cb is None else cb.to(torch.float64).contiguous()
        self.shift = shift.to(torch.int64)
        if len(self.shift) and not (MIN_SHIFT <= int(self.shift.min()) and int(self.shift.max()) <= MAX_SHIFT):
            raise ValueError(f"weight scale exponents must be in {MIN_SHIFT}..{MAX_SHIFT}")
        # 2**-shift exactly: math.ldexp is exact, a vectorised pow need not be on every platform
        mult = [math.ldexp(1.0, -k) for k in self.shift.tolist()]
        self.mult = torch.tensor(mult, dtype=torch.float64).view(1, -1, 1, 1)
        # windows read channels-last, (kh, kw, cin) flattened (the decoders' per-row and per-position
        # products), multiply this (kh*kw*cin, cout) matrix
        self.wwin = self.w.permute(2, 3, 1, 0).reshape(-1, self.w.shape[0]).contiguous()
        self.taps = self.w.permute(2, 3, 0, 1).contiguous()  # (kh, kw, cout, cin): one matrix per tap
        self._gemm: igemm.Weights | None = None

    @property
    def gemm(self) -> igemm.Weights:
        """wwin as igemm's operand (int8 limbs on the CPU), built on first use."""
        if self._gemm is None or self._gemm.f64.device != self.wwin.device:
            self._gemm = igemm.Weights(self.wwin)
        return self._gemm

    @property
    def mult_np(self) -> np.ndarray:
        """The channel scales 2**-shift as a (cout,) float64 numpy array (the compiled kernels' form)."""
        return self.mult.flatten().cpu().numpy()

    def bias(self, labels: torch.Tensor | None) -> torch.Tensor:
        """The integer bias of each lane, (B, cout) for (B,) labels, or (1, cout) where it is shared."""
        if self.cb is None or labels is None:
            return self.b[:, :, 0, 0]
        return self.b[:, :, 0, 0] + self.cb.index_select(0, labels)  # exact: integers far below 2**52

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """Integer sums of a valid convolution: x (B, Cin, Hp, Wp) -> (B, Cout, Hp-kh+1, Wp-kw+1).

        As kh*kw shifted GEMMs over the flattened input, accumulated in place: in the flat layout
        (Cin, B*Hp*Wp) the input of tap (a, k) for output column p is column p + a*Wp + k, so each
        tap is one (Cout, Cin) @ (Cin, N) product over a strided view, with no im2col copy. Outputs
        whose window wraps around a row or image end are computed and dropped. float64 conv2d's
        im2col path was 2-3x slower here. Exact in any order: partial sums stay below 2**52.
        """
        b, cin, hp, wp = x.shape
        kh, kw, cout = self.taps.shape[:3]
        ho, wo = hp - kh + 1, wp - kw + 1
        size = b * hp * wp
        n = size - (kh - 1) * wp - (kw - 1)  # up to the last valid output; its window ends at column size-1
        flat = x.transpose(0, 1).reshape(cin, size)  # a view when B == 1 (the encoder, the decoder's rows)
        full = x.new_empty(cout, size)
        full[:, n:] = 0  # past the last valid output: dropped, but kept finite
        out = full[:, :n]  # accumulated in place: no padded copy of the result
        out.addmm_(self.taps[0, 0], flat[:, :n], beta=0)  # beta=0: the empty buffer's contents are not read
        for a in range(kh):
            for k in range(kw):
                if a or k:
                    off = a * wp + k
                    out.addmm_(self.taps[a, k], flat[:, off : off + n])
        return full.view(cout, b, hp, wp)[:, :, :ho, :wo].transpose(0, 1)


class ExactModel:
    """The integer network plus its lookup tables; everything the coder needs.

    The coder's interface (shared with ensemble.ExactEnsemble): `cfg` (the head the tables read),
    `luts`, `prior` (None: one network), `tile_params` (encoder) and `device`; engines.py builds the
    raster and wavefront decoders' executors for it.
    """

    prior = None  # member weights of an ensemble; a single network has none

    def __init__(self, cfg: ModelConfig, layers: dict[str, ExactLayer], luts: dict[str, np.ndarray]):
        self.cfg = cfg
        self.layers = layers
        self.luts = luts
        self.specs = {s.name: s for s in network.conv_specs(cfg)}
        self.s = 2**cfg.act_bits
        self.t_luts = {k: torch.from_numpy(v.astype(np.float64)) for k, v in luts.items()}
        self.np_luts = {k: v.numpy() for k, v in self.t_luts.items()}  # the same float64 tables, for kernels
        self.check_bounds()

    @classmethod
    def from_float(cls, model: PixelCNN) -> ExactModel:
        cfg = model.cfg
        s = 2.0**cfg.act_bits
        layers = {}
        for spec in network.conv_specs(cfg):
            name = spec.name
            w = model.weight(name).detach().to(torch.float64).cpu()
            b = model.biases[name.replace(".", "_")].detach().to(torch.float64).cpu()
            if cfg.arch == "pixelcnnpp" and name == "head":
                # means go to "u" units (255 x the [-1, 1] scale) so that pixel bins have integer edges
                k, c = cfg.num_logistic_mix, cfg.in_channels
                rows = slice(k, k + c * k)
                w[rows] *= 255
                b[rows] *= 255
            s_in = 1 / 255 if spec.src == "x" else 1 / s  # value of one integer step of the input
            wt = w * (s_in * s)  # weight mapping integer input to output in units of 2**-act_bits
            m = wt.abs().flatten(1).amax(1)
            _, expo = torch.frexp(m)  # m < 2**expo
            # tiny weights would get a huge shift and blow the bias up past 2**52: cap it
            shift = torch.where(m > 0, (cfg.weight_bits - 1) - expo, torch.zeros_like(expo)).clamp(max=MAX_SHIFT)
            wi = torch.round(wt * torch.pow(2.0, shift.double()).view(-1, 1, 1, 1))
            bi = torch.round(b * s * torch.pow(2.0, shift.double()))
            cbi = None
            if spec.cond and cfg.num_classes:
                cb = model.class_bias[name.replace(".", "_")].detach().to(torch.float64).cpu()  # (N+1, cout)
                cbi = torch.round(cb * s * torch.pow(2.0, shift.double()))
            layers[name] = ExactLayer(wi, bi, shift, cbi)
        return cls(cfg, layers, make_luts(cfg.act_bits))

    def check_bounds(self) -> None:
        """Prove that no partial sum can reach 2**52 (so float64 evaluation is exact)."""
        for name, spec in self.specs.items():
            layer = self.layers[name]
            top_in = 255 if spec.src == "x" else CLAMP
            worst = layer.w.abs().flatten(1).sum(1) * top_in + layer.b.abs().flatten()
            if (layer.cb is None) != (not (spec.cond and self.cfg.num_classes)):
                raise ValueError(f"layer {name}: class biases do not match the config")
            if layer.cb is not None:
                worst = worst + layer.cb.abs().amax(0)
                if tuple(layer.cb.shape) != (self.cfg.num_classes + 1, spec.cout):
                    raise ValueError(f"layer {name}: class biases have shape {tuple(layer.cb.shape)}")
                if (layer.cb != torch.round(layer.cb)).any():
                    raise ValueError(f"layer {name}: class biases are not integers")
            if float(worst.max()) >= EXACT_LIMIT:
                raise ValueError(f"layer {name}: partial sums may reach {float(worst.max()):.3g} >= 2**52")
            if (layer.w != torch.round(layer.w)).any() or (layer.b != torch.round(layer.b)).any():
                raise ValueError(f"layer {name}: weights are not integers")
            # the gated model is causal through its weights: a nonzero masked weight would let the
            # encoder's pass see channels of the current pixel that the decoder has not decoded yet
            if spec.mask and (layer.w * (1 - network.conv_mask(spec, self.cfg).to(layer.w))).any():
                raise ValueError(f"layer {name}: weights break the causal mask")
        self._check_luts()

    def _check_luts(self) -> None:
        """The lookup tables keep the ranges tables.py's bounds and positivity rely on (a model file
        is data: a damaged or hand-made table must not turn into negative symbol frequencies)."""
        s, one = self.s, 1 << 24
        ranges = {
            "tanh": (-s, s),
            "sig": (0, s),
            "elu": (-s, 0),
            "cdf": (0, one),
            "inv_scale": (0, 1 << 27),
            "exp": (0, one),
        }
        for key, (lo, hi) in ranges.items():
            v = self.luts[key]
            if len(v) and (v.min() < lo or v.max() > hi):
                raise ValueError(f"lookup table {key} leaves {lo}..{hi}")
        for key in ("cdf", "exp"):  # CDF differences are bin masses: they must not be negative
            if (np.diff(self.luts[key]) < 0).any():
                raise ValueError(f"lookup table {key} is not non-decreasing")
        if len(self.luts["elu"]) and self.luts["elu"][-1] != 0:  # IntArith.elu adds x's positive part to it
            raise ValueError("lookup table elu is not 0 at 0")

    def lane_biases(self, labels: torch.Tensor | None, batch: int = 1) -> dict[str, torch.Tensor]:
        """Layer name -> integer bias of each lane, (B, cout) or (1, cout) where every lane shares it.

        labels: (batch,) int64 class labels of a conditional model; None means "no label" (the
        label `cfg.null_label`). Unconditional models take no labels.
        """
        if not self.cfg.num_classes:
            if labels is not None:
                raise ValueError("this model is not class-conditional: it takes no label")
            return {name: layer.bias(None) for name, layer in self.layers.items()}
        if labels is None:
            labels = torch.full((batch,), self.cfg.null_label, dtype=torch.int64, device=self.layers["v_in"].b.device)
        labels = labels.to(torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.cfg.null_label):
            raise ValueError(f"labels must be in 0..{self.cfg.null_label}")
        return {name: layer.bias(labels) for name, layer in self.layers.items()}

    def tile_params(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's parallel pass, see `tile_params`: (B, C, H, W) -> (B, P, H, W) integers."""
        return tile_params(self, pixels, labels)

    @property
    def device(self) -> torch.device:
        """Where this model's tensors (and so its float64 sums) live."""
        return self.layers["v_in"].w.device

    def to(self, device) -> ExactModel:
        for layer in self.layers.values():
            layer.w, layer.b, layer.mult = layer.w.to(device), layer.b.to(device), layer.mult.to(device)
            layer.wwin, layer.taps = layer.wwin.to(device), layer.taps.to(device)
            layer.cb = None if layer.cb is None else layer.cb.to(device)
        self.t_luts = {k: v.to(device) for k, v in self.t_luts.items()}
        return self

    # -- serialisation: plain tensors for safetensors ------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in self.layers.items():
            out[f"exact.{name}.w"] = layer.w.to(torch.int32).cpu().contiguous()
            out[f"exact.{name}.b"] = layer.b.flatten().to(torch.int64).cpu().contiguous()
            out[f"exact.{name}.shift"] = layer.shift.to(torch.int32).cpu().contiguous()
            if layer.cb is not None:
                out[f"exact.{name}.cb"] = layer.cb.to(torch.int64).cpu().contiguous()
        for k, v in self.luts.items():
            out[f"lut.{k}"] = torch.from_numpy(v.astype(np.int32))  # every entry is below 2**31
        return out

    @classmethod
    def from_state(cls, cfg: ModelConfig, t: dict[str, torch.Tensor]) -> ExactModel:
        layers = {}
        for spec in network.conv_specs(cfg):
            w, b, sh = (t[f"exact.{spec.name}.{k}"] for k in ("w", "b", "shift"))
            if tuple(w.shape) != (spec.cout, spec.cin, spec.kh, spec.kw) or b.shape != (spec.cout,):
                raise ValueError(f"layer {spec.name}: shape {tuple(w.shape)} does not match the config")
            # class biases: present exactly for a conditional model's gate inputs (check_bounds checks)
            layers[spec.name] = ExactLayer(w, b, sh, t.get(f"exact.{spec.name}.cb"))
        luts = {k[4:]: v.numpy().astype(np.int64) for k, v in t.items() if k.startswith("lut.")}
        expected = make_luts_shapes(cfg.act_bits)
        if {k: v.shape for k, v in luts.items()} != expected:
            raise ValueError("lookup tables do not match the config")
        return cls(cfg, layers, luts)


def make_luts_shapes(act_bits: int) -> dict[str, tuple[int, ...]]:
    s = 2**act_bits
    return {
        "tanh": (2 * LUT_RANGE["tanh"] * s + 1,),
        "sig": (2 * LUT_RANGE["sig"] * s + 1,),
        "elu": (LUT_RANGE["elu"] * s + 1,),
        "cdf": (48 * s + 1,),
        "inv_scale": ((LOG_SCALE_MAX - LOG_SCALE_MIN) * s + 1,),
        "exp": (24 * s + 1,),
    }


@contextlib.contextmanager
def exact_mode():
    """Inference settings under which float64 convolutions are plain exact sums."""
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        yield


class IntArith:
    """Integer element-wise ops shared by every exact executor (tensors are float64 integers)."""

    em: ExactModel
    bias: dict[str, torch.Tensor]  # layer name -> integer bias per lane (B or 1, cout), labels included

    def _rq(self, y: torch.Tensor) -> torch.Tensor:
        return torch.floor(y + 0.5).clamp_(-CLAMP, CLAMP)

    def _finish(self, name: str, acc: torch.Tensor) -> torch.Tensor:
        """Integer sums (B, Cout, H, W) -> activations: add the lane's bias, scale, round, clamp."""
        return self._rq((acc + self.bias[name][:, :, None, None]) * self.em.layers[name].mult)

    def _apply_at(self, name: str, window: torch.Tensor) -> torch.Tensor:
        """The same integer sum for one position: window (B, kw, Cin) channels-last -> (B, Cout, 1, 1)."""
        layer = self.em.layers[name]
        acc = window.reshape(len(window), -1) @ layer.wwin  # exact: integer partial sums < 2**52
        return self._rq((acc + self.bias[name]) * layer.mult[:, :, 0, 0])[:, :, None, None]

    def _lut(self, key: str, x: torch.Tensor, lo: int) -> torch.Tensor:
        table = self.em.t_luts[key]
        idx = (x.clamp(lo, lo + table.numel() - 1) - lo).long()
        return table.index_select(0, idx.reshape(-1)).view(x.shape)  # 2x faster than table[idx] here

    def tanh(self, x):
        return self._lut("tanh", x, -LUT_RANGE["tanh"] * self.em.s)

    def sig(self, x):
        return self._lut("sig", x, -LUT_RANGE["sig"] * self.em.s)

    def elu(self, x):
        # the table covers x <= 0 and is 0 at x = 0, where inputs above 0 are clamped: adding the
        # positive part gives x there (no mask, one pass less than torch.where)
        return self._lut("elu", x, -LUT_RANGE["elu"] * self.em.s) + x.clamp(min=0)

    def add(self, a, b):
        return (a + b).clamp_(-CLAMP, CLAMP)

    def celu(self, t):
        return torch.cat([self.elu(t), self.elu(-t)], 1)

    def relu(self, t):
        return t.clamp(min=0)

    def gate_tanh(self, t):
        a, b = t.chunk(2, 1)
        return self._rq(self.tanh(a) * self.sig(b) / self.em.s)

    def gate_sig(self, t):
        a, b = t.chunk(2, 1)
        return self._rq(a * self.sig(b) / self.em.s)

    def dropout(self, t):
        return t


class NpArith:
    """IntArith's element-wise ops on (N, C) float64 numpy arrays, each one compiled kernel call
    (kernels.py): the same integers, for the compiled decoders (wavefront.WaveStepper)."""

    em: ExactModel

    def tanh(self, x):
        out = np.empty_like(x)
        kernels.lut(x, self.em.np_luts["tanh"], -LUT_RANGE["tanh"] * self.em.s, out)
        return out

    def sig(self, x):
        out = np.empty_like(x)
        kernels.lut(x, self.em.np_luts["sig"], -LUT_RANGE["sig"] * self.em.s, out)
        return out

    def add(self, a, b):
        out = np.empty_like(a)
        kernels.add(a, b, CLAMP, out)
        return out

    def celu(self, t):
        out = np.empty((t.shape[0], 2 * t.shape[1]))
        kernels.celu(t, self.em.np_luts["elu"], -LUT_RANGE["elu"] * self.em.s, out)
        return out

    def relu(self, t):
        out = np.empty_like(t)
        kernels.relu(t, out)
        return out

    def gate_tanh(self, t):
        out = np.empty((t.shape[0], t.shape[1] // 2))
        lo_t, lo_s = -LUT_RANGE["tanh"] * self.em.s, -LUT_RANGE["sig"] * self.em.s
        kernels.gate_tanh(t, self.em.np_luts["tanh"], lo_t, self.em.np_luts["sig"], lo_s, self.em.s, CLAMP, out)
        return out

    def gate_sig(self, t):
        out = np.empty((t.shape[0], t.shape[1] // 2))
        kernels.gate_sig(t, self.em.np_luts["sig"], -LUT_RANGE["sig"] * self.em.s, self.em.s, CLAMP, out)
        return out

    def dropout(self, t):
        return t


class Routed:
    """Element-wise ops routed through `self._ew(op, *inputs)`, with `op` the arithmetic of the
    executor's next base class (IntArith: torch, NpArith: compiled): for executors whose inputs
    need fetching or reshaping around the op (the wavefront's lagged nodes, whole tiles as rows)."""

    def _ew(self, fn, *args):
        raise NotImplementedError

    def add(self, a, b):
        return self._ew(super().add, a, b)

    def celu(self, a):
        return self._ew(super().celu, a)

    def relu(self, a):
        return self._ew(super().relu, a)

    def dropout(self, a):
        return self._ew(super().dropout, a)

    def gate_tanh(self, a):
        return self._ew(super().gate_tanh, a)

    def gate_sig(self, a):
        return self._ew(super().gate_sig, a)


class TileOps(IntArith):
    """Whole tiles at once: the encoder's single parallel pass. x: (B, C+1, H, W), labels (B,) or None."""

    def __init__(self, em: ExactModel, x: torch.Tensor, labels: torch.Tensor | None = None):
        self.em, self.t, self.h = em, {"x": x}, x.shape[2]
        self.bias = em.lane_biases(labels, len(x))

    def put(self, name, t):
        self.t[name] = t
        return t

    def conv(self, name, src):
        spec = self.em.specs[name]
        return self._finish(name, self.em.layers[name].conv(F.pad(self.t[src], pad_for(spec)))[:, :, : self.h])


class CompiledTileOps(Routed, NpArith, TileOps):
    """TileOps with NpArith's compiled element-wise ops (CPU tensors): each op one pass over the tile,
    where torch took six to eight (clamp, index, gather, add, ...). Whole tiles are (B, C*H*W) rows
    to the kernels: a channel block of a tile is contiguous, so concatenating or halving channels
    (celu, the gates) is concatenating or halving rows."""

    def __init__(self, em: ExactModel, x: torch.Tensor, labels: torch.Tensor | None = None):
        super().__init__(em, x, labels)
        self.np_bias = {k: v.numpy() for k, v in self.bias.items()}  # (B or 1, cout)

    def conv(self, name, src):
        layer = self.em.layers[name]
        if layer.gemm.limbs is None or not igemm.whole_tiles():
            return super().conv(name, src)
        spec, x = self.em.specs[name], self.t[src]  # (B, Cin, H, W)
        out = igemm.conv_finish(
            x.numpy(), layer.gemm, spec.kh, spec.kw, pad_for(spec), self.h,
            self.np_bias[name], layer.mult_np, CLAMP,
        )  # fmt: skip
        return torch.from_numpy(out)  # (B, Cout, H, W)

    def _finish(self, name, acc):
        out = np.empty(acc.shape)
        kernels.finish_nchw(acc.numpy(), self.np_bias[name], self.em.layers[name].mult_np, CLAMP, out)
        return torch.from_numpy(out)

    def _ew(self, fn, *ts):
        """Apply an NpArith op to tiles (B, C, H, W) as rows (B, C*H*W); back to (B, C', H, W)."""
        t0 = ts[0]
        out = fn(*(t.contiguous().numpy().reshape(len(t0), -1) for t in ts))
        return torch.from_numpy(out).view(len(t0), -1, *t0.shape[2:])


class RowOps(IntArith):
    """One row i of the vertical stream, from cached rows above. Row tensors are (B, C, 1, W)."""

    def __init__(
        self,
        em: ExactModel,
        x: torch.Tensor,
        history: dict[str, dict[int, torch.Tensor]],
        i: int,
        bias: dict[str, torch.Tensor],
    ):
        self.em, self.x, self.history, self.i, self.bias = em, x, history, i, bias
        self.cur: dict[str, torch.Tensor] = {}

    def put(self, name, t):
        self.cur[name] = t
        return t

    def _row(self, src: str, r: int) -> torch.Tensor:
        # rows above the tile are zero padding, as in the whole-tile pass
        if src == "x":
            return self.x[:, :, r : r + 1] if r >= 0 else torch.zeros_like(self.x[:, :, :1])
        if r == self.i:
            return self.cur[src]  # every "v" source is computed earlier in the same row
        return self.history[src][r] if r >= 0 else torch.zeros_like(self.cur[src])

    def conv(self, name, src):
        spec = self.em.specs[name]
        rows = [self._row(src, self.i - spec.top + a) for a in range(spec.kh)]  # kh x (B, Cin, 1, W)
        b, cin, _, w = rows[0].shape
        # the B zero-padded strips side by side, (1, Cin, kh, B * Wp): one output row of width
        # B * Wp - kw + 1, so each tap is one GEMM over all lanes. (As a batch (B, Cin, kh, Wp),
        # ExactLayer.conv would also compute the kh - 1 rows that wrap into the next strip.)
        # Windows that straddle two strips are computed and dropped.
        wp = w + spec.kw - 1
        wide = rows[0].new_zeros(1, cin, spec.kh, b * wp)
        strips = wide[0].view(cin, spec.kh, b, wp)
        for a, row in enumerate(rows):
            strips[:, a, :, spec.left : spec.left + w] = row[:, :, 0].transpose(0, 1)  # (Cin, B, W)
        acc = self.em.layers[name].conv(wide)  # (1, Cout, 1, B * Wp - kw + 1) integer sums
        acc = F.pad(acc, (0, spec.kw - 1)).reshape(-1, b, wp)[:, :, :w].permute(1, 0, 2).unsqueeze(2)  # (B, Cout, 1, W)
        return self._finish(name, acc).contiguous()


class PosOps(IntArith):
    """One position (i, j) of the horizontal stream. Position tensors are (B, C, 1, 1).

    Every horizontal-stream convolution has kh == 1 (it reads the current row only, or the vertical
    stream at the same position), so a window is kw positions of one channels-last row buffer
    (B, r + W, C): a strided view that the matmul reads without copying.
    """

    def __init__(self, em: ExactModel, stepper: TorchStepper, j: int):
        self.em, self.st, self.j, self.bias = em, stepper, j, stepper.bias

    def put(self, name, t):
        buf = self.st.hrow.get(name)
        if buf is None:
            b, c = t.shape[:2]
            buf = self.st.hrow[name] = t.new_zeros(b, self.st.r + self.st.w, c)
        buf[:, self.st.r + self.j] = t[:, :, 0, 0]
        return t

    def conv(self, name, src):
        spec, st, j = self.em.specs[name], self.st, self.j
        if spec.src == "v":
            window = st.vrow[src][:, j]  # (B, C): 1x1 convolutions of the vertical stream
        else:
            row = st.xrow if src == "x" else st.hrow[src]  # (B, r + W, C)
            window = row[:, st.r + j - spec.left : st.r + j - spec.left + spec.kw]  # (B, kw, C)
        return self._apply_at(name, window)


class TorchStepper:
    """Cached raster-order evaluation for a batch of same-shape tiles in torch ops, on any device: the
    reference executor that the compiled raster.Stepper (the CPU decoder's engine) is tested against.

    Usage per row i: `start_row(i)`, then for each column j: `params(j)` -> (B, P) integers and
    `set_pixel(j, c, values)` for each channel. For "gated" models `params(j)` must be called again
    after each channel is set (channel masks); PixelCNN++ needs one call per pixel.
    """

    def __init__(
        self, em: ExactModel, batch: int, height: int, width: int, device="cpu", labels: torch.Tensor | None = None
    ):
        """labels: (batch,) int64 class labels for a conditional model (None: "no label" for all)."""
        cfg = em.cfg
        self.em, self.h, self.w, self.r = em, height, width, cfg.kernel_size // 2
        self.bias = em.lane_biases(None if labels is None else labels.to(device), batch)
        self.xpad = torch.zeros(batch, cfg.in_channels + 1, height, width + self.r, dtype=torch.float64, device=device)
        self.xpad[:, -1, :, self.r :] = 255.0  # the "inside the image" channel
        self.x = self.xpad[:, :, :, self.r :]  # a view: (B, C+1, H, W)
        self.history: dict[str, dict[int, torch.Tensor]] = {}
        self.hrow: dict[str, torch.Tensor] = {}  # horizontal stream of the current row, (B, r + W, C)
        self.vrow: dict[str, torch.Tensor] = {}  # vertical stream of the current row, (B, W, C)
        self.xrow = self.xpad[:, :, 0].transpose(1, 2).contiguous()  # current input row, (B, r + W, C+1)
        self.i = -1

    def start_row(self, i: int) -> None:
        self.i = i
        with exact_mode():
            ops = RowOps(self.em, self.x, self.history, i, self.bias)
            network.v_stream(self.em.cfg, ops)
        self.vrow = {name: t[:, :, 0].transpose(1, 2).contiguous() for name, t in ops.cur.items()}
        self.xrow = self.xpad[:, :, i].transpose(1, 2).contiguous()
        keep = self.r + 1  # the deepest window reads rows i-r .. i
        for name, row in ops.cur.items():
            hist = self.history.setdefault(name, {})
            hist[i] = row
            hist.pop(i - keep, None)

    def params(self, j: int) -> torch.Tensor:
        with exact_mode():
            out = network.h_stream(self.em.cfg, PosOps(self.em, self, j))
        return out[:, :, 0, 0]

    def params_int(self, j: int) -> np.ndarray:
        """`params(j)` as an int64 numpy array, the form the table builders take."""
        return self.params(j).to(torch.int64).cpu().numpy()

    def set_pixel(self, j: int, c: int, values) -> None:
        """values: (B,) pixel values, a tensor or a numpy array."""
        v = torch.as_tensor(values).to(self.x) * 2 - 255
        self.x[:, c, self.i, j] = v  # for the vertical stream of the rows below
        self.xrow[:, self.r + j, c] = v  # for the horizontal stream of this row


def tile_params(em: ExactModel, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's parallel pass: pixels (B, C, H, W) 0..255, labels (B,) -> integer params (B, P, H, W)."""
    dev = em.layers["v_in"].w.device
    with exact_mode():
        lab = None if labels is None else labels.to(dev)
        cls = CompiledTileOps if torch.device(dev).type == "cpu" else TileOps
        ops = cls(em, network.pixels_to_input(pixels.to(dev)), lab)
        network.v_stream(em.cfg, ops)
        return network.h_stream(em.cfg, ops)
