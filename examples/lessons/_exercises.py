"""Exercises in the lessons: the solution blocks, and the checks that judge an answer.

A lesson marks an exercise inside a code cell. The cell ends with a check:

    # BEGIN SOLUTION dW2 = db2 = None
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    # END SOLUTION
    check_gradients(W2=(dW2, W2), b2=(db2, b2))

Run as a script (or as the lesson's own notebook) the solution runs and the check prints OK.
`make_exercises.py` writes the exercise notebooks, where each block becomes

    # TODO: your code here (the solution has 2 lines)
    dW2 = db2 = None

The rest of the BEGIN line is the placeholder: code that lets the cell run on to its check, which
then fails with an ``ExerciseError`` saying what is wrong, until the learner's code is right.
The checks never read the learner's code; they compute. A gradient is compared with the engine's
own backward (``tensor.grad``); a new op with finite differences (``tl.gradcheck``) and with the
engine's op, forward and backward.
"""
from __future__ import annotations

import numpy as np

import tinygrad_lite as tl
from tinygrad_lite.gradcheck import GradcheckError


class ExerciseError(AssertionError):
    """The answer is not right yet; the message says what is wrong."""


def as_array(value) -> np.ndarray | None:
    """A Tensor, an array or a number as a float64 NumPy array (None stays None)."""
    if value is None:
        return None
    if isinstance(value, tl.Tensor):
        return value.numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def cmp(name: str, mine, tensor: tl.Tensor) -> float:
    """makemore's comparison row: is ``mine`` the engine's ``tensor.grad``?

    Prints whether they are exactly equal, approximately equal (torch.allclose's tolerances)
    and the largest difference; returns that difference (inf when ``mine`` is missing or has
    the wrong shape)."""
    if tensor.grad is None:
        raise ValueError(f"cmp({name!r}): the engine kept no gradient for this tensor; "
                         "call retain_grad() on it before loss.backward()")
    expected, actual = tensor.grad.numpy().astype(np.float64), as_array(mine)
    if actual is None or actual.shape != expected.shape:
        got = "nothing (None)" if actual is None else f"shape {actual.shape}"
        print(f"{name:15s} | got {got}, expected shape {expected.shape}")
        return float("inf")
    exact = bool((actual == expected).all())
    approximate = bool(np.allclose(actual, expected, rtol=1e-5, atol=1e-8))
    maxdiff = float(np.abs(actual - expected).max()) if actual.size else 0.0
    print(f"{name:15s} | exact: {exact!s:5s} | approximate: {approximate!s:5s} | maxdiff: {maxdiff:.3g}")
    return maxdiff


def check_gradients(atol: float = 1e-8, **pairs: tuple) -> float:
    """Check each ``name=(my_gradient, tensor)`` against ``tensor.grad`` from the engine's backward.

    Prints a ``cmp`` row per pair; raises ExerciseError naming every gradient that is missing,
    has the wrong shape or differs by more than ``atol``; returns the largest difference."""
    wrong, worst = [], 0.0
    for name, (mine, tensor) in pairs.items():
        maxdiff = cmp(name, mine, tensor)
        worst = max(worst, maxdiff)
        if mine is None:
            wrong.append(f"d{name} is not computed yet (None)")
        elif maxdiff == float("inf"):
            wrong.append(f"d{name} has shape {as_array(mine).shape}, but {name} has shape {tuple(tensor.shape)}")
        elif not maxdiff <= atol:
            wrong.append(f"d{name} differs from the engine's gradient by up to {maxdiff:.3g} (allowed: {atol:g})")
    if wrong:
        raise ExerciseError("not yet:\n  " + "\n  ".join(wrong))
    print(f"OK: {len(pairs)} gradient(s) match the engine's backward (largest difference {worst:.3g})")
    return worst


def check_close(name: str, mine, expected, atol: float = 1e-8) -> float:
    """Check a value (a loss, an activation) against the expected one; return the largest difference."""
    maxdiff = largest_difference(name, mine, expected, atol)
    print(f"OK: {name} matches (largest difference {maxdiff:.3g})")
    return maxdiff


def largest_difference(name: str, mine, expected, atol: float) -> float:
    """max |mine - expected|; raises ExerciseError when mine is missing, misshapen or off by more than atol."""
    actual, target = as_array(mine), as_array(expected)
    if actual is None or actual.shape != target.shape:
        got = "nothing (None)" if actual is None else f"shape {actual.shape}"
        raise ExerciseError(f"not yet: {name} is {got}, expected shape {target.shape}")
    maxdiff = float(np.abs(actual - target).max()) if actual.size else 0.0
    if not maxdiff <= atol:  # `not <=` also catches NaN
        raise ExerciseError(f"not yet: {name} differs from the expected value by up to {maxdiff:.3g} "
                            f"(allowed: {atol:g})")
    return maxdiff


def check_function(name: str, function, reference, inputs: list, atol: float = 1e-10) -> None:
    """Check a differentiable ``function`` of ``inputs`` against the engine's ``reference``.

    Three questions, each a clear failure: does the forward give the reference's values; does
    backward give the reference's gradient for every float input; and does ``tl.gradcheck``
    (central finite differences, float64) agree with the function's own backward?"""
    def fresh_inputs() -> list:  # float64 leaves, so that each run starts with no gradient
        return [t.detach().double().requires_grad_() if t.dtype.kind == "f" else t for t in inputs]

    mine_in, reference_in = fresh_inputs(), fresh_inputs()
    mine_out, expected_out = function(*mine_in), reference(*reference_in)
    if not isinstance(mine_out, tl.Tensor):
        raise ExerciseError(f"not yet: {name} returned {type(mine_out).__name__}, not a Tensor")
    largest_difference(f"{name}'s forward", mine_out, expected_out, atol)
    upstream = np.random.default_rng(0).standard_normal(expected_out.shape)
    mine_out.backward(tl.tensor(upstream))
    expected_out.backward(tl.tensor(upstream))
    for position, (mine, expected) in enumerate(zip(mine_in, reference_in)):
        if expected.grad is None:
            continue
        if mine.grad is None:
            raise ExerciseError(f"not yet: {name}'s backward gave no gradient for input {position}")
        largest_difference(f"{name}'s gradient for input {position}", mine.grad, expected.grad, atol)
    try:
        tl.gradcheck(function, fresh_inputs())
    except GradcheckError as error:
        raise ExerciseError(f"not yet: {name}'s backward disagrees with finite differences: {error}") from None
    print(f"OK: {name} agrees with the engine's op and with finite differences")
