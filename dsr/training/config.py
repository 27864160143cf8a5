"""``dsr train`` options: one dataclass is the YAML schema, the CLI flags and the saved config.

YAML keys are the flag names (``max-duration`` or ``max_duration``); explicit
flags override the file; the resolved result is written to ``exp/<name>/config.yaml``.
The model's options are a dataclass of their own, :class:`ModelOptions` (``cfg.model``),
whose fields are flags and keys like the others (:meth:`TrainConfig.flat_fields`).
Validation raises :class:`~dsr.errors.OptionError`, which names fields; ``dsr train``
shows them as flags.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dsr.errors import DsrUserError, OptionError


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class ModelOptions:
    """The model's architecture as ``dsr train`` options, nested in :class:`TrainConfig` as ``cfg.model``.

    Its fields are flags and YAML keys of their own (``--encoder-dim``, ``encoder-dim:``), flattened
    into TrainConfig's by :meth:`TrainConfig.flat_fields`; the defaults here are dsr train's, the only
    place they are written.  (:class:`~dsr.models.config.ModelConfig`'s own defaults describe what
    older checkpoints were built with, and are not read by training.)  :meth:`model_config_fields`
    turns them into ModelConfig fields; the vocabulary's come from the tokenizer.
    """

    utterance_norm: str = opt(
        "none",
        "Per-utterance feature normalisation after the global one: none, mean (CMN per mel bin: "
        "removes recording level and channel) or mean-var (CMVN). Applied in training and decoding alike; "
        "such a model cannot stream. On FSDD --gain-db worked better.",
    )
    encoder_dim: int = opt(192, "Conformer model dimension.")
    num_encoder_layers: int = opt(6, "Number of Conformer blocks.")
    num_heads: int = opt(4, "Attention heads per block.")
    encoder_layer_heads: str = opt(
        "",
        "Heads of each block, comma-separated, each in [1, num-heads] and of encoder-dim/num-heads dimensions: "
        "the shape of a model whose heads dsr prune removed ('' = num-heads in every block).",
    )
    ffn_dim: int = opt(768, "Feed-forward hidden size.")
    conv_kernel_size: int = opt(15, "Depthwise convolution kernel size.")
    subsampling_channels: str = opt(
        "16,64",
        "Channels of the two convolutions of the 4x subsampling front end; the second costs "
        "their product per position; 8,32 saved ~6 % per update on the embedded recipe but cost WER there.",
    )
    dropout: float = opt(0.1, "Dropout probability.")
    decoder_dim: int = opt(256, "Stateless predictor embedding size.")
    joiner_dim: int = opt(256, "Joiner hidden size.")
    context_size: int = opt(2, "Tokens of left context seen by the stateless predictor.")
    use_transducer: bool = opt(
        True, "Train the transducer head; --no-use-transducer trains CTC (+ attention decoder) only."
    )
    attention_decoder_layers: int = opt(0, "Layers of a Transformer attention-decoder head (0 = no such head).")
    attention_decoder_dim: int = opt(256, "Attention decoder model dimension.")
    attention_decoder_heads: int = opt(4, "Attention decoder attention heads.")
    attention_decoder_ffn_dim: int = opt(1024, "Attention decoder feed-forward hidden size.")
    # Streaming and long audio
    causal: bool = opt(False, "Causal (left-only) depthwise convolutions; dsr decode --streaming needs them.")
    chunk_sizes: str = opt(
        "",
        "Dynamic chunk training: comma-separated attention chunk sizes in encoder frames (40 ms each), one "
        "drawn per batch, e.g. 8,16,32 ('' = full attention). With --causal the model can stream.",
    )
    left_context_chunks: str = opt(
        "-1",
        "With --chunk-sizes: comma-separated attention left contexts in chunks (-1 = all), one drawn per "
        "batch; a bounded one keeps memory linear in utterance length. Streaming decoding uses the largest.",
    )
    full_context_prob: float = opt(
        0.5, "With --chunk-sizes: share of batches trained with full attention, so the model also decodes offline."
    )

    def validate(self) -> None:
        from dsr.models.utterance_norm import UTTERANCE_NORMS  # torch: not at CLI start-up

        if self.utterance_norm not in UTTERANCE_NORMS:
            raise OptionError(
                f"{{utterance_norm}} must be one of {', '.join(UTTERANCE_NORMS)}, got {self.utterance_norm}"
            )
        if self.utterance_norm != "none" and self.chunk_sizes:
            raise OptionError("{utterance_norm} needs whole utterances; fix: drop it or {chunk_sizes} (streaming)")
        # The Conformer checks these too, but with its own argument names and a traceback.
        for name in (
            "encoder_dim",
            "num_encoder_layers",
            "num_heads",
            "ffn_dim",
            "decoder_dim",
            "joiner_dim",
            "context_size",
        ):
            if getattr(self, name) <= 0:
                raise OptionError(f"{{{name}}} must be > 0, got {getattr(self, name)}")
        if self.encoder_dim % self.num_heads or (self.encoder_dim // self.num_heads) % 2:
            raise OptionError(
                f"{{encoder_dim}} ({self.encoder_dim}) must split over {{num_heads}} ({self.num_heads}) "
                "into an even head dimension (rotary positions rotate pairs of dimensions)"
            )
        layer_heads = int_list(self.encoder_layer_heads, "encoder_layer_heads")
        if layer_heads and (
            len(layer_heads) != self.num_encoder_layers or not all(1 <= h <= self.num_heads for h in layer_heads)
        ):
            raise OptionError(
                f"{{encoder_layer_heads}} must give one head count in [1, {{num_heads}}={self.num_heads}] for each of "
                f"the {{num_encoder_layers}}={self.num_encoder_layers} blocks, or be empty; got {self.encoder_layer_heads!r}"
            )
        if self.conv_kernel_size <= 0 or (not self.causal and self.conv_kernel_size % 2 == 0):
            raise OptionError(
                f"{{conv_kernel_size}} must be positive, and odd without {{causal}}; got {self.conv_kernel_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"{{dropout}} must be in [0, 1), got {self.dropout}")
        channels = int_list(self.subsampling_channels, "subsampling_channels")
        if len(channels) != 2 or min(channels) <= 0:
            raise OptionError(
                f"{{subsampling_channels}} must be two positive integers, e.g. 8,32; got {self.subsampling_channels!r}"
            )
        if any(c <= 0 for c in int_list(self.chunk_sizes, "chunk_sizes")):
            raise OptionError(
                f"{{chunk_sizes}} must be positive encoder-frame counts, e.g. 8,16,32; got {self.chunk_sizes!r}"
            )
        lefts = int_list(self.left_context_chunks, "left_context_chunks")
        if not lefts or any(left < -1 for left in lefts):
            raise OptionError(
                f"{{left_context_chunks}} must list values >= -1 (-1 = all), e.g. 2,4,-1; "
                f"got {self.left_context_chunks!r}"
            )
        if not 0.0 <= self.full_context_prob < 1.0:
            raise OptionError(
                f"{{full_context_prob}} must be in [0, 1), got {self.full_context_prob} "
                "(for full attention only, leave {chunk_sizes} empty)"
            )
        if self.attention_decoder_layers < 0:
            raise OptionError(f"{{attention_decoder_layers}} must be >= 0, got {self.attention_decoder_layers}")
        if self.attention_decoder_layers > 0:
            dim, heads = self.attention_decoder_dim, self.attention_decoder_heads
            if dim <= 0 or heads <= 0 or dim % heads or dim % 2 or self.attention_decoder_ffn_dim <= 0:
                raise OptionError(
                    f"{{attention_decoder_dim}} ({dim}) must be even and divisible by {{attention_decoder_heads}} ({heads}), "
                    f"and {{attention_decoder_ffn_dim}} ({self.attention_decoder_ffn_dim}) positive"
                )

    def model_config_fields(self) -> dict[str, Any]:
        """The :class:`~dsr.models.config.ModelConfig` fields these options set (all but the vocabulary's)."""
        copied = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_MODEL_CONFIG_FIELDS}
        return {
            **copied,
            "subsampling_channels": int_list(self.subsampling_channels, "subsampling_channels"),
            "encoder_layer_heads": int_list(self.encoder_layer_heads, "encoder_layer_heads"),
            **self.chunking(),
        }

    def chunking(self) -> dict[str, Any]:
        """The :class:`~dsr.models.config.ModelConfig` fields of the streaming options.

        The model's default attention (offline decoding, validation) is full when some
        batches train with it, else the largest chunk; its default left context, which
        streaming decoding uses, is the largest one trained with.
        """
        sizes = int_list(self.chunk_sizes, "chunk_sizes")
        if not sizes:
            return {"causal": self.causal}
        lefts = int_list(self.left_context_chunks, "left_context_chunks")
        return {
            "causal": self.causal,
            "chunk_size": -1 if self.full_context_prob > 0 else max(sizes),
            "left_context_chunks": -1 if -1 in lefts else max(lefts),
            "train_chunk_sizes": sizes,
            "train_left_context_chunks": lefts,
            "train_full_context_prob": self.full_context_prob,
        }


# Options that are not ModelConfig fields under their own name: the chunking strings become
# chunk_size/train_* (see ModelOptions.chunking), the channels and head-count strings tuples.
_NOT_MODEL_CONFIG_FIELDS = frozenset(
    {"subsampling_channels", "encoder_layer_heads", "chunk_sizes", "left_context_chunks", "full_context_prob"}
)


@dataclass
class TrainConfig:
    # Data
    exp_dir: str = opt("exp/conformer", "Output directory for checkpoints, logs and config.yaml.")
    train_cuts: str = opt(
        "data/fbank/synth_cuts_train.jsonl.gz",
        "Cuts manifest with features to train on; several, comma-separated, are concatenated.",
    )
    dev_cuts: str = opt("data/fbank/synth_cuts_dev.jsonl.gz", "Cuts manifest for validation loss ('' to skip).")
    lang_dir: str = opt("data/lang_bpe_256", "Directory with bpe.model and tokens.txt.")
    max_duration: float = opt(200.0, "Seconds of audio per batch (dynamic bucketing).")
    min_utt_duration: float = opt(0.3, "Skip utterances shorter than this (seconds).")
    max_utt_duration: float = opt(30.0, "Skip utterances longer than this (seconds).")
    num_buckets: int = opt(10, "Duration buckets of the sampler.")
    num_workers: int = opt(0, "DataLoader worker processes (0 = load in the main process).")
    feature_cache_mb: float = opt(
        2048.0,
        "Keep up to this many MB of decoded training/dev features in memory (per loader process; "
        "0 = read from disk every epoch). Saves ~8 ms per update on the embedded recipe, whose 12000 "
        "training cuts take ~0.9 GB.",
    )
    speed_perturbed: bool = opt(
        True,
        "Train on the 0.9x/1.1x copies that `dsr features --speed-perturb` added to the train cuts "
        "(ids ending in _sp0.9/_sp1.1); --no-speed-perturbed keeps the original-speed cuts only "
        "(Whisper's pretrained decoder learns the speaker's words, not new voices).",
    )
    sortagrad_epochs: int = opt(0, "Epochs at the start that visit utterances from shortest to longest (curriculum).")
    spec_augment: bool = opt(True, "Apply SpecAugment (frequency and time masks) to training batches.")
    gain_db: float = opt(
        0.0,
        "Volume perturbation: shift each training utterance's level by a random gain in "
        "[-G, G] dB (e.g. 20; 0 = off). Makes the model robust to recording level.",
    )
    freq_warp: float = opt(
        0.0,
        "Vocal tract length perturbation: warp each utterance's mel frequency axis by up to this "
        "relative amount (e.g. 0.1; 0 = off). Helps with few training speakers.",
    )
    edge_trim: float = opt(
        0.0,
        "Edge trimming: cut a random 0..S seconds off the start and off the end of each training "
        "utterance (each edge with probability 0.5, keeping >= --edge-trim-keep; e.g. 0.35; 0 = off). For corpora "
        "whose files were trimmed into the speech, such as FSDD.",
    )
    endpoint_trim_db: float = opt(
        0.0,
        "Endpoint trimming: on each edge of a training utterance (probability 0.5) cut the frames "
        "quieter than a random threshold drawn in [D/2, D] dB below its loudest frame, as a silence "
        "remover would (e.g. 40; 0 = off). Like --edge-trim, but weak sounds go first.",
    )
    edge_trim_keep: float = opt(
        0.6, "With --edge-trim/--endpoint-trim-db: the fraction of each utterance always kept, in (0, 1]."
    )
    # Model (flags and YAML keys of its own fields, in place: see flat_fields)
    model: ModelOptions = field(default_factory=ModelOptions, metadata={"nested": True})
    # Loss
    prune_range: int = opt(5, "Symbols kept per frame by the pruned RNN-T loss.")
    lm_scale: float = opt(0.25, "LM-only smoothing scale of the simple loss.")
    am_scale: float = opt(0.0, "AM-only smoothing scale of the simple loss.")
    simple_loss_scale: float = opt(0.5, "Weight of the simple (linear joiner) loss after warm-up.")
    ctc_loss_scale: float = opt(0.2, "Weight of the CTC loss (0 disables the CTC head's loss).")
    model_warm_step: int = opt(500, "Steps over which weight moves from the simple to the pruned loss.")
    ctc_encoder_warmup_steps: int = opt(
        0,
        "Steps during which only CTC trains the encoder (the transducer losses still train predictor "
        "and joiner); their gradient into the encoder is then ramped in over as many steps again. "
        "Needs --ctc-loss-scale > 0.",
    )
    rnnt_backend: str = opt("dsr", "Pruned RNN-T implementation: dsr, fast_rnnt or k2.")
    attention_loss_scale: float = opt(0.8, "Weight of the attention decoder's cross entropy (with a decoder).")
    label_smoothing: float = opt(0.1, "Label smoothing of the attention decoder's cross entropy.")
    # Distillation
    teacher: str = opt(
        "",
        "Teacher to distil from: a checkpoint file, or an exp dir (the model dsr decode loads by default); "
        "'' = none.  It must share the tokenizer and the encoder frame rate; any architecture.",
    )
    distill_scale: float = opt(1.0, "Weight of the distillation KL terms (with --teacher).")
    distill_temperature: float = opt(1.0, "Softmax temperature of the distillation KL (scaled by its square).")
    distill_heads: str = opt(
        "ctc",
        "Posteriors to match with --teacher: ctc (frame posteriors), joiner (pruned joiner outputs on the "
        "student's prune ranges; both models need a transducer) or ctc,joiner.",
    )
    # Optimisation
    num_epochs: int = opt(10, "Number of epochs to train.")
    start_epoch: int = opt(0, "Epoch to start from; 0 resumes from the latest checkpoint in exp-dir if any.")
    base_lr: float = opt(2e-3, "Peak learning rate.")
    warmup_steps: int = opt(300, "Linear learning-rate warm-up steps.")
    lr_decay_epochs: float = opt(6.0, "Eden-style decay: lr halves roughly every few of these epochs.")
    weight_decay: float = opt(1e-3, "AdamW weight decay.")
    adam_beta2: float = opt(0.98, "AdamW second-moment decay; below 0.999 it forgets the large first gradients sooner.")
    grad_clip: float = opt(5.0, "Gradient-norm clipping threshold.")
    seed: int = opt(42, "Random seed.")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto.")
    dtype: str = opt("float32", "Autocast dtype: float32, bfloat16 or float16.")
    num_threads: int = opt(0, "torch CPU threads (0 = torch's default).")
    activation_checkpointing: bool = opt(
        False,
        "Recompute each Conformer layer's activations in the backward pass instead of keeping them: "
        "much less activation memory for about one more forward pass of the encoder; same results.",
    )
    qat_int8: bool = opt(
        False,
        "Quantisation-aware training for dsr export onnx's int8 files: every Linear layer computes with the "
        "int8 weights and uint8 inputs onnxruntime's dynamic quantisation will use (straight-through gradients); "
        "fine-tune with --init-from when post-training int8 loses accuracy. Checkpoints stay plain float models.",
    )
    # Fine-tuning
    init_from: str = opt(
        "",
        "Start from the weights of this checkpoint (.pt) or experiment directory (its newest epoch, averaged "
        "as dsr decode does) with a fresh optimizer and schedule; ignored when the run resumes its own checkpoints. "
        "With --pretrained: a model fine-tuned from that Whisper, whose weights replace Whisper's.",
    )
    init_exclude: str = opt(
        "",
        "Comma-separated parameter-name patterns (fnmatch; 'joiner.output_linear' covers joiner.output_linear.*) that "
        "--init-from leaves randomly initialised, e.g. the vocabulary-sized layers for another BPE model.",
    )
    freeze: str = opt(
        "",
        "Comma-separated parameter-name patterns (fnmatch; 'encoder' covers encoder.*) whose parameters "
        "are not trained.",
    )
    # Pretrained Whisper (dsr/models/whisper)
    pretrained: str = opt(
        "",
        "Build the model on a pretrained Whisper encoder: whisper-tiny.en, whisper-base (installed by "
        "tools/setup.sh --whisper), or a Whisper directory/file (dsr whisper convert output, OpenAI .pt, "
        "Hugging Face or CTranslate2 dir). The transducer and CTC heads start random on --lang-dir's BPE; "
        "the Conformer options are ignored. Needs whisper-fbank features (dsr features --feature-type whisper-fbank).",
    )
    whisper_decoder: bool = opt(
        True,
        "With --pretrained: Whisper's own decoder (and tokenizer) as the attention head, trained with "
        "--attention-loss-scale; --no-whisper-decoder leaves it out (smaller, faster training).",
    )
    whisper_pad_30s: bool = opt(
        False,
        "With --pretrained: run the encoder on Whisper's 30 s window (zero-padded log-mel, as zero-shot "
        "Whisper and faster-whisper do) instead of each utterance's own frames: ~10x the encoder cost for 3 s "
        "utterances, but the decoder keeps the input it was trained on. For the Whisper decoder alone: needs "
        "--no-use-transducer --ctc-loss-scale 0 (the alignment heads would read the padding); usually with "
        "--freeze encoder.",
    )
    whisper_language: str = opt(
        "en", "With --pretrained multilingual Whisper: the language token of the Whisper decoder's prompt."
    )
    pretrained_lr_scale: float = opt(
        0.2,
        "With --pretrained: learning rate of the pretrained parameters relative to --base-lr (the new heads get --base-lr).",
    )
    freeze_encoder_steps: int = opt(
        0,
        "With --pretrained (or --init-from): keep the encoder frozen for the first N updates while the new "
        "heads learn to read it, then train it too.",
    )
    freeze_encoder_keep_top: int = opt(
        0, "With --freeze-encoder-steps: the top K encoder layers train from the start (all but them are frozen)."
    )
    # Speech-LLM (dsr/models/speech_llm.py, dsr/training/speech_llm.py)
    speech_llm: str = opt(
        "",
        "Train a speech-LLM instead of a transducer: the encoder (--pretrained Whisper, or --init-from a dsr "
        "checkpoint) -> frame-stacking projector -> this causal LLM (a Hugging Face directory or .gguf file; "
        "'default' = SmolLM2-135M-Instruct from tools/setup.sh --lm). Checkpoints hold the projector, adapters and "
        "encoder, not the LLM. Decode with dsr decode -m speech-llm-greedy / speech-llm-beam-search.",
    )
    speech_llm_stage: int = opt(
        1,
        "With --speech-llm: 1 trains the projector only (encoder and LLM frozen); 2 the projector and LoRA "
        "adapters on the LLM (and --speech-llm-encoder-top encoder layers), usually with --init-from the stage-1 exp dir.",
    )
    projector_stack: int = opt(4, "With --speech-llm: encoder frames concatenated into one LLM input embedding.")
    projector_hidden: int = opt(
        0, "With --speech-llm: hidden size of the Linear-ReLU-Linear projector (0 = the LLM's)."
    )
    lora_rank: int = opt(16, "With --speech-llm-stage 2: LoRA rank of the adapters on the LLM.")
    lora_alpha: float = opt(32.0, "With --speech-llm-stage 2: LoRA alpha (the adapters are scaled by alpha / rank).")
    lora_dropout: float = opt(0.05, "With --speech-llm-stage 2: dropout on the LoRA adapters' input.")
    lora_targets: str = opt(
        "all-linear",
        "With --speech-llm-stage 2: modules that get adapters: all-linear (every Linear but the output "
        "layer) or comma-separated module names, e.g. q_proj,k_proj,v_proj,o_proj.",
    )
    speech_llm_encoder_top: int = opt(
        0, "With --speech-llm-stage 2: also train the top K encoder layers (0 = encoder frozen)."
    )
    speech_llm_instruction: str = opt(
        "Transcribe the speech.",
        "With --speech-llm: the instruction in the prompt (the system message of the LLM's chat template).",
    )
    speech_llm_cache_encoder: bool = opt(
        False,
        "With --speech-llm and a frozen encoder: keep each cut's encoder output in memory after it was "
        "first computed, so later epochs cost only the projector and the LLM. Needs --no-spec-augment (masked "
        "inputs differ every epoch). Memory: frames x encoder dim x 4 bytes (tiny.en: ~0.8 MB per 10 s).",
    )
    speech_llm_hotword_prob: float = opt(
        0.0,
        "With --speech-llm: share of training utterances whose prompt lists hotwords (a phrase of the "
        "transcript and up to two of other transcripts of the batch), so that decoding with --hotwords-file "
        "tells the model something it has learnt to use (0 = never).",
    )
    speech_llm_chat_template: bool = opt(
        True, "With --speech-llm: use the LLM's chat template around the speech (if its tokenizer has one)."
    )
    # Bookkeeping
    save_every_n: int = opt(200, "Save checkpoint-<step>.pt every N steps (0 disables).")
    keep_last_k: int = opt(3, "Keep only the newest K step checkpoints.")
    average_period: int = opt(
        100,
        "Every N steps fold the weights into a running average saved with each checkpoint "
        "(0 disables); dsr decode --use-averaged-model averages whole epochs with it.",
    )
    log_interval: int = opt(20, "Log training loss every N steps.")
    max_steps: int = opt(0, "Stop after this many steps in total (0 = no limit); for quick tests.")

    @classmethod
    def flat_fields(cls) -> list[Field]:
        """Every option as one flag/YAML key, in order: a nested options object's fields stand in its place."""
        out: list[Field] = []
        for f in fields(cls):
            out += fields(_nested_type(f)) if f.metadata.get("nested") else [f]
        return out

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in cls.flat_fields()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From flat options (as :meth:`to_dict` gives, or as ``dsr train`` flags name them); missing ones
        take their defaults, an unknown one is a TypeError as for the constructor."""
        nested = {f.name: _nested_type(f) for f in fields(cls) if f.metadata.get("nested")}
        own = {f.name for f in fields(cls)} - set(nested)
        groups: dict[str, dict[str, Any]] = {name: {} for name in nested}
        top: dict[str, Any] = {}
        for key, value in values.items():
            owner = next((name for name, typ in nested.items() if key in {f.name for f in fields(typ)}), None)
            if owner is not None:
                groups[owner][key] = value
            elif key in own:
                top[key] = value
            else:
                raise TypeError(f"TrainConfig has no option {key!r}")
        return cls(**top, **{name: nested[name](**groups[name]) for name in nested})

    def to_dict(self) -> dict[str, Any]:
        """Flat options, in :meth:`flat_fields` order: the keys of config.yaml and of checkpoints' train_config."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out.update(asdict(value) if f.metadata.get("nested") else {f.name: value})
        return out

    def validate(self) -> None:
        if self.num_epochs < 1:
            raise OptionError(f"{{num_epochs}} must be >= 1, got {self.num_epochs}")
        if self.max_duration <= 0:
            raise OptionError(f"{{max_duration}} must be > 0, got {self.max_duration}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise OptionError(f"{{dtype}} must be float32, bfloat16 or float16, got {self.dtype}")
        self.model.validate()
        if self.rnnt_backend not in ("dsr", "fast_rnnt", "k2"):
            raise OptionError(f"{{rnnt_backend}} must be dsr, fast_rnnt or k2, got {self.rnnt_backend}")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise OptionError(f"{{adam_beta2}} must be in (0, 1), got {self.adam_beta2}")
        if self.ctc_encoder_warmup_steps < 0:
            raise OptionError(f"{{ctc_encoder_warmup_steps}} must be >= 0, got {self.ctc_encoder_warmup_steps}")
        if self.ctc_encoder_warmup_steps > 0 and self.ctc_loss_scale <= 0:
            raise OptionError(
                "{ctc_encoder_warmup_steps} needs {ctc_loss_scale} > 0 (CTC is what trains the encoder then)"
            )
        if self.prune_range < 1:
            raise OptionError(f"{{prune_range}} must be >= 1, got {self.prune_range}")
        if self.gain_db < 0:
            raise OptionError(f"{{gain_db}} must be >= 0, got {self.gain_db}")
        if not 0.0 <= self.freq_warp < 0.5:
            raise OptionError(f"{{freq_warp}} must be in [0, 0.5), got {self.freq_warp}")
        if self.edge_trim < 0:
            raise OptionError(f"{{edge_trim}} must be >= 0 seconds, got {self.edge_trim}")
        if self.endpoint_trim_db < 0:
            raise OptionError(f"{{endpoint_trim_db}} must be >= 0, got {self.endpoint_trim_db}")
        if self.edge_trim > 0 and self.endpoint_trim_db > 0:
            raise OptionError("{edge_trim} and {endpoint_trim_db} are two ways to trim the edges; give one of them")
        if not 0.0 < self.edge_trim_keep <= 1.0:
            raise OptionError(f"{{edge_trim_keep}} must be in (0, 1], got {self.edge_trim_keep}")
        if self.feature_cache_mb < 0:
            raise OptionError(f"{{feature_cache_mb}} must be >= 0, got {self.feature_cache_mb}")
        if self.average_period < 0:
            raise OptionError(f"{{average_period}} must be >= 0, got {self.average_period}")
        if self.init_exclude.strip() and not self.init_from:
            raise OptionError("{init_exclude} only applies with {init_from}; give the checkpoint to start from")
        self._validate_heads()
        self._validate_distillation()
        self._validate_pretrained()
        self._validate_speech_llm()

    def _validate_speech_llm(self) -> None:
        if not self.speech_llm:
            return
        if self.speech_llm_stage not in (1, 2):
            raise OptionError(f"{{speech_llm_stage}} must be 1 or 2, got {self.speech_llm_stage}")
        if not self.pretrained and not self.init_from:
            raise OptionError(
                "{speech_llm} needs a trained encoder: add {pretrained} whisper-... or {init_from} "
                "a dsr checkpoint or exp dir (a stage-1 speech-LLM for stage 2)"
            )
        if self.pretrained and self.init_from:
            # The speech-LLM takes its encoder from one of them; the other would be ignored.
            raise OptionError(
                "{speech_llm} takes its encoder from {pretrained} (a Whisper) or from {init_from} (a dsr "
                "checkpoint or a stage-1 speech-LLM), not both: drop one"
            )
        if self.projector_stack < 1 or self.projector_hidden < 0:
            raise OptionError(
                f"{{projector_stack}} must be >= 1 and {{projector_hidden}} >= 0, got "
                f"{self.projector_stack} and {self.projector_hidden}"
            )
        if self.speech_llm_stage == 2 and (self.lora_rank < 1 or self.lora_alpha <= 0):
            raise OptionError(
                f"{{speech_llm_stage}} 2 needs {{lora_rank}} >= 1 and {{lora_alpha}} > 0, got "
                f"{self.lora_rank} and {self.lora_alpha}"
            )
        if not 0.0 <= self.speech_llm_hotword_prob <= 1.0:
            raise OptionError(f"{{speech_llm_hotword_prob}} must be in [0, 1], got {self.speech_llm_hotword_prob}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise OptionError(f"{{lora_dropout}} must be in [0, 1), got {self.lora_dropout}")
        if self.speech_llm_encoder_top < 0 or (self.speech_llm_encoder_top and self.speech_llm_stage == 1):
            raise OptionError(
                "{speech_llm_encoder_top} trains encoder layers: >= 0, and only with {speech_llm_stage} 2"
            )
        if self.speech_llm_cache_encoder and (self.spec_augment or self.speech_llm_encoder_top):
            raise OptionError(
                "{speech_llm_cache_encoder} keeps a frozen encoder's outputs: add {not:spec_augment} "
                "and drop {speech_llm_encoder_top}"
            )
        if (
            self.teacher
            or self.model.chunk_sizes
            or self.model.attention_decoder_layers
            or self.freeze
            or self.init_exclude
            or self.whisper_pad_30s
            or self.sortagrad_epochs
            or self.freeze_encoder_steps
        ):
            raise OptionError(
                "{speech_llm} chooses what trains by {speech_llm_stage} and {speech_llm_encoder_top}: "
                "drop {teacher}, {chunk_sizes}, {attention_decoder_layers}, {freeze}, {init_exclude}, "
                "{whisper_pad_30s}, {sortagrad_epochs} and {freeze_encoder_steps}"
            )

    def _validate_pretrained(self) -> None:
        if self.freeze_encoder_steps < 0 or self.freeze_encoder_keep_top < 0:
            raise OptionError("{freeze_encoder_steps} and {freeze_encoder_keep_top} must be >= 0")
        if not 0.0 < self.pretrained_lr_scale <= 10.0:
            raise OptionError(f"{{pretrained_lr_scale}} must be in (0, 10], got {self.pretrained_lr_scale}")
        if not self.pretrained:
            if self.whisper_pad_30s:
                raise OptionError("{whisper_pad_30s} applies to a {pretrained} Whisper; give {pretrained} NAME")
            return
        if self.model.chunk_sizes or self.model.causal:
            raise OptionError("{pretrained} Whisper attends to whole utterances: drop {chunk_sizes}/{causal}")
        if self.model.utterance_norm != "none":
            raise OptionError("{pretrained} Whisper reads its own normalised log-mel: drop {utterance_norm}")
        if self.freq_warp > 0 or self.gain_db > 0:
            raise OptionError(
                "{freq_warp} and {gain_db} act on Kaldi FBANK (natural-log power); with {pretrained} "
                "(Whisper's log-mel) drop them"
            )
        if self.model.attention_decoder_layers > 0:
            raise OptionError(
                "{pretrained}: the attention head is Whisper's own decoder ({whisper_decoder}); drop "
                "{attention_decoder_layers}"
            )
        if self.whisper_decoder and self.attention_loss_scale <= 0:
            raise OptionError("{whisper_decoder} needs {attention_loss_scale} > 0 (or use {not:whisper_decoder})")
        if self.whisper_pad_30s and (self.model.use_transducer or self.ctc_loss_scale > 0 or not self.whisper_decoder):
            raise OptionError(
                "{whisper_pad_30s} trains Whisper's decoder alone: add {not:use_transducer} "
                "and {ctc_loss_scale} of 0 (the transducer and CTC heads would read 30 s of padding)"
            )

    def _validate_heads(self) -> None:
        whisper_alone = bool(self.pretrained) and self.whisper_decoder
        if not self.model.use_transducer and self.ctc_loss_scale <= 0 and not whisper_alone:
            raise OptionError("{not:use_transducer} needs {ctc_loss_scale} > 0: a model needs a CTC or transducer head")
        if self.model.attention_decoder_layers == 0:
            return
        if self.attention_loss_scale <= 0:
            raise OptionError(
                "{attention_decoder_layers} > 0 needs {attention_loss_scale} > 0 (or the decoder stays untrained)"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise OptionError(f"{{label_smoothing}} must be in [0, 1), got {self.label_smoothing}")

    def _validate_distillation(self) -> None:
        if not self.teacher:
            return
        from dsr.training.distill import parse_distill_heads

        if self.distill_scale <= 0:
            raise OptionError(f"{{teacher}} needs {{distill_scale}} > 0, got {self.distill_scale}")
        if self.distill_temperature <= 0:
            raise OptionError(f"{{distill_temperature}} must be > 0, got {self.distill_temperature}")
        if "joiner" in parse_distill_heads(self.distill_heads) and not self.model.use_transducer:
            raise OptionError("{distill_heads} joiner needs a transducer student (drop {not:use_transducer})")

    def model_chunking(self) -> dict[str, Any]:
        """See :meth:`ModelOptions.chunking`."""
        return self.model.chunking()


def _nested_type(f: Field) -> type:
    """The options class of a nested field (its default factory builds one)."""
    assert f.default_factory is not MISSING, f"nested field {f.name} needs a default_factory"
    return type(f.default_factory())


def int_list(text: str, name: str) -> tuple[int, ...]:
    """``"8,16,32"`` (or a YAML list's string form ``"[8, 16, 32]"``) -> ``(8, 16, 32)``;
    :class:`~dsr.errors.OptionError` naming the option ``name`` otherwise."""
    items = [x.strip() for x in str(text).strip().strip("[]").split(",") if x.strip()]
    try:
        return tuple(int(x) for x in items)
    except ValueError:
        raise OptionError(f"{{{name}}} must be comma-separated integers, e.g. 8,16,32; got {text!r}") from None


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1"):
            return True
        if str(value).lower() in ("false", "no", "0"):
            return False
        raise DsrUserError(f"config key {name}: expected true/false, got {value!r}")
    try:
        return type(default)(value)
    except (TypeError, ValueError) as e:
        raise DsrUserError(f"config key {name}: cannot convert {value!r} to {type(default).__name__}") from e


def resolve_config(config_file: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < YAML file < explicit flags (``overrides`` with None meaning 'not given')."""
    defaults = {f.name: f.default for f in TrainConfig.flat_fields()}
    known = set(defaults)
    values: dict[str, Any] = {}
    if config_file is not None:
        config_file = Path(config_file)
        if not config_file.is_file():
            raise DsrUserError(f"config file {config_file} does not exist")
        try:
            raw = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise DsrUserError(f"config file {config_file} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise DsrUserError(f"config file {config_file} must be a mapping of flag names to values")
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise DsrUserError(f"config file {config_file}: unknown key '{key}' (see dsr train --help)")
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict({k: _coerce(k, v, defaults[k]) for k, v in values.items()})
    cfg.validate()
    return cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    from dsr.utils import write_text_atomic

    text = yaml.safe_dump({k.replace("_", "-"): v for k, v in cfg.to_dict().items()}, sort_keys=False)
    write_text_atomic(path, text)


assert all(f.default is not MISSING for f in TrainConfig.flat_fields()), "every option needs a default"
assert len({f.name for f in TrainConfig.flat_fields()}) == len(TrainConfig.flat_fields()), "one flag per option name"
