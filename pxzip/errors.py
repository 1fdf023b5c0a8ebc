"""Every pxzip error class and the process exit code it maps to.

Exit codes:

    ====  ===========================  ================================================
    code  error                        meaning
    ====  ===========================  ================================================
    0     (none)                       success
    1     PxzError                     any other pxzip failure
    2     UsageError                   bad arguments; output exists without --force
    3     FormatError                  not a pxz file, corrupt, truncated, unsupported
                                       format version or absurd declared sizes
    4     ModelNotFoundError           the file was made with a model not installed
    5     UnsupportedImageError        image mode refused (16-bit, CMYK, float, ...)
                                       or the image could not be read
    6     ChecksumError                decoded pixels do not match the stored CRC32
    7     ModelFileError               weights file tampered, hash mismatch or bad
                                       metadata
    130   (KeyboardInterrupt)          interrupted by the user
    ====  ===========================  ================================================

``str(error)`` is always a single line meant to be shown to the user as is.
"""


class PxzError(Exception):
    """Base of all pxzip errors; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(PxzError):
    """Bad arguments, or the output exists and --force was not given."""

    exit_code = 2


class FormatError(PxzError):
    """Input is not a readable .pxz file (corrupt, truncated, newer version, ...)."""

    exit_code = 3


class ModelNotFoundError(PxzError):
    """The file names a model whose weights are not installed."""

    exit_code = 4


class UnsupportedImageError(PxzError):
    """The image mode or array type is one pxzip refuses, or the image is unreadable."""

    exit_code = 5


class ChecksumError(PxzError):
    """Decoded pixels do not match the checksum stored in the file."""

    exit_code = 6


class ModelFileError(PxzError):
    """A weights file fails its hash check or carries bad metadata."""

    exit_code = 7


def describe(e: BaseException) -> str:
    """A foreign exception (Pillow, libwebp, ...) as one line for a message: its text with the
    whitespace collapsed, or its class name when it has none."""
    return " ".join(str(e).split()) or type(e).__name__
