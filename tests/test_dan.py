"""Deep averaging network (models/dan.py, train/recipes/dan.py): the average is mask-aware and leaves special tokens out, word dropout
only acts in training, the Encoder API and the run folder round-trip; (slow) contrastive training on STS-B
train pairs beats the bag-of-random-embeddings baseline on STS-B test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import data_path
from encoderkit.models.dan import DAN, DANConfig
from encoderkit.train.recipes.dan import dan_encoder, load_dan, load_tokenizer, save_dan, train_dan


def _tiny(**kw) -> DAN:
    torch.manual_seed(0)
    return DAN(DANConfig(vocab_size=50, embed_dim=8, hidden_size=12, num_layers=2, out_dim=6,
                         special_ids=(0, 1, 2), **kw))


def test_average_is_mask_aware_and_skips_special_tokens():
    m = _tiny().eval()
    ids = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0]])
    mask = (ids != 0).long()
    avg = m.average(ids, mask)
    E = m.embed.weight
    assert torch.allclose(avg[0], (E[5] + E[6]) / 2, atol=1e-6)
    assert torch.allclose(avg[1], E[7], atol=1e-6)
    # padding length does not matter
    assert torch.allclose(m(ids, mask)[:1], m(ids[:1, :4], mask[:1, :4]), atol=1e-6)
    # a sentence of special tokens only averages to zeros instead of NaN
    assert torch.equal(m.average(torch.tensor([[1, 2]]), None), torch.zeros(1, 8))
    # forward = out(tanh MLP(average))
    h = avg
    for layer in m.ff:
        h = layer(h)
    assert torch.allclose(m(ids, mask), m.out(h), atol=1e-6)
    assert m(ids, mask).shape == (2, 6)


def test_word_dropout_only_in_training_and_never_empties_a_sentence():
    m = _tiny(word_dropout=0.5)
    ids = torch.randint(3, 50, (200, 7))
    ids[:, 0] = 3  # every row has a real token
    mask = torch.ones_like(ids)
    m.eval()
    assert torch.equal(m.token_mask(ids, mask), (~torch.isin(ids, torch.tensor([0, 1, 2]))).float())
    m.train()
    torch.manual_seed(1)
    keep = m.token_mask(ids, mask)
    assert (keep.sum(1) >= 1).all()
    frac = keep.mean().item()
    assert 0.4 < frac < 0.65, frac  # about half dropped (rows that lost everything keep all)
    one = torch.tensor([[4, 0, 0]])
    for _ in range(20):
        assert m.token_mask(one, (one != 0).long()).sum() == 1
    with pytest.raises(ValueError, match="word_dropout"):
        DAN(DANConfig(word_dropout=1.0))


def test_encoder_api_and_run_folder_round_trip(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(0)
    model = DAN(DANConfig(vocab_size=tok.get_vocab_size(), embed_dim=16, hidden_size=24, out_dim=20))
    pairs = [("a man is playing a guitar", "a person plays the guitar"), ("the cat sleeps", "a cat is sleeping"),
             ("stocks fell sharply today", "markets dropped a lot today")]
    train_dan(model, tok, pairs, epochs=2, batch_size=3)
    assert not model.training
    enc = dan_encoder(model, tok)
    texts = ["a man is playing a guitar", "the cat sleeps", "an unseenword here"]
    X = enc.encode(texts)
    assert X.shape == (3, 20) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    single = enc.encode("the cat sleeps")
    assert np.allclose(single, X[1], atol=1e-6)
    save_dan(tmp_path / "run", model, summary={"note": "test"})
    back = load_dan(tmp_path / "run")
    assert np.allclose(back.encode(texts), X, atol=1e-6)
    assert back.dim == 20
    (tmp_path / "run" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_dan(tmp_path / "run")
    with pytest.raises(ValueError, match="at least 2 pairs"):
        train_dan(model, tok, pairs[:1])


@pytest.mark.slow
def test_dan_trained_contrastively_beats_random_embeddings_on_stsb():
    """10 epochs of symmetric InfoNCE (in-batch negatives) on the 1,406 STS-B train pairs with gold >= 4.
    Measured (seed 0): DAN 0.566 Spearman on STS-B test; the average of the same random embeddings before
    training 0.462; TF-IDF cosine 0.641; all-MiniLM-L6-v2 0.8203. 56 s of CPU (one thread), deterministic."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import dan_sts

    torch.set_num_threads(1)
    folder = data_path("stsbenchmark")
    res = dan_sts.main(["--data", str(folder), "--epochs", "10", "--temperature", "0.05", "--word-dropout", "0.3",
                        "--seed", "0"])
    assert res["dan_spearman"] >= res["random_average_spearman"] + 0.05, res
    assert res["dan_spearman"] >= 0.5, res
