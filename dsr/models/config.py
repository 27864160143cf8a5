"""Model hyper-parameters, kept as a plain dataclass so they can be stored in checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from torch import nn

from dsr.models.attention_decoder import AttentionDecoder
from dsr.models.conformer import ConformerEncoder
from dsr.models.joiner import Joiner
from dsr.models.predictor import StatelessPredictor
from dsr.models.transducer import HybridTransducer

if TYPE_CHECKING:
    from dsr.models.whisper.dsr_modules import WhisperDecoderHead, WhisperEncoder


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`HybridTransducer` (weights aside).

    The defaults give a ~3.5 M-parameter model (vocab 256), small enough to train
    on a couple of CPU cores.  ``chunk_size`` counts encoder frames (after 4x
    subsampling, i.e. 40 ms each for 10 ms features); -1 is full attention.

    Heads: the transducer (``use_transducer``), CTC (``use_ctc``) and an attention
    decoder with ``attention_decoder_layers`` > 0; at least one of the first two.
    ``utterance_norm`` adds per-utterance CMN/CMVN after the global normalisation
    (:mod:`dsr.models.utterance_norm`).  Fields added later default to what older checkpoints were trained with.
    ``chunk_size``/``left_context_chunks`` are what :meth:`HybridTransducer.encode` uses
    by default (offline decoding, validation); streaming decoding takes its left context
    from ``left_context_chunks``.  The ``train_*`` fields are dynamic chunk training (see
    :class:`~dsr.models.conformer.ConformerEncoder`), kept so a checkpoint says how its
    model was trained to stream.
    """

    feature_dim: int = 80
    encoder_dim: int = 144
    num_encoder_layers: int = 6
    num_heads: int = 4
    # Heads of each Conformer layer, each of encoder_dim / num_heads dimensions, after head
    # pruning (dsr prune --drop-heads); () = num_heads in every layer.
    encoder_layer_heads: tuple[int, ...] = ()
    ffn_dim: int = 576
    conv_kernel_size: int = 15
    dropout: float = 0.1
    subsampling_channels: tuple[int, int] = (16, 64)
    decoder_dim: int = 256
    joiner_dim: int = 256
    context_size: int = 2
    causal: bool = False
    chunk_size: int = -1
    left_context_chunks: int = -1
    train_chunk_sizes: tuple[int, ...] = ()
    train_left_context_chunks: tuple[int, ...] = (-1,)
    train_full_context_prob: float = 0.0
    vocab_size: int = 256
    blank_id: int = 0
    use_ctc: bool = True
    use_transducer: bool = True
    attention_decoder_layers: int = 0
    attention_decoder_dim: int = 256
    attention_decoder_heads: int = 4
    attention_decoder_ffn_dim: int = 1024
    sos_eos_id: int = 1
    utterance_norm: str = "none"
    # A pretrained Whisper encoder instead of the Conformer (the conformer fields above are then
    # unused; feature_dim and encoder_dim follow whisper_dims), and optionally Whisper's decoder
    # as the attention head (attention_decoder_* unused), with its start prompt and end token.
    encoder_type: str = "conformer"
    whisper_dims: dict[str, int] | None = None
    whisper_decoder: bool = False
    whisper_prompt: tuple[int, ...] = ()
    whisper_eot: int = -1
    whisper_pad_30s: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (tuples become lists)."""
        d = asdict(self)
        for key in _TUPLE_FIELDS:
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.  Missing keys take their defaults (so older
        checkpoints keep loading); unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {unknown}")
        d = dict(d)
        for key in _TUPLE_FIELDS:
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


_TUPLE_FIELDS = (
    "subsampling_channels",
    "encoder_layer_heads",
    "train_chunk_sizes",
    "train_left_context_chunks",
    "whisper_prompt",
)
ENCODER_TYPES = ("conformer", "whisper")


def _build_encoder(cfg: ModelConfig) -> ConformerEncoder | WhisperEncoder:
    if cfg.encoder_type not in ENCODER_TYPES:
        raise ValueError(f"encoder_type must be one of {ENCODER_TYPES} (got {cfg.encoder_type!r})")
    if cfg.encoder_type == "whisper":
        from dsr.models.whisper.dsr_modules import WhisperEncoder
        from dsr.models.whisper.model import WhisperDims

        if cfg.whisper_dims is None:
            raise ValueError("encoder_type 'whisper' needs whisper_dims")
        dims = WhisperDims.from_dict(cfg.whisper_dims)
        if (cfg.feature_dim, cfg.encoder_dim) != (dims.n_mels, dims.n_audio_state):
            raise ValueError(
                f"feature_dim/encoder_dim {cfg.feature_dim}/{cfg.encoder_dim} do not match the Whisper "
                f"dims {dims.n_mels}/{dims.n_audio_state}"
            )
        return WhisperEncoder(dims, pad_to_30s=cfg.whisper_pad_30s)
    return ConformerEncoder(
        input_dim=cfg.feature_dim,
        d_model=cfg.encoder_dim,
        num_layers=cfg.num_encoder_layers,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        conv_kernel_size=cfg.conv_kernel_size,
        dropout=cfg.dropout,
        causal=cfg.causal,
        chunk_size=cfg.chunk_size,
        left_context_chunks=cfg.left_context_chunks,
        subsampling_channels=cfg.subsampling_channels,
        train_chunk_sizes=cfg.train_chunk_sizes,
        train_left_context_chunks=cfg.train_left_context_chunks,
        train_full_context_prob=cfg.train_full_context_prob,
        layer_heads=cfg.encoder_layer_heads,
    )


def _build_attention_decoder(cfg: ModelConfig) -> AttentionDecoder | WhisperDecoderHead | None:
    if cfg.whisper_decoder:
        from dsr.models.whisper.dsr_modules import WhisperDecoderHead
        from dsr.models.whisper.model import WhisperDims

        if cfg.whisper_dims is None:
            raise ValueError("whisper_decoder needs whisper_dims")
        return WhisperDecoderHead(WhisperDims.from_dict(cfg.whisper_dims), cfg.whisper_prompt, cfg.whisper_eot)
    if cfg.attention_decoder_layers > 0:
        return AttentionDecoder(
            vocab_size=cfg.vocab_size,
            encoder_dim=cfg.encoder_dim,
            d_model=cfg.attention_decoder_dim,
            num_layers=cfg.attention_decoder_layers,
            num_heads=cfg.attention_decoder_heads,
            ffn_dim=cfg.attention_decoder_ffn_dim,
            dropout=cfg.dropout,
            sos_eos_id=cfg.sos_eos_id,
        )
    if cfg.attention_decoder_layers < 0:
        raise ValueError(f"attention_decoder_layers must be >= 0 (got {cfg.attention_decoder_layers})")
    return None


def build_model(cfg: ModelConfig) -> HybridTransducer:
    """Instantiate the model described by ``cfg`` (randomly initialised)."""
    encoder = _build_encoder(cfg)
    predictor, joiner = None, None
    if cfg.use_transducer:
        predictor = StatelessPredictor(
            vocab_size=cfg.vocab_size, embed_dim=cfg.decoder_dim, blank_id=cfg.blank_id, context_size=cfg.context_size
        )
        joiner = Joiner(
            encoder_dim=cfg.encoder_dim,
            decoder_dim=cfg.decoder_dim,
            joiner_dim=cfg.joiner_dim,
            vocab_size=cfg.vocab_size,
        )
    attention_decoder = _build_attention_decoder(cfg)
    return HybridTransducer(
        encoder,
        predictor,
        joiner,
        vocab_size=cfg.vocab_size,
        blank_id=cfg.blank_id,
        ctc=cfg.use_ctc,
        attention_decoder=attention_decoder,
        utterance_norm=cfg.utterance_norm,
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
