"""The exact network's step-by-step engines, by device: compiled kernels on the CPU, torch ops elsewhere.

Both kinds compute the same integers (tests/test_kernels.py, tests/test_device.py); this module only
picks one, so that exact.py (the network in integers) needs neither raster.py nor wavefront.py, which
build on it.
"""

from __future__ import annotations

import torch

from pxzip import raster, wavefront
from pxzip.exact import ExactModel, TorchStepper


def stepper(em, batch: int, height: int, width: int, device="cpu", labels=None):
    """A cached raster-order executor for `batch` tiles of this shape (the decoder's engine).

    em: an ExactModel, or an ensemble (which builds one per member through this function)."""
    if not isinstance(em, ExactModel):
        return em.stepper(batch, height, width, device, labels)
    if torch.device(device).type == "cpu":
        return raster.Stepper(em, batch, height, width, labels)  # compiled kernels
    return TorchStepper(em, batch, height, width, device, labels)


def wave_stepper(em, tiles: int, height: int, width: int, device="cpu", labels=None):
    """A wavefront-order executor for `tiles` tiles of this shape (the format-4 decoder's engine)."""
    if not isinstance(em, ExactModel):
        return em.wave_stepper(tiles, height, width, device, labels)
    if torch.device(device).type == "cpu":
        return wavefront.WaveStepper(em, tiles, height, width, labels)  # compiled kernels
    return wavefront.TorchWaveStepper(em, tiles, height, width, device, labels)
