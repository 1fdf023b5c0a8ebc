"""Which torch device runs the exact network: "auto", "cpu" or "cuda[:N]", checked with a one-line error.

The device only decides where the float64 sums of the integer network run. The bytes do not depend
on it: every sum is exact below 2**52 on any device (README "How exactness works"), and everything
after the network (the head outputs' tables, the head-offsets fit, the range coder) runs on the CPU
from the same integers.
"""

from __future__ import annotations

import re

import torch

from pxzip.errors import UsageError

CHOICES = "auto, cpu, cuda or cuda:N"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve(device: str | torch.device | None = "auto") -> torch.device:
    """A device name -> torch.device. "auto" (or None): the first CUDA device when there is one, else
    the CPU. A CUDA device that this machine lacks is a UsageError (exit code 2), never a silent CPU."""
    if isinstance(device, torch.device):
        device = str(device)
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(name)
    if not m:
        raise UsageError(f"device {device!r}: expected {CHOICES}")
    if not torch.cuda.is_available():
        build = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, no GPU visible"
        raise UsageError(f"device {device!r}: this machine has no CUDA device (torch {torch.__version__}, {build})")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
