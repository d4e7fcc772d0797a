"""Task heads: a GPT body with a small layer on top that answers a question other than "next token?".

    token ids (B, T)  -> transformer (a GPT, without using its lm_head) -> hidden states (B, T, n_embd)
                      -> the hidden state of each row's last real token   (B, n_embd)
                      -> a Linear                                         (B, num_labels)  or  one score per choice

A causal model's last position is the only one that has seen the whole text, so it is the one
the head reads (GPT-1's and Hugging Face's rule, the default). ``GPTForSequenceClassification(...,
pooling="mean")`` reads instead the mean of the hidden states of every real position (up to the
last real token), as sentence-embedding models do: each position adds its own view of the text,
which helps a small or weak body, but it is not what Hugging Face's class computes.
The names and shapes are Hugging Face's:

* ``GPTForSequenceClassification(config, num_labels)``: ``transformer.*`` and ``score.weight``
  (no bias), as in ``GPT2ForSequenceClassification``; a folder saved from that class loads here.
* ``GPTForMultipleChoice(config)``: ``input_ids`` of shape (B, num_choices, T), each choice scored
  by ``multiple_choice_head`` (Linear(n_embd, 1), GPT2DoubleHeadsModel's ``multiple_choice_head.summary``),
  logits (B, num_choices), cross-entropy over the choices.

Padding: our GPT has no attention mask, so pad on the right. Causal attention then keeps every
pad token out of the real tokens' hidden states, and the head reads the last token that is not
``pad_token_id`` (Hugging Face's rule; without a pad token, every row must have full length).

Both heads are built with ``from_pretrained(path, ...)`` from one of our checkpoint folders (a base
GPT's: the head starts fresh; or a head's: everything loads) or from a Hugging Face GPT-2 folder,
and ``save_pretrained(out_dir, ...)`` writes our checkpoint format (``gpt/checkpoint.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import GPT, GPTConfig, _token_array

INIT_STD = 0.02  # Hugging Face's initializer_range for GPT-2, used for the fresh head


def last_non_pad_index(input_ids: numpy.ndarray, pad_token_id: int | None) -> numpy.ndarray:
    """For each row of ``input_ids`` (N, T), the position of its rightmost token that is not padding.

    Hugging Face's rule: argmax over positions of ``position * (token != pad)`` (a row of pads only
    gives 0). Without a pad token every row is taken to be full, which only a batch of one can promise.
    """
    N, T = input_ids.shape
    if pad_token_id is None:
        if N != 1:
            raise ValueError(f"last_non_pad_index: a batch of {N} rows needs a pad_token_id to find each row's "
                             "last real token (set pad_token_id on the head)")
        return numpy.full(N, T - 1)
    real = numpy.asarray(input_ids != pad_token_id)
    return (numpy.arange(T) * real).argmax(axis=1)


def mean_weights(last_positions: numpy.ndarray, T: int) -> numpy.ndarray:
    """(N, T, 1) weights that average each row's positions 0 .. ``last_positions[row]``: 1 / count
    there, 0 after (the padding). Position-based, not pad-id-based: a real token that happens to be
    the pad id (a newline inside a speech) still counts."""
    real = numpy.arange(T)[None, :] <= numpy.asarray(last_positions)[:, None]            # (N, T)
    return (real / real.sum(axis=1, keepdims=True)).astype(numpy.float32)[:, :, None]


def is_hf_folder(path: str | Path) -> bool:
    """A Hugging Face checkpoint folder (config.json) rather than one of ours (last.json / best.json)."""
    return (Path(path) / "config.json").is_file()


class _TaskHead(nn.Module):
    """What both heads share: the GPT body, the checkpoint config, loading and saving."""

    task = ""            # the checkpoint's model_config["head"]["task"]
    HF_HEAD_NAMES = {}   # Hugging Face name -> ours, for the head's weights

    def __init__(self, config: GPTConfig, pad_token_id: int | None):
        super().__init__()
        if pad_token_id is not None and not 0 <= pad_token_id < config.vocab_size:
            raise ValueError(f"{type(self).__name__}: pad_token_id {pad_token_id} is not a token id "
                             f"(vocab_size {config.vocab_size})")
        self.config, self.pad_token_id = config, pad_token_id
        self.transformer = GPT(config)

    def head_config(self) -> dict:
        return {"task": self.task, "pad_token_id": self.pad_token_id}

    def checkpoint_config(self) -> dict:
        """The ``model_config`` of this model's checkpoint: the GPT's fields plus ``head``."""
        return {**self.config.to_dict(), "head": self.head_config()}

    def _pooled(self, input_ids: numpy.ndarray, mc_token_ids=None, pooling: str = "last") -> tl.Tensor:
        """The hidden state (N, n_embd) of each row's last real token (or of position ``mc_token_ids``);
        with ``pooling="mean"``, the mean of the hidden states of positions 0 .. that last real token."""
        hidden = self.transformer.hidden_states(input_ids)                       # (N, T, n_embd)
        if mc_token_ids is None:
            positions = last_non_pad_index(numpy.asarray(input_ids), self.pad_token_id)
        else:
            positions = numpy.asarray(mc_token_ids).reshape(-1)
        if pooling == "mean":
            return (hidden * tl.Tensor(mean_weights(positions, hidden.shape[1]), dtype=hidden.dtype,
                                       device=hidden.device)).sum(dim=1)
        return hidden[numpy.arange(len(positions)), positions]

    def _fresh_head(self, linear: nn.Linear) -> None:
        linear.weight.data = tl.backend.generator("cpu").normal(0.0, INIT_STD, linear.weight.shape).astype(
            numpy.float32)
        if linear.bias is not None:
            linear.bias.data = numpy.zeros(linear.bias.shape, dtype=numpy.float32)

    # ------------------------------------------------------------- saving
    def save_pretrained(self, out_dir: str | Path, name: str = "last", *, tokenizer: dict,
                        train_state: dict | None = None, optimizer=None) -> Path:
        """Write checkpoint ``name`` in ``out_dir`` (our format, as training saves the base GPT)."""
        return save_checkpoint(out_dir, name, model=self, model_config=self.checkpoint_config(),
                               tokenizer=tokenizer, train_state=train_state or {}, optimizer=optimizer)

    # ------------------------------------------------------------ loading
    @classmethod
    def _from_head_config(cls, config: GPTConfig, head: dict, overrides: dict) -> "_TaskHead":
        raise NotImplementedError

    @classmethod
    def _from_path(cls, path: str | Path, checkpoint: str, overrides: dict) -> "_TaskHead":
        if is_hf_folder(path):
            return cls._from_hf(Path(path), overrides)
        saved = load_checkpoint(path, checkpoint)
        gpt_fields = {key: value for key, value in saved.model_config.items() if key != "head"}
        try:
            config = GPTConfig.from_dict(gpt_fields)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {saved.path} has an unusable model config: {error}") from error
        head = saved.model_config.get("head")
        if head is not None and head.get("task") != cls.task:
            raise CheckpointError(f"checkpoint {saved.path} holds a {head.get('task')!r} head, not {cls.task!r}")
        model = cls._from_head_config(config, head or {}, overrides)
        state = saved.model_state
        if head is None:  # a base GPT: its weights are the body, the head keeps its fresh init
            state = {**{f"transformer.{key}": value for key, value in state.items()},
                     **{key: value.data for key, value in model.state_dict().items()
                        if not key.startswith("transformer.")}}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"checkpoint {saved.path} does not fit {cls.__name__}: {error}") from error
        return model

    @classmethod
    def _from_hf(cls, path: Path, overrides: dict) -> "_TaskHead":
        from .pretrained import load_body_weights, read_hf_gpt2  # noqa: PLC0415 -- only HF folders need it

        config, hf_config, body_state, head_state = read_hf_gpt2(path)
        head = {"pad_token_id": hf_config.get("pad_token_id"), "num_labels": _hf_num_labels(hf_config, head_state)}
        model = cls._from_head_config(config, head, overrides)
        load_body_weights(model.transformer, body_state, path / "model.safetensors")
        ours = {cls.HF_HEAD_NAMES[name]: value for name, value in head_state.items() if name in cls.HF_HEAD_NAMES}
        if ours:  # the folder was saved from the matching Hugging Face head: take its weights too
            try:
                model.load_state_dict({**model.state_dict(), **ours}, strict=True)
            except RuntimeError as error:
                raise ValueError(f"from_pretrained: the head weights in {path} do not fit: {error}") from error
        return model


def _hf_num_labels(hf_config: dict, head_state: dict) -> int | None:
    """The number of classes of a Hugging Face folder: its score matrix's rows, else its id2label's size
    (config.json leaves id2label out for the default, 2)."""
    if "score.weight" in head_state:
        return head_state["score.weight"].shape[0]
    return len(hf_config["id2label"]) if "id2label" in hf_config else None


class GPTForSequenceClassification(_TaskHead):
    """``logits, loss = model(input_ids, labels)``: logits (B, num_labels) from the last real token."""

    task = "sequence_classification"
    HF_HEAD_NAMES = {"score.weight": "score.weight"}

    POOLINGS = ("last", "mean")

    def __init__(self, config: GPTConfig, num_labels: int, pad_token_id: int | None = None, pooling: str = "last"):
        super().__init__(config, pad_token_id)
        if pooling not in self.POOLINGS:
            raise ValueError(f"GPTForSequenceClassification: pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if isinstance(num_labels, bool) or not isinstance(num_labels, (int, numpy.integer)) or num_labels < 2:
            raise ValueError(f"GPTForSequenceClassification: num_labels must be an integer >= 2, got {num_labels!r}")
        self.num_labels = int(num_labels)
        self.score = nn.Linear(config.n_embd, self.num_labels, bias=False)
        self._fresh_head(self.score)

    def head_config(self) -> dict:
        return {**super().head_config(), "num_labels": self.num_labels, "pooling": self.pooling}

    def forward(self, input_ids, labels=None) -> tuple[tl.Tensor, tl.Tensor | None]:
        """Logits (B, num_labels); the mean cross-entropy against ``labels`` (B,) when given."""
        input_ids = _token_array(input_ids, "input_ids")
        # Hugging Face scores every position and then picks the last real one; picking first is
        # the same numbers for T times less work.
        logits = self.score(self._pooled(input_ids, pooling=self.pooling))          # (B, num_labels)
        loss = None
        if labels is not None:
            labels = numpy.asarray(labels).reshape(-1)
            if labels.shape != (input_ids.shape[0],):
                raise ValueError(f"GPTForSequenceClassification: labels have shape {labels.shape}, expected "
                                 f"({input_ids.shape[0]},), one class id per row of input_ids {input_ids.shape}")
            loss = F.cross_entropy(logits, labels)
        return logits, loss

    @classmethod
    def _from_head_config(cls, config, head, overrides):
        num_labels = overrides.get("num_labels") or head.get("num_labels")
        if num_labels is None:
            raise ValueError("GPTForSequenceClassification.from_pretrained: pass num_labels (the checkpoint has none)")
        if head.get("num_labels") not in (None, num_labels) and "task" in head:
            raise ValueError(f"GPTForSequenceClassification.from_pretrained: the checkpoint's head has "
                             f"{head['num_labels']} labels, not {num_labels}")
        pad = overrides["pad_token_id"] if overrides.get("pad_token_id") is not None else head.get("pad_token_id")
        pooling = overrides.get("pooling") or head.get("pooling", "last")
        return cls(config, num_labels, pad_token_id=pad, pooling=pooling)

    @classmethod
    def from_pretrained(cls, path: str | Path, num_labels: int | None = None, pad_token_id: int | None = None,
                        checkpoint: str = "best", pooling: str | None = None) -> "GPTForSequenceClassification":
        """From our checkpoint folder ``path`` (checkpoint ``best`` or ``last``) or a Hugging Face GPT-2 folder;
        ``pooling`` (``"last"`` or ``"mean"``) defaults to the checkpoint's head's, else ``"last"``."""
        return cls._from_path(path, checkpoint, {"num_labels": num_labels, "pad_token_id": pad_token_id,
                                                 "pooling": pooling})


class GPTForMultipleChoice(_TaskHead):
    """``logits, loss = model(input_ids, labels)``: input_ids (B, num_choices, T) -> logits (B, num_choices)."""

    task = "multiple_choice"
    HF_HEAD_NAMES = {"multiple_choice_head.summary.weight": "multiple_choice_head.weight",
                     "multiple_choice_head.summary.bias": "multiple_choice_head.bias"}

    def __init__(self, config: GPTConfig, pad_token_id: int | None = None):
        super().__init__(config, pad_token_id)
        self.multiple_choice_head = nn.Linear(config.n_embd, 1)  # one score per (question, choice)
        self._fresh_head(self.multiple_choice_head)

    def forward(self, input_ids, labels=None, mc_token_ids=None) -> tuple[tl.Tensor, tl.Tensor | None]:
        """Logits (B, num_choices); cross-entropy over the choices against ``labels`` (B,) when given.

        ``mc_token_ids`` (B, num_choices): the position to read in each choice (GPT2DoubleHeadsModel's
        argument); by default each choice's last real token.
        """
        input_ids = numpy.asarray(input_ids.data if isinstance(input_ids, tl.Tensor) else input_ids)
        if input_ids.ndim != 3:
            raise ValueError(f"GPTForMultipleChoice: input_ids must have shape (batch, num_choices, time), "
                             f"got {input_ids.shape}")
        B, num_choices, T = input_ids.shape
        flat = input_ids.reshape(B * num_choices, T)          # every choice is one sequence
        pooled = self._pooled(flat, mc_token_ids)              # (B * num_choices, n_embd)
        logits = self.multiple_choice_head(pooled).reshape(B, num_choices)
        loss = None
        if labels is not None:
            labels = numpy.asarray(labels).reshape(-1)
            if labels.shape != (B,):
                raise ValueError(f"GPTForMultipleChoice: labels have shape {labels.shape}, expected ({B},): "
                                 "the index of the right choice for each question")
            loss = F.cross_entropy(logits, labels)
        return logits, loss

    @classmethod
    def _from_head_config(cls, config, head, overrides):
        pad = overrides["pad_token_id"] if overrides.get("pad_token_id") is not None else head.get("pad_token_id")
        return cls(config, pad_token_id=pad)

    @classmethod
    def from_pretrained(cls, path: str | Path, pad_token_id: int | None = None,
                        checkpoint: str = "best") -> "GPTForMultipleChoice":
        """From our checkpoint folder ``path`` (checkpoint ``best`` or ``last``) or a Hugging Face GPT-2 folder."""
        return cls._from_path(path, checkpoint, {"pad_token_id": pad_token_id})
