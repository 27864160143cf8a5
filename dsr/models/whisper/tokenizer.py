"""Whisper's tokenizer: a Hugging Face ``tokenizers`` JSON plus the special ids decoding needs.

The ids, the decoding prompt and the suppressed tokens follow faster-whisper 1.2.1
(``faster_whisper/tokenizer.py`` and ``transcribe.py``), the reference decoder dsr is
compared with: ``tests/test_whisper_load.py`` checks them against it on the real
tiny.en and base tokenizers when faster-whisper is installed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from dsr.errors import DsrUserError

INSTALL_HINT = "bash tools/setup.sh --whisper"

#: faster-whisper's ``Tokenizer.non_speech_tokens`` symbols (speaker tags, music, brackets).
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
#: Symbols whose first token is suppressed even when they take several tokens.
_NON_SPEECH_MISC = sorted("♩♪♫♬♭♮♯")


def _tokenizers_module() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise DsrUserError(f"Whisper's tokenizer needs the 'tokenizers' package; run: {INSTALL_HINT}") from e
    return tokenizers


class WhisperTokenizer:
    """Text <-> Whisper token ids, with the special tokens looked up by name.

    Args:
        tokenizer_json: the text of a Hugging Face ``tokenizer.json`` (Whisper's byte-level BPE
            and its added special tokens).
        multilingual: the model's ``n_vocab >= 51865`` (English-only models prompt without a
            language and task token).
    """

    def __init__(self, tokenizer_json: str, multilingual: bool) -> None:
        tokenizers = _tokenizers_module()
        try:
            self.tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust parser raises a bare Exception
            raise ValueError(f"not a tokenizers JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        self.multilingual = multilingual
        if self.token_id("<|endoftext|>") is None or self.token_id("<|startoftranscript|>") is None:
            raise ValueError("not a Whisper tokenizer: it has no <|endoftext|> or <|startoftranscript|> token")

    @classmethod
    def from_file(cls, path: str | Path, multilingual: bool) -> WhisperTokenizer:
        """Read a ``tokenizer.json``; a missing or unreadable file is a :class:`DsrUserError`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DsrUserError(
                f"{path}: cannot read the tokenizer ({e.strerror}); give a Whisper tokenizer.json"
            ) from e
        try:
            return cls(text, multilingual)
        except ValueError as e:
            raise DsrUserError(f"{path}: {e}; give a Whisper tokenizer.json") from e

    # -- ids ---------------------------------------------------------------------------------

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``"<|en|>"``), None when the vocabulary lacks it."""
        return self.tokenizer.token_to_id(token)

    def _required(self, token: str) -> int:
        i = self.token_id(token)
        if i is None:
            raise ValueError(f"the tokenizer has no {token} token")
        return i

    @property
    def vocab_size(self) -> int:
        """Tokens the tokenizer knows, added ones included (may be fewer than the model's n_vocab:
        tiny.en's tokenizer.json has no timestamp tokens)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @cached_property
    def eot(self) -> int:
        return self._required("<|endoftext|>")

    @cached_property
    def sot(self) -> int:
        return self._required("<|startoftranscript|>")

    @cached_property
    def transcribe(self) -> int:
        return self._required("<|transcribe|>")

    @cached_property
    def translate(self) -> int:
        return self._required("<|translate|>")

    @cached_property
    def sot_lm(self) -> int:
        return self._required("<|startoflm|>")

    @cached_property
    def sot_prev(self) -> int:
        return self._required("<|startofprev|>")

    @cached_property
    def no_timestamps(self) -> int:
        return self._required("<|notimestamps|>")

    @cached_property
    def no_speech(self) -> int:
        """``<|nospeech|>``, or ``<|nocaptions|>`` in the older (tiny.en) vocabularies."""
        i = self.token_id("<|nospeech|>")
        return i if i is not None else self._required("<|nocaptions|>")

    @property
    def timestamp_begin(self) -> int:
        """The first timestamp token ``<|0.00|>``: the id after ``<|notimestamps|>`` (as in
        faster-whisper and OpenAI), also where the tokenizer.json lists no timestamps."""
        return self.no_timestamps + 1

    def language_token(self, language: str) -> int:
        """The id of ``<|language|>``; a ``ValueError`` for a language the vocabulary lacks."""
        i = self.token_id(f"<|{language}|>")
        if i is None:
            raise ValueError(f"the tokenizer has no <|{language}|> language token")
        return i

    # -- prompts and suppression -------------------------------------------------------------

    def sot_sequence(self, language: str | None = None) -> list[int]:
        """The decoder prompt of faster-whisper's ``transcribe(..., without_timestamps=True)``
        without previous text: ``[sot, <|notimestamps|>]`` for English-only models,
        ``[sot, <|language|>, <|transcribe|>, <|notimestamps|>]`` for multilingual ones.

        ``language`` is required for a multilingual model (dsr does not detect it) and must be
        None or ``"en"`` for an English-only one.
        """
        if not self.multilingual:
            if language not in (None, "en"):
                raise ValueError(f"an English-only Whisper model cannot transcribe language {language!r}")
            return [self.sot, self.no_timestamps]
        if language is None:
            raise ValueError("a multilingual Whisper model needs a language (e.g. 'en')")
        return [self.sot, self.language_token(language), self.transcribe, self.no_timestamps]

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of speaker tags and non-speech annotations (faster-whisper's list): symbols
        that are one token with or without a leading space, the first token of the musical
        symbols, and the word-initial forms of ``-`` and ``'``."""
        result = {self._encode_raw(" -")[0], self._encode_raw(" '")[0]}
        for symbol in _NON_SPEECH_SYMBOLS + _NON_SPEECH_MISC:
            for tokens in (self._encode_raw(symbol), self._encode_raw(" " + symbol)):
                if len(tokens) == 1 or (symbol in _NON_SPEECH_MISC and tokens):
                    result.add(tokens[0])
        return tuple(sorted(result))

    def suppress_tokens(self) -> list[int]:
        """faster-whisper's default ``suppress_tokens=[-1]`` as it expands it: the non-speech
        tokens plus transcribe, translate, sot, sot_prev, sot_lm and no_speech (never sampled)."""
        specials = [self.transcribe, self.translate, self.sot, self.sot_prev, self.sot_lm, self.no_speech]
        return sorted(set(self.non_speech_tokens) | set(specials))

    def suppress_blank(self) -> list[int]:
        """Tokens suppressed at the first decoding step (OpenAI's SuppressBlank): a lone space
        and end-of-text.  CTranslate2 models list the same ids as ``suppress_ids_begin``."""
        return sorted(set(self._encode_raw(" ")) | {self.eot})

    # -- text --------------------------------------------------------------------------------

    def _encode_raw(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str) -> list[int]:
        """Text tokens of ``text``, no special tokens.  Whisper's transcripts start with a
        space (`` Hello``); one is prepended unless ``text`` starts with whitespace.  Empty
        text gives no tokens."""
        if not text:
            return []
        return self._encode_raw(text if text[0].isspace() else " " + text)

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``; special and timestamp tokens (ids >= ``eot``) are skipped, as
        faster-whisper does.  The result keeps Whisper's leading space."""
        return self.tokenizer.decode([int(i) for i in ids if int(i) < self.eot])
