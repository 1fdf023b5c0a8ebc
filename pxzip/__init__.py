"""pxzip: lossless image compression with an exact (integer) PixelCNN entropy model."""

from pxzip import pil_plugin
from pxzip.codec import compress, decompress, decompress_image, decompress_many
from pxzip.errors import (
    ChecksumError,
    FormatError,
    ModelFileError,
    ModelNotFoundError,
    PxzError,
    UnsupportedImageError,
    UsageError,
)
from pxzip.zoo import load_model

pil_plugin.register()  # Image.open("x.pxz") / img.save("x.pxz") work after `import pxzip`

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "FormatError",
    "ModelFileError",
    "ModelNotFoundError",
    "PxzError",
    "UnsupportedImageError",
    "UsageError",
    "__version__",
    "compress",
    "decompress",
    "decompress_image",
    "decompress_many",
    "load_model",
]
