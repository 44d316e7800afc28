"""Image preprocessing equals `transformers`' reference image processors (PIL backend) on the same inputs:
square resize (ViT), shortest-edge resize + center crop (CLIP), crop_pct resize + crop (ResNet / ConvNeXt),
and the RGB conversion of grayscale / RGBA / palette images."""
from __future__ import annotations

import numpy as np
import pytest

from encoderkit.processors.image import ImageProcessor, load_image

transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")


def _rgb(h: int, w: int, seed: int = 0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _ours(ref, folder) -> ImageProcessor:
    ref.save_pretrained(folder)
    return ImageProcessor.from_folder(folder)


REFERENCES = {
    "vit": lambda: transformers.ViTImageProcessorPil(size={"height": 48, "width": 48}),
    "clip": lambda: transformers.CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 36, "width": 36}),
    "siglip": lambda: transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
    "convnext": lambda: transformers.ConvNextImageProcessorPil(size={"shortest_edge": 48}, crop_pct=0.875),
    "convnext-large": lambda: transformers.ConvNextImageProcessorPil(size={"shortest_edge": 384}),
}


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("hw", [(64, 64), (50, 90), (120, 45)])
def test_image_processor_matches_reference(name, hw, tmp_path):
    ref = REFERENCES[name]()
    ours = _ours(ref, tmp_path)
    img = _rgb(*hw)
    want = ref(images=[img], return_tensors="np")["pixel_values"][0]
    got = ours(load_image(img))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_non_rgb_images_are_converted_like_convert_to_rgb(mode, tmp_path):
    ref = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ours = _ours(ref, tmp_path)
    rng = np.random.default_rng(1)
    if mode in ("RGBA", "LA"):
        base = Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA")
        img = base if mode == "RGBA" else base.convert("LA")
    else:
        img = _rgb(40, 40).convert(mode)
    want = ref(images=[img], return_tensors="np")["pixel_values"][0]  # do_convert_rgb composites alpha on white
    got = ours.prepare([img])[0]
    assert got.shape == (3, 32, 32)
    assert np.abs(got - want).max() <= 1e-5


def test_arrays_paths_and_bytes_give_the_same_pixels(tmp_path):
    proc = ImageProcessor(size={"height": 24, "width": 24})
    img = _rgb(30, 20)
    path = tmp_path / "x.png"
    img.save(path)
    a = np.asarray(img)
    items = proc.prepare([img, str(path), path.read_bytes(), a, a.astype(np.float32) / 255, np.moveaxis(a, -1, 0)])
    for it in items[1:]:
        assert np.abs(it - items[0]).max() <= 1e-6


def test_missing_preprocessor_config_uses_a_square_resize(tmp_path):
    proc = ImageProcessor.from_folder(tmp_path, default_size=16)
    assert proc.size == {"height": 16, "width": 16} and proc.prepare([_rgb(5, 9)])[0].shape == (3, 16, 16)
