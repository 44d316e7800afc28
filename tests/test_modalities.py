"""Encoder.encode across modalities: images (PIL / arrays / paths) and audio (waveforms / (array, rate) pairs /
files) through the same batching loop, the bad inputs of issue #5 (each a clear error naming the input's index,
or a documented conversion), and CodeBERT as a plain RoBERTa checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoderkit

transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    ref = transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                       intermediate_size=40, image_size=32, patch_size=8)).eval()
    ref.save_pretrained(folder)
    transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder, ref


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hubert")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=40,
                                    conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                                    num_conv_pos_embedding_groups=4)
    transformers.HubertModel(cfg).eval().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def _img(seed=0, size=(40, 30)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8))


def _wave(n=3200, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


# ---------------------------------------------------------------------------------------------- images
def test_vit_encoder_takes_pil_arrays_and_paths_and_matches_the_cls_token(vit_dir, tmp_path):
    folder, ref = vit_dir
    enc = encoderkit.load(folder)
    assert enc.modality == "image" and enc.pooling == "cls" and enc.dim == 32
    imgs = [_img(0), _img(1, (64, 64)), _img(2, (20, 50))]
    path = tmp_path / "two.png"
    imgs[2].save(path)
    got = enc.encode([imgs[0], np.asarray(imgs[1]), str(path)], batch_size=2)
    px = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = ref(pixel_values=px).last_hidden_state[:, 0].numpy()
    assert got.shape == (3, 32) and np.abs(got - want).max() <= 1e-5
    one = enc.encode(imgs[0])  # a single image gives one vector
    assert one.shape == (32,) and np.abs(one - want[0]).max() <= 1e-5


def test_grayscale_and_rgba_images_are_converted_to_rgb(vit_dir):
    enc = encoderkit.load(vit_dir[0])
    rgb = _img(3)
    gray = rgb.convert("L")
    rgba = rgb.convert("RGBA")  # fully opaque: same pixels as rgb after compositing on white
    out = enc.encode([gray, gray.convert("RGB"), rgba, rgb])
    assert np.abs(out[0] - out[1]).max() <= 1e-6
    assert np.abs(out[2] - out[3]).max() <= 1e-6


def test_undecodable_image_names_its_index(vit_dir, tmp_path):
    enc = encoderkit.load(vit_dir[0])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"input 1: cannot decode image file .*broken\.jpg"):
        enc.encode([_img(), bad])


def test_text_given_to_an_image_encoder_names_its_index(vit_dir):
    enc = encoderkit.load(vit_dir[0])
    with pytest.raises(ValueError, match=r"input 2 is a string that is not an image file .*not text"):
        enc.encode([_img(), _img(1), "a photo of a cat"])
    with pytest.raises(TypeError, match="input 0 is a dict"):
        enc.encode([{"text": "x"}])


# ---------------------------------------------------------------------------------------------- audio
def test_audio_encoder_takes_arrays_pairs_tensors_and_files(hubert_dir, tmp_path):
    import soundfile

    enc = encoderkit.load(hubert_dir)
    assert enc.modality == "audio"
    w = _wave()
    soundfile.write(tmp_path / "a.wav", w, 16000, subtype="FLOAT")
    out = enc.encode([w, (w, 16000), torch.from_numpy(w), str(tmp_path / "a.wav"), {"array": w, "sampling_rate": 16000}])
    assert out.shape == (5, 32)
    assert np.abs(out - out[0]).max() <= 1e-5


def test_wrong_sample_rate_is_resampled(hubert_dir, tmp_path):
    import soundfile

    enc = encoderkit.load(hubert_dir)
    w16 = _wave(3200)
    w8 = w16[::2].copy()
    soundfile.write(tmp_path / "b.wav", w8, 8000, subtype="FLOAT")
    from_pair, from_file = enc.encode([(w8, 8000), tmp_path / "b.wav"])
    assert np.abs(from_pair - from_file).max() <= 1e-5  # both resampled to 16 kHz the same way
    assert not np.allclose(from_pair, enc.encode(w8), atol=1e-3)  # treating 8 kHz audio as 16 kHz would differ


def test_bad_audio_inputs_name_their_index(hubert_dir, tmp_path):
    import soundfile

    enc = encoderkit.load(hubert_dir)
    with pytest.raises(ValueError, match="input 1 is an empty waveform"):
        enc.encode([_wave(), np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="input 1: waveform of shape \\(2, 3200\\) has several channels"):
        enc.encode([_wave(), np.stack([_wave(), _wave(seed=1)])])
    soundfile.write(tmp_path / "stereo.wav", np.stack([_wave(), _wave(seed=1)], axis=1), 16000)
    with pytest.raises(ValueError, match="input 0: .*stereo.wav has 2 channels"):
        enc.encode([tmp_path / "stereo.wav"])
    with pytest.raises(ValueError, match="input 0 is a string that is not an audio file"):
        enc.encode(["hello there"])
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(ValueError, match="input 2: cannot decode audio file"):
        enc.encode([_wave(), _wave(seed=2), tmp_path / "junk.wav"])
    with pytest.raises(ValueError, match="input 0: waveform contains NaN"):
        enc.encode([np.full(800, np.nan, np.float32)])


def test_text_model_refuses_another_modality(vit_dir):
    with pytest.raises(ValueError, match="image model; it cannot embed text"):
        encoderkit.load(vit_dir[0], modality="text")


# ---------------------------------------------------------------------------------------------- CodeBERT
def test_codebert_is_a_roberta_checkpoint(tmp_path):
    """CodeBERT (microsoft/codebert-base) is RoBERTa trained on code: config model_type "roberta", a byte-level
    BPE tokenizer. A RoBERTa-config code model with its own code tokenizer loads and encodes code unchanged."""
    from tokenizers import ByteLevelBPETokenizer

    code = ["def add(a, b):\n    return a + b", "for (int i = 0; i < n; ++i) { sum += x[i]; }",
            "SELECT name FROM users WHERE id = 42;", "fn main() { println!(\"hi\"); }"] * 20
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(code, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = __import__("tokenizers").processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=40, max_position_embeddings=130,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    ref = transformers.RobertaModel(cfg).eval()
    ref.save_pretrained(tmp_path)
    enc = encoderkit.load(tmp_path)
    assert enc.family.name == "BERT family" and enc.config.model_type == "roberta"
    snippets = code[:3]
    got = enc.encode(snippets)
    ids = [tok.encode(s).ids for s in snippets]
    T = max(map(len, ids))
    x = torch.tensor([i + [1] * (T - len(i)) for i in ids])
    mask = (torch.arange(T)[None] < torch.tensor([len(i) for i in ids])[:, None]).long()
    with torch.no_grad():
        h = ref(input_ids=x, attention_mask=mask).last_hidden_state
    want = ((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
    assert np.abs(got - want).max() <= 1e-5


# ---------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_with_clip_equals_the_reference_softmax(tmp_path):
    from encoderkit.tasks.zero_shot import ZeroShotClassifier
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["a", "photo", "of", "cat", "dog", "bird"]
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                   intermediate_size=40, vocab_size=len(vocab), eos_token_id=3,
                                                   pad_token_id=0, max_position_embeddings=16),
                                  vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                     intermediate_size=40, image_size=32, patch_size=8), projection_dim=16)
    ref = transformers.CLIPModel(cfg).eval()
    ref.save_pretrained(tmp_path)
    proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(tmp_path)
    labels = ["cat", "dog", "bird"]
    clf = ZeroShotClassifier.from_pretrained(tmp_path, template="a photo of a {}")
    imgs = [_img(0), _img(1, (50, 70))]
    res = clf(imgs, labels)
    ids = [tok.encode(f"a photo of a {lab}").ids for lab in labels]
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), pixel_values=proc(images=imgs, return_tensors="pt")["pixel_values"])
    want = out.logits_per_image.softmax(-1).numpy()
    assert np.abs(res.scores - want).max() <= 1e-5
    assert res.predictions == [labels[i] for i in want.argmax(1)]


def test_zero_shot_with_a_text_encoder_and_the_cli(capsys):
    """Text-only zero-shot with the real all-MiniLM-L6-v2 (from its PyPI package), through the CLI."""
    import json

    from encoderkit.cli import main

    try:
        encoderkit.load()
    except Exception as exc:  # the packaged default model is absent
        pytest.skip(f"default model not available: {exc}")
    texts = ["The striker scored twice in the cup final.", "Whisk the eggs, then fold in the flour and bake.",
             "The central bank raised interest rates again."]
    code = main(["classify", "-m", "sentence-transformers/all-MiniLM-L6-v2", "--labels", "football,baking,economics",
                 "--template", "This text is about {}.", "--top-k", "2", "--json", *texts])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in out["results"]] == ["football", "baking", "economics"]
    assert all(len(r["top"]) == 2 for r in out["results"])


# ---------------------------------------------------------------------------------------------- linear encoders
def test_pca_encoder_equals_scikit_learn_on_mnist():
    from sklearn.decomposition import PCA as SkPCA

    from conftest import data_path
    from encoderkit.datasets.mnist import load_mnist
    from encoderkit.baselines import pca_encoder

    images, _ = load_mnist(data_path("mnist"))
    x = images[:2000].reshape(2000, -1).astype(np.float64) / 255.0
    enc = pca_encoder(x, 16)
    ref = SkPCA(n_components=16, svd_solver="full").fit(x)
    got = enc.encode(list(images[8000:8300] / 255.0), batch_size=64)  # 28x28 arrays are flattened
    want = ref.transform(images[8000:8300].reshape(300, -1).astype(np.float64) / 255.0)
    assert np.abs(enc.model.inner.components.numpy() - ref.components_).max() <= 1e-6
    assert np.abs(enc.model.inner.explained_variance.numpy() - ref.explained_variance_).max() <= 1e-6
    # float64 inside; encode() returns float32, so compare to float32 resolution of the largest coordinate
    assert np.abs(got - want).max() <= 1e-6 * max(1.0, np.abs(want).max())


def test_one_hot_and_embedding_lookup_encoders():
    from encoderkit.baselines import embedding_encoder, one_hot_encoder

    oh = one_hot_encoder(["red", "green", "blue"])
    assert (oh.encode(["blue", "red"]) == np.array([[0, 0, 1], [1, 0, 0]], np.float32)).all()
    with pytest.raises(ValueError, match="input 1: unknown category 'pink'"):
        oh.encode(["red", "pink"])
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    emb = embedding_encoder(["a", "b", "<unk>"], 4, weight=table, unknown="<unk>")
    assert (emb.encode(["b", "zzz"]) == table[[1, 2]]).all()
    assert emb.encode("a").shape == (4,)
