"""bpe: a byte-level BPE tokenizer (being written)."""
