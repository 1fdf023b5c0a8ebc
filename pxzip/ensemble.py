"""Ensembles: several PixelCNN++ networks of one config whose predictions are averaged, exactly.

Averaging the distributions of M logistic-mixture models is itself a logistic mixture: the M*K
components side by side, member m's mixture weights scaled by its prior weight w_m / sum(w). So an
ensemble needs no new table code: its head output is the members' outputs re-laid as one mixture
of M*K components (`combine_heads`), and `tables.Mixture` normalises each member's logits on its
own before weighting them (its `prior`). Channel coupling stays right: observing R updates the
weight of every component, across members, to the posterior given R.

Cost: M networks per step (encode and decode both about M times slower). Rate: the ensemble's NLL
is at most the weighted average of its members' NLLs (log is concave), and below the best member
only when the members are about as good as each other and err differently; measure it before
shipping one (benchmarks/ensemble_weights.py; results in benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pxzip import engines
from pxzip.config import ModelConfig
from pxzip.exact import ExactModel
from pxzip.model import logistic_mixture_nll

MAX_MEMBERS = 8
MAX_PRIOR = 255  # member weights are integers 1..MAX_PRIOR (tables.Mixture's bounds rely on it)


def head_config(member: ModelConfig, members: int) -> ModelConfig:
    """The config the table builders read: the members' own, with all M*K components."""
    return dataclasses.replace(member, num_logistic_mix=member.num_logistic_mix * members)


def check_members(cfgs: list[ModelConfig], prior) -> None:
    """Refuse ensembles the coder cannot represent (ValueError)."""
    if not 2 <= len(cfgs) <= MAX_MEMBERS:
        raise ValueError(f"an ensemble has 2..{MAX_MEMBERS} members, not {len(cfgs)}")
    if len(prior) != len(cfgs):
        raise ValueError(f"{len(prior)} weights for {len(cfgs)} members")
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 1 <= p <= MAX_PRIOR for p in prior):
        raise ValueError(f"member weights must be whole numbers 1..{MAX_PRIOR}, not {str(list(prior))[:80]}")
    # dropout only acts in training: members trained with different --dropout are the same network
    first = dataclasses.replace(cfgs[0], dropout_p=0.0)
    if any(dataclasses.replace(c, dropout_p=0.0) != first for c in cfgs[1:]):
        raise ValueError("ensemble members must share one config (same network shape, other weights)")
    if first.arch != "pixelcnnpp" or first.num_classes:
        raise ValueError("ensembles take unconditional pixelcnnpp models (logistic mixtures)")


def _no_label(labels) -> None:
    if labels is not None:
        raise ValueError("ensembles are not class-conditional: they take no label")


def combine_heads(outs: list[torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
    """Member head outputs, M x (B, P, ...) -> one mixture of M*K components, (B, M*P, ...).

    A member's P channels are [logits K | means C*K | log-scales C*K | RGB coefficients 3*K]
    (model.split_mixture); the result has the same layout with M*K components, member by member
    within each block, so component m*K + k is member m's component k.
    """
    k, c = cfg.num_logistic_mix, cfg.in_channels
    b, rest = outs[0].shape[0], outs[0].shape[2:]
    blocks = [(0, 1), (k, c), (k + c * k, c), (k + 2 * c * k, 3 if c == 3 else 0)]  # (start, rows of K)
    parts = []
    for start, rows in blocks:
        if rows:
            per = [o[:, start : start + rows * k].reshape(b, rows, k, *rest) for o in outs]
            parts.append(torch.cat(per, 2).reshape(b, rows * k * len(outs), *rest))
    return torch.cat(parts, 1)


class ExactEnsemble:
    """Exact members plus their integer weights: the coder's interface of exact.ExactModel."""

    def __init__(self, members: list[ExactModel], prior: list[int]):
        check_members([m.cfg for m in members], prior)
        for m in members[1:]:  # the tables read one set of lookup tables for every component
            if m.luts.keys() != members[0].luts.keys() or any(
                not np.array_equal(m.luts[key], members[0].luts[key]) for key in m.luts
            ):
                raise ValueError("ensemble members have different lookup tables")
        self.members = members
        self.member_cfg = members[0].cfg
        self.cfg = head_config(self.member_cfg, len(members))
        self.luts = members[0].luts
        self.prior = np.array(prior, np.int64)

    def tile_params(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's parallel pass: pixels (B, C, H, W) -> combined integer params (B, M*P, H, W)."""
        _no_label(labels)
        return combine_heads([m.tile_params(pixels) for m in self.members], self.member_cfg)

    def stepper(self, batch: int, height: int, width: int, device="cpu", labels=None) -> EnsembleStepper:
        _no_label(labels)
        return EnsembleStepper(self, batch, height, width, device)

    def wave_stepper(self, tiles: int, height: int, width: int, device="cpu", labels=None) -> EnsembleWave:
        _no_label(labels)
        return EnsembleWave(self, tiles, height, width, device)

    @property
    def device(self):
        """Where the members' tensors live (all on one device)."""
        return self.members[0].device

    def to(self, device) -> ExactEnsemble:
        for m in self.members:
            m.to(device)
        return self


class EnsembleStepper:
    """A raster stepper for an ensemble: one per member, advanced together, outputs combined."""

    def __init__(self, ens: ExactEnsemble, batch: int, height: int, width: int, device="cpu"):
        self.ens = ens
        self.steppers = [engines.stepper(m, batch, height, width, device) for m in ens.members]

    def start_row(self, i: int) -> None:
        for st in self.steppers:
            st.start_row(i)

    def params(self, j: int) -> torch.Tensor:
        return combine_heads([st.params(j) for st in self.steppers], self.ens.member_cfg)

    def params_int(self, j: int) -> np.ndarray:
        return self.params(j).to(torch.int64).cpu().numpy()

    def set_pixel(self, j: int, c: int, values) -> None:
        for st in self.steppers:
            st.set_pixel(j, c, values)


class EnsembleWave:
    """wavefront.WaveStepper for an ensemble: one per member (one plan: they share a config)."""

    def __init__(self, ens: ExactEnsemble, tiles: int, height: int, width: int, device="cpu"):
        self.ens = ens
        self.steppers = [engines.wave_stepper(m, tiles, height, width, device) for m in ens.members]
        self.start, self.lag = self.steppers[0].start, self.steppers[0].lag

    def advance(self, t: int) -> range:
        return [st.advance(t) for st in self.steppers][0]

    def params(self) -> torch.Tensor:
        return combine_heads([st.params() for st in self.steppers], self.ens.member_cfg)

    def params_int(self) -> np.ndarray:
        return self.params().to(torch.int64).cpu().numpy()

    def set_pixel(self, c: int, values) -> None:
        for st in self.steppers:
            st.set_pixel(c, values)


class FloatEnsemble(nn.Module):
    """The float members averaged (NLL, benchmarks): forward gives one mixture's head output whose
    logits are already each member's log-weights plus log(w_m / sum(w)), so `logistic_mixture_nll`
    with `cfg` (the combined head) is the NLL of the weighted average of the members."""

    def __init__(self, members: list[nn.Module], prior: list[int]):
        super().__init__()
        check_members([m.cfg for m in members], prior)
        self.members = nn.ModuleList(members)
        self.member_cfg = members[0].cfg
        self.cfg = head_config(self.member_cfg, len(members))
        self.log_prior = [math.log(p / sum(prior)) for p in prior]

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _no_label(labels)
        k = self.member_cfg.num_logistic_mix
        outs = []
        for m, lp in zip(self.members, self.log_prior):
            o = m(pixels).float()
            outs.append(torch.cat([F.log_softmax(o[:, :k], 1) + lp, o[:, k:]], 1))
        return combine_heads(outs, self.member_cfg)

    def nll(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logistic_mixture_nll(self(pixels, labels), pixels, self.cfg)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
