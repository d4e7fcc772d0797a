"""Attention on the CPU: the fast path of ``fused.ScaledDotProductAttention``.

It computes exactly the math in that class's docstring (whose plain NumPy version is the spec,
and the twin the tests compare with); what it adds is how the work is laid out:

The CPU path splits the work over the leading batch axis (``_run_in_stages``): each core takes a slice and
runs its products (in row blocks small enough that BLAS keeps them on
that core) and its softmax on its own; only a batch too short to give
every core a slice has BLAS spread each product over the cores. Long
causal attention skips the masked upper triangle: P is kept as blocks of
query rows, block a:b holding only keys :b (``_causal_blocks``), so
nothing is computed where P is 0. The output and the input gradients
are laid out in memory like q (``_empty_in_layout_of``). Two details
keep NumPy on its fast paths:

* s is applied while copying K^T (in backward, V^T) into a contiguous
  array, slice by slice: the scores arrive scaled (and dP arrives as
  s dP, so dS comes out as s dS), and every product is a BLAS call
  without a transposed right operand, which OpenBLAS runs at half speed
  on these small matrices;
* softmax(S) = softmax(S - c) for any c; the textbook c is each row's
  maximum, so that exp cannot overflow. Scaled attention scores are
  small, so the array path tries c = 0 first: no max (a slow reduction
  over short rows in NumPy) and no subtraction. If a row's sum of exp
  overflowed, or is so small that float precision suffers, the slice
  is recomputed the textbook way.
(The measurements behind each choice: docs/performance.md.)
"""
from __future__ import annotations

import math

import numpy

from .. import backend
from ..autograd import unbroadcast
from . import memory, threads


def forward(q, k, v, scale: float, is_causal: bool):
    """(out, state for ``backward``) for numpy arrays q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv)."""
    xp = numpy
    input_shapes = (q.shape, k.shape, v.shape)
    batch = tuple(numpy.broadcast_shapes(q.shape[:-2], k.shape[:-2]))  # shape arithmetic only
    q, k, v = (xp.broadcast_to(a, (batch or (1,)) + a.shape[-2:]) for a in (q, k, v))  # views, one batch shape
    keys = k.shape[-2]
    # P in blocks of query rows: causal rows a:b only reach keys :b (one block, all of P, otherwise)
    blocks = _causal_blocks(q.shape[-2], keys, is_causal)
    probs = tuple(memory.empty(q.shape[:-2] + (rows.stop - rows.start, seen), q.dtype, xp)
                  for rows, seen in blocks)
    out = _empty_in_layout_of(xp, q, q.shape[:-1] + (v.shape[-1],))
    mask = _causal_mask(xp, q.shape[-2], keys, q.dtype) if is_causal else None
    scaled_keys_t = memory.empty(k.shape[:-2] + (k.shape[-1], keys), k.dtype, xp)

    def scores(start, stop, matmul):  # S = Q (s K^T), -inf where a query must not see a key
        xp.multiply(k[start:stop].swapaxes(-1, -2), scale, out=scaled_keys_t[start:stop])
        for (rows, seen), block in zip(blocks, probs):
            matmul(xp, q[start:stop, ..., rows, :], scaled_keys_t[start:stop, ..., :seen], block[start:stop])
            if mask is not None:  # rows a:b see every key before a: only columns a: need the mask
                block[start:stop, ..., rows.start:] += mask[rows, rows.start:seen]

    def softmax(start, stop):  # P = softmax(S), in place
        if not all(_softmax_unshifted(xp, block[start:stop]) for block in probs):
            scores(start, stop, _matmul_on_one_core)  # (this runs on one core's slice)
            for block in probs:
                _softmax_shifted_by_max(xp, block[start:stop])

    def weighted_values(start, stop, matmul):  # out = P V
        for (rows, seen), block in zip(blocks, probs):
            matmul(xp, block[start:stop], v[start:stop, ..., :seen, :], out[start:stop, ..., rows, :])

    _run_in_stages(xp, q, k, v, scores, softmax, weighted_values)
    return (out if batch else out[0]), (q, k, v, blocks, probs, out, input_shapes)


def backward(state, grad, needs: tuple[bool, bool, bool], scale: float):
    """(dQ, dK, dV) from ``forward``'s state and dL/dout (None where not in ``needs``)."""
    q, k, v, blocks, probs, out, input_shapes = state
    need_q, need_k, need_v = needs
    xp = numpy
    grad = xp.broadcast_to(grad.reshape(out.shape), out.shape)
    grad_q, grad_k, grad_v = _empty_side_by_side(xp, (q, k, v), (need_q, need_k, need_v))
    d_scores = tuple(memory.empty(block.shape, block.dtype, xp) for block in probs) if need_q or need_k else ()
    scaled_values_t = (memory.empty(v.shape[:-2] + (v.shape[-1], v.shape[-2]), v.dtype, xp)
                       if need_q or need_k else None)
    ones = xp.ones(out.shape[-1], dtype=out.dtype)

    def first_products(start, stop, matmul):
        if need_v:  # dV = P^T G, block by block
            _sum_of_block_products(matmul, xp, blocks, probs, grad, grad_v, start, stop)
        if need_q or need_k:  # s dP = G (s V^T)
            xp.multiply(v[start:stop].swapaxes(-1, -2), scale, out=scaled_values_t[start:stop])
            for (rows, seen), d_block in zip(blocks, d_scores):
                matmul(xp, grad[start:stop, ..., rows, :], scaled_values_t[start:stop, ..., :seen],
                       d_block[start:stop])

    def softmax_backward(start, stop):  # s dS = P * (s dP - s rowsum),  rowsum_i = G_i . out_i
        if need_q or need_k:
            g, o = grad[start:stop], out[start:stop]
            row_sums = ((g * o).reshape(-1, o.shape[-1]) @ ones).reshape(o.shape[:-1] + (1,))  # BLAS gemv
            row_sums *= scale
            for (rows, _), block, d_block in zip(blocks, probs, d_scores):
                d_block[start:stop] -= row_sums[..., rows, :]
                d_block[start:stop] *= block[start:stop]

    def second_products(start, stop, matmul):
        if need_q:  # dQ = (s dS) K
            for (rows, seen), d_block in zip(blocks, d_scores):
                matmul(xp, d_block[start:stop], k[start:stop, ..., :seen, :], grad_q[start:stop, ..., rows, :])
        if need_k:  # dK = (s dS)^T Q, block by block
            _sum_of_block_products(matmul, xp, blocks, d_scores, q, grad_k, start, stop)

    _run_in_stages(xp, q, k, v, first_products, softmax_backward, second_products)
    return tuple(None if g is None else unbroadcast(g, shape)
                 for g, shape in zip((grad_q, grad_k, grad_v), input_shapes))


# OpenBLAS keeps a product with m * n * k up to about 2^19 on the calling core; bigger ones use
# every core (measured: docs/performance.md).
_ONE_CORE_PRODUCT = 1 << 19


def _run_in_stages(xp, q, k, v, products_before, elementwise, products_after) -> None:
    """Run the three stages of attention, each a function of a batch slice ``start, stop``
    (the two product stages also of the ``matmul`` to make their products with).

    When there is a batch slice for every core, each core takes one and runs
    all three stages on it: its products (``_matmul_on_one_core``), then its
    softmax, then its products again, with no hand-offs between the stages.
    With fewer batch entries than cores (one long sequence), the products run
    on the whole batch (``_matmul_whole``: BLAS spreads each over the cores),
    and only the elementwise stage is split.
    """
    batch, queries, keys = q.shape[0], q.shape[-2], k.shape[-2]
    work_per_entry = math.prod(q.shape[1:-2]) * queries * keys
    small = queries * keys * max(q.shape[-1], v.shape[-1]) <= _ONE_CORE_PRODUCT
    if small or batch >= threads.cpu_threads():
        def all_stages(start, stop):
            products_before(start, stop, _matmul_on_one_core)
            elementwise(start, stop)
            products_after(start, stop, _matmul_on_one_core)

        threads.parallel_rows(all_stages, batch, work_per_entry, xp=xp)
    else:
        products_before(0, batch, _matmul_whole)
        threads.parallel_rows(elementwise, batch, work_per_entry, xp=xp, cache_blocks=True)
        products_after(0, batch, _matmul_whole)


# Causal attention over at least two blocks of this many queries skips the masked upper triangle.
_CAUSAL_BLOCK_ROWS = 64


def _causal_blocks(queries, keys, is_causal):
    """The blocks of query rows attention keeps P in: pairs (rows, seen), rows a:b seeing keys :seen.

    Causal query rows a:b see only keys :b, so their block holds only those
    columns of S, P, dP and dS: the upper triangle, where P is 0, is never
    computed. With n blocks that is (n + 1) / 2n of the work: 5/8 for 4.
    Each block is an array of its own, so NumPy's passes over it run on
    contiguous memory (over a strided piece of a bigger array they run
    much slower: docs/performance.md). Without a causal mask, or for a short or non-square one,
    there is one block: the whole matrix.
    """
    if not is_causal or queries != keys or queries < 2 * _CAUSAL_BLOCK_ROWS:
        return [(slice(0, queries), keys)]
    bounds = list(range(0, queries, _CAUSAL_BLOCK_ROWS)) + [queries]
    return [(slice(a, b), b) for a, b in zip(bounds, bounds[1:])]


def _sum_of_block_products(matmul, xp, blocks, left_blocks, right, out, start, stop) -> None:
    """out = L^T R on the batch slice start:stop, for L kept in blocks of rows (``_causal_blocks``).

    Block a:b of L covers columns :seen, so it adds L[a:b, :seen]^T R[a:b] to
    the first ``seen`` rows of out. The last block reaches furthest (all of
    out's rows): it writes first, and the others are added to it.
    """
    for position, ((rows, seen), left) in enumerate(reversed(list(zip(blocks, left_blocks)))):
        target = out[start:stop, ..., :seen, :]
        product = (left[start:stop].swapaxes(-1, -2), right[start:stop, ..., rows, :])
        if position == 0:
            matmul(xp, *product, target)
        else:
            partial = memory.empty(target.shape, target.dtype, xp)
            matmul(xp, *product, partial)
            target += partial


def _matmul_whole(xp, a, b, out) -> None:
    """out = a @ b in one call: BLAS spreads a big product over every core."""
    xp.matmul(a, b, out=out)


def _matmul_on_one_core(xp, a, b, out) -> None:
    """out = a @ b for stacks of matrices, in BLAS calls small enough to stay on the calling core.

    A big product is cut into blocks of rows: (..., rows, k) is viewed as
    (..., rows / r, r, k), so NumPy's batched loop makes one r x k x n BLAS
    call per block, each below ``_ONE_CORE_PRODUCT``. (Left whole, BLAS would
    spread the product over every core while the other cores run their own
    slices of attention, and the threads would fight.)
    """
    rows, inner, cols = a.shape[-2], a.shape[-1], b.shape[-1]
    block = max(1, _ONE_CORE_PRODUCT // max(1, inner * cols))
    if xp is not numpy or block >= rows:
        xp.matmul(a, b, out=out)
        return
    whole = rows - rows % block  # rows in whole blocks; a shorter block of the rest follows

    def in_blocks(matrix):  # splitting an axis is always a view, so writes to out land in out
        return matrix[..., :whole, :].reshape(matrix.shape[:-2] + (whole // block, block, matrix.shape[-1]))

    xp.matmul(in_blocks(a), b[..., None, :, :], out=in_blocks(out))
    if whole < rows:
        xp.matmul(a[..., whole:, :], b, out=out[..., whole:, :])


def _empty_in_layout_of(xp, like, shape, strides=None):
    """An empty array of ``shape`` laid out in memory like ``like`` (a broadcast ``like``: plain C order).

    Attention's q, k, v are usually (B, T, n_head, D) tensors viewed as
    (B, n_head, T, D); an output or gradient with that same memory order
    turns back into (B, T, n_head * D) without a copy. (``strides``, if
    given, stand in for ``like``'s.)
    """
    strides = like.strides if strides is None else strides
    if 0 in strides:
        return memory.empty(shape, like.dtype, xp)
    order = sorted(range(len(shape)), key=lambda axis: -strides[axis])  # outermost axis first
    inverse = sorted(range(len(shape)), key=order.__getitem__)
    return memory.empty([shape[axis] for axis in order], like.dtype, xp).transpose(inverse)


def _empty_side_by_side(xp, arrays, wanted):
    """Empty gradients for ``arrays`` (None where not ``wanted``), each laid out like its array.

    When the arrays are evenly spaced pieces of one buffer with the same shape
    and strides -- q, k and v split from one c_attn output -- the gradients
    are pieces of one new buffer, spaced the same way: ``fused.SplitHeads``'s
    backward then takes that buffer as its gradient instead of copying the
    three into one (``packed_qkv_gradient``).
    """
    first = arrays[0]
    if all(wanted) and not backend.is_cuda(first) and all(
            a.shape == first.shape and a.strides == first.strides and a.dtype == first.dtype for a in arrays):
        starts = [a.__array_interface__["data"][0] for a in arrays]
        step = starts[1] - starts[0]
        if step > 0 and starts == [starts[0] + i * step for i in range(len(arrays))]:
            stacked = _empty_in_layout_of(xp, first, (len(arrays),) + first.shape, (step,) + first.strides)
            return tuple(stacked[i] for i in range(len(arrays)))
    return tuple(_empty_in_layout_of(xp, a, a.shape) if need else None for a, need in zip(arrays, wanted))


def packed_qkv_gradient(grads, shape):
    """dL/dqkv of ``shape`` (B, T, 3C) as the array dQ, dK, dV already lie in, or None.

    The three are (B, nh, T, hs) views; ``_empty_side_by_side`` makes them views of one
    (B, T, 3, nh, hs) buffer when q, k and v were views of one such array (split by
    ``fused.SplitHeads``). That buffer is then the gradient, and nothing is copied.
    All three must be views of the same allocation, dK and dV must start C and 2C
    elements after dQ, and the strides must make the buffer contiguous.
    """
    grad_q, grad_k, grad_v = grads
    B, T, three_c = shape
    if grad_q.base is None or not (grad_q.base is grad_k.base is grad_v.base):
        return None
    if not (grad_q.dtype == grad_k.dtype == grad_v.dtype and grad_q.strides == grad_k.strides == grad_v.strides):
        return None
    n_head, head_size = grad_q.shape[1], grad_q.shape[3]
    step = n_head * head_size * grad_q.itemsize  # bytes from q's features to k's, k's to v's
    start = grad_q.__array_interface__["data"][0]
    if [g.__array_interface__["data"][0] for g in grads] != [start, start + step, start + 2 * step]:
        return None
    batch_stride, head_stride, time_stride, feature_stride = grad_q.strides
    packed = numpy.lib.stride_tricks.as_strided(
        grad_q, shape=(B, T, 3, n_head, head_size),
        strides=(batch_stride, time_stride, step, head_stride, feature_stride))
    return packed.reshape(shape) if packed.flags.c_contiguous else None


def _causal_mask(xp, queries, keys, dtype):
    """(Tq, Tk) additive mask: 0 where key j <= query i, -inf after it."""
    return xp.where(xp.triu(xp.ones((queries, keys), dtype=bool), k=1), -xp.inf, 0.0).astype(dtype)


def _softmax_unshifted(xp, scores) -> bool:
    """Softmax over the last axis of ``scores`` (contiguous) in place, with no shift: P = exp(S) / sum(exp(S)).

    Returns False, leaving ``scores`` garbage, if a row sum left the range where
    that is accurate (above the largest float, or below the square root of
    the smallest normal one, where exp's small terms lose precision).
    """
    rows = scores.reshape(-1, scores.shape[-1])
    with backend.overflow_allowed(xp):  # an overflow (in exp, or inf summed in the product) is caught below
        xp.exp(rows, out=rows)
        sums = rows @ xp.ones(rows.shape[1], dtype=rows.dtype)  # a BLAS matrix-vector product
    limits = xp.finfo(rows.dtype)
    if not bool(((sums >= limits.tiny ** 0.5) & (sums <= limits.max)).all()):
        return False
    rows *= xp.reciprocal(sums, out=sums)[:, None]
    return True


def _softmax_shifted_by_max(xp, scores) -> None:
    """Softmax over the last axis of ``scores`` in place, the textbook way (shift by the row max)."""
    scores -= scores.max(axis=-1, keepdims=True)
    xp.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)

