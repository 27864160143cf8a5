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

from dsr.errors import DsrUserError
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import frontend_from_dict, frontend_to_dict
from dsr.models.config import ModelConfig, build_model
from dsr.models.conformer import ConformerEncoder
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
    ``lang_dir`` holds the ``tokens.txt`` the model was trained with.
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

    def validate(self) -> None:
        """Raise DsrUserError naming the flag when the options cannot work."""
        if (self.exp_dir is None) == (self.checkpoint is None):
            raise DsrUserError("give exactly one of --exp-dir (with --epoch/--avg) or --checkpoint")
        if self.exp_dir is not None and not Path(self.exp_dir).is_dir():
            raise DsrUserError(f"--exp-dir {self.exp_dir} is not a directory; pass the experiment directory of dsr train")
        if self.avg < 1:
            raise DsrUserError(f"--avg must be >= 1 (got {self.avg})")
        if not MIN_OPSET <= self.opset <= 21:
            raise DsrUserError(f"--opset must be in [{MIN_OPSET}, 21] (got {self.opset}); the default is {DEFAULT_OPSET}")
        tokens = Path(self.lang_dir) / "tokens.txt"
        if not tokens.is_file():
            raise DsrUserError(f"{tokens} does not exist; pass the --lang-dir the model was trained with (dsr lang)")


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
        raise DsrUserError(
            f"tokens.txt has {len(tokens)} tokens but the model's vocabulary is {cfg.vocab_size}; "
            "pass the --lang-dir the model was trained with"
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
        model, enc = self.model, self.model.encoder
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
    from dsr.training.checkpoint import load_checkpoint, resolve_model_checkpoint

    if options.checkpoint is not None:
        ckpt = load_checkpoint(options.checkpoint)
        if "model_config" not in ckpt or "model" not in ckpt:
            raise DsrUserError(f"--checkpoint {options.checkpoint} is not a dsr model checkpoint (no model_config)")
        return ckpt, Path(options.checkpoint).stem
    assert options.exp_dir is not None
    return resolve_model_checkpoint(options.exp_dir, options.epoch, options.avg, options.use_averaged_model)


def export_onnx(options: OnnxExportOptions) -> OnnxExportResult:
    """Load the model that ``options`` names and export it (see :func:`export_onnx_model`)."""
    options.validate()
    ckpt, tag = load_export_checkpoint(options)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    tokens_file = Path(options.lang_dir) / "tokens.txt"
    check_exportable(cfg, frontend, read_tokens(tokens_file))
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    result = export_onnx_model(model, cfg, frontend, tokens_file, Path(options.out_dir), options.opset, options.int8)
    result.tag = tag
    return result


def export_onnx_model(
    model: HybridTransducer,
    cfg: ModelConfig,
    frontend: dict[str, Any],
    tokens_file: Path,
    out_dir: Path,
    opset: int = DEFAULT_OPSET,
    int8: bool = True,
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
    """
    check_exportable(cfg, frontend, read_tokens(tokens_file))
    if cfg.causal and cfg.chunk_size > 0:
        logger.info("the model is causal: exported for offline decoding (whole utterances, chunked attention "
                    "mask kept); sherpa-onnx's streaming layout is not written (docs/DESIGN_NOTES.md)")
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
            _export_graph(
                _OnnxEncoder(model, project=True), (x, x_lens), out_dir / "encoder.onnx", ["x", "x_lens"],
                ["encoder_out", "encoder_out_lens"],
                {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"},
                 "encoder_out_lens": {0: "N"}},
                {**common, "model_type": "conformer", "joiner_dim": joiner_dim, "vocab_size": cfg.vocab_size,
                 "context_size": cfg.context_size, "subsampling_factor": 4},
                opset,
            )  # fmt: skip
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
        if model.ctc_output is not None:
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
