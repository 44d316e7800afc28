"""`encoderkit.load(RUN)` opens the folders `encoderkit train` writes: a DAN run is a text Encoder, an image run
(AE here) gives the run whose encode() returns the codes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.models.autoencoder import AEConfig, Autoencoder
from encoderkit.models.dan import DAN, DANConfig
from encoderkit.train.recipes.dan import dan_encoder, load_tokenizer, save_dan
from encoderkit.train.run import is_run_folder, save_run


def test_dan_run_folder_loads_as_text_encoder(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(0)
    model = DAN(DANConfig(vocab_size=tok.get_vocab_size(), embed_dim=16, hidden_size=24, out_dim=20)).eval()
    texts = ["a man plays a guitar", "the cat sleeps"]
    expect = dan_encoder(model, tok).encode(texts)
    save_dan(tmp_path / "dan", model)
    assert is_run_folder(tmp_path / "dan")
    enc = encoderkit.load(tmp_path / "dan")
    assert np.allclose(enc.encode(texts), expect, atol=1e-6)
    q = encoderkit.load(str(tmp_path / "dan"), compute="int8")
    v = q.encode(texts)
    assert q.compute == "int8" and v.shape == expect.shape and ((v * expect).sum(1) > 0.9).all()


def test_image_run_folder_gives_its_codes(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(input_dim=784, hidden=(32,), latent=8)).eval()
    save_run(tmp_path / "ae", ae, recipe="ae", data={"input_shape": [784], "scale": 255.0})
    run = encoderkit.load(tmp_path / "ae")
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    codes = run.encode(x)
    with torch.no_grad():
        z = ae.encode(torch.from_numpy(x.reshape(5, -1).astype(np.float32) / 255.0))
    z = z[0] if isinstance(z, tuple) else z
    assert codes.shape == (5, 8) and np.allclose(codes, z.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="compute='int8' applies to transformer encoders only"):
        encoderkit.load(tmp_path / "ae", compute="int8")


def test_not_a_run_folder(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert not is_run_folder(tmp_path)
    assert not is_run_folder(tmp_path / "missing")
