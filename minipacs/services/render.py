"""Rendered images of stored frames (PS3.18 §8.3.5 rendered resources, thumbnails).

Decoding is pydicom's (any syntax its installed decoders read); the grayscale pipeline is
PS3.3 C.11: Modality LUT (rescale), then VOI LUT (the request's window, else the data
set's first window or VOI LUT, else the frame's range), then MONOCHROME1 inverted so that
the result is a display-ready 8-bit image; colour frames are taken as RGB. Pillow scales it
into the viewport (aspect kept) and encodes JPEG or PNG. Blocking: call it from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO, Final

from .pixels import FrameError

__all__ = ["MEDIA_TYPES", "RenderError", "RenderOptions", "render_frame"]

MEDIA_TYPES: Final = {"image/jpeg": "JPEG", "image/png": "PNG"}
DEFAULT_QUALITY: Final = 90
MAX_VIEWPORT: Final = 4096


class RenderError(Exception):
    """The frame cannot be rendered (not an image, or no decoder for its syntax)."""


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What the request asked for (PS3.18 Table 8.3.5-1): all optional."""

    frame: int = 1
    viewport: tuple[int, int] | None = None  # the largest width and height
    quality: int = DEFAULT_QUALITY
    window: tuple[float, float] | None = None  # center, width (linear)
    media_type: str = "image/jpeg"


def _window(ds: Any, arr: Any, options: RenderOptions) -> Any:
    """VOI LUT per PS3.3 C.11.2.1.2 (linear), to 0..255 floats."""
    import numpy as np
    from pydicom.pixels import apply_voi_lut

    if options.window is not None:
        center, width = options.window
    elif "WindowCenter" in ds and "WindowWidth" in ds:  # the first window (PS3.3 C.11.2)
        center, width = (float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth)))
    elif "VOILUTSequence" in ds:
        try:
            out = apply_voi_lut(arr, ds, index=0).astype(np.float64)
        except Exception as exc:
            raise RenderError(f"cannot apply the VOI LUT: {exc}") from exc
        low, high = float(out.min()), float(out.max())
        return (out - low) * (255.0 / (high - low)) if high > low else np.zeros_like(out)
    else:
        low, high = float(arr.min()), float(arr.max())
        center, width = (low + high) / 2, max(high - low, 1.0)
    width = max(width, 1.0)
    scaled = ((arr - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(scaled, 0, 255)


def _first(value: Any) -> Any:
    """The first of a multi-valued element's values (pydicom gives a MultiValue)."""
    from pydicom.multival import MultiValue

    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def render_frame(fp: BinaryIO, options: RenderOptions) -> bytes:
    """One frame of the Part 10 file `fp` as an encoded image of `options.media_type`."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, pixel_array

    try:
        ds = dcmread(fp)
    except Exception as exc:
        raise RenderError(f"cannot read the stored file: {type(exc).__name__}") from exc
    if "PixelData" not in ds:
        raise FrameError("the instance has no Pixel Data", missing=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= options.frame <= frames:
        raise FrameError(f"frame {options.frame} does not exist: the instance has {frames}",
                         missing=True)
    try:
        arr = pixel_array(ds, index=options.frame - 1, as_rgb=True)
    except Exception as exc:
        raise RenderError(f"cannot decode the pixel data: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 2:  # grayscale: PS3.3 C.11 pipeline
        values = apply_modality_lut(arr, ds).astype(np.float64)
        shown = _window(ds, values, options)
        if photometric == "MONOCHROME1":
            shown = 255.0 - shown
        image = Image.fromarray(shown.astype(np.uint8))
    else:
        if arr.dtype != np.uint8:
            top = float(arr.max()) or 1.0
            arr = (arr.astype(np.float64) * (255.0 / top)).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    if options.viewport is not None:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = BytesIO()
    kind = MEDIA_TYPES[options.media_type]
    if kind == "JPEG":
        image.save(out, kind, quality=options.quality)
    else:
        image.save(out, kind)
    return out.getvalue()
