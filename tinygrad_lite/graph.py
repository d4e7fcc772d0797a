"""Looking at the autograd graph: Graphviz DOT source and a printed tree.

Every tensor made by an op keeps ``_ctx``, the ``Function`` that made it, and
the Function keeps ``parents``, its input tensors. Following those links back
from a loss visits the whole computation. Both views below only *read* those
links (nothing is changed, so ``backward`` still works afterwards), and both
walk with an explicit stack, so a chain of 10,000 ops does not hit Python's
recursion limit.

    x = tl.Tensor([[1.0, 2.0]], requires_grad=True)
    loss = (x * 3.0).sum()
    tl.print_graph(loss, names={"x": x})
    # Sum -> () float32
    # └─ Mul -> (1, 2) float32
    #    ├─ leaf x (1, 2) float32 requires_grad
    #    └─ leaf () float32
"""
from __future__ import annotations

import os

from .tensor import Tensor


def _describe(tensor: Tensor) -> str:
    return f"{tensor.shape} {tensor.dtype}"


def _names_by_id(names: dict[str, Tensor] | None) -> dict[int, str]:
    """{id(tensor): name} from a {name: tensor} dict (e.g. ``dict(model.named_parameters())``)."""
    return {id(tensor): name for name, tensor in (names or {}).items()}


def _leaf_label(tensor: Tensor, name: str | None) -> str:
    """``leaf x (3, 4) float32 requires_grad``; a result whose graph backward freed says so."""
    kind = "freed" if tensor._graph_freed else "leaf"  # freed: made by an op, but backward dropped its _ctx
    parts = [kind] + ([name] if name else []) + [_describe(tensor)]
    if tensor.requires_grad:
        parts.append("requires_grad")
    return " ".join(parts)


# ------------------------------------------------------------------- DOT


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def draw_graph(tensor: Tensor, render_to: str | os.PathLike | None = None,
               names: dict[str, Tensor] | None = None) -> str:
    """Graphviz DOT source of the graph that produced ``tensor``.

    Tensors are ellipses (shape and dtype; leaves that require grad are
    filled), ops are boxes labelled with the Function class name, and edges
    follow the data: input tensor -> op -> output tensor. Paste the text into
    any Graphviz viewer, or pass ``render_to="graph.svg"`` to render it with
    the optional ``graphviz`` package (the suffix picks the format).
    ``names`` ({name: tensor}) labels the tensors you care about.
    """
    name_of = _names_by_id(names)
    node_ids: dict[int, str] = {}  # id(tensor or Function) -> "t0", "f1", ...

    def node_id(obj, prefix: str) -> str:
        if id(obj) not in node_ids:
            node_ids[id(obj)] = f"{prefix}{len(node_ids)}"
        return node_ids[id(obj)]

    lines = ["digraph autograd {", "  rankdir=BT;", '  node [fontname="monospace"];']
    visited: set[int] = set()
    stack = [tensor]
    while stack:
        current = stack.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        tensor_node = node_id(current, "t")
        name = name_of.get(id(current))
        if current._ctx is None:
            style = ', style=filled, fillcolor="lightblue"' if current.requires_grad else ""
            lines.append(f"  {tensor_node} [label={_dot_quote(_leaf_label(current, name))}{style}];")
            continue
        label = (f"{name} " if name else "") + _describe(current)
        style = ', style=filled, fillcolor="palegreen"' if current is tensor else ""
        lines.append(f"  {tensor_node} [label={_dot_quote(label)}{style}];")
        op = current._ctx
        op_node = node_id(op, "f")
        lines.append(f"  {op_node} [label={_dot_quote(type(op).__name__)}, shape=box];")
        lines.append(f"  {op_node} -> {tensor_node};")
        for parent in op.parents:
            lines.append(f"  {node_id(parent, 't')} -> {op_node};")
            stack.append(parent)
    lines.append("}")
    source = "\n".join(lines) + "\n"
    if render_to is not None:
        _render(source, os.fspath(render_to))
    return source


def _render(source: str, path: str) -> None:
    try:
        import graphviz  # noqa: PLC0415 -- optional: only needed to render
    except ImportError as error:
        raise ImportError("draw_graph(render_to=...) needs the `graphviz` Python package and the Graphviz "
                          "programs (pip install graphviz; apt install graphviz); the DOT text it returns "
                          "needs neither") from error
    extension = os.path.splitext(path)[1].lstrip(".") or "svg"
    graphviz.Source(source).render(outfile=path, format=extension, cleanup=True)


# ------------------------------------------------------------------- tree


def format_graph(tensor: Tensor, names: dict[str, Tensor] | None = None, max_depth: int | None = None) -> str:
    """The graph as an indented text tree (what ``print_graph`` prints).

    Each op line reads ``OpName -> output shape dtype``; its inputs are listed
    below it. An op result used in several places is printed in full the first
    time with a tag like ``[#1]``, and afterwards as ``... [#1, shown above]``.
    ``max_depth`` stops the indentation at that many levels.
    """
    name_of = _names_by_id(names)
    uses = _count_uses(tensor)
    tags: dict[int, int] = {}  # id(tensor) -> tag number, for shared op results
    lines = []
    # Each entry: (tensor, prefix for this line, prefix for its children, depth).
    stack = [(tensor, "", "", 0)]
    while stack:
        current, line_prefix, child_prefix, depth = stack.pop()
        if current._ctx is None:
            lines.append(line_prefix + _leaf_label(current, name_of.get(id(current))))
            continue
        name = name_of.get(id(current))
        label = f"{type(current._ctx).__name__} -> " + (f"{name} " if name else "") + _describe(current)
        if id(current) in tags:
            lines.append(f"{line_prefix}{label} [#{tags[id(current)]}, shown above]")
            continue
        if uses.get(id(current), 0) > 1:
            tags[id(current)] = len(tags) + 1
            label += f" [#{tags[id(current)]}]"
        lines.append(line_prefix + label)
        parents = current._ctx.parents
        if max_depth is not None and depth >= max_depth:
            lines.append(f"{child_prefix}└─ ... ({len(parents)} input(s) below max_depth={max_depth})")
            continue
        children = []
        for position, parent in enumerate(parents):
            last = position == len(parents) - 1
            children.append((parent, child_prefix + ("└─ " if last else "├─ "),
                             child_prefix + ("   " if last else "│  "), depth + 1))
        stack.extend(reversed(children))  # reversed: the first input is printed first
    return "\n".join(lines)


def _count_uses(root: Tensor) -> dict[int, int]:
    """How many op inputs refer to each tensor (more than one: a shared sub-graph)."""
    uses: dict[int, int] = {}
    visited: set[int] = set()
    stack = [root]
    while stack:
        current = stack.pop()
        if id(current) in visited or current._ctx is None:
            continue
        visited.add(id(current))
        for parent in current._ctx.parents:
            uses[id(parent)] = uses.get(id(parent), 0) + 1
            stack.append(parent)
    return uses


def print_graph(tensor: Tensor, names: dict[str, Tensor] | None = None, max_depth: int | None = None) -> None:
    """Print the graph that produced ``tensor`` as a tree (see ``format_graph``)::

        Sum -> () float32
        └─ Mul -> (3, 4) float32
           ├─ leaf x (3, 4) float32 requires_grad
           └─ leaf (3, 4) float32
    """
    print(format_graph(tensor, names=names, max_depth=max_depth))


__all__ = ["draw_graph", "format_graph", "print_graph"]
