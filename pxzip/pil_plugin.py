"""Pillow plugin: `Image.open("x.pxz")`; `img.save("x.pxz", ...)` with the options of `pxzip.compress`."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFile, ImagePalette

from pxzip import codec, container, metadata
from pxzip.errors import FormatError

FORMAT = "PXZ"


def _accept(prefix: bytes) -> bool:
    return prefix[:2] == container.MAGIC


class PxzImageFile(ImageFile.ImageFile):
    """Reads the header at open (size, mode, palette); decodes the pixels on load()."""

    format = FORMAT
    format_description = "pxzip lossless PixelCNN image"

    def _open(self) -> None:
        data = self.fp.read()
        try:
            header, _ = container.unpack(data)
        except FormatError as e:  # Pillow's "not my format" signal; Image.open then tries the others
            raise SyntaxError(str(e)) from None
        self._size = (header.width, header.height)
        self._mode = header.mode
        if header.mode == "P":
            self.palette = ImagePalette.raw("RGB", header.palette or b"")
            from pxzip.planes import to_pil

            probe = to_pil("P", np.zeros((1, 1), np.uint8), header.palette, header.transparency)
            if "transparency" in probe.info:
                self.info["transparency"] = probe.info["transparency"]
        metadata.apply(self, header.metadata)  # info["icc_profile"], ["exif"], ["xmp"]; .text
        if header.label is not None:
            self.info["label"] = header.label  # the class label of a class-conditional model
        tile = getattr(ImageFile, "_Tile", tuple)  # a NamedTuple in recent Pillow, a tuple before
        self.tile = (
            [tile((FORMAT, (0, 0) + self.size, 0, (data,)))]
            if tile is tuple
            else [tile(FORMAT, (0, 0) + self.size, 0, (data,))]
        )


class PxzDecoder(ImageFile.PyDecoder):
    """Decodes a whole .pxz file at once (the args carry the file's bytes)."""

    _pulls_fd = False

    def decode(self, buffer):
        (data,) = self.args
        pixels = codec.decompress(data)
        mode = self.mode
        if mode == "1":
            raw, rawmode = (pixels.astype(np.uint8) * 255).tobytes(), "1;8"  # a byte per pixel
        else:
            raw, rawmode = np.ascontiguousarray(pixels).tobytes(), mode
        self.set_as_raw(raw, rawmode)
        return -1, 0


def _save(im: Image.Image, fp, filename) -> None:
    """Save options: model (name, path or list), tile, order ("auto", "wavefront", "raster"), metadata
    (False: do not keep ICC/EXIF/XMP/text), label (class-conditional models: a class number or "auto"),
    adapt (False: no head offsets, a file that pxzip before format 5 reads), fallback (False: the network
    codes every plane, a file that pxzip before format 6 reads), device ("auto", "cpu", "cuda[:N]": where
    the network runs; the same bytes on each)."""
    info = im.encoderinfo
    keep, adapt, fb = info.get("metadata", True), info.get("adapt", True), info.get("fallback", True)
    tile, label, order, dev = info.get("tile"), info.get("label"), info.get("order", "auto"), info.get("device", "auto")
    data = codec.compress(
        im,
        info.get("model"),
        tile=tile,
        keep_metadata=keep,
        label=label,
        order=order,
        adapt=adapt,
        fallback=fb,
        device=dev,
    )
    fp.write(data)


def register() -> None:
    Image.register_open(FORMAT, PxzImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".pxz")
    Image.register_decoder(FORMAT, PxzDecoder)
