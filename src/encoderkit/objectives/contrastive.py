"""Contrastive objectives: pull matching pairs together, push the rest of the batch apart.

- InfoNCE / multiple-negatives ranking (van den Oord et al. 2018; Henderson et al. 2017):
      L = - (1/N) sum_i log [ exp(s(q_i, d_i)/tau) / sum_j exp(s(q_i, d_j)/tau) ]
  with s the cosine similarity; the other documents of the batch (plus optional hard negatives)
  are the negatives.
- Triplet (Schroff et al. 2015):   L = mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)
- CLIP (Radford et al. 2021):      logits = exp(t) * X Y^T (rows L2-normalized), t learnable,
      L = (CE(logits, I) + CE(logits^T, I)) / 2
- SigLIP (Zhai et al. 2023):       z_ij = 1 if i = j else -1,
      L = - (1/N) sum_i sum_j log sigmoid(z_ij (exp(t') x_i . y_j + b)),  t', b learnable
  Multi-positive variant of both (optional `positives` mask P, P_ii = 1): when several pairs of a batch share
  a caption or class, CLIP's one-hot target becomes P_ij / sum_j P_ij (as in UniCL, Yang et al. 2022) and
  SigLIP's z_ij = +1 wherever P_ij; without the mask the standard losses above.
- SimCLR NT-Xent (Chen et al. 2020): for 2N views, positive of k is its other view,
      l(k) = - log [ exp(sim(z_k, z_pos(k))/tau) / sum_{m != k} exp(sim(z_k, z_m)/tau) ],  L = mean_k l(k)"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (N, D) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{names}: empty batch")


def _check_positives(positives: torch.Tensor, n: int) -> torch.Tensor:
    """A (N, N) bool mask that holds every diagonal pair (each image matches at least its own text)."""
    if positives.shape != (n, n):
        raise ValueError(f"positives must be an ({n}, {n}) mask for a batch of {n} pairs, got {tuple(positives.shape)}")
    p = positives.bool()
    if not bool(p.diagonal().all()):
        raise ValueError("positives must mark every pair (i, i) as a positive: each image matches its own caption")
    return p


def info_nce(queries: torch.Tensor, docs: torch.Tensor, temperature: float = 0.05,
             hard_negatives: torch.Tensor | None = None, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE with in-batch negatives: doc i is the positive of query i; every other doc (and every
    row of hard_negatives (M, D)) is a negative. symmetric adds the doc -> query direction."""
    _check_pair(queries, docs, "queries and docs")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = F.normalize(queries, dim=-1)
    d = F.normalize(docs, dim=-1)
    candidates = d if hard_negatives is None else torch.cat([d, F.normalize(hard_negatives, dim=-1)], dim=0)
    logits = q @ candidates.T / temperature  # (N, N + M)
    target = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(d @ q.T / temperature, target)) / 2
    return loss


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE on an encoder's embeddings of (query, positive[, hard negative]) batches;
    scale = 1 / temperature (sentence-transformers uses 20)."""

    def __init__(self, temperature: float = 0.05, symmetric: bool = False):
        super().__init__()
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, queries: torch.Tensor, docs: torch.Tensor, hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(queries, docs, self.temperature, hard_negatives, self.symmetric)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0,
                 distance: str = "euclidean") -> torch.Tensor:
    """mean max(0, d(a, p) - d(a, n) + margin); distance "euclidean" (||a - b||_2) or "cosine" (1 - cos)."""
    _check_pair(anchor, positive, "anchor and positive")
    _check_pair(anchor, negative, "anchor and negative")
    if distance == "euclidean":
        d_ap = (anchor - positive).norm(dim=-1)
        d_an = (anchor - negative).norm(dim=-1)
    elif distance == "cosine":
        d_ap = 1 - F.cosine_similarity(anchor, positive, dim=-1)
        d_an = 1 - F.cosine_similarity(anchor, negative, dim=-1)
    else:
        raise ValueError(f"unknown triplet distance {distance!r}; use 'euclidean' or 'cosine'")
    return F.relu(d_ap - d_an + margin).mean()


class CLIPLoss(nn.Module):
    """Symmetric cross-entropy over the image-text similarity matrix with a learnable logit scale
    t (logits = exp(t) * cos), initialised to log(1 / 0.07) and clamped at exp(t) <= 100."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        return scale * F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T  # (N, N)

    def forward(self, image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        """positives: optional (N, N) bool mask of matching pairs (multi-positive targets); None = the diagonal."""
        _check_pair(image, text, "image and text embeddings")
        logits = self.logits(image, text)
        if positives is None:
            target = torch.arange(logits.shape[0], device=logits.device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        p = _check_positives(positives, logits.shape[0]).to(logits.dtype)
        return (F.cross_entropy(logits, p / p.sum(1, keepdim=True)) + F.cross_entropy(logits.T, p.T / p.T.sum(1, keepdim=True))) / 2


class SigLIPLoss(nn.Module):
    """Pairwise sigmoid loss: every (i, j) is an independent binary problem, positive iff i = j.
    Learnable t' (init log 10) and b (init -10), as in the paper."""

    def __init__(self, init_log_scale: float = math.log(10.0), init_bias: float = -10.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init_log_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T * self.log_scale.exp() + self.bias  # (N, N)

    def forward(self, image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        """positives: optional (N, N) bool mask of matching pairs (z = +1 there); None = the diagonal."""
        _check_pair(image, text, "image and text embeddings")
        logits = self.logits(image, text)
        n = logits.shape[0]
        if positives is None:
            z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1  # +1 diagonal, -1 elsewhere
        else:
            z = 2 * _check_positives(positives, n).to(logits.dtype) - 1
        return -F.logsigmoid(z * logits).sum() / n


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy over 2N views; z1[i] and z2[i] are two
    augmentations of the same example, all other 2N - 2 views are negatives."""
    _check_pair(z1, z2, "the two views z1 and z2")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)  # (2N, D)
    sim = z @ z.T / temperature  # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # drop k = m
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # other view
    return F.cross_entropy(sim, target)


class NTXentLoss(nn.Module):
    """Module form of nt_xent with a fixed temperature."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature)
