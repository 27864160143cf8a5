"""``dsr transcribe FILE...``: decode audio files of any sample rate / channel count."""

from __future__ import annotations

from pathlib import Path

import torch

from dsr.decoding.decode import (
    METHODS,
    NBEST_METHODS,
    REFERENCE_METHODS,
    best_tokens,
    check_method,
    load_decoding_model,
    make_search_options,
    with_whisper_rescoring,
)
from dsr.decoding.whisper_decode import WHISPER_METHODS, whisper_nbest
from dsr.errors import DsrUserError
from dsr.features.audio import load_audio_mono
from dsr.features.frontend import FrontendConfig, compute_frontend, frontend_from_dict
from dsr.lang.bpe import Tokenizer
from dsr.training.trainer import resolve_device


@torch.no_grad()
def transcribe(
    files: list[Path],
    exp_dir: Path,
    lang_dir: Path,
    method: str = "greedy",
    epoch: int = 0,
    avg: int = 1,
    device: str = "auto",
    beam_size: int = 4,
    hotwords_file: Path | None = None,
    hotword_score: float = 1.0,
    use_averaged_model: bool = True,
    attention_scale: float = 1.0,
    unreadable: list[tuple[Path, str]] | None = None,
    int8: bool = False,
    frontend: FrontendConfig | None = None,
) -> list[tuple[Path, str]]:
    """Return ``(file, text)`` for each file.

    A file that cannot be read (missing, corrupt, empty or too short) raises DsrUserError
    naming it, unless ``unreadable`` is a list: it then gets ``(file, reason)`` and every
    other file is still transcribed.  ``beam_size`` and the hotwords apply to the n-best
    methods, ``attention_scale`` to the attention-rescoring ones (see
    :func:`dsr.decoding.decode.decode`); ``int8`` quantises the Linear layers (CPU);
    ``frontend`` overrides the front end the checkpoint records (the one its model was trained
    on).  A model with Whisper's decoder head also decodes with ``whisper-greedy`` /
    ``whisper-beam-search``, and its rescoring reads Whisper's tokens of the hypotheses' text.
    """
    if method not in METHODS:
        raise DsrUserError(f"--method {method!r} is unknown; choose from {', '.join(METHODS)}")
    if method in REFERENCE_METHODS:
        raise DsrUserError(f"-m {method} is a reference row of dsr decode --pretrained NAME; dsr transcribe decodes "
                           "the model in --exp-dir")
    if hotwords_file is not None and method not in NBEST_METHODS:
        raise DsrUserError(f"--hotwords-file needs --method {' or '.join(NBEST_METHODS)} (got {method})")
    dev = resolve_device(device)
    tokenizer = Tokenizer(lang_dir)
    opts = make_search_options(beam_size, None, hotwords_file, hotword_score, tokenizer, attention_scale)
    loaded = load_decoding_model(Path(exp_dir), epoch, avg, dev, use_averaged_model, int8)
    model, whisper = loaded.model, loaded.whisper
    loaded.check_lang_dir(lang_dir, tokenizer, exp_dir)
    check_method(model, method)
    opts = with_whisper_rescoring(opts, whisper, tokenizer)
    cfg = frontend if frontend is not None else frontend_from_dict(loaded.frontend)
    out = []
    for f in files:
        try:
            audio = load_audio_mono(f, cfg.sampling_rate)
            feats = torch.from_numpy(compute_frontend(audio, cfg))
            if feats.shape[0] < 10:
                raise DsrUserError(f"audio file {f} is too short to transcribe "
                                   f"({feats.shape[0] * cfg.frame_shift * 1000:g} ms)")
        except DsrUserError as e:
            if unreadable is None:
                raise
            unreadable.append((Path(f), str(e)))
            continue
        enc, enc_lens = model.encode(feats[None].to(dev), torch.tensor([feats.shape[0]], device=dev))
        if method in WHISPER_METHODS:
            assert whisper is not None  # check_method: the model has Whisper's decoder head
            duration = len(audio) / cfg.sampling_rate
            nbest = whisper_nbest(model, whisper, enc, enc_lens, [duration], method, beam_size)
            out.append((Path(f), whisper.texts(nbest[0][:1])[0]))
            continue
        hyp = best_tokens(model, enc, enc_lens, method, opts)[0]
        out.append((Path(f), tokenizer.decode(hyp)))
    return out
