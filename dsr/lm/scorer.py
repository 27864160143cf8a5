"""Sentence log-probabilities from a causal LLM, batched and cached.

``LlmScorer.score(texts)`` returns, for each text, ``sum_t log P(w_t | BOS, w_<t)`` over
its tokens (plus ``log P(EOS | ...)`` when ``add_eos``), in nats.  ASR hypotheses are
upper-case without punctuation; LLMs have mostly seen sentence-cased text, so the text
is transformed first (``text_transform``, see :data:`TEXT_TRANSFORMS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dsr.data.normalize import sentence_case
from dsr.errors import DsrUserError, OptionError
from dsr.lm.load import fingerprint, load_causal_lm, read_lm_info
from dsr.lm.prefix_tree import PrefixTree, chunk_by_prefix

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("dsr")


def _identity(text: str) -> str:
    return text


TEXT_TRANSFORMS: dict[str, Callable[[str], str]] = {
    "sentence": sentence_case,  # pretrained chat/base LLMs: "The cat sat on the mat"
    "lower": str.lower,  # LMs trained on lower-cased corpora
    "none": _identity,  # LMs trained on dsr-normalised (upper-case) text
}
DEFAULT_TRANSFORM = "sentence"
# Bumped when a transform's output changes, so that scores saved under the old one are not reused.
_TRANSFORM_VERSION = {"sentence": "sentence.2"}

# Texts per forward pass: packed as a prefix tree, 64 n-best hypotheses are a few hundred
# tokens, enough for the CPU matmuls to run at full speed (bench/llm_rescore_speed.py).
DEFAULT_BATCH = 64

# ChatML models (SmolLM2-Instruct, Qwen-Instruct) declare the turn opener/closer as BOS/EOS;
# a bare sentence is a document, which their pretraining delimited with <|endoftext|>.
CHATML_BOS = "<|im_start|>"
DOCUMENT_BOUNDARY = "<|endoftext|>"


def boundary_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[str | None, str | None]:
    """Default ``(bos_token, eos_token)`` to frame a sentence with: the tokenizer's own, except ChatML.

    For a ChatML tokenizer that also has ``<|endoftext|>`` it is used at both ends: on
    SmolLM2-135M-Instruct that raised the mean log-probability of 100 ARCTIC training
    sentences from -84.1 to -77.5 nats (docs/RESULTS.md, ARCTIC), because after
    ``<|im_start|>`` the model expects a role name, not a sentence.
    """
    if tokenizer.bos_token == CHATML_BOS and DOCUMENT_BOUNDARY in tokenizer.get_vocab():
        return DOCUMENT_BOUNDARY, DOCUMENT_BOUNDARY
    return None, None


def model_boundary_tokens(path: Path | str, tokenizer: PreTrainedTokenizerBase) -> tuple[str | None, str | None]:
    """The tokens a dsr-trained model was trained with (its ``dsr_lm.json``), else :func:`boundary_tokens`."""
    info = read_lm_info(path)
    if "bos_token" in info:
        return info["bos_token"], info.get("eos_token")
    return boundary_tokens(tokenizer)


class LlmScorer:
    """Total log-probability of texts under a causal LM (deterministic: eval mode, no dropout).

    Args:
        model: a ``transformers`` causal LM (moved to its device by the caller).
        tokenizer: its tokenizer; only ``bos/eos/pad_token_id`` and plain encoding are used.
        text_transform: a key of :data:`TEXT_TRANSFORMS` applied before tokenising.
        add_bos: condition the first token on BOS (EOS when the tokenizer has no BOS,
            as GPT-2-style models use ``<|endoftext|>`` for both).  Without it the first
            token is context only and is not scored.
        add_eos: also score ``log P(EOS | text)``, which penalises hypotheses that stop mid-sentence.
        name: identifies the model in :attr:`signature` (saved next to cached scores).
        bos_token, eos_token: tokens to frame each sentence with instead of the tokenizer's
            BOS/EOS (e.g. ``<|endoftext|>`` for a chat model); each must be in the vocabulary.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        text_transform: str = DEFAULT_TRANSFORM,
        add_bos: bool = True,
        add_eos: bool = True,
        name: str = "llm",
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> None:
        if text_transform not in TEXT_TRANSFORMS:
            raise ValueError(f"text_transform {text_transform!r} is not one of {', '.join(TEXT_TRANSFORMS)}")
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        eos = tokenizer.eos_token_id
        vocab = tokenizer.get_vocab() if bos_token is not None or eos_token is not None else {}
        for token in (bos_token, eos_token):
            if token is not None and token not in vocab:
                raise OptionError(
                    f"{name}: token {token!r} is not in its tokenizer's vocabulary; "
                    "give {bos_token}/{eos_token} that the LLM has, or leave them out"
                )
        default_ids = (bos, eos)
        bos = vocab[bos_token] if bos_token is not None else bos
        eos = vocab[eos_token] if eos_token is not None else eos
        # In the signature only when it changes the ids, so that naming the default tokens keeps saved scores.
        self.boundary = f":{bos_token},{eos_token}" if (bos, eos) != default_ids else ""
        if (add_bos and bos is None) or (add_eos and eos is None):
            raise DsrUserError(
                f"{name}: its tokenizer defines no BOS/EOS token; set bos_token/eos_token in "
                "tokenizer_config.json or score without add_bos/add_eos"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.text_transform = text_transform
        self.add_bos, self.add_eos = add_bos, add_eos
        self.bos_id: int | None = bos
        self.eos_id: int | None = eos
        # Any id will do for padding: padded positions are masked out of attention and of the sum.
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.pad_id: int = pad if pad is not None else 0
        self.max_len: int | None = getattr(model.config, "max_position_embeddings", None)
        self.name = name
        self.device = next(model.parameters()).device
        self.cache: dict[str, float] = {}  # transformed text -> score
        self.num_scored = 0  # texts that went through the model (cache misses)
        self.seconds = 0.0  # wall time spent in tokenising + forward passes

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        text_transform: str | None = None,
        add_bos: bool = True,
        add_eos: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> LlmScorer:
        """Load a model directory or ``.gguf`` file (see :func:`dsr.lm.load.load_causal_lm`).

        ``None`` for ``text_transform``, ``bos_token`` or ``eos_token`` takes what a
        dsr-trained model was trained with (its ``dsr_lm.json``), else ``"sentence"`` and
        :func:`boundary_tokens`.
        """
        model, tokenizer = load_causal_lm(path, dtype=dtype, device=device)
        transform = text_transform or read_lm_info(path).get("text_transform", DEFAULT_TRANSFORM)
        default_bos, default_eos = model_boundary_tokens(path, tokenizer)
        return cls(
            model,
            tokenizer,
            text_transform=transform,
            add_bos=add_bos,
            add_eos=add_eos,
            name=f"{Path(path).resolve()}|{fingerprint(path)}|{dtype}",
            bos_token=bos_token if bos_token is not None else default_bos,
            eos_token=eos_token if eos_token is not None else default_eos,
        )

    def boundary_info(self) -> dict[str, str | None]:
        """``{"bos_token", "eos_token"}`` as scored, for ``dsr_lm.json`` of a model trained with this scorer."""

        def token(i: int | None) -> str | None:
            return None if i is None else str(self.tokenizer.convert_ids_to_tokens(i))

        return {"bos_token": token(self.bos_id), "eos_token": token(self.eos_id)}

    @property
    def signature(self) -> str:
        """Everything that changes a score; cached scores are reused only under the same signature."""
        transform = _TRANSFORM_VERSION.get(self.text_transform, self.text_transform)
        return f"{self.name}|transform={transform}|bos={int(self.add_bos)}|eos={int(self.add_eos)}{self.boundary}"

    def prepare(self, text: str) -> str:
        return TEXT_TRANSFORMS[self.text_transform](text)

    def token_ids(self, text: str) -> list[int]:
        """``[BOS] + tokens(prepare(text)) + [EOS]``, as scored (and as dsr trains LMs)."""
        return self._encode(self.prepare(text))

    def _encode(self, prepared: str) -> list[int]:
        ids = list(self.tokenizer(prepared, add_special_tokens=False)["input_ids"])
        seq = ([self.bos_id] if self.add_bos else []) + ids + ([self.eos_id] if self.add_eos else [])
        if self.max_len is not None and len(seq) > self.max_len:
            raise DsrUserError(
                f"{self.name}: a hypothesis of {len(seq)} tokens exceeds the LLM's "
                f"{self.max_len} positions ({prepared[:60]!r}...); use an LLM with a longer context"
            )
        return seq

    def score(self, texts: list[str], batch_size: int = DEFAULT_BATCH) -> list[float]:
        """Log-probability (nats) of each text: a list as long as ``texts``.

        Identical texts (after the transform) are scored once and cached.  A forward pass
        takes ``batch_size`` token sequences that are neighbours in lexicographic order,
        packed as a prefix tree (:mod:`dsr.lm.prefix_tree`): a prefix they share (BOS, the
        first words of an n-best list) is computed once, and there is no padding.  Results
        equal scoring each text alone (to float rounding).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        keys = [self.prepare(t) for t in texts]
        missing = sorted({k for k in keys if k not in self.cache})
        if missing:
            start = time.perf_counter()
            seqs = [self._encode(k) for k in missing]
            for chunk in chunk_by_prefix(seqs, batch_size):
                for i, s in zip(chunk, self._score_tree([seqs[i] for i in chunk]), strict=True):
                    self.cache[missing[i]] = s
            self.num_scored += len(missing)
            self.seconds += time.perf_counter() - start
        return [self.cache[k] for k in keys]

    @torch.inference_mode()
    def _score_tree(self, seqs: list[list[int]]) -> list[float]:
        """Sum of next-token log-probs of each sequence, all of them in one forward pass.

        The M inner nodes of the sequences' prefix tree (those with children: a leaf is only
        predicted) are one row: input_ids and position_ids (1, M), a 4D mask (1, 1, M, M)
        letting each node see its ancestors, logits (1, M, V); a node's logits score all its children.
        """
        tree = PrefixTree.build(seqs)
        inner = tree.inner_nodes()
        if not inner:  # nothing to predict: empty texts without EOS, or one token without BOS
            return [0.0] * len(seqs)
        row_of = {node: r for r, node in enumerate(inner)}
        dtype = next(self.model.parameters()).dtype
        ids = torch.tensor([[tree.tokens[i] for i in inner]], dtype=torch.long, device=self.device)
        positions = torch.tensor([[tree.depth[i] for i in inner]], dtype=torch.long, device=self.device)
        logits = self.model(
            input_ids=ids,
            position_ids=positions,
            use_cache=False,
            attention_mask=tree.attention_mask(inner, dtype).to(self.device),
        ).logits
        # at least float32 (bf16/fp16 models); float64 kept, so that a float64 model checks the tree exactly
        logits = logits[0].to(torch.promote_types(logits.dtype, torch.float32))  # (M, V)
        scored = tree.scored_nodes()
        rows = torch.tensor([row_of[tree.parent[i]] for i in scored], device=self.device)  # (S,)
        targets = torch.tensor([tree.tokens[i] for i in scored], device=self.device)  # (S,)
        token_lp = logits[rows, targets] - torch.logsumexp(logits, dim=-1)[rows]  # (S,)
        node_lp = [0.0] * len(tree)
        for i, lp in zip(scored, token_lp.double().cpu().tolist(), strict=True):
            node_lp[i] = lp
        return tree.sequence_sums(node_lp)
