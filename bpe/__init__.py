"""bpe: a byte-level BPE tokenizer in pure Python that encodes token-for-token like tiktoken.

    import bpe
    tok = bpe.Tokenizer.train(open("input.txt").read(), vocab_size=4096)
    ids = tok.encode("Hello world")          # [..]
    tok.decode(ids)                          # "Hello world"
    gpt2 = bpe.gpt2("data/")                 # OpenAI's GPT-2 vocabulary, from local files

Modules, in reading order: patterns (splitting text into chunks), merge (BPE on one chunk),
tokenizer (the Tokenizer class), train (learning merges), io (file formats), pretrained.
"""
from .io import TokenizerFileError, bytes_to_unicode
from .patterns import GPT2_PATTERN, GPT4_PATTERN
from .pretrained import cl100k, gpt2
from .tokenizer import Tokenizer

__all__ = ["Tokenizer", "TokenizerFileError", "GPT2_PATTERN", "GPT4_PATTERN", "gpt2", "cl100k",
           "bytes_to_unicode"]
