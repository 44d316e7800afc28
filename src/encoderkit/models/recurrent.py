"""Recurrent sequence-to-sequence models (Sutskever et al. 2014; Cho et al. 2014) and Bahdanau attention
(Bahdanau, Cho and Bengio 2015).

    encoder:    h_1..h_T = RNN(E x_1..E x_T)            GRU or LSTM, optionally bidirectional (h_j = [fwd; bwd])
    bridge:     s_0 = tanh(W_b [h_T^fwd; h_1^bwd])       the decoder's initial state
    attention:  e_tj = v^T tanh(W_s s_{t-1} + W_h h_j)   additive score, padded positions get -inf
                a_tj = softmax_j(e_tj),   c_t = sum_j a_tj h_j
    no attention: c_t = c = W_c [h_T^fwd; h_1^bwd]       one fixed context vector for every step (the bottleneck)
    decoder:    s_t = RNNCell([E y_{t-1}; c_t], s_{t-1}),  p(y_t) = softmax(W_o [s_t; c_t; E y_{t-1}])

Training uses teacher forcing (the gold y_{t-1} is fed); `greedy_decode` feeds back its own argmax.
Token ids: 0 = padding, 1 = beginning of sequence, 2 = end of sequence; the rest is the task's vocabulary."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD, BOS, EOS = 0, 1, 2


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int  # source token ids 0..src_vocab_size-1 (0 = padding)
    tgt_vocab_size: int  # target token ids (0 = padding, 1 = BOS, 2 = EOS)
    cell: str = "gru"  # "gru" or "lstm", for both encoder and decoder
    embed_dim: int = 32  # token embedding size (source and target tables are separate)
    hidden_size: int = 128  # decoder state size; each encoder direction has hidden_size // directions
    bidirectional: bool = True  # encoder reads the source both ways
    attention: bool = True  # Bahdanau attention; False = a single fixed context vector
    attention_dim: int = 128  # size of the additive score's hidden layer (v has this many entries)
    dropout: float = 0.0  # on embeddings and on the output layer's input
    model_type: str = "seq2seq"


def _check_cell(cell: str) -> str:
    if cell not in ("gru", "lstm"):
        raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
    return cell


class RNNEncoder(nn.Module):
    """Embedding + GRU/LSTM over padded id sequences; returns per-position states and a summary of the sequence."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, cell: str = "gru",
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.directions = 2 if bidirectional else 1
        if hidden_size % self.directions:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by the {self.directions} directions")
        self.cell = _check_cell(cell)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(embed_dim, hidden_size // self.directions, batch_first=True, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.out_size = hidden_size

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor):
        """ids (B, T), lengths (B,) -> (states (B, T, H), final h (B, H), final c (B, H) or None).
        Packing makes the backward direction start at each sequence's last real token, not at the padding."""
        x = self.drop(self.embed(ids))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, T, H)
        h, c = (hidden, None) if self.cell == "gru" else hidden  # (directions, B, H/dir)
        h = h.transpose(0, 1).reshape(ids.shape[0], -1)  # (B, H): [fwd last; bwd first]
        if c is not None:
            c = c.transpose(0, 1).reshape(ids.shape[0], -1)
        return states, h, c


class BahdanauAttention(nn.Module):
    """Additive attention: e_j = v^T tanh(W_s s + W_h h_j), a = softmax over the valid positions."""

    def __init__(self, query_size: int, key_size: int, attention_dim: int):
        super().__init__()
        self.W_s = nn.Linear(query_size, attention_dim, bias=False)
        self.W_h = nn.Linear(key_size, attention_dim, bias=True)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """W_h h_j for all positions, computed once per source sentence. (B, T, A)"""
        return self.W_h(keys)

    def scores(self, query: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        """e_j = v^T tanh(W_s s + W_h h_j). query (B, Hs), projected_keys (B, T, A) -> (B, T)"""
        return self.v(torch.tanh(self.W_s(query).unsqueeze(1) + projected_keys)).squeeze(-1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Hs), keys (B, T, Hk), mask (B, T) true at real tokens -> (context (B, Hk), weights (B, T))."""
        pk = self.project_keys(keys) if projected_keys is None else projected_keys
        e = self.scores(query, pk).masked_fill(~mask, float("-inf"))  # (B, T)
        a = torch.softmax(e, dim=-1)  # (B, T), zero at padding
        return torch.bmm(a.unsqueeze(1), keys).squeeze(1), a  # (B, Hk), (B, T)


class RNNDecoder(nn.Module):
    """One step at a time: s_t = Cell([E y_{t-1}; c_t], s_{t-1}); logits = W_o [s_t; c_t; E y_{t-1}]."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, context_size: int, cell: str = "gru",
                 attention: bool = True, attention_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.cell = _check_cell(cell)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        step = nn.GRUCell if cell == "gru" else nn.LSTMCell
        self.rnn = step(embed_dim + context_size, hidden_size)
        self.attn = BahdanauAttention(hidden_size, context_size, attention_dim) if attention else None
        self.out = nn.Linear(hidden_size + context_size + embed_dim, vocab_size)
        self.drop = nn.Dropout(dropout)

    def step(self, y_prev: torch.Tensor, state, memory: dict):
        """y_prev (B,) ids, state h (B, H) or (h, c) -> (logits (B, V), new state, attention weights (B, T) or None)."""
        emb = self.drop(self.embed(y_prev))  # (B, E)
        h_prev = state if self.cell == "gru" else state[0]
        if self.attn is not None:
            ctx, a = self.attn(h_prev, memory["states"], memory["mask"], memory["projected"])
        else:
            ctx, a = memory["context"], None  # the same vector at every step
        state = self.rnn(torch.cat([emb, ctx], dim=-1), state)
        h = state if self.cell == "gru" else state[0]
        logits = self.out(self.drop(torch.cat([h, ctx, emb], dim=-1)))  # (B, V)
        return logits, state, a


class Seq2Seq(nn.Module):
    """Encoder-decoder with or without Bahdanau attention; `forward` = teacher-forced logits,
    `greedy_decode` = argmax decoding until EOS."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        _check_cell(c.cell)
        self.encoder = RNNEncoder(c.src_vocab_size, c.embed_dim, c.hidden_size, c.cell, c.bidirectional, c.dropout)
        self.bridge = nn.Linear(c.hidden_size, c.hidden_size)  # s_0 = tanh(W_b h_final)
        self.bridge_c = nn.Linear(c.hidden_size, c.hidden_size) if c.cell == "lstm" else None
        self.context = None if c.attention else nn.Linear(c.hidden_size, c.hidden_size)  # c = W_c h_final
        self.decoder = RNNDecoder(c.tgt_vocab_size, c.embed_dim, c.hidden_size, c.hidden_size, c.cell, c.attention,
                                  c.attention_dim, c.dropout)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        """-> (initial decoder state, memory dict for the decoder steps)."""
        if src.dim() != 2 or src_lengths.shape != src.shape[:1]:
            raise ValueError(f"src must be (B, T) and src_lengths (B,), got {tuple(src.shape)} and {tuple(src_lengths.shape)}")
        if int(src_lengths.min()) < 1 or int(src_lengths.max()) > src.shape[1]:
            raise ValueError(f"src_lengths must be in 1..{src.shape[1]}, got {src_lengths.tolist()}")
        states, h, c = self.encoder(src, src_lengths)
        mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_lengths.to(src.device)[:, None]  # (B, T)
        s0 = torch.tanh(self.bridge(h))
        state = s0 if self.bridge_c is None else (s0, torch.tanh(self.bridge_c(c)))
        memory = {"states": states, "mask": mask}
        if self.decoder.attn is not None:
            memory["projected"] = self.decoder.attn.project_keys(states)  # (B, T, A)
        else:
            memory["context"] = self.context(h)  # (B, H)
        return state, memory

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tgt_in (B, U) starts with BOS; returns logits (B, U, V) predicting tgt_in shifted left."""
        state, memory = self.encode(src, src_lengths)
        logits = []
        for t in range(tgt_in.shape[1]):
            lg, state, _ = self.decoder.step(tgt_in[:, t], state, memory)
            logits.append(lg)
        return torch.stack(logits, dim=1)  # (B, U, V)

    def loss(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of tgt (B, U) = BOS y_1 .. y_n EOS PAD..; padding is ignored."""
        logits = self(src, src_lengths, tgt[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, src_lengths: torch.Tensor, max_len: int,
                      return_attention: bool = False):
        """Argmax decoding. Returns a list of id lists (EOS and what follows removed), and with
        return_attention the (B, steps, T) attention weights (None without attention)."""
        state, memory = self.encode(src, src_lengths)
        B = src.shape[0]
        y = torch.full((B,), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        out, attn = [], []
        for _ in range(max_len):
            lg, state, a = self.decoder.step(y, state, memory)
            y = lg.argmax(-1)
            out.append(y)
            if a is not None:
                attn.append(a)
            done |= y == EOS
            if bool(done.all()):
                break
        ids = torch.stack(out, 1).tolist()  # (B, steps)
        seqs = [row[: row.index(EOS)] if EOS in row else row for row in ids]
        if return_attention:
            return seqs, (torch.stack(attn, 1) if attn else None)
        return seqs


# ---------------------------------------------------------------------------------------------- the task
def reversal_batch(lengths: list[int], n_symbols: int, generator: torch.Generator):
    """Sequence reversal: random symbols (ids 3..3+n_symbols-1) -> the same symbols reversed.
    Returns src (B, T) padded with 0, src lengths (B,), tgt (B, U) = BOS reversed EOS padded."""
    B, T = len(lengths), max(lengths)
    src = torch.zeros(B, T, dtype=torch.long)
    tgt = torch.zeros(B, T + 2, dtype=torch.long)
    for i, n in enumerate(lengths):
        s = torch.randint(3, 3 + n_symbols, (n,), generator=generator)
        src[i, :n] = s
        tgt[i, 0], tgt[i, 1:n + 1], tgt[i, n + 1] = BOS, s.flip(0), EOS
    return src, torch.as_tensor(lengths), tgt


def exact_match_by_length(model: Seq2Seq, lengths: list[int], n_per_length: int, n_symbols: int, seed: int = 1234,
                          batch_size: int = 250) -> dict[int, float]:
    """Held-out exact-match accuracy of reversing n_per_length fresh random sequences of each length."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    acc = {}
    for L in lengths:
        hits = 0
        for s in range(0, n_per_length, batch_size):
            n = min(batch_size, n_per_length - s)
            src, sl, tgt = reversal_batch([L] * n, n_symbols, g)
            pred = model.greedy_decode(src, sl, max_len=L + 2)
            gold = [row[1:L + 1] for row in tgt.tolist()]
            hits += sum(p == t for p, t in zip(pred, gold))
        acc[L] = hits / n_per_length
    return acc


def train_reversal(config: Seq2SeqConfig, *, min_len: int, max_len: int, n_symbols: int, steps: int,
                   batch_size: int = 64, lr: float = 3e-3, seed: int = 0, grad_clip: float = 1.0,
                   log_every: int = 0, log=None) -> Seq2Seq:
    """Train on fresh random batches (lengths uniform in min_len..max_len), AdamW with linear decay.
    Every model gets the same budget: `steps` batches of `batch_size` sequences."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Seq2Seq(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.05, 1 - s / steps))
    model.train()
    for step in range(steps):
        lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g).tolist()
        src, sl, tgt = reversal_batch(lengths, n_symbols, g)
        loss = model.loss(src, sl, tgt)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        if log is not None and log_every and (step + 1) % log_every == 0:
            log(step + 1, loss.item())
    return model.eval()
