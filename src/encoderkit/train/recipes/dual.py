"""Train a CLIP / SigLIP dual encoder from scratch on (image, caption) pairs and save a Hugging Face folder
(`encoderkit train clip|siglip --data MNIST_DIR --out FOLDER`); the folder loads with `encoderkit.load` and
`ZeroShotClassifier.from_pretrained` like a downloaded checkpoint.

    image tower: ViT (CLIP: CLS + projection; SigLIP: attention-pooled tokens)
    text tower:  word-level tokenizer built from the captions + a small transformer
    loss:        CLIPLoss / SigLIPLoss from encoderkit.objectives.contrastive

Why a `positives` choice: with few distinct captions (10 digit classes), a batch of 128 holds ~13 pairs per
class, so the standard one-hot targets call the same caption a negative of 12 matching images. "group" (the
default when groups are given) marks every pair of the same group as a positive (multi-positive CLIP / SigLIP);
"caption" does so only for identical caption strings; "diagonal" is the standard loss."""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from encoderkit.train.recipes import add_output_argument, register_recipe

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


@dataclass
class DualModelConfig:
    style: str = "clip"  # "clip" (softmax over the batch) | "siglip" (pairwise sigmoid)
    image_size: int = 28  # square input images
    patch_size: int = 7  # ViT patch side (28 / 7 -> 16 tokens; 4 -> 49 tokens learned slower per CPU second)
    hidden_size: int = 64  # H of both towers (and the CLIP projection)
    vision_layers: int = 3  # ViT depth
    text_layers: int = 1  # text transformer depth (captions are a handful of words)
    num_heads: int = 4  # attention heads in both towers
    mlp_ratio: int = 2  # MLP width = mlp_ratio * H
    max_text_len: int = 10  # longest caption in tokens (with <bos>, <eos>)


DEFAULT_LR = {"clip": 3e-3, "siglip": 1.5e-3}
DEFAULT_EPOCHS = {"clip": 5, "siglip": 6}  # MNIST, 8,000 images: zero-shot 95% / 93% (docs/families.md)


@dataclass
class DualTrainConfig:
    epochs: int | None = None  # passes over the images; None = DEFAULT_EPOCHS[style]
    batch_size: int = 64  # pairs per step
    lr: float | None = None  # peak AdamW learning rate; None = DEFAULT_LR[style] (SigLIP at 3e-3 learned slowly
    # and unevenly on MNIST: 67-81% zero-shot after 5-7 epochs)
    weight_decay: float = 0.05  # AdamW weight decay on matrices
    warmup_frac: float = 0.1  # share of the steps with a linear warmup; cosine decay after
    positives: str = "group"  # "group" | "caption" | "diagonal" (standard loss); see the module docstring
    shift: int = 0  # augmentation: random translation by up to this many pixels (0 = off; slows short runs)
    seed: int = 0  # one seed for init, batches, captions and shifts
    max_seconds: float | None = None  # stop after the epoch that crosses this wall-clock budget
    siglip_bias_init: float | None = None  # SigLIP b at the start; None = log-odds of a pair being a positive
    # in a batch (paper: -10, made for 32k-pair batches; with 10 classes b would need thousands of steps to climb)
    siglip_log_scale_init: float = math.log(10.0)  # SigLIP t' at the start (paper: log 10)


# ------------------------------------------------------------------------------------ tokenizer and model
def word_tokenizer(texts: Sequence[str], max_len: int):
    """A word-level tokenizer over the words of `texts` ("seven" and "7" are separate tokens), lower-cased,
    wrapped as <bos> ... <eos>; words never seen map to <unk>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for t in texts for w in t.lower().split()})
    if not words:
        raise ValueError("no caption words to build a tokenizer from")
    vocab = {PAD: 0, UNK: 1, BOS: 2, EOS: 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 2), (EOS, 3)])
    tok.enable_truncation(max_len)
    return tok


def dual_hf_config(mc: DualModelConfig, vocab_size: int) -> dict:
    """config.json of a small CLIP / SigLIP (transformers' CLIPModel / SiglipModel field names)."""
    if mc.style not in ("clip", "siglip"):
        raise ValueError(f"style must be 'clip' or 'siglip', got {mc.style!r}")
    if mc.image_size % mc.patch_size:
        raise ValueError(f"patch_size {mc.patch_size} does not divide image_size {mc.image_size}")
    if mc.hidden_size % mc.num_heads:
        raise ValueError(f"hidden_size {mc.hidden_size} is not a multiple of num_heads {mc.num_heads}")
    H, act = mc.hidden_size, "quick_gelu" if mc.style == "clip" else "gelu_pytorch_tanh"
    text = dict(vocab_size=vocab_size, hidden_size=H, intermediate_size=mc.mlp_ratio * H, num_hidden_layers=mc.text_layers,
                num_attention_heads=mc.num_heads, max_position_embeddings=mc.max_text_len, hidden_act=act,
                eos_token_id=3, pad_token_id=0, bos_token_id=2)
    vision = dict(hidden_size=H, intermediate_size=mc.mlp_ratio * H, num_hidden_layers=mc.vision_layers,
                  num_attention_heads=mc.num_heads, image_size=mc.image_size, patch_size=mc.patch_size,
                  num_channels=3, hidden_act=act)
    c: dict[str, Any] = {"model_type": mc.style, "architectures": ["CLIPModel" if mc.style == "clip" else "SiglipModel"],
                         "text_config": text, "vision_config": vision}
    if mc.style == "clip":
        c.update(projection_dim=H, logit_scale_init_value=math.log(1 / 0.07))
    else:
        text["projection_size"] = H
    return c


def build_dual_encoder(mc: DualModelConfig, vocab_size: int, seed: int = 0):
    """(DualEncoder, its config.json dict), with small random embeddings (positions, CLS, probe: N(0, 0.02))."""
    from encoderkit.checkpoints.clip_family import parse_dual_config
    from encoderkit.models.clip import DualEncoder

    hf = dual_hf_config(mc, vocab_size)
    torch.manual_seed(seed)
    model = DualEncoder(parse_dual_config(hf))
    for name, p in model.named_parameters():
        if name in ("vision.position", "vision.cls", "map_head.probe") or name.endswith(("token.weight", "position.weight")):
            torch.nn.init.normal_(p, std=0.02)
    return model, hf


# ------------------------------------------------------------------------------------ data
def normalize_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, S, S) gray or (N, S, S, 3) uint8 / [0, 1] images -> (N, 3, S, S) float, (x - 0.5) / 0.5, the
    preprocessing written to preprocessor_config.json (so training and `encoderkit.load` see the same tensors)."""
    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x[:, None].expand(-1, 3, -1, -1)
    elif x.dim() == 4 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be (N, S, S) grayscale or (N, S, S, 3) RGB, got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return ((x - 0.5) / 0.5).contiguous()


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by (dy, dx) in [-max_shift, max_shift], filling with the border (MNIST: background)."""
    if max_shift <= 0:
        return x
    B, _, S, _ = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, C, S + 2m, S + 2m)
    off = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=gen)
    return torch.stack([padded[b, :, off[b, 0]:off[b, 0] + S, off[b, 1]:off[b, 1] + S] for b in range(B)])


def _caption_table(captions: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Per-image caption lists -> (unique texts, (N, K) indices into them padded with -1, (N,) counts)."""
    texts: dict[str, int] = {}
    rows = []
    for i, caps in enumerate(captions):
        caps = [caps] if isinstance(caps, str) else list(caps)
        if not caps or any(not isinstance(c, str) or not c.strip() for c in caps):
            raise ValueError(f"image {i} needs one or more non-empty caption strings, got {caps!r}")
        rows.append([texts.setdefault(c, len(texts)) for c in caps])
    k = max(len(r) for r in rows)
    table = torch.tensor([r + [-1] * (k - len(r)) for r in rows])
    return list(texts), table, torch.tensor([len(r) for r in rows])


def _encode_texts(tok, texts: Sequence[str], T: int, unk_ok: bool = False) -> torch.Tensor:
    ids = []
    for t in texts:
        e = tok.encode(t).ids
        if len(e) > T:
            raise ValueError(f"caption {t!r} has {len(e)} tokens, more than max_text_len {T}")
        ids.append(e + [0] * (T - len(e)))
    return torch.tensor(ids)


# ------------------------------------------------------------------------------------ training
def _prior_log_odds(positives: str, groups: torch.Tensor | None, table: torch.Tensor, counts: torch.Tensor,
                    batch: int) -> float:
    """log(p / (1 - p)) for p = the chance that a random (image, text) pair of a batch is a positive: 1 / batch
    for the diagonal; for groups (or captions) the chance two random examples share one, plus the diagonal."""
    if positives == "diagonal":
        p = 1.0 / batch
    else:
        if positives == "group":
            freq = torch.unique(groups, return_counts=True)[1].double() / len(groups)
        else:  # each image draws one of its captions uniformly: expected share of every caption string
            w = (table >= 0).double() / counts[:, None].double()  # (N, K)
            freq = torch.zeros(int(table.max()) + 1, dtype=torch.float64).index_add_(0, table.clamp(min=0).flatten(),
                                                                                      w.flatten()) / len(table)
        share = float((freq ** 2).sum())
        p = 1.0 / batch + (1 - 1.0 / batch) * share
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def train_dual_encoder(images: np.ndarray | torch.Tensor, captions: Sequence[Sequence[str]],
                       groups: Sequence[int] | None = None, model_config: DualModelConfig | None = None,
                       train_config: DualTrainConfig | None = None, progress: bool = False):
    """Train a DualEncoder on images (N, S, S[, 3]) paired with captions[i] (one or more strings; one is drawn
    per step). groups[i] (e.g. the class) marks which pairs count as positives of each other under
    positives="group". Returns (model, tokenizer, history) with the learned logit scale (and SigLIP bias) copied
    into the model."""
    from encoderkit.objectives.contrastive import CLIPLoss, SigLIPLoss

    mc, tc = model_config or DualModelConfig(), train_config or DualTrainConfig()
    if tc.positives not in ("group", "caption", "diagonal"):
        raise ValueError(f"positives must be 'group', 'caption' or 'diagonal', got {tc.positives!r}")
    x_all = normalize_images(images)
    N = len(x_all)
    if len(captions) != N:
        raise ValueError(f"{N} images but {len(captions)} caption lists")
    if x_all.shape[-1] != mc.image_size or x_all.shape[-2] != mc.image_size:
        raise ValueError(f"images are {tuple(x_all.shape[-2:])}, the model expects {mc.image_size}x{mc.image_size}")
    if tc.positives == "group":
        if groups is None:
            raise ValueError("positives='group' needs groups (e.g. the class of each image); or use 'caption'")
        if len(groups) != N:
            raise ValueError(f"{N} images but {len(groups)} group ids")
    if tc.batch_size < 2 or tc.batch_size > N:
        raise ValueError(f"batch_size must be in [2, {N}], got {tc.batch_size}")
    texts, table, counts = _caption_table(captions)
    tok = word_tokenizer(texts, mc.max_text_len)
    text_ids = _encode_texts(tok, texts, mc.max_text_len)  # (M, T)
    g_all = torch.as_tensor(np.asarray(groups)) if groups is not None else None
    model, _ = build_dual_encoder(mc, tok.get_vocab_size(), tc.seed)
    siglip = mc.style == "siglip"
    bias = tc.siglip_bias_init if tc.siglip_bias_init is not None else _prior_log_odds(tc.positives, g_all, table, counts,
                                                                                     tc.batch_size)
    loss_fn = SigLIPLoss(tc.siglip_log_scale_init, bias) if siglip else CLIPLoss()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2] + list(loss_fn.parameters())
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=tc.lr if tc.lr is not None else DEFAULT_LR[mc.style])
    epochs = tc.epochs if tc.epochs is not None else DEFAULT_EPOCHS[mc.style]
    steps_per_epoch = N // tc.batch_size
    total = epochs * steps_per_epoch
    warm = max(1, int(tc.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    gen = torch.Generator().manual_seed(tc.seed)
    history: list[dict] = []
    t0 = time.perf_counter()
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"train {mc.style}", unit="step")
    for epoch in range(epochs):
        perm = torch.randperm(N, generator=gen)
        run_loss = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * tc.batch_size:(b + 1) * tc.batch_size]
            pick = (torch.rand(len(idx), generator=gen) * counts[idx]).long()
            cap = table[idx, pick]  # (B,) caption index of each pair
            uniq, inv = torch.unique(cap, return_inverse=True)  # encode each distinct caption once
            ids = text_ids[uniq]
            if siglip:
                txt = model.get_text_features(ids)[inv]  # SigLIP: full-length padded text, no mask (as at inference)
            else:
                txt = model.get_text_features(ids, (ids != 0).long())[inv]
            img = model.get_image_features(random_shift(x_all[idx], tc.shift, gen))
            if tc.positives == "diagonal":
                pos = None
            elif tc.positives == "caption":
                pos = cap[:, None] == cap[None, :]
            else:
                gb = g_all[idx]
                pos = gb[:, None] == gb[None, :]
            loss = loss_fn(img, txt, pos)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run_loss += float(loss.detach())
            if bar is not None:
                bar.update(1)
        rec = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "train_loss": run_loss / steps_per_epoch,
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(rec)
        log.info("epoch %d: loss %.4f (%.0f s)", rec["epoch"], rec["train_loss"], rec["seconds"])
        if tc.max_seconds is not None and time.perf_counter() - t0 > tc.max_seconds and epoch + 1 < epochs:
            log.warning("stopping after epoch %d: the %.0f s budget is spent", epoch + 1, tc.max_seconds)
            break
    if bar is not None:
        bar.close()
    model.eval()
    with torch.no_grad():  # the loss's learned temperature (and bias) become the model's own
        if siglip:
            model.logit_scale.copy_(loss_fn.log_scale.view(1))
            model.logit_bias.copy_(loss_fn.bias.view(1))
        else:
            model.logit_scale.copy_(loss_fn.logit_scale.clamp(max=loss_fn.max_log_scale))
    return model, tok, history


def save_dual_encoder(folder: str | Path, model, tokenizer, train_info: dict | None = None) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and preprocessor_config.json (mean = std = 0.5)."""
    from encoderkit.checkpoints.loader import save_transformer
    from encoderkit.checkpoints.registry import family_for

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    fam = family_for(cfg.style)
    hf = fam.to_hf_config(cfg)
    if "projection_dim" in hf:
        hf["logit_scale_init_value"] = float(model.logit_scale.detach())
    save_transformer(folder, model, fam, cfg, hf, None, None)
    tokenizer.save(str(folder / "tokenizer.json"))
    s = cfg.vision.image_size
    pre = {"do_resize": True, "size": {"height": s, "width": s}, "resample": 2, "do_rescale": True,
           "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    if train_info is not None:
        (folder / "training.json").write_text(json.dumps(train_info, indent=2, default=str))
    return folder


# ------------------------------------------------------------------------------------ evaluation
def evaluate_dual_encoder(folder: str | Path, images: Sequence[Any], labels: np.ndarray,
                          prompt_sets: dict[str, list[str]], k: int = 10) -> dict[str, Any]:
    """Zero-shot accuracy per prompt set (class c described by prompts[c]) and for their mean text vector, and
    text -> image retrieval over `images`: recall@k (a right image among the top k) and precision@k, averaged
    over the (prompt set, class) queries. Everything goes through ZeroShotClassifier.from_pretrained(folder)."""
    from encoderkit.tasks.zero_shot import ZeroShotClassifier

    labels = np.asarray(labels)
    clf = ZeroShotClassifier.from_pretrained(folder)
    img = clf.input_encoder.encode(list(images), batch_size=256, normalize=True, progress=False)
    acc, hits, prec, vecs = {}, [], [], []
    for name, prompts in prompt_sets.items():
        t = clf.label_encoder.encode(list(prompts), normalize=True)  # (C, D)
        vecs.append(t)
        acc[name] = float(((img @ t.T).argmax(1) == labels).mean())
        top = np.argsort(-(t @ img.T), axis=1)[:, :k]  # (C, k) image indices per class query
        rel = labels[top] == np.arange(len(prompts))[:, None]
        hits.append(rel.any(1).mean())
        prec.append(rel.mean())
    ens = np.mean(vecs, axis=0)
    ens /= np.linalg.norm(ens, axis=1, keepdims=True)
    return {"zero_shot_accuracy": acc, "zero_shot_accuracy_min": min(acc.values()),
            "zero_shot_accuracy_ensemble": float(((img @ ens.T).argmax(1) == labels).mean()),
            f"text_to_image_recall_at_{k}": float(np.mean(hits)), f"text_to_image_precision_at_{k}": float(np.mean(prec)),
            "image_vectors": img}


# ------------------------------------------------------------------------------------ MNIST captions
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# training captions: {w} = the digit's word, {d} = its numeral; the digit sits at different positions
MNIST_TRAIN_TEMPLATES = ["a photo of the digit {w}", "a handwritten {d}", "the number {w}", "an image of a {d}",
                         "a photo of a handwritten {w}", "the digit {d}", "{w}", "a {d} written by hand",
                         "an image of the handwritten number {w}", "a photo of a {d}"]
# zero-shot prompts: none is a training caption (checked), every word appears in training captions
MNIST_ZERO_SHOT_PROMPTS = ["a handwritten digit {w}", "an image of the number {d}", "a photo of the number {w}"]


def fill(template: str, digit: int) -> str:
    return template.format(w=DIGIT_WORDS[digit], d=digit)


def mnist_captions(labels: np.ndarray, templates: Sequence[str] = MNIST_TRAIN_TEMPLATES) -> list[list[str]]:
    """Every caption a digit may get during training (one is drawn per step)."""
    per_digit = [[fill(t, d) for t in templates] for d in range(10)]
    return [per_digit[int(y)] for y in labels]


def check_unseen_prompts(prompts: Sequence[str], train_templates: Sequence[str]) -> None:
    """Fail if a zero-shot prompt is a training caption, or holds a word no training caption has."""
    seen = {fill(t, d) for t in train_templates for d in range(10)}
    words = {w for s in seen for w in s.lower().split()}
    for p in prompts:
        for d in range(10):
            text = fill(p, d)
            if text in seen:
                raise ValueError(f"zero-shot prompt {text!r} is also a training caption")
            missing = [w for w in text.lower().split() if w not in words]
            if missing:
                raise ValueError(f"zero-shot prompt {text!r} has words never seen in training: {missing}")


def train_mnist_dual(style: str, images: np.ndarray, labels: np.ndarray, out: str | Path, n_train: int = 8000,
                     model_config: DualModelConfig | None = None, train_config: DualTrainConfig | None = None,
                     templates: Sequence[str] = MNIST_TRAIN_TEMPLATES,
                     prompts: Sequence[str] = MNIST_ZERO_SHOT_PROMPTS, progress: bool = False) -> dict[str, Any]:
    """Train on the first n_train (image, digit caption) pairs, save to `out`, evaluate zero-shot with unseen
    prompts and text -> image retrieval on the rest. Returns the summary."""
    if not 0 < n_train < len(images):
        raise ValueError(f"n_train must leave images to test on: 0 < n_train < {len(images)}, got {n_train}")
    check_unseen_prompts(prompts, templates)
    mc = model_config or DualModelConfig()
    mc = DualModelConfig(**{**asdict(mc), "style": style})
    tc = train_config or DualTrainConfig()
    tc = replace(tc, lr=tc.lr if tc.lr is not None else DEFAULT_LR[style],
                 epochs=tc.epochs if tc.epochs is not None else DEFAULT_EPOCHS[style])
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        model, tok, history = train_dual_encoder(images[:n_train], mnist_captions(labels[:n_train], templates),
                                                 labels[:n_train], mc, tc, progress)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    info = {"model": asdict(mc), "train": asdict(tc), "history": history, "train_images": n_train,
            "templates": list(templates)}
    save_dual_encoder(out, model, tok, info)
    try:  # per-epoch training loss, as every recipe writes (#16)
        from encoderkit.train.curves import plot_curves

        plot_curves(history, [], Path(out) / "curves.png")
    except ImportError:
        log.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")
    test_x, test_y = images[n_train:], labels[n_train:]
    res = evaluate_dual_encoder(out, list(test_x), test_y, {p: [fill(p, d) for d in range(10)] for p in prompts})
    # the saved folder, read back by encoderkit.load, must give the training-time vectors
    with torch.no_grad():
        direct = F.normalize(model.get_image_features(normalize_images(test_x[:64])), dim=-1).numpy()
    img_vecs = res.pop("image_vectors")
    res["load_max_abs_diff"] = float(np.abs(direct - img_vecs[:64]).max())
    from encoderkit.tasks.zero_shot import ZeroShotClassifier

    texts = [fill(p, d) for p in prompts for d in range(10)]
    ids = _encode_texts(tok, texts, mc.max_text_len)
    with torch.no_grad():
        mask = None if style == "siglip" else (ids != 0).long()
        direct_t = F.normalize(model.get_text_features(ids, mask), dim=-1).numpy()
    loaded_t = ZeroShotClassifier.from_pretrained(out).label_encoder.encode(texts, normalize=True)
    res["load_max_abs_diff"] = max(res["load_max_abs_diff"], float(np.abs(direct_t - loaded_t).max()))
    # diagnostic: the same test images against a caption seen in training (how much the unseen wording costs)
    seen = _encode_texts(tok, [fill(templates[0], d) for d in range(10)], mc.max_text_len)
    with torch.no_grad():
        t_seen = F.normalize(model.get_text_features(seen, None if style == "siglip" else (seen != 0).long()), dim=-1)
    res["zero_shot_accuracy_training_caption"] = float(((img_vecs @ t_seen.numpy().T).argmax(1) == test_y).mean())
    return {"style": style, "out": str(out), "train_images": n_train, "test_images": len(test_x),
            "epochs": len(history), "train_loss": history[-1]["train_loss"], "train_seconds": round(seconds, 1),
            "logit_scale": float(model.logit_scale.detach().exp()),
            "logit_bias": float(model.logit_bias.detach()) if model.logit_bias is not None else None, **res}


# ------------------------------------------------------------------------------------ CLI
def _args(p: argparse.ArgumentParser) -> None:
    d, m = DualTrainConfig(), DualModelConfig()
    p.add_argument("--data", required=True, help="MNIST folder (t10k IDX files) or .npz with X (N, 28, 28) and y digits")
    add_output_argument(p, "folder to write (a Hugging Face CLIP / SigLIP checkpoint)")
    p.add_argument("--holdout", type=int, default=2000, help="the last N images are the zero-shot test set")
    p.add_argument("--epochs", type=int, help="passes over the training images (default: clip 5, siglip 6)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: clip 3e-3, siglip 1.5e-3)")
    p.add_argument("--positives", choices=["group", "caption", "diagonal"], default=d.positives,
                   help="group: same digit = positive (multi-positive); caption: identical caption; diagonal: standard")
    p.add_argument("--patch-size", type=int, default=m.patch_size, help="ViT patch side")
    p.add_argument("--hidden-size", type=int, default=m.hidden_size, help="width of both towers")
    p.add_argument("--vision-layers", type=int, default=m.vision_layers, help="ViT depth")
    p.add_argument("--text-layers", type=int, default=m.text_layers, help="text transformer depth")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small matrices: 1 is about as fast)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run(args: argparse.Namespace, style: str) -> dict[str, Any]:
    from encoderkit.datasets import load_array

    images, labels = load_array(args.data)
    if labels is None:
        raise ValueError(f"{args.data} has no labels; captions are made from the digit labels (y)")
    if images.ndim != 3 or images.shape[1] != 28 or images.shape[2] != 28:
        raise ValueError(f"expected 28x28 digit images (N, 28, 28), got {images.shape}")
    labels = np.asarray(labels).astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"labels must be digits 0..9, got the range {labels.min()}..{labels.max()}")
    torch.set_num_threads(max(1, args.threads))
    mc = DualModelConfig(style=style, patch_size=args.patch_size, hidden_size=args.hidden_size,
                         vision_layers=args.vision_layers, text_layers=args.text_layers)
    tc = DualTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, positives=args.positives,
                         seed=args.seed)
    summary = train_mnist_dual(style, images, labels, args.out, len(images) - args.holdout, mc, tc,
                               progress=not args.no_progress)
    return summary


register_recipe("clip", _args, lambda a: _run(a, "clip"),
                "train a small CLIP (ViT + text transformer) on digit images with captions; zero-shot eval")
register_recipe("siglip", _args, lambda a: _run(a, "siglip"),
                "train a small SigLIP (ViT + text transformer, sigmoid loss) on digit images with captions")
