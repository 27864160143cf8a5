"""A tiny random Whisper written in every format dsr reads, by code independent of dsr's reader.

* :func:`tiny_tokenizer_json`: a byte-level BPE trained on two sentences plus Whisper's
  special tokens and six timestamps (built with the ``tokenizers`` library);
* :func:`random_hf_model`: transformers' ``WhisperForConditionalGeneration`` with every
  weight random except decoder layer 1's LayerNorms (left at ones/zeros, so that the
  CTranslate2 writers alias equal tensors, as they do in real conversions);
* :func:`openai_state_dict`: its weights under OpenAI's names, renamed with the mapping of
  transformers' ``convert_openai_to_hf.py`` (copied below) -- the reference every format
  must reproduce;
* :func:`write_openai_pt`, :func:`write_ct2_dir`: the other formats, the CTranslate2 one
  following ``ModelSpec._serialize`` and ``WhisperLoader`` of ctranslate2 4.8.5 (fused
  QKV/KV with a zero key bias, aliases, per-row int8 scales).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]
TIMESTAMPS = ["<|%.2f|>" % (i * 0.02) for i in range(6)]
TEXT = ["the cat sat on the mat", "hello world, the end."]
D_MODEL, HEADS, LAYERS, TEXT_CTX = 32, 2, 2, 24

#: transformers' convert_openai_to_hf.py WHISPER_MAPPING (OpenAI -> HF substrings, applied in order).
WHISPER_MAPPING = {
    "blocks": "layers",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
    ".attn.query": ".self_attn.q_proj",
    ".attn.key": ".self_attn.k_proj",
    ".attn.value": ".self_attn.v_proj",
    ".attn_ln": ".self_attn_layer_norm",
    ".attn.out": ".self_attn.out_proj",
    ".cross_attn.query": ".encoder_attn.q_proj",
    ".cross_attn.key": ".encoder_attn.k_proj",
    ".cross_attn.value": ".encoder_attn.v_proj",
    ".cross_attn_ln": ".encoder_attn_layer_norm",
    ".cross_attn.out": ".encoder_attn.out_proj",
    "decoder.ln.": "decoder.layer_norm.",
    "encoder.ln.": "encoder.layer_norm.",
    "token_embedding": "embed_tokens",
    "encoder.positional_embedding": "encoder.embed_positions.weight",
    "decoder.positional_embedding": "decoder.embed_positions.weight",
    "ln_post": "layer_norm",
}


def openai_to_hf(name: str) -> str:
    """transformers' ``rename_keys`` for one OpenAI name (without the ``model.`` prefix)."""
    new = name
    for k, v in WHISPER_MAPPING.items():
        if k in name:
            new = new.replace(k, v)
    return new


def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(TEXT * 3, trainer)
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens(TIMESTAMPS)  # not special, as in Whisper's tokenizer.json
    return tok.to_str()


def token_ids(tokenizer_json: str) -> dict[str, int]:
    """Special token -> id, and the lone-space token under "space"."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    ids = {s: tok.token_to_id(s) for s in SPECIALS + TIMESTAMPS}
    ids["space"] = tok.token_to_id("Ġ")
    ids["vocab"] = tok.get_vocab_size(with_added_tokens=True)
    return ids


def random_hf_model(tokenizer_json: str, seed: int = 0):
    """A tiny ``WhisperForConditionalGeneration`` with random weights (eval mode)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    ids = token_ids(tokenizer_json)
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=ids["vocab"],
        num_mel_bins=80,
        d_model=D_MODEL,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=4 * D_MODEL,
        decoder_ffn_dim=4 * D_MODEL,
        max_source_positions=1500,
        max_target_positions=TEXT_CTX,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[1, 2, ids["<|startoftranscript|>"]],
        begin_suppress_tokens=[ids["space"], eot],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("model.decoder.layers.1.") and "layer_norm" in name:
                continue  # ones / zeros: equal tensors, aliased by the CTranslate2 writers
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def openai_state_dict(hf_model, names: list[str]) -> dict[str, torch.Tensor]:
    """The HF model's tensors under OpenAI's ``names`` (float32 copies)."""
    hf = hf_model.state_dict()
    return {n: hf["model." + openai_to_hf(n)].detach().clone().float() for n in names}


def write_openai_pt(path: Path, dims: dict[str, int], state_dict: dict[str, torch.Tensor], half: bool) -> Path:
    """OpenAI's checkpoint layout (its releases are float16)."""
    sd = {k: (v.half() if half else v.clone()) for k, v in state_dict.items()}
    torch.save({"dims": dict(dims), "model_state_dict": sd}, path)
    return path


# ----------------------------------------------------------------------------------------------
# CTranslate2
# ----------------------------------------------------------------------------------------------


def ct2_variables(state_dict: dict[str, torch.Tensor], dims: dict[str, int]) -> dict[str, np.ndarray]:
    """WhisperSpec's variables (ctranslate2 4.8.5 WhisperLoader) from OpenAI-named float32 tensors."""
    sd = {k: v.numpy() for k, v in state_dict.items()}
    v: dict[str, np.ndarray] = {}

    def lin(ct2: str, oa: str, bias: bool = True) -> None:
        v[f"{ct2}/weight"] = sd[f"{oa}.weight"]
        if bias:
            v[f"{ct2}/bias"] = sd[f"{oa}.bias"]

    def ln(ct2: str, oa: str) -> None:
        v[f"{ct2}/gamma"], v[f"{ct2}/beta"] = sd[f"{oa}.weight"], sd[f"{oa}.bias"]

    def fuse(ct2: str, oa: str, parts: list[str]) -> None:
        # utils.fuse_linear: weights stacked; the key's missing bias becomes zeros.
        v[f"{ct2}/weight"] = np.concatenate([sd[f"{oa}.{p}.weight"] for p in parts])
        v[f"{ct2}/bias"] = np.concatenate(
            [
                sd[f"{oa}.{p}.bias"] if p != "key" else np.zeros(sd[f"{oa}.{p}.weight"].shape[0], np.float32)
                for p in parts
            ]
        )

    def layer(ct2: str, oa: str, cross: bool) -> None:
        fuse(f"{ct2}/self_attention/linear_0", f"{oa}.attn", ["query", "key", "value"])
        lin(f"{ct2}/self_attention/linear_1", f"{oa}.attn.out")
        ln(f"{ct2}/self_attention/layer_norm", f"{oa}.attn_ln")
        if cross:
            lin(f"{ct2}/attention/linear_0", f"{oa}.cross_attn.query")
            fuse(f"{ct2}/attention/linear_1", f"{oa}.cross_attn", ["key", "value"])
            lin(f"{ct2}/attention/linear_2", f"{oa}.cross_attn.out")
            ln(f"{ct2}/attention/layer_norm", f"{oa}.cross_attn_ln")
        lin(f"{ct2}/ffn/linear_0", f"{oa}.mlp.0")
        lin(f"{ct2}/ffn/linear_1", f"{oa}.mlp.2")
        ln(f"{ct2}/ffn/layer_norm", f"{oa}.mlp_ln")

    lin("encoder/conv1", "encoder.conv1")
    lin("encoder/conv2", "encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for i in range(dims["n_audio_layer"]):
        layer(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    ln("encoder/layer_norm", "encoder.ln_post")
    v["encoder/num_heads"] = np.int16(dims["n_audio_head"])
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/projection/weight"] = sd["decoder.token_embedding.weight"]  # tied: becomes an alias
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(dims["n_text_layer"]):
        layer(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    ln("decoder/layer_norm", "decoder.ln")
    v["decoder/num_heads"] = np.int16(dims["n_text_head"])
    v["decoder/activation"] = np.int8(3)  # GELU
    v["decoder/pre_norm"] = np.int8(1)
    v["decoder/scale_embeddings"] = np.int8(0)
    v["decoder/alignment_layer"] = np.int16(-1)
    v["decoder/alignment_heads"] = np.int16(1)
    return {k: np.asarray(x) for k, x in v.items()}


_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def _alias_and_quantize(
    variables: dict[str, np.ndarray], quantization: str
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """LayerSpec.optimize: alias equal tensors (to the first in name order), then quantize."""
    ordered = sorted(variables.items())
    aliases: dict[str, str] = {}
    for name, value in reversed(ordered):
        for other, other_value in ordered:
            if other == name:
                break
            if (
                value.ndim
                and other not in aliases
                and value.dtype == other_value.dtype
                and value.shape == other_value.shape
                and np.array_equal(value, other_value)
            ):
                aliases[name] = other
                break
    out: dict[str, np.ndarray] = {}
    for name, value in ordered:
        if name in aliases:
            continue
        if value.ndim == 0:
            out[name] = value
        elif name.endswith("/weight") and quantization.startswith("int8"):
            flat = value.astype(np.float32).reshape(value.shape[0], -1)  # conv weights: rows of C_in * k
            amax = np.abs(flat).max(axis=1)
            amax[amax == 0] = 127.0
            scale = (127.0 / amax).astype(np.float32)
            out[name] = np.rint(flat * scale[:, None]).astype(np.int8).reshape(value.shape)
            out[name + "_scale"] = scale
        elif quantization in ("float16", "int8_float16"):
            out[name] = value.astype(np.float16)
        else:
            out[name] = value.astype(np.float32)
    return out, sorted(aliases.items())


def serialize_ct2(variables: dict[str, np.ndarray], aliases: list[tuple[str, str]], version: int = 6) -> bytes:
    """ModelSpec._serialize: header, variables in name order, aliases."""
    out = bytearray()

    def string(s: str) -> None:
        b = s.encode()
        out.extend(struct.pack("<H", len(b) + 1) + b + b"\0")

    out.extend(struct.pack("<I", version))
    string("WhisperSpec")
    out.extend(struct.pack("<I", 3))
    out.extend(struct.pack("<I", len(variables)))
    for name, value in sorted(variables.items()):
        string(name)
        out.extend(struct.pack("<B", value.ndim))
        for d in value.shape:
            out.extend(struct.pack("<I", d))
        out.extend(struct.pack("<B", _DTYPE_IDS[value.dtype.name]))
        data = np.ascontiguousarray(value).tobytes()
        out.extend(struct.pack("<I", len(data)))
        out.extend(data)
    out.extend(struct.pack("<I", len(aliases)))
    for alias, target in aliases:
        string(alias)
        string(target)
    return bytes(out)


def write_ct2_dir(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    dims: dict[str, int],
    quantization: str,
    tokenizer_json: str | None = None,
    config: dict | None = None,
    parts: int = 1,
) -> Path:
    """A faster-whisper directory: model.bin (or ``parts`` pieces cut at odd offsets), config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    variables, aliases = _alias_and_quantize(ct2_variables(state_dict, dims), quantization)
    data = serialize_ct2(variables, aliases)
    if parts == 1:
        (directory / "model.bin").write_bytes(data)
    else:
        cuts = [0] + [len(data) * i // parts + 7 for i in range(1, parts)] + [len(data)]
        for i in range(parts):
            (directory / f"model.bin.part{i + 1}").write_bytes(data[cuts[i] : cuts[i + 1]])
    (directory / "config.json").write_text(json.dumps(config or {}))
    if tokenizer_json is not None:
        (directory / "tokenizer.json").write_text(tokenizer_json)
    return directory
