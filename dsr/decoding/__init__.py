"""Decoding: transducer greedy search, CTC greedy search, the ``dsr decode`` stage."""
