"""ELECTRA replaced-token detection (Clark et al. 2020, section 2).

A small generator G is trained with MLM on the masked positions S; its samples replace them:

    x_corrupt_i = x_hat_i ~ p_G(x_i | x_masked)   for i in S,   x_i otherwise
    L_MLM  = - sum_{i in S} log p_G(x_i | x_masked) / |S|
    L_Disc = - sum_t [ y_t log D(x_corrupt, t) + (1 - y_t) log(1 - D(x_corrupt, t)) ] / T,
             y_t = 1[x_corrupt_t != x_t]   (a sample equal to the original counts as original)
    L      = L_MLM + lambda * L_Disc,   lambda = 50

No gradient flows through the sampling. Generator and discriminator share the embeddings."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn import activation
from encoderkit.objectives.mlm import IGNORE_INDEX, MaskedLanguageModel, mlm_loss


def share_embeddings(generator_encoder: nn.Module, discriminator_encoder: nn.Module) -> None:
    """Make the generator use the discriminator's token, position and segment embeddings and their
    LayerNorm (ELECTRA shares the whole embedding block; a smaller generator projects E -> its H)."""
    g, d = generator_encoder.embeddings, discriminator_encoder.embeddings
    if g.word.weight.shape != d.word.weight.shape:
        raise ValueError(f"generator embeddings {tuple(g.word.weight.shape)} != discriminator embeddings "
                         f"{tuple(d.word.weight.shape)}: give the generator config embedding_size = the "
                         "discriminator's embedding width and the same vocab_size")
    g.word = d.word
    g.position = d.position
    g.token_type = d.token_type
    g.norm = d.norm


class DiscriminatorHead(nn.Module):
    """ELECTRA's per-token classifier: logit_t = w . act(h_t W + b) + c (positive = replaced)."""

    def __init__(self, hidden_size: int, act: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = activation(act)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.dense(hidden))).squeeze(-1)  # (B, T)


def replace_with_samples(input_ids: torch.Tensor, gen_logits: torch.Tensor, labels: torch.Tensor,
                         temperature: float = 1.0, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample x_hat ~ softmax(logits / temperature) at the masked positions (labels != -100) and put
    the samples in the ORIGINAL sequence. gen_logits is (B, T, V) or already the (n_masked, V) rows of
    the masked positions in row-major order. Returns (corrupted_ids, is_replaced = corrupted != original)."""
    original = torch.where(labels != IGNORE_INDEX, labels, input_ids)
    sel = labels != IGNORE_INDEX
    corrupted = original.clone()
    if bool(sel.any()):
        rows = gen_logits[sel] if gen_logits.dim() == 3 else gen_logits
        if rows.shape[0] != int(sel.sum()):
            raise ValueError(f"got {rows.shape[0]} rows of generator logits for {int(sel.sum())} masked positions")
        with torch.no_grad():
            probs = torch.softmax(rows.float() / temperature, dim=-1)  # (n_sel, V)
            samples = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        corrupted[sel] = samples.to(corrupted.dtype)
    return corrupted, corrupted != original


def rtd_loss(disc_logits: torch.Tensor, is_replaced: torch.Tensor, attention_mask: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Binary cross-entropy of the discriminator over every real (non-padding) token."""
    keep = torch.ones_like(is_replaced, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return F.binary_cross_entropy_with_logits(disc_logits[keep], is_replaced[keep].to(disc_logits.dtype))


@dataclass
class ElectraOutput:
    loss: torch.Tensor  # L_MLM + lambda * L_Disc
    mlm_loss: torch.Tensor
    rtd_loss: torch.Tensor
    generator_accuracy: float  # arg-max of the generator = original token, over masked positions
    rtd_accuracy: float  # discriminator correct (replaced vs original), over real tokens
    replaced_fraction: float  # fraction of real tokens that differ from the original


class Electra(nn.Module):
    """Generator (a MaskedLanguageModel) + discriminator (a BERT-family encoder + DiscriminatorHead),
    sharing embeddings. forward takes the MLM-corrupted batch and returns an ElectraOutput."""

    def __init__(self, generator: MaskedLanguageModel, discriminator: nn.Module, rtd_weight: float = 50.0,
                 temperature: float = 1.0, tie_embeddings: bool = True):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.head = DiscriminatorHead(discriminator.config.hidden_size, discriminator.config.hidden_act)
        if tie_embeddings:
            share_embeddings(generator.encoder, discriminator)
            generator.head.decoder.weight = discriminator.embeddings.word.weight  # keep the MLM decoder tied
        self.rtd_weight = rtd_weight
        self.temperature = temperature

    def forward(self, masked_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> ElectraOutput:
        sel = labels != IGNORE_INDEX
        hidden = self.generator.encoder(masked_ids, attention_mask)  # (B, T, H_g)
        gen_logits = self.generator.head(hidden[sel])  # (n_masked, V): the vocabulary softmax only where needed
        l_mlm = mlm_loss(gen_logits, labels[sel])
        corrupted, is_replaced = replace_with_samples(masked_ids, gen_logits.detach(), labels, self.temperature,
                                                      generator)
        disc_logits = self.head(self.discriminator(corrupted, attention_mask))  # (B, T)
        l_rtd = rtd_loss(disc_logits, is_replaced, attention_mask)
        keep = torch.ones_like(is_replaced) if attention_mask is None else attention_mask.bool()
        with torch.no_grad():
            gen_pred = gen_logits.max(-1).indices  # = argmax(-1), at half its CPU cost over the vocabulary
            gen_acc = float((gen_pred == labels[sel]).float().mean()) if bool(sel.any()) else float("nan")
            rtd_acc = float(((disc_logits > 0) == is_replaced)[keep].float().mean())
            repl = float(is_replaced[keep].float().mean())
        return ElectraOutput(l_mlm + self.rtd_weight * l_rtd, l_mlm, l_rtd, gen_acc, rtd_acc, repl)
