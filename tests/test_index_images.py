"""Image collections: `encoderkit index add NAME ./images --model CLIP_DIR` stores the CLIP image tower's vectors
with path and thumbnail metadata; `encoderkit search NAME "text"` ranks them by the text tower's embedding.
The oracle is `transformers`' CLIPModel on a tiny random checkpoint (no download)."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from encoderkit.cli import main

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "car"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    d = tmp_path_factory.mktemp("clip")
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                   intermediate_size=40, vocab_size=len(vocab), eos_token_id=3,
                                                   pad_token_id=0, max_position_embeddings=16),
                                  vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                     intermediate_size=40, image_size=32, patch_size=8), projection_dim=16)
    ref = transformers.CLIPModel(cfg).eval()
    ref.save_pretrained(d)
    proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(d)
    return d, ref, proc, tok


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["a.png", "b.jpg", "sub/c.png", "d.PNG", "e.png"]
    for i, n in enumerate(names):
        arr = rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)
        PIL.fromarray(arr).save(d / n)
    (d / "notes.txt").write_text("not a picture", encoding="utf-8")
    (d / "broken.png").write_bytes(b"\x89PNG but not really")
    return d, names


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_add_images_and_search_them_with_text(clip_dir, images, tmp_path, capsys, monkeypatch):
    from encoderkit.store import Collection

    folder, ref, proc, tok = clip_dir
    imgdir, names = images
    store = tmp_path / "store"
    monkeypatch.chdir(tmp_path)  # the model is given as a relative path; the collection records the absolute one
    rel_model = os.path.relpath(folder, tmp_path)
    assert not Path(rel_model).is_absolute()

    code, out, err = _run(capsys, "index", "add", "pics", str(imgdir), "--model", rel_model, "--store", str(store),
                          "--json")
    rep = json.loads(out)
    assert code == 0 and rep["added"] == len(names) and rep["documents"] == len(names) and rep["modality"] == "image"
    skipped = {Path(e["path"]).name: e["error"] for e in rep["errors"]}
    assert set(skipped) == {"notes.txt", "broken.png"}
    assert "not an image file" in skipped["notes.txt"] and "cannot decode" in skipped["broken.png"]

    # the stored vectors are CLIP's image features (transformers), unit length
    col = Collection.open(store / "pics")
    assert col.meta["modality"] == "image" and col.meta["image_model"] == str(folder.resolve())
    ids, X = col.vectors()
    ids_want = [f"images/{n}" for n in names]
    assert sorted(ids) == sorted(ids_want)
    pil = [PIL.open(imgdir / i.split("/", 1)[1]).convert("RGB") for i in ids]
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=proc(images=pil, return_tensors="pt")["pixel_values"])
    want = _norm(getattr(want, "pooler_output", want).numpy())
    assert np.abs(X - want).max() <= 1e-5

    # metadata: path, a thumbnail file under the collection, and the data: URL the web page shows
    hit = col.get("images/sub/c.png")
    m = hit.metadata
    assert Path(m["path"]) == (imgdir / "sub" / "c.png").resolve()
    tp = Path(m["thumbnail_path"])
    assert tp.is_file() and tp.parent == (store / "pics" / "thumbs").resolve()
    with PIL.open(tp) as t:
        assert t.format == "JPEG" and max(t.size) <= 128
    assert m["thumbnail"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(m["thumbnail"].split(",", 1)[1]) == tp.read_bytes()
    col.close()

    # a text query goes through the text tower; the ranking equals transformers' cosine ranking
    query = "a photo of a red car"
    code, out, _ = _run(capsys, "search", "pics", query, "-k", "5", "--store", str(store), "--json")
    hits = json.loads(out)
    with torch.no_grad():
        t = ref.get_text_features(input_ids=torch.tensor([tok.encode(query).ids]))
    q = _norm(getattr(t, "pooler_output", t).numpy())[0]
    scores = want @ q
    order = [ids[i] for i in np.argsort(-scores)]
    assert code == 0 and [h["id"] for h in hits] == order
    assert np.allclose([h["score"] for h in hits], np.sort(scores)[::-1], atol=1e-5)
    assert hits[0]["metadata"]["thumbnail"].startswith("data:image/jpeg")

    # re-adding replaces (same ids), nothing doubles; a second add needs no --model
    code, out, _ = _run(capsys, "index", "add", "pics", str(imgdir), "--store", str(store), "--json")
    rep = json.loads(out)
    assert code == 0 and rep["added"] == len(names) and rep["documents"] == len(names)


def test_only_non_images_is_a_failure_naming_the_files(clip_dir, tmp_path, capsys):
    folder, *_ = clip_dir
    d = tmp_path / "docs"
    d.mkdir()
    (d / "readme.md").write_text("hello", encoding="utf-8")
    code, out, err = _run(capsys, "index", "add", "x", str(d), "--model", str(folder), "--store", str(tmp_path / "s"))
    assert code == 1
    assert "readme.md" in err and "not an image file" in err


def test_image_ingest_refuses_a_text_encoder(clip_dir, tmp_path):
    import encoderkit
    from encoderkit.store import Collection
    from encoderkit.store.images import ingest_images

    folder, *_ = clip_dir
    text = encoderkit.load(folder)
    col = Collection.open(tmp_path / "c", text)
    with pytest.raises(ValueError, match="does not embed images"):
        ingest_images(col, [tmp_path], text)
    col.close()


def test_a_collection_created_for_clip_takes_images_without_model_flag(clip_dir, images, tmp_path, capsys):
    folder, *_ = clip_dir
    imgdir, names = images
    store = str(tmp_path / "s")
    code, _, _ = _run(capsys, "index", "create", "pics", "--model", str(folder), "--store", store)
    assert code == 0
    code, out, _ = _run(capsys, "index", "add", "pics", str(imgdir), "--store", store, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["added"] == len(names) and rep["modality"] == "image"
    code, out, _ = _run(capsys, "search", "pics", "a photo of a dog", "-k", "2", "--store", store, "--json")
    assert code == 0 and len(json.loads(out)) == 2
