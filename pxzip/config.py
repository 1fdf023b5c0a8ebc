"""Model configuration: the knobs of the PixelCNN family, saved inside every weights file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

ARCHS = ("pixelcnnpp", "gated")
HEADS = ("", "bernoulli")  # "": the arch's own head; "bernoulli": one logit per pixel (bilevel planes of 0/255)
# log-scale range of the logistic mixture: the float loss floors at the minimum (as PixelCNN++),
# the exact tables clamp to both ends (their inverse-scale lookup table spans exactly this range)
LOG_SCALE_MIN, LOG_SCALE_MAX = -7, 7


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "pixelcnnpp"  # "pixelcnnpp": gated resnet + logistic mixture; "gated": Gated PixelCNN + 256-way softmax
    in_channels: int = 3  # colour channels of the coded plane: 3 (RGB) or 1 (gray)
    num_filters: int = 64  # feature maps per stream (F)
    num_resnet: int = 4  # residual / gated blocks per stream
    num_hierarchies: int = 1  # resolutions; format 1's exact coder supports 1 (no down/up-sampling)
    num_logistic_mix: int = 5  # mixture components K of the pixelcnnpp head (ignored by "gated")
    kernel_size: int = 3  # odd k: vertical stack sees a k-wide band of rows above, horizontal stack k//2 pixels left
    dropout_p: float = 0.0  # dropout inside pixelcnnpp blocks, training only
    act_bits: int = 10  # exact model: fractional bits of every activation (fixed point 2**-act_bits)
    weight_bits: int = 12  # exact model: |integer weight| < 2**weight_bits per output channel
    num_classes: int = 0  # class-conditional with labels 0..N-1, plus label N = "no label" (0: unconditional)
    head: str = ""  # "": the arch's head (256-way softmax / logistic mixture); "bernoulli": P(white) per pixel

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r} (choose from {', '.join(ARCHS)})")
        if self.in_channels not in (1, 3):
            raise ValueError("in_channels must be 1 or 3")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and >= 3")
        if self.num_hierarchies != 1:
            raise ValueError("num_hierarchies > 1 is not supported by the exact coder (format 1)")
        if not 0 <= self.num_classes <= 255:
            raise ValueError("num_classes must be in 0..255 (a file stores the label in one byte)")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r} (choose from {', '.join(repr(h) for h in HEADS)})")
        if self.head == "bernoulli" and (self.arch != "gated" or self.in_channels != 1):
            raise ValueError("a bernoulli head needs arch 'gated' and in_channels 1 (bilevel planes)")
        if self.num_filters < self.in_channels or self.num_resnet < 1 or self.num_logistic_mix < 1:
            raise ValueError("num_filters, num_resnet and num_logistic_mix must be positive")

    @property
    def num_params_out(self) -> int:
        """Channels of the head's output per pixel."""
        c, k = self.in_channels, self.num_logistic_mix
        if self.bilevel:
            return 1  # the logit of "white" (255)
        if self.arch == "gated":
            return 256 * c
        return k * (1 + 2 * c + (3 if c == 3 else 0))  # logits, means, log-scales, RGB coefficients

    @property
    def bilevel(self) -> bool:
        """A model of planes holding only 0 and 255 (mode "1" images)."""
        return self.head == "bernoulli"

    @property
    def null_label(self) -> int:
        """The label meaning "no label" (what files without a label are coded with)."""
        return self.num_classes

    def to_json(self) -> str:
        d = asdict(self)
        if not self.num_classes:
            del d["num_classes"]  # unconditional configs keep the JSON they had before labels existed
        if not self.head:
            del d["head"]  # likewise for the configs from before bilevel heads
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**raw)
