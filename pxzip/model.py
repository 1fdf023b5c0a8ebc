"""The float PixelCNN (training and NLL): parameters plus a whole-tile float executor of the graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pxzip import network
from pxzip.config import LOG_SCALE_MIN, ModelConfig


def pad_for(spec: network.ConvSpec) -> tuple[int, int, int, int]:
    """F.pad amounts (left, right, top, bottom) so that a valid conv gives H rows read per the geometry."""
    return (spec.left, spec.kw - 1 - spec.left, spec.top, max(0, spec.kh - 1 - spec.top))


class FloatOps:
    """Evaluates the graph on whole tiles in floating point (training, float NLL)."""

    def __init__(self, model: PixelCNN, x: torch.Tensor, labels: torch.Tensor | None = None):
        self.m = model
        self.t = {"x": x}  # named conv sources, (B, C, H, W)
        self.h = x.shape[2]
        self.labels = labels  # (B,) int64 class labels of a conditional model, else None

    def put(self, name, t):
        self.t[name] = t
        return t

    def conv(self, name, src):
        spec = self.m.specs[name]
        w = self.m.weight(name)
        key = name.replace(".", "_")
        y = F.conv2d(F.pad(self.t[src], pad_for(spec)), w, self.m.biases[key])[:, :, : self.h]
        if spec.cond and self.labels is not None:
            y = y + self.m.class_bias[key][self.labels][:, :, None, None].to(y.dtype)  # (B, Cout, 1, 1)
        return y

    def add(self, a, b):
        return a + b

    def celu(self, t):
        return F.elu(torch.cat([t, -t], 1))

    def relu(self, t):
        return F.relu(t)

    def gate_tanh(self, t):
        a, b = t.chunk(2, 1)
        return torch.tanh(a) * torch.sigmoid(b)

    def gate_sig(self, t):
        a, b = t.chunk(2, 1)
        return a * torch.sigmoid(b)

    def dropout(self, t):
        return F.dropout(t, self.m.cfg.dropout_p, self.m.training)


class PixelCNN(nn.Module):
    """Gated PixelCNN or PixelCNN++ (one resolution), as configured; trained in float."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.specs = {s.name: s for s in network.conv_specs(cfg)}
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for s in self.specs.values():
            key = s.name.replace(".", "_")  # ParameterDict keys may not contain dots
            fan_in = s.cin * s.kh * s.kw
            w = torch.randn(s.cout, s.cin, s.kh, s.kw) * math.sqrt(1.0 / fan_in)
            self.weights[key] = nn.Parameter(w)
            self.biases[key] = nn.Parameter(torch.zeros(s.cout))
            self.register_buffer(f"mask_{key}", network.conv_mask(s, cfg), persistent=False)
        # conditional models: one bias vector per label (and the "no label" label) at every gate's
        # input, zero at the start so that a conditional fine-tune starts from the unconditional model.
        # Registered after the others so that resuming an unconditional checkpoint keeps parameter order.
        self.class_bias = nn.ParameterDict()
        if cfg.num_classes:
            for s in self.specs.values():
                if s.cond:
                    self.class_bias[s.name.replace(".", "_")] = nn.Parameter(torch.zeros(cfg.num_classes + 1, s.cout))

    def weight(self, name: str) -> torch.Tensor:
        key = name.replace(".", "_")
        return self.weights[key] * getattr(self, f"mask_{key}")

    def labels_for(self, labels, batch: int, device) -> torch.Tensor | None:
        """(B,) int64 labels for a conditional model ("no label" where None); None if unconditional."""
        if not self.cfg.num_classes:
            return None
        if labels is None:
            return torch.full((batch,), self.cfg.null_label, dtype=torch.int64, device=device)
        labels = torch.as_tensor(labels, dtype=torch.int64, device=device).expand(batch)
        if ((labels < 0) | (labels > self.cfg.null_label)).any():
            raise ValueError(f"labels must be in 0..{self.cfg.null_label}")
        return labels

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (B, C, H, W) integer-valued 0..255, labels (B,) or None -> head output (B, P, H, W)."""
        x = network.pixels_to_input(pixels).to(self.weights["v_in"].dtype) / 255.0
        ops = FloatOps(self, x, self.labels_for(labels, len(pixels), pixels.device))
        network.v_stream(self.cfg, ops)
        return network.h_stream(self.cfg, ops)

    def nll(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in bits per subpixel over the batch (a scalar)."""
        out = self(pixels, labels).float()
        if self.cfg.bilevel:
            return bernoulli_nll(out, pixels)
        if self.cfg.arch == "gated":
            return softmax_nll(out, pixels)
        return logistic_mixture_nll(out, pixels, self.cfg)

    def unconditional_state(self) -> dict[str, torch.Tensor]:
        """The weights of the unconditional model that computes what this one does without a label:
        each "no label" class bias folded into its layer's bias (for fine-tuning on unlabelled data)."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("class_bias.")}
        for key, cb in self.class_bias.items():
            state[f"biases.{key}"] = state[f"biases.{key}"] + cb.detach()[self.cfg.null_label]
        return state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def softmax_nll(out: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    b, c, h, w = pixels.shape
    logits = out.view(b, c, 256, h, w).transpose(1, 2)  # (B, 256, C, H, W)
    return F.cross_entropy(logits, pixels.long()) / math.log(2)


def bernoulli_nll(out: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """One logit per pixel, out (B, 1, H, W), of "white" (255) against "black" (0): bits per pixel."""
    target = (pixels >= 128).to(out.dtype)
    return F.binary_cross_entropy_with_logits(out, target) / math.log(2)


def split_mixture(out: torch.Tensor, cfg: ModelConfig):
    """Head output (B, P, ...) -> logit_pi (B,K,...), mu (B,C,K,...), log_s (B,C,K,...), coeffs (B,3,K,...)."""
    k, c = cfg.num_logistic_mix, cfg.in_channels
    rest = out.shape[2:]
    pi = out[:, :k]
    mu = out[:, k : k + c * k].reshape(out.shape[0], c, k, *rest)
    log_s = out[:, k + c * k : k + 2 * c * k].reshape(out.shape[0], c, k, *rest)
    coeffs = out[:, k + 2 * c * k :].reshape(out.shape[0], 3 if c == 3 else 0, k, *rest)
    return pi, mu, log_s, coeffs


def logistic_mixture_nll(out: torch.Tensor, pixels: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Discretised logistic mixture (PixelCNN++), channels coupled through linear mean coefficients."""
    pi, mu, log_s, coeffs = split_mixture(out, cfg)
    x = (pixels.float() * 2 - 255) / 255  # (B, C, H, W) in [-1, 1]
    x = x.unsqueeze(2)  # (B, C, 1, H, W)
    log_s = log_s.clamp(min=LOG_SCALE_MIN)
    if cfg.in_channels == 3:
        a, b_, g = torch.tanh(coeffs).unbind(1)  # each (B, K, H, W)
        m0 = mu[:, 0]
        m1 = mu[:, 1] + a * x[:, 0]
        m2 = mu[:, 2] + b_ * x[:, 0] + g * x[:, 1]
        mu = torch.stack([m0, m1, m2], 1)
    centered = x - mu
    inv_s = torch.exp(-log_s)
    plus_in = inv_s * (centered + 1 / 255)
    min_in = inv_s * (centered - 1 / 255)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): pixel 0 takes the left tail
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): pixel 255 takes the right tail
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_s - 2 * F.softplus(mid_in)
    # where the bin mass underflows, use the density at the centre times the bin width
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid + math.log(2 / 255))
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))
    joint = log_probs.sum(1) + F.log_softmax(pi, 1)  # (B, K, H, W)
    ll = torch.logsumexp(joint, 1)  # (B, H, W)
    return -ll.mean() / (cfg.in_channels * math.log(2))
