"""Token sequences packed as a prefix tree, for scoring them with one causal-LM forward.

N-best hypotheses share their beginnings (all of them BOS, most of them the first words),
so a batch of sequences is stored as a trie: every distinct prefix is one node, run
through the LLM once.  The trie is laid out in one row in depth-first (preorder) order;
each node attends to itself and its ancestors only (a 4D attention mask) at position
``depth`` (position ids), which is exactly the context it has in its own sequence.
``log P(token | prefix)`` of a node is read from its parent's logits, so leaves (every
sequence's EOS) are never run through the LLM.

This module is plain Python and torch (no transformers): :class:`dsr.lm.scorer.LlmScorer`
runs the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Nodes of one forward's tree: the (N, N) mask and each layer's (heads, N, N) attention
# scores stay in the tens of MB, and a forward of ~1000 tokens already runs the matmuls at
# full speed on a CPU.
MAX_TREE_NODES = 1024


@dataclass(frozen=True)
class PrefixTree:
    """A forest of token nodes in preorder (a parent comes before its children).

    tokens[i]: token id of node i; parent[i]: its parent node, -1 for a root (a first
    token, which is context only); depth[i]: tokens before it in its sequence (0 for a
    root), i.e. its position id.  ends[s]: the last node of sequence s, -1 for an empty one.
    """

    tokens: list[int]
    parent: list[int]
    depth: list[int]
    ends: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, seqs: list[list[int]]) -> PrefixTree:
        """The trie of ``seqs`` (any order; equal sequences share their nodes)."""
        tokens: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        ends = [-1] * len(seqs)
        # In lexicographic order each sequence shares a prefix only with the one before it
        # (a subtree's sequences are contiguous), so the trie needs no child dictionaries and
        # nodes are created in preorder.
        path: list[int] = []  # nodes of the previous sequence
        prev: list[int] = []
        for s in sorted(range(len(seqs)), key=lambda i: seqs[i]):
            seq = seqs[s]
            common = _common_prefix(seq, prev)
            del path[common:]
            for d in range(common, len(seq)):
                tokens.append(seq[d])
                parent.append(path[-1] if path else -1)
                depth.append(d)
                path.append(len(tokens) - 1)
            ends[s] = path[-1] if seq else -1
            prev = seq
        return cls(tokens, parent, depth, ends)

    def scored_nodes(self) -> list[int]:
        """Nodes with a parent: the ones whose token is predicted (roots are context only)."""
        return [i for i, p in enumerate(self.parent) if p >= 0]

    def inner_nodes(self) -> list[int]:
        """Nodes with children, in preorder: the only ones the LLM must run.

        A leaf (the EOS of every sequence, or its last token) is only predicted, from its
        parent's logits; its own hidden state would condition nothing.
        """
        has_child = [False] * len(self)
        for p in self.parent:
            if p >= 0:
                has_child[p] = True
        return [i for i, c in enumerate(has_child) if c]

    def attention_mask(self, nodes: list[int], dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (1, 1, M, M) over ``nodes`` (preorder, closed under parents): 0 where
        nodes[i] may attend to nodes[j] (nodes[j] is nodes[i] or an ancestor), else dtype's min.

        The minimum rather than -inf, as transformers' own masks use, so that no row is all -inf.
        """
        index = {node: k for k, node in enumerate(nodes)}
        allowed = torch.zeros((len(nodes), len(nodes)), dtype=torch.bool)
        for k, node in enumerate(nodes):  # preorder: a parent's row is complete before its children's
            p = self.parent[node]
            if p >= 0:
                allowed[k] = allowed[index[p]]
            allowed[k, k] = True
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None]

    def sequence_sums(self, node_lp: list[float]) -> list[float]:
        """Per sequence, the sum of ``node_lp`` over its nodes (node_lp of a root should be 0)."""
        total = [0.0] * len(self)
        for i, p in enumerate(self.parent):  # preorder: the parent's running sum is ready
            total[i] = node_lp[i] + (total[p] if p >= 0 else 0.0)
        return [total[e] if e >= 0 else 0.0 for e in self.ends]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def chunk_by_prefix(seqs: list[list[int]], max_seqs: int, max_nodes: int = MAX_TREE_NODES) -> list[list[int]]:
    """Indices of ``seqs`` in lexicographic order, cut into runs of at most ``max_seqs``
    whose prefix tree has at most ``max_nodes`` nodes (a longer sequence alone is a run).

    Neighbours in that order share the longest prefixes, so each run makes a compact trie;
    the node cap bounds the (N, N) attention of one forward when little is shared.
    """
    if max_seqs < 1 or max_nodes < 1:
        raise ValueError(f"max_seqs and max_nodes must be >= 1, got {max_seqs} and {max_nodes}")
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    runs: list[list[int]] = []
    nodes = 0
    for k, i in enumerate(order):
        # In lexicographic order a sequence adds the nodes past its common prefix with the one before.
        new = len(seqs[i]) - (_common_prefix(seqs[i], seqs[order[k - 1]]) if runs and runs[-1] else 0)
        if not runs or len(runs[-1]) >= max_seqs or (runs[-1] and nodes + new > max_nodes):
            runs.append([])
            nodes = 0
            new = len(seqs[i])
        runs[-1].append(i)
        nodes += new
    return runs
