"""Transducer greedy search: the windowed (blank-skipping) batched search equals a plain
frame-by-frame search of each utterance alone."""

from __future__ import annotations

import pytest
import torch

from dsr.decoding.greedy import TransducerGreedySearch, transducer_greedy_search
from dsr.models import HybridTransducer, ModelConfig, build_model

torch.set_num_threads(1)


def reference_greedy(
    model: HybridTransducer, encoder_out: torch.Tensor, max_sym_per_frame: int, unk: int | None = None
) -> list[int]:
    """Textbook greedy search of one (T, D) utterance, one frame and one joiner call at a time;
    ``unk`` is searched as blank (icefall's ``greedy_search``: ``if y not in (blank_id, unk_id)``)."""
    context = [model.blank_id] * model.predictor.context_size
    hyp: list[int] = []
    for t in range(encoder_out.size(0)):
        for _ in range(max_sym_per_frame):
            dec = model.predictor(torch.tensor([context]), need_pad=False)  # (1, 1, decoder_dim)
            token = int(model.joiner(encoder_out[None, t : t + 1], dec).argmax())
            if token in (model.blank_id, unk):
                break
            hyp.append(token)
            context = context[1:] + [token]
    return hyp


def _model() -> HybridTransducer:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            feature_dim=20,
            encoder_dim=32,
            num_encoder_layers=1,
            num_heads=4,
            ffn_dim=64,
            conv_kernel_size=5,
            subsampling_channels=(4, 8),
            decoder_dim=24,
            joiner_dim=40,
            vocab_size=10,
        )
    ).eval()
    with torch.no_grad():
        # Emit now and then: a sharpened joiner with a blank bias gives runs of blanks between tokens.
        model.joiner.output_linear.weight.mul_(4.0)
        model.joiner.output_linear.bias[model.blank_id] += 2.0
    return model


@pytest.mark.parametrize("max_sym_per_frame", [1, 2])
@pytest.mark.parametrize("lookahead", [1, 4, 16])
def test_windowed_batched_greedy_equals_frame_by_frame_search(max_sym_per_frame: int, lookahead: int) -> None:
    model = _model()
    with torch.no_grad():
        enc = torch.randn(3, 40, 32)
        lens = torch.tensor([40, 23, 7])
        expected = [reference_greedy(model, enc[i, :n], max_sym_per_frame) for i, n in enumerate(lens.tolist())]
        assert all(len(h) >= 2 for h in expected) and sum(map(len, expected)) < 60, "needs a mix of blanks and tokens"
        for batch in ([0, 1, 2], [1], [2, 0]):
            search = TransducerGreedySearch(model, len(batch), enc.device, max_sym_per_frame, lookahead)
            search.advance(enc[batch], lens[batch])
            assert search.hyps == [expected[i] for i in batch]
        assert transducer_greedy_search(model, enc, lens, max_sym_per_frame) == expected


@pytest.mark.parametrize("max_sym_per_frame", [1, 2])
def test_unk_is_searched_as_blank_when_the_model_knows_it(max_sym_per_frame: int) -> None:
    """With ``model.unk_id`` set (decoding sets it from the lang dir) greedy search emits no
    <unk> and keeps the predictor state where the joiner chose it, as icefall's and
    sherpa-onnx's searches do; unset, <unk> is a token like any other."""
    from dsr.decoding.beam_search import modified_beam_search

    model = _model()
    torch.manual_seed(1)
    enc, lens = torch.randn(3, 40, 32), torch.tensor([40, 23, 31])
    plain = transducer_greedy_search(model, enc, lens, max_sym_per_frame)
    unk = max(range(1, 10), key=lambda tok: sum(h.count(tok) for h in plain))  # the most emitted token
    assert sum(h.count(unk) for h in plain) >= 2
    model.unk_id = unk
    expected = [reference_greedy(model, enc[i, :n], max_sym_per_frame, unk) for i, n in enumerate(lens.tolist())]
    got = transducer_greedy_search(model, enc, lens, max_sym_per_frame)
    assert got == expected and all(unk not in h for h in got) and got != plain
    if max_sym_per_frame == 1:
        beam = modified_beam_search(model, enc, lens, beam_size=4)
        assert all(unk not in h.tokens for hyps in beam for h in hyps)
        greedy_beam = modified_beam_search(model, enc, lens, beam_size=1)
        assert [tuple(hyps[0].tokens) for hyps in greedy_beam] == [tuple(h) for h in got]
