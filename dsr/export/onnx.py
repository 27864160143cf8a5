"""``dsr export onnx``: a trained Conformer model as ONNX files that sherpa-onnx runs unchanged.

Layout written to ``out_dir`` (the facts and their sources are in docs/DESIGN_NOTES.md,
"ONNX export for sherpa-onnx")::

    encoder.onnx   x (N, T, 80) float32, x_lens (N,) int64
                   -> encoder_out (N, T', joiner_dim) float32, encoder_out_lens (N,) int64
                   metadata model_type=conformer (sherpa-onnx picks its offline transducer by it)
    decoder.onnx   y (N, context_size) int64 -> decoder_out (N, joiner_dim)
                   metadata vocab_size, context_size (read by sherpa-onnx)
    joiner.onnx    encoder_out (N, joiner_dim), decoder_out (N, joiner_dim) -> logit (N, vocab_size)
    ctc.onnx       x, x_lens -> log_probs (N, T', vocab_size), log_probs_len (N,)
                   metadata model_type=zipformer2_ctc (sherpa-onnx's icefall CTC layout)
    tokens.txt     copied from the lang dir (``<token> <id>``, ``<blk>`` = 0)
    *.int8.onnx    the same graphs with int8 MatMul weights (onnxruntime dynamic quantisation)

With ``streaming`` (a causal model) the same file names hold one chunk of each head, in the
layouts of sherpa-onnx's OnlineRecognizer::

    encoder.onnx   sherpa-onnx's online ``conformer`` transducer: x (N, 4C + 3, 80), cached_attn
                   (L, 2S, N, D), cached_conv (L, K - 1, N, D), processed_frames (N,) ->
                   encoder_out (N, C, joiner_dim), next_cached_attn, next_cached_conv; metadata
                   T, decode_chunk_len, left_context, encoder_dim, pad_length, cnn_module_kernel,
                   num_encoder_layers (:class:`_OnnxStreamingEncoder`); decoder/joiner as above
    ctc.onnx       sherpa-onnx's online ``zipformer2_ctc``: x (N, 4C + 3, 80), six states per
                   layer, embed_states, processed_lens -> log_probs (N, C, V) and the next
                   states; metadata T, decode_chunk_len and per-layer encoder_dims, num_heads,
                   query/value_head_dims, cnn_module_kernels, left_context_len
                   (:class:`_OnnxStreamingCtc`)

As in icefall's exports, the encoder graph ends with the joiner's encoder projection and
the decoder graph with its decoder projection, so the joiner graph is only
``output_linear(tanh(enc + dec))``, run once per frame.  The global CMVN and the
per-utterance normalisation are inside the encoder graph: sherpa-onnx feeds raw FBANK.

Only kaldi-fbank models whose settings equal sherpa-onnx's feature extractor are exported
(:func:`check_exportable`), because sherpa-onnx computes the features itself.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsr.errors import DsrUserError, OptionError
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import frontend_from_dict, frontend_to_dict
from dsr.models.config import ModelConfig, build_model
from dsr.models.conformer import ConformerEncoder, ConformerLayer, LayerCache
from dsr.models.streaming import SUBSAMPLING, window_frames
from dsr.models.transducer import HybridTransducer
from dsr.models.utterance_norm import normalize_utterances
from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

#: ONNX opset of the exported graphs: 17 has LayerNormalization as one op (the encoder's most
#: frequent one); onnxruntime >= 1.14 runs it, which every sherpa-onnx release since 1.7 bundles.
DEFAULT_OPSET = 17
#: Scaled-dot-product attention needs opset 14 in torch's exporter.
MIN_OPSET = 14

# sherpa-onnx's FeatureExtractorConfig (sherpa-onnx/csrc/features.h) for transducer and
# icefall-CTC models: kaldi-native-fbank with these options, samples in [-1, 1], no
# normalisation.  The remaining knf options (povey window, pre-emphasis 0.97, DC offset
# removal, power spectrum, log) are knf's defaults in both programs.
SHERPA_FBANK = FbankConfig(
    sampling_rate=16000, num_mel_bins=80, frame_shift_ms=10.0, frame_length_ms=25.0, dither=0.0,
    snip_edges=False, low_freq=20.0, high_freq=-400.0,
)  # fmt: skip


@dataclass
class OnnxExportOptions:
    """What to export and where.

    The model comes from ``exp_dir`` (``epoch``/``avg``/``use_averaged_model`` as in
    ``dsr decode``) or from one ``checkpoint`` file; exactly one of the two.
    ``lang_dir`` holds the ``tokens.txt`` the model was trained with.  With ``streaming``
    the heads of a causal model (transducer and/or CTC) are written in sherpa-onnx's online
    layouts, with chunks of ``chunk_ms`` and ``left_context_chunks`` chunks of left context
    (default: the model's own), as ``dsr decode --streaming --chunk-ms`` runs it.
    """

    out_dir: Path
    lang_dir: Path
    exp_dir: Path | None = None
    checkpoint: Path | None = None
    epoch: int = 0
    avg: int = 1
    use_averaged_model: bool = True
    opset: int = DEFAULT_OPSET
    int8: bool = True
    streaming: bool = False
    chunk_ms: float = 320.0
    left_context_chunks: int | None = None

    def validate(self) -> None:
        """Raise :class:`~dsr.errors.OptionError` naming the field when the options cannot work."""
        if (self.exp_dir is None) == (self.checkpoint is None):
            raise OptionError("give exactly one of {exp_dir} (with {epoch}/{avg}) or {checkpoint}")
        if self.exp_dir is not None and not Path(self.exp_dir).is_dir():
            raise OptionError(
                f"{{exp_dir}} {self.exp_dir} is not a directory; pass the experiment directory of dsr train"
            )
        if self.avg < 1:
            raise OptionError("avg", f"must be >= 1 (got {self.avg})")
        if not MIN_OPSET <= self.opset <= 21:
            raise OptionError(
                "opset", f"must be in [{MIN_OPSET}, 21] (got {self.opset}); the default is {DEFAULT_OPSET}"
            )
        tokens = Path(self.lang_dir) / "tokens.txt"
        if not tokens.is_file():
            raise OptionError(f"{tokens} does not exist; pass the {{lang_dir}} the model was trained with (dsr lang)")


@dataclass
class OnnxExportResult:
    """The files written (name -> path) and the model's description."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    tag: str = ""

    def summary(self) -> str:
        names = ", ".join(sorted(self.files))
        return f"{self.tag} -> {self.out_dir}: {names}"


def check_exportable(cfg: ModelConfig, frontend: dict[str, Any], tokens: list[str]) -> None:
    """Raise a one-line DsrUserError when sherpa-onnx could not run this model unchanged.

    Args:
        cfg: the model's configuration.
        frontend: its front end (:func:`dsr.features.frontend.frontend_to_dict` form).
        tokens: the symbols of ``tokens.txt`` in id order.
    """
    if cfg.encoder_type != "conformer":
        # sherpa-onnx's transducer/CTC recognisers compute Kaldi FBANK themselves; a Whisper
        # encoder needs Whisper's log-mel (other mel scale, log10, clamp to max - 8, scaling),
        # which they cannot be told to compute.  Its Whisper recogniser runs only Whisper's
        # own encoder-decoder layout, not dsr's transducer/CTC heads on Whisper's encoder.
        raise DsrUserError(
            f"cannot export a model with a pretrained {cfg.encoder_type} encoder: its front end is Whisper's "
            "log-mel, which sherpa-onnx's transducer and CTC recognisers do not compute (they compute Kaldi FBANK); "
            "export a Conformer model trained on kaldi-fbank features"
        )
    fe = frontend_from_dict(frontend)
    if frontend_to_dict(fe) != frontend_to_dict(SHERPA_FBANK):
        want = frontend_to_dict(SHERPA_FBANK)
        have = frontend_to_dict(fe)
        diff = ", ".join(f"{k} {have.get(k)} (sherpa-onnx: {want[k]})" for k in want if have.get(k) != want[k])
        raise DsrUserError(
            f"the model was trained on features sherpa-onnx does not compute: {diff}; retrain on dsr's default "
            "kaldi-fbank features (dsr features --feature-type kaldi-fbank)"
        )
    if cfg.blank_id != 0:
        raise DsrUserError(f"sherpa-onnx requires blank id 0; this model has blank_id {cfg.blank_id}")
    if len(tokens) != cfg.vocab_size:
        raise OptionError(
            f"tokens.txt has {len(tokens)} tokens but the model's vocabulary is {cfg.vocab_size}; "
            "pass the {lang_dir} the model was trained with"
        )
    if tokens[0] != "<blk>":
        raise DsrUserError(f"tokens.txt's token 0 is {tokens[0]!r}, but sherpa-onnx's CTC decoder needs '<blk>' there")


def read_tokens(path: Path) -> list[str]:
    """Symbols of a ``<token> <id>`` file in id order (DsrUserError if the ids are not 0..V-1)."""
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DsrUserError(f"{path}:{n}: expected '<token> <id>', got {line!r}; rebuild it with dsr lang")
        pairs.append((int(parts[1]), parts[0]))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DsrUserError(f"{path}: token ids are not 0..{len(pairs) - 1}; rebuild it with dsr lang")
    return [tok for _, tok in pairs]


# ----------------------------------------------------------------------------------------
# Graph wrappers: the model's computation without its data-dependent Python branches.


class _OnnxEncoder(nn.Module):
    """Features -> encoder output, with the padding masks always built.

    :meth:`ConformerEncoder.forward` skips the masks when no utterance of the batch is
    padded (a Python ``if`` on the lengths); a traced graph would keep whichever branch
    the example took, so this wrapper runs the same layers with the masks always on.
    With the masks on a full-length batch gives the same values (all keys visible).
    """

    def __init__(self, model: HybridTransducer, project: bool) -> None:
        super().__init__()
        if not isinstance(model.encoder, ConformerEncoder):
            raise ValueError(f"expected a ConformerEncoder, got {type(model.encoder).__name__}")
        self.model = model
        self.project = project

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, T, F) raw FBANK, x_lens: (N,) int64 -> (N, T', D) output, (N,) int64 lengths;
        D is the joiner dimension when ``project`` (transducer) else the encoder's."""
        model, enc = self.model, self.model.conformer_encoder()
        x = (x - model.feature_mean) / model.feature_std
        x = normalize_utterances(x, x_lens, model.utterance_norm)
        sub = enc.subsampling
        y = sub.conv(x.unsqueeze(1))  # (N, C, T', F')
        y = sub.out_norm(sub.out(y.transpose(1, 2).flatten(2)))  # (N, T', D)
        lens = sub.output_lengths(x_lens)
        t = y.size(1)
        positions = torch.arange(t, device=y.device)
        valid = positions[None, :] < lens[:, None]  # (N, T')
        pad_mask = ~valid[:, :, None]
        attn_mask = valid[:, None, None, :]  # (N, 1, 1, T'): keys only
        if enc.chunk_size > 0:
            # The (T, T) chunk mask equals the block-wise computation dsr uses for long inputs
            # (dsr.models.chunked_attention); padded queries see every key (no all-False rows).
            # chunk_attention_mask's formula, without its in-place ``&=`` (no ONNX symbolic).
            chunk = positions // enc.chunk_size
            distance = chunk[:, None] - chunk[None, :]  # query chunk minus key chunk
            visible = distance >= 0
            if enc.left_context_chunks >= 0:
                visible = visible & (distance <= enc.left_context_chunks)
            attn_mask = (visible & attn_mask) | pad_mask[:, None, :, :]
        angles = torch.outer(positions.float(), enc.rotary.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)[:, None, None, :]
        cos, sin = angles.cos(), angles.sin()
        for layer in enc.layers:
            y = layer(y, attn_mask, pad_mask, cos, sin)
        if self.project:
            assert model.joiner is not None
            y = model.joiner.encoder_proj(y)
        return y, lens


def _encode_stream_window(
    model: HybridTransducer, x: torch.Tensor, done: torch.Tensor, caches: list[LayerCache], chunk_size: int
) -> tuple[torch.Tensor, list[LayerCache]]:
    """One chunk of a causal encoder from fixed-size caches, as both streaming layouts run it.

    Args:
        model: the model (its global CMVN is applied here).
        x: (N, 4C + 3, F) raw FBANK window.
        done: (N,) int64 encoder frames of each stream before this chunk.
        caches: per layer, the rotated keys and values of the S frames before the chunk,
            (N, H, S, Dh) each, and the (N, D, K - 1) convolution inputs; rows for frames
            before the stream's first frame are ignored (masked), whatever they hold.
        chunk_size: C.

    Returns:
        (N, C, D) encoder output and, per layer, the caches of the last S frames.
    """
    enc = model.conformer_encoder()
    c = chunk_size
    x = (x - model.feature_mean) / model.feature_std
    sub = enc.subsampling
    y = sub.conv(x.unsqueeze(1))
    y = sub.out_norm(sub.out(y.transpose(1, 2).flatten(2)))  # (N, C, D)
    n = y.size(0)
    positions = done[:, None] + torch.arange(c)[None, :]  # (N, C) absolute frame indices
    angles = positions.float()[:, :, None] * enc.rotary.inv_freq  # (N, C, Dh / 2)
    angles = torch.cat((angles, angles), dim=-1)[:, :, None, None, :]  # (N, C, 1, 1, Dh)
    cos, sin = angles.cos(), angles.sin()
    s = caches[0].keys.size(2)
    # Cache row j holds frame done - S + j; rows before the stream's first frame are empty.
    cached_valid = (done[:, None] - s + torch.arange(s)[None, :]) >= 0  # (N, S)
    attn_mask = torch.cat([cached_valid, torch.ones(n, c, dtype=torch.bool)], dim=1)[:, None, None, :]
    next_caches = []
    for layer, cache in zip(enc.layers, caches):
        assert isinstance(layer, ConformerLayer)  # the encoder's layers (a ModuleList iterates as plain Modules)
        y, cache = layer.forward_chunk(y, attn_mask, None, cos, sin, cache)
        next_caches.append(LayerCache(cache.keys[:, :, c:], cache.values[:, :, c:], cache.conv))
    return y, next_caches


class _OnnxStreamingEncoder(nn.Module):
    """One chunk of a causal encoder with its state as inputs/outputs, in the layout of
    sherpa-onnx's online ``conformer`` transducer (sherpa-onnx/csrc/online-conformer-transducer-model.cc).

    sherpa-onnx treats the two state tensors as opaque: it creates them as zeros of shape
    (num_encoder_layers, left_context, N, encoder_dim) and (num_encoder_layers,
    cnn_module_kernel - 1, N, encoder_dim) from the metadata, concatenates and splits streams
    along dim 2, and passes back what the graph returned.  dsr's state per layer is the
    rotated keys and values of the last S = left_context_chunks * C frames and the K - 1 inputs
    of the causal convolution (:class:`~dsr.models.conformer.LayerCache`): the keys fill rows
    0..S-1 of the attention state and the values rows S..2S-1 (so its ``left_context`` is 2S),
    heads flattened into encoder_dim.  Rows of frames before the stream's start are zeros
    that the attention mask hides (``processed_frames``, the stream's feature frames so far,
    says how many exist), which is what dsr's growing cache computes.  A layer with pruned
    heads (H Dh < D, :mod:`dsr.models.prune`) uses the first H Dh columns and returns zeros in
    the others: sherpa-onnx sizes every layer's state from the one ``encoder_dim``.
    """

    def __init__(self, model: HybridTransducer, chunk_size: int, left_context_chunks: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.cache_frames = left_context_chunks * chunk_size

    def forward(
        self, x: torch.Tensor, cached_attn: torch.Tensor, cached_conv: torch.Tensor, processed_frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 4C + 3, F) raw FBANK window; cached_attn: (L, 2S, N, D); cached_conv: (L, K - 1, N, D);
        processed_frames: (N,) int64 feature frames consumed before this window (a multiple of 4C)
        -> (N, C, joiner_dim) projected encoder output and the two next states."""
        model, s = self.model, self.cache_frames
        assert model.joiner is not None
        n, d = x.size(0), cached_attn.size(-1)
        caches = []
        for i, layer in enumerate(model.conformer_encoder().layers):
            assert isinstance(layer, ConformerLayer)
            h, dh = layer.attn.num_heads, layer.attn.head_dim
            state = cached_attn[i, :, :, : h * dh]  # (2S, N, H Dh): the layer's heads
            keys = state[:s].permute(1, 0, 2).reshape(n, s, h, dh).transpose(1, 2)  # (N, H, S, Dh)
            values = state[s:].permute(1, 0, 2).reshape(n, s, h, dh).transpose(1, 2)
            caches.append(LayerCache(keys, values, cached_conv[i].permute(1, 2, 0)))  # conv: (N, D, K - 1)
        y, caches = _encode_stream_window(model, x, processed_frames // SUBSAMPLING, caches, self.chunk_size)
        next_attn, next_conv = [], []
        for cache in caches:
            h, dh = cache.keys.size(1), cache.keys.size(3)
            keys = cache.keys.transpose(1, 2).reshape(n, s, h * dh).permute(1, 0, 2)  # (S, N, H Dh)
            values = cache.values.transpose(1, 2).reshape(n, s, h * dh).permute(1, 0, 2)
            state = torch.cat([keys, values], dim=0)
            if h * dh < d:
                state = nn.functional.pad(state, (0, d - h * dh))  # (2S, N, D)
            next_attn.append(state)
            next_conv.append(cache.conv.permute(2, 0, 1))  # (K - 1, N, D)
        return model.joiner.encoder_proj(y), torch.stack(next_attn), torch.stack(next_conv)


#: sherpa-onnx's zipformer2 convolutional front end keeps a (N, 128, 3, 19) state
#: (online-zipformer2-ctc-model.cc, InitStates); dsr's front end needs none (the windows overlap).
ZIPFORMER2_EMBED_STATE = (128, 3, 19)
#: The six per-layer states of sherpa-onnx's online zipformer2 CTC layout, in its order.
ZIPFORMER2_LAYER_STATES = ("cached_key", "cached_nonlin_attn", "cached_val1", "cached_val2", "cached_conv1",
                           "cached_conv2")  # fmt: skip


class _OnnxStreamingCtc(nn.Module):
    """One chunk of a causal encoder + CTC head in the layout of sherpa-onnx's online
    ``zipformer2_ctc`` model (sherpa-onnx/csrc/online-zipformer2-ctc-model.cc).

    sherpa-onnx creates zeros from the metadata for six states per layer, then a (N, 128, 3,
    19) front-end state and ``processed_lens`` (N,) int64, concatenates streams along dim 1
    (the first four per layer) or dim 0 (the rest), and feeds back what the graph returned;
    it never reads them.  Each dsr layer is one zipformer2 "stack" of one layer, so a layer
    with pruned heads has state of its own head count.  Per layer (S = left_context_chunks * C):

    - ``cached_key`` (S, N, H Dh): the rotated keys of the last S frames;
    - ``cached_val1`` / ``cached_val2`` (S, N, H Dh / 2): the first / second half of each
      head's values (``value_head_dims`` = Dh / 2, so no value column is carried twice);
    - ``cached_conv1`` / ``cached_conv2`` (N, D, K // 2): the K - 1 inputs of the causal
      convolution, split in two (the second padded with one zero column when K is even);
    - ``cached_nonlin_attn`` (1, N, S, 3D / 4): zipformer's own, returned unchanged.

    ``embed_states`` is returned unchanged too; ``processed_lens`` counts each stream's
    encoder frames (rotary positions, and the mask of cache rows from before the stream's
    start, as in :class:`_OnnxStreamingEncoder`) and comes back increased by C.
    """

    def __init__(self, model: HybridTransducer, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (N, 4C + 3, F) raw FBANK window, then the 6 L + 2 states above
        -> (N, C, V) CTC log-probabilities and the next states in the same order."""
        model = self.model
        layers = model.conformer_encoder().layers
        embed_states, processed_lens = states[-2], states[-1]
        n = x.size(0)
        caches = []
        for i, layer in enumerate(layers):
            assert isinstance(layer, ConformerLayer)
            key, _, val1, val2, conv1, conv2 = states[6 * i : 6 * i + 6]
            h, dh, k = layer.attn.num_heads, layer.attn.head_dim, layer.conv.kernel_size
            s = key.size(0)
            keys = key.permute(1, 0, 2).reshape(n, s, h, dh).transpose(1, 2)  # (N, H, S, Dh)
            values = torch.cat([val1.reshape(s, n, h, dh // 2), val2.reshape(s, n, h, dh // 2)], dim=-1)
            values = values.permute(1, 2, 0, 3)  # (N, H, S, Dh)
            conv = torch.cat([conv1, conv2], dim=2)[:, :, : k - 1]  # (N, D, K - 1)
            caches.append(LayerCache(keys, values, conv))
        y, caches = _encode_stream_window(model, x, processed_lens, caches, self.chunk_size)
        next_states: list[torch.Tensor] = []
        for i, (layer, cache) in enumerate(zip(layers, caches)):
            assert isinstance(layer, ConformerLayer)
            h, s, dh = cache.keys.shape[1:]
            half = layer.conv.kernel_size // 2
            values = cache.values.permute(2, 0, 1, 3)  # (S, N, H, Dh)
            conv2 = cache.conv[:, :, half:]
            next_states += [
                cache.keys.permute(2, 0, 1, 3).reshape(s, n, h * dh),
                states[6 * i + 1],
                values[..., : dh // 2].reshape(s, n, h * dh // 2),
                values[..., dh // 2 :].reshape(s, n, h * dh // 2),
                cache.conv[:, :, :half],
                nn.functional.pad(conv2, (0, half - conv2.size(2))),
            ]
        log_probs = model.ctc_log_probs(y)
        return (log_probs, *next_states, embed_states, processed_lens + self.chunk_size)


class _OnnxDecoder(nn.Module):
    """Stateless predictor + the joiner's decoder projection (icefall's decoder.onnx)."""

    def __init__(self, model: HybridTransducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (N, context_size) int64 (-1 = no token yet) -> (N, joiner_dim)."""
        assert self.model.predictor is not None and self.model.joiner is not None
        return self.model.joiner.decoder_proj(self.model.predictor(y, need_pad=False)).squeeze(1)


class _OnnxJoiner(nn.Module):
    """The joiner on projected inputs: ``output_linear(tanh(enc + dec))``."""

    def __init__(self, model: HybridTransducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """(N, joiner_dim), (N, joiner_dim) -> (N, vocab_size) logits."""
        assert self.model.joiner is not None
        return self.model.joiner(encoder_out, decoder_out, project_input=False)


class _OnnxCtc(nn.Module):
    """Encoder + CTC head: features -> log-probabilities."""

    def __init__(self, model: HybridTransducer) -> None:
        super().__init__()
        self.encoder = _OnnxEncoder(model, project=False)
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, F), (N,) -> (N, T', V) log-probabilities, (N,) int64 lengths."""
        y, lens = self.encoder(x, x_lens)
        return self.model.ctc_log_probs(y), lens


# ----------------------------------------------------------------------------------------


def _export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    metadata: dict[str, Any],
    opset: int,
) -> None:
    """Export ``module`` to ``path`` atomically, with ``metadata`` as ONNX metadata_props."""
    # A new wrapper module is in training mode, and torch.onnx.export restores the mode it
    # found, recursively: without this the wrapped model would be left with dropout on.
    module.eval()
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export (dynamo=True),
            # which cannot trace the length-dependent masks without data-dependent guards;
            # the TorchScript exporter records them as graph ops (see DESIGN_NOTES).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(tmp), input_names=input_names, output_names=output_names,
                dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
        add_metadata(tmp, metadata)


def add_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Set ONNX ``metadata_props`` (strings) of the model file ``path`` in place."""
    import onnx

    m = onnx.load(str(path))
    existing = {p.key: p for p in m.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            p = m.metadata_props.add()
            p.key, p.value = key, str(value)
    onnx.save(m, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def quantize_int8_onnx(src: Path, dst: Path, op_types: tuple[str, ...] = ("MatMul",)) -> None:
    """Int8 copy of ``src`` (dynamic quantisation of ``op_types``' weights), metadata kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp:
        quantize_dynamic(
            model_input=str(src), model_output=str(tmp), op_types_to_quantize=list(op_types),
            weight_type=QuantType.QInt8,
        )  # fmt: skip
        # quantize_dynamic copies the graph, not always the metadata: sherpa-onnx needs it.
        add_metadata(tmp, read_metadata(src))


def load_export_checkpoint(options: OnnxExportOptions) -> tuple[dict[str, Any], str]:
    """The checkpoint dict (averaged as asked) and its tag."""
    from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint

    if options.checkpoint is not None:
        ckpt = load_checkpoint(options.checkpoint, "checkpoint")
        if "model_config" not in ckpt or "model" not in ckpt:
            raise OptionError(f"{{checkpoint}} {options.checkpoint} is not a dsr model checkpoint (no model_config)")
        return ckpt, Path(options.checkpoint).stem
    assert options.exp_dir is not None
    return resolve_model_checkpoint(options.exp_dir, options.epoch, options.avg, options.use_averaged_model)


def require_export_packages(int8: bool = True) -> None:
    """DsrUserError naming the install command when onnx (or, for int8, onnxruntime) is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if (name == "onnx" or int8) and
               importlib.util.find_spec(name) is None]  # fmt: skip
    if missing:
        raise DsrUserError(
            f"dsr export onnx needs {' and '.join(missing)}: run bash tools/setup.sh --export "
            "(or pip install onnx onnxruntime)"
        )


def export_onnx(options: OnnxExportOptions) -> OnnxExportResult:
    """Load the model that ``options`` names and export it (see :func:`export_onnx_model`)."""
    options.validate()
    require_export_packages(options.int8)
    ckpt, tag = load_export_checkpoint(options)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    tokens_file = Path(options.lang_dir) / "tokens.txt"
    check_exportable(cfg, frontend, read_tokens(tokens_file))
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    streaming = None
    if options.streaming:
        from dsr.decoding.streaming import streaming_options

        opts = streaming_options(model, options.chunk_ms, options.left_context_chunks)
        streaming = StreamingExport(opts.chunk_size, opts.left_context_chunks)
    result = export_onnx_model(
        model, cfg, frontend, tokens_file, Path(options.out_dir), options.opset, options.int8, streaming
    )
    result.tag = tag
    return result


@dataclass(frozen=True)
class StreamingExport:
    """The chunking of a streaming export: ``chunk_size`` C encoder frames (4C + 3 feature
    frames per call, 4C new), ``left_context_chunks`` L >= 1 chunks of attention state."""

    chunk_size: int
    left_context_chunks: int


def check_streamable(cfg: ModelConfig, streaming: StreamingExport) -> None:
    """:class:`~dsr.errors.OptionError` (naming the export's options) unless the model can be
    exported in sherpa-onnx's streaming layout."""
    if not cfg.causal:
        raise OptionError(
            "streaming",
            "needs a model with causal convolutions (dsr train --causal --chunk-sizes ...); "
            "export this one without `streaming`",
        )
    if cfg.utterance_norm != "none":
        raise OptionError(
            f"a model with utterance_norm {cfg.utterance_norm!r} needs the whole utterance and cannot "
            "stream; export it without {streaming}"
        )
    if cfg.use_ctc and cfg.conv_kernel_size < 2:
        # Its convolution keeps no state, and sherpa-onnx's CTC layout would make it zero-sized.
        raise OptionError(
            "streaming",
            "cannot export the CTC head of a model with conv_kernel_size 1: sherpa-onnx's online CTC "
            "layout splits the convolution state in two halves of K // 2 frames",
        )
    if streaming.chunk_size < 1:
        raise OptionError("chunk_ms", f"must give at least one encoder frame (got {streaming.chunk_size})")
    if streaming.left_context_chunks < 1:
        # sherpa-onnx allocates the state from metadata with a fixed size: an unbounded (-1)
        # left context has none, and 0 would make a zero-sized tensor.
        raise OptionError(
            "left_context_chunks",
            f"must be >= 1 for a streaming export (got {streaming.left_context_chunks}): sherpa-onnx keeps a "
            "fixed-size attention state; dsr decode --streaming --left-context-chunks N gives the matching "
            "PyTorch result",
        )


def export_onnx_model(
    model: HybridTransducer,
    cfg: ModelConfig,
    frontend: dict[str, Any],
    tokens_file: Path,
    out_dir: Path,
    opset: int = DEFAULT_OPSET,
    int8: bool = True,
    streaming: StreamingExport | None = None,
) -> OnnxExportResult:
    """Write the sherpa-onnx files of ``model`` (its transducer and/or CTC head) to ``out_dir``.

    Args:
        model: a trained model (moved to the CPU and eval mode here).
        cfg: its configuration (context size, vocabulary).
        frontend: the front end it was trained on (:func:`frontend_to_dict` form); it
            must be sherpa-onnx's (:func:`check_exportable`).
        tokens_file: its ``tokens.txt``, copied as is.
        out_dir: created if missing; existing files of the same names are replaced.
        opset: ONNX opset.
        int8: also write ``<name>.int8.onnx`` for every graph.
        streaming: write the heads in sherpa-onnx's online (streaming) layouts instead, with
            this chunking: the transducer as an online conformer transducer, the CTC head as an
            online zipformer2 CTC model (same file names).
    """
    check_exportable(cfg, frontend, read_tokens(tokens_file))
    if streaming is not None:
        check_streamable(cfg, streaming)
    model = model.cpu().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    result = OnnxExportResult(out_dir)
    # Example input: two utterances of different lengths, so the masks are exercised.
    x = torch.zeros(2, 100, cfg.feature_dim)
    x_lens = torch.tensor([100, 71], dtype=torch.int64)
    common = {"model_author": "dsr", "version": "1", "dsr_model_config": json.dumps(cfg.to_dict()),
              "dsr_frontend": json.dumps(frontend_to_dict(SHERPA_FBANK))}  # fmt: skip
    with torch.no_grad():
        if model.has_transducer:
            assert model.joiner is not None
            joiner_dim = model.joiner.joiner_dim
            if streaming is None:
                _export_graph(
                    _OnnxEncoder(model, project=True), (x, x_lens), out_dir / "encoder.onnx", ["x", "x_lens"],
                    ["encoder_out", "encoder_out_lens"],
                    {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"},
                     "encoder_out_lens": {0: "N"}},
                    {**common, "model_type": "conformer", "joiner_dim": joiner_dim, "vocab_size": cfg.vocab_size,
                     "context_size": cfg.context_size, "subsampling_factor": 4},
                    opset,
                )  # fmt: skip
            else:
                _export_streaming_encoder(model, cfg, streaming, out_dir / "encoder.onnx", common, opset)
            y = torch.tensor([[-1] * (cfg.context_size - 1) + [0], [0] * cfg.context_size], dtype=torch.int64)
            _export_graph(
                _OnnxDecoder(model), (y,), out_dir / "decoder.onnx", ["y"], ["decoder_out"],
                {"y": {0: "N"}, "decoder_out": {0: "N"}},
                {**common, "vocab_size": cfg.vocab_size, "context_size": cfg.context_size, "joiner_dim": joiner_dim},
                opset,
            )  # fmt: skip
            e = torch.zeros(2, joiner_dim)
            _export_graph(
                _OnnxJoiner(model), (e, e), out_dir / "joiner.onnx", ["encoder_out", "decoder_out"], ["logit"],
                {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
                {**common, "joiner_dim": joiner_dim, "vocab_size": cfg.vocab_size},
                opset,
            )  # fmt: skip
            for name in ("encoder", "decoder", "joiner"):
                result.files[f"{name}.onnx"] = out_dir / f"{name}.onnx"
        if model.ctc_output is not None and streaming is not None:
            _export_streaming_ctc(model, cfg, streaming, out_dir / "ctc.onnx", common, opset)
            result.files["ctc.onnx"] = out_dir / "ctc.onnx"
        elif model.ctc_output is not None:
            _export_graph(
                _OnnxCtc(model), (x, x_lens), out_dir / "ctc.onnx", ["x", "x_lens"], ["log_probs", "log_probs_len"],
                {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T_out"},
                 "log_probs_len": {0: "N"}},
                {**common, "model_type": "zipformer2_ctc", "vocab_size": cfg.vocab_size, "subsampling_factor": 4},
                opset,
            )  # fmt: skip
            result.files["ctc.onnx"] = out_dir / "ctc.onnx"
    if int8:
        for name in list(result.files):
            stem = name[: -len(".onnx")]
            # The decoder is an embedding (Gather) and a tiny convolution: quantise its Gather
            # too, as icefall does; elsewhere only the MatMul weights are int8.
            ops = ("MatMul", "Gather") if stem == "decoder" else ("MatMul",)
            quantize_int8_onnx(result.files[name], out_dir / f"{stem}.int8.onnx", ops)
            result.files[f"{stem}.int8.onnx"] = out_dir / f"{stem}.int8.onnx"
    with atomic_path(out_dir / "tokens.txt") as tmp:
        shutil.copyfile(tokens_file, tmp)
    result.files["tokens.txt"] = out_dir / "tokens.txt"
    return result


def _export_streaming_encoder(
    model: HybridTransducer,
    cfg: ModelConfig,
    streaming: StreamingExport,
    path: Path,
    common: dict[str, Any],
    opset: int,
) -> None:
    """encoder.onnx in sherpa-onnx's online ``conformer`` layout (see :class:`_OnnxStreamingEncoder`)."""
    c, s = streaming.chunk_size, streaming.left_context_chunks * streaming.chunk_size
    layers, d, k = cfg.num_encoder_layers, cfg.encoder_dim, cfg.conv_kernel_size
    window = window_frames(c)
    # Two streams at different positions (one starting, one 5 chunks in), so the graph keeps
    # processed_frames' effect on the mask and the rotary positions.
    args = (
        torch.zeros(2, window, cfg.feature_dim), torch.zeros(layers, 2 * s, 2, d), torch.zeros(layers, k - 1, 2, d),
        torch.tensor([0, 5 * SUBSAMPLING * c], dtype=torch.int64),
    )  # fmt: skip
    _export_graph(
        _OnnxStreamingEncoder(model, c, streaming.left_context_chunks), args, path,
        ["x", "cached_attn", "cached_conv", "processed_frames"], ["encoder_out", "next_cached_attn", "next_cached_conv"],
        {"x": {0: "N"}, "cached_attn": {2: "N"}, "cached_conv": {2: "N"}, "processed_frames": {0: "N"},
         "encoder_out": {0: "N"}, "next_cached_attn": {2: "N"}, "next_cached_conv": {2: "N"}},
        {**common, "model_type": "conformer", "num_encoder_layers": layers, "T": window,
         "decode_chunk_len": SUBSAMPLING * c, "left_context": 2 * s, "encoder_dim": d,
         "pad_length": window - SUBSAMPLING * c, "cnn_module_kernel": k, "dsr_chunk_size": c,
         "dsr_left_context_chunks": streaming.left_context_chunks, "vocab_size": cfg.vocab_size,
         "context_size": cfg.context_size},
        opset,
    )  # fmt: skip


def _export_streaming_ctc(
    model: HybridTransducer,
    cfg: ModelConfig,
    streaming: StreamingExport,
    path: Path,
    common: dict[str, Any],
    opset: int,
) -> None:
    """ctc.onnx in sherpa-onnx's online ``zipformer2_ctc`` layout (see :class:`_OnnxStreamingCtc`)."""
    c, s = streaming.chunk_size, streaming.left_context_chunks * streaming.chunk_size
    d, k = cfg.encoder_dim, cfg.conv_kernel_size
    conformer_layers = [layer for layer in model.conformer_encoder().layers if isinstance(layer, ConformerLayer)]
    heads = [layer.attn.num_heads for layer in conformer_layers]
    dh = conformer_layers[0].attn.head_dim  # the same in every layer (pruning removes whole heads)
    window = window_frames(c)
    batch = 2
    states: list[torch.Tensor] = []
    axes: dict[str, dict[int, str]] = {}
    for i, h in enumerate(heads):
        # The shapes sherpa-onnx's InitStates builds from the metadata below (N = batch), and
        # the axis along which its StackStates concatenates streams.
        shapes = [(s, batch, h * dh), (1, batch, s, 3 * d // 4), (s, batch, h * dh // 2), (s, batch, h * dh // 2),
                  (batch, d, k // 2), (batch, d, k // 2)]  # fmt: skip
        for name, shape, batch_dim in zip(ZIPFORMER2_LAYER_STATES, shapes, (1, 1, 1, 1, 0, 0)):
            states.append(torch.zeros(shape))
            axes[f"{name}_{i}"] = {batch_dim: "N"}
    # Two streams at different positions (one starting, one 5 chunks in), so the graph keeps
    # processed_lens' effect on the mask and the rotary positions.
    states += [torch.zeros(batch, *ZIPFORMER2_EMBED_STATE), torch.tensor([0, 5 * c], dtype=torch.int64)]
    axes |= {"embed_states": {0: "N"}, "processed_lens": {0: "N"}}
    names = list(axes)
    out_names = ["log_probs"] + [f"new_{name}" for name in names]
    dynamic_axes = {"x": {0: "N"}, "log_probs": {0: "N"}} | axes | {f"new_{n}": a for n, a in axes.items()}

    def per_layer(value: int) -> str:
        return ",".join([str(value)] * len(heads))

    _export_graph(
        _OnnxStreamingCtc(model, c), (torch.zeros(batch, window, cfg.feature_dim), *states), path, ["x", *names],
        out_names, dynamic_axes,
        {**common, "model_type": "zipformer2", "T": window, "decode_chunk_len": SUBSAMPLING * c,
         "encoder_dims": per_layer(d), "num_encoder_layers": per_layer(1), "num_heads": ",".join(map(str, heads)),
         "query_head_dims": per_layer(dh), "value_head_dims": per_layer(dh // 2),
         "cnn_module_kernels": per_layer(k), "left_context_len": per_layer(s), "vocab_size": cfg.vocab_size,
         "dsr_chunk_size": c, "dsr_left_context_chunks": streaming.left_context_chunks},
        opset,
    )  # fmt: skip
