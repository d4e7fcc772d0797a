"""gpt: a GPT built on tinygrad_lite (being written)."""
