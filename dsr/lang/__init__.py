"""Stage ``dsr lang``: BPE tokenizer (sentencepiece) and ``tokens.txt``."""

from dsr.lang.bpe import Tokenizer, train_bpe

__all__ = ["Tokenizer", "train_bpe"]
