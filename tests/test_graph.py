"""draw_graph (DOT) and print_graph (text tree): content, sharing, deep graphs, no side effects."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite.graph import format_graph


def small_graph():
    x = tl.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y = tl.Tensor(np.full((3, 4), 2.0, np.float32))
    return x, y, (x * y).sum()


def dot_edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r"^\s*(\w+) -> (\w+);", dot, flags=re.MULTILINE)


def dot_labels(dot: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*(\w+) \[label="([^"]*)"', dot, flags=re.MULTILINE))


def test_dot_has_op_and_tensor_nodes_and_data_flow_edges():
    x, _, loss = small_graph()
    dot = tl.draw_graph(loss, names={"x": x})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    labels = dot_labels(dot)
    by_label = {label: node for node, label in labels.items()}
    assert set(labels.values()) == {"Sum", "Mul", "() float32", "(3, 4) float32",
                                    "leaf x (3, 4) float32 requires_grad", "leaf (3, 4) float32"}
    edges = set(dot_edges(dot))
    # x -> Mul, y -> Mul, Mul -> product, product -> Sum, Sum -> loss
    assert (by_label["leaf x (3, 4) float32 requires_grad"], by_label["Mul"]) in edges
    assert (by_label["leaf (3, 4) float32"], by_label["Mul"]) in edges
    assert (by_label["Mul"], by_label["(3, 4) float32"]) in edges
    assert (by_label["(3, 4) float32"], by_label["Sum"]) in edges
    assert (by_label["Sum"], by_label["() float32"]) in edges
    assert len(edges) == 5


def test_dot_draws_a_shared_tensor_once_with_one_edge_per_use():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    h = x.tanh()
    out = (h * h + h).sum()
    dot = tl.draw_graph(out)
    labels, edges = dot_labels(dot), dot_edges(dot)
    [tanh_op] = [node for node, label in labels.items() if label == "Tanh"]
    [h_node] = [target for source, target in edges if source == tanh_op]
    consumers = sorted(labels[target] for source, target in edges if source == h_node)
    assert consumers == ["Add", "Mul", "Mul"]  # h * h uses h twice, + h once more


def test_print_graph_small_graph(capsys):
    x, _, loss = small_graph()
    tl.print_graph(loss, names={"x": x})
    assert capsys.readouterr().out == (
        "Sum -> () float32\n"
        "└─ Mul -> (3, 4) float32\n"
        "   ├─ leaf x (3, 4) float32 requires_grad\n"
        "   └─ leaf (3, 4) float32\n"
    )


def test_print_graph_prints_shared_subgraph_once():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    text = format_graph((h * 2.0 + h).sum())
    assert text == (
        "Sum -> () float32\n"
        "└─ Add -> (2,) float32\n"
        "   ├─ Mul -> (2,) float32\n"
        "   │  ├─ Exp -> (2,) float32 [#1]\n"
        "   │  │  └─ leaf (2,) float32 requires_grad\n"
        "   │  └─ leaf () float32\n"
        "   └─ Exp -> (2,) float32 [#1, shown above]"
    )


def test_viewing_does_not_change_the_graph_and_works_with_retain_graph():
    x, y, loss = small_graph()
    before = format_graph(loss)
    loss.backward(retain_graph=True)
    assert format_graph(loss) == before  # retained graph: still all there
    tl.draw_graph(loss)
    loss.backward()  # the graph is still usable: grads accumulate
    np.testing.assert_array_equal(x.grad.numpy(), 2 * y.numpy())
    # After a freeing backward the result no longer links to its inputs.
    assert format_graph(loss) == "freed () float32 requires_grad"


def test_deep_chain_does_not_recurse():
    x = tl.Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # any recursion over the graph would fail at once
    try:
        dot = tl.draw_graph(y)
        short = format_graph(y, max_depth=3)
    finally:
        sys.setrecursionlimit(limit)
    assert dot.count('[label="Mul"') == 10_000
    assert len(dot_edges(dot)) == 3 * 10_000  # in, constant in, out for every Mul
    assert short.splitlines() == [
        "Mul -> (1,) float32",
        "├─ Mul -> (1,) float32",
        "│  ├─ Mul -> (1,) float32",
        "│  │  ├─ Mul -> (1,) float32",
        "│  │  │  └─ ... (2 input(s) below max_depth=3)",
        "│  │  └─ leaf () float32",
        "│  └─ leaf () float32",
        "└─ leaf () float32",
    ]


def test_full_tree_of_a_chain_deeper_than_the_recursion_limit():
    x = tl.Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(2_000):
        y = y.tanh()
    lines = format_graph(y).splitlines()
    assert len(lines) == 2_001
    assert lines[-1].endswith("└─ leaf (1,) float32 requires_grad")


def test_render_needs_graphviz(tmp_path):
    _, _, loss = small_graph()
    try:
        import graphviz  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="graphviz"):
            tl.draw_graph(loss, render_to=tmp_path / "g.svg")
    else:
        pytest.skip("graphviz installed; rendering also needs the dot binary, not checked here")
