"""#16 "training curves (curves.png) for each recipe": `encoderkit train contrastive` writes them with its model
card, as retrieval, cross-encoder, colbert and splade do (the Trainer-run recipes write them in their run folder)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from encoderkit.checkpoints.hub import packaged_folder

transformers = pytest.importorskip("transformers")
pytest.importorskip("matplotlib")


def test_contrastive_recipe_writes_curves(tmp_path):
    from encoderkit.cli import main

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).eval().save_pretrained(tmp_path / "bert")
    src = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, tmp_path / "bert" / f)
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"question {i} about topic {i}\tanswer {i} on topic {i}\n" for i in range(16)))
    out = tmp_path / "run"
    assert main(["train", "contrastive", "--data", str(data), "--model", str(tmp_path / "bert"), "-o", str(out),
                 "--batch-size", "4", "--epochs", "2", "--no-progress"]) == 0
    for name in ("curves.png", "training_history.json", "README.md"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "training_history.json").read_text())) == 2


def test_clip_recipe_writes_curves(tmp_path):
    from encoderkit.cli import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), y=np.arange(60) % 10)
    out = tmp_path / "run"
    assert main(["train", "clip", "--data", str(tmp_path / "d.npz"), "-o", str(out), "--holdout", "20",
                 "--epochs", "2", "--batch-size", "20", "--no-progress", "--json"]) == 0
    assert (out / "curves.png").is_file()
