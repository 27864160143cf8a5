"""dsr decode --int8 quantises a Whisper text decoder's tied output projection too."""

from __future__ import annotations

import torch

from dsr.decoding.quantize import quantize_int8
from dsr.models.whisper.model import TextDecoder


def _decoder() -> TextDecoder:
    torch.manual_seed(0)
    return TextDecoder(n_vocab=300, n_ctx=16, n_state=32, n_head=2, n_layer=2).eval()


def test_untied_projection_gives_the_same_logits() -> None:
    decoder = _decoder()
    tokens, xa = torch.randint(0, 300, (2, 5)), torch.randn(2, 7, 32)
    tied = decoder(tokens, xa=xa)
    decoder.untie_output_projection()
    assert isinstance(decoder.output_projection, torch.nn.Linear)
    torch.testing.assert_close(decoder(tokens, xa=xa), tied)


def test_int8_copy_quantises_the_output_projection_and_leaves_the_model_alone() -> None:
    decoder = _decoder()
    keys = set(decoder.state_dict())
    tokens, xa = torch.randint(0, 300, (2, 5)), torch.randn(2, 7, 32)
    reference = decoder(tokens, xa=xa)
    q = quantize_int8(decoder, torch.device("cpu"))
    projection = q.output_projection
    assert projection is not None and type(projection).__module__.startswith("torch.ao.nn.quantized")
    # The float model is untouched: still tied, same state dict (checkpoints stay loadable).
    assert decoder.output_projection is None and set(decoder.state_dict()) == keys
    logits = q(tokens, xa=xa)
    assert logits.shape == reference.shape
    # int8 weights and activations: close to the float logits, not equal.
    assert not torch.equal(logits, reference)
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8
