"""ZeRO stage 1: shard AdamW's moments over the ranks (torch's ``ZeroRedundancyOptimizer``).

Under plain DDP every rank holds the same full AdamW state -- two moments per weight,
twice the model's bytes -- and does the same full update. ZeRO-1 (Rajbhandari et al.,
2020) cuts that redundancy. Per parameter group, think of all parameters laid end to end
as one flat vector of n numbers, cut into N equal shards of s = ceil(n / N):

    rank r owns elements r*s .. (r+1)*s - 1: their moments m, v live only on rank r.
    step:  rank r runs the Adam equations on its shard (its slice of the averaged
           gradient and of the weights), then an all-gather of the N updated shards
           gives every rank all the new weights.

So each rank holds 2 * 4 * n / N bytes of moments instead of 2 * 4 * n (float32), for one
all-gather of the weights (4 * n bytes) per step on top of DDP's all-reduce. The Adam
arithmetic is ``optim.flat_adam.update_flat``'s, element for element, so the weights are
bit-for-bit those of the unsharded fused AdamW.

Checkpoints hold the full state in AdamW's own format (so a run can resume on any number of
ranks, sharded or not): ``consolidate_state_dict()`` on every rank gathers it, then
``state_dict()`` returns it (as in torch); ``load_state_dict`` takes a full AdamW state and
keeps this rank's shard.
"""
from __future__ import annotations

from ..autograd import no_grad
from ..optim import _AdamBase
from ..optim import flat_adam
from . import all_gather, rank, world_size


class Shard:
    """One parameter group's flat layout, and this rank's slice of it with its moments.

    ``chunks`` follow ``flat_adam.FlatMoments.chunks`` -- (start, end, pieces) with pieces
    (parameter index, lo, hi) -- so that ``flat_adam.update_flat`` can run on the shard.
    """

    def __init__(self, params: list, ranks: int, me: int):
        xp = params[0].xp
        self.params, self.device = params, params[0].device
        self.sizes = [p.numel() for p in params]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)
        total = self.offsets[-1]
        self.shard_size = -(-total // ranks)  # ceil: the last shard is padded
        self.start, self.end = min(me * self.shard_size, total), min((me + 1) * self.shard_size, total)
        pieces = [(i, max(self.start - lo, 0), min(self.end - lo, size))
                  for i, (lo, size) in enumerate(zip(self.offsets, self.sizes))
                  if lo < self.end and lo + size > self.start]
        self.pieces = pieces
        self.chunks = self._chunk(pieces, flat_adam.CPU_CHUNK_ELEMENTS if self.device == "cpu" else max(total, 1))
        dtype = params[0].dtype
        self.exp_avg = xp.zeros(self.end - self.start, dtype=dtype)
        self.exp_avg_sq = xp.zeros(self.end - self.start, dtype=dtype)
        self.send = xp.zeros(self.shard_size, dtype=dtype)            # this rank's updated weights (padded)
        self.gathered = xp.zeros(self.shard_size * ranks, dtype=dtype)  # everyone's, end to end

    @staticmethod
    def _chunk(pieces: list, chunk: int) -> list:
        """flat_adam.chunk_plan over the pieces, its piece indices mapped back to parameters."""
        plan = flat_adam.chunk_plan([hi - lo for _, lo, hi in pieces], chunk)
        return [(start, end, [(pieces[k][0], pieces[k][1] + a, pieces[k][1] + b) for k, a, b in parts])
                for start, end, parts in plan]

    def nbytes(self) -> int:
        return self.exp_avg.nbytes + self.exp_avg_sq.nbytes


class ZeroRedundancyOptimizer:
    """Wrap an ``optim.AdamW`` (or ``Adam``) so that each rank keeps and updates only its 1/N shard.

    Use it where the AdamW was used: ``step()``, ``zero_grad()``, ``param_groups`` (lr
    schedules change them), ``state_dict()``/``load_state_dict()``. Gradients must already be
    averaged over the ranks (``DistributedDataParallel`` does it).
    """

    def __init__(self, optimizer: _AdamBase):
        if not isinstance(optimizer, _AdamBase):
            raise TypeError(f"ZeroRedundancyOptimizer: shards Adam/AdamW, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # the same dicts: schedules set the lr here
        self.defaults = optimizer.defaults
        self.shards = [Shard(group["params"], world_size(), rank()) for group in self.param_groups]
        self.steps = [0] * len(self.shards)
        self._consolidated = None  # (steps, full state dict) made by consolidate_state_dict
        if optimizer.state:  # moments it already has become this rank's shards
            self.load_state_dict(optimizer.state_dict())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def state_bytes(self) -> int:
        """Bytes of optimizer state held by this rank (its shard of both moments)."""
        return sum(shard.nbytes() for shard in self.shards)

    def step(self, closure=None):
        """Adam on this rank's shard of every group, then all-gather the updated weights."""
        loss = closure() if closure is not None else None
        with no_grad():
            for index, (group, shard) in enumerate(zip(self.param_groups, self.shards)):
                missing = [p.shape for p in group["params"] if p.grad is None]
                if missing:
                    raise RuntimeError(f"ZeroRedundancyOptimizer.step: group {index} has parameters without a "
                                       f"gradient (shapes {missing[:4]}); every rank must update every shard")
                self.steps[index] += 1
                hyper = flat_adam._hyperparameters(group, self.steps[index], self.optimizer.decoupled_weight_decay)
                if shard.chunks:
                    flat_adam.update_flat(shard, [p.data for p in shard.params],
                                          [p.grad.data for p in shard.params], **hyper)
                self._gather_weights(shard)
        return loss

    def _gather_weights(self, shard: Shard) -> None:
        """Every rank's updated shard into every rank's parameters."""
        position = 0
        for i, lo, hi in shard.pieces:
            shard.send[position:position + hi - lo] = shard.params[i].data.reshape(-1)[lo:hi]
            position += hi - lo
        all_gather(shard.send, out=shard.gathered)
        for param, start, size in zip(shard.params, shard.offsets, shard.sizes):
            param.data.reshape(-1)[...] = shard.gathered[start:start + size]
            param._version += 1  # changed in place

    # ---------------------------------------------------------- checkpoints
    def consolidate_state_dict(self) -> None:
        """Gather the full AdamW state (collective: call it on every rank); ``state_dict()`` returns it."""
        state, index = {}, 0
        for shard, steps in zip(self.shards, self.steps):
            full = {}
            for name in ("exp_avg", "exp_avg_sq"):
                padded = shard.send.copy()
                padded[...] = 0
                padded[:shard.end - shard.start] = getattr(shard, name)
                full[name] = all_gather(padded)
            for param, start, size in zip(shard.params, shard.offsets, shard.sizes):
                if steps > 0:
                    state[index] = {"step": steps, **{name: flat[start:start + size].reshape(param.shape).copy()
                                                      for name, flat in full.items()}}
                index += 1
        groups, index = [], 0
        for group in self.param_groups:
            hyperparameters = {key: value for key, value in group.items() if key != "params"}
            groups.append({**hyperparameters, "params": list(range(index, index + len(group["params"])))})
            index += len(group["params"])
        self._consolidated = (list(self.steps), {"state": state, "param_groups": groups})

    def state_dict(self) -> dict:
        """The full state, in AdamW's format, as ``consolidate_state_dict`` gathered it at this step."""
        if world_size() == 1 and (self._consolidated is None or self._consolidated[0] != self.steps):
            self.consolidate_state_dict()  # one rank holds everything: nothing to gather from others
        if self._consolidated is None or self._consolidated[0] != self.steps:
            raise RuntimeError("ZeroRedundancyOptimizer.state_dict: call consolidate_state_dict() on every rank "
                               "first (after the last step): each rank holds only its shard of the moments")
        return self._consolidated[1]

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a full AdamW state (from any number of ranks): keep this rank's shard of the moments."""
        self.optimizer.load_state_dict(state_dict)  # checks shapes, restores hyperparameters
        for index, (shard, group) in enumerate(zip(self.shards, self.param_groups)):
            states = [self.optimizer.state.get(p, {}) for p in group["params"]]
            steps = {s.get("step", 0) for s in states}
            if len(steps) != 1:
                raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: group {index}'s parameters are at "
                                 f"different steps {sorted(steps)}; ZeRO needs one step count per group")
            self.steps[index] = steps.pop()
            position = 0
            for i, lo, hi in shard.pieces:
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in states[i]:
                        getattr(shard, name)[position:position + hi - lo] = states[i][name].reshape(-1)[lo:hi]
                position += hi - lo
        self.optimizer.state = {}  # the full copy is not kept: that is the point
        self.optimizer._flat = {}
        self._consolidated = None
