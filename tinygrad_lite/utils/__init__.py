"""Helpers with torch.utils' names: ``tinygrad_lite.utils.checkpoint.checkpoint`` is
``torch.utils.checkpoint.checkpoint`` (activation checkpointing)."""
from . import checkpoint  # noqa: F401
