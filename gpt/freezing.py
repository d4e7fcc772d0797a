"""What trains: freezing a pretrained body, unfreezing it block by block, and a table of it all.

    model.freeze(except_=("h.3", "ln_f", "score"))   # Module.freeze: only the last block, ln_f, the head
    unfreeze_top_blocks(model, 2)                    # now h.2 trains too (gradual unfreezing)
    print(trainable_param_table(model))

Gradual unfreezing (Howard and Ruder's ULMFiT, 2018) trains the head first, then opens one more
block from the top each epoch, so the pretrained lower layers, which hold the most general
features, are changed last and least:

    model.freeze(except_=("ln_f", "score"))
    optimizer = tl.optim.AdamW(model.parameters(), lr=3e-4)   # frozen parameters get no grad: skipped
    for epoch in range(epochs):
        unfreeze_top_blocks(model, min(epoch, len(model.transformer.h)))   # 0, 1, 2, ... from the top
        ...train one epoch...
"""
from __future__ import annotations

from tinygrad_lite import nn


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(name, list) of the model's transformer blocks: the ModuleList called ``h`` (GPT-2's name),
    directly on the model (``GPT``) or below it (``transformer.h`` in a task-head model)."""
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and (name == "h" or name.endswith(".h"))]
    if len(found) != 1:
        raise ValueError(f"transformer_blocks: expected one ModuleList named 'h' in {type(model).__name__}, "
                         f"found {[name for name, _ in found]}")
    return found[0]


def unfreeze_top_blocks(model: nn.Module, k: int) -> list[str]:
    """Make the top (last) ``k`` transformer blocks trainable; the rest keep their setting.
    Returns the blocks' names (``["h.3", "h.2"]``), top first."""
    name, blocks = transformer_blocks(model)
    if not 0 <= k <= len(blocks):
        raise ValueError(f"unfreeze_top_blocks: k must be in 0..{len(blocks)} (the model has {len(blocks)} "
                         f"blocks), got {k}")
    prefix = f"{name}." if name else ""
    names = [f"{prefix}{index}" for index in range(len(blocks) - 1, len(blocks) - 1 - k, -1)]
    for index in range(len(blocks) - k, len(blocks)):
        blocks[index].requires_grad_(True)
    return names


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters (tied weights counted once)."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def trainable_param_table(model: nn.Module, only_trainable: bool = False) -> str:
    """A printable table of every parameter: name, shape, count, trainable; then the totals and
    the trainable fraction. ``only_trainable`` leaves the frozen rows out (the totals stay)."""
    rows = [(name, "x".join(str(side) for side in p.shape) or "scalar", p.numel(), p.requires_grad)
            for name, p in model.named_parameters()]
    width = max([len("parameter")] + [len(row[0]) for row in rows])
    lines = [f"{'parameter':<{width}}  {'shape':>14}{'params':>14}  trainable"]
    for name, shape, count, trainable in rows:
        if trainable or not only_trainable:
            lines.append(f"{name:<{width}}  {shape:>14}{count:>14,}  {'yes' if trainable else 'no'}")
    trainable, total = trainable_counts(model)
    lines.append(f"{'trainable':<{width}}  {'':>14}{trainable:>14,}  {trainable / total:.2%} of {total:,}"
                 if total else "no parameters")
    return "\n".join(lines)
