"""Wavefront order: every row of a tile decoded at once, each a fixed number of columns behind the row above.

Why: in raster order row i waits for the whole of row i-1, so a decoder can only advance many
pixels per step by cutting the image into many small, independent tiles, and every tile border
loses context (about 0.02 bits/dim on Kodak with 64x64 tiles). A PixelCNN's receptive field is
bounded, though: the vertical stream at column j reads row i-1 at most ``reach`` columns to the
right (`plan`). So pixel (i, j) only needs row i-1 up to column j + reach, and with a row lag
D = reach + 1 every pixel on the diagonal t = j + D*i has its whole context once steps 0..t-1
are done. The decoder advances one pixel of every row at once (a tile of H rows takes about
W + D*H steps, not H*W), so tiles can be large and the file small.

Coding order of a tile batch (format 4, docs/FORMAT.md): step t = 0, 1, ...; within a step,
channel c; then tile; then row i ascending (column j = t - D*i).

The decoder's engine, `WaveStepper`, is a third exact executor of the graph in network.py.
Each vertical-stream tensor ("node") is computed at its own lag ahead of the pixel frontier
f = t - D*i of its row: a node reached through k columns of convolution reach from the pixels
sits k columns behind them, so each convolution finds its source's same-row columns computed in
the same step and the row above's in earlier steps. Nodes are kept in ring buffers a few columns
wide, one slot per row in flight; positions outside the tile read an all-zero row (the zero
padding of the parallel pass), so every integer equals `exact.tile_params`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pxzip import igemm, kernels, network
from pxzip.config import ModelConfig
from pxzip.exact import CLAMP, ExactModel, IntArith, NpArith, Routed, exact_mode


def rows_at(t: int, height: int, width: int, lag: int) -> range:
    """Rows i of a height x width tile whose pixel (i, t - lag*i) is coded at step t (ascending)."""
    lo = max(0, -(-(t - width + 1) // lag))  # ceil((t - width + 1) / lag)
    hi = min(height - 1, t // lag) if t >= 0 else -1
    return range(lo, hi + 1)


def num_steps(height: int, width: int, lag: int) -> int:
    """Steps that code at least one pixel: t = 0 .. lag*(height-1) + width - 1."""
    return lag * (height - 1) + width


def order(height: int, width: int, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Every position in coding order: (rows, cols), each (height*width,), sorted by (t, i)."""
    i, j = np.divmod(np.arange(height * width), width)
    perm = np.lexsort((i, j + lag * i))
    return i[perm], j[perm]


# -- the plan: where each vertical-stream tensor lives, traced once per model ----------------------


@dataclass
class _Node:
    pos: int  # columns of convolution reach from the pixels (x is 0)
    channels: int
    buffered: bool = False  # read at another column or row than where it is computed


@dataclass
class Plan:
    """The vertical stream as a list of nodes (one per op, in graph order) and their lags."""

    nodes: list[_Node] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)  # put name -> node index
    convs: list[str] = field(default_factory=list)  # the convolutions of the vertical stream
    reach: int = 0  # the deepest node's pos: how far right of a pixel the row below can look
    r: int = 1  # kernel_size // 2: rows above a convolution reads

    @property
    def lag(self) -> int:
        """Columns by which row i trails row i-1 (D)."""
        return self.reach + 1

    def node_lag(self, k: int) -> int:
        """Columns ahead of its row's pixel frontier at which node k is computed."""
        return self.reach - self.nodes[k].pos


class _Tracer:
    """Runs `network.v_stream` on placeholders (node indices) to build the Plan."""

    def __init__(self, cfg: ModelConfig):
        self.specs, self.plan = {s.name: s for s in network.conv_specs(cfg)}, Plan(r=cfg.kernel_size // 2)
        self.plan.names["x"] = self._new(0, cfg.in_channels + 1, buffered=True)

    def _new(self, pos: int, channels: int, buffered: bool = False) -> int:
        self.plan.nodes.append(_Node(pos, channels, buffered))
        return len(self.plan.nodes) - 1

    def put(self, name, k):
        self.plan.names[name] = k
        self.plan.nodes[k].buffered = True  # every put tensor is read by name: spatially, or by h
        return k

    def conv(self, name, src):
        spec = self.specs[name]
        k = self.plan.names[src]
        self.plan.convs.append(name)
        return self._new(self.plan.nodes[k].pos + spec.kw - 1 - spec.left, spec.cout)

    def _ew(self, channels_of, *ks):
        pos = max(self.plan.nodes[k].pos for k in ks)
        for k in ks:  # an input computed further ahead is read back at the output's column
            if self.plan.nodes[k].pos != pos:
                self.plan.nodes[k].buffered = True
        return self._new(pos, channels_of(*(self.plan.nodes[k].channels for k in ks)))

    def add(self, a, b):
        return self._ew(lambda ca, cb: ca, a, b)

    def celu(self, a):
        return self._ew(lambda c: 2 * c, a)

    def relu(self, a):
        return self._ew(lambda c: c, a)

    def dropout(self, a):
        return self._ew(lambda c: c, a)

    def gate_tanh(self, a):
        return self._ew(lambda c: c // 2, a)

    gate_sig = gate_tanh


def plan_for(cfg: ModelConfig) -> Plan:
    """The wavefront plan of a network (an ensemble's head config gives its members' plan)."""
    tr = _Tracer(cfg)
    network.v_stream(cfg, tr)
    tr.plan.reach = max(n.pos for n in tr.plan.nodes)
    return tr.plan


def lag_for(cfg: ModelConfig) -> int:
    """The row lag D of a network: the columns by which row i is coded behind row i-1."""
    return plan_for(cfg).lag


def slots_for(cfg: ModelConfig, width: int) -> int:
    """Rows in flight per tile of this width: the decoder's lanes (and memory) per tile."""
    p = plan_for(cfg)
    return p.r + 1 + (width - 1 + p.reach) // p.lag


# -- the decoder's engine -------------------------------------------------------------------------


class _Rings:
    """Ring buffers for one tensor of every row in flight: (lanes + 2, cols, C) float64.

    Lane `zero` is never written (it is what positions outside the tile read); lane `trash` takes
    the writes of positions outside the tile. A row's column j lives at j % cols.
    """

    def __init__(self, lanes: int, cols: int, channels: int, device):
        self.cols, self.zero, self.trash = cols, lanes, lanes + 1
        self.data = torch.zeros((lanes + 2) * cols, channels, dtype=torch.float64, device=device)

    def write(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        self.data.index_copy_(0, flat, values)

    def read(self, flat: torch.Tensor) -> torch.Tensor:
        return self.data.index_select(0, flat.reshape(-1)).view(*flat.shape, -1)


class _VOps(Routed, IntArith):
    """One wavefront step of the vertical stream: every node of every computed lane at its lagged column."""

    def __init__(self, ws: TorchWaveStepper):
        self.ws, self.em, self.bias, self.k = ws, ws.em, ws.bias, 0
        self.fresh: dict[int, torch.Tensor] = {}  # node -> (L, C) values computed in this step

    def _emit(self, value: torch.Tensor) -> int:
        k = self.k = self.k + 1
        ws = self.ws
        if ws.plan.nodes[k].buffered:
            ws.rings[k].write(ws.write_index(ws.plan.node_lag(k)), value)
        self.fresh[k] = value
        return k

    def _at(self, k: int, lag: int) -> torch.Tensor:
        """Node k's values (A, C) at each computed lane's column for a node of `lag`."""
        if self.ws.plan.node_lag(k) == lag:
            return self.fresh[k]
        return self.ws.rings[k].read(self.ws.read_index(lag, 0, 0, 1, 1))[:, 0, 0]

    def put(self, name, k):
        return k

    def conv(self, name, src):
        spec, ws = self.em.specs[name], self.ws
        k = ws.plan.names[src]
        lag = ws.plan.node_lag(k) - (spec.kw - 1 - spec.left)
        window = ws.rings[k].read(ws.read_index(lag, spec.top, spec.left, spec.kh, spec.kw))  # (A, kh, kw, C)
        acc = window.reshape(len(window), -1) @ self.em.layers[name].wwin  # exact: integer partial sums < 2**52
        return self._emit(self._rq((acc + self.bias[name]) * self.em.layers[name].mult[:, :, 0, 0]))

    def _ew(self, fn, *ks):
        lag = min(self.ws.plan.node_lag(k) for k in ks)
        return self._emit(fn(*(self._at(k, lag)[:, :, None, None] for k in ks))[:, :, 0, 0])


class _HOps(IntArith):
    """The horizontal stream at the pixel of each coded lane (a subset of lanes), as exact.PosOps."""

    def __init__(self, ws: TorchWaveStepper):
        self.ws, self.em, self.bias = ws, ws.em, ws.hbias

    def put(self, name, t):
        ws = self.ws
        ring = ws.hrings.get(name)
        if ring is None:
            # the horizontal stream reads its own row only, r columns back: r + 1 columns suffice
            ring = ws.hrings[name] = _Rings(ws.lanes, ws.plan.r + 1, t.shape[1], ws.device)
        ring.write(ws.px_hflat, t[:, :, 0, 0])
        return t

    def conv(self, name, src):
        spec, ws = self.em.specs[name], self.ws
        if spec.src == "v":  # 1x1 convolutions of the vertical stream at the pixel
            window = ws.rings[ws.plan.names[src]].read(ws.px_flat)  # (N, C)
        else:
            ring = ws.rings[ws.plan.names["x"]] if src == "x" else ws.hrings[src]
            cols = ws.px_col[:, None] - spec.left + torch.arange(spec.kw, device=ws.device)  # (N, kw)
            flat = ws.px_lane[:, None] * ring.cols + cols % ring.cols
            window = ring.read(torch.where(cols >= 0, flat, ring.zero * ring.cols))  # (N, kw, C)
        return self._apply_at(name, window)


class TorchWaveStepper:
    """Wavefront evaluation for a batch of same-shape tiles in torch ops, on any device: the reference
    executor that the compiled `WaveStepper` (the CPU decoder's engine) is tested against.

    Usage: for t in range(start, num_steps(...)): `advance(t)` -> the rows coded at t (ascending);
    if any, `params()` -> (tiles * rows, P) integers in order (tile, row), then `set_pixel(c,
    values)` for each channel c (for "gated" models call `params()` again after each channel).
    `start` is -reach: the first steps compute the vertical stream of the first row only.
    """

    def __init__(self, em: ExactModel, tiles: int, height: int, width: int, device="cpu", labels=None):
        """labels: (tiles,) int64 class labels for a conditional model (None: "no label" for all)."""
        self.em, self.n, self.h, self.w, self.device = em, tiles, height, width, device
        self.plan = p = plan_for(em.cfg)
        self.lag, self.start = p.lag, -p.reach
        # rows in flight: a row's slot is reused once the rows below no longer read it (see module doc)
        self.slots = slots_for(em.cfg, width)
        self.lanes = tiles * self.slots  # lane = tile * slots + row % slots
        # ring width: a row's oldest column still read (by the row r below) and its newest written
        self.cols = p.r * p.lag + 2 * p.r + p.reach + 2
        self.rings = {k: _Rings(self.lanes, self.cols, n.channels, device) for k, n in enumerate(p.nodes) if n.buffered}
        self.hrings: dict[str, _Rings] = {}
        lab = None if labels is None else labels.to(device)
        self.tile_bias = em.lane_biases(lab, tiles)  # (tiles or 1, cout)
        # lane bookkeeping depends only on the step, not on pixels: it runs on the CPU (no device sync
        # for nonzero), and only the index tensors it yields go to the device
        self.tile_of = torch.arange(self.lanes) // self.slots  # (L,)
        self.slot_of = torch.arange(self.lanes) % self.slots
        self.t = self.start - 1

    def advance(self, t: int) -> range:
        """Compute the vertical stream of step t; returns the rows whose pixel is coded at t."""
        assert t == self.t + 1, "steps must be taken in order"
        self.t = t
        # each lane's row: the latest row of its slot that has started (f >= -reach)
        newest = (t + self.plan.reach) // self.lag
        row = newest - torch.remainder(newest - self.slot_of, self.slots)  # (L,)
        frontier = t - self.lag * row  # (L,) the row's pixel column f
        # lanes with a vertical-stream node inside the tile this step (nodes sit 0 .. reach-1 ahead)
        act = (row >= 0) & (row < self.h) & (frontier > -self.plan.reach) & (frontier < self.w)
        lane = act.nonzero()[:, 0]  # (A,) the lanes computed, A <= L
        self.row, self.frontier = row[lane].to(self.device), frontier[lane].to(self.device)
        self.tile, self.lane = self.tile_of[lane].to(self.device), lane.to(self.device)
        self.bias = {k: b.index_select(0, self.tile) if len(b) > 1 else b for k, b in self.tile_bias.items()}
        if len(self.lane):
            with exact_mode():
                network.v_stream(self.em.cfg, _VOps(self))
        rows = rows_at(t, self.h, self.w, self.lag)
        if len(rows):
            r = torch.arange(rows.start, rows.stop, device=self.device)
            tiles = torch.arange(self.n, device=self.device)
            self.px_lane = (tiles[:, None] * self.slots + r[None, :] % self.slots).reshape(-1)  # (N,) tile, row
            self.px_col = (t - self.lag * r).repeat(self.n)
            self.px_flat = self.px_lane * self.cols + self.px_col % self.cols  # (N,) in the vertical rings
            self.px_hflat = self.px_lane * (self.plan.r + 1) + self.px_col % (self.plan.r + 1)  # horizontal rings
            self.hbias = {
                k: b.index_select(0, self.px_lane // self.slots) if len(b) > 1 else b for k, b in self.tile_bias.items()
            }
            # the coded pixel: not decoded yet, but "inside the image" (the ones channel) for masked taps
            x = self.rings[self.plan.names["x"]]
            blank = torch.zeros(len(self.px_lane), x.data.shape[1], dtype=torch.float64, device=self.device)
            blank[:, -1] = 255.0
            x.write(self.px_flat, blank)
        return rows

    def write_index(self, lag: int) -> torch.Tensor:
        """Flat ring index (A,) of each computed lane's column f + lag; outside the tile -> trash."""
        col = self.frontier + lag
        inside = (col >= 0) & (col < self.w)  # computed lanes hold rows of the tile
        return torch.where(inside, self.lane * self.cols + col % self.cols, (self.lanes + 1) * self.cols)

    def read_index(self, lag: int, top: int, left: int, kh: int, kw: int) -> torch.Tensor:
        """Flat ring indices (A, kh, kw) of a window for an output at column f + lag, rows
        i - top .. i - top + kh - 1, columns - left ..; outside the tile -> the zero lane."""
        rows = self.row[:, None] - top + torch.arange(kh, device=self.device)  # (A, kh)
        cols = (self.frontier + lag)[:, None] - left + torch.arange(kw, device=self.device)  # (A, kw)
        lane = self.tile[:, None] * self.slots + torch.remainder(rows, self.slots)  # (A, kh)
        flat = lane[:, :, None] * self.cols + torch.remainder(cols, self.cols)[:, None, :]
        inside = ((rows >= 0) & (rows < self.h))[:, :, None] & ((cols >= 0) & (cols < self.w))[:, None, :]
        return torch.where(inside, flat, self.lanes * self.cols)

    def params(self) -> torch.Tensor:
        """Head output (tiles * rows, P) at the pixels coded in this step, order (tile, row)."""
        with exact_mode():
            out = network.h_stream(self.em.cfg, _HOps(self))
        return out[:, :, 0, 0]

    def params_int(self) -> np.ndarray:
        return self.params().to(torch.int64).cpu().numpy()

    def set_pixel(self, c: int, values) -> None:
        """Channel c of the pixels coded in this step, (tiles * rows,) in order (tile, row); tensor or numpy."""
        x = self.rings[self.plan.names["x"]]
        x.data[self.px_flat, c] = torch.as_tensor(values).to(x.data) * 2 - 255


# -- the compiled engine (CPU) --------------------------------------------------------------------


class _CVOps(Routed, NpArith):
    """`_VOps` on numpy arrays with compiled kernels: one gather, one GEMM and one requantisation per
    convolution, one kernel per element-wise op, instead of a dozen torch ops each."""

    def __init__(self, ws: WaveStepper):
        self.ws, self.em, self.k = ws, ws.em, 0
        self.fresh: dict[int, np.ndarray] = {}  # node -> (A, C) values computed in this step

    def _emit(self, value: np.ndarray) -> int:
        k = self.k = self.k + 1
        ws = self.ws
        if ws.plan.nodes[k].buffered:
            kernels.ring_write(ws.rings[k], ws.cols, ws.w, ws.lane, ws.front, ws.a, ws.plan.node_lag(k), value)
        self.fresh[k] = value
        return k

    def _at(self, k: int, lag: int) -> np.ndarray:
        ws = self.ws
        if ws.plan.node_lag(k) == lag:
            return self.fresh[k]
        out = np.empty((ws.a, ws.plan.nodes[k].channels))
        kernels.gather(
            ws.rings[k], ws.cols, ws.slots, ws.h, ws.w, ws.row, ws.front, ws.tile, ws.a, lag, 0, 0, 1, 1, out
        )
        return out

    def put(self, name, k):
        return k

    def conv(self, name, src):
        spec, ws = self.em.specs[name], self.ws
        k = ws.plan.names[src]
        lag = ws.plan.node_lag(k) - (spec.kw - 1 - spec.left)
        layer = self.em.layers[name]
        win = np.empty((ws.a, layer.wwin.shape[0]))  # (A, kh*kw*Cin) channels-last windows
        kernels.gather(
            ws.rings[k], ws.cols, ws.slots, ws.h, ws.w, ws.row, ws.front, ws.tile, ws.a,
            lag, spec.top, spec.left, spec.kh, spec.kw, win,
        )  # fmt: skip
        acc = np.empty((ws.a, spec.cout))
        igemm.matmul_finish(win, layer.gemm, ws.bias[name], ws.tile, ws.mult[name], CLAMP, acc)  # exact (igemm)
        return self._emit(acc)

    def _ew(self, fn, *ks):
        lag = min(self.ws.plan.node_lag(k) for k in ks)
        return self._emit(fn(*(self._at(k, lag) for k in ks)))


class _CHOps(NpArith):
    """`_HOps` on numpy arrays with compiled kernels: the horizontal stream at the coded pixels (N, C)."""

    def __init__(self, ws: WaveStepper):
        self.ws, self.em = ws, ws.em

    def put(self, name, t):
        ws = self.ws
        ring = ws.hrings.get(name)
        if ring is None:  # the horizontal stream reads its own row only, r columns back: r + 1 columns
            ring = ws.hrings[name] = np.zeros(((ws.lanes + 2) * (ws.plan.r + 1), t.shape[1]))
        kernels.row_write(ring, ws.plan.r + 1, ws.px_lane, ws.px_col, t)
        return t

    def conv(self, name, src):
        spec, ws = self.em.specs[name], self.ws
        if spec.src == "v":  # 1x1 convolutions of the vertical stream at the pixel
            data, cols, left, kw = ws.rings[ws.plan.names[src]], ws.cols, 0, 1
        elif src == "x":
            data, cols, left, kw = ws.rings[ws.plan.names["x"]], ws.cols, spec.left, spec.kw
        else:
            data, cols, left, kw = ws.hrings[src], ws.plan.r + 1, spec.left, spec.kw
        win = np.empty((len(ws.px_lane), kw * data.shape[1]))
        kernels.gather_row(data, cols, ws.px_lane, ws.px_col, left, kw, win)
        acc = np.empty((len(win), spec.cout))
        igemm.matmul_finish(win, self.em.layers[name].gemm, ws.bias[name], ws.px_tile, ws.mult[name], CLAMP, acc)
        return acc


class WaveStepper:
    """Wavefront evaluation for a batch of same-shape tiles (the CPU decoder's engine in format 4).

    Usage: for t in range(start, num_steps(...)): `advance(t)` -> the rows coded at t (ascending);
    if any, `params()` -> (tiles * rows, P) integers in order (tile, row), then `set_pixel(c,
    values)` for each channel c (for "gated" models call `params()` again after each channel).
    `start` is -reach: the first steps compute the vertical stream of the first row only.
    The same integers as `TorchWaveStepper` (same rings, same lags; tests/test_wavefront.py),
    with numpy state and compiled kernels (kernels.py) around torch's float64 GEMMs.
    """

    def __init__(self, em: ExactModel, tiles: int, height: int, width: int, labels=None):
        """labels: (tiles,) int64 class labels for a conditional model (None: "no label" for all)."""
        self.em, self.n, self.h, self.w = em, tiles, height, width
        self.plan = p = plan_for(em.cfg)
        self.lag, self.start = p.lag, -p.reach
        self.slots = slots_for(em.cfg, width)
        self.lanes = tiles * self.slots  # lane = tile * slots + row % slots
        self.cols = p.r * p.lag + 2 * p.r + p.reach + 2  # ring width, as TorchWaveStepper's
        self.rings = {
            k: np.zeros(((self.lanes + 2) * self.cols, n.channels)) for k, n in enumerate(p.nodes) if n.buffered
        }
        self.hrings: dict[str, np.ndarray] = {}
        bias = em.lane_biases(labels, tiles)
        self.bias = {k: b.cpu().numpy().astype(np.float64) for k, b in bias.items()}  # (tiles or 1, cout)
        self.mult = {k: layer.mult_np for k, layer in em.layers.items()}
        self.lane, self.row, self.front, self.tile = (np.zeros(self.lanes, np.int64) for _ in range(4))
        self.a = 0
        self.t = self.start - 1
        self.blank = np.zeros(p.nodes[p.names["x"]].channels)
        self.blank[-1] = 255.0  # a coded pixel before it is decoded: zeros, but "inside the image"

    def advance(self, t: int) -> range:
        """Compute the vertical stream of step t; returns the rows whose pixel is coded at t."""
        assert t == self.t + 1, "steps must be taken in order"
        self.t = t
        p = self.plan
        self.a = kernels.wave_lanes(
            t, p.reach, self.lag, self.slots, self.h, self.w, self.lane, self.row, self.front, self.tile
        )
        if self.a:
            with torch.no_grad():
                network.v_stream(self.em.cfg, _CVOps(self))
        rows = rows_at(t, self.h, self.w, self.lag)
        if len(rows):
            r = np.arange(rows.start, rows.stop)
            tiles = np.arange(self.n)
            self.px_lane = (tiles[:, None] * self.slots + r[None, :] % self.slots).reshape(-1)  # (N,) tile, row
            self.px_col = np.tile(t - self.lag * r, self.n)
            self.px_tile = self.px_lane // self.slots
            self.px_flat = self.px_lane * self.cols + self.px_col % self.cols  # (N,) in the vertical rings
            self.rings[p.names["x"]][self.px_flat] = self.blank
        return rows

    def params(self) -> torch.Tensor:
        """Head output (tiles * rows, P) at the pixels coded in this step, order (tile, row)."""
        with torch.no_grad():
            return torch.from_numpy(network.h_stream(self.em.cfg, _CHOps(self)))

    def params_int(self) -> np.ndarray:
        with torch.no_grad():
            return network.h_stream(self.em.cfg, _CHOps(self)).astype(np.int64)

    def set_pixel(self, c: int, values) -> None:
        """Channel c of the pixels coded in this step, (tiles * rows,) in order (tile, row)."""
        v = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        self.rings[self.plan.names["x"]][self.px_flat, c] = v * 2.0 - 255
