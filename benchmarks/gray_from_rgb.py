"""Write the gray model that an RGB PixelCNN++ starts a gray run from, without training it.

    python benchmarks/gray_from_rgb.py pxz-rgb-photo models/pxz-gray-photo.safetensors --name pxz-gray-photo

The same weights `pxzip train --gray --init MODEL` starts from (`pxzip.train_cli.gray_from_rgb`):
on a gray image the model predicts what the RGB model predicts for the red channel.
"""

from __future__ import annotations

import argparse
import dataclasses

from pxzip import zoo
from pxzip.model import PixelCNN
from pxzip.train_cli import gray_from_rgb


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--name", required=True)
    a = p.parse_args()
    src = zoo.load_model(a.model).float_model()
    state = src.unconditional_state() if src.cfg.num_classes else src.state_dict()
    gray = PixelCNN(dataclasses.replace(src.cfg, in_channels=1, num_classes=0))
    gray.load_state_dict(gray_from_rgb(state, src.cfg))
    print(a.out, zoo.save_model(a.out, gray, a.name))


if __name__ == "__main__":
    main()
