"""Whisper (Radford et al., 2022) as PyTorch modules with OpenAI's parameter names.

dsr keeps its own copy of the architecture instead of transformers' ``WhisperModel``
(docs/DEPENDENCIES.md, "Whisper"): the encoder must run without the 30 s padding and
on padded batches (a key mask), the decoder needs a cross-attention mask and a
KV cache that beam search can reorder, and training must not depend on the LM extras.
The parameter names are those of OpenAI's checkpoints (``encoder.blocks.0.attn.query``),
so an OpenAI ``.pt`` state dict loads unchanged; :mod:`dsr.models.whisper.load` maps
the Hugging Face and CTranslate2 layouts onto them.  With no masks and the full 30 s
input the outputs equal OpenAI's and transformers' (tests/test_whisper_load.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Encoder input frames (10 ms each) of a full 30 s window; the encoder halves it.
N_FRAMES_30S = 3000


@dataclass(frozen=True)
class WhisperDims:
    """Whisper's hyper-parameters, named as in OpenAI's ``ModelDimensions``."""

    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"WhisperDims.{f.name} must be positive (got {getattr(self, f.name)})")
        if self.n_audio_state % self.n_audio_head or self.n_text_state % self.n_text_head:
            raise ValueError(f"state sizes must be divisible by the head counts: {self}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WhisperDims:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown WhisperDims keys: {unknown}")
        return cls(**{k: int(v) for k, v in d.items()})


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) sinusoidal positions, Whisper's encoder positional embedding."""
    if channels % 2:
        raise ValueError(f"channels must be even (got {channels})")
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activations' dtype (as OpenAI's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


@dataclass
class AttentionCache:
    """Keys and values of one attention layer, (N, H, S, D/H) each."""

    key: torch.Tensor
    value: torch.Tensor


@dataclass
class DecoderCache:
    """Per-layer self-attention and cross-attention keys/values of a decoding run.

    ``self_attn[i]`` grows by one position per step; ``cross_attn[i]`` is computed once
    from the encoder output.  :meth:`reorder` selects hypotheses (beam search).
    """

    self_attn: list[AttentionCache | None] = field(default_factory=list)
    cross_attn: list[AttentionCache] = field(default_factory=list)  # one per block, never None

    @property
    def length(self) -> int:
        first = self.self_attn[0] if self.self_attn else None
        return 0 if first is None else first.key.size(2)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N',) of every cached tensor (the batch dimension)."""
        for caches in (self.self_attn, self.cross_attn):
            for c in caches:
                if c is not None:
                    c.key, c.value = c.key.index_select(0, index), c.value.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Whisper's attention: ``key`` has no bias; scores scaled by ``d_head ** -0.5``."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state {n_state} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.n_head, d // self.n_head).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> AttentionCache:
        """(N, S, D) -> this layer's keys and values, (N, H, S, D/H) each."""
        return AttentionCache(self._heads(self.key(x)), self._heads(self.value(x)))

    def forward(
        self,
        x: torch.Tensor,
        kv: AttentionCache,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend from (N, T, D) queries ``x`` to ``kv``.

        ``mask``: boolean, broadcastable to (N, H, T, S), True where attention is allowed.
        ``is_causal``: the usual lower-triangular mask (only when T == S).
        """
        q = self._heads(self.query(x))
        out = F.scaled_dot_product_attention(q, kv.key, kv.value, attn_mask=mask, is_causal=is_causal)
        n, h, t, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(n, t, h * dh))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm Transformer block; with ``cross_attention`` a decoder block."""

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        causal: bool = False,
        self_cache: AttentionCache | None = None,
        cross_kv: AttentionCache | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, AttentionCache]:
        """Returns the block output and the self-attention keys/values up to this position."""
        h = self.attn_ln(x)
        kv = self.attn.project_kv(h)
        if self_cache is not None:
            kv = AttentionCache(torch.cat([self_cache.key, kv.key], 2), torch.cat([self_cache.value, kv.value], 2))
        # A cached prefix makes the square causal mask wrong; the new queries see it all.
        x = x + self.attn(h, kv, mask=self_mask, is_causal=causal and self_cache is None)
        if self.cross_attn is not None:
            assert self.cross_attn_ln is not None and cross_kv is not None
            x = x + self.cross_attn(self.cross_attn_ln(x), cross_kv, mask=cross_mask)
        x = x + self.mlp(self.mlp_ln(x))
        return x, kv


def conv_output_lengths(num_frames: torch.Tensor) -> torch.Tensor:
    """Encoder output frames for ``num_frames`` input frames (conv2: kernel 3, stride 2, pad 1)."""
    return (num_frames - 1) // 2 + 1


class AudioEncoder(nn.Module):
    """Two convolutions (the second with stride 2) and Transformer blocks over log-mel frames."""

    positional_embedding: torch.Tensor  # a buffer: declared so that type checkers do not see Tensor | Module

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer))
        self.ln_post = LayerNorm(n_state)
        self.activation_checkpointing = False

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, n_mels, T) log-mel, with (N,) valid frames -> (N, ceil(T / 2), n_state).

        Without the 30 s padding the positional embedding is sliced to the input (as
        ESPnet's Whisper encoder); inputs longer than 30 s are a ``ValueError``.  Padded
        frames of a batch are zeroed before the convolutions and masked out of the
        self-attention, so an utterance's output does not depend on what it is batched with.
        """
        if mel.dim() != 3:
            raise ValueError(f"expected (N, n_mels, T) log-mel, got shape {tuple(mel.shape)}")
        valid = None
        if lengths is not None and bool((lengths < mel.size(2)).any()):
            # Zero the padding before each convolution, as a lone utterance's zero padding would be:
            # then an utterance's output does not depend on what it is batched with.
            valid = torch.arange(mel.size(2), device=mel.device)[None, :] < lengths.to(mel.device)[:, None]
            valid = valid[:, None, :].to(mel.dtype)
            mel = mel * valid
        x = F.gelu(self.conv1(mel))
        if valid is not None:
            x = x * valid
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        t = x.size(1)
        if t > self.n_ctx:
            raise ValueError(
                f"input of {mel.size(2)} frames is longer than Whisper's {2 * self.n_ctx} (30 s); split the audio"
            )
        x = (x + self.positional_embedding[:t]).to(x.dtype)
        mask = None
        if lengths is not None:
            out_lens = conv_output_lengths(lengths)
            if bool((out_lens < t).any()):
                mask = (torch.arange(t, device=x.device)[None, :] < out_lens[:, None])[:, None, None, :]
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(
                    lambda y, b=block: b(y, self_mask=mask)[0], x, use_reentrant=False
                )
            else:
                x = block(x, self_mask=mask)[0]
        return self.ln_post(x)


class TextDecoder(nn.Module):
    """Token embedding, learned positions, causal blocks with cross-attention; logits tied to the embedding."""

    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)
        )
        self.ln = LayerNorm(n_state)
        # Set only by untie_output_projection (int8 decoding); None keeps the logits tied.
        self.output_projection: nn.Module | None = None

    @property
    def vocab_size(self) -> int:
        return self.token_embedding.num_embeddings

    def untie_output_projection(self) -> None:
        """Compute the logits with an ``nn.Linear`` holding the embedding matrix (the same
        values), so that int8 quantisation of Linear layers reaches the output projection.

        For tiny.en that (51864 x 384) product is ~60 % of a decoding step on one CPU thread:
        reading 80 MB of float32 weights per token. Only for inference copies: the Linear's
        weight is a separate tensor, so training would no longer tie the two.
        """
        weight = self.token_embedding.weight
        projection = nn.Linear(weight.size(1), weight.size(0), bias=False, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            projection.weight.copy_(weight)
        self.output_projection = projection

    def new_cache(self, xa: torch.Tensor) -> DecoderCache:
        """A cache holding the cross-attention keys/values of the (N, S, D) encoder output ``xa``."""
        return DecoderCache(self_attn=[None] * len(self.blocks), cross_attn=self._cross_kv(xa))

    def _cross_kv(self, xa: torch.Tensor) -> list[AttentionCache]:
        """Each block's cross-attention keys/values of the (N, S, D) encoder output ``xa``."""
        out = []
        for block in self.blocks:
            # Decoder blocks are built with cross_attention=True (ModuleList iterates as plain Modules).
            assert isinstance(block, ResidualAttentionBlock) and block.cross_attn is not None
            out.append(block.cross_attn.project_kv(xa))
        return out

    def forward(
        self,
        tokens: torch.Tensor,
        xa: torch.Tensor | None = None,
        xa_lens: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        """(N, L) tokens -> (N, L, n_vocab) logits.

        Args:
            tokens: the next tokens; with a ``cache`` they follow its ``cache.length`` positions.
            xa: (N, S, D) encoder output (not needed when ``cache`` holds it).
            xa_lens: (N,) valid encoder frames, masked in the cross-attention (None: all valid).
            cache: from :meth:`new_cache`; updated in place with the new self-attention keys/values.
        """
        offset = cache.length if cache is not None else 0
        length = tokens.size(1)
        if offset + length > self.n_ctx:
            raise ValueError(f"decoder input of {offset + length} tokens exceeds Whisper's {self.n_ctx}")
        x = self.token_embedding(tokens) + self.positional_embedding[offset : offset + length]
        if cache is None:
            if xa is None:
                raise ValueError("give the encoder output xa or a cache made from it")
            cross = self._cross_kv(xa)
            selfs: list[AttentionCache | None] = [None] * len(self.blocks)
        else:
            cross, selfs = cache.cross_attn, cache.self_attn
        s = cross[0].key.size(2)
        cross_mask = None
        if xa_lens is not None:
            cross_mask = (torch.arange(s, device=x.device)[None, :] < xa_lens.to(x.device)[:, None])[:, None, None, :]
        self_mask, causal = None, True
        if offset and length > 1:
            # New tokens see the whole cache and each other causally.
            tri = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            self_mask = torch.cat([torch.ones(length, offset, dtype=torch.bool, device=x.device), tri], 1)
            causal = False
        for i, block in enumerate(self.blocks):
            x, kv = block(
                x, self_mask=self_mask, causal=causal, self_cache=selfs[i], cross_kv=cross[i], cross_mask=cross_mask
            )
            if cache is not None:
                cache.self_attn[i] = kv
        x = self.ln(x)
        if self.output_projection is not None:
            return self.output_projection(x)
        return x @ self.token_embedding.weight.to(x.dtype).t()


class Whisper(nn.Module):
    """Encoder and decoder; ``state_dict()`` names are OpenAI's."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
        )
        self.decoder = TextDecoder(
            dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer
        )

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, T) log-mel and (N, L) tokens -> (N, L, n_vocab) logits."""
        return self.decoder(tokens, self.encoder(mel))
