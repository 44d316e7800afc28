"""Retrieval-training losses, on embeddings (sentence-transformers' conventions: scale = 1 / temperature = 20).

- CoSENT (Su 2022; Huang et al. 2024), scored pairs (a_i, b_i, y_i), s_i = scale * cos(a_i, b_i):
      L = log(1 + sum_{(i, j): y_i > y_j} exp(s_j - s_i))
- AnglE (Li & Li 2023): the same ranking sum over the angle similarity. Each vector is split in halves, read
  as a complex vector z = re + i im; the complex quotient z_a / z_b, rescaled by |z_b| / |z_a|, summed over
  the dimensions, has real part cos(a, b) and imaginary part (im_a . re_b - re_a . im_b) / (|a||b|);
  s = scale * |Re + Im|. Optionally plus w_cos * CoSENT (the paper's combined objective without in-batch term).
- Matryoshka (Kusupati et al. 2022): L = sum_d w_d * loss(x[:, :d] / |x[:, :d]|, ...) over nested widths d.
- Cached multiple-negatives ranking (GradCache, Gao et al. 2021): the InfoNCE of contrastive.info_nce over a
  large batch, computed in three steps that never hold more than one chunk's graph: (1) embed every chunk
  without gradients, (2) the loss on the full batch of embeddings and its gradient g with respect to them,
  (3) at backward time re-embed chunk by chunk (same dropout draws) and backpropagate g through each.
- MarginMSE (Hofstaetter et al. 2020): L = mean_{i,k} ((s(q_i, p_i) - s(q_i, n_ik)) - M_ik)^2, M the
  teacher's margins, s the dot product.
- KL distillation (Lin et al. 2020): L = T_s^2 * KL(softmax(t_i / T_t) || softmax(s_i / T_s)), batch mean,
  over each query's candidates (positive first), t the teacher's scores.
- GISTEmbed (Solatorio 2024): InfoNCE (temperature 0.01) over anchor-positive, anchor-anchor,
  positive-positive and anchor-negative similarities, where every in-batch candidate that a guide model scores
  above the guide's own positive similarity (less a margin) is masked out as a likely false negative."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.objectives.contrastive import _check_pair, info_nce


# ------------------------------------------------------------------------------------ similarities
def pairwise_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_i) for rows of (N, D) tensors -> (N,)."""
    return F.cosine_similarity(a, b, dim=-1)


def pairwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_i . b_i -> (N,)."""
    return (a * b).sum(-1)


def pairwise_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """AnglE's |Re + Im| of the normalized complex quotient z_a / z_b (halves of each vector are re, im);
    an odd width is padded with one zero, as sentence-transformers does."""
    if a.shape[-1] % 2:
        a, b = F.pad(a, (0, 1)), F.pad(b, (0, 1))
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    re_a, im_a = a.chunk(2, dim=-1)
    re_b, im_b = b.chunk(2, dim=-1)
    re = (re_a * re_b + im_a * im_b).sum(-1)  # = cos(a, b) for unit vectors
    im = (im_a * re_b - re_a * im_b).sum(-1)
    return (re + im).abs()


# ------------------------------------------------------------------------------------ CoSENT / AnglE
def cosent_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(1 + sum over label-ordered pairs (y_i > y_j) of exp(s_j - s_i)); scores already scaled."""
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"need one score and one label per pair, got scores {tuple(scores.shape)} and labels "
                         f"{tuple(labels.reshape(-1).shape if labels.dim() else labels.shape)}")
    labels = labels.to(scores.dtype)
    diff = scores[None, :] - scores[:, None]  # (N, N): s_j - s_i
    ordered = labels[:, None] > labels[None, :]  # y_i > y_j
    diff = diff.masked_fill(~ordered, float("-inf"))
    return torch.logsumexp(torch.cat([scores.new_zeros(1), diff.reshape(-1)]), dim=0)  # log(e^0 + sum ...)


class CoSENTLoss(nn.Module):
    """CoSENT on (a, b, score) batches: pairs with higher gold scores must get higher cosines."""

    def __init__(self, scale: float = 20.0, similarity: Callable = pairwise_cos):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.similarity = scale, similarity

    def forward(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b, "the two sides of the pairs")
        return cosent_loss(self.similarity(a, b) * self.scale, labels.reshape(-1))


class AnglELoss(nn.Module):
    """AnglE: CoSENT's ranking loss on the angle similarity (angle_weight), optionally plus cosine CoSENT
    (cosine_weight); the default (0, 1) is sentence-transformers' AnglELoss."""

    def __init__(self, scale: float = 20.0, angle_weight: float = 1.0, cosine_weight: float = 0.0):
        super().__init__()
        self.scale, self.angle_weight, self.cosine_weight = scale, angle_weight, cosine_weight

    def forward(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b, "the two sides of the pairs")
        labels = labels.reshape(-1)
        loss = self.angle_weight * cosent_loss(pairwise_angle(a, b) * self.scale, labels)
        if self.cosine_weight:
            loss = loss + self.cosine_weight * cosent_loss(pairwise_cos(a, b) * self.scale, labels)
        return loss


# ------------------------------------------------------------------------------------ Matryoshka
def shrink(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first dim components of each vector, L2-normalized."""
    if dim > x.shape[-1]:
        raise ValueError(f"Matryoshka dimension {dim} exceeds the embedding size {x.shape[-1]}")
    return F.normalize(x[..., :dim], dim=-1)


class MatryoshkaLoss(nn.Module):
    """sum_d w_d * loss(embeddings truncated to d and renormalized, ...). forward(*embeddings, **kwargs): every
    positional argument is an embedding tensor (truncated); keyword arguments (labels, ...) pass through."""

    def __init__(self, loss: nn.Module | Callable, dims: Sequence[int], weights: Sequence[float] | None = None):
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"Matryoshka dims must be a non-empty list of positive sizes, got {list(dims)}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} dims; give one weight per dim")
        self.loss, self.dims, self.weights = loss, dims, weights

    def forward(self, *embeddings: torch.Tensor, **kwargs) -> torch.Tensor:
        full = embeddings[0].shape[-1]
        bad = [d for d in self.dims if d > full]
        if bad:
            raise ValueError(f"Matryoshka dims {bad} exceed the embedding size {full}")
        return sum(w * self.loss(*(shrink(e, d) for e in embeddings), **kwargs) for d, w in zip(self.dims, self.weights))


# ------------------------------------------------------------------------------------ GradCache MNRL
def mnrl_loss(queries: torch.Tensor, positives: torch.Tensor, *negatives: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """Multiple-negatives ranking (InfoNCE, cosine * scale) with any number of (N, D) hard-negative columns."""
    hard = torch.cat(negatives, dim=0) if negatives else None
    return info_nce(queries, positives, 1.0 / scale, hard)


class CachedMultipleNegativesRankingLoss(nn.Module):
    """GradCache: a loss over a big batch of texts with the memory of one chunk. embed(list[str]) -> (n, D) with
    gradients; loss(*column_embeddings) defaults to mnrl_loss (wrap it in MatryoshkaLoss, etc. as needed).
    forward(*columns of texts) returns the loss value; calling .backward() on it (or on a multiple of it)
    re-embeds each chunk and backpropagates the cached embedding gradients into the model. The CPU random state
    of each chunk is replayed (same dropout masks); the loss itself must have no parameters."""

    def __init__(self, embed: Callable[[list[str]], torch.Tensor], chunk_size: int = 32,
                 loss: Callable[..., torch.Tensor] | None = None, scale: float = 20.0):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.embed, self.chunk_size = embed, chunk_size
        self.loss = loss if loss is not None else (lambda *e: mnrl_loss(*e, scale=scale))

    def forward(self, *columns: Sequence[str]) -> torch.Tensor:
        if len(columns) < 2:
            raise ValueError("need at least two columns of texts: queries and positives")
        n = len(columns[0])
        if any(len(c) != n for c in columns):
            raise ValueError(f"all columns must have the same length, got {[len(c) for c in columns]}")
        chunks = [(c, list(col[s:s + self.chunk_size])) for c, col in enumerate(columns)
                  for s in range(0, n, self.chunk_size)]
        states, reps = [], []
        with torch.no_grad():  # (1) embed every chunk, no graph kept; remember the RNG for the replay
            for _, texts in chunks:
                states.append(torch.get_rng_state())
                reps.append(self.embed(texts))
        training = torch.is_grad_enabled()
        leaves = [r.detach().requires_grad_(training) for r in reps]
        by_column = [torch.cat([leaves[i] for i, (c, _) in enumerate(chunks) if c == col]) for col in range(len(columns))]
        if not training:
            return self.loss(*by_column)
        loss = self.loss(*by_column)  # (2) the loss on the whole batch and d loss / d embeddings
        grads = torch.autograd.grad(loss, leaves)
        out = loss.detach().requires_grad_()
        # backward() usually runs outside the caller's autocast (a bf16 Trainer step): the replay re-enters it, so
        # the re-embedded chunks are the bf16 forward of (1), not a slower fp32 one with other values
        cast = dict(device_type="cpu", enabled=torch.is_autocast_enabled("cpu"), dtype=torch.get_autocast_dtype("cpu"))

        def replay(g_out: torch.Tensor) -> torch.Tensor:  # (3) at backward: re-embed and backprop chunk by chunk
            for (_, texts), state, g in zip(chunks, states, grads):
                with torch.random.fork_rng(devices=[]), torch.enable_grad(), torch.autocast(**cast):
                    torch.set_rng_state(state)  # the same dropout draws as in (1); grad is off in backward
                    e = self.embed(texts)
                if e.requires_grad:
                    e.backward(g * g_out)
            return g_out

        out.register_hook(replay)
        return out


# ------------------------------------------------------------------------------------ distillation
def _stack_candidates(positives: torch.Tensor, negatives) -> torch.Tensor:
    """(N, 1 + K, D) from (N, D) positives and (N, K, D) or a list of K (N, D) negatives."""
    negs = torch.stack(list(negatives), dim=1) if isinstance(negatives, (list, tuple)) else negatives
    if negs.dim() == 2:
        negs = negs[:, None]
    return torch.cat([positives[:, None], negs], dim=1)


def margin_mse_loss(queries: torch.Tensor, positives: torch.Tensor, negatives, teacher: torch.Tensor,
                    similarity: str = "dot", scale: float = 1.0) -> torch.Tensor:
    """MarginMSE. teacher: (N, K) margins teacher(q, p) - teacher(q, n_k), or (N, K + 1) scores, positive first
    (or (N,) for one negative). similarity: "dot" (the paper's and sentence-transformers' default) or "cos". scale
    multiplies the student's similarities (1: sentence-transformers' MarginMSELoss): a normalized student's margins
    lie in [-2, 2], a cross-encoder's logit margins are often ~10, so such a pair needs a scale to be comparable."""
    if not scale > 0:
        raise ValueError(f"the MarginMSE scale must be > 0, got {scale}")
    cand = _stack_candidates(positives, negatives)  # (N, 1 + K, D)
    n, k = cand.shape[0], cand.shape[1] - 1
    q = queries[:, None, :]
    s = (q * cand).sum(-1) if similarity == "dot" else F.cosine_similarity(q, cand, dim=-1)  # (N, 1 + K)
    s = s * scale
    teacher = teacher.detach().to(s.dtype)
    if teacher.shape == (n, k + 1):
        teacher = teacher[:, :1] - teacher[:, 1:]
    elif teacher.shape == (n,):
        teacher = teacher[:, None]
    if teacher.shape != (n, k):
        raise ValueError(f"teacher must hold ({n}, {k}) margins or ({n}, {k + 1}) scores (positive first), "
                         f"got {tuple(teacher.shape)}")
    return F.mse_loss(s[:, :1] - s[:, 1:], teacher)


def kl_distill_loss(queries: torch.Tensor, positives: torch.Tensor, negatives, teacher: torch.Tensor,
                    temperature: float = 1.0, student_temperature: float | None = None,
                    teacher_temperature: float | None = None, similarity: str = "dot") -> torch.Tensor:
    """T_s^2 * KL(softmax(teacher / T_t) || softmax(student / T_s)) over each query's candidates (positive
    first), averaged over queries; teacher: (N, 1 + K) scores."""
    ts = temperature if student_temperature is None else student_temperature
    tt = temperature if teacher_temperature is None else teacher_temperature
    if ts <= 0 or tt <= 0:
        raise ValueError(f"temperatures must be > 0, got student {ts} and teacher {tt}")
    cand = _stack_candidates(positives, negatives)
    q = queries[:, None, :]
    s = (q * cand).sum(-1) if similarity == "dot" else F.cosine_similarity(q, cand, dim=-1)
    if teacher.shape != s.shape:
        raise ValueError(f"teacher scores must be {tuple(s.shape)} (queries x candidates, positive first), "
                         f"got {tuple(teacher.shape)}")
    log_p_s = F.log_softmax(s / ts, dim=-1)
    p_t = F.softmax(teacher.detach().to(s.dtype) / tt, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * ts ** 2


# ------------------------------------------------------------------------------------ GISTEmbed
def _cos_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def gist_loss(anchor: torch.Tensor, positive: torch.Tensor, guide_anchor: torch.Tensor, guide_positive: torch.Tensor,
              negative: torch.Tensor | None = None, guide_negative: torch.Tensor | None = None,
              temperature: float = 0.01, margin_strategy: str = "absolute", margin: float = 0.0,
              contrast_anchors: bool = True, contrast_positives: bool = True) -> torch.Tensor:
    """GISTEmbed: InfoNCE whose candidates the guide marks as false negatives are dropped: a candidate c of
    anchor i is masked when guide_sim(i, c) > guide_sim(a_i, p_i) - m (m = margin, or margin * |guide_sim|
    when margin_strategy is "relative"); the own positive is never masked."""
    if margin_strategy not in ("absolute", "relative"):
        raise ValueError(f"margin_strategy must be 'absolute' or 'relative', got {margin_strategy!r}")
    if (negative is None) != (guide_negative is None):
        raise ValueError("give negative and guide_negative together")
    _check_pair(anchor, positive, "anchor and positive")
    with torch.no_grad():
        g_ap = _cos_matrix(guide_anchor, guide_positive)
        g_pos = g_ap.diagonal()[:, None]  # (N, 1): the guide's similarity of each true pair
        threshold = g_pos - (margin if margin_strategy == "absolute" else g_pos.abs() * margin)
    eye = torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)

    def masked(sim: torch.Tensor, guide: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        drop = guide > threshold
        if keep is not None:
            drop = drop & ~keep
        return sim.masked_fill(drop, float("-inf"))

    blocks = [masked(_cos_matrix(anchor, positive), g_ap, keep=eye)]
    if contrast_anchors:
        blocks.append(masked(_cos_matrix(anchor, anchor), _cos_matrix(guide_anchor, guide_anchor)))
    if contrast_positives:
        blocks.append(masked(_cos_matrix(positive, positive), _cos_matrix(guide_positive, guide_positive)))
    if negative is not None:
        blocks.append(masked(_cos_matrix(anchor, negative), _cos_matrix(guide_anchor, guide_negative)))
    logits = torch.cat(blocks, dim=1) / temperature
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))


class GISTEmbedLoss(nn.Module):
    """GISTEmbed with a guide: guide(list[str]) -> (n, D) embeddings (computed without gradients).
    forward(anchor, positive[, negative], texts=(anchor_texts, positive_texts[, negative_texts]))."""

    def __init__(self, guide: Callable[[list[str]], torch.Tensor], temperature: float = 0.01,
                 margin_strategy: str = "absolute", margin: float = 0.0, contrast_anchors: bool = True,
                 contrast_positives: bool = True):
        super().__init__()
        self.guide = guide
        self.kw = dict(temperature=temperature, margin_strategy=margin_strategy, margin=margin,
                       contrast_anchors=contrast_anchors, contrast_positives=contrast_positives)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None, *,
                texts: Sequence[Sequence[str]]) -> torch.Tensor:
        with torch.no_grad():
            g = [self.guide(list(t)) for t in texts]
        return gist_loss(anchor, positive, g[0], g[1], negative, g[2] if len(g) > 2 else None, **self.kw)


__all__ = ["pairwise_cos", "pairwise_dot", "pairwise_angle", "cosent_loss", "CoSENTLoss", "AnglELoss", "shrink",
           "MatryoshkaLoss", "mnrl_loss", "CachedMultipleNegativesRankingLoss", "margin_mse_loss", "kl_distill_loss",
           "gist_loss", "GISTEmbedLoss"]
