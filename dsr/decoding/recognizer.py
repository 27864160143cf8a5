"""The Python API: load a model once, transcribe files, arrays or a cuts manifest in batches.

Example::

    import dsr

    asr = dsr.Recognizer("exp/conformer", "data/lang_bpe_256", method="modified-beam-search", device="cpu")
    for t in asr.transcribe(["a.wav", "b.flac"]):
        print(t.source, t.text, list(zip(t.tokens, t.timestamps)))
    asr.transcribe(samples, sample_rate=8000)                  # a numpy array (or a list of them)
    asr.transcribe("data/fbank/synth_cuts_test.jsonl.gz")      # a cuts manifest (or a lhotse CutSet)

    whisper = dsr.Recognizer(pretrained="whisper-tiny.en", method="whisper-greedy")

``dsr transcribe`` is this class behind flags (:class:`~dsr.decoding.options.TranscribeOptions`).
The features are the front end the checkpoint records (the one its model was trained on); a
cuts manifest is read and batched as ``dsr decode`` does (:class:`dsr.data.batches.DecodeBatches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsr.data.batches import DecodeBatches
from dsr.data.cuts import load_cuts, pad_features
from dsr.decoding.loading import DecodingModel, load_decoding_model
from dsr.decoding.methods import DecodingMethod, check_method
from dsr.decoding.options import TranscribeOptions
from dsr.decoding.search import SearchOptions, best_with_timestamps, search_options, with_whisper_rescoring
from dsr.decoding.whisper_decode import whisper_nbest
from dsr.device import resolve_device
from dsr.errors import DsrUserError
from dsr.features.audio import load_audio_mono, resample, to_mono
from dsr.features.frontend import FrontendConfig, compute_frontend, frontend_from_dict
from dsr.lang.bpe import Tokenizer

#: Fewer feature frames than this cannot be encoded (the convolutional subsampling needs them).
MIN_FRAMES = 10
_MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")


@dataclass
class Transcript:
    """The 1-best of one input.

    Attributes:
        source: the file, ``"array <i>"`` (the i-th array given) or the cut id.
        text: the transcription.
        tokens: its tokens (BPE pieces; Whisper's tokens for the Whisper methods).
        timestamps: seconds from the start of the input at which each token was emitted
            (the start of its encoder frame); empty for the Whisper methods, whose decoder
            attends to the whole input instead of emitting at a frame.
        duration: seconds of audio.
    """

    source: str
    text: str
    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    duration: float = 0.0


@dataclass
class _Item:
    source: str
    feats: torch.Tensor  # (T, F)
    duration: float


class Recognizer:
    """A model loaded once, ready to transcribe (see the module docstring).

    Takes the fields of :class:`~dsr.decoding.options.TranscribeOptions` as keyword arguments
    (``exp_dir``, ``lang_dir``, ``checkpoint``, ``pretrained``, ``epoch``, ``avg``, ``method``,
    ``beam_size``, ``device``, ``max_duration``, ...), or one ``options`` object; ``frontend``
    overrides the front end the checkpoint records.  Raises ``ValueError`` (an
    :class:`~dsr.errors.OptionError`) on a bad option, DsrUserError when the model cannot be
    loaded or lacks a head the method needs.
    """

    def __init__(
        self,
        exp_dir: Path | str | None = None,
        lang_dir: Path | str | None = None,
        *,
        options: TranscribeOptions | None = None,
        frontend: FrontendConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if options is None:
            options = TranscribeOptions(exp_dir=exp_dir, lang_dir=lang_dir, **kwargs)  # type: ignore[arg-type]
        elif exp_dir is not None or lang_dir is not None or kwargs:
            raise ValueError("give the options either as one TranscribeOptions or as keyword arguments, not both")
        self.options = options
        self.device = resolve_device(options.device)
        o = options
        lang_dir = None if o.pretrained else o.lang_dir
        # TranscribeOptions requires lang_dir without pretrained.
        assert o.pretrained or lang_dir is not None
        self.tokenizer = Tokenizer(lang_dir) if lang_dir is not None else None
        self.loaded: DecodingModel = load_decoding_model(
            o.exp_dir,
            o.epoch,
            o.avg,
            self.device,
            o.use_averaged_model,
            o.int8,
            o.pretrained,
            o.whisper_language,
            o.checkpoint,
        )
        if self.tokenizer is not None and lang_dir is not None:
            self.loaded.check_lang_dir(lang_dir, self.tokenizer, o.checkpoint or o.exp_dir)
        self.method: DecodingMethod = check_method(self.loaded.model, o.method)
        search = search_options(o, self.tokenizer)
        self.search: SearchOptions = with_whisper_rescoring(search, self.loaded.whisper, self.tokenizer)
        self.frontend: FrontendConfig = frontend if frontend is not None else frontend_from_dict(self.loaded.frontend)
        # Seconds per encoder frame: the encoder's subsampling of the front end's frames.
        probe = 3000
        subsampling = round(probe / int(self.loaded.model.encoder.output_lengths(torch.tensor(probe))))
        self.frame_seconds = subsampling * self.frontend.frame_shift

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    # ------------------------------------------------------------------ inputs

    def _file_item(self, path: Path) -> _Item:
        audio = load_audio_mono(path, self.frontend.sampling_rate)
        return self._audio_item(str(path), audio, f"audio file {path}")

    def _audio_item(self, source: str, audio: np.ndarray, what: str) -> _Item:
        feats = torch.from_numpy(compute_frontend(audio, self.frontend))
        if feats.shape[0] < MIN_FRAMES:
            raise DsrUserError(
                f"{what} is too short to transcribe ({feats.shape[0] * self.frontend.frame_shift * 1000:g} ms)"
            )
        return _Item(source, feats, len(audio) / self.frontend.sampling_rate)

    def _array_item(self, i: int, samples: Any, sample_rate: int | None) -> _Item:
        if sample_rate is None:
            raise ValueError("numpy audio needs its sample_rate")
        audio = np.asarray(samples, dtype=np.float32)
        if audio.size == 0:
            raise DsrUserError(f"array {i} has no samples")
        mono = to_mono(audio)
        return self._audio_item(
            f"array {i}", resample(mono, int(sample_rate), self.frontend.sampling_rate), f"array {i}"
        )

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def decode_features(self, feats: torch.Tensor, lens: torch.Tensor, durations: Sequence[float]) -> list[Transcript]:
        """Transcripts of a batch of (N, T, F) features with (N,) valid lengths (``source`` left empty)."""
        model = self.loaded.model
        enc, enc_lens = model.encode(feats.to(self.device), lens.to(self.device))
        if self.method.tokens == "whisper":
            whisper = self.loaded.whisper
            assert whisper is not None  # check_method: the model has Whisper's decoder head
            nbest = whisper_nbest(
                model, whisper, enc, enc_lens, list(durations), self.method.name, self.search.beam_size
            )
            out = []
            for hyps, duration in zip(nbest, durations):
                best = hyps[0]
                text = whisper.texts([best])[0]
                pieces = [whisper.tokenizer.decode([t]) for t in best.tokens if t < whisper.tokenizer.eot]
                out.append(Transcript("", text, pieces, [], duration))
            return out
        assert self.tokenizer is not None
        tokens, frames = best_with_timestamps(model, enc, enc_lens, self.method.name, self.search)
        return [
            Transcript(
                "",
                self.tokenizer.decode(tok),
                [self.tokenizer.id_to_piece(t) for t in tok],
                [round(f * self.frame_seconds, 6) for f in fr],
                duration,
            )
            for tok, fr, duration in zip(tokens, frames, durations)
        ]

    def _decode_items(self, items: list[_Item]) -> list[Transcript]:
        lens = torch.tensor([it.feats.shape[0] for it in items], dtype=torch.int64)
        out = self.decode_features(pad_features([it.feats for it in items]), lens, [it.duration for it in items])
        return [replace(t, source=it.source) for t, it in zip(out, items)]

    def _batches(self, items: list[_Item], max_duration: float) -> Iterable[list[_Item]]:
        """Consecutive items of at most ``max_duration`` seconds together (one each with 0)."""
        batch: list[_Item] = []
        seconds = 0.0
        for it in items:
            if batch and (max_duration <= 0 or seconds + it.duration > max_duration):
                yield batch
                batch, seconds = [], 0.0
            batch.append(it)
            seconds += it.duration
        if batch:
            yield batch

    def transcribe(
        self,
        inputs: Any,
        sample_rate: int | None = None,
        unreadable: list[tuple[str, str]] | None = None,
        max_duration: float | None = None,
    ) -> list[Transcript]:
        """One :class:`Transcript` per input, in input order.

        ``inputs``: an audio file path, a list of them, a numpy array or a list of arrays
        ((T,) or (T, C) samples of ``sample_rate`` Hz), a cuts manifest path
        (``.jsonl.gz``/``.jsonl``) or a lhotse CutSet.  Inputs that cannot be read (missing,
        corrupt, too short) raise DsrUserError naming them, unless ``unreadable`` is a list: it
        then gets ``(source, reason)`` and every other input is transcribed.  ``max_duration``
        (seconds of audio per batch; default the options') batches files and arrays; 0 decodes
        them one at a time.  A manifest is batched as ``dsr decode`` batches it (default 300 s).
        """
        max_duration = self.options.max_duration if max_duration is None else max_duration
        if _is_cuts(inputs):
            return self._transcribe_cuts(inputs, unreadable, max_duration or 300.0)
        items: list[_Item] = []
        for i, x in enumerate(_as_list(inputs)):
            try:
                if isinstance(x, (str, Path)):
                    items.append(self._file_item(Path(x)))
                else:
                    items.append(self._array_item(i, x, sample_rate))
            except DsrUserError as e:
                if unreadable is None:
                    raise
                unreadable.append((str(x) if isinstance(x, (str, Path)) else f"array {i}", str(e)))
        out: list[Transcript] = []
        for batch in self._batches(items, max_duration):
            out += self._decode_items(batch)
        return out

    def _transcribe_cuts(
        self, cuts: Any, unreadable: list[tuple[str, str]] | None, max_duration: float
    ) -> list[Transcript]:
        if isinstance(cuts, (str, Path)):
            cuts = load_cuts(cuts)
        batches = DecodeBatches(cuts, max_duration, self.device, self.frontend)
        by_id: dict[str, Transcript] = {}
        for feats, lens, cut_list in batches:
            for cut, t in zip(cut_list, self.decode_features(feats, lens, [c.duration for c in cut_list])):
                by_id[cut.id] = replace(t, source=cut.id)
        if batches.unreadable:
            if unreadable is None:
                first = batches.unreadable[0]
                raise DsrUserError(f"cut {first.cut_id} ({first.source}) cannot be read: {first.error}")
            unreadable += [(u.cut_id, u.error) for u in batches.unreadable]
        return [by_id[c.id] for c in cuts if c.id in by_id]


def _is_cuts(x: Any) -> bool:
    if isinstance(x, (str, Path)):
        return str(x).endswith(_MANIFEST_SUFFIXES)
    return type(x).__name__ == "CutSet"


def _as_list(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, Path)):
        return [inputs]
    if isinstance(inputs, np.ndarray) or isinstance(inputs, torch.Tensor):
        return [np.asarray(inputs)]
    return list(inputs)
