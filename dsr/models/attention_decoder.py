"""Transformer attention decoder (the "AED" head of icefall/WeNet hybrid models).

An autoregressive decoder over the encoder output: token embedding plus sinusoidal
positions, then pre-LN layers of causal self-attention, cross-attention to the
encoder output and a feed-forward module, a final LayerNorm and an output projection.

It is trained with label-smoothed cross entropy on ``[sos] + y -> y + [eos]`` and,
in decoding, rescores the n-best lists of the CTC or transducer searches
(:meth:`AttentionDecoder.score`).  One token, ``<sos/eos>``, both starts and ends a
sequence (ESPnet/WeNet convention; the tokenizer reserves id 1 for it).

Attention is ``scaled_dot_product_attention`` with boolean masks, as in the
encoder; padded token positions and padded encoder frames are masked out, so an
utterance's outputs do not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsr.losses.label_smoothing import label_smoothing_loss

IGNORE_ID = -1  # target value of padded positions (never a token id)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim) float32 table of the Transformer's sine/cosine position encodings."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table


class _MultiHeadAttention(nn.Module):
    """Multi-head attention by SDPA; queries from ``x``, keys/values from ``memory``.

    No dropout on the attention weights (it would force SDPA off its fused kernels,
    see the encoder); dropout is applied to the layer outputs instead.
    """

    def __init__(self, d_model: int, memory_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(memory_dim, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (N, L, D); memory: (N, S, memory_dim); mask: bool broadcastable to (N, H, L, S),
        True = attend, or None; -> (N, L, D)."""
        n, length, d = x.shape
        q = self.query(x).view(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.key_value(memory).view(n, memory.size(1), 2, self.num_heads, self.head_dim)
        k, v = kv.transpose(1, 3).unbind(2)  # each (N, H, S, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, L, Dh)
        return self.out(y.transpose(1, 2).reshape(n, length, d))


class AttentionDecoderLayer(nn.Module):
    """Pre-LN block: x + SelfAttn(LN x), + CrossAttn(LN x, memory), + FFN(LN x)."""

    def __init__(self, d_model: int, memory_dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = _MultiHeadAttention(d_model, d_model, num_heads)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = _MultiHeadAttention(d_model, memory_dim, num_heads)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: (N, L, D); self_mask: (N, 1, L, L) bool; memory: (N, T, memory_dim);
        memory_mask: (N, 1, 1, T) bool or None; -> (N, L, D)."""
        y = self.self_norm(x)
        x = x + self.dropout(self.self_attn(y, y, self_mask))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory, memory_mask))
        return x + self.dropout(self.ffn(x))


class AttentionDecoder(nn.Module):
    """Transformer decoder attending to the encoder output (see the module docstring).

    Args:
        vocab_size: number of tokens, including blank (the output layer covers all ids;
            blank is simply never a target).
        encoder_dim: dimension of the encoder output it attends to.
        d_model: decoder dimension; must be divisible by ``num_heads``.
        num_layers: decoder layers (>= 1).
        num_heads: attention heads.
        ffn_dim: feed-forward hidden size.
        dropout: dropout probability in [0, 1).
        sos_eos_id: the token that starts the decoder input and ends its output.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        d_model: int = 256,
        num_layers: int = 6,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        sos_eos_id: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("encoder_dim", encoder_dim),
            ("d_model", d_model),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("ffn_dim", ffn_dim),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive (got {value})")
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if d_model % 2 != 0:
            raise ValueError(f"d_model must be even for sine/cosine positions (got {d_model})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        if not 0 <= sos_eos_id < vocab_size:
            raise ValueError(f"sos_eos_id must be in [0, vocab_size={vocab_size}) (got {sos_eos_id})")
        self.vocab_size = vocab_size
        self.encoder_dim = encoder_dim
        self.d_model = d_model
        self.sos_eos_id = sos_eos_id
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            AttentionDecoderLayer(d_model, encoder_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def forward(
        self,
        encoder_out: torch.Tensor,
        encoder_lens: torch.Tensor,
        tokens_in: torch.Tensor,
        tokens_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Next-token logits for every input position.

        Args:
            encoder_out: (N, T, encoder_dim) encoder output.
            encoder_lens: (N,) valid encoder frames, each in [1, T].
            tokens_in: (N, L) decoder input (``[sos] + y`` padded with anything valid).
            tokens_lens: (N,) valid input positions, each in [1, L].

        Returns:
            (N, L, vocab_size) logits; position l predicts token l + 1 of the input and
            depends only on input positions <= l (and on valid encoder frames).
        """
        if encoder_out.dim() != 3 or encoder_out.size(2) != self.encoder_dim:
            raise ValueError(f"encoder_out must be (N, T, {self.encoder_dim}), got {tuple(encoder_out.shape)}")
        if tokens_in.dim() != 2 or tokens_in.size(0) != encoder_out.size(0):
            raise ValueError(f"tokens_in must be (N={encoder_out.size(0)}, L), got {tuple(tokens_in.shape)}")
        n, t = encoder_out.shape[:2]
        length = tokens_in.size(1)
        if encoder_lens.shape != (n,) or tokens_lens.shape != (n,):
            raise ValueError(
                f"encoder_lens and tokens_lens must be ({n},), got "
                f"{tuple(encoder_lens.shape)} and {tuple(tokens_lens.shape)}"
            )
        device = encoder_out.device
        x = self.embedding(tokens_in) * math.sqrt(self.d_model)
        x = self.embed_dropout(x + sinusoidal_positions(length, self.d_model, device).to(x.dtype))

        # Causal self-attention over valid positions.  A padded query still sees
        # position 0, so no row of the mask is empty (an empty row would give NaN).
        positions = torch.arange(length, device=device)
        causal = positions[None, :] <= positions[:, None]  # (L, L), query row, key column
        key_valid = positions[None, :] < tokens_lens.to(device)[:, None]  # (N, L)
        self_mask = (causal[None] & key_valid[:, None, :])[:, None]  # (N, 1, L, L)
        memory_mask = None
        if bool((encoder_lens != t).any()):
            memory_mask = (torch.arange(t, device=device)[None, :] < encoder_lens.to(device)[:, None])[:, None, None]
        for layer in self.layers:
            x = layer(x, self_mask, encoder_out, memory_mask)
        return self.output(self.final_norm(x))

    def make_inputs(
        self, tokens: list[list[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token lists -> ``tokens_in`` (N, U + 1) = sos + y (padded with eos),
        ``targets`` (N, U + 1) = y + eos (padded with -1) and ``lens`` (N,) = len(y) + 1;
        built on the CPU and moved to ``device`` once."""
        lens = [len(t) + 1 for t in tokens]
        max_len = max(lens, default=1)
        tokens_in = torch.full((len(tokens), max_len), self.sos_eos_id, dtype=torch.int64)
        targets = torch.full((len(tokens), max_len), IGNORE_ID, dtype=torch.int64)
        for i, seq in enumerate(tokens):
            if seq:
                row = torch.tensor(seq, dtype=torch.int64)
                tokens_in[i, 1 : len(seq) + 1] = row
                targets[i, : len(seq)] = row
            targets[i, len(seq)] = self.sos_eos_id
        if bool(((tokens_in < 0) | (tokens_in >= self.vocab_size)).any()):
            raise ValueError(f"tokens must be ids in [0, {self.vocab_size})")
        return tokens_in.to(device), targets.to(device), torch.tensor(lens, dtype=torch.int64).to(device)

    def loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lens: torch.Tensor,
        tokens: list[list[int]],
        label_smoothing: float = 0.1,
    ) -> torch.Tensor:
        """Label-smoothed cross entropy of ``tokens`` (each followed by eos), summed over
        the batch's target positions; a float32 scalar.

        Args:
            encoder_out: (N, T, encoder_dim); encoder_lens: (N,).
            tokens: N token-id lists (without sos/eos).
            label_smoothing: probability mass spread uniformly over the vocabulary, in [0, 1).
        """
        if len(tokens) != encoder_out.size(0):
            raise ValueError(f"got {len(tokens)} token lists for a batch of {encoder_out.size(0)}")
        tokens_in, targets, lens = self.make_inputs(tokens, encoder_out.device)
        logits = self(encoder_out, encoder_lens, tokens_in, lens)
        return label_smoothing_loss(logits, targets, label_smoothing, ignore_index=IGNORE_ID, reduction="sum")

    @torch.no_grad()
    def score(
        self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, hyps: list[list[list[int]]]
    ) -> list[list[float]]:
        """Log-probability of each hypothesis, eos included: ``sum_u log p(y_u | y_<u, x)``.

        All hypotheses of all utterances are scored in one batch (each one attends to
        a copy of its utterance's encoder output).

        Args:
            encoder_out: (N, T, encoder_dim); encoder_lens: (N,).
            hyps: N lists of token sequences (any number per utterance, possibly empty).

        Returns:
            The same nesting of Python floats.
        """

        def logits_and_targets(idx: torch.Tensor, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            tokens_in, targets, lens = self.make_inputs(seqs, encoder_out.device)
            return self(encoder_out[idx], encoder_lens.to(encoder_out.device)[idx], tokens_in, lens), targets

        return score_hypotheses(hyps, encoder_out.size(0), encoder_out.device, logits_and_targets)


def score_hypotheses(
    hyps: list[list[list[int]]],
    num_utts: int,
    device: torch.device,
    logits_and_targets: Callable[[torch.Tensor, list[list[int]]], tuple[torch.Tensor, torch.Tensor]],
) -> list[list[float]]:
    """Teacher-forced log-probabilities of N utterances' hypotheses, all in one batch.

    ``logits_and_targets(rows, seqs)`` runs a decoder on the hypotheses ``seqs`` (row ``i``
    attends to utterance ``rows[i]``) and returns (H, L, V) logits with (H, L) target ids,
    -1 where a position is not scored.  Returns the sums in the nesting of ``hyps``.
    """
    if len(hyps) != num_utts:
        raise ValueError(f"need one hypothesis list per utterance ({num_utts}), got {len(hyps)}")
    rows = [i for i, hs in enumerate(hyps) for _ in hs]
    if not rows:
        return [[] for _ in hyps]
    logits, targets = logits_and_targets(torch.tensor(rows, device=device), [list(s) for hs in hyps for s in hs])
    log_probs = logits.float().log_softmax(dim=-1)
    valid = targets != IGNORE_ID
    picked = log_probs.gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)  # (H, L)
    flat = (picked.double() * valid).sum(dim=1).tolist()
    out, k = [], 0
    for hs in hyps:
        out.append(flat[k : k + len(hs)])
        k += len(hs)
    return out
