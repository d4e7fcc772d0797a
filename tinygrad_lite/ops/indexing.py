"""Gathering rows by integer index (embedding lookup)."""
from __future__ import annotations

from ..autograd import Function
from ..backend import scatter_add, xp_of


class Embedding(Function):
    """z[..., :] = W[idx[...], :]  -- look up one row of W per index.

    dL/dW[r] = sum of dL/dz over every position whose index is r. The same
    row can be looked up many times, so the backward is a scatter-*add*.
    """

    def forward(self, weight, indices):
        if weight.ndim != 2:
            raise ValueError(f"Embedding: weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
        xp = xp_of(weight)
        if not xp.issubdtype(indices.dtype, xp.integer):
            raise TypeError(f"Embedding: indices must be integers, got dtype {indices.dtype}")
        if bool(((indices < 0) | (indices >= weight.shape[0])).any()):  # one check: one GPU sync
            raise IndexError(f"Embedding: index out of range [0, {weight.shape[0]}) "
                             f"(min {int(indices.min())}, max {int(indices.max())}) for weight of shape {weight.shape}")
        self.indices = indices
        return weight[indices]

    def backward(self, grad):
        (weight,) = self.parents
        xp = xp_of(grad)
        grad_weight = xp.zeros(weight.shape, dtype=weight.dtype)
        scatter_add(grad_weight, self.indices.reshape(-1), grad.reshape(-1, weight.shape[1]))
        return grad_weight
