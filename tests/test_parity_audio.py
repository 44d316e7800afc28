"""Parity of the audio encoders: Whisper's encoder (+ its log-Mel feature extractor), wav2vec 2.0 and HuBERT
(+ waveform normalization). Tiny random checkpoints written by `transformers` load into encoderkit and give
the same hidden states (max abs diff <= 1e-5, fp32); the feature extractors match the reference's output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.processors.audio import LogMelProcessor, WaveformProcessor, mel_filter_bank

transformers = pytest.importorskip("transformers")


def _perturb(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "bias" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _waves(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = [np.arange(n) / 16000 for n in lengths]
    return [(0.3 * np.sin(2 * np.pi * (220 + 80 * i) * x) + 0.05 * rng.standard_normal(len(x))).astype(np.float32)
            for i, x in enumerate(t)]


# ---------------------------------------------------------------------------------------------- Whisper
def _whisper(folder):
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                                     decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=80,
                                     max_source_positions=50, vocab_size=99, pad_token_id=0, bos_token_id=1,
                                     eos_token_id=2, decoder_start_token_id=1)
    ref = transformers.WhisperModel(cfg)
    _perturb(ref)
    ref.eval().save_pretrained(folder)
    fe = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)  # 1 s -> 100 frames -> 50 positions
    fe.save_pretrained(folder)
    return ref, fe


def test_mel_filter_bank_matches_transformers():
    from transformers.audio_utils import mel_filter_bank as ref_bank

    want = ref_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                    sampling_rate=16000, norm="slaney", mel_scale="slaney")
    assert np.abs(mel_filter_bank(201, 80, 0.0, 8000.0, 16000) - want).max() < 1e-9


def test_whisper_log_mel_matches_feature_extractor():
    fe = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)
    ours = LogMelProcessor(chunk_length=1)
    for w in _waves(16000, 7000, 23000):  # exact, padded with silence, cut to the window
        want = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0]
        got = ours(w)
        assert got.shape == want.shape == (80, 100)
        assert np.abs(got - want).max() <= 1e-5


def test_whisper_encoder_matches_transformers(tmp_path):
    ref, fe = _whisper(tmp_path)
    enc = encoderkit.load(tmp_path)
    assert enc.modality == "audio"
    feats = torch.from_numpy(fe(_waves(16000, 9000), sampling_rate=16000, return_tensors="np")["input_features"])
    with torch.no_grad():
        want = ref.encoder(input_features=feats).last_hidden_state
        got = enc.model(input_features=feats)
    assert got.shape == want.shape == (2, 50, 32)
    assert (got - want).abs().max().item() <= 1e-5


def test_whisper_encode_pools_real_frames(tmp_path):
    ref, fe = _whisper(tmp_path)
    enc = encoderkit.load(tmp_path)
    waves = _waves(16000, 8000)
    got = enc.encode(waves)
    feats = torch.from_numpy(fe(waves, sampling_rate=16000, return_tensors="np")["input_features"])
    with torch.no_grad():
        h = ref.encoder(input_features=feats).last_hidden_state
    want = np.stack([h[0].mean(0).numpy(), h[1, :25].mean(0).numpy()])  # 8000 samples = 50 frames = 25 outputs
    assert np.abs(got - want).max() <= 1e-5


# ---------------------------------------------------------------------------------------------- wav2vec 2.0 / HuBERT
W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, conv_dim=(16, 16, 16),
           conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
CASES = {
    "wav2vec2-base": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, dict(feat_extract_norm="group")),
    "wav2vec2-large": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
                       dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    "hubert": (transformers.HubertConfig, transformers.HubertModel, dict(feat_extract_norm="group")),
    "hubert-no-proj-ln": (transformers.HubertConfig, transformers.HubertModel,
                          dict(feat_extract_norm="group", feat_proj_layer_norm=False, num_conv_pos_embeddings=15)),
}


def _w2v(name, folder):
    cfg_cls, model_cls, extra = CASES[name]
    torch.manual_seed(0)
    ref = model_cls(cfg_cls(**{**W2V, **extra}))
    _perturb(ref)
    ref.eval().save_pretrained(folder)
    return ref


@pytest.mark.parametrize("name", list(CASES))
def test_wav2vec2_family_matches_transformers(name, tmp_path):
    ref = _w2v(name, tmp_path)
    enc = encoderkit.load(tmp_path)
    x = torch.from_numpy(np.stack(_waves(4000, 4000)))
    with torch.no_grad():
        want = ref(input_values=x).last_hidden_state
        got = enc.model(input_values=x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5


def test_wav2vec2_padded_batch_with_mask_matches(tmp_path):
    ref = _w2v("wav2vec2-large", tmp_path)  # layer-norm models take an attention mask
    enc = encoderkit.load(tmp_path)
    x = torch.from_numpy(np.stack(_waves(4000, 4000)))
    mask = torch.ones_like(x, dtype=torch.long)
    x[1, 2500:] = 0
    mask[1, 2500:] = 0
    with torch.no_grad():
        want = ref(input_values=x, attention_mask=mask).last_hidden_state
        got = enc.model(input_values=x, attention_mask=mask)
    frames = enc.model.output_mask(mask, got.shape[1]).bool()
    assert frames[1].sum() < frames[0].sum()
    assert (got[frames] - want[frames]).abs().max().item() <= 1e-5


def test_waveform_normalization_matches_feature_extractor():
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    waves = _waves(3000, 5000)
    want = fe(waves, sampling_rate=16000, padding=True, return_tensors="np")
    got = WaveformProcessor().collate(WaveformProcessor().prepare(waves))
    assert np.abs(got["input_values"].numpy() - want["input_values"]).max() <= 1e-5
    assert (got["attention_mask"].numpy() == want["attention_mask"]).all()


def test_encode_resamples_and_matches_reference_on_the_resampled_wave(tmp_path):
    from scipy.signal import resample_poly

    ref = _w2v("hubert", tmp_path)
    enc = encoderkit.load(tmp_path)
    w8k = _waves(2000)[0]
    got = enc.encode((w8k, 8000))  # an (array, sampling_rate) pair at 8 kHz is resampled to 16 kHz
    w16 = resample_poly(w8k, 2, 1).astype(np.float32)
    x = torch.from_numpy(((w16 - w16.mean()) / np.sqrt(w16.var() + 1e-7)).astype(np.float32))[None]
    with torch.no_grad():
        want = ref(input_values=x).last_hidden_state.mean(1)[0].numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_legacy_weight_norm_names_are_renamed():
    from encoderkit.checkpoints.audio_family import rename_legacy_weight_norm

    out = rename_legacy_weight_norm({"encoder.pos_conv_embed.conv.weight_g": 1, "encoder.pos_conv_embed.conv.weight_v": 2})
    assert set(out) == {"encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                        "encoder.pos_conv_embed.conv.parametrizations.weight.original1"}


def test_legacy_weight_norm_checkpoint_loads_end_to_end(tmp_path):
    """A file whose positional conv is named weight_g / weight_v (pre-parametrization torch) loads and matches."""
    from safetensors.torch import load_file, save_file

    ref = _w2v("wav2vec2-base", tmp_path)
    st = load_file(str(tmp_path / "model.safetensors"))
    legacy = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
              for k, v in st.items()}
    assert any(k.endswith("weight_g") for k in legacy)
    save_file(legacy, str(tmp_path / "model.safetensors"))
    enc = encoderkit.load(tmp_path)
    x = torch.from_numpy(np.stack(_waves(4000)))
    with torch.no_grad():
        assert (enc.model(input_values=x) - ref(input_values=x).last_hidden_state).abs().max().item() <= 1e-5
