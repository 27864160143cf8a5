"""Batched greedy search for the transducer and the CTC head."""

from __future__ import annotations

import torch


@torch.no_grad()
def transducer_greedy_search(
    model: torch.nn.Module, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, max_sym_per_frame: int = 1
) -> list[list[int]]:
    """Greedy search over a batch, all utterances advancing one frame at a time.

    Args:
        encoder_out: (N, T, D) encoder output.
        encoder_lens: (N,) valid frames.
        max_sym_per_frame: symbols that may be emitted at one frame before moving on.
    Returns:
        One token-id list per utterance (blank removed).
    """
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, T, D), got {tuple(encoder_out.shape)}")
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    n, t_max, _ = encoder_out.shape
    device = encoder_out.device
    blank = model.blank_id
    ctx = model.predictor.context_size
    hyps: list[list[int]] = [[] for _ in range(n)]
    context = torch.full((n, ctx), blank, dtype=torch.long, device=device)
    dec_proj = model.joiner.decoder_proj(model.predictor(context, need_pad=False))  # (N, 1, J)
    enc_proj = model.joiner.encoder_proj(encoder_out)  # (N, T, J)
    for t in range(t_max):
        active = encoder_lens > t
        if not active.any():
            break
        for _ in range(max_sym_per_frame):
            logits = model.joiner(enc_proj[:, t : t + 1].unsqueeze(2), dec_proj.unsqueeze(1), project_input=False)
            best = logits.reshape(n, -1).argmax(dim=-1)
            emit = active & (best != blank)
            if not emit.any():
                break
            idx = emit.nonzero(as_tuple=True)[0]
            for i in idx.tolist():
                hyps[i].append(int(best[i]))
            context[idx] = torch.cat([context[idx, 1:], best[idx, None]], dim=1)
            dec_proj[idx] = model.joiner.decoder_proj(model.predictor(context[idx], need_pad=False))
    return hyps


@torch.no_grad()
def ctc_greedy_search(log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path of a CTC posteriorgram: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (N, T, V) CTC log-posteriors.
        lens: (N,) valid frames.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for i, n in enumerate(lens.tolist()):
        seq = torch.unique_consecutive(best[i, :n]).tolist()
        out.append([s for s in seq if s != blank])
    return out
