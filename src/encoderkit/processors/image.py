"""Image preprocessing as in `preprocessor_config.json`: decode -> RGB -> resize (Pillow) -> center crop ->
rescale (x / 255) -> normalize ((x - mean) / std) -> (3, H, W) float32.

Accepted inputs: a PIL image, a file path (str / Path), raw file bytes, or a numpy array (H, W) / (H, W, C)
of uint8 (0..255) or floats in [0, 1]. Grayscale, palette and CMYK images are converted to RGB; RGBA / LA
images are composited onto white first (as `transformers`' convert_to_rgb does). Anything else is an error
that names the input's index."""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def load_image(obj: Any, index: int = 0):
    """Any accepted image input -> an RGB PIL image; errors name the input index."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(obj, (str, Path)):
        p = Path(obj)
        if not p.is_file():
            shown = str(obj) if len(str(obj)) < 80 else str(obj)[:77] + "..."
            raise ValueError(f"input {index} is a string that is not an image file ({shown!r}); this encoder takes "
                             "images (PIL images, arrays or file paths), not text - use the model's text tower for text")
        try:
            img = Image.open(p)
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"input {index}: cannot decode image file {p}: {exc}") from None
    elif isinstance(obj, (bytes, bytearray)):
        try:
            img = Image.open(io.BytesIO(obj))
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"input {index}: cannot decode image bytes ({len(obj)} bytes): {exc}") from None
    elif isinstance(obj, Image.Image):
        img = obj
    elif isinstance(obj, (np.ndarray, torch.Tensor)):
        a = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        img = _array_to_pil(a, index)
    else:
        raise TypeError(f"input {index} is a {type(obj).__name__}; expected a PIL image, an array (H, W[, C]) "
                        "or an image file path")
    return to_rgb(img)


def _array_to_pil(a: np.ndarray, index: int):
    from PIL import Image

    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first -> channels-last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
        raise ValueError(f"input {index}: an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"input {index}: image array of dtype {a.dtype} is not a number array")
        lo, hi = float(np.min(a)), float(np.max(a))
        if np.issubdtype(a.dtype, np.floating) and lo >= 0 and hi <= 1:
            a = np.round(a * 255)
        elif lo < 0 or hi > 255:
            raise ValueError(f"input {index}: image values span [{lo:g}, {hi:g}]; expected uint8 0..255 or floats in [0, 1]")
        a = a.astype(np.uint8)
    return Image.fromarray(a)


def to_rgb(img):
    """Any PIL mode -> RGB; transparency is composited onto a white background."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


@dataclass
class ImageProcessor:
    """Resize / crop / rescale / normalize, read from a `preprocessor_config.json` (ViT, CLIP, SigLIP, Swin, ResNet)."""
    size: dict  # {"height", "width"} (resize to exactly that) or {"shortest_edge"} (keep aspect ratio)
    resample: int = 2  # PIL filter code: 2 bilinear, 3 bicubic
    do_resize: bool = True
    do_center_crop: bool = False
    crop_size: dict | None = None  # {"height", "width"}
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    crop_pct: float | None = None  # ConvNeXt-style: resize shortest edge to size / crop_pct, then crop (ResNet configs)
    modality: str = "image"

    @classmethod
    def from_dict(cls, d: dict, default_size: int = 224) -> "ImageProcessor":
        """Build from the fields of a preprocessor_config.json."""
        size = d.get("size", default_size)
        crop = d.get("crop_size")
        if isinstance(size, int):
            size = {"shortest_edge": size} if d.get("do_center_crop") else {"height": size, "width": size}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        if "shortest_edge" not in size and not ("height" in size and "width" in size):
            raise ValueError(f"preprocessor_config.json: unsupported size {size!r}; use height/width or shortest_edge")
        mean, std = d.get("image_mean", (0.5,) * 3), d.get("image_std", (0.5,) * 3)
        return cls(size=dict(size), resample=int(d.get("resample", 2)), do_resize=bool(d.get("do_resize", True)),
                   do_center_crop=bool(d.get("do_center_crop", False)), crop_size=crop,
                   do_rescale=bool(d.get("do_rescale", True)), rescale_factor=float(d.get("rescale_factor", 1 / 255)),
                   do_normalize=bool(d.get("do_normalize", True)),
                   image_mean=tuple(mean if isinstance(mean, (list, tuple)) else [mean] * 3),
                   image_std=tuple(std if isinstance(std, (list, tuple)) else [std] * 3), crop_pct=d.get("crop_pct"))

    @classmethod
    def from_folder(cls, folder: Path, default_size: int = 224) -> "ImageProcessor":
        """From folder/preprocessor_config.json, or a square resize to default_size with mean = std = 0.5 when absent."""
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls(size={"height": default_size, "width": default_size})
        try:
            return cls.from_dict(json.loads(path.read_text()), default_size)
        except ValueError as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None

    # ---------------------------------------------------------------- one image
    def _resize_to(self, w: int, h: int) -> tuple[int, int]:
        if "shortest_edge" in self.size:
            s = int(self.size["shortest_edge"])
            if self.crop_pct is not None and s < 384:
                s = int(s / self.crop_pct)
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(s * long / short)
            return (s, new_long) if w <= h else (new_long, s)  # (width, height)
        return int(self.size["width"]), int(self.size["height"])

    def __call__(self, img) -> np.ndarray:
        """An RGB PIL image -> (3, H, W) float32 pixel values."""
        from PIL import Image

        convnext = self.crop_pct is not None and "shortest_edge" in self.size  # ResNet / ConvNeXt processors
        s = int(self.size.get("shortest_edge", 0))
        if self.do_resize:
            wh = (s, s) if convnext and s >= 384 else self._resize_to(*img.size)
            img = img.resize(wh, resample=Image.Resampling(self.resample))
        x = np.asarray(img)  # (H, W, 3) uint8
        if self.do_resize and convnext and s < 384:  # resized to s / crop_pct, now crop s x s
            x = _center_crop(x, s, s)
        elif self.do_center_crop and self.crop_size:
            x = _center_crop(x, int(self.crop_size["height"]), int(self.crop_size["width"]))
        x = x.astype(np.float64) * self.rescale_factor if self.do_rescale else x.astype(np.float64)
        x = x.astype(np.float32)
        if self.do_normalize:
            x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)

    # ---------------------------------------------------------------- Encoder protocol
    def prepare(self, inputs: list) -> list[np.ndarray]:
        """Decode and preprocess every input; an undecodable or non-image input raises naming its index."""
        return [self(load_image(x, i)) for i, x in enumerate(inputs)]

    def is_single(self, inputs: Any) -> bool:
        """One image (PIL, path, bytes, (H, W[, C]) array) or a batch (list / tuple / (N, H, W, C) array)."""
        if isinstance(inputs, (np.ndarray, torch.Tensor)):
            return inputs.ndim <= 3
        return not isinstance(inputs, (list, tuple))

    def length(self, item: np.ndarray) -> int:
        return 1

    def collate(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.from_numpy(np.stack(items))}


def _center_crop(x: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """(H, W, C) -> (ch, cw, C) around the centre; zero-padded when the image is smaller (as transformers does)."""
    H, W = x.shape[:2]
    top, left = (H - ch) // 2, (W - cw) // 2
    if top >= 0 and left >= 0:
        return x[top:top + ch, left:left + cw]
    nh, nw = max(ch, H), max(cw, W)
    canvas = np.zeros((nh, nw) + x.shape[2:], x.dtype)
    tp, lp = math.ceil((nh - H) / 2), math.ceil((nw - W) / 2)
    canvas[tp:tp + H, lp:lp + W] = x
    top, left = (nh - ch) // 2, (nw - cw) // 2
    return canvas[top:top + ch, left:left + cw]
