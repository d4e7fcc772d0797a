"""Learning-rate schedules, as ``torch.optim.lr_scheduler``: each sets every group's ``lr`` once per ``step()``.

    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)             # optimizer.step() inside
        scheduler.step()       # after the optimizer's step, as in torch

A scheduler remembers each group's starting lr as ``group["initial_lr"]`` (its
``base_lrs``), so every group keeps its own rate: the schedule scales each
one. Making the scheduler sets the lr of epoch 0 (``last_epoch = 0``).

Each schedule is written in its closed form, lr = f(base_lr, epoch), where
torch updates the previous lr step by step (its "chainable" form); the values
agree to rounding (tests/test_optim.py checks them against torch). So two
schedulers on one optimizer do not compose here: ``step()`` raises if a
group's lr was changed by anything else since the scheduler set it. Run
schedules one after another with ``SequentialLR``, or write one ``LambdaLR``.
"""
from __future__ import annotations

import copy
import math
from bisect import bisect_right
from typing import Callable


class LRScheduler:
    """Base class: ``base_lrs``, ``last_epoch``, ``step``, ``get_last_lr`` and the state dict.

    A subclass writes ``get_lr()``: the lr of every group at epoch ``self.last_epoch``.
    """

    _not_saved = ("optimizer",)  # attributes that state_dict leaves out

    def __init__(self, optimizer, last_epoch: int = -1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__}: expected an optimizer, got a {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            missing = [i for i, group in enumerate(optimizer.param_groups) if "initial_lr" not in group]
            if missing:
                raise KeyError(f"{type(self).__name__}: last_epoch={last_epoch} resumes a schedule, but "
                               f"param_groups {missing} have no 'initial_lr' (load the optimizer's state first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._last_lr = None
        self.step()

    def get_lr(self) -> list[float]:
        """The lr of every group at epoch ``self.last_epoch`` (written by each schedule)."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr")

    def get_last_lr(self) -> list[float]:
        """The lrs this scheduler set last, one per group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Move to the next epoch and set every group's lr for it (call it after ``optimizer.step()``)."""
        self._check_lrs_are_still_ours()
        self._step_count += 1
        self._set_epoch(self.last_epoch + 1)

    def _set_epoch(self, epoch: int) -> None:
        self.last_epoch = epoch
        self._last_lr = [float(lr) for lr in self.get_lr()]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def _check_lrs_are_still_ours(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}.step: the optimizer has {len(groups)} parameter groups, "
                             f"the scheduler was made for {len(self.base_lrs)}; make the scheduler after "
                             "add_param_group")
        if self._last_lr is None:
            return
        for index, (group, ours) in enumerate(zip(groups, self._last_lr)):
            if group["lr"] != ours:
                raise ValueError(f"{type(self).__name__}.step: group {index}'s lr is {group['lr']}, but this "
                                 f"scheduler set {ours}: something else changed it. Schedulers here compute "
                                 "each lr from the group's initial_lr, so they do not stack as torch's do; "
                                 "use SequentialLR or one LambdaLR")

    def state_dict(self) -> dict:
        """Everything but the optimizer (as torch): ``last_epoch``, ``base_lrs``, the schedule's settings."""
        return {key: copy.deepcopy(value) for key, value in self.__dict__.items() if key not in self._not_saved}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(copy.deepcopy(state_dict))


# ------------------------------------------------------- simple schedules


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch); ``lr_lambda`` is one function, or a list with one per group.

    (The functions are not in ``state_dict``: the scheduler you load into keeps its own.)
    """

    _not_saved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda: Callable[[int], float] | list, last_epoch: int = -1):
        count = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * count
        if len(self.lr_lambdas) != count:
            raise ValueError(f"LambdaLR: {len(self.lr_lambdas)} lr_lambdas for {count} parameter groups")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * lr_lambda(self.last_epoch) for base_lr, lr_lambda in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): multiply by gamma every step_size epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (how many milestones are <= epoch): multiply by gamma at each milestone."""

    def __init__(self, optimizer, milestones: list[int], gamma: float = 0.1, last_epoch: int = -1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        passed = bisect_right(self.milestones, self.last_epoch)
        return [base_lr * self.gamma ** passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = base_lr * factor for the first total_iters epochs, then base_lr."""

    def __init__(self, optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1):
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = self.factor if self.last_epoch < self.total_iters else 1.0
        return [base_lr * factor for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)."""

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1):
        if not 0.0 < start_factor <= 1.0:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor}")
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        progress = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2: half a cosine in T_max epochs.

    (After T_max it goes back up, as torch's does: the cosine continues.)
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):  # noqa: N803 -- torch's name
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2  # from 1 down to 0
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]


# ---------------------------------------------------- schedules in phases


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another: scheduler i takes over at ``milestones[i - 1]``, from its epoch 0.

        warmup = LinearLR(optimizer, start_factor=0.1, total_iters=5)
        decay = CosineAnnealingLR(optimizer, T_max=95)
        scheduler = SequentialLR(optimizer, [warmup, decay], milestones=[5])
    """

    def __init__(self, optimizer, schedulers: list[LRScheduler], milestones: list[int], last_epoch: int = -1):
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler, got none")
        for index, scheduler in enumerate(schedulers):
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {index} ({type(scheduler).__name__}) belongs to "
                                 "another optimizer")
            if isinstance(scheduler, SequentialLR):
                raise ValueError(f"SequentialLR: scheduler {index} is itself a SequentialLR; list its schedulers")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(schedulers)} schedulers need {len(schedulers) - 1} milestones, "
                             f"got {len(milestones)}")
        self.optimizer = optimizer
        self._schedulers, self._milestones = list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        for scheduler in self._schedulers:  # making each one took a step: undo it (as torch does)
            scheduler.last_epoch -= 1
        self._schedulers[bisect_right(self._milestones, 0)]._set_epoch(0)
        self._last_lr = self._schedulers[bisect_right(self._milestones, 0)].get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._set_epoch(0)  # its phase starts: from its own epoch 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = {key: copy.deepcopy(value) for key, value in self.__dict__.items()
                 if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(copy.deepcopy(state))


class OneCycleLR(LRScheduler):
    """Smith's 1cycle policy, as torch's ``OneCycleLR`` (lr per step, not per epoch).

        phase 1, steps 0 .. pct_start * total_steps - 1:  lr from initial_lr up to max_lr
        phase 2, to step total_steps - 1:                 lr from max_lr down to min_lr
        initial_lr = max_lr / div_factor,  min_lr = initial_lr / final_div_factor
        (three_phase: up, back down to initial_lr by step 2 * pct_start * total_steps - 2, then to min_lr)
        anneal "cos": end + (start - end) * (1 + cos(pi * pct)) / 2;   "linear": start + (end - start) * pct

    With ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's beta1) moves the other way,
    between max_momentum and base_momentum. ``max_lr`` may be a list, one per group.
    """

    def __init__(self, optimizer, max_lr: float | list[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float | list = 0.85,
                 max_momentum: float | list = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1):
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self._phases = _one_cycle_phases(pct_start * self.total_steps, self.total_steps, three_phase)
        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, peak in zip(groups, _per_group("max_lr", max_lr, groups)):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum=True needs an optimizer with a momentum or betas; "
                                 f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)")
            self.use_beta1 = "betas" in optimizer.defaults
            maxima = _per_group("max_momentum", max_momentum, groups)
            bases = _per_group("base_momentum", base_momentum, groups)
            if last_epoch == -1:
                for group, top, bottom in zip(groups, maxima, bases):
                    self._set_momentum(group, top)
                    group["max_momentum"], group["base_momentum"] = top, bottom
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {step} times; total_steps is {self.total_steps}")
        start_step = 0.0
        for index, (end_step, lr_from, lr_to, momentum_from, momentum_to) in enumerate(self._phases):
            if step <= end_step or index == len(self._phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                break
            start_step = end_step
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[lr_from], group[lr_to], pct))
            if self.cycle_momentum:
                self._set_momentum(group, self._anneal(group[momentum_from], group[momentum_to], pct))
        return lrs

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _set_momentum(self, group: dict, momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum


def _total_steps(total_steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> int:
    if total_steps is not None:
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"OneCycleLR: total_steps must be a positive int, got {total_steps!r}")
        return total_steps
    if epochs is None or steps_per_epoch is None:
        raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"OneCycleLR: epochs and steps_per_epoch must be > 0, got {epochs} and {steps_per_epoch}")
    return epochs * steps_per_epoch


def _one_cycle_phases(warmup_steps: float, total_steps: int, three_phase: bool) -> list[tuple]:
    """(end step, lr from, lr to, momentum from, momentum to) per phase; the names are group keys."""
    if three_phase:
        return [(float(warmup_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * warmup_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
    return [(float(warmup_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]


def _per_group(name: str, value, groups: list) -> list:
    """A setting given once or as a list with one entry per parameter group."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"OneCycleLR: {len(value)} values of {name} for {len(groups)} parameter groups")
        return list(value)
    return [value] * len(groups)


# --------------------------------------------------- warmup, then cosine


def get_lr(it: int, *, warmup_iters: int, lr_decay_iters: int, max_lr: float, min_lr: float) -> float:
    """The learning rate at iteration ``it`` (nanoGPT's schedule).

        it < warmup_iters:         max_lr * (it + 1) / (warmup_iters + 1)      (linear warmup)
        it > lr_decay_iters:       min_lr                                      (the floor)
        otherwise, with r = (it - warmup_iters) / (lr_decay_iters - warmup_iters) in [0, 1]:
                                   min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)   (cosine decay)

    A schedule too short to decay (lr_decay_iters <= warmup_iters, say a quick test run) warms
    up and then stays at max_lr.
    """
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if lr_decay_iters <= warmup_iters:
        return max_lr
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes from 1 down to 0
    return min_lr + coefficient * (max_lr - min_lr)


class WarmupCosineSchedule(LRScheduler):
    """``get_lr`` for every group: linear warmup for warmup_iters, cosine decay to the floor at max_iters.

    Each group keeps its own lr: with s = the group's initial lr / the largest group's,
    the group warms up to ``max_lr * s`` and decays to ``min_lr * s`` (``max_lr``
    defaults to the largest group lr, so each group peaks at its own lr). A group
    at the largest lr follows ``get_lr(max_lr, min_lr)`` exactly.

        schedule = WarmupCosineSchedule(optimizer, warmup_iters=100, max_iters=5000, max_lr=6e-4, min_lr=6e-5)
        for it in range(5000):
            ...; optimizer.step(); schedule.step()

    ``set_iteration(it)`` jumps to an iteration (as a training loop that resumes does).
    """

    def __init__(self, optimizer, warmup_iters: int, max_iters: int, max_lr: float | None = None,
                 min_lr: float = 0.0, last_epoch: int = -1):
        if (max_lr is not None and max_lr < 0) or min_lr < 0:
            raise ValueError(f"WarmupCosineSchedule: learning rates must be >= 0, got max_lr={max_lr}, min_lr={min_lr}")
        if warmup_iters < 0 or max_iters < 0:
            raise ValueError(f"WarmupCosineSchedule: warmup_iters and max_iters must be >= 0, got {warmup_iters} "
                             f"and {max_iters}")
        self.warmup_iters, self.max_iters = warmup_iters, max_iters
        self.max_lr, self.min_lr = max_lr, min_lr
        super().__init__(optimizer, last_epoch)

    def lr_at(self, it: int) -> list[float]:
        """The learning rate of each group at iteration ``it`` (does not change the optimizer)."""
        largest = max(self.base_lrs)
        peak = largest if self.max_lr is None else self.max_lr
        scales = [base_lr / largest if largest > 0 else 0.0 for base_lr in self.base_lrs]
        return [get_lr(it, warmup_iters=self.warmup_iters, lr_decay_iters=self.max_iters, max_lr=peak * scale,
                       min_lr=self.min_lr * scale) for scale in scales]

    def get_lr(self) -> list[float]:
        return self.lr_at(self.last_epoch)

    def set_iteration(self, it: int) -> list[float]:
        """Set every group's lr for iteration ``it``; returns them."""
        self._set_epoch(it)
        return self.get_last_lr()


__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ConstantLR", "ExponentialLR", "LinearLR",
           "CosineAnnealingLR", "SequentialLR", "OneCycleLR", "get_lr", "WarmupCosineSchedule"]
