"""The PixelCNN graph, written once and run by interchangeable executors (float or exact integer).

Both architectures are two-stream networks at one resolution:

* the vertical stream ``v`` at row i sees only rows < i (a k-wide band above, growing with depth);
* the horizontal stream ``h`` at (i, j) sees ``v`` at (i, j) and row i at columns < j (and, for the
  Gated PixelCNN, the colour channels of pixel (i, j) that come earlier in R -> G -> B order,
  through channel-group masks "A" and "B").

The graph below only names convolutions and element-wise ops; an executor ("ops") decides where
and how they are evaluated: a whole tile at once (training, and the encoder's one parallel pass),
one row of the vertical stream (the decoder, after each decoded row), or one position of the
horizontal stream (the decoder, per pixel). Every convolution has a geometry ``(kh, kw, top, left)``:
output (i, j) reads source rows ``i-top .. i-top+kh-1`` and columns ``j-left .. j-left+kw-1``.
Because the executors share this one description, the exact executors compute the same integers
in every evaluation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pxzip.config import ModelConfig


@dataclass(frozen=True)
class ConvSpec:
    name: str
    cin: int
    cout: int
    kh: int
    kw: int
    top: int  # rows above the output row where the window starts
    left: int  # columns left of the output column where the window starts
    src: str  # layout of the source: "x" (pixels + ones channel), "v" (vertical), "h" (horizontal)
    mask: str = ""  # "", or Gated PixelCNN channel mask "A"/"B" on the current-pixel tap
    in_layout: str = "F"  # channel-group layout of the input: "x", "F", "2F"
    out_layout: str = "F"  # channel-group layout of the output: "F", "2F", "logits"
    cond: bool = False  # a gate's input: class-conditional models add a learned bias per label here


def conv_specs(cfg: ModelConfig) -> list[ConvSpec]:
    """Every convolution of the network, in graph order."""
    f, c, r, k, n = cfg.num_filters, cfg.in_channels, cfg.kernel_size // 2, cfg.kernel_size, cfg.num_resnet
    cx = c + 1  # pixels plus a constant "inside the image" channel, so borders are visible
    v_in = dict(kh=r, kw=k, top=r, left=r)  # rows i-r .. i-1: strictly above
    v = dict(kh=r + 1, kw=k, top=r, left=r)  # rows i-r .. i of a stream that is already shifted down
    h = dict(kh=1, kw=r + 1, top=0, left=r)  # row i, columns j-r .. j
    one = dict(kh=1, kw=1, top=0, left=0)
    specs: list[ConvSpec] = []
    if cfg.arch == "gated":
        specs.append(ConvSpec("v_in", cx, f, src="x", in_layout="x", **v_in))
        specs.append(ConvSpec("h_in", cx, f, src="x", mask="A", in_layout="x", **h))
        for i in range(n):
            specs.append(ConvSpec(f"b{i}.v", f, 2 * f, src="v", out_layout="2F", cond=True, **v))
            specs.append(ConvSpec(f"b{i}.h", f, 2 * f, src="h", mask="B", out_layout="2F", cond=True, **h))
            specs.append(ConvSpec(f"b{i}.link", 2 * f, 2 * f, src="v", in_layout="2F", out_layout="2F", **one))
            specs.append(ConvSpec(f"b{i}.res", f, f, src="h", mask="B", **one))
        specs.append(ConvSpec("head1", f, f, src="h", mask="B", **one))
        specs.append(ConvSpec("head2", f, cfg.num_params_out, src="h", mask="B", out_layout="logits", **one))
    else:
        h_in = dict(kh=1, kw=r, top=0, left=r)  # row i, columns j-r .. j-1: strictly left
        specs.append(ConvSpec("v_in", cx, f, src="x", in_layout="x", **v_in))
        specs.append(ConvSpec("h_in", cx, f, src="x", in_layout="x", **h_in))
        specs.append(ConvSpec("h_link", 2 * f, f, src="v", in_layout="2F", **one))
        for i in range(n):
            specs.append(ConvSpec(f"b{i}.v1", 2 * f, f, src="v", in_layout="2F", **v))
            specs.append(ConvSpec(f"b{i}.v2", 2 * f, 2 * f, src="v", in_layout="2F", out_layout="2F", cond=True, **v))
            specs.append(ConvSpec(f"b{i}.h1", 2 * f, f, src="h", in_layout="2F", **h))
            specs.append(ConvSpec(f"b{i}.link", 2 * f, f, src="v", in_layout="2F", **one))
            specs.append(ConvSpec(f"b{i}.h2", 2 * f, 2 * f, src="h", in_layout="2F", out_layout="2F", cond=True, **h))
        specs.append(ConvSpec("head", 2 * f, cfg.num_params_out, src="h", in_layout="2F", out_layout="logits", **one))
    return specs


def _groups(layout: str, n: int, cfg: ModelConfig) -> torch.Tensor:
    """Colour group of each channel (R=0, G=1, B=2); -1 means visible to every group."""
    f, c = cfg.num_filters, cfg.in_channels
    idx = torch.arange(n)
    if layout == "x":
        return torch.where(idx < c, idx, torch.full_like(idx, -1))
    if layout == "logits":
        return idx // 256
    return ((idx % f) * c) // f  # "F" and "2F" (gate halves share the grouping)


def conv_mask(spec: ConvSpec, cfg: ModelConfig) -> torch.Tensor:
    """(cout, cin, kh, kw) 0/1 mask; only the current-pixel tap is ever masked."""
    m = torch.ones(spec.cout, spec.cin, spec.kh, spec.kw)
    if spec.mask:
        go = _groups(spec.out_layout, spec.cout, cfg)[:, None]
        gi = _groups(spec.in_layout, spec.cin, cfg)[None, :]
        allowed = go > gi if spec.mask == "A" else go >= gi
        # the current pixel is the last column of an "h" window (row i, column j)
        m[:, :, spec.top, spec.left] = allowed.float()
    return m


def v_stream(cfg: ModelConfig, ops) -> None:
    """Vertical stream: everything here at row i depends on pixel rows < i only."""
    if cfg.arch == "gated":
        ops.put("v0", ops.conv("v_in", "x"))
        for i in range(cfg.num_resnet):
            vp = ops.put(f"vp{i}", ops.conv(f"b{i}.v", f"v{i}"))  # (B, 2F, ...) pre-gate, also feeds h
            ops.put(f"v{i + 1}", ops.gate_tanh(vp))
        return
    v = ops.conv("v_in", "x")
    ops.put("v0a", ops.celu(v))
    for i in range(cfg.num_resnet):
        ops.put(f"v{i}b", ops.dropout(ops.celu(ops.conv(f"b{i}.v1", f"v{i}a"))))
        v = ops.add(v, ops.gate_sig(ops.conv(f"b{i}.v2", f"v{i}b")))
        ops.put(f"v{i + 1}a", ops.celu(v))


def h_stream(cfg: ModelConfig, ops):
    """Horizontal stream and head: returns the head output (B, num_params_out, ...)."""
    if cfg.arch == "gated":
        h = ops.put("h0", ops.conv("h_in", "x"))
        for i in range(cfg.num_resnet):
            hp = ops.add(ops.conv(f"b{i}.h", f"h{i}"), ops.conv(f"b{i}.link", f"vp{i}"))
            ops.put(f"h{i}g", ops.gate_tanh(hp))
            h = ops.put(f"h{i + 1}", ops.add(h, ops.conv(f"b{i}.res", f"h{i}g")))
        ops.put("hout", ops.relu(ops.conv("head1", f"h{cfg.num_resnet}")))
        return ops.conv("head2", "hout")
    h = ops.add(ops.conv("h_in", "x"), ops.conv("h_link", "v0a"))
    for i in range(cfg.num_resnet):
        ops.put(f"h{i}a", ops.celu(h))
        t = ops.add(ops.conv(f"b{i}.h1", f"h{i}a"), ops.conv(f"b{i}.link", f"v{i + 1}a"))
        ops.put(f"h{i}b", ops.dropout(ops.celu(t)))
        h = ops.add(h, ops.gate_sig(ops.conv(f"b{i}.h2", f"h{i}b")))
    ops.put("hout", ops.celu(h))
    return ops.conv("head", "hout")


def pixels_to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8-valued pixels (B, C, H, W) -> integer network input (B, C+1, H, W) in float64.

    Pixel p becomes u = 2p - 255 (odd integers in [-255, 255], i.e. 255 * the usual [-1, 1]
    scaling) and a constant channel of 255 marks "inside the image" (zero padding outside).
    """
    u = x.to(torch.float64) * 2 - 255
    ones = torch.full_like(u[:, :1], 255.0)
    return torch.cat([u, ones], 1)


def receptive_rows(cfg: ModelConfig) -> int:
    """Rows above a pixel that can influence it (the vertical stream's reach)."""
    r = cfg.kernel_size // 2
    convs_v = cfg.num_resnet * (1 if cfg.arch == "gated" else 2)
    return r + r * convs_v
